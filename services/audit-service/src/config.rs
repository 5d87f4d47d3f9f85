//! Configuration from the environment, validated at start; errors name the variable.

use std::time::Duration;

use todo_auth::AuthMode;
pub use todo_env::ConfigError;
use todo_env::{Common, cli::Var};
use todo_service::cli::{AppConfig, ConfigEnv, OwnDatabase};
pub use todo_service::cli::{DatabaseConfig, ServiceConfig};
use todo_topology::apps::App;

/// `DATABASE_URL` when unset.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://.data/audit.db?mode=rwc";
/// The most entries daprd may hand over in one bulk delivery (`AUDIT_BULK_MAX_MESSAGES`):
/// SQLite takes at most 32,766 bound values per statement, 16 per entry.
pub const MAX_BULK_MESSAGES: i32 = 1_000;

/// Everything audit-service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// What every service reads: listen address, sidecar, tokens, limits, topic prefix,
    /// metrics (see [`todo_env::Common`]).
    pub common: todo_env::Common,
    /// `AUTH_MODE` (jwt|dev, default jwt) with `JWT_ALGORITHM` and `JWT_SECRET` / `JWT_PUBLIC_KEY`.
    pub auth: AuthMode,
    /// `DATABASE_URL` (default `sqlite://.data/audit.db?mode=rwc`) and
    /// `DATABASE_MAX_CONNECTIONS`: the audit log's own database.
    pub database: DatabaseConfig,
    /// `AUDIT_RETENTION_DAYS` (default: keep forever): entries that occurred longer ago are
    /// pruned in the background.
    pub retention: Option<Duration>,
    /// `AUDIT_PRUNE_BATCH` (default 1000): entries deleted per prune statement.
    pub prune_batch: u64,
    /// `AUDIT_PRUNE_INTERVAL_SECS` (default 300): how often the pruner looks.
    pub prune_interval: Duration,
    /// `AUDIT_BULK_MAX_MESSAGES` (default 200, at most 1000): entries per bulk delivery.
    pub bulk_max_messages: i32,
    /// `AUDIT_BULK_MAX_AWAIT_MS` (default 20): how long daprd waits to fill a bulk delivery.
    pub bulk_max_await_ms: i32,
}

/// What `audit-service --help` says it is.
pub const ABOUT: &str = "Keeps every task and reminder event as one append-only audit entry (taken in bulk \
     through Dapr, exactly once per event id) and serves each owner the history of their tasks.";

impl AppConfig for Config {
    const APP: App = todo_topology::apps::AUDIT_SERVICE;
    const ABOUT: &'static str = ABOUT;
    type Identity = AuthMode;
    const DATABASE: Option<OwnDatabase> = Some(OwnDatabase {
        default_url: DEFAULT_DATABASE_URL,
        help: "`sqlite://…` or `postgres://…`: the audit log's own database",
        name: "audit database",
    });
    fn own_vars() -> Vec<Var> {
        vec![
            Var::new(
                "AUDIT_RETENTION_DAYS",
                "—",
                "prune entries that occurred more than this many days ago (unset: keep forever)",
            )
            .refusing(&["0", "soon"]),
            Var::new(
                "AUDIT_PRUNE_BATCH",
                "1000",
                "entries deleted per prune statement",
            )
            .refusing(&["-1"]),
            Var::new(
                "AUDIT_PRUNE_INTERVAL_SECS",
                "300",
                "how often the pruner looks for expired entries",
            ),
            Var::new(
                "AUDIT_BULK_MAX_MESSAGES",
                "200",
                "most events daprd hands over per bulk delivery (at most 1000)",
            )
            .refusing(&["5000"]),
            Var::new(
                "AUDIT_BULK_MAX_AWAIT_MS",
                "20",
                "how long daprd waits to fill a bulk delivery",
            ),
        ]
    }

    fn from_env(env: &ConfigEnv<'_>, common: Common, auth: AuthMode) -> Result<Self, ConfigError> {
        let database = DatabaseConfig::of::<Self>(env)?;
        let retention = match env.get("AUDIT_RETENTION_DAYS") {
            None => None,
            Some(_) => {
                let days: u64 = env.positive("AUDIT_RETENTION_DAYS", 1)?;
                // Past this, now − retention would not be a date.
                if days > 1_000_000 {
                    return Err(ConfigError::new(
                        "AUDIT_RETENTION_DAYS",
                        "at most 1000000 days (unset it to keep forever)",
                    ));
                }
                Some(Duration::from_secs(days * 86_400))
            }
        };
        let bulk_max_messages = env.positive("AUDIT_BULK_MAX_MESSAGES", 200)?;
        if bulk_max_messages > MAX_BULK_MESSAGES {
            return Err(ConfigError::new(
                "AUDIT_BULK_MAX_MESSAGES",
                format!("at most {MAX_BULK_MESSAGES}"),
            ));
        }
        Ok(Self {
            common,
            auth,
            database,
            retention,
            prune_batch: env.positive("AUDIT_PRUNE_BATCH", 1_000)?,
            prune_interval: Duration::from_secs(env.positive("AUDIT_PRUNE_INTERVAL_SECS", 300)?),
            bulk_max_messages,
            bulk_max_await_ms: env.positive("AUDIT_BULK_MAX_AWAIT_MS", 20)?,
        })
    }

    fn identity(&self) -> &AuthMode {
        &self.auth
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    use todo_service::cli::read_pairs as cfg;

    #[test]
    fn defaults_keep_forever_on_sqlite() {
        let c = cfg::<Config>(&[("AUTH_MODE", "dev")]).unwrap();
        assert_eq!(c.database.url, DEFAULT_DATABASE_URL);
        assert_eq!(c.retention, None);
        assert_eq!(c.common.listen.to_string(), "127.0.0.1:50054");
        assert_eq!((c.bulk_max_messages, c.bulk_max_await_ms), (200, 20));
    }

    #[test]
    fn retention_is_counted_in_days() {
        let c = cfg::<Config>(&[("AUTH_MODE", "dev"), ("AUDIT_RETENTION_DAYS", "30")]).unwrap();
        assert_eq!(c.retention, Some(Duration::from_secs(30 * 86_400)));
    }

    #[test]
    fn variables_are_listed_and_bad_values_named() {
        todo_service::cli::assert_variables_checked::<Config>(&[("AUTH_MODE", "dev")]);
    }
}
