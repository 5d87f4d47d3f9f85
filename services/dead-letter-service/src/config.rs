//! Configuration from the environment, validated at start; errors name the variable.

use std::{collections::BTreeSet, time::Duration};

use todo_auth::AuthMode;
pub use todo_env::ConfigError;
use todo_env::{Common, cli::Var};
use todo_service::cli::{AppConfig, ConfigEnv, OwnDatabase};
pub use todo_service::cli::{DatabaseConfig, ServiceConfig};
use todo_topology::apps::App;

/// `DATABASE_URL` when unset.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://.data/dead-letters.db?mode=rwc";
/// The admin `DLQ_ADMINS` names when unset in `AUTH_MODE=dev` (in `jwt` mode: nobody).
pub const DEV_ADMIN: &str = "admin";

/// Everything dead-letter-service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// What every service reads: listen address, sidecar, tokens, limits, topic prefix,
    /// metrics (see [`todo_env::Common`]).
    pub common: todo_env::Common,
    /// `AUTH_MODE` (jwt|dev, default jwt) with `JWT_ALGORITHM` and `JWT_SECRET` / `JWT_PUBLIC_KEY`.
    pub auth: AuthMode,
    /// `DATABASE_URL` and `DATABASE_MAX_CONNECTIONS`: the dead letters' own database.
    pub database: DatabaseConfig,
    /// `DLQ_ADMINS`: the user ids (JWT `sub`, or `x-user-id` in dev mode) allowed to call
    /// the API. Default `admin` in dev mode, nobody in jwt mode.
    pub admins: BTreeSet<String>,
    /// `DLQ_PUBLISH_TIMEOUT_MS` (default 5000): deadline of one replay's publish.
    pub publish_timeout: Duration,
}

/// What `dead-letter-service --help` says it is.
pub const ABOUT: &str = "Records every message Dapr moved to a <topic>-dlq topic (decoded to JSON where it decodes) \
     and lets admins list, show, replay (to the original topic, same CloudEvent id) and discard them.";

impl AppConfig for Config {
    const APP: App = todo_topology::apps::DEAD_LETTER_SERVICE;
    const ABOUT: &'static str = ABOUT;
    type Identity = AuthMode;
    const DATABASE: Option<OwnDatabase> = Some(OwnDatabase {
        default_url: DEFAULT_DATABASE_URL,
        help: "`sqlite://…` or `postgres://…`: the dead letters' own database",
        name: "dead-letter database",
    });
    fn own_vars() -> Vec<Var> {
        vec![
            Var::new(
                "DLQ_ADMINS",
                "admin (AUTH_MODE=dev), nobody (jwt)",
                "comma-separated user ids (JWT sub, or x-user-id in dev mode) allowed to list, show, replay and discard",
            )
            .refusing(&["a,,b"]),
            Var::new(
                "DLQ_PUBLISH_TIMEOUT_MS",
                "5000",
                "deadline of one replay's publish through the sidecar",
            )
            .refusing(&["0"]),
        ]
    }

    fn from_env(env: &ConfigEnv<'_>, common: Common, auth: AuthMode) -> Result<Self, ConfigError> {
        let database = DatabaseConfig::of::<Self>(env)?;
        let admins = match env.get("DLQ_ADMINS") {
            Some(list) => parse_admins(&list)?,
            None if matches!(auth, AuthMode::Dev) => BTreeSet::from([DEV_ADMIN.to_owned()]),
            None => BTreeSet::new(),
        };
        let publish_timeout_ms: u64 = env.positive("DLQ_PUBLISH_TIMEOUT_MS", 5_000)?;
        Ok(Self {
            common,
            auth,
            database,
            admins,
            publish_timeout: Duration::from_millis(publish_timeout_ms),
        })
    }

    fn identity(&self) -> &AuthMode {
        &self.auth
    }
}

/// `a, b ,c` → {a, b, c}; an empty entry (`a,,b`) is a mistake, not an admin.
fn parse_admins(list: &str) -> Result<BTreeSet<String>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .map(|id| {
            if id.is_empty() {
                Err(ConfigError::new(
                    "DLQ_ADMINS",
                    "an empty user id in the list (use `alice,bob`)",
                ))
            } else {
                Ok(id.to_owned())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    use todo_service::cli::read_pairs as cfg;

    #[test]
    fn dev_mode_has_an_admin_jwt_mode_has_none_unless_named() {
        let c = cfg::<Config>(&[("AUTH_MODE", "dev")]).unwrap();
        assert_eq!(c.admins, BTreeSet::from(["admin".to_owned()]));
        assert_eq!(c.database.url, DEFAULT_DATABASE_URL);
        assert_eq!(c.common.listen.to_string(), "127.0.0.1:50056");
        let secret = "0123456789abcdef0123456789abcdef";
        let c = cfg::<Config>(&[("JWT_SECRET", secret)]).unwrap();
        assert!(c.admins.is_empty());
        let c = cfg::<Config>(&[("JWT_SECRET", secret), ("DLQ_ADMINS", "ops, alice")]).unwrap();
        assert_eq!(
            c.admins,
            BTreeSet::from(["alice".to_owned(), "ops".to_owned()])
        );
    }

    #[test]
    fn variables_are_listed_and_bad_values_named() {
        todo_service::cli::assert_variables_checked::<Config>(&[("AUTH_MODE", "dev")]);
    }
}
