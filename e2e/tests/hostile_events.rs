//! Hostile events on the real stack: every topic a service consumes receives, through
//! Kafka, garbage bytes (raw, not even a CloudEvent; and as a CloudEvent's data), a valid
//! protobuf of the wrong message, an unknown CloudEvent type (a stranger's, and one of the
//! consumer's own family), an event for another user's task, and a future version (a `.v2`
//! type; a `.v1` event with fields this build does not know), then a valid event. Each lands
//! where docs/events.md ("Hostile events") says: on the topic's dead-letter topic (read back
//! by an observer of its own) or acknowledged, with the consumer's effect (or its absence)
//! checked; and the valid event published after them is handled, so the consumer kept going.
//!
//! One test per consumer, each under its own topic prefix: recurring-task-service,
//! task-service (`task-occurrences`), notification-service, audit-service (both topics),
//! sync-service and dead-letter-service (every `-dlq` topic).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod stack;

// notification-service's own test kit (its components and a recording channel).
#[path = "../../services/notification-service/tests/common/mod.rs"]
mod common;

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use dapr_appcallback::{
    Event, Outcome, Route, Subscriptions,
    proto::{PublishEventRequest, dapr_client::DaprClient},
};
use prost::Message;
use todo_harness::{Daprd, DaprdOptions, recorder, unique};
use todo_proto::{
    to_timestamp,
    todo::{
        audit::v1::{ListTaskActivityRequest, audit_service_client::AuditServiceClient},
        deadletters::v1::{
            DeadLetter, GetDeadLetterRequest, ListDeadLettersRequest,
            dead_letter_service_client::DeadLetterServiceClient,
        },
        events::v1::{OccurrenceRequested, ReminderEvent, TaskChanged, TaskEvent, TaskEventKind},
        sync::v1::{
            TaskChange, WatchTasksRequest, sync_service_client::SyncServiceClient,
            task_change::Message as ChangeMessage,
        },
        v1::{
            CreateTaskRequest, Frequency, GetTaskRequest, Recurrence, Task, TaskStatus,
            task_service_client::TaskServiceClient,
        },
    },
};
use todo_topology::{Topics, app_ids, components::PUBSUB, event_types, topics};
use tokio::task::JoinHandle;
use tonic::{Code, Request, Streaming, transport::Channel};

/// How long a test waits for something that normally takes a second or two.
const WAIT: Duration = Duration::from_secs(60);
/// How long nothing more must arrive before "it did not land there" is believed.
const SETTLE: Duration = Duration::from_secs(2);

fn as_user<T>(user: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("x-user-id", user.parse().unwrap());
    r
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Bytes that are neither JSON nor protobuf (an invalid wire type at the first byte), with
/// a marker that makes them findable.
fn garbage(marker: &str) -> Vec<u8> {
    let mut b = vec![0xff, 0xfe, 0x00, 0x07];
    b.extend_from_slice(marker.as_bytes());
    b.extend_from_slice(&[0x80, 0x80, 0x80]);
    b
}

/// `bytes` with fields a later producer might add: a string (field 100), a varint (field
/// 101) and a message (field 102). Consumers ignore unknown fields (docs/events.md).
fn with_future_fields(mut bytes: Vec<u8>) -> Vec<u8> {
    // field 100, wire type 2: tag 802 = varint a2 06.
    bytes.extend_from_slice(&[0xa2, 0x06, 5]);
    bytes.extend_from_slice(b"later");
    // field 101, wire type 0: tag 808 = a8 06; value 150.
    bytes.extend_from_slice(&[0xa8, 0x06, 0x96, 0x01]);
    // field 102, wire type 2, an embedded message {1: "x"}: tag 818 = b2 06.
    bytes.extend_from_slice(&[0xb2, 0x06, 3, 0x0a, 1, b'x']);
    bytes
}

/// What a case sends.
#[derive(Debug, Clone)]
enum Payload {
    /// Bytes written to Kafka as they are (`rawPayload`): not a CloudEvent at all.
    Raw(Vec<u8>),
    /// A CloudEvent made by daprd, as every producer of this system publishes.
    Event {
        id: String,
        event_type: String,
        data: Vec<u8>,
    },
}

/// Where a case must land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lands {
    /// On the topic's dead-letter topic (DROP).
    DeadLetter,
    /// Acknowledged (SUCCESS) with no effect.
    Ignored,
    /// Acknowledged with the effect of a valid event.
    Handled,
}

impl fmt::Display for Lands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lands::DeadLetter => "dead-letter topic",
            Lands::Ignored => "acknowledged, no effect",
            Lands::Handled => "handled (effect)",
        })
    }
}

#[derive(Debug, Clone)]
struct Case {
    kind: &'static str,
    topic: String,
    payload: Payload,
    lands: Lands,
}

impl Case {
    fn raw(kind: &'static str, topic: &str, bytes: Vec<u8>, lands: Lands) -> Self {
        Self {
            kind,
            topic: topic.to_owned(),
            payload: Payload::Raw(bytes),
            lands,
        }
    }

    fn event(
        kind: &'static str,
        topic: &str,
        event_type: &str,
        id: &str,
        data: Vec<u8>,
        lands: Lands,
    ) -> Self {
        Self {
            kind,
            topic: topic.to_owned(),
            payload: Payload::Event {
                id: id.to_owned(),
                event_type: event_type.to_owned(),
                data,
            },
            lands,
        }
    }

    /// Whether `seen` is this case's message.
    fn is(&self, seen: &Seen) -> bool {
        match &self.payload {
            Payload::Raw(bytes) => seen.data == *bytes,
            Payload::Event { id, .. } => seen.id == *id,
        }
    }
}

/// One message an observer received.
#[derive(Debug, Clone)]
struct Seen {
    topic: String,
    id: String,
    data: Vec<u8>,
}

/// A tiny app with its own sidecar: publishes the cases (raw or as CloudEvents) and reads
/// some topics back (the dead-letter topics, a consumer's output) whatever they hold: raw
/// bulk delivery, so garbage bytes arrive as they are and CloudEvents with their ids.
struct Observer {
    seen: Arc<Mutex<Vec<Seen>>>,
    client: DaprClient<Channel>,
    _daprd: Daprd,
    server: JoinHandle<()>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Observer {
    async fn start(read: &[&str]) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut b = Subscriptions::builder();
        for t in read {
            let seen = seen.clone();
            let route = Route::new(PUBSUB, *t, topics::dead_letter(t)).bulk_raw(100, 50);
            b = b.route_batch(route, move |events: Vec<Event<Vec<u8>>>| {
                let seen = seen.clone();
                async move {
                    let n = events.len();
                    seen.lock()
                        .unwrap()
                        .extend(events.into_iter().map(|e| Seen {
                            topic: e.topic,
                            id: e.id,
                            data: e.raw,
                        }));
                    vec![Outcome::Success; n]
                }
            });
        }
        let (port, server) = recorder::serve(b.build()).await.unwrap();
        let daprd = Daprd::start(DaprdOptions::new(unique("hostile-observer"), Some(port)))
            .await
            .unwrap();
        let client = DaprClient::connect(daprd.grpc_address()).await.unwrap();
        Self {
            seen,
            client,
            _daprd: daprd,
            server,
        }
    }

    fn on(&self, topic: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.topic == topic)
            .cloned()
            .collect()
    }

    /// Publishes to `topic` with `key` as the partition key (so a user's cases stay in order).
    async fn publish(&self, topic: &str, key: &str, payload: &Payload) {
        let (data, metadata) = match payload {
            Payload::Raw(bytes) => (
                bytes.clone(),
                HashMap::from([
                    ("rawPayload".to_owned(), "true".to_owned()),
                    ("partitionKey".to_owned(), key.to_owned()),
                ]),
            ),
            Payload::Event {
                id,
                event_type,
                data,
            } => (
                data.clone(),
                HashMap::from([
                    ("cloudevent.type".to_owned(), event_type.clone()),
                    ("cloudevent.id".to_owned(), id.clone()),
                    ("partitionKey".to_owned(), key.to_owned()),
                ]),
            ),
        };
        self.client
            .clone()
            .publish_event(PublishEventRequest {
                pubsub_name: PUBSUB.to_owned(),
                topic: topic.to_owned(),
                data,
                data_content_type: dapr_publisher::CONTENT_TYPE.to_owned(),
                metadata,
            })
            .await
            .unwrap();
    }

    async fn publish_all(&self, key: &str, cases: &[Case]) {
        for c in cases {
            self.publish(&c.topic, key, &c.payload).await;
        }
    }

    /// Waits until every case that must be dead-lettered is on its topic's dead-letter
    /// topic, lets [`SETTLE`] pass, then checks that no other case is there. Prints the
    /// table of what landed where.
    async fn check_dead_letters(&self, consumer: &str, cases: &[Case]) {
        let landed = |c: &Case| {
            self.on(&topics::dead_letter(&c.topic))
                .iter()
                .filter(|s| c.is(s))
                .count()
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let missing: Vec<_> = cases
                .iter()
                .filter(|c| c.lands == Lands::DeadLetter && landed(c) == 0)
                .map(|c| (c.kind, c.topic.as_str()))
                .collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{consumer}: never on the dead-letter topic: {missing:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(SETTLE).await;
        println!("\n{consumer}:");
        let mut wrong = Vec::new();
        for c in cases {
            let n = landed(c);
            let on_dlq = n > 0;
            println!(
                "  {:<40} {:<24} {}",
                c.topic,
                c.kind,
                if on_dlq {
                    "dead-letter topic".to_owned()
                } else {
                    c.lands.to_string()
                }
            );
            if on_dlq != (c.lands == Lands::DeadLetter) {
                wrong.push((c.kind, c.topic.clone(), c.lands, n));
            }
        }
        assert!(wrong.is_empty(), "{consumer}: landed elsewhere: {wrong:?}");
    }
}

/// Polls `probe` until it answers `Some`, failing after [`WAIT`] with `what`.
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(t) = probe().await {
            return t;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: timed out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn daily() -> Recurrence {
    Recurrence {
        frequency: Frequency::Daily as i32,
        interval: 1,
        ..Recurrence::default()
    }
}

/// `user`'s task `id`, as a snapshot in an event: a daily series due tomorrow, completed now.
fn completed_task(id: &str, user: &str) -> Task {
    let now = Utc::now();
    Task {
        id: id.to_owned(),
        user_id: user.to_owned(),
        title: "water the plants".into(),
        status: TaskStatus::Completed as i32,
        due_time: Some(to_timestamp(now + chrono::Duration::days(1))),
        time_zone: "Europe/Berlin".into(),
        recurrence: Some(daily()),
        complete_time: Some(to_timestamp(now)),
        etag: "\"2\"".into(),
        ..Task::default()
    }
}

fn task_event(kind: TaskEventKind, event_user: &str, task: Task) -> (String, Vec<u8>) {
    let id = new_id();
    let bytes = TaskEvent {
        event_id: id.clone(),
        occurred_at: Some(to_timestamp(Utc::now())),
        user_id: event_user.to_owned(),
        kind: kind as i32,
        actor: format!("user:{event_user}"),
        task: Some(task),
        ..TaskEvent::default()
    }
    .encode_to_vec();
    (id, bytes)
}

fn reminder_event(user: &str, reminder_id: &str, task_id: &str) -> (String, Vec<u8>) {
    let id = new_id();
    let now = Utc::now();
    let bytes = ReminderEvent {
        event_id: id.clone(),
        occurred_at: Some(to_timestamp(now)),
        user_id: user.to_owned(),
        reminder_id: reminder_id.to_owned(),
        task_id: task_id.to_owned(),
        task_title: "water the plants".into(),
        due_time: Some(to_timestamp(now + chrono::Duration::hours(1))),
        remind_at: Some(to_timestamp(now)),
        lateness: Some(prost_types::Duration {
            seconds: 0,
            nanos: 1_000_000,
        }),
        actor: "service:task-service".into(),
        ..ReminderEvent::default()
    }
    .encode_to_vec();
    (id, bytes)
}

fn task_changed(user: &str, task: Task, user_seq: u64) -> (String, Vec<u8>) {
    let id = new_id();
    let bytes = TaskChanged {
        event_id: id.clone(),
        occurred_at: Some(to_timestamp(Utc::now())),
        user_id: user.to_owned(),
        task_id: task.id.clone(),
        kind: TaskEventKind::Created as i32,
        etag: task.etag.clone(),
        task: Some(task),
        user_seq,
        actor: format!("user:{user}"),
        ..TaskChanged::default()
    }
    .encode_to_vec();
    (id, bytes)
}

/// The hostile cases every consumed topic gets, in this order, before its valid event:
/// garbage (raw and as a CloudEvent's data of `event_type`), `wrong` (a valid protobuf of
/// another message) as `event_type`, a stranger's type (`com.example.unknown.v1`),
/// `family_type` (a type of the consumer's own family it does not take), `other_user` (an
/// event for another user's task), `event_type` with its version bumped to `.v2`.
#[allow(clippy::too_many_arguments)]
fn hostile(
    topic: &str,
    event_type: &str,
    wrong: Vec<u8>,
    family_type: &str,
    family_lands: Lands,
    valid_bytes: Vec<u8>,
    other_user: (String, Vec<u8>),
    other_user_lands: Lands,
) -> Vec<Case> {
    use Lands::*;
    let v2 = format!("{}.v2", event_type.trim_end_matches(".v1"));
    vec![
        Case::raw("garbage (raw bytes)", topic, garbage(&new_id()), DeadLetter),
        Case::event(
            "garbage (CloudEvent data)",
            topic,
            event_type,
            &new_id(),
            garbage(&new_id()),
            DeadLetter,
        ),
        Case::event(
            "wrong protobuf message",
            topic,
            event_type,
            &new_id(),
            wrong,
            DeadLetter,
        ),
        Case::event(
            "unknown type (stranger)",
            topic,
            "com.example.unknown.v1",
            &new_id(),
            valid_bytes.clone(),
            DeadLetter,
        ),
        Case::event(
            "unknown type (own family)",
            topic,
            family_type,
            &new_id(),
            valid_bytes.clone(),
            family_lands,
        ),
        Case::event(
            "another user's task",
            topic,
            event_type,
            &other_user.0,
            other_user.1,
            other_user_lands,
        ),
        Case::event(
            "future version (.v2 type)",
            topic,
            &v2,
            &new_id(),
            valid_bytes,
            DeadLetter,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recurring_task_service_on_task_events() {
    todo_harness::ensure_kafka().await.unwrap();
    let prefix = unique("hostile-rts");
    let t = Topics::new(&prefix);
    let (app, _sidecar) = stack::start(
        app_ids::RECURRING_TASK_SERVICE,
        &prefix,
        &[],
        recurring_task_service::build,
        |a: &recurring_task_service::App| a.addr,
    )
    .await;
    let obs = Observer::start(&[&t.task_events_dead_letter, &t.task_occurrences]).await;

    let (alice, mallory) = (unique("alice"), unique("mallory"));
    let (victim, future, valid) = (new_id(), new_id(), new_id());
    let wrong = reminder_event(&alice, &new_id(), &victim).1;
    let sample = task_event(
        TaskEventKind::Completed,
        &alice,
        completed_task(&new_id(), &alice),
    )
    .1;
    // mallory's completion of alice's task.
    let other = task_event(
        TaskEventKind::Completed,
        &mallory,
        completed_task(&victim, &alice),
    );
    let mut cases = hostile(
        &t.task_events,
        event_types::TASK_COMPLETED,
        wrong,
        "todo.task.archived.v1",
        Lands::Ignored,
        sample,
        other,
        Lands::DeadLetter,
    );
    let (id, bytes) = task_event(
        TaskEventKind::Completed,
        &alice,
        completed_task(&future, &alice),
    );
    cases.push(Case::event(
        "future version (unknown fields)",
        &t.task_events,
        event_types::TASK_COMPLETED,
        &id,
        with_future_fields(bytes),
        Lands::Handled,
    ));
    let (id, bytes) = task_event(
        TaskEventKind::Completed,
        &alice,
        completed_task(&valid, &alice),
    );
    cases.push(Case::event(
        "valid",
        &t.task_events,
        event_types::TASK_COMPLETED,
        &id,
        bytes,
        Lands::Handled,
    ));
    obs.publish_all(&alice, &cases).await;

    // The valid completion after the hostile ones produced its next occurrence.
    let parents = || -> BTreeSet<String> {
        obs.on(&t.task_occurrences)
            .iter()
            .map(|s| OccurrenceRequested::decode(s.data.as_slice()).unwrap())
            .map(|o| {
                assert_eq!(o.user_id, alice);
                o.parent_task_id
            })
            .collect()
    };
    eventually("the valid completion's next occurrence", async || {
        parents().contains(&valid).then_some(())
    })
    .await;
    obs.check_dead_letters("recurring-task-service", &cases)
        .await;
    assert_eq!(
        parents(),
        BTreeSet::from([future, valid]),
        "occurrences only for alice's own completions"
    );
    let s = app.stats();
    assert_eq!((s.published, s.not_ours), (2, 1), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn task_service_on_task_occurrences() {
    todo_harness::ensure_kafka().await.unwrap();
    let prefix = unique("hostile-ts");
    let t = Topics::new(&prefix);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/tasks.db?mode=rwc", dir.path().display());
    let (app, _sidecar) = stack::start(
        app_ids::TASK_SERVICE,
        &prefix,
        &[("AUTH_MODE", "dev"), ("DATABASE_URL", &url)],
        task_service::build,
        |a: &task_service::App| a.addr,
    )
    .await;
    let obs = Observer::start(&[&t.task_occurrences_dead_letter]).await;
    let mut api = TaskServiceClient::connect(format!("http://{}", app.addr))
        .await
        .unwrap();

    // alice's daily series, through the API.
    let (alice, mallory) = (unique("alice"), unique("mallory"));
    let due = Utc::now() + chrono::Duration::days(1);
    let series = api
        .create_task(as_user(
            &alice,
            CreateTaskRequest {
                task: Some(Task {
                    title: "water the plants".into(),
                    due_time: Some(to_timestamp(due)),
                    time_zone: "Europe/Berlin".into(),
                    recurrence: Some(daily()),
                    ..Task::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let request = |user: &str, task_id: &str, index: u32| {
        let id = new_id();
        let bytes = OccurrenceRequested {
            event_id: id.clone(),
            occurred_at: Some(to_timestamp(Utc::now())),
            user_id: user.to_owned(),
            task_id: task_id.to_owned(),
            series_id: series.id.clone(),
            parent_task_id: series.id.clone(),
            occurrence_index: index,
            due_time: Some(to_timestamp(due + chrono::Duration::days(i64::from(index)))),
            template: Some(Task {
                title: "water the plants".into(),
                time_zone: "Europe/Berlin".into(),
                recurrence: Some(daily()),
                ..Task::default()
            }),
        }
        .encode_to_vec();
        (id, bytes)
    };
    // The next occurrence's id; mallory asks for it first, naming alice's series.
    let (next, future) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let wrong = task_event(
        TaskEventKind::Completed,
        &alice,
        completed_task(&new_id(), &alice),
    )
    .1;
    let mut cases = hostile(
        &t.task_occurrences,
        event_types::OCCURRENCE_REQUESTED,
        wrong,
        "todo.occurrence.skipped.v1",
        Lands::DeadLetter,
        request(&alice, &uuid::Uuid::new_v4().to_string(), 7).1,
        request(&mallory, &next, 1),
        Lands::DeadLetter,
    );
    let (id, bytes) = request(&alice, &future, 2);
    cases.push(Case::event(
        "future version (unknown fields)",
        &t.task_occurrences,
        event_types::OCCURRENCE_REQUESTED,
        &id,
        with_future_fields(bytes),
        Lands::Handled,
    ));
    let (id, bytes) = request(&alice, &next, 1);
    cases.push(Case::event(
        "valid",
        &t.task_occurrences,
        event_types::OCCURRENCE_REQUESTED,
        &id,
        bytes,
        Lands::Handled,
    ));
    obs.publish_all(&alice, &cases).await;

    let get = |user: &str, id: &str| {
        let (mut api, user, id) = (api.clone(), user.to_owned(), id.to_owned());
        async move { api.get_task(as_user(&user, GetTaskRequest { id })).await }
    };
    // The valid request after the hostile ones created alice's occurrence: mallory's
    // request for the same id, naming alice's series, did not take it first.
    let created = eventually("the valid occurrence created", async || {
        get(&alice, &next).await.ok()
    })
    .await
    .into_inner();
    assert_eq!(
        (created.user_id.as_str(), created.series_id.as_str()),
        (alice.as_str(), series.id.as_str())
    );
    obs.check_dead_letters("task-service", &cases).await;
    get(&alice, &future).await.unwrap();
    let refused = get(&mallory, &next).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notification_service_on_reminders() {
    todo_harness::ensure_kafka().await.unwrap();
    let prefix = unique("hostile-ns");
    let t = Topics::new(&prefix);
    let app_id = unique("ns-app");
    let res = common::resources(&[&app_id], false);
    let channel = Arc::new(common::Recorder::default());
    let instance = common::Instance::start(
        &prefix,
        app_id,
        res.components.path(),
        channel.clone(),
        common::Tokens::None,
    )
    .await;
    let obs = Observer::start(&[&t.reminders_dead_letter]).await;

    let (alice, mallory) = (unique("alice"), unique("mallory"));
    let (task, reminder, future) = (new_id(), new_id(), new_id());
    let wrong = task_event(
        TaskEventKind::Completed,
        &alice,
        completed_task(&task, &alice),
    )
    .1;
    let mut cases = hostile(
        &t.reminders,
        event_types::REMINDER_DUE,
        wrong,
        "todo.reminder.snoozed.v1",
        Lands::Ignored,
        reminder_event(&alice, &new_id(), &task).1,
        // mallory's due reminder for alice's task, under alice's reminder id: delivered to
        // mallory (the event's user), never to alice, and it cannot use up alice's.
        reminder_event(&mallory, &reminder, &task),
        Lands::Handled,
    );
    let (id, bytes) = reminder_event(&alice, &future, &task);
    cases.push(Case::event(
        "future version (unknown fields)",
        &t.reminders,
        event_types::REMINDER_DUE,
        &id,
        with_future_fields(bytes),
        Lands::Handled,
    ));
    let (id, bytes) = reminder_event(&alice, &reminder, &task);
    cases.push(Case::event(
        "valid",
        &t.reminders,
        event_types::REMINDER_DUE,
        &id,
        bytes,
        Lands::Handled,
    ));
    obs.publish_all(&alice, &cases).await;

    let delivered = || -> BTreeSet<(String, String)> {
        channel
            .all()
            .into_iter()
            .map(|n| (n.user_id, n.reminder_id))
            .collect()
    };
    eventually("the valid reminder delivered", async || {
        delivered()
            .contains(&(alice.clone(), reminder.clone()))
            .then_some(())
    })
    .await;
    obs.check_dead_letters("notification-service", &cases).await;
    assert_eq!(
        delivered(),
        BTreeSet::from([
            (mallory.clone(), reminder.clone()),
            (alice.clone(), future),
            (alice.clone(), reminder),
        ])
    );
    assert_eq!(channel.all().len(), 3, "each delivered once");
    let s = instance.stats();
    assert_eq!((s.delivered, s.not_ours), (3, 1), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_service_on_task_events_and_reminders() {
    todo_harness::ensure_kafka().await.unwrap();
    let prefix = unique("hostile-audit");
    let t = Topics::new(&prefix);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/audit.db?mode=rwc", dir.path().display());
    let (app, _sidecar) = stack::start(
        app_ids::AUDIT_SERVICE,
        &prefix,
        &[("AUTH_MODE", "dev"), ("DATABASE_URL", &url)],
        audit_service::build,
        |a: &audit_service::App| a.addr,
    )
    .await;
    let obs = Observer::start(&[&t.task_events_dead_letter, &t.reminders_dead_letter]).await;

    let (alice, mallory) = (unique("alice"), unique("mallory"));
    let task = new_id();
    let mut snapshot = completed_task(&task, &alice);
    snapshot.status = TaskStatus::Open as i32;
    snapshot.complete_time = None;
    // task-events: every known type is recorded, anything else dropped.
    let mut cases = hostile(
        &t.task_events,
        event_types::TASK_CREATED,
        reminder_event(&alice, &new_id(), &task).1,
        "todo.task.archived.v1",
        Lands::DeadLetter,
        task_event(TaskEventKind::Created, &alice, snapshot.clone()).1,
        task_event(TaskEventKind::Created, &mallory, snapshot.clone()),
        Lands::DeadLetter,
    );
    let (id, bytes) = task_event(TaskEventKind::Created, &alice, snapshot.clone());
    cases.push(Case::event(
        "future version (unknown fields)",
        &t.task_events,
        event_types::TASK_CREATED,
        &id,
        with_future_fields(bytes),
        Lands::Handled,
    ));
    let (id, bytes) = task_event(TaskEventKind::Updated, &alice, snapshot.clone());
    cases.push(Case::event(
        "valid",
        &t.task_events,
        event_types::TASK_UPDATED,
        &id,
        bytes,
        Lands::Handled,
    ));
    // reminders: a reminder names no owner to check; mallory's is recorded as mallory's.
    let mut reminders = hostile(
        &t.reminders,
        event_types::REMINDER_DUE,
        task_event(TaskEventKind::Completed, &alice, snapshot.clone()).1,
        "todo.reminder.snoozed.v1",
        Lands::DeadLetter,
        reminder_event(&alice, &new_id(), &task).1,
        reminder_event(&mallory, &new_id(), &task),
        Lands::Handled,
    );
    let (id, bytes) = reminder_event(&alice, &new_id(), &task);
    reminders.push(Case::event(
        "future version (unknown fields)",
        &t.reminders,
        event_types::REMINDER_SCHEDULED,
        &id,
        with_future_fields(bytes),
        Lands::Handled,
    ));
    let (id, bytes) = reminder_event(&alice, &new_id(), &task);
    reminders.push(Case::event(
        "valid",
        &t.reminders,
        event_types::REMINDER_DUE,
        &id,
        bytes,
        Lands::Handled,
    ));
    obs.publish_all(&alice, &cases).await;
    obs.publish_all(&alice, &reminders).await;
    cases.extend(reminders);

    let client = AuditServiceClient::connect(format!("http://{}", app.addr))
        .await
        .unwrap();
    let history = |user: &str| {
        let (mut client, user, task) = (client.clone(), user.to_owned(), task.clone());
        async move {
            client
                .list_task_activity(as_user(
                    &user,
                    ListTaskActivityRequest {
                        task_id: task,
                        page_size: 100,
                        ..Default::default()
                    },
                ))
                .await
                .map(|r| {
                    let mut types: Vec<_> = r
                        .into_inner()
                        .entries
                        .into_iter()
                        .map(|e| e.r#type)
                        .collect();
                    types.sort();
                    types
                })
                .unwrap_or_default()
        }
    };
    let mut expected = vec![
        event_types::TASK_CREATED.to_owned(),
        event_types::TASK_UPDATED.to_owned(),
        event_types::REMINDER_SCHEDULED.to_owned(),
        event_types::REMINDER_DUE.to_owned(),
    ];
    expected.sort();
    eventually("both valid events recorded", async || {
        (history(&alice).await.len() >= 4).then_some(())
    })
    .await;
    obs.check_dead_letters("audit-service", &cases).await;
    assert_eq!(history(&alice).await, expected, "alice's history");
    assert_eq!(
        history(&mallory).await,
        [event_types::REMINDER_DUE],
        "mallory's reminder, in mallory's history only"
    );
    let s = app.stats();
    assert_eq!((s.recorded, s.dropped), (5, 13), "{s:?}");
}

/// The next message on `stream` that is not a heartbeat, within `within`.
async fn next_change(stream: &mut Streaming<TaskChange>, within: Duration) -> Option<TaskChange> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let m = tokio::time::timeout_at(deadline, stream.message())
            .await
            .ok()?
            .unwrap()?;
        if !matches!(m.message, Some(ChangeMessage::Heartbeat(_))) {
            return Some(m);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_service_on_task_updates() {
    todo_harness::ensure_kafka().await.unwrap();
    let prefix = unique("hostile-sync");
    let t = Topics::new(&prefix);
    // The broadcast component is scoped to the app id sync-service.
    let (app, _sidecar) = stack::start_as(
        app_ids::SYNC_SERVICE.to_owned(),
        &prefix,
        &[("AUTH_MODE", "dev"), ("SYNC_HEARTBEAT_MS", "300")],
        sync_service::build,
        |a: &sync_service::App| a.addr,
    )
    .await;
    let obs = Observer::start(&[&t.task_updates_dead_letter]).await;
    let sync = SyncServiceClient::connect(format!("http://{}", app.addr))
        .await
        .unwrap();

    // A broadcast group starts at the newest offset once it has joined: probe until it has.
    let probe = unique("probe");
    let mut seq = 0;
    while app.stats().applied == 0 {
        seq += 1;
        assert!(seq < 300, "sync-service never received a change");
        let (id, data) = task_changed(&probe, completed_task(&new_id(), &probe), seq);
        obs.publish(
            &t.task_updates,
            &probe,
            &Payload::Event {
                id,
                event_type: event_types::TASK_CHANGED.to_owned(),
                data,
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (alice, mallory, bob) = (unique("alice"), unique("mallory"), unique("bob"));
    let watch = |user: &str| {
        let (mut sync, user) = (sync.clone(), user.to_owned());
        async move {
            sync.watch_tasks(as_user(
                &user,
                WatchTasksRequest {
                    cursor: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
        }
    };
    let (mut alices, mut mallorys) = (watch(&alice).await, watch(&mallory).await);

    let (first, second) = (new_id(), new_id());
    let wrong = task_event(
        TaskEventKind::Completed,
        &alice,
        completed_task(&new_id(), &alice),
    )
    .1;
    // alice's change of bob's task (each would then stream it), as alice's first change.
    let mut cases = hostile(
        &t.task_updates,
        event_types::TASK_CHANGED,
        wrong,
        "todo.task.archived.v1",
        Lands::Ignored,
        task_changed(&alice, completed_task(&new_id(), &alice), 9).1,
        task_changed(&alice, completed_task(&new_id(), &bob), 1),
        Lands::DeadLetter,
    );
    let (id, bytes) = task_changed(&alice, completed_task(&first, &alice), 1);
    cases.push(Case::event(
        "future version (unknown fields)",
        &t.task_updates,
        event_types::TASK_CHANGED,
        &id,
        with_future_fields(bytes),
        Lands::Handled,
    ));
    let (id, bytes) = task_changed(&alice, completed_task(&second, &alice), 2);
    cases.push(Case::event(
        "valid",
        &t.task_updates,
        event_types::TASK_CHANGED,
        &id,
        bytes,
        Lands::Handled,
    ));
    // A change of mallory's that must reach her stream after anything hostile would have.
    let mallory_task = new_id();
    let (id, bytes) = task_changed(&mallory, completed_task(&mallory_task, &mallory), 1);
    obs.publish_all(&alice, &cases).await;

    // alice's stream: her two changes, in order, nothing of bob's.
    let mut got = Vec::new();
    while got.len() < 2 {
        let m = next_change(&mut alices, WAIT)
            .await
            .expect("alice's changes on her stream");
        match m.message {
            Some(ChangeMessage::Change(c)) => got.push((c.task_id, c.user_seq)),
            other => panic!("expected a change, got {other:?}"),
        }
    }
    assert_eq!(got, [(first, 1), (second, 2)], "alice's stream");
    obs.check_dead_letters("sync-service", &cases).await;
    obs.publish(
        &t.task_updates,
        &mallory,
        &Payload::Event {
            id,
            event_type: event_types::TASK_CHANGED.to_owned(),
            data: bytes,
        },
    )
    .await;
    let m = next_change(&mut mallorys, WAIT)
        .await
        .expect("mallory's change");
    match m.message {
        Some(ChangeMessage::Change(c)) => assert_eq!(c.task_id, mallory_task),
        other => panic!("expected mallory's change, got {other:?}"),
    }
    let s = app.stats();
    assert_eq!((s.not_ours, s.dropped), (1, 6), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letter_service_on_every_dead_letter_topic() {
    todo_harness::ensure_kafka().await.unwrap();
    let prefix = unique("hostile-dls");
    let t = Topics::new(&prefix);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/dead-letters.db?mode=rwc", dir.path().display());
    let (app, _sidecar) = stack::start(
        app_ids::DEAD_LETTER_SERVICE,
        &prefix,
        &[("AUTH_MODE", "dev"), ("DATABASE_URL", &url)],
        dead_letter_service::build,
        |a: &dead_letter_service::App| a.addr,
    )
    .await;
    let obs = Observer::start(&[]).await;
    let client = DeadLetterServiceClient::connect(format!("http://{}", app.addr))
        .await
        .unwrap();

    // Whatever arrives on a dead-letter topic is recorded (never dropped: a dead letter's
    // dead letter would be itself), each hostile kind on each of the four.
    let (alice, mallory) = (unique("alice"), unique("mallory"));
    let task = new_id();
    let mut cases = Vec::new();
    for (_, dlq) in t.with_dead_letters() {
        let mut these = hostile(
            dlq,
            event_types::TASK_COMPLETED,
            reminder_event(&alice, &new_id(), &task).1,
            "todo.task.archived.v1",
            Lands::Handled,
            task_event(
                TaskEventKind::Completed,
                &alice,
                completed_task(&task, &alice),
            )
            .1,
            task_event(
                TaskEventKind::Completed,
                &mallory,
                completed_task(&task, &alice),
            ),
            Lands::Handled,
        );
        let (id, bytes) = task_event(
            TaskEventKind::Completed,
            &alice,
            completed_task(&task, &alice),
        );
        these.push(Case::event(
            "future version (unknown fields)",
            dlq,
            event_types::TASK_COMPLETED,
            &id,
            with_future_fields(bytes),
            Lands::Handled,
        ));
        let (id, bytes) = task_event(
            TaskEventKind::Completed,
            &alice,
            completed_task(&task, &alice),
        );
        these.push(Case::event(
            "valid",
            dlq,
            event_types::TASK_COMPLETED,
            &id,
            bytes,
            Lands::Handled,
        ));
        for c in &mut these {
            c.lands = Lands::Handled;
        }
        cases.extend(these);
    }
    for c in &cases {
        obs.publish(&c.topic, &alice, &c.payload).await;
    }

    let list = |dlq: String| {
        let mut client = client.clone();
        async move {
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_dead_letters(as_user(
                        "admin",
                        ListDeadLettersRequest {
                            page_size: 100,
                            page_token,
                            ..Default::default()
                        },
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                all.extend(
                    page.dead_letters
                        .into_iter()
                        .filter(|d: &DeadLetter| d.dead_letter_topic == dlq),
                );
                if page.next_page_token.is_empty() {
                    return all;
                }
                page_token = page.next_page_token;
            }
        }
    };
    println!("\ndead-letter-service:");
    for (_, dlq) in t.with_dead_letters() {
        let these: Vec<_> = cases.iter().filter(|c| c.topic == dlq).collect();
        let recorded = eventually(&format!("every case recorded on {dlq}"), async || {
            let got = list(dlq.to_owned()).await;
            (got.len() >= these.len()).then_some(got)
        })
        .await;
        let mut shown = Vec::new();
        for d in &recorded {
            shown.push(
                client
                    .clone()
                    .get_dead_letter(as_user("admin", GetDeadLetterRequest { id: d.id.clone() }))
                    .await
                    .unwrap()
                    .into_inner(),
            );
        }
        for c in &these {
            let d = shown
                .iter()
                .find(|d| match &c.payload {
                    Payload::Raw(bytes) => d.payload == *bytes,
                    Payload::Event { id, .. } => d.cloud_event_id == *id,
                })
                .unwrap_or_else(|| panic!("{} on {dlq}: not recorded: {shown:?}", c.kind));
            let readable = d.decode_error.is_empty();
            println!(
                "  {:<40} {:<32} recorded ({})",
                dlq,
                c.kind,
                if readable {
                    "decoded".to_owned()
                } else {
                    format!("undecoded: {}", d.decode_error)
                }
            );
        }
        assert_eq!(shown.len(), these.len(), "{dlq}: one record per message");
    }
    tokio::time::sleep(SETTLE).await;
    let s = app.stats();
    assert_eq!(s.recorded, cases.len() as u64, "{s:?}");
}
