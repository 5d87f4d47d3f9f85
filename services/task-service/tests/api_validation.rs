//! The Task API on SQLite and on PostgreSQL: bad input is INVALID_ARGUMENT naming its
//! field, and writes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use todo_harness::on_both_databases;

use prost_types::{Duration, FieldMask};
use todo_proto::todo::v1::{
    CreateTaskRequest, Frequency, GetTaskRequest, ListTasksRequest, Recurrence, Reminder, Task,
    UpdateTaskRequest, reminder::When,
};

use common::{Backend, TestApp, api::*, as_user};

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

on_both_databases!(2;
    each_invalid_request_names_its_field_and_writes_nothing,
);
