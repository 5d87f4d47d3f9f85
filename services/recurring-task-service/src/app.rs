//! Builds the running application: the function `main` and the tests both call.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use dapr_appcallback::{
    ApiTokenLayer, AppCallbackService, proto::app_callback_server::AppCallbackServer,
};
use dapr_publisher::{Publisher, PublisherConfig};
use todo_topology::components::PUBSUB;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    completions::{Completions, Stats, StatsSnapshot},
    config::Config,
};

/// A running recurring-task-service.
#[derive(Debug)]
pub struct App {
    /// Where it listens (the port the OS chose when the config asked for port 0).
    pub addr: SocketAddr,
    stats: Arc<Stats>,
    health: HealthReporter,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Binds the listener and serves Dapr's AppCallback (and its health check) and
/// `grpc.health.v1` on one port. The sidecar is dialled lazily, on the first publish, so
/// the app can start before its sidecar (daprd waits for the app, not the other way round).
pub async fn build(config: Config) -> anyhow::Result<App> {
    if let Some(addr) = config.metrics_addr {
        todo_telemetry::serve_metrics(addr);
    }
    let mut publisher_config = PublisherConfig::new(&config.dapr_grpc_endpoint, PUBSUB);
    publisher_config.api_token = config.dapr_api_token.clone();
    publisher_config.call_timeout = config.publish_timeout;
    let publisher = Publisher::lazy(&publisher_config).context("DAPR_GRPC_ENDPOINT")?;

    let topics = config.topics();
    let stats = Arc::new(Stats::default());
    let completions = Arc::new(Completions::new(publisher, topics.clone(), stats.clone()));
    let callbacks = AppCallbackService::new(completions.subscriptions());

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("APP_ADDR: cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<AppCallbackServer<AppCallbackService>>()
        .await;

    let (tx, rx) = oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .layer(ApiTokenLayer::for_dapr_callbacks(
            config.app_api_token.clone(),
        ))
        .add_service(health_service)
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
        subscribes = %topics.task_events,
        dead_letter = %topics.task_events_dead_letter,
        publishes = %topics.task_occurrences,
        app_api_token = config.app_api_token.is_some(),
        "recurring-task-service serving"
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

    /// Reports NOT_SERVING, stops accepting, and lets in-flight deliveries finish (their
    /// publishes included), so no event is left half-handled: an event whose answer was not
    /// sent is redelivered by Dapr, and its next task id is the same.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.health
            .set_not_serving::<AppCallbackServer<AppCallbackService>>()
            .await;
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.server).await??;
        tracing::info!(stats = ?self.stats.snapshot(), "recurring-task-service stopped");
        Ok(())
    }

    /// Serves until `signal` resolves, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        signal.await;
        tracing::info!("shutting down: finishing in-flight deliveries");
        self.shutdown().await
    }
}

pub use todo_env::shutdown_signal;
