//! Builds the running application: the function `main` and the tests both call.

use std::{future::Future, net::SocketAddr, time::Duration};

use sea_orm::DatabaseConnection;
use todo_proto::todo::v1::task_service_server::TaskServiceServer;
use todo_service::{Running, ServiceBuilder};
use todo_topology::{app_ids, components::PUBSUB};
use tokio::task::JoinHandle;

use crate::{
    api::TaskApi,
    config::Config,
    db,
    outbox::{Relay, Wakeup},
};

/// A running task-service.
#[derive(Debug)]
pub struct App {
    /// Where it listens (the port the OS chose when the config asked for port 0).
    pub addr: SocketAddr,
    pub db: DatabaseConnection,
    server: Running,
    stop_relay: tokio::sync::watch::Sender<bool>,
    relay: JoinHandle<()>,
    scheduler: JoinHandle<()>,
}

/// Connects the database (applying migrations), binds the listener and starts serving
/// the Task API and Dapr's AppCallback on one port (with health, reflection and metrics
/// from the service scaffold), and starts the outbox relay and the reminder scheduler.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let db = db::connect(&config.database_url, config.database_max_connections).await?;
    let writer = db::writer(&config.database_url, &db).await?;

    // The relay publishes through the sidecar; the API never waits on it.
    // Calls longer than daprd's own retries (dapr-components/resiliency.yaml): abandoning
    // a call daprd is still working on would let a retry overtake it and reorder events.
    let sidecar = todo_service::sidecar(&config.common, Duration::from_secs(60))?;
    let publisher = dapr_publisher::Publisher::new(&sidecar, PUBSUB);
    let wakeup = Wakeup::default();
    let (stop_relay, stop_rx) = tokio::sync::watch::channel(false);
    let relay = tokio::spawn(
        Relay::new(
            writer.clone(),
            publisher,
            config.relay.clone(),
            wakeup.clone(),
        )
        .reading_from(db.clone())
        .run(stop_rx),
    );
    // Events left from before a restart go out now.
    wakeup.wake();

    let topics = config.common.topics();
    let nudge = crate::reminders::Nudge::default();
    let scheduler = tokio::spawn(
        crate::reminders::Scheduler {
            db: writer.clone(),
            topics: topics.clone(),
            config: config.scheduler.clone(),
            nudge: nudge.clone(),
            relay: wakeup.clone(),
        }
        .run(stop_relay.subscribe()),
    );
    // The API's writes and the occurrences share commits (group commit).
    let group = todo_service::db::GroupWriter::new(
        writer,
        db::write_lanes(&config.database_url, config.database_max_connections),
        config.write_group_max,
    );
    let intake_stats = std::sync::Arc::new(crate::occurrences::IntakeStats::default());
    let occurrences = crate::occurrences::Occurrences {
        writer: group.clone(),
        topics: topics.clone(),
        wakeup: wakeup.clone(),
        nudge: nudge.clone(),
        stats: intake_stats.clone(),
    };
    let subscriptions = crate::occurrences::subscriptions(occurrences, intake_stats);
    let api = TaskServiceServer::new(TaskApi {
        db: db.clone(),
        writer: group,
        topics,
        wakeup,
        nudge,
        default_reminders: config.default_reminders.clone(),
    });
    let server = ServiceBuilder::new(app_ids::TASK_SERVICE, &config.common)
        .authenticated(api, &config.auth)
        .subscriptions(subscriptions)
        .serve()
        .await?;
    tracing::info!(
        database = %redact(&config.database_url),
        auth = ?config.auth,
        "task-service serving"
    );
    Ok(App {
        addr: server.addr,
        db,
        server,
        stop_relay,
        relay,
        scheduler,
    })
}

impl App {
    /// Stops accepting, lets in-flight requests finish, then stops the relay and the
    /// scheduler and closes the database.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.server.shutdown().await?;
        let _ = self.stop_relay.send(true);
        self.relay.await?;
        self.scheduler.await?;
        self.db.close().await?;
        Ok(())
    }

    /// Serves until `signal` resolves, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        signal.await;
        tracing::info!("shutting down: finishing in-flight requests");
        self.shutdown().await
    }
}

/// The database URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    }
}

pub use todo_env::shutdown_signal;
