//! The reminder policy on the real stack (daprd, Kafka, SQLite): the soon-due rule (issue 11
//! item 1) and default reminders for a due time added later (item 2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/live.rs"]
mod live;

use std::time::Duration;

use common::{Backend, as_user};
use live::{Feeder, Live};
use prost::Message;
use prost_types::FieldMask;
use todo_harness::unique;
use todo_proto::todo::{
    events::v1::{OccurrenceRequested, ReminderEvent},
    v1::{CreateTaskRequest, GetTaskRequest, Reminder, Task, UpdateTaskRequest, reminder::When},
};
use todo_topology::event_types;

fn in_secs(secs: i64) -> prost_types::Timestamp {
    todo_proto::to_timestamp(chrono::Utc::now() + chrono::Duration::seconds(secs))
}

fn before_due(secs: i64) -> Reminder {
    Reminder {
        when: Some(When::BeforeDue(prost_types::Duration {
            seconds: secs,
            nanos: 0,
        })),
    }
}

fn create(
    title: &str,
    due: Option<prost_types::Timestamp>,
    reminders: Vec<Reminder>,
) -> CreateTaskRequest {
    CreateTaskRequest {
        task: Some(Task {
            title: title.into(),
            due_time: due,
            reminders,
            ..Task::default()
        }),
        ..Default::default()
    }
}

fn set_due(task: &Task, due: prost_types::Timestamp) -> UpdateTaskRequest {
    UpdateTaskRequest {
        task: Some(Task {
            id: task.id.clone(),
            due_time: Some(due),
            ..Task::default()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["due_time".into()],
        }),
    }
}

fn of<'a>(events: &'a [(String, ReminderEvent)], task: &str, ty: &str) -> Vec<&'a ReminderEvent> {
    events
        .iter()
        .filter(|(t, e)| t == ty && e.task_id == task)
        .map(|(_, e)| e)
        .collect()
}

/// A reminder that fired for `task`: close to now (it was not waiting for a past moment).
fn assert_fired_promptly(events: &[(String, ReminderEvent)], task: &Task) {
    let due = of(events, &task.id, event_types::REMINDER_DUE);
    assert_eq!(due.len(), 1, "one reminder for {}: {events:?}", task.title);
    assert_eq!(due[0].due_time, task.due_time, "for the current due time");
    assert!(due[0].lateness.unwrap().seconds < 10, "{:?}", due[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_due_soon_on_the_default_reminders_is_reminded_now() {
    let live = Live::start(Backend::Sqlite).await;
    let mut c = live.client().await;
    let user = unique("soon");

    // The caller's own reminder (1 h before, already past) is never topped up.
    let explicit = c
        .create_task(as_user(
            &user,
            create("explicit", Some(in_secs(1800)), vec![before_due(3600)]),
        ))
        .await
        .unwrap()
        .into_inner();
    // On create: due in 30 min, both defaults (24 h, 1 h before) are past: reminded now.
    let created = c
        .create_task(as_user(
            &user,
            create("due in 30 min", Some(in_secs(1800)), vec![]),
        ))
        .await
        .unwrap()
        .into_inner();
    let got = live
        .wait_reminders(&user, |e| {
            !of(e, &created.id, event_types::REMINDER_DUE).is_empty()
        })
        .await;
    assert_fired_promptly(&got, &created);

    // On a due-time change: due in 3 h (the 1 h default is ahead: scheduled, nothing now),
    // then moved to 20 min: the 1 h reminder is cancelled and one fires now.
    let moved = c
        .create_task(as_user(
            &user,
            create("moved closer", Some(in_secs(3 * 3600)), vec![]),
        ))
        .await
        .unwrap()
        .into_inner();
    let moved = c
        .update_task(as_user(&user, set_due(&moved, in_secs(1200))))
        .await
        .unwrap()
        .into_inner();
    let got = live
        .wait_reminders(&user, |e| {
            !of(e, &moved.id, event_types::REMINDER_DUE).is_empty()
        })
        .await;
    assert_fired_promptly(&got, &moved);
    assert_eq!(
        of(&got, &moved.id, event_types::REMINDER_CANCELLED).len(),
        1,
        "{got:?}"
    );

    // On a next occurrence of a series on the defaults, due in 15 min.
    let parent = c
        .create_task(as_user(
            &user,
            create("series", Some(in_secs(3 * 3600)), vec![]),
        ))
        .await
        .unwrap()
        .into_inner();
    let next_id = uuid::Uuid::new_v4().to_string();
    let request = OccurrenceRequested {
        event_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: Some(in_secs(0)),
        user_id: user.clone(),
        task_id: next_id.clone(),
        series_id: parent.id.clone(),
        parent_task_id: parent.id.clone(),
        occurrence_index: 1,
        due_time: Some(in_secs(900)),
        template: Some(Task {
            title: "series".into(),
            reminders: parent.reminders.clone(),
            recurrence: Some(todo_proto::todo::v1::Recurrence {
                frequency: todo_proto::todo::v1::Frequency::Daily as i32,
                ..Default::default()
            }),
            ..Task::default()
        }),
    };
    let feeder = Feeder::start().await;
    feeder
        .send(
            &live.topics.task_occurrences,
            event_types::OCCURRENCE_REQUESTED,
            &user,
            request.encode_to_vec(),
        )
        .await;
    let got = live
        .wait_reminders(&user, |e| {
            !of(e, &next_id, event_types::REMINDER_DUE).is_empty()
        })
        .await;
    let next = c
        .get_task(as_user(
            &user,
            GetTaskRequest {
                id: next_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_fired_promptly(&got, &next);

    // Everything above went through; the explicit one stayed silent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = live.reminders(&user);
    assert!(
        got.iter().all(|(_, e)| e.task_id != explicit.id),
        "explicit reminders are the caller's: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_due_time_added_later_gets_the_default_reminders_unless_declined() {
    let live = Live::start(Backend::Sqlite).await;
    let mut c = live.client().await;
    let user = unique("later");

    let declined = c
        .create_task(as_user(
            &user,
            CreateTaskRequest {
                no_default_reminders: true,
                ..create("no defaults please", None, vec![])
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let declined = c
        .update_task(as_user(&user, set_due(&declined, in_secs(3 * 3600))))
        .await
        .unwrap()
        .into_inner();
    assert!(declined.reminders.is_empty(), "{declined:?}");

    let plain = c
        .create_task(as_user(&user, create("due date comes later", None, vec![])))
        .await
        .unwrap()
        .into_inner();
    assert!(
        plain.reminders.is_empty(),
        "no due time, no reminders shown: {plain:?}"
    );
    let due = in_secs(3 * 3600);
    let plain = c
        .update_task(as_user(&user, set_due(&plain, due)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        plain.reminders,
        [before_due(86_400), before_due(3600)],
        "the defaults"
    );
    let got = live
        .wait_reminders(&user, |e| {
            !of(e, &plain.id, event_types::REMINDER_SCHEDULED).is_empty()
        })
        .await;
    let scheduled = of(&got, &plain.id, event_types::REMINDER_SCHEDULED);
    assert_eq!(scheduled.len(), 1, "the 24 h one is past: {got:?}");
    assert_eq!(
        scheduled[0].remind_at.unwrap().seconds,
        due.seconds - 3600,
        "1 h before the new due time"
    );

    // Removing the due time again takes the defaults away (and cancels the reminder).
    let mut clear = set_due(&plain, in_secs(0));
    clear.task.as_mut().unwrap().due_time = None;
    let cleared = c
        .update_task(as_user(&user, clear))
        .await
        .unwrap()
        .into_inner();
    assert!(cleared.reminders.is_empty(), "{cleared:?}");
    live.wait_reminders(&user, |e| {
        !of(e, &plain.id, event_types::REMINDER_CANCELLED).is_empty()
    })
    .await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = live.reminders(&user);
    assert!(
        got.iter().all(|(_, e)| e.task_id != declined.id),
        "no_default_reminders is remembered: {got:?}"
    );
}
