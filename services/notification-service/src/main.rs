//! notification-service: read the configuration, set up logging, serve until SIGINT/SIGTERM.

use notification_service::{Config, auth::AuthMode, build, config, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (config, _) = todo_service::cli::start(
        "notification-service",
        config::ABOUT,
        &config::vars(),
        |cmd| cmd,
        "info",
        |get| Config::from_lookup(get),
    );
    if matches!(config.auth, AuthMode::Dev) {
        todo_service::cli::warn_dev_auth();
    }
    build(config).await?.run_until(shutdown_signal()).await
}
