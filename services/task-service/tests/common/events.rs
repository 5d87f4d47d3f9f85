//! A recording subscriber: an app with its own daprd that keeps every event of some topics.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use dapr_appcallback::{AppCallbackService, Event, Outcome, Route, Subscriptions};
use todo_harness::{Daprd, DaprdOptions, unique};
use todo_topology::{components::PUBSUB, topics};
use tokio::{net::TcpListener, sync::Notify};

#[derive(Default)]
pub struct Inbox {
    events: Mutex<Vec<(String, String, Vec<u8>)>>, // (topic, CloudEvent type, bytes)
    changed: Notify,
}

impl Inbox {
    pub fn on(&self, topic: &str) -> Vec<(String, Vec<u8>)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == topic)
            .map(|(_, ty, b)| (ty.clone(), b.clone()))
            .collect()
    }

    /// Waits until `pred` holds for the events of `topic`, failing after `timeout`.
    pub async fn wait_until(
        &self,
        topic: &str,
        timeout: Duration,
        pred: impl Fn(&[(String, Vec<u8>)]) -> bool,
    ) -> Vec<(String, Vec<u8>)> {
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
}

/// A subscriber app recording `topics`, with its sidecar.
pub struct Recorder {
    pub inbox: Arc<Inbox>,
    pub daprd: Daprd,
}

impl Recorder {
    pub async fn start(topic_names: &[String], resources: Option<std::path::PathBuf>) -> Self {
        let inbox = Arc::new(Inbox::default());
        let mut b = Subscriptions::builder();
        for t in topic_names {
            let i = inbox.clone();
            b = b.route_bytes(
                Route::new(PUBSUB, t.clone(), topics::dead_letter(t)),
                move |e: Event<Vec<u8>>| {
                    let i = i.clone();
                    async move {
                        i.events.lock().unwrap().push((
                            e.topic.clone(),
                            e.event_type.clone(),
                            e.raw,
                        ));
                        i.changed.notify_waiters();
                        Outcome::Success
                    }
                },
            );
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let svc = AppCallbackService::new(b.build());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc.app_callback_server())
                .add_service(svc.health_check_server())
                .serve_with_incoming(
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                ),
        );
        let mut opts = DaprdOptions::new(unique("recorder"), Some(port));
        if let Some(r) = resources {
            opts.resources_path = r;
        }
        let daprd = Daprd::start(opts).await.unwrap();
        Self { inbox, daprd }
    }
}
