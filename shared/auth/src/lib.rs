//! Who is calling: a verified bearer JWT (`sub` is the user id), or, in the explicit dev
//! mode only, an `x-user-id` header. Applied as a tonic interceptor on each service's own API.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;
use tonic::{Request, Status};

/// The authenticated caller, put in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

/// How callers prove who they are.
#[derive(Clone)]
pub enum AuthMode {
    /// Bearer JWTs checked with this key and validation.
    Jwt(Arc<(DecodingKey, Validation)>),
    /// `x-user-id` taken at its word. Never in production.
    Dev,
}

impl std::fmt::Debug for AuthMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Jwt(kv) => write!(f, "Jwt({:?})", kv.1.algorithms),
            Self::Dev => write!(f, "Dev"),
        }
    }
}

impl AuthMode {
    /// JWT verification with `algorithm` and its key (a secret for HS256, a PEM public
    /// key for RS256/ES256).
    pub fn jwt(algorithm: Algorithm, key: &[u8]) -> Result<Self, jsonwebtoken::errors::Error> {
        let key = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => DecodingKey::from_secret(key),
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
                DecodingKey::from_rsa_pem(key)?
            }
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(key)?,
            // PS*, EdDSA: not offered (their keys were read as Ed25519, whatever they were).
            _ => return Err(jsonwebtoken::errors::ErrorKind::InvalidAlgorithm.into()),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = 5;
        // A token is not valid before its `nbf` either (jsonwebtoken checks only `exp` unless
        // told).
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Self::Jwt(Arc::new((key, validation))))
    }
}

impl AuthMode {
    /// Tokens must name `audience` in their `aud` and `issuer` as their `iss`, each when
    /// given. Without an audience, a token that carries `aud` is refused (jsonwebtoken's
    /// rule): identity providers add one, so a deployment behind one sets JWT_AUDIENCE.
    pub fn expecting(self, audience: Option<String>, issuer: Option<String>) -> Self {
        let Self::Jwt(kv) = self else { return self };
        let (key, mut validation) = (kv.0.clone(), kv.1.clone());
        let mut required: Vec<&str> = vec!["exp", "sub"];
        if let Some(aud) = &audience {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        if let Some(iss) = &issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Self::Jwt(Arc::new((key, validation)))
    }
}

/// A variable of the auth configuration with a bad or missing value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfigError {
    pub var: &'static str,
    pub reason: String,
}

impl AuthMode {
    /// Reads `AUTH_MODE` (`jwt`, the default, or `dev`), `JWT_ALGORITHM` (default HS256),
    /// `JWT_SECRET` (HS*, at least 32 bytes) or `JWT_PUBLIC_KEY` (PEM, RS*/ES*), and the
    /// optional `JWT_AUDIENCE` and `JWT_ISSUER` ([`AuthMode::expecting`]) from `get`, which
    /// returns `None` for unset or blank variables.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, AuthConfigError> {
        let err = |var: &'static str, reason: String| AuthConfigError { var, reason };
        match get("AUTH_MODE").as_deref().unwrap_or("jwt") {
            "dev" => Ok(Self::Dev),
            "jwt" => {
                let alg_name = get("JWT_ALGORITHM").unwrap_or_else(|| "HS256".to_owned());
                let alg: Algorithm = alg_name
                    .parse()
                    .ok()
                    .filter(|a| {
                        matches!(
                            a,
                            Algorithm::HS256
                                | Algorithm::HS384
                                | Algorithm::HS512
                                | Algorithm::RS256
                                | Algorithm::RS384
                                | Algorithm::RS512
                                | Algorithm::ES256
                                | Algorithm::ES384
                        )
                    })
                    .ok_or_else(|| {
                        err(
                            "JWT_ALGORITHM",
                            format!(
                                "{alg_name:?} is not offered: HS256, HS384, HS512, RS256, RS384, \
                                 RS512, ES256 or ES384"
                            ),
                        )
                    })?;
                let (var, key) =
                    if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                        ("JWT_SECRET", get("JWT_SECRET"))
                    } else {
                        ("JWT_PUBLIC_KEY", get("JWT_PUBLIC_KEY"))
                    };
                let key = key.ok_or_else(|| {
                    err(
                        var,
                        format!("required with AUTH_MODE=jwt and JWT_ALGORITHM={alg_name} (or set AUTH_MODE=dev)"),
                    )
                })?;
                if var == "JWT_SECRET" && key.len() < 32 {
                    return Err(err("JWT_SECRET", "must be at least 32 bytes".to_owned()));
                }
                let mode = Self::jwt(alg, key.as_bytes()).map_err(|e| err(var, e.to_string()))?;
                Ok(mode.expecting(get("JWT_AUDIENCE"), get("JWT_ISSUER")))
            }
            other => Err(err("AUTH_MODE", format!("{other:?}: use jwt or dev"))),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
}

/// The longest user id accepted (ids are stored and used as Kafka keys).
const MAX_USER_ID: usize = 256;

/// The interceptor: resolves the caller or answers UNAUTHENTICATED.
#[derive(Debug, Clone)]
pub struct Authenticate(pub AuthMode);

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let user = match &self.0 {
            AuthMode::Dev => req
                .metadata()
                .get("x-user-id")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| Status::unauthenticated("dev mode: send an x-user-id header"))?,
            AuthMode::Jwt(kv) => {
                let header = req
                    .metadata()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| Status::unauthenticated("send authorization: Bearer <JWT>"))?;
                let token = header
                    .strip_prefix("Bearer ")
                    .or_else(|| header.strip_prefix("bearer "))
                    .ok_or_else(|| Status::unauthenticated("authorization must be Bearer <JWT>"))?;
                let data = decode::<Claims>(token.trim(), &kv.0, &kv.1)
                    .map_err(|e| Status::unauthenticated(format!("invalid token: {e}")))?;
                data.claims.sub
            }
        };
        if user.is_empty() || user.len() > MAX_USER_ID {
            return Err(Status::unauthenticated("the user id must be 1..256 bytes"));
        }
        // Stored as text (PostgreSQL's cannot hold NUL), logged, and a Kafka partition key.
        if user.chars().any(char::is_control) {
            return Err(Status::unauthenticated(
                "the user id must not contain control characters",
            ));
        }
        req.extensions_mut().insert(Caller(user));
        Ok(req)
    }
}

/// The caller of a request that went through [`Authenticate`].
pub fn caller<T>(req: &Request<T>) -> Result<String, Status> {
    req.extensions()
        .get::<Caller>()
        .map(|c| c.0.clone())
        .ok_or_else(|| Status::unauthenticated("no caller"))
}

/// The caller of a request that went through [`Authenticate`], and its message: how every
/// handler starts (`let (user, req) = into_caller(request)?;`).
pub fn into_caller<T>(req: Request<T>) -> Result<(String, T), Status> {
    let user = caller(&req)?;
    Ok((user, req.into_inner()))
}

/// For [`caller_rpcs!`]: tonic, as the macro names it.
#[doc(hidden)]
pub use tonic as __tonic;

/// Implements a tonic service trait whose every RPC answers the authenticated caller: each
/// `rpc(Message) -> Answer;` becomes the trait's `rpc`, which takes the caller and the
/// message ([`into_caller`]), calls the type's own `rpc(&self, user, message)` and wraps its
/// answer. A handler is then a plain function of the caller and the message; how every one
/// starts and ends is written here, once.
///
/// ```ignore
/// todo_auth::caller_rpcs!(AuditService for AuditApi {
///     list_task_activity(ListTaskActivityRequest) -> ListActivityResponse;
/// });
/// ```
#[macro_export]
macro_rules! caller_rpcs {
    ($service:ident for $api:ident { $($rpc:ident($message:ty) -> $answer:ty;)+ }) => {
        #[$crate::__tonic::async_trait]
        impl $service for $api {
            $(
                async fn $rpc(
                    &self,
                    request: $crate::__tonic::Request<$message>,
                ) -> ::std::result::Result<$crate::__tonic::Response<$answer>, $crate::__tonic::Status>
                {
                    let (user, message) = $crate::into_caller(request)?;
                    <$api>::$rpc(self, user, message)
                        .await
                        .map($crate::__tonic::Response::new)
                }
            )+
        }
    };
}

#[cfg(test)]
mod tests {

    #![allow(clippy::unwrap_used)]

    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use tonic::service::Interceptor;

    #[test]
    fn jwt_is_the_default_and_its_key_is_checked_by_name() {
        let read = |pairs: &'static [(&'static str, &'static str)]| {
            AuthMode::from_lookup(|k| {
                pairs
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| (*v).to_owned())
            })
        };
        assert_eq!(read(&[]).map(drop).unwrap_err().var, "JWT_SECRET");
        let short = read(&[("JWT_SECRET", "short")]).map(drop).unwrap_err();
        assert_eq!(short.var, "JWT_SECRET");
        assert!(matches!(
            read(&[("JWT_SECRET", "0123456789abcdef0123456789abcdef")]),
            Ok(AuthMode::Jwt(_))
        ));
        let rsa = read(&[("JWT_ALGORITHM", "RS256")]).map(drop).unwrap_err();
        assert_eq!(rsa.var, "JWT_PUBLIC_KEY");
        // Known to jsonwebtoken, not offered here: refused by name, not read as another key.
        for alg in ["PS256", "EdDSA", "none"] {
            let refused = AuthMode::from_lookup(|k| match k {
                "JWT_ALGORITHM" => Some(alg.to_owned()),
                "JWT_PUBLIC_KEY" => Some("-----BEGIN PUBLIC KEY-----".to_owned()),
                _ => None,
            })
            .map(drop)
            .unwrap_err();
            assert_eq!(refused.var, "JWT_ALGORITHM", "{alg}");
        }
        let magic = read(&[("AUTH_MODE", "magic")]).map(drop).unwrap_err();
        assert_eq!(magic.var, "AUTH_MODE");
        assert!(matches!(read(&[("AUTH_MODE", "dev")]), Ok(AuthMode::Dev)));
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn call(mode: AuthMode, headers: &[(&'static str, &str)]) -> Result<String, Status> {
        let mut req = Request::new(());
        for (k, v) in headers {
            req.metadata_mut().insert(*k, v.parse().unwrap());
        }
        let req = Authenticate(mode).call(req)?;
        caller(&req)
    }

    fn token(sub: &str, exp_from_now: i64) -> String {
        token_nbf(sub, exp_from_now, -60)
    }

    fn token_for(aud: &str, iss: &str) -> String {
        #[derive(serde::Serialize)]
        struct C<'a> {
            sub: &'a str,
            exp: i64,
            aud: &'a str,
            iss: &'a str,
        }
        let exp = chrono::Utc::now().timestamp() + 300;
        encode(
            &Header::default(),
            &C {
                sub: "carol",
                exp,
                aud,
                iss,
            },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    /// A token from an identity provider carries `aud` and `iss`: refused until the
    /// deployment names its audience, then taken only for that audience and issuer.
    #[test]
    fn audience_and_issuer_are_checked_when_named() {
        let idp = format!("Bearer {}", token_for("todo-api", "https://idp.example"));
        let plain = AuthMode::jwt(Algorithm::HS256, SECRET).unwrap();
        assert_eq!(
            call(plain, &[("authorization", &idp)]).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let named = AuthMode::from_lookup(|k| match k {
            "JWT_SECRET" => Some(String::from_utf8_lossy(SECRET).into_owned()),
            "JWT_AUDIENCE" => Some("todo-api".to_owned()),
            "JWT_ISSUER" => Some("https://idp.example".to_owned()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            call(named.clone(), &[("authorization", &idp)]).unwrap(),
            "carol"
        );
        for other in [
            token_for("another-api", "https://idp.example"),
            token_for("todo-api", "https://evil.example"),
            token("carol", 300),
        ] {
            let header = format!("Bearer {other}");
            let err = call(named.clone(), &[("authorization", &header)]).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{other}");
        }
    }

    fn token_nbf(sub: &str, exp_from_now: i64, nbf_from_now: i64) -> String {
        #[derive(serde::Serialize)]
        struct C<'a> {
            sub: &'a str,
            exp: i64,
            nbf: i64,
        }
        let now = chrono::Utc::now().timestamp();
        encode(
            &Header::default(),
            &C {
                sub,
                exp: now + exp_from_now,
                nbf: now + nbf_from_now,
            },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    #[test]
    fn dev_mode_takes_the_header() {
        assert_eq!(
            call(AuthMode::Dev, &[("x-user-id", " alice ")]).unwrap(),
            "alice"
        );
        let err = call(AuthMode::Dev, &[]).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn jwt_mode_verifies_the_token() {
        let mode = AuthMode::jwt(Algorithm::HS256, SECRET).unwrap();
        let ok = format!("Bearer {}", token("bob", 300));
        assert_eq!(
            call(mode.clone(), &[("authorization", &ok)]).unwrap(),
            "bob"
        );
        let expired = format!("Bearer {}", token("bob", -300));
        // Regression: a token not valid yet (`nbf` ahead) was taken, and so was a `sub`
        // with control characters (NUL cannot be stored by PostgreSQL).
        let early = format!("Bearer {}", token_nbf("bob", 600, 300));
        let control = format!("Bearer {}", token("bo\u{0}b", 300));
        let newline = format!("Bearer {}", token("bob\nadmin", 300));
        for headers in [
            vec![("authorization", expired.as_str())],
            vec![("authorization", early.as_str())],
            vec![("authorization", control.as_str())],
            vec![("authorization", newline.as_str())],
            vec![("authorization", "Bearer not-a-jwt")],
            vec![("authorization", "Basic Ym9iOnB3")],
            vec![("x-user-id", "bob")],
        ] {
            let err = call(mode.clone(), &headers).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{headers:?}");
        }
    }
}
