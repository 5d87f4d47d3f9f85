//! Configuration from the environment, validated at start; errors name the variable.

use std::time::Duration;

use crate::auth::AuthMode;

pub use todo_env::DEFAULT_DAPR_GRPC_ENDPOINT;
/// `NOTIFICATION_RETENTION_HOURS` when unset: 30 days, well past Kafka's default 7-day
/// retention, so no redelivery can outlive the record that makes it a no-op.
pub const DEFAULT_RETENTION_HOURS: u64 = 30 * 24;
/// `NOTIFICATIONS_PER_USER` when unset.
pub const DEFAULT_LIST_MAX: usize = 500;
/// The largest `NOTIFICATIONS_PER_USER`: the list is one state value, rewritten per delivery.
pub const MAX_LIST_MAX: usize = 5_000;

/// Everything notification-service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// What every service reads: listen address, sidecar, tokens, limits, topic prefix,
    /// metrics (see [`todo_env::Common`]).
    pub common: todo_env::Common,
    /// `AUTH_MODE` (jwt|dev, default jwt) with `JWT_ALGORITHM` and `JWT_SECRET` / `JWT_PUBLIC_KEY`.
    pub auth: AuthMode,
    /// `STATE_STORE` (default `notification-state`): the state store component's name.
    pub state_store: String,
    /// `NOTIFICATION_RETENTION_HOURS` (default 720): how long a delivery is remembered (the
    /// TTL of its record) and listed.
    pub retention: Duration,
    /// `NOTIFICATIONS_PER_USER` (default 500, at most 5000): how many a user's list keeps.
    pub list_max: usize,
    /// `NOTIFICATION_CLAIM_LEASE_MS` (default 15000, 1000 to 600000): how long a claim keeps
    /// other handlings of the same reminder out. A channel call plus the record must stay
    /// under half of it (a batch starts deliveries under its claims only while two thirds of
    /// the lease are left).
    pub claim_lease: Duration,
    /// `STATE_TIMEOUT_MS` (default 5000): deadline of one state call.
    pub state_timeout: Duration,
}

pub use todo_env::ConfigError;
use todo_env::{Common, cli::Var};
pub use todo_service::cli::ServiceConfig;
use todo_service::cli::{AppConfig, ConfigEnv};

/// What `notification-service --help` says it is.
pub const ABOUT: &str = "Delivers each due reminder once (structured log lines first), recorded in a Dapr \
     state store; lists them per user.";

impl AppConfig for Config {
    const APP: todo_topology::apps::App = todo_topology::apps::NOTIFICATION_SERVICE;
    const ABOUT: &'static str = ABOUT;
    type Identity = AuthMode;
    fn own_vars() -> Vec<Var> {
        vec![
            Var::new(
                "STATE_STORE",
                "notification-state",
                "the Dapr state store component that keeps the delivery log",
            ),
            Var::new(
                "NOTIFICATION_RETENTION_HOURS",
                "720",
                "how long a delivery is remembered (the TTL of its record) and listed",
            ),
            Var::new(
                "NOTIFICATIONS_PER_USER",
                "500",
                "how many notifications a user's list keeps (at most 5000)",
            ),
            Var::new(
                "NOTIFICATION_CLAIM_LEASE_MS",
                "15000",
                "how long a claim keeps other handlings of the same reminder out (1000 to 600000); a channel call plus the record must stay under half of it",
            ),
            Var::new("STATE_TIMEOUT_MS", "5000", "deadline of one state call"),
        ]
    }
    fn from_env(env: &ConfigEnv<'_>, common: Common, auth: AuthMode) -> Result<Self, ConfigError> {
        let retention_hours: u64 =
            env.positive("NOTIFICATION_RETENTION_HOURS", DEFAULT_RETENTION_HOURS)?;
        // Past this the TTL in seconds would not fit Dapr's int32 metadata (about 68 years).
        if retention_hours > 500_000 {
            return Err(ConfigError::new(
                "NOTIFICATION_RETENTION_HOURS",
                "at most 500000 hours",
            ));
        }
        let list_max = env.positive("NOTIFICATIONS_PER_USER", DEFAULT_LIST_MAX)?;
        if list_max > MAX_LIST_MAX {
            return Err(ConfigError::new(
                "NOTIFICATIONS_PER_USER",
                format!("at most {MAX_LIST_MAX} (each user's list is one state value)"),
            ));
        }
        let claim_lease_ms: u64 = env.positive("NOTIFICATION_CLAIM_LEASE_MS", 15_000)?;
        if !(1_000..=600_000).contains(&claim_lease_ms) {
            return Err(ConfigError::new(
                "NOTIFICATION_CLAIM_LEASE_MS",
                "between 1000 and 600000 (1 s to 10 min)",
            ));
        }
        Ok(Self {
            common,
            auth,
            state_store: env
                .get("STATE_STORE")
                .unwrap_or_else(|| crate::STATE_STORE.to_owned()),
            retention: Duration::from_secs(retention_hours * 3600),
            list_max,
            claim_lease: Duration::from_millis(claim_lease_ms),
            state_timeout: Duration::from_millis(env.positive("STATE_TIMEOUT_MS", 5_000)?),
        })
    }
    fn identity(&self) -> &AuthMode {
        &self.auth
    }
}

pub use todo_topology::Topics;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    use todo_service::cli::read_pairs as cfg;

    const DEV: (&str, &str) = ("AUTH_MODE", "dev");

    #[test]
    fn defaults_run_on_one_machine() {
        let c = cfg::<Config>(&[DEV]).unwrap();
        assert_eq!(c.common.listen.to_string(), "127.0.0.1:50053");
        assert_eq!(c.common.metrics_addr.unwrap().to_string(), "127.0.0.1:9466");
        assert!(matches!(c.auth, AuthMode::Dev));
        assert_eq!(c.state_store, "notification-state");
        assert_eq!(c.retention, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(c.list_max, 500);
        assert_eq!(c.claim_lease, Duration::from_secs(15));
        assert_eq!(c.state_timeout, Duration::from_secs(5));
        assert_eq!(c.common.topics(), Topics::new(""));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("AUTH_MODE", "magic"),
            ("JWT_ALGORITHM", "ROT13"),
            ("NOTIFICATION_RETENTION_HOURS", "0"),
            ("NOTIFICATION_RETENTION_HOURS", "forever"),
            ("NOTIFICATION_RETENTION_HOURS", "600000"),
            ("NOTIFICATIONS_PER_USER", "-1"),
            ("NOTIFICATIONS_PER_USER", "100000"),
            ("STATE_TIMEOUT_MS", "soon"),
            ("NOTIFICATION_CLAIM_LEASE_MS", "999"),
            ("NOTIFICATION_CLAIM_LEASE_MS", "600001"),
        ] {
            let mut pairs = vec![(var, value)];
            if var != "AUTH_MODE" && var != "JWT_ALGORITHM" {
                pairs.push(DEV);
            }
            let e = cfg::<Config>(&pairs).unwrap_err();
            assert_eq!(e.var, var, "{var}={value}: {e}");
            assert!(e.to_string().starts_with(var), "{e}");
        }
    }

    #[test]
    fn blank_values_count_as_unset() {
        let c = cfg::<Config>(&[DEV, ("STATE_STORE", "")]).unwrap();
        assert_eq!(c.state_store, crate::STATE_STORE);
    }

    #[test]
    fn every_variable_read_is_listed_in_help() {
        todo_service::cli::assert_every_variable_listed::<Config>();
    }
}
