//! recurring-task-service: read the configuration, set up logging, serve until SIGINT/SIGTERM.

use recurring_task_service::{Config, build, config, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (config, _) = todo_service::cli::start(
        "recurring-task-service",
        config::ABOUT,
        &config::vars(),
        |cmd| cmd,
        "info",
        |get| Config::from_lookup(get),
    );
    build(config).await?.run_until(shutdown_signal()).await
}
