//! Logging and metrics for every service: `RUST_LOG` filters, `LOG_FORMAT=json` for JSON
//! lines, and a Prometheus `/metrics` endpoint for what the `metrics` crate records.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber once; later calls (tests) are no-ops.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init()
    } else {
        registry.with(fmt::layer().with_target(true)).try_init()
    };
    // Already installed (several tests in one process): keep the first.
    let _ = result;
}

/// Histogram buckets of every latency, in seconds.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
    30.0,
];

/// Serves Prometheus `/metrics` on `addr` for everything recorded through the `metrics`
/// crate (the AppCallback runtime's `events_consumed_total` and `event_handler_seconds`, and
/// each service's own counters). One per process: a second call (several apps in one test
/// process) keeps the first and says so in the log.
pub fn serve_metrics(addr: std::net::SocketAddr) {
    // Every `*_seconds` figure is a Prometheus histogram (not a summary), so latencies
    // aggregate across replicas: 0.5 ms to 30 s.
    let builder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".to_owned()),
            &LATENCY_BUCKETS,
        );
    match builder.and_then(|b| b.install()) {
        Ok(()) => tracing::info!(%addr, "Prometheus metrics at /metrics"),
        Err(e) => tracing::warn!(error = %e, %addr, "metrics exporter not installed"),
    }
}
