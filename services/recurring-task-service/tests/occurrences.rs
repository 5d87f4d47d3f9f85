//! recurring-task-service end to end: task events through the real daprd and Kafka in,
//! occurrence requests and dead letters out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Stack, Tokens, at, completed, config, daily, task};
use dapr_appcallback::proto::{
    TopicEventRequest, app_callback_client::AppCallbackClient,
    topic_event_response::TopicEventResponseStatus,
};
use prost::Message;
use recurring_task_service::{completions::StatsSnapshot, occurrence::occurrence_task_id};
use todo_harness::health;
use todo_proto::{
    to_timestamp,
    todo::{
        events::v1::TaskEvent,
        v1::{Recurrence, Reminder, reminder::When},
    },
};
use todo_topology::{components::PUBSUB, event_types, topics};
use tonic_health::pb::health_check_response::ServingStatus;

fn uuid(s: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_completed_daily_task_requests_its_next_occurrence() {
    let mut stack = Stack::start(Tokens::None).await;
    let addr = stack.app().addr;
    assert_eq!(health(addr, "").await.unwrap(), ServingStatus::Serving);
    assert_eq!(
        health(addr, "dapr.proto.runtime.v1.AppCallback")
            .await
            .unwrap(),
        ServingStatus::Serving
    );

    let mut t = task("alice", Some(daily()));
    t.reminders = vec![
        Reminder {
            when: Some(When::BeforeDue(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            })),
        },
        Reminder {
            when: Some(When::At(to_timestamp(at("2029-12-31T20:00:00Z")))),
        },
    ];
    let e = completed(t.clone());
    stack.publish(&e).await;

    let got = stack.occurrences(1).await;
    let o = &got[0];
    assert_eq!(o.user_id, "alice");
    assert_eq!(o.task_id, occurrence_task_id(uuid(&t.id), 1).to_string());
    assert_eq!(uuid(&o.task_id).get_version_num(), 5);
    assert_eq!(o.series_id, t.id, "the first task is its own series");
    assert_eq!(o.parent_task_id, t.id);
    assert_eq!(o.occurrence_index, 1);
    // 09:00 Europe/Berlin on the next day.
    assert_eq!(o.due_time, Some(to_timestamp(at("2030-01-02T08:00:00Z"))));
    let template = o.template.as_ref().unwrap();
    assert_eq!(template.title, t.title);
    assert_eq!(template.description, t.description);
    assert_eq!(template.priority, t.priority);
    assert_eq!(template.tags, t.tags);
    assert_eq!(template.time_zone, t.time_zone);
    assert_eq!(template.recurrence, t.recurrence);
    assert_eq!(
        template.reminders,
        t.reminders[..1],
        "the relative reminder"
    );
    assert_eq!(uuid(&o.event_id).get_version_num(), 7);

    let stats = stack.handled(1).await;
    assert_eq!(
        stats,
        StatsSnapshot {
            published: 1,
            ..StatsSnapshot::default()
        }
    );
    stack.shutdown().await;
}

/// At-least-once delivery: the same completion twice names the same next task twice, and
/// task-service's `INSERT .. ON CONFLICT (id) DO NOTHING` creates it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivered_completion_requests_the_same_task_again() {
    let stack = Stack::start(Tokens::None).await;
    let mut t = task("bob", Some(daily()));
    t.occurrence_index = 6;
    t.series_id = uuid::Uuid::now_v7().to_string();
    let e = completed(t.clone());
    let bytes = e.encode_to_vec();
    stack
        .publish_bytes(event_types::TASK_COMPLETED, "bob", bytes.clone())
        .await;
    stack
        .publish_bytes(event_types::TASK_COMPLETED, "bob", bytes)
        .await;

    let got = stack.occurrences(2).await;
    let expected = occurrence_task_id(uuid(&t.series_id), 7).to_string();
    assert_eq!(got[0].task_id, expected);
    assert_eq!(got[1].task_id, expected);
    assert_eq!(got[0].series_id, t.series_id);
    assert_eq!(got[0].occurrence_index, 7);
    assert_eq!(got[0].due_time, got[1].due_time);
    assert_eq!(got[0].template, got[1].template);
    assert_ne!(
        got[0].event_id, got[1].event_id,
        "two publishes, two events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_off_tasks_ended_series_and_other_event_types_publish_nothing() {
    let stack = Stack::start(Tokens::None).await;
    let one_off = completed(task("carol", None));
    // Index 2 is the third task: with count 3 it was the last.
    let mut last = task(
        "carol",
        Some(Recurrence {
            count: 3,
            ..daily()
        }),
    );
    last.occurrence_index = 2;
    let ended = completed(last);
    let mut created = completed(task("carol", Some(daily())));
    created.kind = todo_proto::todo::events::v1::TaskEventKind::Created as i32;
    let recurring = task("carol", Some(daily()));
    for e in [&one_off, &ended, &created, &completed(recurring.clone())] {
        stack.publish(e).await;
    }

    // Every delivery answered, and only the recurring task asked for a next one.
    let stats = stack.handled(4).await;
    let got = stack.occurrences(1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].parent_task_id, recurring.id);
    assert_eq!(
        stats,
        StatsSnapshot {
            published: 1,
            nothing_to_do: 2,
            not_ours: 1,
            dropped: 0,
            retried: 0,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_events_land_on_the_dead_letter_topic_and_the_rest_flow() {
    // With tokens both ways: daprd → app needs APP_API_TOKEN, app → daprd DAPR_API_TOKEN.
    let stack = Stack::start(Tokens::Both).await;
    let mut stolen = task("mallory", Some(daily()));
    stolen.user_id = "dave".to_owned();
    let mut wrong_user = completed(stolen);
    wrong_user.user_id = "mallory".to_owned();
    let bad_rule = completed(task(
        "dave",
        Some(Recurrence {
            rrule: "FREQ=SOMETIMES".to_owned(),
            ..Recurrence::default()
        }),
    ));
    let garbage = vec![0xff_u8, 0xff, 0xff, 0xff, 0x01];
    let valid = task("dave", Some(daily()));

    stack.publish(&wrong_user).await;
    stack.publish(&bad_rule).await;
    stack
        .publish_bytes(event_types::TASK_COMPLETED, "dave", garbage.clone())
        .await;
    stack.publish(&completed(valid.clone())).await;

    let dead = stack.dead_letters(3).await;
    let bodies: Vec<&Vec<u8>> = dead.iter().map(|(_, b)| b).collect();
    assert!(bodies.contains(&&wrong_user.encode_to_vec()), "wrong user");
    assert!(bodies.contains(&&bad_rule.encode_to_vec()), "bad rule");
    assert!(bodies.contains(&&garbage), "garbage");
    assert!(
        dead.iter().all(|(ty, _)| ty == event_types::TASK_COMPLETED),
        "type kept"
    );
    let got = stack.occurrences(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].parent_task_id, valid.id);
    // The garbage is counted too: taken in bulk, the service decodes it itself.
    let stats = stack.handled(4).await;
    assert_eq!(
        (stats.published, stats.dropped, stats.retried),
        (1, 3, 0),
        "{stats:?}"
    );
}

/// The answers themselves, over the app's real gRPC port, with the sidecar away: a
/// transient publish failure is RETRY, the rest as for the pipe. No daprd needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_app_callback_answers_say_what_happened_even_without_a_sidecar() {
    todo_telemetry::init("info");
    let prefix = todo_harness::unique("rts");
    // Nothing listens there: every publish fails with UNAVAILABLE.
    let nowhere = format!("http://127.0.0.1:{}", todo_harness::free_port().unwrap());
    let cfg = config(&[
        (topics::PREFIX_VAR, prefix.as_str()),
        ("DAPR_GRPC_ENDPOINT", nowhere.as_str()),
        ("PUBLISH_TIMEOUT_MS", "2000"),
    ]);
    let topic = cfg.common.topics().task_events;
    let app = recurring_task_service::build(cfg).await.unwrap();
    let mut client = AppCallbackClient::connect(format!("http://{}", app.addr))
        .await
        .unwrap();

    let subs = client
        .list_topic_subscriptions(())
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].topic, topic);
    assert_eq!(
        subs[0].dead_letter_topic,
        format!("{prefix}.{}", topics::dead_letter(topics::TASK_EVENTS))
    );

    let deliver = |event_type: &str, data: Vec<u8>| TopicEventRequest {
        id: uuid::Uuid::now_v7().to_string(),
        r#type: event_type.to_owned(),
        topic: topic.clone(),
        pubsub_name: PUBSUB.to_owned(),
        data,
        ..TopicEventRequest::default()
    };
    let recurring = completed(task("erin", Some(daily())));
    let mut wrong_user = completed(task("erin", Some(daily())));
    wrong_user.user_id = "mallory".to_owned();
    let cases: [(&str, TopicEventRequest, TopicEventResponseStatus); 6] = [
        (
            "recurring, sidecar away",
            deliver(event_types::TASK_COMPLETED, recurring.encode_to_vec()),
            TopicEventResponseStatus::Retry,
        ),
        (
            "one-off",
            deliver(
                event_types::TASK_COMPLETED,
                completed(task("erin", None)).encode_to_vec(),
            ),
            TopicEventResponseStatus::Success,
        ),
        (
            "wrong user",
            deliver(event_types::TASK_COMPLETED, wrong_user.encode_to_vec()),
            TopicEventResponseStatus::Drop,
        ),
        (
            "garbage",
            deliver(event_types::TASK_COMPLETED, vec![0xff, 0xff, 0x01]),
            TopicEventResponseStatus::Drop,
        ),
        (
            "another task event type",
            deliver(
                event_types::TASK_UPDATED,
                TaskEvent::default().encode_to_vec(),
            ),
            TopicEventResponseStatus::Success,
        ),
        (
            "an unknown type",
            deliver("todo.task.completed.v2", recurring.encode_to_vec()),
            TopicEventResponseStatus::Drop,
        ),
    ];
    for (what, request, want) in cases {
        let got = client
            .on_topic_event(request)
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(got, want, "{what}");
    }
    assert_eq!(
        app.stats(),
        StatsSnapshot {
            published: 0,
            nothing_to_do: 1,
            not_ours: 1,
            // The garbage too: taken in bulk, the service decodes (and counts) it itself.
            dropped: 3,
            retried: 1,
        }
    );

    // Graceful shutdown with a client connected.
    tokio::time::timeout(std::time::Duration::from_secs(10), app.shutdown())
        .await
        .expect("shutdown within 10 s")
        .unwrap();
}
