//! Builds the running application: the function `main` and the tests both call.

use std::sync::Arc;

use todo_proto::todo::audit::v1::audit_service_server::AuditServiceServer;
use todo_service::{Served, ServiceBuilder};
use todo_topology::app_ids;

use crate::{
    api::AuditApi,
    config::Config,
    db,
    ingest::{Ingest, Stats},
    prune,
};

/// A running service: its address, its counters, graceful shutdown.
pub type App = Served<Stats>;

/// Opens the audit database (applying migrations), binds the listener and serves, on one
/// port: the Audit API (behind caller authentication), Dapr's AppCallback with bulk
/// delivery (behind `APP_API_TOKEN`), `grpc.health.v1` and server reflection; and, with
/// a retention set, the pruner.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let (pool, writer) = config.database.open::<db::migration::Migrator>().await?;
    let topics = config.common.topics();
    let stats = Arc::new(Stats::default());
    let ingest = Arc::new(Ingest::new(writer.clone(), stats.clone()));
    let subscriptions = ingest.subscriptions(
        &topics,
        (config.bulk_max_messages, config.bulk_max_await_ms),
    );
    let api = AuditServiceServer::new(AuditApi::new(pool.clone()));
    let server = ServiceBuilder::new(app_ids::AUDIT_SERVICE, &config.common)
        .authenticated(api, &config.auth)
        .subscriptions(subscriptions)
        .serve()
        .await?;
    if let Some(retention) = config.retention {
        // Runs as long as the consumer does: the server drops it at shutdown.
        tokio::spawn(prune::run(
            writer,
            retention,
            config.prune_batch,
            config.prune_interval,
            ingest.lifetime(),
        ));
    }
    tracing::info!(
        bulk_max_messages = config.bulk_max_messages,
        retention_days = config.retention.map(|r| r.as_secs() / 86_400),
        auth = ?config.auth,
        "audit-service serving"
    );
    Ok(Served::new(server, stats))
}
