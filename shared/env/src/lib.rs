//! What every service binary reads from its process environment: configuration variables,
//! checked at start with errors that name the variable ([`Env`], [`ConfigError`]), and the
//! signal to shut down ([`shutdown_signal`]).
//!
//! ```
//! use todo_env::Env;
//!
//! let env = Env::new(|k| (k == "DAPR_GRPC_PORT").then(|| " 50002 ".to_owned()));
//! assert_eq!(env.dapr_grpc_endpoint().unwrap(), "http://127.0.0.1:50002");
//! assert_eq!(env.parse("PUBLISH_TIMEOUT_MS", 5_000_u64).unwrap(), 5_000);
//! ```

pub mod cli;

use std::{fmt::Display, net::SocketAddr, str::FromStr, time::Duration};

use todo_topology::{Topics, topics};

/// The sidecar when neither `DAPR_GRPC_ENDPOINT` nor `DAPR_GRPC_PORT` is set (daprd's
/// default gRPC port).
pub const DEFAULT_DAPR_GRPC_ENDPOINT: &str = "http://127.0.0.1:50001";

/// Kafka's limit on a topic name's length.
pub const MAX_TOPIC_LEN: usize = 249;

/// What every service reads the same way (the variables of [`cli::common`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Common {
    /// `APP_ADDR`: where the service's gRPC API and Dapr's AppCallback are served.
    pub listen: SocketAddr,
    /// `APP_API_TOKEN`: required from the sidecar on Dapr's callbacks.
    pub app_api_token: Option<String>,
    /// `DAPR_GRPC_ENDPOINT` or `DAPR_GRPC_PORT`: the sidecar.
    pub dapr_grpc_endpoint: String,
    /// `DAPR_API_TOKEN`: sent to the sidecar.
    pub dapr_api_token: Option<String>,
    /// `REQUEST_TIMEOUT_MS` (default 10000): deadline of one request.
    pub request_timeout: Duration,
    /// `MAX_CONCURRENT_REQUESTS` (default 512): requests handled at once.
    pub max_concurrent_requests: usize,
    /// `TOPIC_PREFIX`: namespaces every topic (empty in production).
    pub topic_prefix: String,
    /// `METRICS_ADDR`: Prometheus `/metrics`; `off` disables.
    pub metrics_addr: Option<SocketAddr>,
}

impl Common {
    /// The system's topics under `TOPIC_PREFIX`.
    pub fn topics(&self) -> Topics {
        Topics::new(&self.topic_prefix)
    }
}

/// A lookup over fixed pairs (tests of a service's `Config::from_lookup`).
pub fn from_pairs(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}

/// A variable with a bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

impl ConfigError {
    pub fn new(var: &'static str, reason: impl Into<String>) -> Self {
        Self {
            var,
            reason: reason.into(),
        }
    }
}

/// A view of the variables: values are trimmed, and a blank value counts as unset.
pub struct Env<F> {
    lookup: F,
}

impl Env<fn(&str) -> Option<String>> {
    /// The process environment.
    pub fn process() -> Self {
        Self {
            lookup: |k| std::env::var(k).ok(),
        }
    }
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// Any lookup (tests pass a map).
    pub fn new(lookup: F) -> Self {
        Self { lookup }
    }

    /// The value of `var`, trimmed; `None` when unset or blank.
    pub fn get(&self, var: &str) -> Option<String> {
        (self.lookup)(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// `var` parsed, or `default` when unset.
    pub fn parse<T: FromStr>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: Display,
    {
        match self.get(var) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| ConfigError::new(var, format!("{v:?} is not valid: {e}"))),
        }
    }

    /// `DATABASE_URL` (a `sqlite:` or `postgres` URL, `default_url` when unset) and
    /// `DATABASE_MAX_CONNECTIONS` (default 4 on SQLite, 16 on PostgreSQL).
    pub fn database(&self, default_url: &str) -> Result<(String, u32), ConfigError> {
        let url = self
            .get("DATABASE_URL")
            .unwrap_or_else(|| default_url.to_owned());
        let sqlite = url.starts_with("sqlite:");
        if !(sqlite || url.starts_with("postgres")) {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "use a sqlite:// or postgres:// URL",
            ));
        }
        let max = self.positive("DATABASE_MAX_CONNECTIONS", if sqlite { 4 } else { 16 })?;
        Ok((url, max))
    }

    /// `var` parsed as a number above zero, or `default` when unset.
    pub fn positive<T: FromStr + PartialOrd + Default>(
        &self,
        var: &'static str,
        default: T,
    ) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| *n > T::default())
                .ok_or_else(|| ConfigError::new(var, format!("{v:?} is not a positive number"))),
        }
    }

    /// `var` as a socket address (`127.0.0.1:50051`), or `default` when unset.
    pub fn socket_addr(
        &self,
        var: &'static str,
        default: SocketAddr,
    ) -> Result<SocketAddr, ConfigError> {
        self.get(var).map_or(Ok(default), |v| socket_addr(var, &v))
    }

    /// `var` as a socket address, or `default` when unset: written as `--help` shows it,
    /// and checked the same way.
    pub fn socket_addr_or(
        &self,
        var: &'static str,
        default: &str,
    ) -> Result<SocketAddr, ConfigError> {
        socket_addr(var, &self.get(var).unwrap_or_else(|| default.to_owned()))
    }

    /// The variables every service reads ([`Common`]), with the service's own default
    /// listen and metrics addresses (as `--help` shows them, [`cli::common`]).
    pub fn common(&self, listen: &str, metrics: &str) -> Result<Common, ConfigError> {
        Ok(Common {
            listen: self.socket_addr_or("APP_ADDR", listen)?,
            app_api_token: self.get("APP_API_TOKEN"),
            dapr_grpc_endpoint: self.dapr_grpc_endpoint()?,
            dapr_api_token: self.get("DAPR_API_TOKEN"),
            request_timeout: Duration::from_millis(self.positive("REQUEST_TIMEOUT_MS", 10_000)?),
            max_concurrent_requests: self.max_concurrent_requests()?,
            topic_prefix: self.topic_prefix(|p| Topics::new(p).all())?,
            metrics_addr: self.metrics_addr(metrics)?,
        })
    }

    /// `MAX_CONCURRENT_REQUESTS` (512): at most [`MAX_CONCURRENT_REQUESTS`], which is far
    /// more than one process serves, and far below what Tokio's semaphore refuses (by
    /// panicking at start).
    pub fn max_concurrent_requests(&self) -> Result<usize, ConfigError> {
        let n: usize = self.positive("MAX_CONCURRENT_REQUESTS", 512)?;
        if n > MAX_CONCURRENT_REQUESTS {
            return Err(ConfigError::new(
                "MAX_CONCURRENT_REQUESTS",
                format!("{n} is more than {MAX_CONCURRENT_REQUESTS}"),
            ));
        }
        Ok(n)
    }

    /// `METRICS_ADDR`: where Prometheus `/metrics` is served, `default` when unset; `off`
    /// serves none.
    pub fn metrics_addr(&self, default: &str) -> Result<Option<SocketAddr>, ConfigError> {
        match self.get("METRICS_ADDR").as_deref() {
            Some("off") => Ok(None),
            _ => self.socket_addr_or("METRICS_ADDR", default).map(Some),
        }
    }

    /// The sidecar's gRPC endpoint: `DAPR_GRPC_ENDPOINT` (a URI; `host:port` gets
    /// `http://`), else `DAPR_GRPC_PORT` on 127.0.0.1, else [`DEFAULT_DAPR_GRPC_ENDPOINT`].
    pub fn dapr_grpc_endpoint(&self) -> Result<String, ConfigError> {
        match (self.get("DAPR_GRPC_ENDPOINT"), self.get("DAPR_GRPC_PORT")) {
            (Some(e), _) => endpoint("DAPR_GRPC_ENDPOINT", &e),
            (None, Some(p)) => {
                let port: u16 = p.parse().ok().filter(|&p| p != 0).ok_or_else(|| {
                    ConfigError::new("DAPR_GRPC_PORT", format!("{p:?} is not a port"))
                })?;
                Ok(format!("http://127.0.0.1:{port}"))
            }
            (None, None) => Ok(DEFAULT_DAPR_GRPC_ENDPOINT.to_owned()),
        }
    }

    /// `TOPIC_PREFIX` (empty when unset), checked so that every topic `topics_under` names
    /// with it is a valid Kafka topic name: `[A-Za-z0-9._-]`, at most 249 characters.
    pub fn topic_prefix<I: IntoIterator<Item = String>>(
        &self,
        topics_under: impl Fn(&str) -> I,
    ) -> Result<String, ConfigError> {
        let prefix = self.get(topics::PREFIX_VAR).unwrap_or_default();
        if let Some(c) = prefix
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(ConfigError::new(
                topics::PREFIX_VAR,
                format!("{c:?} is not allowed in a Kafka topic name (use A-Z a-z 0-9 . _ -)"),
            ));
        }
        if let Some(long) = topics_under(&prefix)
            .into_iter()
            .find(|t| t.len() > MAX_TOPIC_LEN)
        {
            return Err(ConfigError::new(
                topics::PREFIX_VAR,
                format!("too long: topic {long:?} exceeds Kafka's {MAX_TOPIC_LEN} characters"),
            ));
        }
        Ok(prefix)
    }
}

/// The value `v` of `var` as a socket address.
fn socket_addr(var: &'static str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse()
        .map_err(|e| ConfigError::new(var, format!("{v:?} is not a socket address: {e}")))
}

/// `raw` as a URI a tonic client takes: `host:port` gets `http://`; http(s) with a port.
fn endpoint(var: &'static str, raw: &str) -> Result<String, ConfigError> {
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("http://{raw}")
    };
    let uri: tonic::transport::Uri = with_scheme
        .parse()
        .map_err(|e| ConfigError::new(var, format!("{raw:?} is not a URI: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(ConfigError::new(
            var,
            format!("{raw:?}: use http:// or https://"),
        ));
    }
    if uri.port_u16().is_none() {
        return Err(ConfigError::new(
            var,
            format!("{raw:?} has no port (e.g. http://127.0.0.1:50001)"),
        ));
    }
    Ok(with_scheme)
}

/// Resolves on SIGINT or SIGTERM (Kubernetes stops a pod with SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// The most requests a service may be told to handle at once (`MAX_CONCURRENT_REQUESTS`).
pub const MAX_CONCURRENT_REQUESTS: usize = 1_000_000;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Env::new(move |k| map.get(k).cloned())
    }

    #[test]
    fn common_reads_every_shared_variable_with_the_services_defaults() {
        let (listen, metrics) = ("127.0.0.1:50059", "127.0.0.1:9469");
        let c = env(&[]).common(listen, metrics).unwrap();
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 50059)));
        assert_eq!(
            c.metrics_addr,
            Some(SocketAddr::from(([127, 0, 0, 1], 9469)))
        );
        assert_eq!(c.dapr_grpc_endpoint, DEFAULT_DAPR_GRPC_ENDPOINT);
        assert_eq!(c.request_timeout, Duration::from_secs(10));
        assert_eq!(c.max_concurrent_requests, 512);
        assert_eq!((c.app_api_token, c.dapr_api_token), (None, None));
        assert_eq!(c.topic_prefix, "");
        let c = env(&[(topics::PREFIX_VAR, "t-1a2b"), ("APP_API_TOKEN", " ")])
            .common(listen, metrics)
            .unwrap();
        assert_eq!(c.topics().task_events_dead_letter, "t-1a2b.task-events-dlq");
        assert_eq!(c.app_api_token, None, "blank is unset");
        let long = "p".repeat(240);
        for (var, value) in [
            ("APP_ADDR", "nope"),
            ("REQUEST_TIMEOUT_MS", "soon"),
            ("REQUEST_TIMEOUT_MS", "0"),
            ("MAX_CONCURRENT_REQUESTS", "-1"),
            ("DAPR_GRPC_ENDPOINT", "ftp://127.0.0.1:1"),
            ("DAPR_GRPC_ENDPOINT", "http://no-port"),
            (topics::PREFIX_VAR, "has space"),
            (topics::PREFIX_VAR, "slash/no"),
            (topics::PREFIX_VAR, &long),
            ("METRICS_ADDR", "on"),
        ] {
            let e = env(&[(var, value)]).common(listen, metrics).unwrap_err();
            assert_eq!(e.var, var, "{var}={value}: {e}");
            assert!(e.to_string().starts_with(var), "{e}");
        }
    }

    #[test]
    fn blank_is_unset_and_values_are_trimmed() {
        let e = env(&[("A", "  "), ("B", " 7 ")]);
        assert_eq!(e.get("A"), None);
        assert_eq!(e.get("B").as_deref(), Some("7"));
        assert_eq!(e.parse("A", 3_u32).unwrap(), 3);
        assert_eq!(e.positive("B", 3_u32).unwrap(), 7);
    }

    #[test]
    fn bad_values_name_their_variable() {
        let e = env(&[
            ("N", "seven"),
            ("Z", "0"),
            ("ADDR", "nowhere"),
            ("DAPR_GRPC_PORT", "0"),
        ]);
        assert_eq!(e.parse("N", 1_u32).unwrap_err().var, "N");
        assert_eq!(e.positive("Z", 1_u32).unwrap_err().var, "Z");
        let default = SocketAddr::from(([127, 0, 0, 1], 1));
        let err = e.socket_addr("ADDR", default).unwrap_err();
        assert!(err.to_string().starts_with("ADDR: \"nowhere\""), "{err}");
        let err = e.socket_addr_or("ADDR", "127.0.0.1:1").unwrap_err();
        assert!(err.to_string().starts_with("ADDR: \"nowhere\""), "{err}");
        assert_eq!(e.dapr_grpc_endpoint().unwrap_err().var, "DAPR_GRPC_PORT");
    }

    #[test]
    fn metrics_can_be_moved_or_turned_off() {
        let default = "127.0.0.1:9464";
        assert_eq!(
            env(&[]).metrics_addr(default).unwrap(),
            Some(SocketAddr::from(([127, 0, 0, 1], 9464)))
        );
        assert_eq!(
            env(&[("METRICS_ADDR", "off")])
                .metrics_addr(default)
                .unwrap(),
            None
        );
        assert_eq!(
            env(&[("METRICS_ADDR", "0.0.0.0:9100")])
                .metrics_addr(default)
                .unwrap(),
            Some(SocketAddr::from(([0, 0, 0, 0], 9100)))
        );
        let err = env(&[("METRICS_ADDR", "on")])
            .metrics_addr(default)
            .unwrap_err();
        assert_eq!(err.var, "METRICS_ADDR");
    }

    #[test]
    fn the_sidecar_comes_from_an_endpoint_a_port_or_the_default() {
        assert_eq!(
            env(&[]).dapr_grpc_endpoint().unwrap(),
            DEFAULT_DAPR_GRPC_ENDPOINT
        );
        assert_eq!(
            env(&[("DAPR_GRPC_PORT", "50003")])
                .dapr_grpc_endpoint()
                .unwrap(),
            "http://127.0.0.1:50003"
        );
        let both = env(&[
            ("DAPR_GRPC_ENDPOINT", "localhost:7000"),
            ("DAPR_GRPC_PORT", "1"),
        ]);
        assert_eq!(
            both.dapr_grpc_endpoint().unwrap(),
            "http://localhost:7000",
            "the endpoint wins"
        );
        assert_eq!(
            env(&[("DAPR_GRPC_ENDPOINT", "https://dapr.internal:443")])
                .dapr_grpc_endpoint()
                .unwrap(),
            "https://dapr.internal:443"
        );
        for bad in ["ftp://127.0.0.1:1", "http://no-port", "http://[::1"] {
            let err = env(&[("DAPR_GRPC_ENDPOINT", bad)])
                .dapr_grpc_endpoint()
                .unwrap_err();
            assert_eq!(err.var, "DAPR_GRPC_ENDPOINT", "{bad}: {err}");
        }
    }

    #[test]
    fn a_topic_prefix_must_make_valid_kafka_topic_names() {
        let under = |p: &str| vec![topics::namespaced(p, "task-events")];
        assert_eq!(env(&[]).topic_prefix(under).unwrap(), "");
        assert_eq!(
            env(&[(topics::PREFIX_VAR, " ci-1.x_y ")])
                .topic_prefix(under)
                .unwrap(),
            "ci-1.x_y"
        );
        let spaced = env(&[(topics::PREFIX_VAR, "has space")]).topic_prefix(under);
        assert_eq!(spaced.unwrap_err().var, topics::PREFIX_VAR);
        let long = "p".repeat(240);
        let err = env(&[(topics::PREFIX_VAR, long.as_str())])
            .topic_prefix(under)
            .unwrap_err();
        assert!(err.reason.starts_with("too long"), "{err}");
    }
}
