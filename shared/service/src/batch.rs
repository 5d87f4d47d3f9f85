//! The bulk counterpart of [`one_of_family`](crate::one_of_family): a consumer of one event
//! type of a producer's family, taking each bulk delivery as a batch and handling its events
//! one key (one user) after another in order, several keys at once.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Weak},
};

use dapr_appcallback::{Event, Outcome, Route, Subscriptions};
use prost::Message;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::{Counter, FamilyCounters};

/// The counters of a [`one_of_family_bulk`] consumer: a family consumer's, and where the
/// events answered RETRY unhandled (held behind an earlier RETRY of their key) are counted.
pub trait BulkCounters: FamilyCounters {
    /// Events answered RETRY, the handler's own RETRYs and those held back.
    fn retried(&self) -> &Counter;
}

/// How a batch is spread: events of one key (a user) are handled one after another in their
/// order, and at most `keys_at_once` keys are handled at the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerKey {
    /// How many keys' events are handled at the same time (at least 1).
    pub keys_at_once: usize,
}

/// How a consumer that handles each user's events in order takes them in bulk
/// ([`one_of_family_per_user`]: recurring-task-service's completions, notification-service's
/// due reminders). Not configuration yet: the README's tables of variables are what `--help`
/// is checked against.
pub mod per_user {
    use super::PerKey;

    /// Most events daprd hands over in one bulk delivery.
    pub const BULK_MAX_MESSAGES: i32 = 100;
    /// How long (ms) daprd waits to fill a bulk delivery: an event waits at most this long
    /// for company before it is handled.
    pub const BULK_MAX_AWAIT_MS: i32 = 10;
    /// How many users' events of one delivery are handled at the same time; each user's one
    /// after another, in order.
    pub const USERS_AT_ONCE: PerKey = PerKey { keys_at_once: 16 };
    /// How many series' events are handled at the same time by the consumers that keep
    /// order per recurring series instead of per user (recurring-task-service's completions,
    /// task-service's occurrence intake; give [`one_of_family_bulk`](super::one_of_family_bulk)
    /// the route's `bulk_raw` with the two figures above). Measured with `just
    /// bench-recurrence` at 200 completions/s over 10 users: 16 → 64 took the p99 from
    /// 1.7 s to 0.7–0.9 s, 256 gave no more (docs/benchmarks.md).
    pub const SERIES_AT_ONCE: PerKey = PerKey { keys_at_once: 64 };
}

/// [`one_of_family_bulk`] keyed by `user`, in the bulk deliveries of [`per_user`]: `route`
/// is given [`Route::bulk_raw`] with [`per_user::BULK_MAX_MESSAGES`] and
/// [`per_user::BULK_MAX_AWAIT_MS`], and [`per_user::USERS_AT_ONCE`] users' events are
/// handled at the same time.
pub fn one_of_family_per_user<H, C, M, K, F, Fut>(
    route: Route,
    family: &str,
    counters: Arc<C>,
    consumer: Arc<H>,
    user: K,
    handle: F,
) -> Subscriptions
where
    H: Send + Sync + 'static,
    C: BulkCounters,
    M: Message + Default + Send + 'static,
    K: Fn(&M) -> String + Send + Sync + 'static,
    F: Fn(Arc<H>, Event<M>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    one_of_family_bulk(
        route.bulk_raw(per_user::BULK_MAX_MESSAGES, per_user::BULK_MAX_AWAIT_MS),
        family,
        counters,
        consumer,
        per_user::USERS_AT_ONCE,
        user,
        handle,
    )
}

/// The subscriptions of `consumer`, which takes the one event type `route` names (see
/// [`Route::event_type`]) of a producer's `family`, in bulk: give `route`
/// [`Route::bulk_raw`]. The rules are those of [`one_of_family`](crate::one_of_family),
/// entry by entry: the family's other types are acknowledged untouched (counted in
/// [`not_ours`](FamilyCounters::not_ours)), another version of the type or a stranger's type
/// is DROPped to the dead-letter topic (counted in [`dropped`](FamilyCounters::dropped)); so
/// is an event of the type that does not decode as `M` (counted too, unlike
/// `one_of_family`, where the runtime drops it). daprd cannot apply routing rules to raw
/// payloads, so the subscription it is given takes every type on the topic (no rule): the
/// types are told apart here.
///
/// The events of the type in one delivery are grouped by `key` (e.g. the user id, the Kafka
/// partition key, whose order the topic keeps): each group is handled one event after
/// another in delivery order, up to `per_key.keys_at_once` groups at once. Once an event of
/// a key is answered RETRY, the key's later events in the batch are answered RETRY without
/// being handled (counted in [`retried`](BulkCounters::retried)): daprd redelivers them
/// after it, so they are not handled before it. Each event is handled in a task of its
/// own, so a request cancelled midway (the sidecar gone, a timeout) does not cut a handling
/// short, and a panicking handler DROPs that event alone (it would panic again on every
/// redelivery) and is counted in `dropped`.
pub fn one_of_family_bulk<H, C, M, K, F, Fut>(
    route: Route,
    family: &str,
    counters: Arc<C>,
    consumer: Arc<H>,
    per_key: PerKey,
    key: K,
    handle: F,
) -> Subscriptions
where
    H: Send + Sync + 'static,
    C: BulkCounters,
    M: Message + Default + Send + 'static,
    K: Fn(&M) -> String + Send + Sync + 'static,
    F: Fn(Arc<H>, Event<M>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    // The route takes the whole topic (no event type): the runtime would route only the
    // type and DROP the family's other types; here they are told apart by the family
    // rules (the runtime sends daprd no routing rule for raw payloads either way).
    let mut route = route;
    let event_type = route.event_type.take().unwrap_or_default();
    let bulk = Arc::new(Bulk {
        consumer,
        counters,
        dead_letter_topic: route.dead_letter_topic.clone(),
        family: family.to_owned(),
        event_type,
        keys_at_once: Arc::new(Semaphore::new(per_key.keys_at_once.max(1))),
        turns: std::sync::Mutex::default(),
        key,
        handle,
    });
    Subscriptions::builder()
        .route_batch(route, move |events| {
            let bulk = bulk.clone();
            async move { bulk.on_batch(events).await }
        })
        .build()
}

/// Whether `event_type` is another type of `family` than `handled` (`todo.task.created.v1`
/// for a consumer of `todo.task.completed.v1` in `todo.task.`): acknowledged untouched. Not
/// another version of `handled`, nor a type outside the family: those are DROPped.
pub fn another_type_of_family(event_type: &str, family: &str, handled: &str) -> bool {
    event_type.starts_with(family) && unversioned(event_type) != unversioned(handled)
}

/// The CloudEvent type without its version (`todo.task.completed` of `todo.task.completed.v1`).
fn unversioned(event_type: &str) -> &str {
    event_type
        .rsplit_once(".v")
        .map_or(event_type, |(base, _)| base)
}

/// A [`one_of_family_bulk`] consumer.
struct Bulk<H, C, K, F> {
    consumer: Arc<H>,
    counters: Arc<C>,
    dead_letter_topic: String,
    /// The producer's family (`todo.task.`).
    family: String,
    /// The one type handled (`todo.task.completed.v1`).
    event_type: String,
    /// Shared by every batch: the bound holds across concurrent deliveries too.
    keys_at_once: Arc<Semaphore>,
    /// Per key, whose turn it is, across deliveries: a delivery whose call was cancelled
    /// (the request timed out) leaves its groups running, and daprd delivers the batch
    /// again; without the turn, the second delivery could handle a key's later event while
    /// the first still handled its earlier one. Entries live while a group holds them.
    turns: std::sync::Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    key: K,
    handle: F,
}

impl<H, C, K, F> Bulk<H, C, K, F> {
    /// The turn of each key (created for keys no group holds), the map cleared of keys
    /// no group holds any more.
    fn turns(&self, keys: Vec<String>) -> Vec<Arc<tokio::sync::Mutex<()>>> {
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        turns.retain(|_, t| t.strong_count() > 0);
        keys.into_iter()
            .map(|k| {
                if let Some(turn) = turns.get(&k).and_then(Weak::upgrade) {
                    return turn;
                }
                let turn = Arc::new(tokio::sync::Mutex::new(()));
                turns.insert(k, Arc::downgrade(&turn));
                turn
            })
            .collect()
    }

    /// One delivery's events of the type: one outcome each, in their order.
    async fn on_batch<M, Fut>(self: Arc<Self>, events: Vec<Event<Vec<u8>>>) -> Vec<Outcome>
    where
        H: Send + Sync + 'static,
        C: BulkCounters,
        M: Message + Default + Send + 'static,
        K: Fn(&M) -> String + Send + Sync + 'static,
        F: Fn(Arc<H>, Event<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let mut outcomes = vec![Outcome::Retry; events.len()];
        // The groups in the order their first event came.
        let mut groups: Vec<Vec<(usize, Event<M>)>> = Vec::new();
        let mut keys: Vec<String> = Vec::new();
        let mut group_of: HashMap<String, usize> = HashMap::new();
        for (i, e) in events.into_iter().enumerate() {
            if e.event_type != self.event_type {
                outcomes[i] = self.not_handled(&e);
                continue;
            }
            let message = match M::decode(e.message.as_slice()) {
                Ok(m) => m,
                Err(err) => {
                    tracing::warn!(
                        error = %err,
                        message = std::any::type_name::<M>(),
                        event_id = %e.id,
                        bytes = e.message.len(),
                        dead_letter_topic = %self.dead_letter_topic,
                        "event does not decode: dropping to the dead-letter topic"
                    );
                    outcomes[i] = self.counters.dropped().count(Outcome::Drop);
                    continue;
                }
            };
            let k = (self.key)(&message);
            let event = Event {
                id: e.id,
                event_type: e.event_type,
                source: e.source,
                topic: e.topic,
                pubsub_name: e.pubsub_name,
                traceparent: e.traceparent,
                message,
                raw: e.raw,
            };
            let at = *group_of.entry(k).or_insert_with_key(|k| {
                groups.push(Vec::new());
                keys.push(k.clone());
                groups.len() - 1
            });
            groups[at].push((i, event));
        }
        // Spawned, not joined in place: dropping the handles (a cancelled request) leaves
        // each group to finish.
        let running: Vec<_> = groups
            .into_iter()
            .zip(self.turns(keys))
            .map(|(group, turn)| {
                let indexes: Vec<usize> = group.iter().map(|(i, _)| *i).collect();
                let me = self.clone();
                let handled = tokio::spawn(me.in_order(turn, group).in_current_span());
                (indexes, handled)
            })
            .collect();
        for (indexes, handled) in running {
            match handled.await {
                Ok(answered) => {
                    for (i, outcome) in answered {
                        outcomes[i] = outcome;
                    }
                }
                // Only a runtime shutting down gets here (in_order catches its handlers'
                // panics): the group's events are delivered again.
                Err(e) => {
                    tracing::error!(error = %e, events = indexes.len(), "a group of the batch did not finish: retrying it");
                    self.counters.retried().add(indexes.len() as u64);
                }
            }
        }
        outcomes
    }

    /// An event of another type: SUCCESS for the family's other types, DROP for the rest
    /// (another version of the type, a stranger's type, no type at all).
    fn not_handled(&self, e: &Event<Vec<u8>>) -> Outcome
    where
        C: BulkCounters,
    {
        let t = e.event_type.as_str();
        if another_type_of_family(t, &self.family, &self.event_type) {
            tracing::debug!(event_type = t, family = %self.family, "not ours: acknowledged");
            return self.counters.not_ours().count(Outcome::Success);
        }
        tracing::warn!(
            topic = %e.topic,
            event_type = t,
            event_id = %e.id,
            dead_letter_topic = %self.dead_letter_topic,
            "no handler for this CloudEvent type: dropping to the dead-letter topic"
        );
        self.counters.dropped().count(Outcome::Drop)
    }

    /// One key's events, one after another, in the key's `turn`; after a RETRY the rest are
    /// held back (RETRY).
    async fn in_order<M, Fut>(
        self: Arc<Self>,
        turn: Arc<tokio::sync::Mutex<()>>,
        group: Vec<(usize, Event<M>)>,
    ) -> Vec<(usize, Outcome)>
    where
        H: Send + Sync + 'static,
        C: BulkCounters,
        M: Message + Default + Send + 'static,
        K: Fn(&M) -> String + Send + Sync + 'static,
        F: Fn(Arc<H>, Event<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let mut answered = Vec::with_capacity(group.len());
        // The key's turn first, then a permit, both held until the group ends: a group waiting
        // for its turn holds no permit, so the groups that hold the permits can all run. (The
        // semaphore is never closed, so acquiring cannot fail.)
        let _turn = turn.lock_owned().await;
        let _permit = self.keys_at_once.clone().acquire_owned().await.ok();
        let mut retrying = false;
        for (i, event) in group {
            if retrying {
                answered.push((i, self.counters.retried().count(Outcome::Retry)));
                continue;
            }
            let span = tracing::info_span!(
                "event",
                topic = %event.topic,
                event_type = %event.event_type,
                event_id = %event.id,
                traceparent = event.traceparent.as_deref().unwrap_or(""),
            );
            let handling = (self.handle)(self.consumer.clone(), event).instrument(span);
            let outcome = match tokio::spawn(handling).await {
                Ok(outcome) => outcome,
                Err(e) if e.is_panic() => {
                    tracing::error!(error = %e, "event handler panicked: dropping to the dead-letter topic");
                    self.counters.dropped().count(Outcome::Drop)
                }
                Err(e) => {
                    tracing::error!(error = %e, "event handler cancelled: retrying");
                    self.counters.retried().count(Outcome::Retry)
                }
            };
            retrying = outcome == Outcome::Retry;
            answered.push((i, outcome));
        }
        answered
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;

    use prost_types::Timestamp;

    use super::*;

    #[test]
    fn versions_are_told_apart_from_types() {
        assert_eq!(unversioned("todo.reminder.due.v1"), "todo.reminder.due");
        assert_eq!(unversioned("todo.reminder.due.v2"), "todo.reminder.due");
        assert_eq!(
            unversioned("todo.reminder.scheduled"),
            "todo.reminder.scheduled"
        );
        let due = "todo.reminder.due.v1";
        assert!(another_type_of_family(
            "todo.reminder.scheduled.v1",
            "todo.reminder.",
            due
        ));
        assert!(!another_type_of_family(
            "todo.reminder.due.v2",
            "todo.reminder.",
            due
        ));
        assert!(!another_type_of_family(
            "com.example.x.v1",
            "todo.reminder.",
            due
        ));
    }

    crate::counters! {
        struct Stats;
        struct StatsSnapshot;
        family not_ours, dropped;
        bulk retried;
        metric "test_bulk_handled_total";
        done,
        not_ours,
        dropped,
        retried,
    }

    /// Records the order it saw each key's events in; `seconds` says what to answer:
    /// 13 RETRY, 66 DROP, 99 panic, else SUCCESS.
    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<(i32, i64)>>,
        stats: Stats,
    }

    fn event(event_type: &str, key: i32, seconds: i64) -> Event<Vec<u8>> {
        let data = Timestamp {
            seconds,
            nanos: key,
        }
        .encode_to_vec();
        Event {
            id: format!("{key}-{seconds}"),
            event_type: event_type.into(),
            source: String::new(),
            topic: "t".into(),
            pubsub_name: "ps".into(),
            traceparent: None,
            message: data.clone(),
            raw: data,
        }
    }

    async fn answer(r: Arc<Recorder>, e: Event<Timestamp>) -> Outcome {
        // Later events of a key must wait for the earlier ones, however slow.
        let pause = u64::try_from(10 - e.message.seconds % 10).unwrap_or(0);
        tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        r.seen
            .lock()
            .unwrap()
            .push((e.message.nanos, e.message.seconds));
        match e.message.seconds {
            13 => r.stats.retried.count(Outcome::Retry),
            66 => r.stats.dropped.count(Outcome::Drop),
            99 => panic!("boom"),
            _ => r.stats.done.count(Outcome::Success),
        }
    }

    /// Hands `events` to `subs` as one bulk delivery, as daprd does; one outcome each.
    trait Deliver {
        async fn handle_batch(&self, events: Vec<Event<Vec<u8>>>) -> Vec<Outcome>;
    }

    impl Deliver for Subscriptions {
        async fn handle_batch(&self, events: Vec<Event<Vec<u8>>>) -> Vec<Outcome> {
            use dapr_appcallback::{
                AppCallbackService,
                proto::{
                    TopicEventBulkRequest, TopicEventBulkRequestEntry, TopicEventCeRequest,
                    app_callback_server::AppCallback,
                    topic_event_bulk_request_entry::Event as Entry,
                },
            };
            let entries = events
                .into_iter()
                .enumerate()
                .map(|(i, e)| TopicEventBulkRequestEntry {
                    entry_id: i.to_string(),
                    event: Some(Entry::CloudEvent(TopicEventCeRequest {
                        id: e.id,
                        r#type: e.event_type,
                        data: e.message,
                        ..TopicEventCeRequest::default()
                    })),
                    ..TopicEventBulkRequestEntry::default()
                })
                .collect();
            let request = TopicEventBulkRequest {
                entries,
                topic: "t".into(),
                pubsub_name: "ps".into(),
                ..TopicEventBulkRequest::default()
            };
            let answer = AppCallbackService::new(self.clone())
                .on_bulk_topic_event(tonic::Request::new(request))
                .await
                .unwrap()
                .into_inner();
            answer
                .statuses
                .iter()
                .map(|s| match s.status {
                    0 => Outcome::Success,
                    1 => Outcome::Retry,
                    _ => Outcome::Drop,
                })
                .collect()
        }
    }

    fn subs(r: Arc<Recorder>, stats: Arc<Stats>) -> Subscriptions {
        one_of_family_bulk(
            Route::new("ps", "t", "t-dlq")
                .event_type("x.done.v1")
                .bulk_raw(100, 10),
            "x.",
            stats,
            r,
            PerKey { keys_at_once: 2 },
            |m: &Timestamp| m.nanos.to_string(),
            answer,
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_key_in_order_and_a_retry_holds_back_the_rest_of_its_key() {
        let r = Arc::new(Recorder::default());
        let stats = Arc::new(Stats::default());
        let s = subs(r.clone(), stats.clone());
        let t = "x.done.v1";
        let mut batch = Vec::new();
        for seconds in 1..=9 {
            for key in 1..=3 {
                batch.push(event(t, key, seconds));
            }
        }
        // Key 4: SUCCESS, RETRY, then held back; key 5: a DROP, a panic, then on.
        batch.extend([
            event(t, 4, 1),
            event(t, 4, 13),
            event(t, 4, 2),
            event(t, 5, 66),
            event(t, 5, 99),
            event(t, 5, 3),
        ]);
        let outcomes = s.handle_batch(batch).await;
        let (head, tail) = outcomes.split_at(27);
        assert!(head.iter().all(|o| *o == Outcome::Success), "{head:?}");
        use Outcome::*;
        assert_eq!(tail, [Success, Retry, Retry, Drop, Drop, Success]);
        let seen = r.seen.lock().unwrap().clone();
        for key in 1..=3 {
            let order: Vec<i64> = seen
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, s)| *s)
                .collect();
            assert_eq!(order, (1..=9).collect::<Vec<_>>(), "key {key}");
        }
        assert!(!seen.contains(&(4, 2)), "held back behind the RETRY");
        // The handler counts its own answers; held back and panicked are counted here.
        assert_eq!(
            totals(&r.stats, &stats),
            (29, 2, 2),
            "(done, retried, dropped)"
        );
        // The helper's own: the held back RETRY and the panic's DROP.
        assert_eq!(crate::Counters::snapshot(&*stats).handled(), 2);
    }

    /// (done, retried, dropped) over the handler's and the helper's counters.
    fn totals(handler: &Stats, helper: &Stats) -> (u64, u64, u64) {
        (
            handler.done.get() + helper.done.get(),
            handler.retried.get() + helper.retried.get(),
            handler.dropped.get() + helper.dropped.get(),
        )
    }

    /// Regression: a delivery whose call was cancelled (tonic's request timeout) left its
    /// groups running, and daprd's second delivery of the batch handled the key's events at
    /// the same time: its first event began before the first delivery's had ended.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delivery_again_waits_for_its_keys_still_running_from_a_cancelled_one() {
        type Log = Mutex<Vec<String>>;
        let log = Arc::new(Log::default());
        let s = one_of_family_bulk(
            Route::new("ps", "t", "t-dlq")
                .event_type("x.done.v1")
                .bulk_raw(100, 10),
            "x.",
            Arc::new(Stats::default()),
            log.clone(),
            PerKey { keys_at_once: 2 },
            |m: &Timestamp| m.nanos.to_string(),
            |log: Arc<Log>, e: Event<Timestamp>| async move {
                let n = e.message.seconds;
                log.lock().unwrap().push(format!("start {n}"));
                if n == 1 {
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                }
                log.lock().unwrap().push(format!("end {n}"));
                Outcome::Success
            },
        );
        let batch = || vec![event("x.done.v1", 7, 1), event("x.done.v1", 7, 2)];
        let cancelled = tokio::time::timeout(
            std::time::Duration::from_millis(30),
            s.handle_batch(batch()),
        )
        .await;
        assert!(cancelled.is_err(), "the first delivery was to be cut off");
        assert_eq!(
            s.handle_batch(batch()).await,
            [Outcome::Success, Outcome::Success]
        );
        // The first delivery's group went on to its end before the second's began.
        let log = log.lock().unwrap().clone();
        assert_eq!(
            log,
            [
                "start 1", "end 1", "start 2", "end 2", "start 1", "end 1", "start 2", "end 2"
            ]
        );
    }

    #[tokio::test]
    async fn the_family_rules_apply_entry_by_entry() {
        let r = Arc::new(Recorder::default());
        let stats = Arc::new(Stats::default());
        let s = subs(r.clone(), stats.clone());
        let mut garbage = event("x.done.v1", 1, 2);
        garbage.message = vec![0xff, 0xff, 0xff];
        let outcomes = s
            .handle_batch(vec![
                event("x.done.v1", 1, 1),
                event("x.other.v1", 1, 1),
                event("x.done.v2", 1, 1),
                event("y.stranger.v1", 1, 1),
                garbage,
                event("", 1, 1),
                event("x.done.v1", 1, 3),
            ])
            .await;
        use Outcome::*;
        assert_eq!(
            outcomes,
            [Success, Success, Drop, Drop, Drop, Drop, Success]
        );
        assert_eq!((stats.not_ours.get(), stats.dropped.get()), (1, 4));
        assert_eq!(r.stats.done.get(), 2);
        // daprd is asked for the whole topic, raw, in bulk: no rule it cannot evaluate.
        let sub = &s.topic_subscriptions()[0];
        assert_eq!(sub.routes.as_ref().map(|r| r.rules.len()), Some(0));
        assert_eq!(
            sub.metadata
                .get(dapr_appcallback::RAW_PAYLOAD)
                .map(String::as_str),
            Some("true")
        );
        assert!(sub.bulk_subscribe.is_some());
    }
}
