//! A recording subscriber: a tiny AppCallback app, with its own daprd, that keeps every
//! event delivered on some topics, undecoded, for a test to wait on and read.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use anyhow::Context;
use dapr_appcallback::{ApiTokenLayer, AppCallbackService, Event, Outcome, Route, Subscriptions};
use dapr_publisher::{Publisher, PublisherConfig};
use todo_topology::{components::PUBSUB, topics};
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};

use crate::{Daprd, DaprdOptions, unique};

/// How long [`Inbox::wait_for`] waits for something that normally takes a second or two.
pub const WAIT: Duration = Duration::from_secs(60);

/// One received event: (CloudEvent type, bytes).
pub type Received = (String, Vec<u8>);

/// What a recording subscriber received, per topic, in arrival order.
#[derive(Default)]
pub struct Inbox {
    events: Mutex<HashMap<String, Vec<Received>>>,
    changed: Notify,
}

impl Inbox {
    /// Records one delivery and wakes the waiters.
    pub fn push(&self, topic: &str, event_type: &str, bytes: &[u8]) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(topic.to_owned())
            .or_default()
            .push((event_type.to_owned(), bytes.to_vec()));
        self.changed.notify_waiters();
    }

    /// Every delivery on `topic` so far.
    pub fn on(&self, topic: &str) -> Vec<Received> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `pred` holds for the deliveries on `topic`; panics after `timeout`.
    pub async fn wait_until(
        &self,
        topic: &str,
        timeout: Duration,
        pred: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            let got = self.on(topic);
            if pred(&got) {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("waited {timeout:?} on {topic}; have {} events", got.len());
            }
        }
    }

    /// Waits until `topic` has at least `n` deliveries; panics after [`WAIT`].
    pub async fn wait_for(&self, topic: &str, n: usize) -> Vec<Received> {
        self.wait_until(topic, WAIT, |got| got.len() >= n).await
    }
}

/// Serves the AppCallback (plain, bulk and health) of `subs` on a free port of 127.0.0.1,
/// with TCP_NODELAY on every connection; answers the port.
pub async fn serve(subs: Subscriptions) -> anyhow::Result<(u16, JoinHandle<()>)> {
    serve_with(subs, true, None).await
}

/// [`serve`], with TCP_NODELAY on or off and, with `app_token`, rejecting calls without
/// that `dapr-api-token` (as a service with `APP_API_TOKEN` does).
///
/// `serve_with_incoming` ignores `Server::tcp_nodelay`: TCP_NODELAY must be set on the
/// incoming stream itself. Without it, every delivery waits on Nagle's algorithm and a
/// delayed ACK, and the pipe delivers about ten times fewer events per second.
pub async fn serve_with(
    subs: Subscriptions,
    nodelay: bool,
    app_token: Option<String>,
) -> anyhow::Result<(u16, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let svc = AppCallbackService::new(subs);
    let server = tonic::transport::Server::builder()
        .layer(ApiTokenLayer::for_dapr_callbacks(app_token))
        .add_service(svc.app_callback_server())
        .add_service(svc.health_check_server())
        .add_service(svc.alpha_server())
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(nodelay)),
        );
    let task = tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "a recording subscriber's AppCallback server stopped");
        }
    });
    Ok((port, task))
}

/// A subscriber app recording some topics (each with its dead-letter topic named), with its
/// sidecar. Dropping it stops both.
pub struct Recorder {
    pub inbox: Arc<Inbox>,
    pub daprd: Daprd,
    server: JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Recorder {
    /// Starts the app and its sidecar (app id `<app_id_prefix>-<hex>`), loading `resources`
    /// instead of dapr-components/ when given.
    pub async fn start(
        app_id_prefix: &str,
        topic_names: &[String],
        resources: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let inbox = Arc::new(Inbox::default());
        let mut b = Subscriptions::builder();
        for t in topic_names {
            let i = inbox.clone();
            b = b.route_bytes(
                Route::new(PUBSUB, t.clone(), topics::dead_letter(t)),
                move |e: Event<Vec<u8>>| {
                    let i = i.clone();
                    async move {
                        i.push(&e.topic, &e.event_type, &e.raw);
                        Outcome::Success
                    }
                },
            );
        }
        let (port, server) = serve(b.build()).await?;
        let mut opts = DaprdOptions::new(unique(app_id_prefix), Some(port));
        if let Some(r) = resources {
            opts.resources_path = r;
        }
        let daprd = Daprd::start(opts)
            .await
            .context("starting the recording subscriber's daprd")?;
        Ok(Self {
            inbox,
            daprd,
            server,
        })
    }
}

/// A sidecar with no app behind it (app id `<app_id_prefix>-<hex>`), and a publisher
/// through it: how a test publishes as a service would.
pub async fn publisher(app_id_prefix: &str) -> anyhow::Result<(Daprd, Publisher)> {
    let daprd = Daprd::start(DaprdOptions::new(unique(app_id_prefix), None))
        .await
        .context("starting the publisher's daprd")?;
    let publisher = Publisher::connect(&PublisherConfig::new(daprd.grpc_address(), PUBSUB))
        .await
        .context("connecting to the publisher's daprd")?;
    Ok((daprd, publisher))
}
