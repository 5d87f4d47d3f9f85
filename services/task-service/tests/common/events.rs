//! The task-service event stack for tests: the service (built as `main` builds it) on a
//! fresh database, its own daprd, and a recording subscriber of its topics.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{path::PathBuf, time::Duration};

use prost::Message;
use task_service::{App, events::Topics};
use todo_harness::{Daprd, DaprdOptions, free_port, recorder::Recorder, unique};
use todo_proto::todo::{
    events::v1::TaskEvent, v1::CreateTaskRequest, v1::Task,
    v1::task_service_client::TaskServiceClient,
};

use crate::common::{Backend, fresh_database, jwt_mode};

pub struct Stack {
    pub app: Option<App>,
    pub sidecar: Daprd,
    pub recorder: Recorder,
    pub topics: Topics,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Stack {
    pub async fn start(backend: Backend, resources: Option<PathBuf>) -> Self {
        Self::start_with(backend, resources, |_| {}).await
    }

    /// [`Stack::start`] with task-service's configuration changed by `tune` first.
    pub async fn start_with(
        backend: Backend,
        resources: Option<PathBuf>,
        tune: impl FnOnce(&mut task_service::Config),
    ) -> Self {
        todo_harness::ensure_kafka().await.unwrap();
        let topics = Topics::new(&unique("ev"));
        let recorder = Recorder::start(
            "recorder",
            &[
                topics.task_events.clone(),
                topics.task_updates.clone(),
                topics.reminders.clone(),
            ],
            resources.clone(),
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = fresh_database(backend, &dir).await;
        let grpc_port = free_port().unwrap();
        let mut config = stack_config(&url, grpc_port, &topics);
        tune(&mut config);
        let app = task_service::build(config).await.unwrap();
        let mut opts = DaprdOptions::new(unique("task-service"), Some(app.addr.port()));
        opts.grpc_port = Some(grpc_port);
        if let Some(r) = resources {
            opts.resources_path = r;
        }
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

    /// Every TaskEvent received so far, first delivery of each event id only (the dedup view),
    /// and how many deliveries there were in all.
    pub fn task_events(&self) -> (Vec<(String, TaskEvent)>, usize) {
        let all = self.recorder.inbox.on(&self.topics.task_events);
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (ty, bytes) in &all {
            let e = TaskEvent::decode(bytes.as_slice()).unwrap();
            if seen.insert(e.event_id.clone()) {
                out.push((ty.clone(), e));
            }
        }
        (out, all.len())
    }

    pub async fn wait_for_events(
        &self,
        user_prefix: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<(String, TaskEvent)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (events, _) = self.task_events();
            let mine: Vec<_> = events
                .into_iter()
                .filter(|(_, e)| e.user_id.starts_with(user_prefix))
                .collect();
            if mine.len() >= n {
                return mine;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited {timeout:?} for {n} events, have {}",
                mine.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub fn stack_config(url: &str, dapr_grpc_port: u16, topics: &Topics) -> task_service::Config {
    let mut c = crate::common::config(url, jwt_mode());
    c.common.dapr_grpc_endpoint = format!("http://127.0.0.1:{dapr_grpc_port}");
    c.common.topic_prefix = topics
        .task_events
        .trim_end_matches(".task-events")
        .to_owned();
    c
}

pub fn new_task(title: &str) -> CreateTaskRequest {
    CreateTaskRequest {
        task: Some(Task {
            title: title.into(),
            ..Task::default()
        }),
        ..Default::default()
    }
}
