//! Builds the running application: the function `main` and the tests both call.

use std::sync::Arc;

use anyhow::Context;
use dapr_publisher::Publisher;
use todo_service::{Served, ServiceBuilder};
use todo_topology::{app_ids, components::PUBSUB};

use crate::{
    completions::{Completions, Stats},
    config::Config,
};

/// A running service: its address, its counters, graceful shutdown.
pub type App = Served<Stats>;

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
        publishes = %topics.task_occurrences,
        "recurring-task-service serving"
    );
    Ok(Served::new(server, stats))
}

pub use todo_env::shutdown_signal;
