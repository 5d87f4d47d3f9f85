//! Configuration from the environment, validated at start; errors name the variable.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use todo_env::Env;

/// `APP_ADDR` when unset: next to task-service's 50051.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50052);
pub use todo_env::DEFAULT_DAPR_GRPC_ENDPOINT;
/// `METRICS_ADDR` when unset: after task-service's 9464.
pub const DEFAULT_METRICS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9465);

/// Everything recurring-task-service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// What every service reads: listen address, sidecar, tokens, limits, topic prefix,
    /// metrics (see [`todo_env::Common`]).
    pub common: todo_env::Common,
    /// `PUBLISH_TIMEOUT_MS` (default 5000): deadline of one publish; past it the event is retried.
    pub publish_timeout: Duration,
}

pub use todo_env::ConfigError;
use todo_env::cli::{self, Var};

/// What `recurring-task-service --help` says it is.
pub const ABOUT: &str = "Turns a completed recurring task into a request for its next occurrence \
     (a stateless Dapr subscriber of task-events).";

/// Every variable recurring-task-service reads (`--help` lists them).
pub fn vars() -> Vec<Var> {
    cli::common("127.0.0.1:50052", "127.0.0.1:9465")
        .into_iter()
        .chain([Var::new(
            "PUBLISH_TIMEOUT_MS",
            "5000",
            "deadline of one publish; past it the event is retried",
        )])
        .collect()
}

pub use todo_topology::Topics;

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
            common: env.common(DEFAULT_LISTEN, DEFAULT_METRICS)?,
            publish_timeout: Duration::from_millis(publish_timeout_ms),
        })
    }

    /// The topic names under `TOPIC_PREFIX`.
    pub fn topics(&self) -> Topics {
        self.common.topics()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::collections::HashMap;
    use todo_topology::topics;

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
        assert_eq!(c.common.listen, DEFAULT_LISTEN);
        assert_eq!(c.common.dapr_grpc_endpoint, DEFAULT_DAPR_GRPC_ENDPOINT);
        assert_eq!(c.common.topic_prefix, "");
        assert_eq!(c.common.metrics_addr, Some(DEFAULT_METRICS));
        assert_eq!(c.common.app_api_token, None);
        assert_eq!(c.publish_timeout, Duration::from_secs(5));
        assert_eq!(c.topics(), Topics::new(""));
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
        assert_eq!(c.common.dapr_grpc_endpoint, "http://127.0.0.1:50002");
        let c = cfg(&[
            ("DAPR_GRPC_ENDPOINT", "localhost:7000"),
            ("DAPR_GRPC_PORT", "1"),
        ])
        .unwrap();
        assert_eq!(c.common.dapr_grpc_endpoint, "http://localhost:7000");
        let c = cfg(&[("DAPR_GRPC_ENDPOINT", "https://dapr.internal:443")]).unwrap();
        assert_eq!(c.common.dapr_grpc_endpoint, "https://dapr.internal:443");
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
        assert_eq!(c.common.app_api_token, None);
        assert_eq!(c.common.topic_prefix, "");
    }

    #[test]
    fn every_variable_read_is_listed_in_help() {
        let read = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let _ = Config::from_lookup(|k| {
            read.borrow_mut().insert(k.to_owned());
            (k == "AUTH_MODE").then(|| "dev".to_owned())
        });
        let listed: Vec<&str> = vars().iter().map(|v| v.name).collect();
        for var in read.borrow().iter() {
            assert!(
                listed.contains(&var.as_str()),
                "{var} is read but not in vars()"
            );
        }
        assert!(read.borrow().len() > 5);
    }
}
