//! Builds the running application: the function `main` and the tests both call.

use std::{sync::Arc, time::Duration};

use todo_proto::todo::sync::v1::sync_service_server::SyncServiceServer;
use todo_service::{Counters, Served, ServiceBuilder};
use todo_topology::app_ids;

use crate::{
    api::SyncApi,
    config::Config,
    hub::Hub,
    updates::{Stats, Updates},
};

/// How often the hub drops what fell out of the window.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// A running sync-service: its address, its counters, graceful shutdown (which first ends
/// every open stream, so clients reconnect elsewhere with their cursors).
#[derive(Debug)]
pub struct App {
    pub addr: std::net::SocketAddr,
    hub: Arc<Hub>,
    served: Served<Stats>,
}

impl App {
    /// How the events handled so far ended.
    pub fn stats(&self) -> <Stats as Counters>::Snapshot {
        self.served.stats()
    }

    /// Open streams.
    pub fn open_streams(&self) -> usize {
        self.hub.open_streams()
    }

    /// Ends every stream (UNAVAILABLE: reconnect with your cursor), reports NOT_SERVING,
    /// stops accepting and lets in-flight deliveries finish.
    pub async fn shutdown(self) -> anyhow::Result<<Stats as Counters>::Snapshot> {
        self.hub.close();
        self.served.shutdown().await
    }

    /// Serves until `signal` resolves, then shuts down gracefully.
    pub async fn run_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        signal.await;
        tracing::info!("shutting down: ending streams, finishing in-flight deliveries");
        self.shutdown().await.map(drop)
    }
}

/// Binds the listener and serves, on one port: WatchTasks (behind caller authentication;
/// gRPC and gRPC-Web), Dapr's AppCallback for `task-updates` (behind `APP_API_TOKEN`),
/// `grpc.health.v1` and server reflection.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let hub = Hub::new(config.limits.clone());
    let stats = Arc::new(Stats::default());
    let updates = Arc::new(Updates::new(
        hub.clone(),
        config.common.topics(),
        stats.clone(),
    ));
    let api = SyncServiceServer::new(SyncApi::new(hub.clone(), config.heartbeat));
    let server = ServiceBuilder::new(app_ids::SYNC_SERVICE, &config.common)
        .authenticated(api, &config.auth)
        .grpc_web()
        .subscriptions(updates.subscriptions(config.bulk))
        .serve()
        .await?;
    let sweeping = Arc::downgrade(&hub);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match sweeping.upgrade() {
                Some(hub) => hub.sweep(),
                None => break,
            }
        }
    });
    tracing::info!(
        limits = ?config.limits,
        heartbeat_ms = config.heartbeat.as_millis() as u64,
        bulk_max_messages = config.bulk.0,
        auth = ?config.auth,
        "sync-service serving"
    );
    Ok(App {
        addr: server.addr,
        hub,
        served: Served::new(server, stats),
    })
}

pub use todo_env::shutdown_signal;
