//! Configuration from the environment, validated at start; errors name the variable.

use std::{net::SocketAddr, time::Duration};

use todo_topology::topics;

/// `APP_ADDR` when unset: next to task-service's 50051.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50052";
/// The sidecar when neither `DAPR_GRPC_ENDPOINT` nor `DAPR_GRPC_PORT` is set (daprd's default).
pub const DEFAULT_DAPR_GRPC_ENDPOINT: &str = "http://127.0.0.1:50001";

/// Everything recurring-task-service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// `APP_ADDR`: where Dapr's AppCallback and gRPC health are served (default 127.0.0.1:50052).
    pub listen: SocketAddr,
    /// `APP_API_TOKEN`: required from daprd on callbacks.
    pub app_api_token: Option<String>,
    /// `DAPR_GRPC_ENDPOINT` (e.g. `http://127.0.0.1:50001`) or `DAPR_GRPC_PORT`: the sidecar.
    pub dapr_grpc_endpoint: String,
    /// `DAPR_API_TOKEN`: sent to the sidecar.
    pub dapr_api_token: Option<String>,
    /// `TOPIC_PREFIX`: prefixes every topic name (empty in production).
    pub topic_prefix: String,
    /// `PUBLISH_TIMEOUT_MS` (default 5000): deadline of one publish; past it the event is retried.
    pub publish_timeout: Duration,
}

/// A variable with a bad value.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

fn err(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        reason: reason.into(),
    }
}

/// The topic names the service uses, under its prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Where completed tasks arrive (`task-events`).
    pub task_events: String,
    /// Where what this service DROPs goes (`task-events-dlq`).
    pub task_events_dead_letter: String,
    /// Where next occurrences are requested (`task-occurrences`).
    pub task_occurrences: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        Self {
            task_events: topics::namespaced(prefix, topics::TASK_EVENTS),
            task_events_dead_letter: topics::namespaced(
                prefix,
                &topics::dead_letter(topics::TASK_EVENTS),
            ),
            task_occurrences: topics::namespaced(prefix, topics::TASK_OCCURRENCES),
        }
    }

    fn all(&self) -> [&str; 3] {
        [
            &self.task_events,
            &self.task_events_dead_letter,
            &self.task_occurrences,
        ]
    }
}

/// Kafka's limit on a topic name's length.
const MAX_TOPIC_LEN: usize = 249;

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads from any lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let listen = get("APP_ADDR")
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned())
            .trim()
            .parse()
            .map_err(|e| err("APP_ADDR", format!("not a socket address: {e}")))?;
        let dapr_grpc_endpoint = match (get("DAPR_GRPC_ENDPOINT"), get("DAPR_GRPC_PORT")) {
            (Some(e), _) => endpoint(e.trim())?,
            (None, Some(p)) => {
                let port: u16 = p
                    .trim()
                    .parse()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| err("DAPR_GRPC_PORT", format!("{p:?} is not a port")))?;
                format!("http://127.0.0.1:{port}")
            }
            (None, None) => DEFAULT_DAPR_GRPC_ENDPOINT.to_owned(),
        };
        let topic_prefix = get(topics::PREFIX_VAR)
            .map(|p| p.trim().to_owned())
            .unwrap_or_default();
        check_prefix(&topic_prefix)?;
        let publish_timeout_ms: u64 = match get("PUBLISH_TIMEOUT_MS") {
            None => 5_000,
            Some(v) => v.trim().parse().ok().filter(|&ms| ms > 0).ok_or_else(|| {
                err(
                    "PUBLISH_TIMEOUT_MS",
                    format!("{v:?} is not a positive number of milliseconds"),
                )
            })?,
        };
        Ok(Self {
            listen,
            app_api_token: get("APP_API_TOKEN"),
            dapr_grpc_endpoint,
            dapr_api_token: get("DAPR_API_TOKEN"),
            topic_prefix,
            publish_timeout: Duration::from_millis(publish_timeout_ms),
        })
    }

    /// The topic names under `TOPIC_PREFIX`.
    pub fn topics(&self) -> Topics {
        Topics::new(&self.topic_prefix)
    }
}

/// `DAPR_GRPC_ENDPOINT` as a URI the gRPC client takes: `host:port` gets `http://`.
fn endpoint(raw: &str) -> Result<String, ConfigError> {
    const VAR: &str = "DAPR_GRPC_ENDPOINT";
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("http://{raw}")
    };
    let uri: tonic::transport::Uri = with_scheme
        .parse()
        .map_err(|e| err(VAR, format!("{raw:?} is not a URI: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(err(VAR, format!("{raw:?}: use http:// or https://")));
    }
    if uri.port_u16().is_none() {
        return Err(err(
            VAR,
            format!("{raw:?} has no port (e.g. http://127.0.0.1:50001)"),
        ));
    }
    Ok(with_scheme)
}

/// Kafka topic names are made of `[A-Za-z0-9._-]` and at most 249 characters long.
fn check_prefix(prefix: &str) -> Result<(), ConfigError> {
    if let Some(c) = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(err(
            topics::PREFIX_VAR,
            format!("{c:?} is not allowed in a Kafka topic name (use A-Z a-z 0-9 . _ -)"),
        ));
    }
    let topics = Topics::new(prefix);
    if let Some(long) = topics.all().into_iter().find(|t| t.len() > MAX_TOPIC_LEN) {
        return Err(err(
            topics::PREFIX_VAR,
            format!("too long: topic {long:?} exceeds Kafka's {MAX_TOPIC_LEN} characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_run_on_one_machine() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.dapr_grpc_endpoint, DEFAULT_DAPR_GRPC_ENDPOINT);
        assert_eq!(c.topic_prefix, "");
        assert_eq!(c.app_api_token, None);
        assert_eq!(c.publish_timeout, Duration::from_secs(5));
        assert_eq!(
            c.topics(),
            Topics {
                task_events: "task-events".into(),
                task_events_dead_letter: "task-events-dlq".into(),
                task_occurrences: "task-occurrences".into(),
            }
        );
    }

    #[test]
    fn every_topic_goes_under_the_prefix() {
        let c = cfg(&[(topics::PREFIX_VAR, "t-1a2b")]).unwrap();
        let t = c.topics();
        assert_eq!(t.task_events, "t-1a2b.task-events");
        assert_eq!(t.task_events_dead_letter, "t-1a2b.task-events-dlq");
        assert_eq!(t.task_occurrences, "t-1a2b.task-occurrences");
    }

    #[test]
    fn the_sidecar_comes_from_an_endpoint_or_a_port() {
        let c = cfg(&[("DAPR_GRPC_PORT", "50002")]).unwrap();
        assert_eq!(c.dapr_grpc_endpoint, "http://127.0.0.1:50002");
        let c = cfg(&[
            ("DAPR_GRPC_ENDPOINT", "localhost:7000"),
            ("DAPR_GRPC_PORT", "1"),
        ])
        .unwrap();
        assert_eq!(c.dapr_grpc_endpoint, "http://localhost:7000");
        let c = cfg(&[("DAPR_GRPC_ENDPOINT", "https://dapr.internal:443")]).unwrap();
        assert_eq!(c.dapr_grpc_endpoint, "https://dapr.internal:443");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("APP_ADDR", "nope"),
            ("DAPR_GRPC_PORT", "seventy"),
            ("DAPR_GRPC_PORT", "0"),
            ("DAPR_GRPC_ENDPOINT", "ftp://127.0.0.1:1"),
            ("DAPR_GRPC_ENDPOINT", "http://no-port"),
            ("DAPR_GRPC_ENDPOINT", "http://bad host:1"),
            (topics::PREFIX_VAR, "has space"),
            (topics::PREFIX_VAR, "slash/no"),
            ("PUBLISH_TIMEOUT_MS", "soon"),
            ("PUBLISH_TIMEOUT_MS", "0"),
        ] {
            let e = cfg(&[(var, value)]).unwrap_err();
            assert_eq!(e.var, var, "{var}={value}: {e}");
            assert!(e.to_string().starts_with(var), "{e}");
        }
        let long = "p".repeat(240);
        assert_eq!(
            cfg(&[(topics::PREFIX_VAR, &long)]).unwrap_err().var,
            topics::PREFIX_VAR
        );
    }

    #[test]
    fn blank_values_count_as_unset() {
        let c = cfg(&[("APP_API_TOKEN", "  "), (topics::PREFIX_VAR, "")]).unwrap();
        assert_eq!(c.app_api_token, None);
        assert_eq!(c.topic_prefix, "");
    }
}
