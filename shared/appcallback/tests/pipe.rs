//! The real pipe: Rust app → daprd → Kafka → daprd → Rust app, with protobuf events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use dapr_appcallback::{
    Event, Outcome, Route, Subscriptions,
    proto::{TopicEventBulkRequest, TopicEventRequest, app_callback_client::AppCallbackClient},
};
use dapr_publisher::{GroupPublisher, OutgoingEvent, Publisher, PublisherConfig};
use prost::Message;
use todo_harness::{
    Daprd, DaprdOptions, ensure_kafka,
    recorder::{Inbox, publisher, serve_with},
    unique,
};
use todo_proto::todo::events::v1::{TaskEvent, TaskEventKind};
use todo_proto::todo::v1::Task;
use todo_topology::{components::PUBSUB, event_types, topics};
use tokio::{sync::Notify, task::JoinHandle};

fn task_event(user: &str, seq: u32, kind: TaskEventKind) -> TaskEvent {
    TaskEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: Some(todo_proto::to_timestamp(chrono::Utc::now())),
        user_id: user.to_owned(),
        kind: kind as i32,
        task: Some(Task {
            id: uuid::Uuid::now_v7().to_string(),
            title: format!("task {seq} of {user} — ünïcödé ✓"),
            occurrence_index: seq,
            ..Task::default()
        }),
        changed_fields: vec![],
        actor: "user:test".into(),
    }
}

const KINDS: [(TaskEventKind, &str); 5] = [
    (TaskEventKind::Created, event_types::TASK_CREATED),
    (TaskEventKind::Updated, event_types::TASK_UPDATED),
    (TaskEventKind::Completed, event_types::TASK_COMPLETED),
    (TaskEventKind::Reopened, event_types::TASK_REOPENED),
    (TaskEventKind::Deleted, event_types::TASK_DELETED),
];

fn outgoing(topic: &str, e: &TaskEvent, event_type: &str) -> OutgoingEvent {
    OutgoingEvent {
        id: e.event_id.clone(),
        topic: topic.to_owned(),
        event_type: event_type.to_owned(),
        key: e.user_id.clone(),
        data: e.encode_to_vec(),
    }
}

/// A subscriber app that records every event of `topic` (all types), and its sidecar.
async fn recording_app(
    topic: &str,
    inbox: Arc<Inbox>,
    dead_letters: bool,
) -> (Daprd, JoinHandle<()>) {
    let mut b = Subscriptions::builder();
    let i = inbox.clone();
    b = b.route(
        Route::new(PUBSUB, topic, topics::dead_letter(topic)),
        move |e: Event<TaskEvent>| {
            let i = i.clone();
            async move {
                i.push(&e.topic, &e.event_type, &e.raw);
                Outcome::Success
            }
        },
    );
    if dead_letters {
        let dlq = topics::dead_letter(topic);
        let i = inbox.clone();
        b = b.route_bytes(
            Route::new(PUBSUB, dlq.clone(), format!("{dlq}-unused")),
            move |e: Event<Vec<u8>>| {
                let i = i.clone();
                async move {
                    i.push(&e.topic, &e.event_type, &e.raw);
                    Outcome::Success
                }
            },
        );
    }
    let (port, h) = serve_with(b.build(), true, None).await.unwrap();
    let d = Daprd::start(DaprdOptions::new(unique("sub"), Some(port)))
        .await
        .unwrap();
    (d, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_events_arrive_byte_for_byte_in_order_per_key() {
    ensure_kafka().await.unwrap();
    let topic = unique("pipe");
    let inbox = Arc::new(Inbox::default());
    let (_sub, _h) = recording_app(&topic, inbox.clone(), false).await;
    let (_pub, publisher) = publisher("pub").await.unwrap();

    // 10 users × 100 events: 50 published one by one, then 50 in bulk batches of 25.
    let mut sent: HashMap<String, (String, Vec<u8>)> = HashMap::new();
    let mut tasks = Vec::new();
    for u in 0..10 {
        let user = format!("user-{u}");
        let events: Vec<(TaskEvent, &str)> = (0..100)
            .map(|seq| {
                let (kind, ty) = KINDS[seq as usize % KINDS.len()];
                (task_event(&user, seq, kind), ty)
            })
            .collect();
        for (e, ty) in &events {
            sent.insert(e.event_id.clone(), (ty.to_string(), e.encode_to_vec()));
        }
        let p = publisher.clone();
        let topic = topic.clone();
        tasks.push(tokio::spawn(async move {
            for (e, ty) in &events[..50] {
                p.publish(&outgoing(&topic, e, ty)).await.unwrap();
            }
            for chunk in events[50..].chunks(25) {
                let batch: Vec<_> = chunk
                    .iter()
                    .map(|(e, ty)| outgoing(&topic, e, ty))
                    .collect();
                let outcome = p.publish_bulk(&batch).await.unwrap();
                assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let got = inbox
        .wait_until(&topic, Duration::from_secs(120), |got| got.len() >= 1000)
        .await;
    assert_eq!(got.len(), 1000, "no event twice");
    let mut last_seq: HashMap<String, i64> = HashMap::new();
    for (ty, bytes) in &got {
        let e = TaskEvent::decode(bytes.as_slice()).unwrap();
        let (sent_ty, sent_bytes) = sent.get(&e.event_id).expect("an event we sent");
        assert_eq!(bytes, sent_bytes, "byte-for-byte equal");
        assert_eq!(ty, sent_ty, "CloudEvent type preserved");
        let seq = i64::from(e.task.unwrap().occurrence_index);
        let last = last_seq.entry(e.user_id.clone()).or_insert(-1);
        assert_eq!(seq, *last + 1, "in order for {}", e.user_id);
        *last = seq;
    }
}

/// Group publish on the real pipe: every user hands over 30 events at once (all in flight
/// together, in order), 10 users at the same time; the group publisher shares bulk calls
/// among them, never two of one user in a call, and each user's events arrive once, in the
/// order handed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_publish_keeps_each_keys_order_and_answers_every_caller() {
    ensure_kafka().await.unwrap();
    let topic = unique("group");
    let inbox = Arc::new(Inbox::default());
    let (_sub, _h) = recording_app(&topic, inbox.clone(), false).await;
    let (_pub, publisher) = publisher("pub").await.unwrap();
    let group = GroupPublisher::new(publisher, 16);
    let mut users = Vec::new();
    for u in 0..10 {
        let user = format!("user-{u}");
        let (group, topic) = (group.clone(), topic.clone());
        users.push(tokio::spawn(async move {
            let handed_over = (0..30).map(|seq| {
                let e = task_event(&user, seq, TaskEventKind::Created);
                let group = group.clone();
                let event = outgoing(&topic, &e, event_types::TASK_CREATED);
                async move { group.publish(event).await }
            });
            futures::future::join_all(handed_over).await
        }));
    }
    for u in users {
        for answer in u.await.unwrap() {
            answer.unwrap();
        }
    }
    let got = inbox
        .wait_until(&topic, Duration::from_secs(120), |got| got.len() >= 300)
        .await;
    assert_eq!(got.len(), 300, "no event twice");
    let mut last_seq: HashMap<String, i64> = HashMap::new();
    for (_, bytes) in &got {
        let e = TaskEvent::decode(bytes.as_slice()).unwrap();
        let seq = i64::from(e.task.unwrap().occurrence_index);
        let last = last_seq.entry(e.user_id.clone()).or_insert(-1);
        assert_eq!(seq, *last + 1, "in order for {}", e.user_id);
        *last = seq;
    }
    assert_eq!(last_seq.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_twice_then_success_is_delivered_three_times_and_no_more() {
    ensure_kafka().await.unwrap();
    let topic = unique("retry");
    let calls = Arc::new(Mutex::new(0u32));
    let notify = Arc::new(Notify::new());
    let (c, n) = (calls.clone(), notify.clone());
    let subs = Subscriptions::builder()
        .route(
            Route::new(PUBSUB, &topic, topics::dead_letter(&topic)),
            move |_e: Event<TaskEvent>| {
                let (c, n) = (c.clone(), n.clone());
                async move {
                    let mut calls = c.lock().unwrap();
                    *calls += 1;
                    n.notify_waiters();
                    if *calls <= 2 {
                        Outcome::Retry
                    } else {
                        Outcome::Success
                    }
                }
            },
        )
        .build();
    let (port, _h) = serve_with(subs, true, None).await.unwrap();
    let _sub = Daprd::start(DaprdOptions::new(unique("retry-sub"), Some(port)))
        .await
        .unwrap();
    let (_pub, publisher) = publisher("pub").await.unwrap();
    let e = task_event("u", 0, TaskEventKind::Created);
    publisher
        .publish(&outgoing(&topic, &e, event_types::TASK_CREATED))
        .await
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while *calls.lock().unwrap() < 3 {
        let _ = tokio::time::timeout_at(deadline, notify.notified()).await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "handler not called 3 times"
        );
    }
    // Nothing after the SUCCESS: give redelivery every chance to show up.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(*calls.lock().unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropped_and_undecodable_events_land_on_the_dead_letter_topic_and_the_rest_flow() {
    ensure_kafka().await.unwrap();
    let topic = unique("drop");
    let dlq = topics::dead_letter(&topic);
    let inbox = Arc::new(Inbox::default());
    let i = inbox.clone();
    let d = inbox.clone();
    let subs = Subscriptions::builder()
        // Valid events are recorded, except those the handler refuses (DROP).
        .route(
            Route::new(PUBSUB, &topic, &dlq),
            move |e: Event<TaskEvent>| {
                let i = i.clone();
                async move {
                    if e.message.user_id == "refused" {
                        return Outcome::Drop;
                    }
                    i.push(&e.topic, &e.event_type, &e.raw);
                    Outcome::Success
                }
            },
        )
        .route_bytes(
            Route::new(PUBSUB, &dlq, format!("{dlq}-unused")),
            move |e: Event<Vec<u8>>| {
                let d = d.clone();
                async move {
                    d.push(&e.topic, &e.event_type, &e.raw);
                    Outcome::Success
                }
            },
        )
        .build();
    let (port, _h) = serve_with(subs, true, None).await.unwrap();
    let _sub = Daprd::start(DaprdOptions::new(unique("drop-sub"), Some(port)))
        .await
        .unwrap();
    let (_pub, publisher) = publisher("pub").await.unwrap();

    let refused = task_event("refused", 0, TaskEventKind::Created);
    let garbage = vec![0xff_u8, 0xff, 0xff, 0xff, 0x01];
    let valid: Vec<TaskEvent> = (0..5)
        .map(|s| task_event("u", s, TaskEventKind::Updated))
        .collect();
    publisher
        .publish(&outgoing(&topic, &refused, event_types::TASK_CREATED))
        .await
        .unwrap();
    publisher
        .publish(&OutgoingEvent {
            id: uuid::Uuid::now_v7().to_string(),
            topic: topic.clone(),
            event_type: event_types::TASK_UPDATED.to_owned(),
            key: "u".to_owned(),
            data: garbage.clone(),
        })
        .await
        .unwrap();
    for e in &valid {
        publisher
            .publish(&outgoing(&topic, e, event_types::TASK_UPDATED))
            .await
            .unwrap();
    }

    let ok = inbox
        .wait_until(&topic, Duration::from_secs(60), |got| got.len() >= 5)
        .await;
    let ids: Vec<String> = ok
        .iter()
        .map(|(_, b)| TaskEvent::decode(b.as_slice()).unwrap().event_id)
        .collect();
    assert_eq!(
        ids,
        valid.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>()
    );

    let dead = inbox
        .wait_until(&dlq, Duration::from_secs(60), |got| got.len() >= 2)
        .await;
    let bodies: Vec<&Vec<u8>> = dead.iter().map(|(_, b)| b).collect();
    assert!(
        bodies.contains(&&refused.encode_to_vec()),
        "the DROPped event, unchanged"
    );
    assert!(bodies.contains(&&garbage), "the garbage, unchanged");
    assert!(
        dead.iter().any(|(ty, _)| ty == event_types::TASK_CREATED),
        "type kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_an_app_api_token_only_the_sidecar_gets_in() {
    ensure_kafka().await.unwrap();
    let token = uuid::Uuid::new_v4().to_string();
    let topic = unique("token");
    let inbox = Arc::new(Inbox::default());
    let i = inbox.clone();
    let subs = Subscriptions::builder()
        .route(
            Route::new(PUBSUB, &topic, topics::dead_letter(&topic)),
            move |e: Event<TaskEvent>| {
                let i = i.clone();
                async move {
                    i.push(&e.topic, &e.event_type, &e.raw);
                    Outcome::Success
                }
            },
        )
        .build();
    let (port, _h) = serve_with(subs, true, Some(token.clone())).await.unwrap();

    // A direct delivery without the token is refused, and the handler never sees it.
    let mut direct = AppCallbackClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let forged = TopicEventRequest {
        id: "forged".into(),
        r#type: event_types::TASK_CREATED.into(),
        topic: topic.clone(),
        pubsub_name: PUBSUB.into(),
        data: task_event("u", 0, TaskEventKind::Created).encode_to_vec(),
        ..TopicEventRequest::default()
    };
    let err = direct.on_topic_event(forged.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = direct
        .on_bulk_topic_event(TopicEventBulkRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // A wrong token too.
    let mut req = tonic::Request::new(forged);
    req.metadata_mut()
        .insert("dapr-api-token", "wrong".parse().unwrap());
    let err = direct.on_topic_event(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(inbox.on(&topic).is_empty());

    // Through daprd (which sends APP_API_TOKEN), everything works, and the publishing
    // side sends DAPR_API_TOKEN to its own sidecar.
    let mut opts = DaprdOptions::new(unique("token-sub"), Some(port));
    opts.app_api_token = Some(token.clone());
    let _sub = Daprd::start(opts).await.unwrap();
    let dapr_token = uuid::Uuid::new_v4().to_string();
    let mut popts = DaprdOptions::new(unique("token-pub"), None);
    popts.dapr_api_token = Some(dapr_token.clone());
    let pubd = Daprd::start(popts).await.unwrap();
    let mut cfg = PublisherConfig::new(pubd.grpc_address(), PUBSUB);
    cfg.api_token = Some(dapr_token);
    let publisher = Publisher::connect(&cfg).await.unwrap();
    let e = task_event("u", 0, TaskEventKind::Created);
    publisher
        .publish(&outgoing(&topic, &e, event_types::TASK_CREATED))
        .await
        .unwrap();
    let got = inbox
        .wait_until(&topic, Duration::from_secs(60), |got| !got.is_empty())
        .await;
    assert_eq!(got[0].1, e.encode_to_vec());

    // And the sidecar refuses a publisher without the token.
    let mut no_token = PublisherConfig::new(pubd.grpc_address(), PUBSUB);
    no_token.ready_timeout = Duration::from_millis(200);
    let p = Publisher::lazy(&no_token).unwrap();
    let err = p
        .publish(&outgoing(&topic, &e, event_types::TASK_CREATED))
        .await
        .unwrap_err();
    match err {
        dapr_publisher::PublishError::Sidecar(s) => {
            assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s}")
        }
        other => panic!("expected UNAUTHENTICATED, got {other}"),
    }
}
