//! Configuration from the environment, validated at start; errors name the variable.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use todo_env::Env;
use todo_topology::topics;

/// `APP_ADDR` when unset: next to task-service's 50051.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50052);
pub use todo_env::DEFAULT_DAPR_GRPC_ENDPOINT;
/// `METRICS_ADDR` when unset: after task-service's 9464.
pub const DEFAULT_METRICS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9465);

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
    /// `METRICS_ADDR`: Prometheus `/metrics` (default 127.0.0.1:9465; `off` disables).
    pub metrics_addr: Option<SocketAddr>,
    /// `PUBLISH_TIMEOUT_MS` (default 5000): deadline of one publish; past it the event is retried.
    pub publish_timeout: Duration,
}

pub use todo_env::ConfigError;

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

    fn all(self) -> [String; 3] {
        [
            self.task_events,
            self.task_events_dead_letter,
            self.task_occurrences,
        ]
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads from any lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(get);
        let publish_timeout_ms: u64 = env.positive("PUBLISH_TIMEOUT_MS", 5_000)?;
        Ok(Self {
            listen: env.socket_addr("APP_ADDR", DEFAULT_LISTEN)?,
            app_api_token: env.get("APP_API_TOKEN"),
            dapr_grpc_endpoint: env.dapr_grpc_endpoint()?,
            dapr_api_token: env.get("DAPR_API_TOKEN"),
            topic_prefix: env.topic_prefix(|p| Topics::new(p).all())?,
            metrics_addr: env.metrics_addr(DEFAULT_METRICS)?,
            publish_timeout: Duration::from_millis(publish_timeout_ms),
        })
    }

    /// The topic names under `TOPIC_PREFIX`.
    pub fn topics(&self) -> Topics {
        Topics::new(&self.topic_prefix)
    }
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
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.dapr_grpc_endpoint, DEFAULT_DAPR_GRPC_ENDPOINT);
        assert_eq!(c.topic_prefix, "");
        assert_eq!(c.metrics_addr, Some(DEFAULT_METRICS));
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
            ("METRICS_ADDR", "on"),
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
