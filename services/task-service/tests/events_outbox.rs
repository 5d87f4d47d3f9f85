//! Task events through the outbox, read back by a real subscriber through daprd and Kafka:
//! exactly its events per RPC, none from a rolled-back transaction.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use todo_harness::on_both_databases;
#[path = "common/events.rs"]
mod stack;

use std::time::Duration;

use prost::Message;
use prost_types::FieldMask;
use sea_orm::{EntityTrait, PaginatorTrait, TransactionTrait};
use task_service::{db::entities::outbox, events::Topics};
use todo_harness::unique;
use todo_proto::todo::{
    events::v1::TaskChanged, v1::CompleteTaskRequest, v1::DeleteTaskRequest, v1::GetTaskRequest,
    v1::ReopenTaskRequest, v1::Task, v1::UpdateTaskRequest,
    v1::task_service_client::TaskServiceClient,
};
use todo_topology::event_types;

use common::{Backend, as_user, fresh_database, jwt_mode};
use stack::{Stack, new_task};

async fn each_rpc_produces_exactly_its_events(backend: Backend) {
    let stack = Stack::start(backend, None).await;
    let mut c = stack.client().await;
    let user = unique("u");
    let get = |id: String| GetTaskRequest { id };
    let mut snapshots = Vec::new();
    let t = c
        .create_task(as_user(&user, new_task("first")))
        .await
        .unwrap()
        .into_inner();
    snapshots.push(
        c.get_task(as_user(&user, get(t.id.clone())))
            .await
            .unwrap()
            .into_inner(),
    );
    c.update_task(as_user(
        &user,
        UpdateTaskRequest {
            task: Some(Task {
                id: t.id.clone(),
                title: "second".into(),
                ..Task::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["title".into()],
            }),
        },
    ))
    .await
    .unwrap();
    snapshots.push(
        c.get_task(as_user(&user, get(t.id.clone())))
            .await
            .unwrap()
            .into_inner(),
    );
    c.complete_task(as_user(
        &user,
        CompleteTaskRequest {
            id: t.id.clone(),
            etag: String::new(),
        },
    ))
    .await
    .unwrap();
    snapshots.push(
        c.get_task(as_user(&user, get(t.id.clone())))
            .await
            .unwrap()
            .into_inner(),
    );
    c.reopen_task(as_user(
        &user,
        ReopenTaskRequest {
            id: t.id.clone(),
            etag: String::new(),
        },
    ))
    .await
    .unwrap();
    snapshots.push(
        c.get_task(as_user(&user, get(t.id.clone())))
            .await
            .unwrap()
            .into_inner(),
    );
    let before_delete = snapshots.last().unwrap().clone();
    c.delete_task(as_user(
        &user,
        DeleteTaskRequest {
            id: t.id.clone(),
            etag: String::new(),
        },
    ))
    .await
    .unwrap();
    snapshots.push(before_delete);

    let events = stack
        .wait_for_events(&user, 5, Duration::from_secs(60))
        .await;
    let types: Vec<&str> = events.iter().map(|(ty, _)| ty.as_str()).collect();
    assert_eq!(
        types,
        [
            event_types::TASK_CREATED,
            event_types::TASK_UPDATED,
            event_types::TASK_COMPLETED,
            event_types::TASK_REOPENED,
            event_types::TASK_DELETED
        ]
    );
    for ((_, e), snap) in events.iter().zip(&snapshots) {
        assert_eq!(
            e.task.as_ref().unwrap(),
            snap,
            "the event carries what GetTask returned"
        );
        assert_eq!(e.user_id, user);
        assert!(uuid::Uuid::parse_str(&e.event_id).is_ok());
        assert!(e.occurred_at.is_some());
    }
    assert_eq!(events[1].1.changed_fields, ["title"]);

    // The change notices on task-updates, one per change, in order.
    let notices = stack
        .recorder
        .inbox
        .wait_until(&stack.topics.task_updates, Duration::from_secs(30), |n| {
            n.len() >= 5
        })
        .await;
    let notices: Vec<TaskChanged> = notices
        .iter()
        .map(|(_, b)| TaskChanged::decode(b.as_slice()).unwrap())
        .collect();
    let kinds: Vec<i32> = notices.iter().map(|n| n.kind).collect();
    assert_eq!(kinds, [1, 2, 3, 4, 5]);
    // Numbered in the user's sequence of changes, each with the task the event carries.
    let seqs: Vec<u64> = notices.iter().map(|n| n.user_seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    for (n, (_, e)) in notices.iter().zip(&events) {
        assert_eq!(n.task, e.task);
    }

    // Exactly these: nothing else arrives, and an idempotent no-op emits nothing.
    c.complete_task(as_user(
        &user,
        CompleteTaskRequest {
            id: t.id.clone(),
            etag: String::new(),
        },
    ))
    .await
    .unwrap_err();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (all, deliveries) = stack.task_events();
    assert_eq!(all.len(), 5);
    assert_eq!(deliveries, 5);
}

async fn a_rolled_back_transaction_leaves_no_event(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(backend, &dir).await;
    let db = task_service::db::connect(&url, 2).await.unwrap();
    let topics = Topics::new("rb");
    let fields = task_service::tasks::validate::task_fields(
        &Task {
            title: "x".into(),
            ..Task::default()
        },
        "",
    )
    .unwrap();
    let row = task_service::tasks::new_row("u", uuid::Uuid::now_v7(), &fields, chrono::Utc::now());
    {
        let txn = db.begin().await.unwrap();
        task_service::tasks::insert(&txn, &row).await.unwrap();
        let snapshot = task_service::tasks::to_proto(&row);
        let change = task_service::events::Change {
            kind: todo_proto::todo::events::v1::TaskEventKind::Created,
            task: &snapshot,
            changed_fields: vec![],
            actor: "user:test".into(),
            user_seq: 0,
        };
        task_service::outbox::write_change(&txn, &topics, change)
            .await
            .unwrap();
        txn.rollback().await.unwrap();
    }
    assert_eq!(outbox::Entity::find().count(&db).await.unwrap(), 0);
    assert!(
        task_service::tasks::find(&db, "u", row.id)
            .await
            .unwrap()
            .is_none()
    );
    // And through the API: a rejected request writes no event.
    let app = task_service::build(common::config(&url, jwt_mode()))
        .await
        .unwrap();
    let mut c = TaskServiceClient::connect(format!("http://{}", app.addr))
        .await
        .unwrap();
    c.create_task(as_user("u", new_task("  ")))
        .await
        .unwrap_err();
    assert_eq!(outbox::Entity::find().count(&db).await.unwrap(), 0);
    app.shutdown().await.unwrap();
}

on_both_databases!(4;
    each_rpc_produces_exactly_its_events,
    a_rolled_back_transaction_leaves_no_event,
);
