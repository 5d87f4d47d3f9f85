//! task-service: read the configuration, set up logging, serve until SIGINT/SIGTERM.

use task_service::{Config, app, config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let vars = config::vars();
    let matches = todo_env::cli::command("task-service", config::ABOUT, &vars)
        .subcommand(clap::Command::new("migrate").about("Apply the database migrations and exit"))
        .get_matches();
    todo_telemetry::init("info,sqlx=warn,sea_orm=warn");
    let config = match Config::from_lookup(todo_env::cli::lookup(&matches, &vars)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("invalid configuration: {e}");
            std::process::exit(2);
        }
    };
    if matches.subcommand_name() == Some("migrate") {
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
