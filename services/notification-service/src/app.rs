//! Builds the running application: the function `main` and the tests both call.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use todo_proto::todo::notifications::v1::notification_service_server::NotificationServiceServer;
use todo_service::{Running, ServiceBuilder};
use todo_topology::app_ids;

use crate::{
    api::NotificationApi,
    auth::Authenticate,
    channel::{Channel, JsonLogChannel},
    config::Config,
    delivery_log::DeliveryLog,
    reminders::{Reminders, Stats, StatsSnapshot},
    state::StateStore,
};

/// A running notification-service.
#[derive(Debug)]
pub struct App {
    /// Where it listens (the port the OS chose when the config asked for port 0).
    pub addr: SocketAddr,
    stats: Arc<Stats>,
    server: Running,
}

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
        topics.clone(),
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
        addr = %server.addr,
        sidecar = %config.common.dapr_grpc_endpoint,
        subscribes = %topics.reminders,
        dead_letter = %topics.reminders_dead_letter,
        state_store = %config.state_store,
        channel = channel.name(),
        retention_hours = config.retention.as_secs() / 3600,
        claim_lease_ms = config.claim_lease.as_millis() as u64,
        auth = ?config.auth,
        "notification-service serving"
    );
    Ok(App {
        addr: server.addr,
        stats,
        server,
    })
}

impl App {
    /// How the events handled so far ended.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Reports NOT_SERVING, stops accepting, and lets in-flight deliveries finish, so none
    /// is left between its claim and its record. An event whose answer was not sent is
    /// redelivered by Dapr and finds its claim. Returns the answers given since start.
    pub async fn shutdown(self) -> anyhow::Result<StatsSnapshot> {
        self.server.shutdown().await?;
        let stats = self.stats.snapshot();
        tracing::info!(?stats, "notification-service stopped");
        Ok(stats)
    }

    /// Serves until `signal` resolves, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        signal.await;
        tracing::info!("shutting down: finishing in-flight deliveries");
        self.shutdown().await.map(drop)
    }
}

pub use todo_env::shutdown_signal;
