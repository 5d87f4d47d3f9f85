//! Who a tool call acts for, and how task-service is told: the caller's own bearer JWT
//! (HTTP), a configured token (stdio), or a configured user id in dev mode.

use http::{HeaderValue, header::AUTHORIZATION};
use tonic::metadata::MetadataValue;

/// The identity a call to task-service carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The whole `authorization` header value (`Bearer <JWT>`), passed through.
    Bearer(String),
    /// Dev mode: sent as `x-user-id` (task-service must run with `AUTH_MODE=dev`).
    DevUser(String),
}

/// How callers are resolved, and what every call to task-service carries besides.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// `TASK_SERVICE_TOKEN`: used when a call brings no header (stdio).
    pub token: Option<String>,
    /// `MCP_DEV_USER`: used when there is neither a header nor a token.
    pub dev_user: Option<String>,
    /// `TASK_SERVICE_APP_ID`: `dapr-app-id` metadata, to go through a sidecar.
    pub app_id: Option<String>,
    /// `DAPR_API_TOKEN`: `dapr-api-token` metadata for that sidecar.
    pub dapr_api_token: Option<String>,
}

/// The bearer value of an `Authorization` header, if it is one.
pub fn bearer(value: &HeaderValue) -> Option<String> {
    let v = value.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .then(|| format!("Bearer {}", token.trim()))
}

impl Identity {
    /// The caller of a request whose HTTP head is `parts` (none over stdio).
    pub fn caller(&self, parts: Option<&http::request::Parts>) -> Option<Caller> {
        if let Some(b) = parts
            .and_then(|p| p.headers.get(AUTHORIZATION))
            .and_then(bearer)
        {
            return Some(Caller::Bearer(b));
        }
        if let Some(t) = &self.token {
            return Some(Caller::Bearer(format!("Bearer {t}")));
        }
        self.dev_user.clone().map(Caller::DevUser)
    }

    /// `msg` as a gRPC request carrying `caller` (and the sidecar's metadata when set). A value
    /// that cannot be metadata is left off; task-service then refuses the call as
    /// unauthenticated, which the tool reports.
    pub fn request<T>(&self, caller: &Caller, msg: T) -> tonic::Request<T> {
        let mut r = self.request_direct(caller, msg);
        let md = r.metadata_mut();
        let mut put = |key: &'static str, value: &str| {
            if let Ok(v) = MetadataValue::try_from(value) {
                md.insert(key, v);
            }
        };
        if let Some(app) = &self.app_id {
            put("dapr-app-id", app);
        }
        if let Some(t) = &self.dapr_api_token {
            put("dapr-api-token", t);
        }
        r
    }

    /// `msg` as a gRPC request carrying `caller` alone: for a service called at its own
    /// address (audit-service, notification-service), not through task-service's sidecar.
    pub fn request_direct<T>(&self, caller: &Caller, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        let md = r.metadata_mut();
        let mut put = |key: &'static str, value: &str| {
            if let Ok(v) = MetadataValue::try_from(value) {
                md.insert(key, v);
            }
        };
        match caller {
            Caller::Bearer(v) => put("authorization", v),
            Caller::DevUser(u) => put("x-user-id", u),
        }
        r
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parts(auth: Option<&str>) -> http::request::Parts {
        let mut b = http::Request::builder();
        if let Some(a) = auth {
            b = b.header(AUTHORIZATION, a);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_header_wins_then_the_token_then_the_dev_user() {
        let id = Identity {
            token: Some("tok".into()),
            dev_user: Some("dev".into()),
            ..Identity::default()
        };
        assert_eq!(
            id.caller(Some(&parts(Some("bearer abc")))),
            Some(Caller::Bearer("Bearer abc".into()))
        );
        assert_eq!(
            id.caller(Some(&parts(Some("Basic abc")))),
            Some(Caller::Bearer("Bearer tok".into()))
        );
        let dev = Identity {
            dev_user: Some("dev".into()),
            ..Identity::default()
        };
        assert_eq!(dev.caller(None), Some(Caller::DevUser("dev".into())));
        assert_eq!(Identity::default().caller(Some(&parts(None))), None);
    }

    #[test]
    fn the_request_carries_the_caller_and_the_sidecar_metadata() {
        let id = Identity {
            app_id: Some("task-service".into()),
            ..Identity::default()
        };
        let r = id.request(&Caller::DevUser("zoe".into()), ());
        assert_eq!(r.metadata().get("x-user-id").unwrap(), "zoe");
        assert_eq!(r.metadata().get("dapr-app-id").unwrap(), "task-service");
    }
}
