//! Builds the running application: the function `main` and the tests both call.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use dapr_publisher::Publisher;
use todo_service::{Running, ServiceBuilder};
use todo_topology::{app_ids, components::PUBSUB};

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
    server: Running,
}

/// Binds the listener and serves Dapr's AppCallback (and its health check) and
/// `grpc.health.v1` on one port. The sidecar is dialled lazily, on the first publish, so
/// the app can start before its sidecar (daprd waits for the app, not the other way round).
pub async fn build(config: Config) -> anyhow::Result<App> {
    let sidecar = todo_service::sidecar(&config.common, config.publish_timeout)
        .context("DAPR_GRPC_ENDPOINT")?;
    let publisher = Publisher::new(&sidecar, PUBSUB);

    let topics = config.common.topics();
    let stats = Arc::new(Stats::default());
    let completions = Arc::new(Completions::new(publisher, topics.clone(), stats.clone()));
    let server = ServiceBuilder::new(app_ids::RECURRING_TASK_SERVICE, &config.common)
        .subscriptions(completions.subscriptions())
        .serve()
        .await?;
    tracing::info!(
        addr = %server.addr,
        sidecar = %config.common.dapr_grpc_endpoint,
        subscribes = %topics.task_events,
        dead_letter = %topics.task_events_dead_letter,
        publishes = %topics.task_occurrences,
        "recurring-task-service serving"
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

    /// Reports NOT_SERVING, stops accepting, and lets in-flight deliveries finish (their
    /// publishes included), so no event is left half-handled: an event whose answer was not
    /// sent is redelivered by Dapr, and its next task id is the same.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.server.shutdown().await?;
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
