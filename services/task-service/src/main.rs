//! task-service: read the configuration, set up logging, serve until SIGINT/SIGTERM.

use task_service::{Config, app};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (config, matches) = todo_service::cli::load::<Config>(|cmd| {
        cmd.subcommand(
            clap::Command::new("migrate").about("Apply the database migrations and exit"),
        )
    });
    if matches.subcommand_name() == Some("migrate") {
        let db = task_service::db::connect(&config.database_url, 1).await?;
        db.close().await?;
        tracing::info!("migrations applied");
        return Ok(());
    }
    app::build(config)
        .await?
        .run_until(app::shutdown_signal())
        .await
}
