//! Configuration from the environment, validated at start; errors name the variable.

use std::time::Duration;

use crate::auth::AuthMode;

/// Everything task-service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// What every service reads: listen address, sidecar, tokens, limits, topic prefix,
    /// metrics (see [`todo_env::Common`]).
    pub common: todo_env::Common,
    /// `DATABASE_URL` (default: SQLite file `.data/tasks.db`).
    pub database_url: String,
    /// `DATABASE_MAX_CONNECTIONS` (default 16 on PostgreSQL, 4 on SQLite).
    pub database_max_connections: u32,
    /// `AUTH_MODE` (jwt|dev) with `JWT_ALGORITHM` and `JWT_SECRET` / `JWT_PUBLIC_KEY`.
    pub auth: AuthMode,
    /// `WRITE_GROUP_MAX`: how many writes share one commit at most (group commit; 1: each
    /// write commits alone). Default 64.
    pub write_group_max: usize,
    /// `OUTBOX_BATCH_SIZE`, `OUTBOX_POLL_MS`, `OUTBOX_WARN_AGE_SECS`.
    pub relay: crate::outbox::RelayConfig,
    /// `REMINDER_MAX_LATENESS_SECS` (default 21600).
    pub scheduler: crate::reminders::SchedulerConfig,
    /// `DEFAULT_REMINDERS_SECS`: offsets before the due time, comma-separated (default `86400,3600`).
    pub default_reminders: Vec<todo_proto::todo::v1::Reminder>,
}

pub use todo_env::ConfigError;
use todo_env::{Common, cli::Var};
pub use todo_service::cli::ServiceConfig;
use todo_service::cli::{AppConfig, ConfigEnv, DatabaseConfig, OwnDatabase};

/// What `task-service --help` says it is.
pub const ABOUT: &str = "The Task API (gRPC) persisted with sea-orm; publishes every change through Dapr \
     (transactional outbox), consumes task-occurrences, fires reminders.";

impl AppConfig for Config {
    const APP: todo_topology::apps::App = todo_topology::apps::TASK_SERVICE;
    const ABOUT: &'static str = ABOUT;
    type Identity = AuthMode;
    const DATABASE: Option<OwnDatabase> = Some(OwnDatabase {
        default_url: "sqlite://.data/tasks.db?mode=rwc",
        help: "`sqlite://…` or `postgres://…`",
        name: "tasks database",
    });
    fn own_vars() -> Vec<Var> {
        vec![
            Var::new(
                "WRITE_GROUP_MAX",
                "64",
                "writes that share one commit at most (group commit); 1 commits each alone",
            )
            .refusing(&["0"]),
            Var::new(
                "OUTBOX_BATCH_SIZE",
                "200",
                "events the relay publishes per batch",
            )
            .refusing(&["0"]),
            Var::new(
                "OUTBOX_POLL_MS",
                "1000",
                "the relay's fallback poll, in milliseconds",
            ),
            Var::new(
                "OUTBOX_WARN_AGE_SECS",
                "60",
                "warn when the oldest unsent event is older",
            ),
            Var::new(
                "DEFAULT_REMINDERS_SECS",
                "86400,3600",
                "default reminder offsets before the due time, comma-separated seconds",
            )
            .refusing(&["3600,soon"]),
            Var::new(
                "REMINDER_MAX_LATENESS_SECS",
                "21600",
                "a reminder missed by more (service down) is cancelled, not fired",
            ),
        ]
    }
    fn from_env(env: &ConfigEnv<'_>, common: Common, auth: AuthMode) -> Result<Self, ConfigError> {
        let database = DatabaseConfig::of::<Self>(env)?;
        Ok(Self {
            write_group_max: env.positive("WRITE_GROUP_MAX", todo_service::db::MAX_GROUP)?,
            common,
            database_url: database.url,
            database_max_connections: database.max_connections,
            auth,
            relay: crate::outbox::RelayConfig {
                batch_size: env.positive("OUTBOX_BATCH_SIZE", 200)?,
                poll_interval: Duration::from_millis(env.positive("OUTBOX_POLL_MS", 1000)?),
                warn_age: Duration::from_secs(env.positive("OUTBOX_WARN_AGE_SECS", 60)?),
                ..crate::outbox::RelayConfig::default()
            },
            scheduler: crate::reminders::SchedulerConfig {
                max_lateness: Duration::from_secs(
                    env.positive("REMINDER_MAX_LATENESS_SECS", 6 * 3600)?,
                ),
                ..crate::reminders::SchedulerConfig::default()
            },
            default_reminders: match env.get("DEFAULT_REMINDERS_SECS") {
                None => crate::reminders::default_reminders(),
                Some(list) => list
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| {
                        s.trim()
                            .parse::<i64>()
                            .ok()
                            .filter(|n| *n >= 0)
                            .map(|seconds| todo_proto::todo::v1::Reminder {
                                when: Some(todo_proto::todo::v1::reminder::When::BeforeDue(
                                    prost_types::Duration { seconds, nanos: 0 },
                                )),
                            })
                            .ok_or_else(|| {
                                ConfigError::new(
                                    "DEFAULT_REMINDERS_SECS",
                                    format!("{s:?} is not a number of seconds"),
                                )
                            })
                    })
                    .collect::<Result<_, _>>()?,
            },
        })
    }
    fn identity(&self) -> &AuthMode {
        &self.auth
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use todo_service::cli::read_pairs as cfg;

    #[test]
    fn defaults_run_on_one_machine() {
        let c = cfg::<Config>(&[("AUTH_MODE", "dev")]).unwrap();
        assert!(c.database_url.starts_with("sqlite:"));
        assert_eq!(c.common.dapr_grpc_endpoint, "http://127.0.0.1:50001");
        assert_eq!(c.common.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.common.metrics_addr.unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(c.common.topic_prefix, "");
        let off = cfg::<Config>(&[("AUTH_MODE", "dev"), ("METRICS_ADDR", "off")]).unwrap();
        assert_eq!(off.common.metrics_addr, None);
    }

    #[test]
    fn variables_are_listed_and_bad_values_named() {
        todo_service::cli::assert_variables_checked::<Config>(&[("AUTH_MODE", "dev")]);
    }
}
