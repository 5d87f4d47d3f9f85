//! notification-service end to end: due reminders through the real daprd and Kafka in, one
//! delivery each out, recorded in the real SQLite state store; dead letters and restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::HashSet, time::Duration};

use common::{Stack, Tokens, assert_unique, due, instant};
use notification_service::{
    delivery_log::Claim, notification::notification_from, reminders::StatsSnapshot,
};
use prost::Message;
use todo_harness::health;
use todo_proto::todo::events::v1::ReminderEvent;
use todo_topology::event_types;
use tonic_health::pb::health_check_response::ServingStatus;

/// The services reflection advertises (what grpcurl lists).
async fn advertised(addr: std::net::SocketAddr) -> Vec<String> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("not a list: {response:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_due_reminder_is_delivered_once_and_listed_with_its_lateness() {
    let stack = Stack::start(Tokens::None).await;
    let svc = stack.instance();
    let addr = svc.app().addr;
    for service in [
        "",
        "dapr.proto.runtime.v1.AppCallback",
        "todo.notifications.v1.NotificationService",
    ] {
        assert_eq!(
            health(addr, service).await.unwrap(),
            ServingStatus::Serving,
            "{service}"
        );
    }
    assert_eq!(
        advertised(addr).await,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "todo.notifications.v1.NotificationService",
        ]
    );

    let e = due("alice", Duration::from_secs(90));
    stack.publish_due(&e).await;
    // task-service's bookkeeping on the same topic: acknowledged, nothing delivered.
    for t in [
        event_types::REMINDER_SCHEDULED,
        event_types::REMINDER_CANCELLED,
    ] {
        stack.publish_bytes(t, "alice", e.encode_to_vec()).await;
    }

    let got = stack.channel.wait_for(1).await;
    let n = &got[0];
    assert_eq!(n.user_id, "alice");
    assert_eq!(n.reminder_id, e.reminder_id);
    assert_eq!(n.task_id, e.task_id);
    assert_eq!(n.task_title, e.task_title);
    assert_eq!(n.event_id, e.event_id);
    assert_eq!(n.channel, "recorder");
    assert!(n.lateness() >= Duration::from_secs(90), "{n:?}");
    assert!(n.lateness() < Duration::from_secs(90 + 60), "{n:?}");
    assert_eq!(n.fire_lateness_ms, Some(250));

    let stats = stack.handled(3).await;
    assert_eq!(
        stats,
        StatsSnapshot {
            delivered: 1,
            not_ours: 2,
            ..StatsSnapshot::default()
        }
    );
    assert_eq!(stack.channel.all().len(), 1, "one delivery");

    // Listed for alice, with the same lateness, and for nobody else.
    let page = svc.list_page("alice", 0, "").await.unwrap();
    assert_eq!(page.notifications.len(), 1);
    assert_eq!(page.next_page_token, "");
    let listed = &page.notifications[0];
    assert_eq!(listed.reminder_id, e.reminder_id);
    assert_eq!(listed.task_id, e.task_id);
    assert_eq!(listed.task_title, e.task_title);
    assert_eq!(listed.user_id, "alice");
    assert_eq!(listed.due_time, e.due_time);
    assert_eq!(listed.remind_at, e.remind_at);
    assert_eq!(
        instant(listed.delivered_at.as_ref().unwrap()),
        n.delivered_at
    );
    let lateness = listed.lateness.unwrap();
    assert_eq!(
        lateness.seconds * 1000 + i64::from(lateness.nanos / 1_000_000),
        n.lateness_ms as i64
    );
    assert!(
        svc.list_page("bob", 0, "")
            .await
            .unwrap()
            .notifications
            .is_empty()
    );

    // The API: who is asking, and bad requests named.
    let mut client = svc.client().await;
    let anonymous = client
        .list_notifications(
            todo_proto::todo::notifications::v1::ListNotificationsRequest::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    let bad = svc.list_page("alice", -1, "").await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().starts_with("page_size"), "{bad:?}");
    let bad = svc.list_page("alice", 10, "garbage").await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().starts_with("page_token"), "{bad:?}");
}

/// At-least-once delivery from Kafka, exactly one notification: the same due event twice,
/// and a second event for the same reminder, deliver it once. The same reminder id under
/// another user is that user's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_due_event_published_twice_is_delivered_once() {
    let stack = Stack::start(Tokens::None).await;
    let e = due("carol", Duration::from_secs(5));
    let bytes = e.encode_to_vec();
    stack
        .publish_bytes(event_types::REMINDER_DUE, "carol", bytes.clone())
        .await;
    stack
        .publish_bytes(event_types::REMINDER_DUE, "carol", bytes)
        .await;
    let again = ReminderEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        ..e.clone()
    };
    stack.publish_due(&again).await;
    let other_user = ReminderEvent {
        user_id: "dave".to_owned(),
        ..e.clone()
    };
    stack.publish_due(&other_user).await;

    let stats = stack.handled(4).await;
    assert_eq!(
        stats,
        StatsSnapshot {
            delivered: 2,
            duplicates: 2,
            ..StatsSnapshot::default()
        }
    );
    let delivered = stack.channel.all();
    let pairs = assert_unique(&delivered);
    assert_eq!(
        pairs,
        HashSet::from([
            ("carol".to_owned(), e.reminder_id.clone()),
            ("dave".to_owned(), e.reminder_id.clone()),
        ])
    );
    let carol = delivered.iter().find(|n| n.user_id == "carol").unwrap();
    assert_eq!(carol.event_id, e.event_id, "the first event delivered it");
    let svc = stack.instance();
    assert_eq!(svc.list_all("carol", 10).await.len(), 1);
    assert_eq!(svc.list_all("dave", 10).await.len(), 1);
}

/// A channel that fails: the claim is released (deleted with its ETag, in the real store) and
/// the event retried, so the reminder still goes out once, and is listed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_delivery_is_released_and_retried() {
    let stack = Stack::start(Tokens::None).await;
    stack.channel.fail_next(2);
    let e = due("erin", Duration::from_secs(1));
    stack.publish_due(&e).await;

    let got = stack.channel.wait_for(1).await;
    assert_eq!(got[0].reminder_id, e.reminder_id);
    let stats = stack.handled(3).await;
    assert_eq!(
        (stats.delivered, stats.retried, stats.duplicates),
        (1, 2, 0),
        "{stats:?}"
    );
    assert_eq!(
        stack
            .channel
            .failed
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    let listed = stack.instance().list_all("erin", 10).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        instant(listed[0].delivered_at.as_ref().unwrap()),
        got[0].delivered_at,
        "the delivery that went out is the one listed"
    );
}

/// A burst of due events for several users, with the service restarted (gracefully, on the
/// same port, its sidecar retrying meanwhile) while it is delivering them: none lost, none
/// doubled, nothing dead-lettered, and every user's list pages through exactly its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_in_the_middle_of_a_burst_loses_and_doubles_nothing() {
    const USERS: [&str; 4] = ["u1", "u2", "u3", "u4"];
    const TOTAL: usize = 100;
    let mut stack = Stack::start(Tokens::None).await;
    let events: Vec<ReminderEvent> = (0..TOTAL)
        .map(|i| due(USERS[i % USERS.len()], Duration::from_secs(2)))
        .collect();
    let publishing = stack.publish_due_in_background(events.clone());
    // Restart once a quarter went out, while the rest is still arriving.
    stack.channel.wait_for(TOTAL / 4).await;
    let before = stack.channel.all().len();
    let channel = stack.channel.clone();
    stack.instances[0].restart(channel).await;
    assert!(
        before < TOTAL,
        "the restart came too late to test anything ({before})"
    );
    publishing.await.unwrap();

    let delivered = stack.channel.wait_for(TOTAL).await;
    // Redeliveries of events answered during the restart may still arrive: let them.
    let stats = stack
        .stats_until(|s| s.delivered + s.duplicates >= TOTAL as u64)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered_later = stack.channel.all();
    assert_eq!(delivered_later.len(), TOTAL, "doubled: {stats:?}");
    let pairs = assert_unique(&delivered);
    let expected: HashSet<(String, String)> = events
        .iter()
        .map(|e| (e.user_id.clone(), e.reminder_id.clone()))
        .collect();
    assert_eq!(pairs, expected, "lost or foreign");
    assert!(
        stack.dead.all().is_empty(),
        "dead-lettered: {:?}",
        stack.dead.all().len()
    );
    let svc = stack.instance();
    assert_eq!(
        health(svc.app().addr, "").await.unwrap(),
        ServingStatus::Serving
    );

    let mut listed = 0;
    for user in USERS {
        let all = svc.list_all(user, 7).await;
        assert!(all.iter().all(|n| n.user_id == user));
        let times: Vec<_> = all
            .iter()
            .map(|n| instant(n.delivered_at.as_ref().unwrap()))
            .collect();
        assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
        listed += all.len();
    }
    assert_eq!(listed, TOTAL);
    tracing::info!(?stats, before, "restart test");
}

/// The sidecar killed (SIGKILL) in the middle of a burst: handlings in flight lose their
/// sidecar between claim and record (some of their writes commit with the answer lost) and
/// finish once it is back; Kafka redelivers what daprd had not committed, and those
/// redeliveries wait for the claims or skip. Every reminder goes out exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redeliveries_after_a_sidecar_crash_are_skipped() {
    const TOTAL: usize = 100;
    let mut stack = Stack::start(Tokens::None).await;
    let events: Vec<ReminderEvent> = (0..TOTAL)
        .map(|i| due(["w1", "w2", "w3"][i % 3], Duration::from_secs(1)))
        .collect();
    let publishing = stack.publish_due_in_background(events.clone());
    stack.channel.wait_for(TOTAL / 4).await;
    stack.instances[0].kill_sidecar().await;
    publishing.await.unwrap();

    stack.channel.wait_for(TOTAL).await;
    let stats = stack.stats_until(|s| s.delivered >= TOTAL as u64).await;
    // Redeliveries may still be on their way: they must change nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered = stack.channel.all();
    assert_eq!(delivered.len(), TOTAL, "doubled: {stats:?}");
    let pairs = assert_unique(&delivered);
    assert_eq!(pairs.len(), TOTAL);
    assert!(stack.dead.all().is_empty());
    let stats = stack.stats();
    assert_eq!(
        (stats.delivered, stats.dropped),
        (TOTAL as u64, 0),
        "{stats:?}"
    );
    tracing::info!(?stats, "sidecar crash test");
}

/// A handling that died between claim and record (its process killed) leaves a `claimed`
/// record behind in the real store: the event waits out that claim's lease, takes it over
/// and delivers, once. After that the reminder is recorded and a redelivery is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_left_by_a_dead_handling_is_taken_over_when_its_lease_runs_out() {
    let stack = Stack::start(Tokens::None).await;
    let svc = stack.instance();
    let log = svc.delivery_log();
    let e = due("gina", Duration::ZERO);
    let orphan = notification_from(&e, "dead", chrono::Utc::now()).unwrap();
    assert_eq!(
        log.claim(&orphan, "dead-handling").await.unwrap(),
        Claim::Ours
    );
    let Claim::Held { until } = log.claim(&orphan, "someone-else").await.unwrap() else {
        panic!("a live claim must keep others out");
    };

    stack.publish_due(&e).await;
    let got = stack.channel.wait_for(1).await;
    assert_eq!(got[0].reminder_id, e.reminder_id);
    let went_out = stack.channel.times()[0];
    assert!(
        went_out >= until,
        "delivered at {went_out}, before the dead handling's lease ran out at {until}"
    );
    // Answered once the delivery is recorded (the line goes out just before).
    let stats = stack.handled(1).await;
    assert_eq!((stats.delivered, stats.retried), (1, 0), "{stats:?}");
    let Claim::Delivered(recorded) = log.claim(&orphan, "late").await.unwrap() else {
        panic!("not recorded as delivered");
    };
    assert_eq!(
        recorded.channel, "recorder",
        "recorded by the handling that took over"
    );
    let listed = svc.list_all("gina", 10).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].channel, "recorder");

    stack.publish_due(&e).await;
    let stats = stack.handled(2).await;
    assert_eq!((stats.delivered, stats.duplicates), (1, 1), "{stats:?}");
    assert_eq!(stack.channel.all().len(), 1, "delivered again");
}

/// A delivery record that cannot be read (written by something else) will not read better
/// on a retry: the event goes to the dead-letter topic instead of blocking its partition,
/// and the next reminder flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreadable_delivery_record_dead_letters_its_event() {
    use notification_service::{
        delivery_log::delivered_key,
        state::{StateStore, Write},
    };
    let stack = Stack::start(Tokens::None).await;
    let c = &stack.instance().config;
    let store = StateStore::lazy(
        &c.common.dapr_grpc_endpoint,
        &c.state_store,
        None,
        c.state_timeout,
    )
    .unwrap();
    let broken = due("hana", Duration::ZERO);
    store
        .transact(vec![Write::Create {
            key: delivered_key(&broken.user_id, &broken.reminder_id),
            value: b"not a claim".to_vec(),
            ttl: Duration::from_secs(3600),
        }])
        .await
        .unwrap();
    let fine = due("hana", Duration::ZERO);
    stack.publish_due(&broken).await;
    stack.publish_due(&fine).await;

    let dead = stack.dead.wait_for(1).await;
    assert_eq!(dead[0].1, broken.encode_to_vec());
    let got = stack.channel.wait_for(1).await;
    assert_eq!(got[0].reminder_id, fine.reminder_id);
    let stats = stack.handled(2).await;
    assert_eq!(
        (stats.delivered, stats.dropped, stats.retried),
        (1, 1, 0),
        "{stats:?}"
    );
}

/// Two replicas racing on every reminder (each its own consumer group, so each receives
/// every event; one delivery log): first write wins, each reminder goes out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_racing_on_the_same_reminders_deliver_each_once() {
    const TOTAL: usize = 30;
    let stack = Stack::start_many(2, Tokens::None).await;
    let events: Vec<ReminderEvent> = (0..TOTAL)
        .map(|i| due(["v1", "v2", "v3"][i % 3], Duration::ZERO))
        .collect();
    for e in &events {
        stack.publish_due(e).await;
    }
    let stats = stack
        .stats_until(|s| s.delivered + s.duplicates >= 2 * TOTAL as u64)
        .await;
    assert_eq!(stats.delivered, TOTAL as u64, "{stats:?}");
    assert_eq!(stats.duplicates, TOTAL as u64, "{stats:?}");
    let delivered = stack.channel.all();
    assert_eq!(delivered.len(), TOTAL);
    assert_unique(&delivered);
    // Both replicas list the same, whoever delivered.
    for svc in &stack.instances {
        let mut listed = 0;
        for user in ["v1", "v2", "v3"] {
            listed += svc.list_all(user, 100).await.len();
        }
        assert_eq!(listed, TOTAL);
    }
}

/// With tokens both ways (daprd → app needs APP_API_TOKEN, app → daprd's state API needs
/// DAPR_API_TOKEN): garbage, an invalid due event and an unknown type land on the
/// dead-letter topic, and the next valid event still flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_events_land_on_the_dead_letter_topic_and_the_rest_flow() {
    let stack = Stack::start(Tokens::Both).await;
    let garbage = vec![0xff_u8, 0xff, 0xff, 0xff, 0x01];
    let mut no_user = due("frank", Duration::ZERO);
    no_user.user_id.clear();
    let future = due("frank", Duration::ZERO);
    let valid = due("frank", Duration::ZERO);

    stack
        .publish_bytes(event_types::REMINDER_DUE, "frank", garbage.clone())
        .await;
    stack
        .publish_bytes(event_types::REMINDER_DUE, "frank", no_user.encode_to_vec())
        .await;
    stack
        .publish_bytes("todo.reminder.due.v2", "frank", future.encode_to_vec())
        .await;
    stack.publish_due(&valid).await;

    let dead = stack.dead.wait_for(3).await;
    let bodies: Vec<&Vec<u8>> = dead.iter().map(|(_, b)| b).collect();
    assert!(bodies.contains(&&garbage), "garbage");
    assert!(bodies.contains(&&no_user.encode_to_vec()), "no user");
    assert!(bodies.contains(&&future.encode_to_vec()), "unknown type");
    let types: HashSet<&str> = dead.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        HashSet::from([event_types::REMINDER_DUE, "todo.reminder.due.v2"]),
        "types kept"
    );
    let got = stack.channel.wait_for(1).await;
    assert_eq!(got[0].reminder_id, valid.reminder_id);
    // The garbage is counted too: taken in bulk, the service decodes it itself.
    let stats = stack.handled(4).await;
    assert_eq!(
        (stats.delivered, stats.dropped, stats.retried),
        (1, 3, 0),
        "{stats:?}"
    );
    assert_eq!(stack.instance().list_all("frank", 10).await.len(), 1);
}
