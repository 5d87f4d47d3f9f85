//! task-service: read the configuration, set up logging, serve until SIGINT/SIGTERM.

use task_service::{Config, app};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    todo_telemetry::init("info,sqlx=warn,sea_orm=warn");
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("invalid configuration: {e}");
            std::process::exit(2);
        }
    };
    if std::env::args().nth(1).as_deref() == Some("migrate") {
        task_service::db::connect(&config.database_url, 1)
            .await?
            .close()
            .await?;
        tracing::info!("migrations applied");
        return Ok(());
    }
    if matches!(config.auth, task_service::auth::AuthMode::Dev) {
        tracing::warn!(
            "AUTH_MODE=dev: the x-user-id header is trusted as the caller; never use this in production"
        );
    }
    let app = app::build(config).await?;
    app.run_until(app::shutdown_signal()).await
}
