//! Configuration from the environment, validated at start; errors name the variable.

use std::{net::SocketAddr, time::Duration};

use crate::auth::AuthMode;

/// Everything task-service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// `APP_ADDR`: where the gRPC API and Dapr's AppCallback are served (default 127.0.0.1:50051).
    pub listen: SocketAddr,
    /// `DATABASE_URL` (default: SQLite file `.data/tasks.db`).
    pub database_url: String,
    /// `DATABASE_MAX_CONNECTIONS` (default 16 on PostgreSQL, 4 on SQLite).
    pub database_max_connections: u32,
    /// `AUTH_MODE` (jwt|dev) with `JWT_ALGORITHM` and `JWT_SECRET` / `JWT_PUBLIC_KEY`.
    pub auth: AuthMode,
    /// `APP_API_TOKEN`: required from daprd on callbacks.
    pub app_api_token: Option<String>,
    /// `DAPR_GRPC_ENDPOINT` or `DAPR_GRPC_PORT`: the sidecar.
    pub dapr_grpc_endpoint: String,
    /// `DAPR_API_TOKEN`: sent to the sidecar.
    pub dapr_api_token: Option<String>,
    /// `REQUEST_TIMEOUT_MS` (default 10000).
    pub request_timeout: Duration,
    /// `MAX_CONCURRENT_REQUESTS` (default 512).
    pub max_concurrent_requests: usize,
    /// `TOPIC_PREFIX`: namespaces every topic (empty in production).
    pub topic_prefix: String,
    /// `METRICS_ADDR`: Prometheus `/metrics` (default 127.0.0.1:9464; `off` disables).
    pub metrics_addr: Option<SocketAddr>,
    /// `OUTBOX_BATCH_SIZE`, `OUTBOX_POLL_MS`, `OUTBOX_WARN_AGE_SECS`.
    pub relay: crate::outbox::RelayConfig,
    /// `REMINDER_MAX_LATENESS_SECS` (default 21600).
    pub scheduler: crate::reminders::SchedulerConfig,
    /// `DEFAULT_REMINDERS_SECS`: offsets before the due time, comma-separated (default `86400,3600`).
    pub default_reminders: Vec<todo_proto::todo::v1::Reminder>,
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

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads from any lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let listen = get("APP_ADDR")
            .unwrap_or_else(|| "127.0.0.1:50051".to_owned())
            .parse()
            .map_err(|e| err("APP_ADDR", format!("not a socket address: {e}")))?;
        let database_url =
            get("DATABASE_URL").unwrap_or_else(|| "sqlite://.data/tasks.db?mode=rwc".to_owned());
        if !(database_url.starts_with("sqlite:") || database_url.starts_with("postgres")) {
            return Err(err("DATABASE_URL", "use a sqlite:// or postgres:// URL"));
        }
        let default_conns = if database_url.starts_with("sqlite:") {
            4
        } else {
            16
        };
        let database_max_connections = parse(&get, "DATABASE_MAX_CONNECTIONS", default_conns)?;
        let auth = AuthMode::from_lookup(get).map_err(|e| err(e.var, e.reason))?;
        let dapr_grpc_endpoint = match (get("DAPR_GRPC_ENDPOINT"), get("DAPR_GRPC_PORT")) {
            (Some(e), _) => e,
            (None, Some(p)) => {
                let port: u16 = p
                    .parse()
                    .map_err(|_| err("DAPR_GRPC_PORT", format!("{p:?} is not a port")))?;
                format!("http://127.0.0.1:{port}")
            }
            (None, None) => "http://127.0.0.1:50001".to_owned(),
        };
        Ok(Self {
            listen,
            database_url,
            database_max_connections,
            auth,
            app_api_token: get("APP_API_TOKEN"),
            dapr_grpc_endpoint,
            dapr_api_token: get("DAPR_API_TOKEN"),
            request_timeout: Duration::from_millis(parse(&get, "REQUEST_TIMEOUT_MS", 10_000)?),
            max_concurrent_requests: parse(&get, "MAX_CONCURRENT_REQUESTS", 512)?,
            topic_prefix: get(todo_topology::topics::PREFIX_VAR).unwrap_or_default(),
            metrics_addr: match get("METRICS_ADDR").as_deref() {
                Some("off") => None,
                Some(a) => Some(a.parse().map_err(|e| {
                    err(
                        "METRICS_ADDR",
                        format!("not a socket address (or off): {e}"),
                    )
                })?),
                None => Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            },
            relay: crate::outbox::RelayConfig {
                batch_size: parse(&get, "OUTBOX_BATCH_SIZE", 200)?,
                poll_interval: Duration::from_millis(parse(&get, "OUTBOX_POLL_MS", 1000)?),
                warn_age: Duration::from_secs(parse(&get, "OUTBOX_WARN_AGE_SECS", 60)?),
                ..crate::outbox::RelayConfig::default()
            },
            scheduler: crate::reminders::SchedulerConfig {
                max_lateness: Duration::from_secs(parse(
                    &get,
                    "REMINDER_MAX_LATENESS_SECS",
                    6 * 3600,
                )?),
                ..crate::reminders::SchedulerConfig::default()
            },
            default_reminders: match get("DEFAULT_REMINDERS_SECS") {
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
                                err(
                                    "DEFAULT_REMINDERS_SECS",
                                    format!("{s:?} is not a number of seconds"),
                                )
                            })
                    })
                    .collect::<Result<_, _>>()?,
            },
        })
    }
}

fn parse<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match get(var) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| err(var, format!("{v:?} is not a valid number"))),
    }
}

#[cfg(test)]
mod tests {
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
    fn jwt_mode_needs_a_secret_and_names_it() {
        assert_eq!(cfg(&[]).unwrap_err().var, "JWT_SECRET");
        assert_eq!(
            cfg(&[("JWT_SECRET", "short")]).unwrap_err().var,
            "JWT_SECRET"
        );
        assert!(cfg(&[("JWT_SECRET", &"x".repeat(32))]).is_ok());
    }

    #[test]
    fn bad_values_name_their_variable() {
        assert_eq!(
            cfg(&[("AUTH_MODE", "dev"), ("APP_ADDR", "nope")])
                .unwrap_err()
                .var,
            "APP_ADDR"
        );
        assert_eq!(cfg(&[("AUTH_MODE", "magic")]).unwrap_err().var, "AUTH_MODE");
        assert_eq!(
            cfg(&[("AUTH_MODE", "dev"), ("REQUEST_TIMEOUT_MS", "soon")])
                .unwrap_err()
                .var,
            "REQUEST_TIMEOUT_MS"
        );
        assert_eq!(
            cfg(&[("AUTH_MODE", "dev"), ("DATABASE_URL", "mysql://x")])
                .unwrap_err()
                .var,
            "DATABASE_URL"
        );
    }

    #[test]
    fn defaults_run_on_one_machine() {
        let c = cfg(&[("AUTH_MODE", "dev")]).unwrap();
        assert!(c.database_url.starts_with("sqlite:"));
        assert_eq!(c.dapr_grpc_endpoint, "http://127.0.0.1:50001");
    }
}
