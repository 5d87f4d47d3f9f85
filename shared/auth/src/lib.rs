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
                if var == "JWT_PUBLIC_KEY" {
                    check_public_key(alg, key.as_bytes()).map_err(|r| err(var, r))?;
                }
                let mode = Self::jwt(alg, key.as_bytes()).map_err(|e| err(var, e.to_string()))?;
                Ok(mode.expecting(get("JWT_AUDIENCE"), get("JWT_ISSUER")))
            }
            other => Err(err("AUTH_MODE", format!("{other:?}: use jwt or dev"))),
        }
    }
}

/// Refuses a public key that could never verify a token of `algorithm`, which would
/// otherwise be found only when every caller is refused ("InvalidSignature"): a key of the
/// other family (EC for RS*, RSA for ES*), an EC key on another curve than the algorithm's
/// (P-256 for ES256, P-384 for ES384), or an RSA key outside the 2,048 to 8,192 bits that
/// ring verifies with. Reads a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), `RSA PUBLIC KEY`
/// (PKCS#1) or `CERTIFICATE` (X.509, its subject's key).
fn check_public_key(algorithm: Algorithm, pem_text: &[u8]) -> Result<(), String> {
    use simple_asn1::{ASN1Block, OID, oid};
    let parsed = pem::parse(pem_text).map_err(|e| format!("not a PEM public key: {e}"))?;
    let der = |bytes: &[u8]| {
        simple_asn1::from_der(bytes).map_err(|e| format!("not a DER public key: {e}"))
    };
    let rsa_bits = |blocks: &[ASN1Block]| match blocks {
        [ASN1Block::Sequence(_, fields), ..] => match fields.as_slice() {
            [ASN1Block::Integer(_, n), ASN1Block::Integer(_, _)] => Ok(n.bits()),
            _ => Err("an RSA key's modulus and exponent were not found".to_owned()),
        },
        _ => Err("an RSA key's modulus and exponent were not found".to_owned()),
    };
    enum Key {
        Rsa(u64),
        Ec(OID),
        Other(OID),
    }
    // A SubjectPublicKeyInfo: the algorithm (and an EC key's curve), then the key's bits.
    let spki_key = |spki: &ASN1Block| -> Result<Key, String> {
        let ASN1Block::Sequence(_, spki) = spki else {
            return Err("not a SubjectPublicKeyInfo".to_owned());
        };
        let [
            ASN1Block::Sequence(_, alg),
            ASN1Block::BitString(_, _, bits),
        ] = spki.as_slice()
        else {
            return Err("not a SubjectPublicKeyInfo".to_owned());
        };
        match alg.as_slice() {
            [ASN1Block::ObjectIdentifier(_, id), ..] if *id == oid!(1, 2, 840, 113549, 1, 1, 1) => {
                Ok(Key::Rsa(rsa_bits(&der(bits)?)?))
            }
            [
                ASN1Block::ObjectIdentifier(_, id),
                ASN1Block::ObjectIdentifier(_, curve),
            ] if *id == oid!(1, 2, 840, 10045, 2, 1) => Ok(Key::Ec(curve.clone())),
            [ASN1Block::ObjectIdentifier(_, id), ..] => Ok(Key::Other(id.clone())),
            _ => Err("the key names no algorithm".to_owned()),
        }
    };
    let key = match parsed.tag() {
        "RSA PUBLIC KEY" => Key::Rsa(rsa_bits(&der(parsed.contents())?)?),
        "PUBLIC KEY" => match der(parsed.contents())?.as_slice() {
            [spki, ..] => spki_key(spki)?,
            [] => return Err("not a SubjectPublicKeyInfo".to_owned()),
        },
        // An X.509 certificate (jsonwebtoken verifies with its key): the key is the
        // tbsCertificate's seventh field, or its sixth when the version is left out.
        "CERTIFICATE" => match der(parsed.contents())?.as_slice() {
            [ASN1Block::Sequence(_, cert), ..] => match cert.as_slice() {
                [ASN1Block::Sequence(_, tbs), ..] => {
                    let at = match tbs.first() {
                        Some(ASN1Block::Explicit(..)) => 6,
                        _ => 5,
                    };
                    spki_key(
                        tbs.get(at)
                            .ok_or("the certificate holds no public key".to_owned())?,
                    )?
                }
                _ => return Err("not an X.509 certificate".to_owned()),
            },
            _ => return Err("not an X.509 certificate".to_owned()),
        },
        other => {
            return Err(format!(
                "a PEM {other:?} block is not a public key: give the \"PUBLIC KEY\" block \
                 (openssl pkey -pubout) or the certificate"
            ));
        }
    };
    let p256 = oid!(1, 2, 840, 10045, 3, 1, 7);
    let p384 = oid!(1, 3, 132, 0, 34);
    let dotted = |id: &OID| {
        id.as_vec::<u64>().map_or_else(
            |_| "an unknown OID".to_owned(),
            |parts| {
                parts
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(".")
            },
        )
    };
    let curve_name = |c: &OID| {
        if *c == p256 {
            "P-256".to_owned()
        } else if *c == p384 {
            "P-384".to_owned()
        } else {
            format!("curve {}", dotted(c))
        }
    };
    match (algorithm, key) {
        (Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512, Key::Rsa(bits)) => {
            // ring measures the modulus in whole bytes.
            if (2048..=8192).contains(&(bits.div_ceil(8) * 8)) {
                Ok(())
            } else {
                Err(format!(
                    "an RSA key of {bits} bits cannot verify tokens: use 2,048 to 8,192 bits"
                ))
            }
        }
        (Algorithm::ES256, Key::Ec(c)) if c == p256 => Ok(()),
        (Algorithm::ES384, Key::Ec(c)) if c == p384 => Ok(()),
        (Algorithm::ES256 | Algorithm::ES384, Key::Ec(c)) => Err(format!(
            "an EC key on {} cannot verify {algorithm:?} tokens: ES256 takes a P-256 key, \
             ES384 a P-384 key",
            curve_name(&c)
        )),
        (_, Key::Rsa(_)) => Err(format!(
            "an RSA key cannot verify {algorithm:?} tokens: set JWT_ALGORITHM to RS256, RS384 \
             or RS512, or give an EC key"
        )),
        (_, Key::Ec(c)) => Err(format!(
            "an EC key ({}) cannot verify {algorithm:?} tokens: set JWT_ALGORITHM to ES256 or \
             ES384, or give an RSA key",
            curve_name(&c)
        )),
        (_, Key::Other(id)) => Err(format!(
            "a key of algorithm {} cannot verify {algorithm:?} tokens",
            dotted(&id)
        )),
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

    /// A public key that could never verify the algorithm's tokens is refused at start, by
    /// name, saying why (it used to be taken, and then every token was refused); the keys
    /// that fit are taken, and an ES256 token signed by the private half is verified.
    #[test]
    fn a_public_key_that_cannot_verify_the_algorithm_is_refused_by_name() {
        let with = |alg: &str, key: &str| {
            let (alg, key) = (alg.to_owned(), key.to_owned());
            AuthMode::from_lookup(move |k| match k {
                "JWT_ALGORITHM" => Some(alg.clone()),
                "JWT_PUBLIC_KEY" => Some(key.clone()),
                _ => None,
            })
        };
        let p256 = include_str!("../testdata/p256.pem");
        let p384 = include_str!("../testdata/p384.pem");
        let rsa2048 = include_str!("../testdata/rsa2048.pem");
        let rsa2048_pkcs1 = include_str!("../testdata/rsa2048-pkcs1.pem");
        let rsa1024 = include_str!("../testdata/rsa1024.pem");
        for (alg, key) in [
            ("ES256", p256),
            ("ES384", p384),
            ("RS256", rsa2048),
            ("RS512", rsa2048),
            ("RS384", rsa2048_pkcs1),
            ("ES256", include_str!("../testdata/p256-cert.pem")),
            ("RS256", include_str!("../testdata/rsa2048-cert.pem")),
        ] {
            assert!(with(alg, key).is_ok(), "{alg}: {:?}", with(alg, key).err());
        }
        for (alg, key, says) in [
            ("ES256", p384, "P-384"),
            ("ES384", p256, "P-256"),
            ("RS256", rsa1024, "1024 bits"),
            ("RS256", p256, "an EC key"),
            ("ES256", rsa2048, "an RSA key"),
            ("ES384", include_str!("../testdata/p256-cert.pem"), "P-256"),
            (
                "ES256",
                include_str!("../testdata/rsa2048-cert.pem"),
                "an RSA key",
            ),
            (
                "ES256",
                include_str!("../testdata/p256-private.pem"),
                "PRIVATE KEY",
            ),
            (
                "RS256",
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                "DER",
            ),
            ("RS256", "not a pem", "PEM"),
        ] {
            let refused = with(alg, key).map(drop).unwrap_err();
            assert_eq!(refused.var, "JWT_PUBLIC_KEY", "{alg} {says}");
            assert!(
                refused.reason.contains(says),
                "{alg} {says}: {}",
                refused.reason
            );
        }

        let mode = with("ES256", p256).unwrap();
        #[derive(serde::Serialize)]
        struct C<'a> {
            sub: &'a str,
            exp: i64,
        }
        let signed = encode(
            &Header::new(Algorithm::ES256),
            &C {
                sub: "dana",
                exp: chrono::Utc::now().timestamp() + 300,
            },
            &EncodingKey::from_ec_pem(include_bytes!("../testdata/p256-private.pem")).unwrap(),
        )
        .unwrap();
        let bearer = format!("Bearer {signed}");
        assert_eq!(call(mode, &[("authorization", &bearer)]).unwrap(), "dana");
        // The certificate of that key verifies it too.
        let mode = with("ES256", include_str!("../testdata/p256-cert.pem")).unwrap();
        assert_eq!(call(mode, &[("authorization", &bearer)]).unwrap(), "dana");
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
