//! recurring-task-service: read the configuration, set up logging, serve until SIGINT/SIGTERM.

use recurring_task_service::{Config, build, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    todo_telemetry::init("info");
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("invalid configuration: {e}");
            std::process::exit(2);
        }
    };
    let app = build(config).await?;
    app.run_until(shutdown_signal()).await
}
