//! notification-service: read the configuration, set up logging, serve until SIGINT/SIGTERM.

use notification_service::{Config, build, config, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let vars = config::vars();
    let matches =
        todo_env::cli::command("notification-service", config::ABOUT, &vars).get_matches();
    todo_telemetry::init("info");
    let config = match Config::from_lookup(todo_env::cli::lookup(&matches, &vars)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("invalid configuration: {e}");
            std::process::exit(2);
        }
    };
    if matches!(config.auth, notification_service::auth::AuthMode::Dev) {
        tracing::warn!(
            "AUTH_MODE=dev: the x-user-id header is trusted as the caller; never use this in production"
        );
    }
    let app = build(config).await?;
    app.run_until(shutdown_signal()).await
}
