//! mcp-server: MCP tools that manage a user's tasks through task-service's gRPC API, over
//! stdio or streamable HTTP. `main` reads the configuration and calls [`serve_stdio`] or
//! [`serve_http`]; tests call the same functions.

pub mod args;
pub mod config;
pub mod failure;
pub mod identity;
pub mod tools;
pub mod words;

use std::net::SocketAddr;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{StatusCode, header};
use rmcp::{
    ServiceExt as _,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use tokio::io::{AsyncRead, AsyncWrite};

pub use config::{Config, Transport};
pub use identity::Identity;
pub use tools::TodoTools;

/// Lazily connected channels (the first tool call dials each) to task-service,
/// audit-service and notification-service, with the configured deadline per call.
pub fn channel(config: &Config) -> anyhow::Result<tools::Channels> {
    let lazy = |url: &str| -> anyhow::Result<tonic::transport::Channel> {
        Ok(tonic::transport::Endpoint::from_shared(url.to_owned())?
            .timeout(config.request_timeout)
            .connect_lazy())
    };
    Ok(tools::Channels {
        tasks: lazy(&config.task_service_url)?,
        audit: lazy(&config.audit_service_url)?,
        notifications: lazy(&config.notification_service_url)?,
    })
}

fn identity(config: &Config, with_token: bool) -> Identity {
    Identity {
        token: config.task_service_token.clone().filter(|_| with_token),
        dev_user: config.dev_user.clone(),
        app_id: config.task_service_app_id.clone(),
        dapr_api_token: config.dapr_api_token.clone(),
    }
}

/// Serves one MCP session over `io` (a pipe: the process's stdin/stdout, or a test's
/// duplex), as the identity configured for stdio, until the client closes it.
pub async fn serve_io<R, W>(config: &Config, io: (R, W)) -> anyhow::Result<()>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let tools = TodoTools::new(channel(config)?, identity(config, true));
    let running = tools.serve(io).await?;
    running.waiting().await?;
    Ok(())
}

/// Serves MCP on stdin/stdout until the client closes it.
pub async fn serve_stdio(config: &Config) -> anyhow::Result<()> {
    serve_io(config, rmcp::transport::stdio()).await
}

/// A running streamable HTTP server.
pub struct HttpServer {
    /// Where it listens (the port chosen when `MCP_ADDR` had port 0).
    pub addr: SocketAddr,
    /// The MCP endpoint's URL.
    pub url: String,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    /// Stops accepting requests and ends every session.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await??;
        Ok(())
    }

    /// Runs until the server stops (it does on [`HttpServer::shutdown`] or an I/O error).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await??;
        Ok(())
    }

    /// A handle that stops the server when called (for a shutdown signal).
    pub fn stopper(&self) -> impl FnOnce() + Send + 'static {
        let t = self.shutdown.clone();
        move || t.cancel()
    }
}

/// Refuses a request without a bearer token (401) unless a dev user stands in for it.
async fn require_bearer(State(dev): State<bool>, request: Request, next: Next) -> Response {
    let has_bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(identity::bearer)
        .is_some();
    if has_bearer || dev {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "send Authorization: Bearer <JWT>, the token task-service accepts for you\n",
        )
            .into_response()
    }
}

/// Binds `config.addr` (port 0 picks one) and serves streamable HTTP at
/// [`config::MCP_PATH`]: each request's bearer token is the caller task-service sees.
pub async fn serve_http(config: &Config) -> anyhow::Result<HttpServer> {
    let channel = channel(config)?;
    // Over HTTP a configured token would make every anonymous caller that user: never.
    let id = identity(config, false);
    let mut http = StreamableHttpServerConfig::default();
    http.allowed_hosts = config.allowed_hosts.clone();
    let shutdown = http.cancellation_token.clone();
    let service: StreamableHttpService<TodoTools, LocalSessionManager> = StreamableHttpService::new(
        move || Ok(TodoTools::new(channel.clone(), id.clone())),
        Default::default(),
        http,
    );
    let router = axum::Router::new()
        .nest_service(config::MCP_PATH, service)
        .layer(axum::middleware::from_fn_with_state(
            config.dev_user.is_some(),
            require_bearer,
        ));
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let addr = listener.local_addr()?;
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled_owned().await })
            .await
    });
    tracing::info!(%addr, path = config::MCP_PATH, "MCP streamable HTTP listening");
    Ok(HttpServer {
        addr,
        url: format!("http://{addr}{}", config::MCP_PATH),
        shutdown,
        task,
    })
}
