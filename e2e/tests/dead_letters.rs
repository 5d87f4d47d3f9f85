//! A dead letter end to end, on the real stack (Kafka, daprd sidecars, the service's own
//! database): a consumer DROPs an event of a type it does not know yet → Dapr moves it to
//! `task-events-dlq` → dead-letter-service records it (decoded to JSON) → an admin lists and
//! shows it → the consumer is fixed (it now takes the type) → the admin replays it → the
//! consumer takes it exactly once, under its original CloudEvent id → discarded, it is set
//! aside and can no longer be replayed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod stack;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use dapr_appcallback::{Event, Outcome, Route, Subscriptions};
use dapr_publisher::OutgoingEvent;
use prost::Message;
use todo_harness::{Backend, Daprd, DaprdOptions, on_both_databases, recorder, unique};
use todo_proto::todo::{
    deadletters::v1::{
        DeadLetter, DeadLetterStatus, DiscardDeadLetterRequest, GetDeadLetterRequest,
        ListDeadLettersRequest, ReplayDeadLetterRequest,
        dead_letter_service_client::DeadLetterServiceClient,
    },
    events::v1::{TaskEvent, TaskEventKind},
    v1::Task,
};
use todo_topology::{Topics, components::PUBSUB, event_types};
use tonic::{Code, Request, transport::Channel};

/// A type task-service might publish one day: the consumer's first version drops it.
const NEW_TYPE: &str = "todo.task.archived.v1";

fn as_user<T>(user: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("x-user-id", user.parse().unwrap());
    r
}

/// A consumer of task-events that DROPs `NEW_TYPE` until it is "fixed", and keeps the
/// CloudEvent id of every event it took.
#[derive(Default)]
struct Consumer {
    knows_new_type: AtomicBool,
    dropped: AtomicU64,
    taken: Mutex<Vec<(String, String)>>,
}

impl Consumer {
    fn handle(&self, e: &Event<Vec<u8>>) -> Outcome {
        if e.event_type == NEW_TYPE && !self.knows_new_type.load(Ordering::SeqCst) {
            self.dropped.fetch_add(1, Ordering::SeqCst);
            return Outcome::Drop;
        }
        self.taken
            .lock()
            .unwrap()
            .push((e.id.clone(), e.event_type.clone()));
        Outcome::Success
    }

    fn taken(&self) -> Vec<(String, String)> {
        self.taken.lock().unwrap().clone()
    }
}

async fn list(
    client: &mut DeadLetterServiceClient<Channel>,
    req: ListDeadLettersRequest,
) -> Vec<DeadLetter> {
    client
        .list_dead_letters(as_user("admin", req))
        .await
        .unwrap()
        .into_inner()
        .dead_letters
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}: timed out");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn dropped_then_fixed_then_replayed_once(backend: Backend) {
    todo_harness::ensure_kafka().await.unwrap();
    let prefix = unique("e2edlq");
    let topics = Topics::new(&prefix);
    let dir = tempfile::tempdir().unwrap();

    let url = todo_harness::fresh_database(backend, &dir, "dead-letters.db").await;
    let (dlq, _dlq_sidecar) = stack::start(
        "dead-letter-service",
        &prefix,
        &[("AUTH_MODE", "dev"), ("DATABASE_URL", &url)],
        dead_letter_service::build,
        |a: &dead_letter_service::App| a.addr,
    )
    .await;

    // The consumer, with its own sidecar (and so its own consumer group).
    let consumer = Arc::new(Consumer::default());
    let me = consumer.clone();
    let subs = Subscriptions::builder()
        .route_bytes(
            Route::new(PUBSUB, &topics.task_events, &topics.task_events_dead_letter),
            move |e: Event<Vec<u8>>| {
                let me = me.clone();
                async move { me.handle(&e) }
            },
        )
        .build();
    let (port, _server) = recorder::serve(subs).await.unwrap();
    let _consumer_sidecar = Daprd::start(DaprdOptions::new(unique("dlq-consumer"), Some(port)))
        .await
        .unwrap();

    // task-service's place: an event it knows, then one of a type the consumer does not.
    let (_pub_sidecar, publisher) = recorder::publisher("dlq-producer").await.unwrap();
    let user = unique("alice");
    let event = |event_type: &str, kind: TaskEventKind| {
        let event_id = uuid::Uuid::now_v7().to_string();
        let data = TaskEvent {
            event_id: event_id.clone(),
            user_id: user.clone(),
            kind: kind as i32,
            occurred_at: Some(todo_proto::to_timestamp(chrono::Utc::now())),
            task: Some(Task {
                id: uuid::Uuid::now_v7().to_string(),
                user_id: user.clone(),
                title: "file the taxes".into(),
                ..Task::default()
            }),
            actor: format!("user:{user}"),
            ..TaskEvent::default()
        }
        .encode_to_vec();
        OutgoingEvent {
            id: event_id,
            topic: topics.task_events.clone(),
            event_type: event_type.to_owned(),
            key: user.clone(),
            data,
        }
    };
    let known = event(event_types::TASK_CREATED, TaskEventKind::Created);
    let unknown = event(NEW_TYPE, TaskEventKind::Unspecified);
    publisher.publish(&known).await.unwrap();
    publisher.publish(&unknown).await.unwrap();

    // The consumer took the known one and dropped the other to task-events-dlq, where
    // dead-letter-service recorded it.
    let mut client = DeadLetterServiceClient::connect(format!("http://{}", dlq.addr))
        .await
        .unwrap();
    let by_topic = || ListDeadLettersRequest {
        topic: "task-events".into(),
        ..Default::default()
    };
    wait_for("the dead letter listed", async || {
        !list(&mut client, by_topic()).await.is_empty()
    })
    .await;
    let listed = list(&mut client, by_topic()).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let dead = &listed[0];
    assert_eq!(
        dead.cloud_event_id, unknown.id,
        "the CloudEvent id is the event's"
    );
    assert_eq!(dead.r#type, NEW_TYPE);
    assert_eq!(dead.topic, topics.task_events);
    assert_eq!(dead.dead_letter_topic, topics.task_events_dead_letter);
    assert_eq!(dead.status, DeadLetterStatus::Pending as i32);
    assert_eq!(dead.partition_key, user);
    assert_eq!(dead.times_dead_lettered, 1);
    assert!(dead.payload.is_empty(), "lists carry no payload");
    assert_eq!(consumer.dropped.load(Ordering::SeqCst), 1);
    assert_eq!(
        consumer.taken(),
        [(known.id.clone(), event_types::TASK_CREATED.to_owned())]
    );

    // The filters: by type, by time, by another topic.
    let of_type = |t: &str| ListDeadLettersRequest {
        types: vec![t.into()],
        ..Default::default()
    };
    assert_eq!(list(&mut client, of_type(NEW_TYPE)).await.len(), 1);
    assert!(
        list(&mut client, of_type(event_types::TASK_CREATED))
            .await
            .is_empty()
    );
    let later = ListDeadLettersRequest {
        since: Some(todo_proto::to_timestamp(
            chrono::Utc::now() + chrono::Duration::minutes(1),
        )),
        ..Default::default()
    };
    assert!(list(&mut client, later).await.is_empty());
    let reminders = ListDeadLettersRequest {
        topic: "reminders".into(),
        ..Default::default()
    };
    assert!(list(&mut client, reminders).await.is_empty());

    // Shown: the payload as published, and as JSON through the descriptor set.
    let shown = client
        .get_dead_letter(as_user(
            "admin",
            GetDeadLetterRequest {
                id: dead.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.payload, unknown.data);
    let json: serde_json::Value = serde_json::from_str(&shown.payload_json).unwrap();
    assert_eq!(json["eventId"], unknown.id.as_str());
    assert_eq!(json["userId"], user.as_str());
    assert_eq!(json["task"]["title"], "file the taxes");
    assert_eq!(shown.decode_error, "");

    // Only admins.
    let refused = client
        .get_dead_letter(as_user(
            &user,
            GetDeadLetterRequest {
                id: dead.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // The fix: the consumer now takes the new type. Then the replay.
    consumer.knows_new_type.store(true, Ordering::SeqCst);
    let replayed = client
        .replay_dead_letter(as_user(
            "admin",
            ReplayDeadLetterRequest {
                id: dead.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.status, DeadLetterStatus::Replayed as i32);
    assert_eq!(replayed.replay_count, 1);
    assert_eq!(replayed.replayed_by, "admin");
    wait_for("the replay consumed", async || consumer.taken().len() == 2).await;
    // Consumed once, under its original CloudEvent id; nothing else arrives (no second
    // delivery, no new dead letter).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        consumer.taken(),
        [
            (known.id.clone(), event_types::TASK_CREATED.to_owned()),
            (unknown.id.clone(), NEW_TYPE.to_owned()),
        ]
    );
    assert_eq!(consumer.dropped.load(Ordering::SeqCst), 1);
    let stats = dlq.stats();
    assert_eq!(
        (stats.recorded, stats.again, stats.unstored),
        (1, 0, 0),
        "{stats:?}"
    );

    // Discarded: kept, listed only when asked for, never replayed.
    let discarded = client
        .discard_dead_letter(as_user(
            "admin",
            DiscardDeadLetterRequest {
                id: dead.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(discarded.status, DeadLetterStatus::Discarded as i32);
    assert_eq!(discarded.discarded_by, "admin");
    assert!(list(&mut client, by_topic()).await.is_empty());
    let only_discarded = ListDeadLettersRequest {
        status: DeadLetterStatus::Discarded as i32,
        ..Default::default()
    };
    assert_eq!(list(&mut client, only_discarded).await.len(), 1);
    let again = client
        .replay_dead_letter(as_user(
            "admin",
            ReplayDeadLetterRequest {
                id: dead.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
}

on_both_databases!(4; dropped_then_fixed_then_replayed_once);
