//! The batch path (crate::delivery_batch) through the real daprd, Kafka and SQLite state
//! store: reminders published together reach the service in one bulk delivery, are claimed
//! in one transaction (one token for the batch) and recorded in one more.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use common::{Instance, Stack, Tokens, assert_unique, due, instant};
use notification_service::{
    delivery_log::{ClaimRecord, ClaimStatus, delivered_key},
    state::StateStore,
};
use todo_proto::todo::events::v1::ReminderEvent;

/// The stored claim of `e`.
async fn claim_of(svc: &Instance, e: &ReminderEvent) -> ClaimRecord {
    let c = &svc.config;
    let store = StateStore::lazy(
        &c.common.dapr_grpc_endpoint,
        &c.state_store,
        None,
        c.state_timeout,
    )
    .unwrap();
    let stored = store
        .get(&delivered_key(&e.user_id, &e.reminder_id))
        .await
        .unwrap()
        .expect("no claim");
    serde_json::from_slice(&stored.data).unwrap()
}

/// A batch holding a second event of a reminder delivered before: the claim transaction
/// fails on it, the read finds it delivered, and the rest of the batch is claimed together
/// and delivered once; the duplicate is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_with_a_duplicate_of_a_delivered_reminder_delivers_the_rest_once() {
    let stack = Stack::start(Tokens::None).await;
    let svc = stack.instance();
    let first = due("ivy", Duration::from_secs(3));
    stack.publish_due(&first).await;
    stack.channel.wait_for(1).await;
    stack.handled(1).await;

    let again = ReminderEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        ..first.clone()
    };
    let fresh: Vec<ReminderEvent> = (0..10)
        .map(|_| due("ivy", Duration::from_secs(2)))
        .collect();
    let mut batch = fresh[..5].to_vec();
    batch.push(again);
    batch.extend(fresh[5..].iter().cloned());
    stack.publish_due_bulk(&batch).await;

    let stats = stack.handled(1 + batch.len() as u64).await;
    assert_eq!(
        (
            stats.delivered,
            stats.duplicates,
            stats.retried,
            stats.dropped
        ),
        (11, 1, 0, 0),
        "{stats:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = stack.channel.all();
    assert_eq!(delivered.len(), 11, "delivered twice");
    let pairs = assert_unique(&delivered);
    let expected: HashSet<(String, String)> = std::iter::once(&first)
        .chain(&fresh)
        .map(|e| (e.user_id.clone(), e.reminder_id.clone()))
        .collect();
    assert_eq!(pairs, expected);

    // The first was claimed alone; the ten together, under one token per bulk delivery
    // (daprd hands them over in one to three), all delivered.
    let mut tokens = HashSet::new();
    for e in &fresh {
        let claim = claim_of(svc, e).await;
        assert_eq!(claim.status, ClaimStatus::Delivered, "{claim:?}");
        tokens.insert(claim.token);
    }
    assert!(tokens.len() < fresh.len(), "claimed one by one: {tokens:?}");
    assert!(!tokens.contains(&claim_of(svc, &first).await.token));

    // Listed once each, newest first, in the order of the batch.
    let listed = svc.list_all("ivy", 4).await;
    assert_eq!(listed.len(), 11);
    let ids: Vec<&str> = listed.iter().map(|n| n.reminder_id.as_str()).collect();
    let mut want: Vec<&str> = std::iter::once(&first)
        .chain(&fresh)
        .map(|e| e.reminder_id.as_str())
        .collect();
    want.reverse();
    assert_eq!(ids, want);
    let times: Vec<_> = listed
        .iter()
        .map(|n| instant(n.delivered_at.as_ref().unwrap()))
        .collect();
    assert!(times.windows(2).all(|w| w[0] > w[1]), "{times:?}");
}

/// Two replicas (each its own consumer group, one delivery log) handed the same bulk
/// deliveries race on every batch: one claims each reminder, the other finds it claimed or
/// delivered. Each reminder goes out once and is listed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_racing_on_the_same_batches_deliver_each_once() {
    const USERS: [&str; 5] = ["x1", "x2", "x3", "x4", "x5"];
    const TOTAL: usize = 60;
    let stack = Stack::start_many(2, Tokens::None).await;
    let events: Vec<ReminderEvent> = (0..TOTAL)
        .map(|i| due(USERS[i % USERS.len()], Duration::ZERO))
        .collect();
    stack.publish_due_bulk(&events).await;

    let stats = stack
        .stats_until(|s| s.delivered + s.duplicates >= 2 * TOTAL as u64)
        .await;
    assert_eq!(stats.delivered, TOTAL as u64, "{stats:?}");
    assert_eq!(stats.duplicates, TOTAL as u64, "{stats:?}");
    assert_eq!((stats.retried, stats.dropped), (0, 0), "{stats:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = stack.channel.all();
    assert_eq!(delivered.len(), TOTAL, "delivered twice");
    let pairs = assert_unique(&delivered);
    assert_eq!(pairs.len(), TOTAL);

    // Claimed in batches: far fewer tokens than reminders.
    let mut tokens: HashMap<String, usize> = HashMap::new();
    for e in &events {
        let claim = claim_of(stack.instance(), e).await;
        assert_eq!(claim.status, ClaimStatus::Delivered);
        *tokens.entry(claim.token).or_default() += 1;
    }
    assert!(tokens.len() < TOTAL / 2, "{} tokens", tokens.len());

    for svc in &stack.instances {
        let mut listed = 0;
        for user in USERS {
            let all = svc.list_all(user, 100).await;
            assert!(all.iter().all(|n| n.user_id == user));
            listed += all.len();
        }
        assert_eq!(listed, TOTAL);
    }
}

/// A channel failing on the first reminder of a user's batch: it is retried (its claim
/// released) and the user's later ones are held back unhandled (their claims released too),
/// while other users' reminders in the batch go out. In the end each goes out once, each
/// user's in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_delivery_in_a_batch_holds_back_the_rest_of_its_user() {
    let stack = Stack::start(Tokens::None).await;
    let events: Vec<ReminderEvent> = (0..4).map(|_| due("kim", Duration::ZERO)).collect();
    stack.channel.fail_next(1);
    stack.publish_due_bulk(&events).await;

    let delivered = stack.channel.wait_for(events.len()).await;
    let stats = stack
        .stats_until(|s| s.delivered >= events.len() as u64)
        .await;
    assert!(stats.retried >= 1, "{stats:?}");
    assert_eq!((stats.duplicates, stats.dropped), (0, 0), "{stats:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stack.channel.all().len(), events.len(), "delivered twice");
    assert_unique(&delivered);
    let order: Vec<&str> = delivered.iter().map(|n| n.reminder_id.as_str()).collect();
    let want: Vec<&str> = events.iter().map(|e| e.reminder_id.as_str()).collect();
    assert_eq!(order, want, "kim's in order");
    assert_eq!(
        stack.instance().list_all("kim", 10).await.len(),
        events.len()
    );
}
