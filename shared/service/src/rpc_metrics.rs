//! Per-RPC request metrics: how many calls each method answered with each code, and how
//! long they took (a Prometheus histogram, so latencies aggregate across replicas).
//!
//! - `grpc_server_started_total{grpc_service, grpc_method}`
//! - `grpc_server_handled_total{grpc_service, grpc_method, grpc_code}`
//! - `grpc_server_handling_seconds{grpc_service, grpc_method}` (to the end of the response
//!   stream, so a server stream counts its whole life)

use std::{
    collections::HashSet,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Instant,
};

use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

/// Records the metrics above for every call through it.
///
/// The labels come from the request's path, which the caller chooses, and this layer runs
/// before any check or routing: every new label set is a series kept for the process's
/// life. So only the services the server serves are labelled by name, and at most
/// [`MAX_METHODS`] methods of them; any other call is counted as `unknown`/`unknown`.
#[derive(Debug, Clone, Default)]
pub struct RpcMetricsLayer {
    served: Arc<Served>,
}

/// The most distinct methods labelled by name (then `unknown`): far above what the
/// services define, far below what would grow the registry without end.
pub const MAX_METHODS: usize = 256;

#[derive(Debug, Default)]
struct Served {
    services: HashSet<String>,
    methods: Mutex<HashSet<(String, String)>>,
}

impl RpcMetricsLayer {
    /// Labels calls of `services` (full gRPC names, e.g. `todo.v1.TaskService`) by name.
    pub fn serving<'a>(services: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            served: Arc::new(Served {
                services: services.into_iter().map(str::to_owned).collect(),
                methods: Mutex::default(),
            }),
        }
    }
}

impl Served {
    /// The labels of a call to `path`.
    fn labels(&self, path: &str) -> (String, String) {
        let unknown = || ("unknown".to_owned(), "unknown".to_owned());
        let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
            return unknown();
        };
        if !self.services.contains(service) || method.is_empty() || method.contains('/') {
            return unknown();
        }
        let key = (service.to_owned(), method.to_owned());
        let mut methods = self.methods.lock().unwrap_or_else(|e| e.into_inner());
        if methods.contains(&key) || methods.len() < MAX_METHODS {
            methods.insert(key.clone());
            key
        } else {
            unknown()
        }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            served: self.served.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    served: Arc<Served>,
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
    fn new((service, method): (String, String)) -> Self {
        metrics::counter!("grpc_server_started_total", "grpc_service" => service.clone(), "grpc_method" => method.clone())
            .increment(1);
        Self {
            service,
            method,
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
        let call = Call::new(self.served.labels(req.uri().path()));
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

    /// Regression: every path a caller sent became a label set kept for the process's life
    /// (`/r1/x`, `/r2/x`, … each answered UNIMPLEMENTED and each added three series).
    #[test]
    fn only_served_services_and_a_bounded_number_of_methods_are_labelled() {
        let served =
            RpcMetricsLayer::serving(["todo.v1.TaskService", "grpc.health.v1.Health"]).served;
        let labels = |path: &str| {
            let (s, m) = served.labels(path);
            format!("{s}/{m}")
        };
        assert_eq!(
            labels("/todo.v1.TaskService/CreateTask"),
            "todo.v1.TaskService/CreateTask"
        );
        assert_eq!(
            labels("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        for path in [
            "/r1/x",
            "/",
            "",
            "/todo.v1.TaskService",
            "/todo.v1.TaskService/a/b",
        ] {
            assert_eq!(labels(path), "unknown/unknown", "{path:?}");
        }
        for i in 0..10 * MAX_METHODS {
            labels(&format!("/todo.v1.TaskService/M{i}"));
        }
        let named = served.methods.lock().unwrap().len();
        assert_eq!(named, MAX_METHODS);
        assert_eq!(labels("/todo.v1.TaskService/Another"), "unknown/unknown");
        // A method labelled before the cap keeps its name.
        assert_eq!(
            labels("/todo.v1.TaskService/CreateTask"),
            "todo.v1.TaskService/CreateTask"
        );
    }

    #[test]
    fn codes_are_named_as_prometheus_labels_spell_them() {
        assert_eq!(code_name("0"), "OK");
        assert_eq!(code_name("3"), "INVALID_ARGUMENT");
        assert_eq!(code_name("14"), "UNAVAILABLE");
        assert_eq!(code_name("nonsense"), "UNKNOWN");
    }
}
