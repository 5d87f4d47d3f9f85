//! Logging and metrics for every service: `RUST_LOG` filters, `LOG_FORMAT=json` for JSON
//! lines, and a Prometheus `/metrics` endpoint for what the `metrics` crate records.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber once (`RUST_LOG` and `LOG_FORMAT` from the environment,
/// a value that cannot be used falling back to the default); later calls (tests) are no-ops.
/// A service's start uses [`Logging::from_lookup`] and [`init_with`] instead, which refuse
/// such values.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    install(filter, json);
}

/// How a service logs: its filter (`RUST_LOG`) and format (`LOG_FORMAT`).
#[derive(Debug)]
pub struct Logging {
    filter: EnvFilter,
    json: bool,
}

/// A logging variable whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLogging {
    pub var: &'static str,
    pub reason: String,
}

impl std::fmt::Display for BadLogging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.var, self.reason)
    }
}

impl Logging {
    /// `RUST_LOG` (tracing-subscriber `EnvFilter` directives; `default_filter` when unset or
    /// blank) and `LOG_FORMAT` (`text`, the default, or `json`) from `get`, the service's
    /// lookup (a flag wins over the variable). A value that cannot be used is refused,
    /// naming the variable, instead of quietly logging otherwise than asked.
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        default_filter: &str,
    ) -> Result<Self, BadLogging> {
        let set = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let directives = set("RUST_LOG");
        let filter = EnvFilter::builder()
            .parse(directives.as_deref().unwrap_or(default_filter))
            .map_err(|e| BadLogging {
                var: "RUST_LOG",
                reason: format!("not a log filter ({e})"),
            })?;
        let json = match set("LOG_FORMAT").map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(BadLogging {
                    var: "LOG_FORMAT",
                    reason: format!("{other:?}: use text or json"),
                });
            }
        };
        Ok(Self { filter, json })
    }
}

/// Installs the global subscriber as `logging` says (once; later calls are no-ops).
pub fn init_with(logging: Logging) {
    install(logging.filter, logging.json);
}

fn install(filter: EnvFilter, json: bool) {
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
/// each service's own counters). An address that cannot be bound (taken, not local) is an
/// error, so a service asked for metrics does not run without them. One exporter per
/// process: a later call (several apps in one test process) keeps the first and says so.
pub fn serve_metrics(addr: std::net::SocketAddr) -> Result<(), MetricsError> {
    static SERVED: std::sync::Mutex<Option<std::net::SocketAddr>> = std::sync::Mutex::new(None);
    let mut served = SERVED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(first) = *served {
        tracing::info!(%addr, %first, "metrics are already served by this process; keeping the first address");
        return Ok(());
    }
    // Every `*_seconds` figure is a Prometheus histogram (not a summary), so latencies
    // aggregate across replicas: 0.5 ms to 30 s.
    let installed = metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".to_owned()),
            &LATENCY_BUCKETS,
        )
        .and_then(metrics_exporter_prometheus::PrometheusBuilder::install);
    match installed {
        Ok(()) => {
            *served = Some(addr);
            tracing::info!(%addr, "Prometheus metrics at /metrics");
            Ok(())
        }
        // Another recorder was installed by something else in this process: it records.
        Err(metrics_exporter_prometheus::BuildError::FailedToSetGlobalRecorder(e)) => {
            tracing::warn!(error = %e, %addr, "metrics exporter not installed: a recorder already is");
            Ok(())
        }
        Err(e) => Err(MetricsError {
            addr,
            reason: e.to_string(),
        }),
    }
}

/// Why `/metrics` could not be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsError {
    pub addr: std::net::SocketAddr,
    pub reason: String,
}

impl std::fmt::Display for MetricsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "METRICS_ADDR {}: /metrics cannot be served ({}); free the port, choose another \
             address, or set METRICS_ADDR=off",
            self.addr, self.reason
        )
    }
}

impl std::error::Error for MetricsError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address that is taken is an error naming METRICS_ADDR (it used to be a warning,
    /// and the service ran without metrics); once one is served, a later call keeps it.
    #[test]
    fn a_metrics_address_that_cannot_be_bound_is_refused_by_name() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = serve_metrics(addr).unwrap_err();
        assert_eq!(err.addr, addr);
        let text = err.to_string();
        assert!(text.starts_with(&format!("METRICS_ADDR {addr}:")), "{text}");

        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let free_addr = free.local_addr().unwrap();
        drop(free);
        serve_metrics(free_addr).unwrap();
        assert!(std::net::TcpStream::connect(free_addr).is_ok());
        // The first exporter stays; a second address (even a taken one) is not bound.
        serve_metrics(addr).unwrap();
    }

    /// Regression: `--log-format`/`--rust-log` were listed by `--help` and ignored (only the
    /// environment was read), and a filter or format that could not be used quietly gave the
    /// default instead.
    #[test]
    fn the_lookup_is_read_and_bad_values_are_refused_by_name() {
        let from = |pairs: &'static [(&'static str, &'static str)]| {
            Logging::from_lookup(
                |k| {
                    pairs
                        .iter()
                        .find(|(name, _)| *name == k)
                        .map(|(_, v)| (*v).to_owned())
                },
                "info",
            )
        };
        assert!(!from(&[]).unwrap().json);
        assert!(from(&[("LOG_FORMAT", "JSON")]).unwrap().json);
        assert!(from(&[("LOG_FORMAT", " "), ("RUST_LOG", "warn,sqlx=off")]).is_ok());
        for (pairs, var) in [
            (&[("LOG_FORMAT", "xml")][..], "LOG_FORMAT"),
            (&[("LOG_FORMAT", "jsn")][..], "LOG_FORMAT"),
            (&[("RUST_LOG", "a=b=c")][..], "RUST_LOG"),
            (&[("RUST_LOG", "info,[=")][..], "RUST_LOG"),
        ] {
            assert_eq!(from(pairs).unwrap_err().var, var, "{pairs:?}");
        }
    }
}
