//! Configuration from the environment, validated at start; errors name the variable.

use std::{net::SocketAddr, time::Duration};

use todo_topology::topics;

use crate::auth::AuthMode;

/// `APP_ADDR` when unset: after task-service's 50051 and recurring-task-service's 50052.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50053";
/// The sidecar when neither `DAPR_GRPC_ENDPOINT` nor `DAPR_GRPC_PORT` is set (daprd's default).
pub const DEFAULT_DAPR_GRPC_ENDPOINT: &str = "http://127.0.0.1:50001";
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
    /// `APP_ADDR`: where the Notification API, AppCallback, health and reflection are served.
    pub listen: SocketAddr,
    /// `AUTH_MODE` (jwt|dev, default jwt) with `JWT_ALGORITHM` and `JWT_SECRET` / `JWT_PUBLIC_KEY`.
    pub auth: AuthMode,
    /// `APP_API_TOKEN`: required from daprd on callbacks.
    pub app_api_token: Option<String>,
    /// `DAPR_GRPC_ENDPOINT` (e.g. `http://127.0.0.1:50001`) or `DAPR_GRPC_PORT`: the sidecar.
    pub dapr_grpc_endpoint: String,
    /// `DAPR_API_TOKEN`: sent to the sidecar.
    pub dapr_api_token: Option<String>,
    /// `TOPIC_PREFIX`: prefixes every topic name (empty in production).
    pub topic_prefix: String,
    /// `STATE_STORE` (default `notification-state`): the state store component's name.
    pub state_store: String,
    /// `NOTIFICATION_RETENTION_HOURS` (default 720): how long a delivery is remembered (the
    /// TTL of its record) and listed.
    pub retention: Duration,
    /// `NOTIFICATIONS_PER_USER` (default 500, at most 5000): how many a user's list keeps.
    pub list_max: usize,
    /// `NOTIFICATION_CLAIM_LEASE_MS` (default 15000, 1000 to 600000): how long a claim keeps
    /// other handlings of the same reminder out; must exceed the slowest channel call.
    pub claim_lease: Duration,
    /// `STATE_TIMEOUT_MS` (default 5000): deadline of one state call.
    pub state_timeout: Duration,
    /// `REQUEST_TIMEOUT_MS` (default 10000): deadline of one API request.
    pub request_timeout: Duration,
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
    /// Where due reminders arrive (`reminders`).
    pub reminders: String,
    /// Where what this service DROPs goes (`reminders-dlq`).
    pub reminders_dead_letter: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        Self {
            reminders: topics::namespaced(prefix, topics::REMINDERS),
            reminders_dead_letter: topics::namespaced(
                prefix,
                &topics::dead_letter(topics::REMINDERS),
            ),
        }
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
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let listen = get("APP_ADDR")
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned())
            .parse()
            .map_err(|e| err("APP_ADDR", format!("not a socket address: {e}")))?;
        let auth = AuthMode::from_lookup(get).map_err(|e| err(e.var, e.reason))?;
        let dapr_grpc_endpoint = match (get("DAPR_GRPC_ENDPOINT"), get("DAPR_GRPC_PORT")) {
            (Some(e), _) => endpoint(&e)?,
            (None, Some(p)) => {
                let port: u16 = p
                    .parse()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| err("DAPR_GRPC_PORT", format!("{p:?} is not a port")))?;
                format!("http://127.0.0.1:{port}")
            }
            (None, None) => DEFAULT_DAPR_GRPC_ENDPOINT.to_owned(),
        };
        let topic_prefix = get(topics::PREFIX_VAR).unwrap_or_default();
        check_prefix(&topic_prefix)?;
        let retention_hours: u64 = positive(
            &get,
            "NOTIFICATION_RETENTION_HOURS",
            DEFAULT_RETENTION_HOURS,
        )?;
        // Past this the TTL in seconds would not fit Dapr's int32 metadata (about 68 years).
        if retention_hours > 500_000 {
            return Err(err("NOTIFICATION_RETENTION_HOURS", "at most 500000 hours"));
        }
        let list_max = positive(&get, "NOTIFICATIONS_PER_USER", DEFAULT_LIST_MAX)?;
        if list_max > MAX_LIST_MAX {
            return Err(err(
                "NOTIFICATIONS_PER_USER",
                format!("at most {MAX_LIST_MAX} (each user's list is one state value)"),
            ));
        }
        let claim_lease_ms: u64 = positive(&get, "NOTIFICATION_CLAIM_LEASE_MS", 15_000)?;
        if !(1_000..=600_000).contains(&claim_lease_ms) {
            return Err(err(
                "NOTIFICATION_CLAIM_LEASE_MS",
                "between 1000 and 600000 (1 s to 10 min)",
            ));
        }
        Ok(Self {
            listen,
            auth,
            app_api_token: get("APP_API_TOKEN"),
            dapr_grpc_endpoint,
            dapr_api_token: get("DAPR_API_TOKEN"),
            topic_prefix,
            state_store: get("STATE_STORE").unwrap_or_else(|| crate::STATE_STORE.to_owned()),
            retention: Duration::from_secs(retention_hours * 3600),
            list_max,
            claim_lease: Duration::from_millis(claim_lease_ms),
            state_timeout: Duration::from_millis(positive(&get, "STATE_TIMEOUT_MS", 5_000)?),
            request_timeout: Duration::from_millis(positive(&get, "REQUEST_TIMEOUT_MS", 10_000)?),
        })
    }

    /// The topic names under `TOPIC_PREFIX`.
    pub fn topics(&self) -> Topics {
        Topics::new(&self.topic_prefix)
    }
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match get(var) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| *n > T::default())
            .ok_or_else(|| err(var, format!("{v:?} is not a positive number"))),
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
    let t = Topics::new(prefix);
    if let Some(long) = [&t.reminders, &t.reminders_dead_letter]
        .into_iter()
        .find(|t| t.len() > MAX_TOPIC_LEN)
    {
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

    const DEV: (&str, &str) = ("AUTH_MODE", "dev");

    #[test]
    fn defaults_run_on_one_machine() {
        let c = cfg(&[DEV]).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.dapr_grpc_endpoint, DEFAULT_DAPR_GRPC_ENDPOINT);
        assert!(matches!(c.auth, AuthMode::Dev));
        assert_eq!(c.state_store, "notification-state");
        assert_eq!(c.retention, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(c.list_max, 500);
        assert_eq!(c.claim_lease, Duration::from_secs(15));
        assert_eq!(c.state_timeout, Duration::from_secs(5));
        assert_eq!(c.request_timeout, Duration::from_secs(10));
        assert_eq!(
            c.topics(),
            Topics {
                reminders: "reminders".into(),
                reminders_dead_letter: "reminders-dlq".into(),
            }
        );
    }

    #[test]
    fn jwt_is_the_default_and_needs_a_secret() {
        assert_eq!(cfg(&[]).unwrap_err().var, "JWT_SECRET");
        assert_eq!(
            cfg(&[("JWT_SECRET", "short")]).unwrap_err().var,
            "JWT_SECRET"
        );
        let c = cfg(&[("JWT_SECRET", &"x".repeat(32))]).unwrap();
        assert!(matches!(c.auth, AuthMode::Jwt(_)));
        assert_eq!(
            cfg(&[("JWT_ALGORITHM", "RS256")]).unwrap_err().var,
            "JWT_PUBLIC_KEY"
        );
    }

    #[test]
    fn every_topic_goes_under_the_prefix() {
        let t = cfg(&[DEV, (topics::PREFIX_VAR, "t-1a2b")])
            .unwrap()
            .topics();
        assert_eq!(t.reminders, "t-1a2b.reminders");
        assert_eq!(t.reminders_dead_letter, "t-1a2b.reminders-dlq");
    }

    #[test]
    fn the_sidecar_comes_from_an_endpoint_or_a_port() {
        let c = cfg(&[DEV, ("DAPR_GRPC_PORT", "50003")]).unwrap();
        assert_eq!(c.dapr_grpc_endpoint, "http://127.0.0.1:50003");
        let c = cfg(&[
            DEV,
            ("DAPR_GRPC_ENDPOINT", "localhost:7000"),
            ("DAPR_GRPC_PORT", "1"),
        ])
        .unwrap();
        assert_eq!(c.dapr_grpc_endpoint, "http://localhost:7000");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("APP_ADDR", "nope"),
            ("AUTH_MODE", "magic"),
            ("JWT_ALGORITHM", "ROT13"),
            ("DAPR_GRPC_PORT", "seventy"),
            ("DAPR_GRPC_PORT", "0"),
            ("DAPR_GRPC_ENDPOINT", "ftp://127.0.0.1:1"),
            ("DAPR_GRPC_ENDPOINT", "http://no-port"),
            (topics::PREFIX_VAR, "has space"),
            ("NOTIFICATION_RETENTION_HOURS", "0"),
            ("NOTIFICATION_RETENTION_HOURS", "forever"),
            ("NOTIFICATION_RETENTION_HOURS", "600000"),
            ("NOTIFICATIONS_PER_USER", "-1"),
            ("NOTIFICATIONS_PER_USER", "100000"),
            ("STATE_TIMEOUT_MS", "soon"),
            ("NOTIFICATION_CLAIM_LEASE_MS", "999"),
            ("NOTIFICATION_CLAIM_LEASE_MS", "600001"),
            ("REQUEST_TIMEOUT_MS", "0"),
        ] {
            let mut pairs = vec![(var, value)];
            if var != "AUTH_MODE" && var != "JWT_ALGORITHM" {
                pairs.push(DEV);
            }
            let e = cfg(&pairs).unwrap_err();
            assert_eq!(e.var, var, "{var}={value}: {e}");
            assert!(e.to_string().starts_with(var), "{e}");
        }
        let long = "p".repeat(240);
        assert_eq!(
            cfg(&[DEV, (topics::PREFIX_VAR, &long)]).unwrap_err().var,
            topics::PREFIX_VAR
        );
    }

    #[test]
    fn blank_values_count_as_unset() {
        let c = cfg(&[DEV, ("APP_API_TOKEN", "  "), ("STATE_STORE", "")]).unwrap();
        assert_eq!(c.app_api_token, None);
        assert_eq!(c.state_store, crate::STATE_STORE);
    }
}
