//! The Task API over a real gRPC connection, on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use common::{Backend, TestApp, as_user, token, token_with};
use prost_types::{Duration, FieldMask, Timestamp};
use todo_proto::todo::v1::{
    CompleteTaskRequest, CreateTaskRequest, DeleteTaskRequest, Frequency, GetTaskRequest,
    ListTasksRequest, Priority, Recurrence, Reminder, ReopenTaskRequest, Task, TaskStatus,
    UpdateTaskRequest, reminder::When,
};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

fn new_task(title: &str) -> Task {
    Task {
        title: title.into(),
        ..Task::default()
    }
}

fn create(task: Task) -> CreateTaskRequest {
    CreateTaskRequest {
        task: Some(task),
        ..CreateTaskRequest::default()
    }
}

fn ts(seconds: i64) -> Timestamp {
    Timestamp { seconds, nanos: 0 }
}

/// The fields named by an INVALID_ARGUMENT's BadRequest details.
fn violated_fields(s: &Status) -> Vec<String> {
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    s.get_details_bad_request()
        .expect("BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

async fn count(app: &TestApp, user: &str) -> usize {
    let mut c = app.client().await;
    let r = c
        .list_tasks(as_user(
            user,
            ListTasksRequest {
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    r.tasks.len()
}

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

async fn pages_through_250_tasks_with_filters_and_order(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut c = app.client().await;
    for i in 0..250i64 {
        let mut t = new_task(&format!("task {i}"));
        t.priority = [1, 2, 3, 4][i as usize % 4];
        t.tags = if i % 5 == 0 {
            vec!["five".into()]
        } else {
            vec!["other".into()]
        };
        if i % 2 == 0 {
            t.due_time = Some(ts(2_000_000_000 - i * 60));
        }
        let made = c
            .create_task(as_user("pager", create(t)))
            .await
            .unwrap()
            .into_inner();
        if i % 3 == 0 {
            c.complete_task(as_user(
                "pager",
                CompleteTaskRequest {
                    id: made.id,
                    etag: String::new(),
                },
            ))
            .await
            .unwrap();
        }
    }
    // Someone else's tasks never show up.
    c.create_task(as_user("other", create(new_task("not yours"))))
        .await
        .unwrap();

    async fn all_pages(
        c: &mut todo_proto::todo::v1::task_service_client::TaskServiceClient<
            tonic::transport::Channel,
        >,
        req: ListTasksRequest,
    ) -> (Vec<Task>, usize) {
        let mut out = Vec::new();
        let mut pages = 0;
        let mut token = String::new();
        loop {
            let r = c
                .list_tasks(as_user(
                    "pager",
                    ListTasksRequest {
                        page_token: token.clone(),
                        ..req.clone()
                    },
                ))
                .await
                .unwrap()
                .into_inner();
            pages += 1;
            assert!(r.tasks.len() <= req.page_size.max(1) as usize || req.page_size == 0);
            out.extend(r.tasks);
            if r.next_page_token.is_empty() {
                return (out, pages);
            }
            token = r.next_page_token;
        }
    }

    // Default order (create time), default page size 50: 5 pages, every task once, in order.
    let (all, pages) = all_pages(&mut c, ListTasksRequest::default()).await;
    assert_eq!(all.len(), 250);
    assert_eq!(pages, 5);
    let ids: HashSet<_> = all.iter().map(|t| t.id.clone()).collect();
    assert_eq!(ids.len(), 250);
    let titles: Vec<_> = all.iter().map(|t| t.title.clone()).collect();
    assert_eq!(
        titles,
        (0..250).map(|i| format!("task {i}")).collect::<Vec<_>>()
    );

    // Due time ascending, pages of 7: tasks with a due time first (ascending), then the rest.
    let (by_due, _) = all_pages(
        &mut c,
        ListTasksRequest {
            page_size: 7,
            order_by: "due_time".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_due.len(), 250);
    let dues: Vec<i64> = by_due
        .iter()
        .filter_map(|t| t.due_time.map(|d| d.seconds))
        .collect();
    assert_eq!(dues.len(), 125);
    assert!(dues.windows(2).all(|w| w[0] <= w[1]));
    assert!(by_due[..125].iter().all(|t| t.due_time.is_some()));

    // Priority descending with a tag filter and a status filter.
    let (five_open, _) = all_pages(
        &mut c,
        ListTasksRequest {
            page_size: 9,
            order_by: "priority desc".into(),
            tag: "five".into(),
            status: TaskStatus::Open as i32,
            ..Default::default()
        },
    )
    .await;
    let expected = (0..250).filter(|i| i % 5 == 0 && i % 3 != 0).count();
    assert_eq!(five_open.len(), expected);
    assert!(
        five_open
            .iter()
            .all(|t| t.tags == vec!["five".to_owned()] && t.status == TaskStatus::Open as i32)
    );
    assert!(five_open.windows(2).all(|w| w[0].priority >= w[1].priority));

    // Priority filter and a due-time range.
    let (urgent, _) = all_pages(
        &mut c,
        ListTasksRequest {
            priority: Priority::Urgent as i32,
            page_size: 1000,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(urgent.len(), 62);
    let (ranged, _) = all_pages(
        &mut c,
        ListTasksRequest {
            due_after: Some(ts(2_000_000_000 - 100 * 60)),
            due_before: Some(ts(2_000_000_000)),
            page_size: 1000,
            ..Default::default()
        },
    )
    .await;
    // Even i in 2..=100 have due times in [t-6000, t).
    assert_eq!(ranged.len(), 50);

    // A token is tied to its query.
    let first = c
        .list_tasks(as_user(
            "pager",
            ListTasksRequest {
                page_size: 10,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let err = c
        .list_tasks(as_user(
            "pager",
            ListTasksRequest {
                page_size: 10,
                page_token: first.next_page_token,
                order_by: "priority".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_token"]);
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

async fn each_invalid_request_names_its_field_and_writes_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut c = app.client().await;
    let rel = |s: i64| Reminder {
        when: Some(When::BeforeDue(Duration {
            seconds: s,
            nanos: 0,
        })),
    };
    let cases: Vec<(Task, &str)> = vec![
        (new_task("   "), "task.title"),
        (new_task(&"x".repeat(501)), "task.title"),
        (
            Task {
                description: "d".repeat(10_001),
                ..new_task("x")
            },
            "task.description",
        ),
        (
            Task {
                tags: (0..21).map(|i| format!("t{i}")).collect(),
                ..new_task("x")
            },
            "task.tags",
        ),
        (
            Task {
                tags: vec!["y".repeat(51)],
                ..new_task("x")
            },
            "task.tags[0]",
        ),
        (
            Task {
                priority: 42,
                ..new_task("x")
            },
            "task.priority",
        ),
        (
            Task {
                time_zone: "Not/AZone".into(),
                ..new_task("x")
            },
            "task.time_zone",
        ),
        (
            Task {
                recurrence: Some(Recurrence {
                    rrule: "FREQ=SOMETIMES".into(),
                    ..Default::default()
                }),
                ..new_task("x")
            },
            "task.recurrence.rrule",
        ),
        (
            Task {
                recurrence: Some(Recurrence {
                    frequency: Frequency::Daily as i32,
                    until: Some(ts(2_000_000_000)),
                    count: 3,
                    ..Default::default()
                }),
                ..new_task("x")
            },
            "task.recurrence",
        ),
        (
            Task {
                reminders: vec![rel(60)],
                ..new_task("x")
            },
            "task.reminders",
        ),
        (
            Task {
                due_time: Some(ts(2_000_000_000)),
                reminders: vec![rel(60); 11],
                ..new_task("x")
            },
            "task.reminders",
        ),
    ];
    for (task, field) in cases {
        let err = c.create_task(as_user("u", create(task))).await.unwrap_err();
        let fields = violated_fields(&err);
        assert!(
            fields.iter().any(|f| f.starts_with(field)),
            "{field} not in {fields:?}"
        );
    }
    let err = c
        .create_task(as_user("u", CreateTaskRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["task"]);
    let err = c
        .create_task(as_user(
            "u",
            CreateTaskRequest {
                task: Some(new_task("x")),
                request_id: "nope".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["request_id"]);
    assert_eq!(count(&app, "u").await, 0, "nothing written");

    // List and id validation.
    for (req, field) in [
        (
            ListTasksRequest {
                page_size: -1,
                ..Default::default()
            },
            "page_size",
        ),
        (
            ListTasksRequest {
                page_size: 1001,
                ..Default::default()
            },
            "page_size",
        ),
        (
            ListTasksRequest {
                page_token: "garbage!".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            ListTasksRequest {
                order_by: "title".into(),
                ..Default::default()
            },
            "order_by",
        ),
        (
            ListTasksRequest {
                status: 9,
                ..Default::default()
            },
            "status",
        ),
    ] {
        let err = c.list_tasks(as_user("u", req)).await.unwrap_err();
        assert_eq!(violated_fields(&err), [field]);
    }
    let err = c
        .get_task(as_user(
            "u",
            GetTaskRequest {
                id: "not-a-uuid".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["id"]);

    // Update: unknown mask paths, no mask, and an invalid merged result change nothing.
    let t = c
        .create_task(as_user("u", create(new_task("keep"))))
        .await
        .unwrap()
        .into_inner();
    for (mask, patch, field) in [
        (vec!["status".to_owned()], Task::default(), "update_mask"),
        (vec!["nonsense".to_owned()], Task::default(), "update_mask"),
        (vec![], Task::default(), "update_mask"),
        (
            vec!["title".to_owned()],
            Task {
                title: " ".into(),
                ..Task::default()
            },
            "task.title",
        ),
        (
            vec!["reminders".to_owned()],
            Task {
                reminders: vec![rel(5)],
                ..Task::default()
            },
            "task.reminders",
        ),
    ] {
        let err = c
            .update_task(as_user(
                "u",
                UpdateTaskRequest {
                    task: Some(Task {
                        id: t.id.clone(),
                        ..patch
                    }),
                    update_mask: Some(FieldMask { paths: mask }),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&err), [field]);
    }
    let after = c
        .get_task(as_user("u", GetTaskRequest { id: t.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after, t);
}

async fn missing_bad_or_expired_credentials_are_unauthenticated(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut c = app.client().await;
    let with_auth = |value: String| {
        let mut r = Request::new(ListTasksRequest::default());
        r.metadata_mut()
            .insert("authorization", value.parse().unwrap());
        r
    };
    let cases = vec![
        Request::new(ListTasksRequest::default()),
        with_auth("Bearer not.a.jwt".into()),
        with_auth(format!("Bearer {}", token("u", -120))),
        with_auth(format!(
            "Bearer {}",
            token_with("u", 3600, "another-secret-another-secret-0000")
        )),
        with_auth(format!("Basic {}", token("u", 3600))),
    ];
    for req in cases {
        let err = c.list_tasks(req).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }
    // A dev header is not accepted outside dev mode.
    let mut r = Request::new(ListTasksRequest::default());
    r.metadata_mut().insert("x-user-id", "u".parse().unwrap());
    assert_eq!(
        c.list_tasks(r).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

async fn another_users_task_is_not_found_on_every_rpc(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut c = app.client().await;
    let t = c
        .create_task(as_user("owner", create(new_task("mine"))))
        .await
        .unwrap()
        .into_inner();
    let id = t.id.clone();
    let codes = vec![
        c.get_task(as_user("eve", GetTaskRequest { id: id.clone() }))
            .await
            .unwrap_err()
            .code(),
        c.update_task(as_user(
            "eve",
            UpdateTaskRequest {
                task: Some(Task {
                    id: id.clone(),
                    title: "pwned".into(),
                    ..Task::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["title".into()],
                }),
            },
        ))
        .await
        .unwrap_err()
        .code(),
        c.complete_task(as_user(
            "eve",
            CompleteTaskRequest {
                id: id.clone(),
                etag: String::new(),
            },
        ))
        .await
        .unwrap_err()
        .code(),
        c.reopen_task(as_user(
            "eve",
            ReopenTaskRequest {
                id: id.clone(),
                etag: String::new(),
            },
        ))
        .await
        .unwrap_err()
        .code(),
        c.delete_task(as_user(
            "eve",
            DeleteTaskRequest {
                id: id.clone(),
                etag: String::new(),
            },
        ))
        .await
        .unwrap_err()
        .code(),
    ];
    assert!(codes.iter().all(|c| *c == Code::NotFound), "{codes:?}");
    assert_eq!(count(&app, "eve").await, 0);
    let still = c
        .get_task(as_user("owner", GetTaskRequest { id }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still, t);
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

macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Postgres).await })*
        }
    };
}

on_both_databases!(
    every_rpc_round_trips,
    pages_through_250_tasks_with_filters_and_order,
    stale_etag_is_aborted_and_changes_nothing,
    create_with_the_same_request_id_is_idempotent,
    each_invalid_request_names_its_field_and_writes_nothing,
    missing_bad_or_expired_credentials_are_unauthenticated,
    another_users_task_is_not_found_on_every_rpc,
    a_restart_keeps_the_data,
);
