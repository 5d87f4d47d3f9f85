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

/// Serves Prometheus `/metrics` on `addr` for everything recorded through the `metrics`
/// crate (the AppCallback runtime's `events_consumed_total` and `event_handler_seconds`, and
/// each service's own counters). One per process: a second call (several apps in one test
/// process) keeps the first and says so in the log.
pub fn serve_metrics(addr: std::net::SocketAddr) {
    match metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
    {
        Ok(()) => tracing::info!(%addr, "Prometheus metrics at /metrics"),
        Err(e) => tracing::warn!(error = %e, %addr, "metrics exporter not installed"),
    }
}
