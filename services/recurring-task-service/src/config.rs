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
pub use todo_service::cli::ServiceConfig;

/// What `recurring-task-service --help` says it is.
pub const ABOUT: &str = "Turns a completed recurring task into a request for its next occurrence \
     (a stateless Dapr subscriber of task-events).";

impl ServiceConfig for Config {
    const NAME: &'static str = todo_topology::app_ids::RECURRING_TASK_SERVICE;
    const ABOUT: &'static str = ABOUT;
    fn vars() -> Vec<Var> {
        cli::service_vars(
            "127.0.0.1:50052",
            "127.0.0.1:9465",
            cli::Callers::SidecarOnly,
            [Var::new(
                "PUBLISH_TIMEOUT_MS",
                "5000",
                "deadline of one publish; past it the event is retried",
            )],
        )
    }
    fn read(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(get);
        let publish_timeout_ms: u64 = env.positive("PUBLISH_TIMEOUT_MS", 5_000)?;
        Ok(Self {
            common: env.common(DEFAULT_LISTEN, DEFAULT_METRICS)?,
            publish_timeout: Duration::from_millis(publish_timeout_ms),
        })
    }
}

pub use todo_topology::Topics;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    use todo_service::cli::read_pairs as cfg;

    #[test]
    fn defaults_run_on_one_machine() {
        let c = cfg::<Config>(&[]).unwrap();
        assert_eq!(c.common.listen, DEFAULT_LISTEN);
        assert_eq!(c.common.metrics_addr, Some(DEFAULT_METRICS));
        assert_eq!(c.publish_timeout, Duration::from_secs(5));
        assert_eq!(c.common.topics(), Topics::new(""));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [("PUBLISH_TIMEOUT_MS", "soon"), ("PUBLISH_TIMEOUT_MS", "0")] {
            let e = cfg::<Config>(&[(var, value)]).unwrap_err();
            assert_eq!(e.var, var, "{var}={value}: {e}");
        }
    }

    #[test]
    fn every_variable_read_is_listed_in_help() {
        todo_service::cli::assert_every_variable_listed::<Config>();
    }
}
