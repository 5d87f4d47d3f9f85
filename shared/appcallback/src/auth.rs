//! Only the sidecar may call the app: a tower layer that checks `dapr-api-token`.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::{Either, Ready, ready};
use subtle::ConstantTimeEq;
use tower::{Layer, Service};

use crate::APP_API_TOKEN_HEADER;

/// Refuses, with UNAUTHENTICATED, every call to the wrapped service whose
/// `dapr-api-token` header does not match the token. With no token, lets all through.
///
/// daprd 1.18 does not send the token on two read-only calls (`ListTopicSubscriptions`
/// and the app health probe; see `pkg/runtime/processor/subscriber` and
/// `pkg/channel/grpc` in dapr), so those are let through: they reveal topic names and
/// liveness, and change nothing. Every call that delivers an event is checked.
#[derive(Debug, Clone, Default)]
pub struct ApiTokenLayer {
    token: Option<Arc<[u8]>>,
    /// gRPC path prefixes the check applies to (e.g. `/dapr.proto.runtime.v1.`).
    prefixes: Arc<[String]>,
}

/// Read-only callbacks daprd calls without the token (see [`ApiTokenLayer`]).
const EXEMPT: [&str; 2] = [
    "/dapr.proto.runtime.v1.AppCallback/ListTopicSubscriptions",
    "/dapr.proto.runtime.v1.AppCallbackHealthCheck/HealthCheck",
];

impl ApiTokenLayer {
    /// Checks calls whose path starts with one of `prefixes` (all calls when empty).
    pub fn new(token: Option<String>, prefixes: Vec<String>) -> Self {
        Self {
            token: token
                .filter(|t| !t.is_empty())
                .map(|t| Arc::from(t.into_bytes())),
            prefixes: prefixes.into(),
        }
    }

    /// Guards Dapr's callback services only, leaving the app's own API to its own auth.
    pub fn for_dapr_callbacks(token: Option<String>) -> Self {
        Self::new(token, vec!["/dapr.proto.runtime.v1.".to_owned()])
    }
}

impl<S> Layer<S> for ApiTokenLayer {
    type Service = ApiToken<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ApiToken {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiToken<S> {
    inner: S,
    layer: ApiTokenLayer,
}

impl<S, B, RB> Service<http::Request<B>> for ApiToken<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Some(expected) = &self.layer.token else {
            return Either::Left(self.inner.call(req));
        };
        let path = req.uri().path();
        let guarded = !EXEMPT.contains(&path)
            && (self.layer.prefixes.is_empty()
                || self
                    .layer
                    .prefixes
                    .iter()
                    .any(|p| path.starts_with(p.as_str())));
        let ok = !guarded
            || req
                .headers()
                .get(APP_API_TOKEN_HEADER)
                .is_some_and(|v| bool::from(v.as_bytes().ct_eq(expected)));
        if ok {
            Either::Left(self.inner.call(req))
        } else {
            let status = tonic::Status::unauthenticated("missing or wrong dapr-api-token");
            let mut resp = status.into_http::<RB>();
            *resp.status_mut() = http::StatusCode::OK;
            Either::Right(ready(Ok(resp)))
        }
    }
}
