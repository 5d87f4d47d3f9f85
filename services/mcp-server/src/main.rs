//! todo-mcp: read the configuration, serve MCP over stdio or streamable HTTP until the
//! client leaves or a shutdown signal arrives.

use mcp_server::{Config, Transport};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Over stdio, stdout is the protocol: logs go to stderr. Installed before `load`, whose
    // own (stdout) logger then finds one in place and keeps it.
    log_to_stderr();
    let (config, _) = todo_service::cli::load::<Config>(|c| c);
    match config.transport {
        Transport::Stdio => mcp_server::serve_stdio(&config).await,
        Transport::Http => {
            let server = mcp_server::serve_http(&config).await?;
            let stop = server.stopper();
            tokio::spawn(async move {
                todo_env::shutdown_signal().await;
                stop();
            });
            server.wait().await
        }
    }
}

fn log_to_stderr() {
    use tracing_subscriber::{EnvFilter, fmt, prelude::*};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    let layer = fmt::layer().with_writer(std::io::stderr);
    let _ = if json {
        registry.with(layer.json().flatten_event(true)).try_init()
    } else {
        registry.with(layer).try_init()
    };
}
