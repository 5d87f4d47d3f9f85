//! A task-service with its own daprd on real Kafka, a recorder of what it publishes, and a
//! publisher sidecar for feeding it events (used by reminder_policy, tombstones, relay_order).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use dapr_publisher::{OutgoingEvent, Publisher, PublisherConfig};
use prost::Message;
use task_service::{App, events::Topics};
use todo_harness::{Daprd, DaprdOptions, free_port, unique};
use todo_proto::todo::{
    events::v1::{ReminderEvent, TaskEvent},
    v1::task_service_client::TaskServiceClient,
};

use super::common::{Backend, fresh_database, jwt_mode};
use todo_harness::recorder::Recorder;

pub struct Live {
    pub app: Option<App>,
    pub sidecar: Daprd,
    pub recorder: Recorder,
    pub topics: Topics,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Live {
    pub async fn start(backend: Backend) -> Self {
        todo_harness::ensure_kafka().await.unwrap();
        let topics = Topics::new(&unique("fx"));
        let recorder = Recorder::start(
            "recorder",
            &[
                topics.task_events.clone(),
                topics.task_updates.clone(),
                topics.reminders.clone(),
            ],
            None,
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = fresh_database(backend, &dir).await;
        let grpc_port = free_port().unwrap();
        let mut config = super::common::config(&url, jwt_mode());
        config.common.dapr_grpc_endpoint = format!("http://127.0.0.1:{grpc_port}");
        config.common.topic_prefix = topics
            .task_events
            .trim_end_matches(".task-events")
            .to_owned();
        let app = task_service::build(config).await.unwrap();
        let mut opts = DaprdOptions::new(unique("task-service"), Some(app.addr.port()));
        opts.grpc_port = Some(grpc_port);
        let sidecar = Daprd::start(opts).await.unwrap();
        Self {
            app: Some(app),
            sidecar,
            recorder,
            topics,
            url,
            _dir: dir,
        }
    }

    pub async fn client(&self) -> TaskServiceClient<tonic::transport::Channel> {
        TaskServiceClient::connect(format!("http://{}", self.app.as_ref().unwrap().addr))
            .await
            .unwrap()
    }

    /// `user`'s reminder events so far: (CloudEvent type, event), first delivery of each.
    pub fn reminders(&self, user: &str) -> Vec<(String, ReminderEvent)> {
        let mut seen = std::collections::HashSet::new();
        self.recorder
            .inbox
            .on(&self.topics.reminders)
            .into_iter()
            .map(|(ty, b)| (ty, ReminderEvent::decode(b.as_slice()).unwrap()))
            .filter(|(_, e)| e.user_id == user && seen.insert(e.event_id.clone()))
            .collect()
    }

    /// Waits (up to 60 s) until `pred` holds for `user`'s reminder events.
    pub async fn wait_reminders(
        &self,
        user: &str,
        pred: impl Fn(&[(String, ReminderEvent)]) -> bool,
    ) -> Vec<(String, ReminderEvent)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.reminders(user);
            if pred(&got) {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "reminder events of {user} so far: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `user`'s task events so far, first delivery of each.
    pub fn task_events(&self, user: &str) -> Vec<(String, TaskEvent)> {
        let mut seen = std::collections::HashSet::new();
        self.recorder
            .inbox
            .on(&self.topics.task_events)
            .into_iter()
            .map(|(ty, b)| (ty, TaskEvent::decode(b.as_slice()).unwrap()))
            .filter(|(_, e)| e.user_id == user && seen.insert(e.event_id.clone()))
            .collect()
    }

    /// Waits (up to 60 s) until `pred` holds for `user`'s task events.
    pub async fn wait_task_events(
        &self,
        user: &str,
        pred: impl Fn(&[(String, TaskEvent)]) -> bool,
    ) -> Vec<(String, TaskEvent)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.task_events(user);
            if pred(&got) {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task events of {user} so far: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A sidecar of its own, to publish events to the task-service as another app would.
pub struct Feeder {
    pub sidecar: Daprd,
    pub publisher: Publisher,
}

impl Feeder {
    pub async fn start() -> Self {
        let sidecar = Daprd::start(DaprdOptions::new(unique("feeder"), None))
            .await
            .unwrap();
        let publisher = Publisher::connect(&PublisherConfig::new(
            sidecar.grpc_address(),
            todo_topology::components::PUBSUB,
        ))
        .await
        .unwrap();
        Self { sidecar, publisher }
    }

    pub async fn send(&self, topic: &str, event_type: &str, key: &str, data: Vec<u8>) {
        self.publisher
            .publish(&OutgoingEvent {
                id: uuid::Uuid::now_v7().to_string(),
                topic: topic.to_owned(),
                event_type: event_type.to_owned(),
                key: key.to_owned(),
                data,
            })
            .await
            .unwrap();
    }
}
