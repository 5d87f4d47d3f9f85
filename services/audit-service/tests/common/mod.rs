//! Test support: audit-service built by the function `main` calls (or its binary), on its
//! own database, with its own daprd; a publisher sidecar that publishes task and reminder
//! events as task-service does; a recorder of the dead-letter topics.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::{DateTime, Utc};
use dapr_publisher::{OutgoingEvent, Publisher};
use prost::Message;
use todo_harness::{Backend, Daprd, DaprdOptions, free_port, recorder::Recorder, unique};
use todo_proto::todo::{
    audit::v1::{
        ActivityEntry, ListActivityRequest, ListTaskActivityRequest,
        audit_service_client::AuditServiceClient,
    },
    events::v1::{ReminderEvent, TaskEvent, TaskEventKind},
    v1::{Priority, Task},
};
use todo_service::cli::ServiceConfig as _;
use todo_topology::{Topics, event_types};
use tonic::{Request, transport::Channel};

/// audit-service, its sidecar, a publisher and a dead-letter recorder on fresh topics.
pub struct Stack {
    pub app: Option<audit_service::App>,
    pub sidecar: Daprd,
    pub publisher: Publisher,
    _publisher_sidecar: Daprd,
    pub dead_letters: Recorder,
    pub topics: Topics,
    pub prefix: String,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Stack {
    pub async fn start(backend: Backend) -> Self {
        todo_harness::ensure_kafka().await.unwrap();
        let prefix = unique("au");
        let topics = Topics::new(&prefix);
        let dead_letters = Recorder::start(
            "dlq",
            &[
                topics.task_events_dead_letter.clone(),
                topics.reminders_dead_letter.clone(),
            ],
            None,
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = todo_harness::fresh_database(backend, &dir, "audit.db").await;
        let grpc_port = free_port().unwrap();
        let port = grpc_port.to_string();
        let config = audit_service::Config::from_lookup(|k| {
            Some(match k {
                "APP_ADDR" => "127.0.0.1:0".to_owned(),
                "AUTH_MODE" => "dev".to_owned(),
                "DATABASE_URL" => url.clone(),
                "DAPR_GRPC_PORT" => port.clone(),
                "METRICS_ADDR" => "off".to_owned(),
                "TOPIC_PREFIX" => prefix.clone(),
                _ => return None,
            })
        })
        .unwrap();
        let app = audit_service::build(config).await.unwrap();
        let mut opts = DaprdOptions::new(unique("audit-service"), Some(app.addr.port()));
        opts.grpc_port = Some(grpc_port);
        let sidecar = Daprd::start(opts).await.unwrap();
        let (publisher_sidecar, publisher) = todo_harness::recorder::publisher("publisher")
            .await
            .unwrap();
        Self {
            app: Some(app),
            sidecar,
            publisher,
            _publisher_sidecar: publisher_sidecar,
            dead_letters,
            topics,
            prefix,
            url,
            _dir: dir,
        }
    }

    pub async fn client(&self) -> AuditServiceClient<Channel> {
        connect(&self.app.as_ref().unwrap().addr.to_string()).await
    }

    pub fn stats(&self) -> audit_service::ingest::StatsSnapshot {
        self.app.as_ref().unwrap().stats()
    }

    /// Waits until `cond` holds of the stats (at most `timeout`).
    pub async fn wait_stats(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&audit_service::ingest::StatsSnapshot) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.stats();
            if cond(&s) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited {timeout:?} for {what}: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub async fn connect(addr: &str) -> AuditServiceClient<Channel> {
    for _ in 0..100 {
        if let Ok(c) = AuditServiceClient::connect(format!("http://{addr}")).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("audit-service at {addr} did not come up");
}

/// A request as `user` (dev mode: the `x-user-id` header).
pub fn as_user<T>(user: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("x-user-id", user.parse().unwrap());
    r
}

/// A task of `user` as task-service would snapshot it.
pub fn task(user: &str, id: &str, title: &str, version: u32) -> Task {
    Task {
        id: id.to_owned(),
        user_id: user.to_owned(),
        title: title.to_owned(),
        priority: Priority::Medium as i32,
        etag: format!("\"{version}\""),
        ..Task::default()
    }
}

/// An event as a publisher has it: CloudEvent type, payload, event id.
pub type Published = (&'static str, Vec<u8>, String);

/// A task event as task-service publishes it.
pub fn task_event(
    kind: TaskEventKind,
    task: &Task,
    changed: &[&str],
    at: DateTime<Utc>,
) -> Published {
    let event_id = uuid::Uuid::now_v7().to_string();
    let ty = match kind {
        TaskEventKind::Created | TaskEventKind::Unspecified => event_types::TASK_CREATED,
        TaskEventKind::Updated => event_types::TASK_UPDATED,
        TaskEventKind::Completed => event_types::TASK_COMPLETED,
        TaskEventKind::Reopened => event_types::TASK_REOPENED,
        TaskEventKind::Deleted => event_types::TASK_DELETED,
    };
    let ev = TaskEvent {
        event_id: event_id.clone(),
        occurred_at: Some(todo_proto::to_timestamp(at)),
        user_id: task.user_id.clone(),
        kind: kind as i32,
        task: Some(task.clone()),
        changed_fields: changed.iter().map(|s| (*s).to_owned()).collect(),
        actor: format!("user:{}", task.user_id),
    };
    (ty, ev.encode_to_vec(), event_id)
}

/// A reminder event of a task as task-service's scheduler publishes it.
pub fn reminder_event(event_type: &'static str, task: &Task, at: DateTime<Utc>) -> Published {
    let event_id = uuid::Uuid::now_v7().to_string();
    let ev = ReminderEvent {
        event_id: event_id.clone(),
        occurred_at: Some(todo_proto::to_timestamp(at)),
        user_id: task.user_id.clone(),
        reminder_id: uuid::Uuid::new_v4().to_string(),
        task_id: task.id.clone(),
        task_title: task.title.clone(),
        remind_at: Some(todo_proto::to_timestamp(at)),
        actor: "service:task-service".into(),
        ..ReminderEvent::default()
    };
    (event_type, ev.encode_to_vec(), event_id)
}

/// An event to publish on `topic`, keyed by `user` (a new CloudEvent id each time, as a
/// republished outbox row would have).
pub fn outgoing(topic: &str, user: &str, (ty, data, _): &Published) -> OutgoingEvent {
    OutgoingEvent {
        id: uuid::Uuid::new_v4().to_string(),
        topic: topic.to_owned(),
        event_type: (*ty).to_owned(),
        key: user.to_owned(),
        data: data.clone(),
    }
}

/// Every entry of a task's history (all pages of 2, so paging is exercised).
pub async fn task_history(
    client: &mut AuditServiceClient<Channel>,
    user: &str,
    task_id: &str,
) -> Result<Vec<ActivityEntry>, tonic::Status> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_task_activity(as_user(
                user,
                ListTaskActivityRequest {
                    task_id: task_id.to_owned(),
                    page_size: 2,
                    page_token: token,
                },
            ))
            .await?
            .into_inner();
        out.extend(page.entries);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

/// Every entry of `user` (all pages of ListActivity with `req`'s filters).
pub async fn activity(
    client: &mut AuditServiceClient<Channel>,
    user: &str,
    mut req: ListActivityRequest,
) -> Vec<ActivityEntry> {
    let mut out = Vec::new();
    loop {
        let page = client
            .list_activity(as_user(user, req.clone()))
            .await
            .unwrap()
            .into_inner();
        out.extend(page.entries);
        if page.next_page_token.is_empty() {
            return out;
        }
        req.page_token = page.next_page_token;
    }
}

/// Waits until `user` has at least `n` entries in all; answers them.
pub async fn wait_entries(
    client: &mut AuditServiceClient<Channel>,
    user: &str,
    n: usize,
    timeout: Duration,
) -> Vec<ActivityEntry> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let all = activity(
            client,
            user,
            ListActivityRequest {
                page_size: 500,
                ..Default::default()
            },
        )
        .await;
        if all.len() >= n {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {timeout:?} for {n} entries of {user}, have {}",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
