//! Every Task API call leaves exactly its audit entries: task-service (its database, outbox
//! relay and sidecar) → task-events on Kafka → audit-service (bulk subscribe, its own
//! database and sidecar) → the owner's history, on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod stack;

use std::time::Duration;

use todo_harness::{Backend, on_both_databases, unique};
use todo_proto::todo::{
    audit::v1::{ListTaskActivityRequest, audit_service_client::AuditServiceClient},
    v1::task_service_client::TaskServiceClient,
};
use todo_topology::event_types;
use tonic::Request;

fn as_user<T>(user: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("x-user-id", user.parse().unwrap());
    r
}

async fn every_api_call_leaves_exactly_its_entries(backend: Backend) {
    todo_harness::ensure_kafka().await.unwrap();
    let prefix = unique("e2eaudit");
    let dir = tempfile::tempdir().unwrap();

    let audit_url = todo_harness::fresh_database(backend, &dir, "audit.db").await;
    let (audit, _audit_sidecar) = stack::start(
        "audit-service",
        &prefix,
        &[("AUTH_MODE", "dev"), ("DATABASE_URL", &audit_url)],
        audit_service::build,
        |a: &audit_service::App| a.addr,
    )
    .await;
    let task_url = todo_harness::fresh_database(backend, &dir, "tasks.db").await;
    let (tasks, _task_sidecar) = stack::start(
        "task-service",
        &prefix,
        &[("AUTH_MODE", "dev"), ("DATABASE_URL", &task_url)],
        task_service::build,
        |a: &task_service::App| a.addr,
    )
    .await;

    let user = unique("alice");
    let mut api = TaskServiceClient::connect(format!("http://{}", tasks.addr))
        .await
        .unwrap();
    let [created, updated, completed, reopened] = stack::walkthrough(&mut api, &user).await;

    // The deletion is the user's last event on the partition: once it is in the history,
    // everything before it is too, so the history is complete.
    let mut client = AuditServiceClient::connect(format!("http://{}", audit.addr))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let history = loop {
        let page = client
            .list_task_activity(as_user(
                &user,
                ListTaskActivityRequest {
                    task_id: created.id.clone(),
                    page_size: 100,
                    ..Default::default()
                },
            ))
            .await;
        if let Ok(page) = page {
            let entries = page.into_inner().entries;
            if entries
                .iter()
                .any(|e| e.r#type == event_types::TASK_DELETED)
            {
                break entries;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deletion never reached the audit log"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let types: Vec<_> = history.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(
        types,
        [
            event_types::TASK_CREATED,
            event_types::TASK_UPDATED,
            event_types::TASK_COMPLETED,
            event_types::TASK_REOPENED,
            event_types::TASK_DELETED,
        ],
        "exactly one entry per API call, in order"
    );
    let changes: Vec<_> = history[1]
        .changes
        .iter()
        .map(|c| (c.field.as_str(), c.before.as_str(), c.after.as_str()))
        .collect();
    assert_eq!(
        changes,
        [
            ("title", "\"buy milk\"", "\"buy oat milk\""),
            ("priority", "\"PRIORITY_LOW\"", "\"PRIORITY_HIGH\""),
        ]
    );
    let etags: Vec<_> = history[..4]
        .iter()
        .map(|e| e.task.as_ref().unwrap().etag.clone())
        .collect();
    assert_eq!(
        etags,
        [created.etag, updated.etag, completed.etag, reopened.etag]
    );
    for e in &history {
        assert_eq!(e.actor, format!("user:{user}"), "{e:?}");
        assert_eq!(e.user_id, user);
        assert_eq!(e.trace_id.len(), 32, "{e:?}");
    }
    // Stored exactly once each, and nothing else of the user's.
    let stats = audit.stats();
    assert_eq!(stats.recorded, 5, "{stats:?}");
    assert_eq!(stats.dropped, 0, "{stats:?}");
}

on_both_databases!(4; every_api_call_leaves_exactly_its_entries);
