//! task-service: read the configuration, set up logging, serve until SIGINT/SIGTERM.

use task_service::{Config, app, config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (config, matches) = todo_service::cli::start(
        "task-service",
        config::ABOUT,
        &config::vars(),
        |cmd| {
            cmd.subcommand(
                clap::Command::new("migrate").about("Apply the database migrations and exit"),
            )
        },
        "info,sqlx=warn,sea_orm=warn",
        |get| Config::from_lookup(get),
    );
    if matches.subcommand_name() == Some("migrate") {
        task_service::db::connect(&config.database_url, 1)
            .await?
            .close()
            .await?;
        tracing::info!("migrations applied");
        return Ok(());
    }
    if matches!(config.auth, task_service::auth::AuthMode::Dev) {
        todo_service::cli::warn_dev_auth();
    }
    let app = app::build(config).await?;
    app.run_until(app::shutdown_signal()).await
}
