//! Configuration from the environment, validated at start; errors name the variable.

use std::time::Duration;

pub use todo_env::DEFAULT_DAPR_GRPC_ENDPOINT;

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
use todo_env::{Common, cli::Var};
pub use todo_service::cli::ServiceConfig;
use todo_service::cli::{AppConfig, ConfigEnv, SidecarOnly};

/// What `recurring-task-service --help` says it is.
pub const ABOUT: &str = "Turns a completed recurring task into a request for its next occurrence \
     (a stateless Dapr subscriber of task-events).";

/// `PUBLISH_TIMEOUT_MS`: its name, default and meaning, given once.
const PUBLISH_TIMEOUT_MS: Var = Var::new(
    "PUBLISH_TIMEOUT_MS",
    "5000",
    "deadline of one publish; past it the event is retried",
)
.refusing(&["soon", "0"]);

impl AppConfig for Config {
    const APP: todo_topology::apps::App = todo_topology::apps::RECURRING_TASK_SERVICE;
    const ABOUT: &'static str = ABOUT;
    type Identity = SidecarOnly;
    fn own_vars() -> Vec<Var> {
        vec![PUBLISH_TIMEOUT_MS]
    }
    fn from_env(env: &ConfigEnv<'_>, common: Common, _: SidecarOnly) -> Result<Self, ConfigError> {
        let publish_timeout_ms: u64 = env.positive(PUBLISH_TIMEOUT_MS.name, 5_000)?;
        Ok(Self {
            common,
            publish_timeout: Duration::from_millis(publish_timeout_ms),
        })
    }
    fn identity(&self) -> &SidecarOnly {
        &SidecarOnly
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
        assert_eq!(c.common.listen.to_string(), "127.0.0.1:50052");
        assert_eq!(c.common.metrics_addr.unwrap().to_string(), "127.0.0.1:9465");
        assert_eq!(c.publish_timeout, Duration::from_secs(5));
        assert_eq!(c.common.topics(), Topics::new(""));
    }

    #[test]
    fn variables_are_listed_and_bad_values_named() {
        todo_service::cli::assert_variables_checked::<Config>(&[]);
    }
}
