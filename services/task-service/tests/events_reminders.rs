//! Reminder events from task-service's scheduler, read back through daprd and Kafka: once
//! near their moment, moved with the due time, cancelled on completion, once across
//! replicas.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;
#[path = "common/events.rs"]
mod stack;

use std::time::Duration;

use prost::Message;
use prost_types::FieldMask;
use todo_harness::unique;
use todo_proto::todo::{
    events::v1::ReminderEvent, v1::CompleteTaskRequest, v1::CreateTaskRequest, v1::Reminder,
    v1::Task, v1::UpdateTaskRequest, v1::reminder::When,
    v1::task_service_client::TaskServiceClient,
};
use todo_topology::event_types;

use common::{Backend, as_user};
use stack::{Stack, stack_config};

/// Reminder events of `user` received so far: (CloudEvent type, event), first delivery each.
fn reminder_events(stack: &Stack, user: &str) -> Vec<(String, ReminderEvent)> {
    let mut seen = std::collections::HashSet::new();
    stack
        .recorder
        .inbox
        .on(&stack.topics.reminders)
        .into_iter()
        .map(|(ty, b)| (ty, ReminderEvent::decode(b.as_slice()).unwrap()))
        .filter(|(_, e)| e.user_id == user && seen.insert(e.event_id.clone()))
        .collect()
}

async fn wait_reminders(
    stack: &Stack,
    user: &str,
    pred: impl Fn(&[(String, ReminderEvent)]) -> bool,
) -> Vec<(String, ReminderEvent)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = reminder_events(stack, user);
        if pred(&got) {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reminder events so far: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn count(events: &[(String, ReminderEvent)], ty: &str) -> usize {
    events.iter().filter(|(t, _)| t == ty).count()
}

fn due_in(secs: i64) -> prost_types::Timestamp {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reminder_fires_once_near_its_moment_moves_with_the_due_time_and_completion_cancels() {
    let stack = Stack::start(Backend::Sqlite, None).await;
    let mut c = stack.client().await;
    let user = unique("rem");

    // Due in 4 s, reminded 2 s before: scheduled, then due once, with its lateness.
    let t = c
        .create_task(as_user(
            &user,
            CreateTaskRequest {
                task: Some(Task {
                    title: "call mum".into(),
                    due_time: Some(due_in(4)),
                    reminders: vec![before_due(2)],
                    ..Task::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let got = wait_reminders(&stack, &user, |e| count(e, event_types::REMINDER_DUE) >= 1).await;
    assert_eq!(count(&got, event_types::REMINDER_SCHEDULED), 1);
    let (_, due) = got
        .iter()
        .find(|(t, _)| t == event_types::REMINDER_DUE)
        .unwrap();
    assert_eq!(due.task_id, t.id);
    assert_eq!(due.task_title, "call mum");
    let lateness = due.lateness.unwrap();
    assert!(
        lateness.seconds < 5,
        "fired close to its moment: {lateness:?}"
    );

    // Move the due time: the old reminder is cancelled, the new one fires at the new time.
    let t2 = c
        .create_task(as_user(
            &user,
            CreateTaskRequest {
                task: Some(Task {
                    title: "move me".into(),
                    due_time: Some(due_in(60)),
                    reminders: vec![before_due(1)],
                    ..Task::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    c.update_task(as_user(
        &user,
        UpdateTaskRequest {
            task: Some(Task {
                id: t2.id.clone(),
                due_time: Some(due_in(3)),
                ..Task::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["due_time".into()],
            }),
        },
    ))
    .await
    .unwrap();
    let got = wait_reminders(&stack, &user, |e| count(e, event_types::REMINDER_DUE) >= 2).await;
    let for_t2: Vec<&(String, ReminderEvent)> =
        got.iter().filter(|(_, e)| e.task_id == t2.id).collect();
    let types: Vec<&str> = for_t2.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            event_types::REMINDER_SCHEDULED,
            event_types::REMINDER_CANCELLED,
            event_types::REMINDER_SCHEDULED,
            event_types::REMINDER_DUE
        ]
    );
    assert_eq!(for_t2[1].1.reason, "rescheduled");
    assert_eq!(for_t2[1].1.reminder_id, for_t2[0].1.reminder_id);
    assert_eq!(for_t2[3].1.reminder_id, for_t2[2].1.reminder_id);

    // Renamed after its reminder was scheduled: the reminder is kept (same moment) and
    // fires under the new name.
    let t4 = c
        .create_task(as_user(
            &user,
            CreateTaskRequest {
                task: Some(Task {
                    title: "old name".into(),
                    due_time: Some(due_in(4)),
                    reminders: vec![before_due(2)],
                    ..Task::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    c.update_task(as_user(
        &user,
        UpdateTaskRequest {
            task: Some(Task {
                id: t4.id.clone(),
                title: "new name".into(),
                ..Task::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["title".into()],
            }),
        },
    ))
    .await
    .unwrap();

    // Completed before its moment: cancelled, never due.
    let t3 = c
        .create_task(as_user(
            &user,
            CreateTaskRequest {
                task: Some(Task {
                    title: "done early".into(),
                    due_time: Some(due_in(4)),
                    reminders: vec![before_due(1)],
                    ..Task::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    c.complete_task(as_user(
        &user,
        CompleteTaskRequest {
            id: t3.id.clone(),
            etag: String::new(),
        },
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let got = wait_reminders(&stack, &user, |e| count(e, event_types::REMINDER_DUE) >= 3).await;
    let for_t3: Vec<&str> = got
        .iter()
        .filter(|(_, e)| e.task_id == t3.id)
        .map(|(t, _)| t.as_str())
        .collect();
    assert_eq!(
        for_t3,
        [
            event_types::REMINDER_SCHEDULED,
            event_types::REMINDER_CANCELLED
        ]
    );
    let for_t4: Vec<&(String, ReminderEvent)> =
        got.iter().filter(|(_, e)| e.task_id == t4.id).collect();
    let types: Vec<&str> = for_t4.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [event_types::REMINDER_SCHEDULED, event_types::REMINDER_DUE],
        "a rename keeps the reminder"
    );
    assert_eq!(for_t4[0].1.task_title, "old name");
    assert_eq!(
        for_t4[1].1.task_title, "new name",
        "fires under the new name"
    );
    assert_eq!(
        count(&got, event_types::REMINDER_DUE),
        3,
        "no other reminder fired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_postgres_publish_each_of_500_reminders_once() {
    let stack = Stack::start(Backend::Postgres, None).await;
    // A second replica on the same database, publishing through the same sidecar.
    let second = task_service::build(stack_config(
        &stack.url,
        stack.sidecar.grpc_port,
        &stack.topics,
    ))
    .await
    .unwrap();
    let user = unique("rep");
    let at = todo_proto::to_timestamp(chrono::Utc::now() + chrono::Duration::seconds(8));
    let mut handles = Vec::new();
    for (k, addr) in [stack.app.as_ref().unwrap().addr, second.addr]
        .into_iter()
        .enumerate()
    {
        let user = user.clone();
        handles.push(tokio::spawn(async move {
            let mut c = TaskServiceClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            for i in 0..250 {
                c.create_task(as_user(
                    &user,
                    CreateTaskRequest {
                        task: Some(Task {
                            title: format!("{k}-{i}"),
                            reminders: vec![Reminder {
                                when: Some(When::At(at)),
                            }],
                            ..Task::default()
                        }),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let got = wait_reminders(&stack, &user, |e| {
        count(e, event_types::REMINDER_DUE) >= 500
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all_due: Vec<ReminderEvent> = stack
        .recorder
        .inbox
        .on(&stack.topics.reminders)
        .into_iter()
        .filter(|(t, _)| t == event_types::REMINDER_DUE)
        .map(|(_, b)| ReminderEvent::decode(b.as_slice()).unwrap())
        .filter(|e| e.user_id == user)
        .collect();
    let distinct: std::collections::HashSet<&str> =
        all_due.iter().map(|e| e.reminder_id.as_str()).collect();
    assert_eq!(distinct.len(), 500, "every reminder fired");
    assert_eq!(
        all_due.len(),
        500,
        "and each exactly once, though both replicas ran a scheduler"
    );
    assert_eq!(count(&got, event_types::REMINDER_SCHEDULED), 500);
    second.shutdown().await.unwrap();
}
