//! Builds the running application: the function `main` and the tests both call.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use dapr_appcallback::{
    ApiTokenLayer, AppCallbackService, proto::app_callback_server::AppCallbackServer,
};
use todo_proto::todo::notifications::v1::notification_service_server::NotificationServiceServer;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::server::NamedService;
use tonic_health::{
    ServingStatus,
    pb::health_server::HealthServer,
    server::{HealthReporter, HealthService},
};

use crate::{
    api::NotificationApi,
    auth::Authenticate,
    channel::{Channel, JsonLogChannel},
    config::Config,
    delivery_log::DeliveryLog,
    reminders::{Reminders, Stats, StatsSnapshot},
    state::StateStore,
};

/// The reflection service's own name (listed by task-service's reflection too).
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";

/// A running notification-service.
#[derive(Debug)]
pub struct App {
    /// Where it listens (the port the OS chose when the config asked for port 0).
    pub addr: SocketAddr,
    stats: Arc<Stats>,
    health: HealthReporter,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
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
    if let Some(addr) = config.metrics_addr {
        todo_telemetry::serve_metrics(addr);
    }
    let store = StateStore::lazy(
        &config.dapr_grpc_endpoint,
        &config.state_store,
        config.dapr_api_token.as_deref(),
        config.state_timeout,
    )
    .context("DAPR_GRPC_ENDPOINT")?;
    let log = DeliveryLog::new(store, config.retention, config.list_max, config.claim_lease);

    let topics = config.topics();
    let stats = Arc::new(Stats::default());
    let reminders = Arc::new(Reminders::new(
        log.clone(),
        channel.clone(),
        topics.clone(),
        stats.clone(),
    ));
    let callbacks = AppCallbackService::new(reminders.subscriptions());
    let api = NotificationServiceServer::with_interceptor(
        NotificationApi::new(log),
        Authenticate(config.auth.clone()),
    );

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("APP_ADDR: cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<AppCallbackServer<AppCallbackService>>()
        .await;
    health
        .set_serving::<NotificationServiceServer<NotificationApi>>()
        .await;
    // The descriptor set holds every API of the system: advertise only what is served here.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(todo_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(<NotificationServiceServer<NotificationApi> as NamedService>::NAME)
        .with_service_name(<HealthServer<HealthService> as NamedService>::NAME)
        .with_service_name(REFLECTION_V1)
        .build_v1()?;

    let (tx, rx) = oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .timeout(config.request_timeout)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .layer(ApiTokenLayer::for_dapr_callbacks(
            config.app_api_token.clone(),
        ))
        .add_service(api)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(callbacks.app_callback_server())
        .add_service(callbacks.health_check_server())
        .add_service(callbacks.alpha_server());
    let server = tokio::spawn(router.serve_with_incoming_shutdown(
        // Without TCP_NODELAY every small reply waits on a delayed ACK (~40 ms).
        tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        async {
            let _ = rx.await;
        },
    ));
    tracing::info!(
        %addr,
        sidecar = %config.dapr_grpc_endpoint,
        subscribes = %topics.reminders,
        dead_letter = %topics.reminders_dead_letter,
        state_store = %config.state_store,
        channel = channel.name(),
        retention_hours = config.retention.as_secs() / 3600,
        claim_lease_ms = config.claim_lease.as_millis() as u64,
        auth = ?config.auth,
        app_api_token = config.app_api_token.is_some(),
        "notification-service serving"
    );
    Ok(App {
        addr,
        stats,
        health,
        shutdown: Some(tx),
        server,
    })
}

impl App {
    /// How the events handled so far ended.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Reports NOT_SERVING, stops accepting, and lets in-flight deliveries finish, so none
    /// is left between its record and its write. An event whose answer was not sent is
    /// redelivered by Dapr and found recorded. Returns the answers given since start.
    pub async fn shutdown(mut self) -> anyhow::Result<StatsSnapshot> {
        self.health
            .set_not_serving::<AppCallbackServer<AppCallbackService>>()
            .await;
        self.health
            .set_not_serving::<NotificationServiceServer<NotificationApi>>()
            .await;
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.server).await??;
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
