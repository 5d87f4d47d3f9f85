//! Bulk delivery on the real stack (Rust app → daprd → Kafka → daprd → Rust app), through
//! the path recurring-task-service and notification-service take their events by:
//! [`todo_service::one_of_family_bulk`] on a [`Route::bulk_raw`] subscription. Per user
//! order is kept while several users are handled at once; a RETRY of one entry redelivers
//! that entry (and only its user's later entries wait for it); a DROP of one entry, garbage
//! and a stranger's type land on the dead-letter topic while the rest of their delivery
//! succeeds; the family's other types are acknowledged untouched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use dapr_appcallback::{Event, Outcome, Route, Subscriptions};
use dapr_publisher::OutgoingEvent;
use prost::Message;
use todo_harness::{
    Daprd, DaprdOptions, ensure_kafka,
    recorder::{publisher, serve},
    unique,
};
use todo_proto::todo::{
    events::v1::{TaskEvent, TaskEventKind},
    v1::Task,
};
use todo_service::PerKey;
use todo_topology::{
    components::PUBSUB,
    event_types::{TASK_COMPLETED, TASK_CREATED, TASK_FAMILY},
    topics,
};

/// A dead letter as read back: its CloudEvent type and its data.
type DeadLetter = (String, Vec<u8>);

/// How long a test waits for something that normally takes a second or two.
const WAIT: Duration = Duration::from_secs(90);

todo_service::counters! {
    /// What the consumer under test answered.
    struct Stats;
    /// A point-in-time copy of [`Stats`].
    struct StatsSnapshot;
    family not_ours, dropped;
    bulk retried;
    metric "bulk_test_handled_total";
    done,
    not_ours,
    dropped,
    retried,
}

/// The handler: records what it was called with, in order; answers by the task's title.
#[derive(Default)]
struct Consumer {
    stats: Arc<Stats>,
    /// (user, sequence number, answer), in the order the handler answered.
    calls: Mutex<Vec<(String, u32, Outcome)>>,
}

/// The title of the event answered RETRY the first time, SUCCESS after.
const RETRY_ONCE: &str = "retry once";
/// The title of the event answered DROP.
const REFUSED: &str = "refused";

impl Consumer {
    async fn on_completed(self: Arc<Self>, e: Event<TaskEvent>) -> Outcome {
        let task = e.message.task.unwrap_or_default();
        let seq = task.occurrence_index;
        // Later events of a user must wait for the earlier ones, however slow these are.
        tokio::time::sleep(Duration::from_millis(u64::from(20 - seq % 20))).await;
        let mut calls = self.calls.lock().unwrap();
        let seen_before = calls
            .iter()
            .any(|(u, s, _)| *u == e.message.user_id && *s == seq);
        let outcome = match task.title.as_str() {
            RETRY_ONCE if !seen_before => self.stats.retried.count(Outcome::Retry),
            REFUSED => self.stats.dropped.count(Outcome::Drop),
            _ => self.stats.done.count(Outcome::Success),
        };
        calls.push((e.message.user_id.clone(), seq, outcome));
        outcome
    }
}

fn completed(user: &str, seq: u32, title: &str) -> TaskEvent {
    TaskEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        kind: TaskEventKind::Completed as i32,
        user_id: user.to_owned(),
        task: Some(Task {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: user.to_owned(),
            title: title.to_owned(),
            occurrence_index: seq,
            ..Task::default()
        }),
        ..TaskEvent::default()
    }
}

fn outgoing(topic: &str, key: &str, event_type: &str, data: Vec<u8>) -> OutgoingEvent {
    OutgoingEvent {
        id: uuid::Uuid::now_v7().to_string(),
        topic: topic.to_owned(),
        event_type: event_type.to_owned(),
        key: key.to_owned(),
        data,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_keeps_each_users_order_retries_one_entry_and_dead_letters_the_bad_ones() {
    todo_telemetry::init("info");
    ensure_kafka().await.unwrap();
    let topic = unique("bulk");
    let dlq = topics::dead_letter(&topic);

    // The consumer under test, and a reader of its dead-letter topic (raw, in bulk: garbage
    // arrives as it is).
    let consumer = Arc::new(Consumer::default());
    let route = Route::new(PUBSUB, &topic, &dlq)
        .event_type(TASK_COMPLETED)
        .bulk_raw(100, 200);
    let subs = todo_service::one_of_family_bulk(
        route,
        TASK_FAMILY,
        consumer.stats.clone(),
        consumer.clone(),
        PerKey { keys_at_once: 4 },
        |m: &TaskEvent| m.user_id.clone(),
        Consumer::on_completed,
    );
    let (port, _server) = serve(subs).await.unwrap();
    let _sub = Daprd::start(DaprdOptions::new(unique("bulk-sub"), Some(port)))
        .await
        .unwrap();
    let dead: Arc<Mutex<Vec<DeadLetter>>> = Arc::default();
    let d = dead.clone();
    let dlq_route = Route::new(PUBSUB, &dlq, format!("{dlq}-unused")).bulk_raw(100, 50);
    let dlq_subs = Subscriptions::builder()
        .route_batch(dlq_route, move |events: Vec<Event<Vec<u8>>>| {
            let d = d.clone();
            async move {
                let n = events.len();
                d.lock()
                    .unwrap()
                    .extend(events.into_iter().map(|e| (e.event_type, e.message)));
                vec![Outcome::Success; n]
            }
        })
        .build();
    let (dlq_port, _dlq_server) = serve(dlq_subs).await.unwrap();
    let _dlq_sub = Daprd::start(DaprdOptions::new(unique("bulk-dlq"), Some(dlq_port)))
        .await
        .unwrap();
    let (_pub, publisher) = publisher("bulk-pub").await.unwrap();

    // 6 users × 30 completions, each user's published in one bulk publish (so deliveries
    // hold many entries of several users). user-0's stream carries the hostile entries:
    // seq 10 is answered RETRY once, seq 20 DROP; between them garbage, a stranger's type
    // and a family type it does not take.
    const USERS: usize = 6;
    const PER_USER: u32 = 30;
    let garbage = vec![0xff_u8, 0xff, 0xff, 0xff, 0x01];
    let refused = completed("user-0", 20, REFUSED);
    let stranger = completed("user-0", 999, "a stranger's type");
    let mut sends = Vec::new();
    for u in 0..USERS {
        let user = format!("user-{u}");
        let mut batch = Vec::new();
        for seq in 1..=PER_USER {
            let e = match (u, seq) {
                (0, 10) => completed(&user, seq, RETRY_ONCE),
                (0, 20) => refused.clone(),
                _ => completed(&user, seq, "fine"),
            };
            batch.push(outgoing(&topic, &user, TASK_COMPLETED, e.encode_to_vec()));
            if (u, seq) == (0, 15) {
                batch.push(outgoing(&topic, &user, TASK_COMPLETED, garbage.clone()));
                batch.push(outgoing(
                    &topic,
                    &user,
                    "com.example.unknown.v1",
                    stranger.encode_to_vec(),
                ));
                batch.push(outgoing(
                    &topic,
                    &user,
                    TASK_CREATED,
                    completed(&user, 998, "created").encode_to_vec(),
                ));
            }
        }
        let p = publisher.clone();
        sends.push(tokio::spawn(async move {
            let outcome = p.publish_bulk(&batch).await.unwrap();
            assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
        }));
    }
    for s in sends {
        s.await.unwrap();
    }

    // Every valid completion answered SUCCESS, the RETRY entry included (redelivered).
    let want_done = USERS as u64 * u64::from(PER_USER) - 1;
    let deadline = tokio::time::Instant::now() + WAIT;
    while consumer.stats.done.get() < want_done {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {WAIT:?} for {want_done} successes: {:?}",
            todo_service::Counters::snapshot(&*consumer.stats)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while dead.lock().unwrap().len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {WAIT:?} for 3 dead letters, have {:?}",
            dead.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let any redelivery or stray dead letter show up.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let calls = consumer.calls.lock().unwrap().clone();
    // Per user, the order of the first SUCCESS of each completion is the published order
    // (redeliveries of a whole delivery may repeat entries, never reorder them).
    let mut first_success: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (user, seq, outcome) in &calls {
        let seqs = first_success.entry(user.clone()).or_default();
        if *outcome == Outcome::Success && !seqs.contains(seq) {
            seqs.push(*seq);
        }
    }
    for u in 0..USERS {
        let user = format!("user-{u}");
        let want: Vec<u32> = (1..=PER_USER).filter(|s| (u, *s) != (0, 20)).collect();
        assert_eq!(first_success.get(&user), Some(&want), "{user}'s order");
    }
    // The RETRY entry was delivered again, and answered SUCCESS then.
    let retry_calls: Vec<Outcome> = calls
        .iter()
        .filter(|(u, s, _)| u == "user-0" && *s == 10)
        .map(|(_, _, o)| *o)
        .collect();
    assert!(retry_calls.len() >= 2, "{retry_calls:?}");
    assert_eq!(retry_calls[0], Outcome::Retry);
    assert!(retry_calls[1..].iter().all(|o| *o == Outcome::Success));
    // Not handled after seq 10's RETRY before seq 10 succeeded: user-0's later entries
    // waited for it.
    let retry_at = calls
        .iter()
        .position(|(u, s, _)| u == "user-0" && *s == 10)
        .unwrap();
    let success_at = calls
        .iter()
        .position(|(u, s, o)| u == "user-0" && *s == 10 && *o == Outcome::Success)
        .unwrap();
    assert!(
        !calls[retry_at..success_at]
            .iter()
            .any(|(u, s, _)| u == "user-0" && *s > 10),
        "user-0's entries after the RETRY were handled before it: {:?}",
        &calls[retry_at..=success_at]
    );

    // On the dead-letter topic: the refused entry, the garbage and the stranger's type,
    // unchanged and with their types; nothing else (the RETRY entry is not there).
    let dead = dead.lock().unwrap().clone();
    let mut want_dead = HashMap::from([
        (refused.encode_to_vec(), TASK_COMPLETED.to_owned()),
        (garbage.clone(), TASK_COMPLETED.to_owned()),
        (
            stranger.encode_to_vec(),
            "com.example.unknown.v1".to_owned(),
        ),
    ]);
    for (event_type, data) in &dead {
        assert_eq!(
            want_dead.remove(data).as_deref(),
            Some(event_type.as_str()),
            "unexpected dead letter of type {event_type}"
        );
    }
    assert!(want_dead.is_empty(), "missing dead letters: {want_dead:?}");
    let s = todo_service::Counters::snapshot(&*consumer.stats);
    // dropped: the refused entry (by the handler), garbage and the stranger (by the
    // helper); each counted once, however often a delivery was repeated.
    assert_eq!((s.not_ours > 0, s.dropped >= 3), (true, true), "{s:?}");
}
