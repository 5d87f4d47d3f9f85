//! Configuration from the environment, validated at start; errors name the variable.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

pub use todo_env::ConfigError;
use todo_env::{Env, cli::Var};
pub use todo_service::cli::ServiceConfig;

/// `MCP_ADDR` when unset: the fixed local port `just up` serves on.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8765);
/// `TASK_SERVICE_URL` when unset: task-service as `just up` runs it.
pub const DEFAULT_TASK_SERVICE_URL: &str = "http://127.0.0.1:50051";
/// `AUDIT_SERVICE_URL` when unset (audit-service's `APP_ADDR`).
pub const DEFAULT_AUDIT_SERVICE_URL: &str = "http://127.0.0.1:50054";
/// `NOTIFICATION_SERVICE_URL` when unset (notification-service's `APP_ADDR`).
pub const DEFAULT_NOTIFICATION_SERVICE_URL: &str = "http://127.0.0.1:50053";
/// The path of the streamable HTTP endpoint.
pub const MCP_PATH: &str = "/mcp";
/// `MCP_ALLOWED_HOSTS` when unset: loopback only (DNS-rebinding protection).
pub const DEFAULT_ALLOWED_HOSTS: &str = "localhost,127.0.0.1,::1";

/// What `todo-mcp --help` says it is.
pub const ABOUT: &str = "MCP tools (add_task, list_tasks, get_task, update_task, complete_task, \
     reopen_task, delete_task, task_history, list_notifications) over stdio or streamable HTTP, calling task-service's gRPC API \
     as the caller.";

/// Which MCP transport the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// JSON-RPC lines on stdin/stdout: one client, the process that spawned us.
    Stdio,
    /// Streamable HTTP on `MCP_ADDR` at [`MCP_PATH`]: any number of clients, each with its
    /// own bearer token.
    Http,
}

/// Everything mcp-server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// `MCP_TRANSPORT`: `stdio` (default) or `http`.
    pub transport: Transport,
    /// `MCP_ADDR`: where streamable HTTP listens.
    pub addr: SocketAddr,
    /// `MCP_ALLOWED_HOSTS`: `Host` header values the HTTP endpoint accepts.
    pub allowed_hosts: Vec<String>,
    /// `TASK_SERVICE_URL`: task-service's gRPC endpoint (or a Dapr sidecar's, with
    /// `TASK_SERVICE_APP_ID`).
    pub task_service_url: String,
    /// `AUDIT_SERVICE_URL`: audit-service's gRPC endpoint (task_history).
    pub audit_service_url: String,
    /// `NOTIFICATION_SERVICE_URL`: notification-service's gRPC endpoint (list_notifications).
    pub notification_service_url: String,
    /// `TASK_SERVICE_APP_ID`: when set, calls go through a Dapr sidecar's gRPC proxy to this
    /// app id (`dapr-app-id` metadata).
    pub task_service_app_id: Option<String>,
    /// `DAPR_API_TOKEN`: sent to the sidecar when calls go through it.
    pub dapr_api_token: Option<String>,
    /// `TASK_SERVICE_TOKEN`: the bearer JWT stdio calls carry (HTTP passes the caller's own).
    pub task_service_token: Option<String>,
    /// `MCP_DEV_USER`: dev mode; sent as `x-user-id` when a call has no token.
    pub dev_user: Option<String>,
    /// `REQUEST_TIMEOUT_MS`: deadline of one call to task-service.
    pub request_timeout: Duration,
}

impl ServiceConfig for Config {
    const NAME: &'static str = "todo-mcp";
    const ABOUT: &'static str = ABOUT;
    fn vars() -> Vec<Var> {
        vec![
            Var::new(
                "MCP_TRANSPORT",
                "stdio",
                "`stdio` or `http` (streamable HTTP)",
            )
            .refusing(&["pigeon"]),
            Var::new(
                "MCP_ADDR",
                "127.0.0.1:8765",
                "HTTP listen address (path /mcp)",
            )
            .refusing(&["here"]),
            Var::new(
                "MCP_ALLOWED_HOSTS",
                DEFAULT_ALLOWED_HOSTS,
                "comma-separated Host header values HTTP accepts (DNS-rebinding protection)",
            ),
            Var::new(
                "TASK_SERVICE_URL",
                DEFAULT_TASK_SERVICE_URL,
                "task-service's gRPC endpoint (or a Dapr sidecar's, with TASK_SERVICE_APP_ID)",
            )
            .refusing(&["not a uri"]),
            Var::new(
                "AUDIT_SERVICE_URL",
                DEFAULT_AUDIT_SERVICE_URL,
                "audit-service's gRPC endpoint (the task_history tool)",
            ),
            Var::new(
                "NOTIFICATION_SERVICE_URL",
                DEFAULT_NOTIFICATION_SERVICE_URL,
                "notification-service's gRPC endpoint (the list_notifications tool)",
            ),
            Var::new(
                "TASK_SERVICE_APP_ID",
                "—",
                "call task-service through a Dapr sidecar's gRPC proxy to this app id",
            ),
            Var::secret(
                "DAPR_API_TOKEN",
                "sent to the sidecar when calls go through it",
            ),
            Var::secret(
                "TASK_SERVICE_TOKEN",
                "stdio: the bearer JWT sent to task-service as the user",
            ),
            Var::new(
                "MCP_DEV_USER",
                "—",
                "dev mode: this user id is sent as x-user-id when a call carries no token \
                 (task-service must run with AUTH_MODE=dev; never in production)",
            ),
            Var::new(
                "REQUEST_TIMEOUT_MS",
                "10000",
                "deadline of one call to task-service, in milliseconds",
            )
            .refusing(&["soon", "0"]),
            Var::new(
                "LOG_FORMAT",
                "text",
                "`json` for JSON lines (logs go to stderr)",
            ),
            Var::new(
                "RUST_LOG",
                "info",
                "log filter (tracing-subscriber EnvFilter syntax)",
            ),
        ]
    }

    fn read(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(get);
        let transport = match env.get("MCP_TRANSPORT").as_deref() {
            None | Some("stdio") => Transport::Stdio,
            Some("http") => Transport::Http,
            Some(other) => {
                return Err(ConfigError::new(
                    "MCP_TRANSPORT",
                    format!("{other:?} is neither `stdio` nor `http`"),
                ));
            }
        };
        let addr = env.socket_addr("MCP_ADDR", DEFAULT_ADDR)?;
        let allowed_hosts = env
            .get("MCP_ALLOWED_HOSTS")
            .unwrap_or_else(|| DEFAULT_ALLOWED_HOSTS.to_owned())
            .split(',')
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .collect();
        let task_service_url = grpc_url(&env, "TASK_SERVICE_URL", DEFAULT_TASK_SERVICE_URL)?;
        let audit_service_url = grpc_url(&env, "AUDIT_SERVICE_URL", DEFAULT_AUDIT_SERVICE_URL)?;
        let notification_service_url = grpc_url(
            &env,
            "NOTIFICATION_SERVICE_URL",
            DEFAULT_NOTIFICATION_SERVICE_URL,
        )?;
        let task_service_app_id = env.get("TASK_SERVICE_APP_ID");
        let dapr_api_token = env.get("DAPR_API_TOKEN");
        let task_service_token = env.get("TASK_SERVICE_TOKEN");
        let dev_user = env.get("MCP_DEV_USER");
        let request_timeout = Duration::from_millis(env.positive("REQUEST_TIMEOUT_MS", 10_000u64)?);
        if transport == Transport::Stdio && task_service_token.is_none() && dev_user.is_none() {
            return Err(ConfigError::new(
                "TASK_SERVICE_TOKEN",
                "stdio needs an identity: set TASK_SERVICE_TOKEN (a bearer JWT), or MCP_DEV_USER \
                 in dev mode",
            ));
        }
        Ok(Self {
            transport,
            addr,
            allowed_hosts,
            task_service_url,
            audit_service_url,
            notification_service_url,
            task_service_app_id,
            dapr_api_token,
            task_service_token,
            dev_user,
            request_timeout,
        })
    }

    fn trusts_user_header(&self) -> bool {
        // Not a header it trusts, but one it sends: the same warning belongs at start.
        self.dev_user.is_some()
    }
}

/// A gRPC endpoint URL from `var` (`default` when unset), checked at start.
fn grpc_url<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    var: &'static str,
    default: &str,
) -> Result<String, ConfigError> {
    let url = env.get(var).unwrap_or_else(|| default.to_owned());
    if tonic::transport::Endpoint::from_shared(url.clone()).is_err() || !url.contains("://") {
        return Err(ConfigError::new(
            var,
            format!("{url:?} is not a URI like {default}"),
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use todo_service::cli::read_pairs as cfg;

    #[test]
    fn defaults_run_on_one_machine() {
        let c = cfg::<Config>(&[("MCP_DEV_USER", "alice")]).unwrap();
        assert_eq!(c.transport, Transport::Stdio);
        assert_eq!(c.addr, DEFAULT_ADDR);
        assert_eq!(c.task_service_url, DEFAULT_TASK_SERVICE_URL);
        assert_eq!(c.request_timeout, Duration::from_secs(10));
        assert_eq!(c.allowed_hosts, ["localhost", "127.0.0.1", "::1"]);
    }

    #[test]
    fn http_needs_no_configured_identity_but_stdio_does() {
        assert!(cfg::<Config>(&[("MCP_TRANSPORT", "http")]).is_ok());
        let e = cfg::<Config>(&[]).unwrap_err();
        assert_eq!(e.var, "TASK_SERVICE_TOKEN");
        assert!(cfg::<Config>(&[("TASK_SERVICE_TOKEN", "jwt")]).is_ok());
    }

    #[test]
    fn variables_are_listed_and_bad_values_named() {
        todo_service::cli::assert_variables_checked::<Config>(&[("MCP_DEV_USER", "a")]);
    }
}
