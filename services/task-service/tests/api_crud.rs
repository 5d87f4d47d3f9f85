//! The Task API over a real gRPC connection, on SQLite and on PostgreSQL: each RPC,
//! optimistic concurrency, idempotent creates, data kept across a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use todo_harness::on_both_databases;

use prost::Message;
use prost_types::{Duration, FieldMask};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use task_service::db::entities::outbox;
use todo_proto::todo::events::v1::{TaskChanged, TaskEvent};
use todo_proto::todo::v1::{
    CompleteTaskRequest, CreateTaskRequest, DeleteTaskRequest, Frequency, GetTaskRequest,
    ListTasksRequest, Priority, Recurrence, Reminder, ReopenTaskRequest, Task, TaskStatus,
    UpdateTaskRequest, reminder::When,
};
use tonic::Code;

use common::{Backend, TestApp, api::*, as_user};

async fn every_rpc_round_trips(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut c = app.client().await;
    let title = "Ünïcödé ✓ 日本語 🚀 \u{200d} «quotes» \"and\" 'more'";
    let description = "line 1\nline 2\t— with RTL: שלום, and emoji 👩‍👩‍👧";
    let created = c
        .create_task(as_user(
            "alice",
            create(Task {
                title: title.into(),
                description: description.into(),
                priority: Priority::High as i32,
                tags: vec!["home".into(), "ünï".into()],
                due_time: Some(ts(1_900_000_000)),
                time_zone: "Europe/Berlin".into(),
                recurrence: Some(Recurrence {
                    frequency: Frequency::Weekly as i32,
                    interval: 2,
                    ..Default::default()
                }),
                reminders: vec![Reminder {
                    when: Some(When::BeforeDue(Duration {
                        seconds: 3600,
                        nanos: 0,
                    })),
                }],
                ..Task::default()
            }),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.title, title);
    assert_eq!(created.description, description);
    assert_eq!(created.status, TaskStatus::Open as i32);
    assert_eq!(created.user_id, "alice");
    assert_eq!(
        created.series_id, created.id,
        "a recurring task starts its series"
    );
    assert_eq!(
        created.series_start_time, created.due_time,
        "and counts its rhythm from its due time"
    );
    assert_eq!(
        uuid::Uuid::parse_str(&created.id)
            .unwrap()
            .get_version_num(),
        7
    );
    assert!(!created.etag.is_empty());

    let got = c
        .get_task(as_user(
            "alice",
            GetTaskRequest {
                id: created.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, created);

    let listed = c
        .list_tasks(as_user("alice", ListTasksRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tasks, vec![created.clone()]);
    assert!(listed.next_page_token.is_empty());

    let updated = c
        .update_task(as_user(
            "alice",
            UpdateTaskRequest {
                task: Some(Task {
                    id: created.id.clone(),
                    title: "renamed".into(),
                    description: "ignored: not in the mask".into(),
                    ..Task::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["title".into()],
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.title, "renamed");
    assert_eq!(
        updated.description, description,
        "fields outside the mask are kept"
    );
    assert_eq!(updated.tags, created.tags);
    assert_ne!(updated.etag, created.etag);
    assert_eq!(updated.series_start_time, created.series_start_time);

    // A due time set by the caller restarts the series' rhythm there.
    let moved = c
        .update_task(as_user(
            "alice",
            UpdateTaskRequest {
                task: Some(Task {
                    id: created.id.clone(),
                    due_time: Some(ts(1_900_086_400)),
                    ..Task::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["due_time".into()],
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.series_start_time, Some(ts(1_900_086_400)));

    let completed = c
        .complete_task(as_user(
            "alice",
            CompleteTaskRequest {
                id: created.id.clone(),
                etag: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(completed.status, TaskStatus::Completed as i32);
    assert!(completed.complete_time.is_some());
    let again = c
        .complete_task(as_user(
            "alice",
            CompleteTaskRequest {
                id: created.id.clone(),
                etag: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, completed, "completing twice changes nothing");

    let reopened = c
        .reopen_task(as_user(
            "alice",
            ReopenTaskRequest {
                id: created.id.clone(),
                etag: completed.etag.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reopened.status, TaskStatus::Open as i32);
    assert!(reopened.complete_time.is_none());

    c.delete_task(as_user(
        "alice",
        DeleteTaskRequest {
            id: created.id.clone(),
            etag: String::new(),
        },
    ))
    .await
    .unwrap();
    let err = c
        .get_task(as_user(
            "alice",
            GetTaskRequest {
                id: created.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(count(&app, "alice").await, 0);
}

async fn stale_etag_is_aborted_and_changes_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut c = app.client().await;
    let t = c
        .create_task(as_user("u", create(new_task("v1"))))
        .await
        .unwrap()
        .into_inner();
    let v2 = c
        .update_task(as_user(
            "u",
            UpdateTaskRequest {
                task: Some(Task {
                    id: t.id.clone(),
                    title: "v2".into(),
                    etag: t.etag.clone(),
                    ..Task::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["title".into()],
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let err = c
        .update_task(as_user(
            "u",
            UpdateTaskRequest {
                task: Some(Task {
                    id: t.id.clone(),
                    title: "v3".into(),
                    etag: t.etag.clone(),
                    ..Task::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["title".into()],
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    for e in [
        c.complete_task(as_user(
            "u",
            CompleteTaskRequest {
                id: t.id.clone(),
                etag: t.etag.clone(),
            },
        ))
        .await
        .unwrap_err(),
        c.delete_task(as_user(
            "u",
            DeleteTaskRequest {
                id: t.id.clone(),
                etag: t.etag.clone(),
            },
        ))
        .await
        .unwrap_err(),
    ] {
        assert_eq!(e.code(), Code::Aborted);
    }
    let now = c
        .get_task(as_user("u", GetTaskRequest { id: t.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now, v2);
}

async fn create_with_the_same_request_id_is_idempotent(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut c = app.client().await;
    let rid = uuid::Uuid::new_v4().to_string();
    let req = CreateTaskRequest {
        task: Some(new_task("once")),
        request_id: rid.clone(),
        ..Default::default()
    };
    let a = c
        .create_task(as_user("u", req.clone()))
        .await
        .unwrap()
        .into_inner();
    let b = c
        .create_task(as_user("u", req.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a, b);
    // Concurrent retries too.
    let mut handles = Vec::new();
    for _ in 0..8 {
        let mut c = app.client().await;
        let req = CreateTaskRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            ..req.clone()
        };
        let r2 = req.clone();
        handles.push(tokio::spawn(async move {
            let x = c.create_task(as_user("u", req)).await.unwrap().into_inner();
            let y = c.create_task(as_user("u", r2)).await.unwrap().into_inner();
            assert_eq!(x.id, y.id);
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(count(&app, "u").await, 9);
    // The same key from another user is another task.
    let other = c.create_task(as_user("v", req)).await.unwrap().into_inner();
    assert_ne!(other.id, a.id);
}

/// Creates racing in one group commit: 60 at once from one user (one writer lane), 20
/// request ids each sent three times, every task with two tags. Their rows are inserted
/// together at the group's end, where a repeated request id fails; the group then runs
/// again, each create in a savepoint, and the repeats are answered with the task that won.
/// So: every request id made one task, all three callers got it, its tags are indexed once,
/// and its one change is in the outbox once, numbered in the user's sequence in the order
/// the outbox holds the changes.
async fn racing_creates_share_a_commit_and_one_request_id_makes_one_task(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut calls = tokio::task::JoinSet::new();
    let rids: Vec<String> = (0..20).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for round in 0..3 {
        for (i, rid) in rids.iter().enumerate() {
            let mut c = app.client().await;
            let req = CreateTaskRequest {
                task: Some(Task {
                    tags: vec!["race".into(), format!("r{i}")],
                    ..new_task(&format!("race {i}"))
                }),
                request_id: rid.clone(),
                ..Default::default()
            };
            calls.spawn(async move {
                let t = c.create_task(as_user("u", req)).await;
                (i, round, t.map(|t| t.into_inner()))
            });
        }
    }
    let mut ids: Vec<Option<String>> = vec![None; rids.len()];
    while let Some(joined) = calls.join_next().await {
        let (i, round, t) = joined.unwrap();
        let t = t.unwrap_or_else(|e| panic!("create {i} (round {round}): {e}"));
        assert_eq!(t.title, format!("race {i}"));
        let first = ids[i].get_or_insert_with(|| t.id.clone());
        assert_eq!(*first, t.id, "request id {i} made two tasks");
    }
    assert_eq!(count(&app, "u").await, rids.len());
    let race = tagged(&app, "race").await;
    assert_eq!(race.len(), rids.len(), "each task indexed once by its tag");
    for (i, id) in ids.iter().enumerate() {
        let own = tagged(&app, &format!("r{i}")).await;
        assert_eq!(
            own.iter().map(|t| Some(t.id.clone())).collect::<Vec<_>>(),
            vec![id.clone()]
        );
    }
    // The outbox (no sidecar here: nothing was published) holds one change notice per task,
    // numbered 1, 2, … in the order of the rows, and one created event per task.
    let db = &app.app.as_ref().unwrap().db;
    let rows = outbox::Entity::find()
        .filter(outbox::Column::PartitionKey.eq("u"))
        .order_by_asc(outbox::Column::Seq)
        .all(db)
        .await
        .unwrap();
    let notices: Vec<TaskChanged> = rows
        .iter()
        .filter(|r| r.event_type == todo_topology::event_types::TASK_CHANGED)
        .map(|r| TaskChanged::decode(r.payload.as_slice()).unwrap())
        .collect();
    assert_eq!(
        notices.iter().map(|n| n.user_seq).collect::<Vec<_>>(),
        (1..=rids.len() as u64).collect::<Vec<_>>()
    );
    let mut created: Vec<String> = rows
        .iter()
        .filter(|r| r.event_type == todo_topology::event_types::TASK_CREATED)
        .map(|r| {
            TaskEvent::decode(r.payload.as_slice())
                .unwrap()
                .task
                .unwrap()
                .id
        })
        .collect();
    created.sort();
    let mut expected: Vec<String> = ids.into_iter().map(Option::unwrap).collect();
    expected.sort();
    assert_eq!(created, expected, "one created event per task");
}

/// `u`'s tasks with `tag` (one page: tests make fewer than 1,000).
async fn tagged(app: &TestApp, tag: &str) -> Vec<Task> {
    app.client()
        .await
        .list_tasks(as_user(
            "u",
            ListTasksRequest {
                page_size: 1000,
                tag: tag.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .tasks
}

async fn a_restart_keeps_the_data(backend: Backend) {
    let mut app = TestApp::start(backend).await;
    let mut c = app.client().await;
    let t = c
        .create_task(as_user("u", create(new_task("durable"))))
        .await
        .unwrap()
        .into_inner();
    app.restart().await;
    let mut c = app.client().await;
    let got = c
        .get_task(as_user("u", GetTaskRequest { id: t.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, t);
}

on_both_databases!(2;
    every_rpc_round_trips,
    stale_etag_is_aborted_and_changes_nothing,
    create_with_the_same_request_id_is_idempotent,
    racing_creates_share_a_commit_and_one_request_id_makes_one_task,
    a_restart_keeps_the_data,
);
