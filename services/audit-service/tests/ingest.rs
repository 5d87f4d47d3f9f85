//! audit-service on the real stack (Kafka, daprd with bulk subscribe, SQLite and
//! PostgreSQL): what each event becomes, exactly once, in the order things happened; what
//! its readers may see; where refused events go.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::HashSet, time::Duration};

use chrono::Utc;
use common::{Stack, activity, as_user, outgoing, reminder_event, task, task_event, task_history};
use prost::Message;
use todo_harness::{Backend, on_both_databases, unique};
use todo_proto::todo::{
    audit::v1::{ListActivityRequest, ListTaskActivityRequest},
    events::v1::{TaskEvent, TaskEventKind},
    v1::Priority,
};
use todo_topology::event_types;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(60);

/// One task's life, published as task-service would, with an update that arrives before
/// the completion that happened after it, a garbage event and an unknown version in the
/// middle of the batch, then the same update again (a redelivery with a new CloudEvent id).
async fn a_tasks_history_is_stored_once_in_order_with_before_and_after(backend: Backend) {
    let stack = Stack::start(backend).await;
    let user = unique("alice");
    let id = uuid::Uuid::now_v7().to_string();
    let t0 = Utc::now() - chrono::Duration::seconds(60);
    let at = |s: i64| t0 + chrono::Duration::seconds(s);

    let v1 = task(&user, &id, "buy milk", 1);
    let mut v2 = task(&user, &id, "buy oat milk", 2);
    v2.priority = Priority::High as i32;
    let v3 = task(&user, &id, "buy oat milk", 3);
    let created = task_event(TaskEventKind::Created, &v1, &[], at(0));
    let scheduled = reminder_event(event_types::REMINDER_SCHEDULED, &v1, at(1));
    let updated = task_event(TaskEventKind::Updated, &v2, &["title", "priority"], at(2));
    let completed = task_event(TaskEventKind::Completed, &v3, &[], at(3));
    let deleted = task_event(TaskEventKind::Deleted, &v3, &[], at(4));
    let garbage = (
        event_types::TASK_CREATED,
        vec![0xff, 0xff, 0xff],
        String::new(),
    );
    let v2_type = ("todo.task.created.v2", created.1.clone(), String::new());

    let te = &stack.topics.task_events;
    let batch = vec![
        outgoing(te, &user, &created),
        // Arrives before the update although it happened after it.
        outgoing(te, &user, &completed),
        outgoing(te, &user, &garbage),
        outgoing(te, &user, &v2_type),
        outgoing(te, &user, &updated),
        outgoing(te, &user, &deleted),
    ];
    let failed = stack.publisher.publish_bulk(&batch).await.unwrap();
    assert!(failed.failed.is_empty(), "{failed:?}");
    stack
        .publisher
        .publish(&outgoing(&stack.topics.reminders, &user, &scheduled))
        .await
        .unwrap();

    // Both refused events reach the dead-letter topic, and everything else is stored.
    let dead = stack
        .dead_letters
        .inbox
        .wait_for(&stack.topics.task_events_dead_letter, 2)
        .await;
    let dead_types: HashSet<_> = dead.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        dead_types,
        HashSet::from([event_types::TASK_CREATED, "todo.task.created.v2"])
    );
    let mut client = stack.client().await;
    common::wait_entries(&mut client, &user, 5, WAIT).await;

    // A redelivery (same event, new CloudEvent id) is counted and stores nothing.
    let before = stack.stats();
    stack
        .publisher
        .publish(&outgoing(te, &user, &updated))
        .await
        .unwrap();
    stack
        .wait_stats("the duplicate", WAIT, |s| s.duplicates > before.duplicates)
        .await;
    let stats = stack.stats();
    assert_eq!(stats.recorded, 5, "{stats:?}");
    assert_eq!(stats.dropped, 2, "{stats:?}");

    // The history, in the order things happened, readable after the task was deleted.
    let history = task_history(&mut client, &user, &id).await.unwrap();
    let kinds: Vec<_> = history.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(
        kinds,
        [
            event_types::TASK_CREATED,
            event_types::REMINDER_SCHEDULED,
            event_types::TASK_UPDATED,
            event_types::TASK_COMPLETED,
            event_types::TASK_DELETED,
        ]
    );
    let ids: Vec<_> = history.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            created.2.as_str(),
            scheduled.2.as_str(),
            updated.2.as_str(),
            completed.2.as_str(),
            deleted.2.as_str()
        ]
    );
    let update = &history[2];
    let changes: Vec<_> = update
        .changes
        .iter()
        .map(|c| (c.field.as_str(), c.before.as_str(), c.after.as_str()))
        .collect();
    assert_eq!(
        changes,
        [
            ("title", "\"buy milk\"", "\"buy oat milk\""),
            ("priority", "\"PRIORITY_MEDIUM\"", "\"PRIORITY_HIGH\""),
        ]
    );
    for e in &history {
        assert_eq!(e.user_id, user);
        assert_eq!(e.task_id, id);
        assert!(e.recorded_at.is_some() && e.occurred_at.is_some());
        assert_eq!(e.trace_id.len(), 32, "a W3C trace id: {e:?}");
    }
    assert_eq!(history[0].actor, format!("user:{user}"));
    assert_eq!(history[1].actor, "service:task-service");
    assert_eq!(
        history[1].reminder.as_ref().map(|r| r.task_title.as_str()),
        Some("buy milk")
    );
    assert_eq!(
        history[4].task.as_ref().map(|t| t.title.as_str()),
        Some("buy oat milk")
    );

    // Nobody else sees it; a bad id names its field.
    let other = client
        .list_task_activity(as_user(
            &unique("mallory"),
            ListTaskActivityRequest {
                task_id: id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::NotFound, "{other:?}");
    let bad = client
        .list_task_activity(as_user(
            &user,
            ListTaskActivityRequest {
                task_id: "not-a-uuid".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("task_id"), "{bad:?}");

    // The caller's activity: by type, by window; bad filters name their field.
    let updates = activity(
        &mut client,
        &user,
        ListActivityRequest {
            types: vec![event_types::TASK_UPDATED.into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(updates.len(), 1);
    assert_eq!(
        updates[0].changes.len(),
        2,
        "before/after in ListActivity too"
    );
    let window = activity(
        &mut client,
        &user,
        ListActivityRequest {
            since: Some(todo_proto::to_timestamp(at(1))),
            until: Some(todo_proto::to_timestamp(at(3))),
            page_size: 1,
            ..Default::default()
        },
    )
    .await;
    let window: Vec<_> = window.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(window, [scheduled.2.as_str(), updated.2.as_str()]);
    for (req, field) in [
        (
            ListActivityRequest {
                types: vec!["todo.task.archived.v1".into()],
                ..Default::default()
            },
            "types[0]",
        ),
        (
            ListActivityRequest {
                since: Some(todo_proto::to_timestamp(at(3))),
                until: Some(todo_proto::to_timestamp(at(1))),
                ..Default::default()
            },
            "until",
        ),
        (
            ListActivityRequest {
                page_token: "garbage".into(),
                ..Default::default()
            },
            "page_token",
        ),
    ] {
        let err = client.list_activity(as_user(&user, req)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(err.message().starts_with(field), "{field}: {err:?}");
    }
    // The stored payload is the event as published.
    assert_eq!(
        TaskEvent::decode(created.1.as_slice()).unwrap().event_id,
        history[0].event_id
    );
}

on_both_databases!(4; a_tasks_history_is_stored_once_in_order_with_before_and_after);
