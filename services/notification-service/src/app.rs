//! Builds the running application: the function `main` and the tests both call.

use std::sync::Arc;

use anyhow::Context;
use todo_proto::todo::notifications::v1::notification_service_server::NotificationServiceServer;
use todo_service::{Served, ServiceBuilder};
use todo_topology::app_ids;

use crate::{
    api::NotificationApi,
    auth::Authenticate,
    channel::{Channel, JsonLogChannel},
    config::Config,
    delivery_log::DeliveryLog,
    reminders::{Reminders, Stats},
    state::StateStore,
};

/// A running service: its address, its counters, graceful shutdown.
pub type App = Served<Stats>;

/// [`build_with_channel`] with the JSON log channel on stdout.
pub async fn build(config: Config) -> anyhow::Result<App> {
    build_with_channel(config, Arc::new(JsonLogChannel::stdout())).await
}

/// Binds the listener and serves, on one port: the Notification API (behind caller
/// authentication), Dapr's AppCallback and its health check (behind `APP_API_TOKEN`),
/// `grpc.health.v1` and server reflection. The sidecar is dialled lazily, on the first state
/// call, so the app can start before its sidecar (daprd waits for the app).
pub async fn build_with_channel(config: Config, channel: Arc<dyn Channel>) -> anyhow::Result<App> {
    let sidecar = todo_service::sidecar(&config.common, config.state_timeout)
        .context("DAPR_GRPC_ENDPOINT")?;
    let store = StateStore::new(&sidecar, &config.state_store);
    let log = DeliveryLog::new(store, config.retention, config.list_max, config.claim_lease);

    let topics = config.common.topics();
    let stats = Arc::new(Stats::default());
    let reminders = Arc::new(Reminders::new(
        log.clone(),
        channel.clone(),
        topics,
        stats.clone(),
    ));
    let api = NotificationServiceServer::with_interceptor(
        NotificationApi::new(log),
        Authenticate(config.auth.clone()),
    );
    let server = ServiceBuilder::new(app_ids::NOTIFICATION_SERVICE, &config.common)
        .grpc(api)
        .subscriptions(reminders.subscriptions())
        .serve()
        .await?;
    tracing::info!(
        state_store = %config.state_store,
        channel = channel.name(),
        retention_hours = config.retention.as_secs() / 3600,
        claim_lease_ms = config.claim_lease.as_millis() as u64,
        auth = ?config.auth,
        "notification-service serving"
    );
    Ok(Served::new(server, stats))
}

pub use todo_env::shutdown_signal;
