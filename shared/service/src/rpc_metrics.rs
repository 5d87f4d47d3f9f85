//! Per-RPC request metrics: how many calls each method answered with each code, and how
//! long they took (a Prometheus histogram, so latencies aggregate across replicas).
//!
//! - `grpc_server_started_total{grpc_service, grpc_method}`
//! - `grpc_server_handled_total{grpc_service, grpc_method, grpc_code}`
//! - `grpc_server_handling_seconds{grpc_service, grpc_method}` (to the end of the response
//!   stream, so a server stream counts its whole life)

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

/// Records the metrics above for every call through it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

/// What is known of one call until its response ends.
#[derive(Debug)]
struct Call {
    service: String,
    method: String,
    started: Instant,
    /// The code, once known (a trailers-only answer has it in its headers).
    code: Option<String>,
    recorded: bool,
}

impl Call {
    fn new(path: &str) -> Self {
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("unknown", "unknown"));
        metrics::counter!("grpc_server_started_total", "grpc_service" => service.to_owned(), "grpc_method" => method.to_owned())
            .increment(1);
        Self {
            service: service.to_owned(),
            method: method.to_owned(),
            started: Instant::now(),
            code: None,
            recorded: false,
        }
    }

    fn finish(&mut self, code: Option<&str>) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        // A stream that ended without a status was cut off (the client went away).
        let code = code.or(self.code.as_deref()).map_or("CANCELLED", code_name);
        metrics::counter!(
            "grpc_server_handled_total",
            "grpc_service" => self.service.clone(),
            "grpc_method" => self.method.clone(),
            "grpc_code" => code,
        )
        .increment(1);
        metrics::histogram!(
            "grpc_server_handling_seconds",
            "grpc_service" => self.service.clone(),
            "grpc_method" => self.method.clone(),
        )
        .record(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(None);
    }
}

/// The name of a `grpc-status` value, as Prometheus labels spell it.
fn code_name(value: &str) -> &'static str {
    match value.trim().parse::<i32>().map(tonic::Code::from) {
        Ok(tonic::Code::Ok) => "OK",
        Ok(tonic::Code::Cancelled) => "CANCELLED",
        Ok(tonic::Code::Unknown) => "UNKNOWN",
        Ok(tonic::Code::InvalidArgument) => "INVALID_ARGUMENT",
        Ok(tonic::Code::DeadlineExceeded) => "DEADLINE_EXCEEDED",
        Ok(tonic::Code::NotFound) => "NOT_FOUND",
        Ok(tonic::Code::AlreadyExists) => "ALREADY_EXISTS",
        Ok(tonic::Code::PermissionDenied) => "PERMISSION_DENIED",
        Ok(tonic::Code::ResourceExhausted) => "RESOURCE_EXHAUSTED",
        Ok(tonic::Code::FailedPrecondition) => "FAILED_PRECONDITION",
        Ok(tonic::Code::Aborted) => "ABORTED",
        Ok(tonic::Code::OutOfRange) => "OUT_OF_RANGE",
        Ok(tonic::Code::Unimplemented) => "UNIMPLEMENTED",
        Ok(tonic::Code::Internal) => "INTERNAL",
        Ok(tonic::Code::Unavailable) => "UNAVAILABLE",
        Ok(tonic::Code::DataLoss) => "DATA_LOSS",
        Ok(tonic::Code::Unauthenticated) => "UNAUTHENTICATED",
        Err(_) => "UNKNOWN",
    }
}

impl<S, B, RB> Service<http::Request<B>> for RpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
{
    type Response = http::Response<MeteredBody<RB>>;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let call = Call::new(req.uri().path());
        MeteredFuture {
            inner: self.inner.call(req),
            call: Some(call),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future: carries the call into the response body.
    pub struct MeteredFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, RB, E> std::future::Future for MeteredFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<RB>, E>>,
{
    type Output = Result<http::Response<MeteredBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let mut call = this.call.take();
        Poll::Ready(result.map(|resp| {
            if let (Some(call), Some(code)) = (call.as_mut(), resp.headers().get("grpc-status")) {
                call.code = code.to_str().ok().map(str::to_owned);
            }
            resp.map(|inner| MeteredBody { inner, call })
        }))
        // An error here (the connection failed) drops `call`: recorded as CANCELLED.
    }
}

pin_project_lite::pin_project! {
    /// The response body: records the call when its trailers pass, or when it is dropped.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(trailers) = f.trailers_ref()
            && let Some(call) = this.call.as_mut()
        {
            call.finish(trailers.get("grpc-status").and_then(|v| v.to_str().ok()));
        }
        if frame.is_none()
            && let Some(call) = this.call.as_mut()
            && call.code.is_some()
        {
            call.finish(None);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_named_as_prometheus_labels_spell_them() {
        assert_eq!(code_name("0"), "OK");
        assert_eq!(code_name("3"), "INVALID_ARGUMENT");
        assert_eq!(code_name("14"), "UNAVAILABLE");
        assert_eq!(code_name("nonsense"), "UNKNOWN");
    }
}
