//! The batch path (crate::delivery_batch) through the real daprd, Kafka and SQLite state
//! store: reminders published together reach the service in one bulk delivery, are claimed
//! in one transaction (one token for the batch) and recorded in one more.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use chrono::Utc;
use common::{Instance, Stack, Tokens, assert_unique, due, instant};
use notification_service::{
    delivery_log::{ClaimRecord, ClaimStatus, Inbox, delivered_key, inbox_key},
    notification::Notification,
    state::{StateStore, Write},
};
use todo_proto::todo::events::v1::ReminderEvent;

/// The service's state store, through its sidecar.
fn store_of(svc: &Instance) -> StateStore {
    let c = &svc.config;
    StateStore::lazy(
        &c.common.dapr_grpc_endpoint,
        &c.state_store,
        None,
        c.state_timeout,
    )
    .unwrap()
}

/// The stored claim of `e`.
async fn claim_of(svc: &Instance, e: &ReminderEvent) -> ClaimRecord {
    let stored = store_of(svc)
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

/// A bulk delivery touching users whose lists are long (just under the default cap of 500,
/// with long titles: about 450 KB each) is recorded a chunk of users at a time: one read of
/// all its users' lists (over 7 MB) would exceed what a gRPC message may hold. Each reminder
/// is delivered once, recorded and listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_touching_long_lists_is_recorded_in_chunks_and_listed() {
    const USERS: usize = 16;
    const EACH: usize = 3;
    let stack = Stack::start(Tokens::None).await;
    let svc = stack.instance();
    let users: Vec<String> = (0..USERS).map(|u| format!("long-{u}")).collect();

    // Seed each user's list with 499 older notifications with long titles.
    let store = store_of(svc);
    let title = "t".repeat(600);
    let earlier = Utc::now() - chrono::TimeDelta::hours(1);
    let mut seeded = 0;
    for user in &users {
        let inbox = Inbox {
            v: 1,
            notifications: (0..svc.config.list_max - 1)
                .map(|i| Notification {
                    reminder_id: format!("old-{i:04}"),
                    task_id: format!("task-{i}"),
                    user_id: user.clone(),
                    task_title: title.clone(),
                    due_time: None,
                    remind_at: earlier,
                    delivered_at: earlier - chrono::TimeDelta::seconds(i as i64),
                    lateness_ms: 0,
                    fire_lateness_ms: None,
                    channel: "log".into(),
                    event_id: String::new(),
                })
                .collect(),
        };
        let value = serde_json::to_vec(&inbox).unwrap();
        seeded += value.len();
        store
            .transact(vec![Write::Create {
                key: inbox_key(user),
                value,
                ttl: Duration::from_secs(3600),
            }])
            .await
            .unwrap();
    }
    assert!(seeded > 6 << 20, "the lists together: {seeded} bytes");
    // What the record read in one call before it was chunked: too large for one message.
    let list_keys: Vec<String> = users.iter().map(|u| inbox_key(u)).collect();
    let list_keys: Vec<&str> = list_keys.iter().map(String::as_str).collect();
    assert!(
        store.get_many(&list_keys).await.is_err(),
        "one read of all the lists fits in a message: the test shows nothing"
    );

    let events: Vec<ReminderEvent> = (0..USERS * EACH)
        .map(|i| due(&users[i % USERS], Duration::ZERO))
        .collect();
    stack.publish_due_bulk(&events).await;

    let stats = stack.handled(events.len() as u64).await;
    assert_eq!(
        (
            stats.delivered,
            stats.duplicates,
            stats.retried,
            stats.dropped
        ),
        (events.len() as u64, 0, 0, 0),
        "{stats:?}"
    );
    // Past the lease: nothing is taken over and delivered again.
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    let delivered = stack.channel.all();
    assert_eq!(delivered.len(), events.len(), "delivered twice");
    assert_unique(&delivered);

    let mut tokens = HashSet::new();
    for e in &events {
        let claim = claim_of(svc, e).await;
        assert_eq!(claim.status, ClaimStatus::Delivered, "{claim:?}");
        tokens.insert(claim.token);
    }
    assert!(
        tokens.len() < events.len(),
        "claimed one by one: {tokens:?}"
    );

    let log = svc.delivery_log();
    for user in &users {
        let listed = log.list(user, Utc::now()).await.unwrap();
        assert_eq!(listed.len(), svc.config.list_max, "{user}: capped");
        let ids: HashSet<&str> = listed.iter().map(|n| n.reminder_id.as_str()).collect();
        for e in events.iter().filter(|e| &e.user_id == user) {
            assert!(ids.contains(e.reminder_id.as_str()), "{user}: not listed");
        }
        // The new ones first, newest first.
        let fresh: Vec<&str> = listed[..EACH]
            .iter()
            .map(|n| n.reminder_id.as_str())
            .collect();
        let mut want: Vec<&str> = events
            .iter()
            .filter(|e| &e.user_id == user)
            .map(|e| e.reminder_id.as_str())
            .collect();
        want.reverse();
        assert_eq!(fresh, want, "{user}");
    }
}

/// A bulk delivery holding one reminder twice: the first copy is claimed with the rest of
/// the batch (one token), only the later copy takes the single path and finds it delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reminder_twice_in_a_batch_sends_only_its_later_copy_alone() {
    let stack = Stack::start(Tokens::None).await;
    let svc = stack.instance();
    let fresh: Vec<ReminderEvent> = (0..8).map(|_| due("joy", Duration::ZERO)).collect();
    let again = ReminderEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        ..fresh[2].clone()
    };
    let mut batch = fresh.clone();
    batch.insert(5, again);
    stack.publish_due_bulk(&batch).await;

    let stats = stack.handled(batch.len() as u64).await;
    assert_eq!(
        (
            stats.delivered,
            stats.duplicates,
            stats.retried,
            stats.dropped
        ),
        (fresh.len() as u64, 1, 0, 0),
        "{stats:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = stack.channel.all();
    assert_eq!(delivered.len(), fresh.len(), "delivered twice");
    assert_unique(&delivered);
    let order: Vec<&str> = delivered.iter().map(|n| n.reminder_id.as_str()).collect();
    let want: Vec<&str> = fresh.iter().map(|e| e.reminder_id.as_str()).collect();
    assert_eq!(order, want, "joy's in order");

    // Claimed together (daprd hands the nine over in one to three bulk deliveries).
    let mut tokens = HashSet::new();
    for e in &fresh {
        let claim = claim_of(svc, e).await;
        assert_eq!(claim.status, ClaimStatus::Delivered, "{claim:?}");
        tokens.insert(claim.token);
    }
    assert!(tokens.len() < fresh.len(), "claimed one by one: {tokens:?}");
    assert_eq!(svc.list_all("joy", 4).await.len(), fresh.len());
}
