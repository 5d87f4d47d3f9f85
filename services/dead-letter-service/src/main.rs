//! dead-letter-service: read the configuration, set up logging, serve until SIGINT/SIGTERM.

use dead_letter_service::{Config, build, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (config, _) = todo_service::cli::load::<Config>(|cmd| cmd);
    build(config).await?.run_until(shutdown_signal()).await
}
