//! Builds the running application: the function `main` and the tests both call.

use std::sync::Arc;

use anyhow::Context;
use dapr_publisher::Publisher;
use todo_proto::todo::deadletters::v1::dead_letter_service_server::DeadLetterServiceServer;
use todo_service::{Served, ServiceBuilder};
use todo_topology::{app_ids, components::PUBSUB};

use crate::{
    api::DeadLetterApi,
    config::Config,
    db,
    intake::{Intake, Stats},
};

/// A running service: its address, its counters, graceful shutdown.
pub type App = Served<Stats>;

/// Opens the database (applying migrations), binds the listener and serves, on one port:
/// the DeadLetterService API (behind caller authentication and the admin list), Dapr's
/// AppCallback for every `<topic>-dlq` (behind `APP_API_TOKEN`), `grpc.health.v1` and
/// server reflection. The sidecar is dialled lazily, on the first replay.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let (pool, writer) = config.database.open::<db::migration::Migrator>().await?;
    let sidecar = todo_service::sidecar(&config.common, config.publish_timeout)
        .context("DAPR_GRPC_ENDPOINT")?;
    let publisher = Publisher::new(&sidecar, PUBSUB);
    let topics = config.common.topics();
    let stats = Arc::new(Stats::default());
    let intake = Arc::new(Intake::new(writer.clone(), stats.clone()));
    let api = DeadLetterServiceServer::new(DeadLetterApi::new(
        pool,
        writer,
        publisher,
        config.admins.clone(),
        config.common.topic_prefix.clone(),
    ));
    let server = ServiceBuilder::new(app_ids::DEAD_LETTER_SERVICE, &config.common)
        .authenticated(api, &config.auth)
        .subscriptions(intake.subscriptions(&topics))
        .serve()
        .await?;
    if config.admins.is_empty() {
        tracing::warn!(
            "DLQ_ADMINS is empty: every API call is refused (dead letters are still recorded)"
        );
    }
    tracing::info!(
        admins = ?config.admins,
        auth = ?config.auth,
        "dead-letter-service serving"
    );
    Ok(Served::new(server, stats))
}
