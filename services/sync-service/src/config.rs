//! Configuration from the environment, validated at start; errors name the variable.

use std::time::Duration;

use todo_auth::AuthMode;
pub use todo_env::ConfigError;
use todo_env::{Common, cli::Var};
pub use todo_service::cli::ServiceConfig;
use todo_service::cli::{AppConfig, ConfigEnv};

use crate::hub::Limits;

/// Everything sync-service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// What every service reads: listen address, sidecar, tokens, limits, topic prefix,
    /// metrics (see [`todo_env::Common`]).
    pub common: Common,
    /// `AUTH_MODE` (jwt|dev, default jwt) with `JWT_ALGORITHM` and `JWT_SECRET` / `JWT_PUBLIC_KEY`.
    pub auth: AuthMode,
    /// The window, the buffers and the stream limits (`SYNC_*`).
    pub limits: Limits,
    /// `SYNC_HEARTBEAT_MS` (default 15000): an idle stream gets a heartbeat this often.
    pub heartbeat: Duration,
    /// `SYNC_BULK_MAX_MESSAGES` (default 500, at most 10000) and `SYNC_BULK_MAX_AWAIT_MS`
    /// (default 10): changes per bulk delivery, and how long daprd waits to fill one.
    pub bulk: (i32, i32),
}

/// What `sync-service --help` says it is.
pub const ABOUT: &str = "Streams every change of a user's tasks to each of their connected clients \
     (WatchTasks, gRPC and gRPC-Web), resuming from a cursor without gap or duplicate.";

impl AppConfig for Config {
    const APP: todo_topology::apps::App = todo_topology::apps::SYNC_SERVICE;
    const ABOUT: &'static str = ABOUT;
    type Identity = AuthMode;
    fn identity(&self) -> &AuthMode {
        &self.auth
    }
    fn own_vars() -> Vec<Var> {
        vec![
            Var::new(
                "SYNC_WINDOW_CHANGES",
                "1000",
                "changes held per user for clients that resume (the newest ones)",
            )
            .refusing(&["0"]),
            Var::new(
                "SYNC_WINDOW_SECS",
                "600",
                "how long a change is held for clients that resume",
            )
            .refusing(&["99999999"]),
            Var::new(
                "SYNC_STREAM_BUFFER",
                "256",
                "changes queued for one stream; a client that falls further behind gets RESYNC",
            )
            .refusing(&["many"]),
            Var::new(
                "SYNC_HEARTBEAT_MS",
                "15000",
                "an idle stream gets a heartbeat with its current cursor this often",
            )
            .refusing(&["-1"]),
            Var::new(
                "SYNC_MAX_STREAMS_PER_USER",
                "32",
                "open streams per user on one replica (RESOURCE_EXHAUSTED past it)",
            ),
            Var::new(
                "SYNC_MAX_STREAMS",
                "20000",
                "open streams on one replica (RESOURCE_EXHAUSTED past it)",
            )
            .refusing(&["0"]),
            Var::new(
                "SYNC_BULK_MAX_MESSAGES",
                "500",
                "most changes daprd hands over per bulk delivery (at most 10000)",
            )
            .refusing(&["20000"]),
            Var::new(
                "SYNC_BULK_MAX_AWAIT_MS",
                "10",
                "how long daprd waits to fill a bulk delivery",
            )
            .refusing(&["soon"]),
            Var::new(
                "SYNC_MAX_HELD_CHANGES",
                "100000",
                "changes held for all users together; past it the oldest go first",
            )
            .refusing(&["0"]),
            Var::new(
                "SYNC_CLOCK_SKEW_MS",
                "2000",
                "allowance for clock skew and consumer lag when judging a cursor's time",
            )
            .refusing(&["x"]),
        ]
    }

    fn from_env(env: &ConfigEnv<'_>, common: Common, auth: AuthMode) -> Result<Self, ConfigError> {
        let window_secs: u64 = env.positive("SYNC_WINDOW_SECS", 600)?;
        if window_secs > 7 * 86_400 {
            return Err(ConfigError::new(
                "SYNC_WINDOW_SECS",
                "at most 604800 (7 days)",
            ));
        }
        let limits = Limits {
            window_changes: env.positive("SYNC_WINDOW_CHANGES", 1_000)?,
            window_time: Duration::from_secs(window_secs),
            stream_buffer: env.positive("SYNC_STREAM_BUFFER", 256)?,
            max_streams_per_user: env.positive("SYNC_MAX_STREAMS_PER_USER", 32)?,
            max_streams: env.positive("SYNC_MAX_STREAMS", 20_000)?,
            clock_skew: Duration::from_millis(env.parse("SYNC_CLOCK_SKEW_MS", 2_000)?),
            max_held: env.positive("SYNC_MAX_HELD_CHANGES", 100_000)?,
        };
        let bulk_max: i32 = env.positive("SYNC_BULK_MAX_MESSAGES", 500)?;
        if bulk_max > 10_000 {
            return Err(ConfigError::new("SYNC_BULK_MAX_MESSAGES", "at most 10000"));
        }
        Ok(Self {
            common,
            auth,
            limits,
            bulk: (bulk_max, env.positive("SYNC_BULK_MAX_AWAIT_MS", 10)?),
            heartbeat: Duration::from_millis(env.positive("SYNC_HEARTBEAT_MS", 15_000)?),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const DEV: (&str, &str) = ("AUTH_MODE", "dev");

    /// Unset, every limit is the hub's own default, and the service listens after
    /// audit-service.
    #[test]
    fn defaults_are_the_hubs_and_run_on_one_machine() {
        let c: Config = todo_service::cli::read_pairs(&[DEV]).unwrap();
        assert_eq!(c.limits, Limits::default());
        assert_eq!(
            (c.common.listen.to_string(), c.heartbeat),
            ("127.0.0.1:50055".to_owned(), Duration::from_secs(15))
        );
    }

    #[test]
    fn variables_are_listed_and_bad_values_named() {
        todo_service::cli::assert_variables_checked::<Config>(&[DEV]);
    }
}
