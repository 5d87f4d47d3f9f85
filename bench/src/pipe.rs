//! The measuring consumer: an AppCallback app that records, once per event id, how long
//! each `TaskEvent` took from the instant carried in its `occurred_at` to its delivery,
//! taking its events one per call or in bulk ([`Delivery`]).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError},
};

use anyhow::bail;
use chrono::Utc;
use dapr_appcallback::{Event, Outcome, Route, Subscriptions, SubscriptionsBuilder};
use dapr_publisher::OutgoingEvent;
use hdrhistogram::Histogram;
use prost::Message;
use todo_harness::{bench::env_usize, recorder::serve_with};
use todo_proto::todo::{
    events::v1::{TaskEvent, TaskEventKind},
    v1::Task,
};
use todo_topology::{components::PUBSUB, topics};
use tokio::{sync::watch, time::Instant};

use crate::report::histogram;

/// `task`'s event of `kind` (CloudEvent type `event_type`) on `topic`, keyed by its user
/// and stamped with the current instant as its publish time (`occurred_at`), which the
/// consumer's [`Phase::record`] measures from.
pub fn stamped_event(
    topic: &str,
    kind: TaskEventKind,
    event_type: &str,
    changed_fields: Vec<String>,
    task: Task,
) -> OutgoingEvent {
    let user = task.user_id.clone();
    let event = TaskEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: Some(todo_proto::to_timestamp(Utc::now())),
        user_id: user.clone(),
        kind: kind as i32,
        task: Some(task),
        changed_fields,
        actor: "user:test".into(),
    };
    OutgoingEvent {
        id: event.event_id.clone(),
        topic: topic.to_owned(),
        event_type: event_type.to_owned(),
        key: user,
        data: event.encode_to_vec(),
    }
}

/// How daprd hands the consumer a topic's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// One event per `OnTopicEvent` call (daprd's default).
    Single,
    /// Bulk subscribe with raw payloads ([`Route::bulk_raw`], as the services subscribe):
    /// at most `max_messages` events per `OnBulkTopicEvent` call, daprd waiting at most
    /// `max_await_ms` to fill one.
    Bulk {
        max_messages: i32,
        max_await_ms: i32,
    },
}

impl Delivery {
    /// Bulk subscribe as `BENCH_SUB_BATCH` (100 events per call) and `BENCH_SUB_AWAIT_MS`
    /// (10 ms) say; the defaults are the services' (`todo_service::per_user`).
    pub fn bulk_from_env() -> anyhow::Result<Self> {
        let int = |name, default| -> anyhow::Result<i32> {
            let n = env_usize(name, default)?;
            i32::try_from(n).map_err(|_| anyhow::anyhow!("{name}={n} is too large"))
        };
        Ok(Self::Bulk {
            max_messages: int("BENCH_SUB_BATCH", 100)?,
            max_await_ms: int("BENCH_SUB_AWAIT_MS", 10)?,
        })
    }

    /// For reports: `one event per call`, `bulk subscribe ≤ 100 per call, 10 ms`.
    pub fn describe(self) -> String {
        match self {
            Self::Single => "one event per call".to_owned(),
            Self::Bulk {
                max_messages,
                max_await_ms,
            } => format!("bulk subscribe ≤ {max_messages} per call, {max_await_ms} ms"),
        }
    }
}

/// What the consumer has seen of one phase.
struct Recorder {
    seen: HashSet<String>,
    duplicates: u64,
    /// Events whose `occurred_at` was missing or out of range, or that were no `TaskEvent`.
    unreadable: u64,
    /// `occurred_at` → delivery, in microseconds.
    latency_us: Histogram<u64>,
    last_delivery: Option<Instant>,
}

/// One phase's deliveries.
pub struct Phase {
    recorder: Mutex<Recorder>,
    /// The number of distinct events delivered so far.
    delivered: watch::Sender<usize>,
}

impl Phase {
    pub fn new() -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            recorder: Mutex::new(Recorder {
                seen: HashSet::new(),
                duplicates: 0,
                unreadable: 0,
                latency_us: histogram()?,
                last_delivery: None,
            }),
            delivered: watch::channel(0).0,
        }))
    }

    /// The consumer's handler: records the event's latency once per event id.
    pub fn record(&self, event: &TaskEvent) {
        let now = Utc::now();
        let at = Instant::now();
        let mut r = self.recorder.lock().unwrap_or_else(PoisonError::into_inner);
        if !r.seen.insert(event.event_id.clone()) {
            r.duplicates += 1;
            return;
        }
        match event
            .occurred_at
            .as_ref()
            .and_then(todo_proto::from_timestamp)
        {
            Some(occurred) => {
                let us = (now - occurred).num_microseconds().unwrap_or(i64::MAX);
                r.latency_us
                    .saturating_record(u64::try_from(us).unwrap_or(0).max(1));
            }
            None => r.unreadable += 1,
        }
        r.last_delivery = Some(at);
        let n = r.seen.len();
        drop(r);
        self.delivered.send_replace(n);
    }

    /// Counts an event that is no `TaskEvent` (reported as unreadable).
    pub fn record_undecodable(&self) {
        self.recorder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unreadable += 1;
    }

    /// Adds to `subs` the route that records every event on `topic` (dead-lettered to its
    /// `-dlq`) in this phase, delivered as `delivery` says. An event that is no `TaskEvent`
    /// is DROPped (and, in bulk, counted as unreadable).
    pub fn subscribe(
        self: &Arc<Self>,
        subs: SubscriptionsBuilder,
        topic: &str,
        delivery: Delivery,
    ) -> SubscriptionsBuilder {
        let route = Route::new(PUBSUB, topic, topics::dead_letter(topic));
        let phase = self.clone();
        match delivery {
            Delivery::Single => subs.route(route, move |e: Event<TaskEvent>| {
                phase.record(&e.message);
                async { Outcome::Success }
            }),
            Delivery::Bulk {
                max_messages,
                max_await_ms,
            } => subs.route_batch(
                route.bulk_raw(max_messages, max_await_ms),
                move |events: Vec<Event<Vec<u8>>>| {
                    let outcomes = events
                        .iter()
                        .map(|e| match TaskEvent::decode(e.message.as_slice()) {
                            Ok(event) => {
                                phase.record(&event);
                                Outcome::Success
                            }
                            Err(_) => {
                                phase.record_undecodable();
                                Outcome::Drop
                            }
                        })
                        .collect();
                    async move { outcomes }
                },
            ),
        }
    }

    /// Waits until `n` distinct events arrived, failing at `deadline` with `what` in the
    /// error.
    pub async fn wait_for(&self, n: usize, deadline: Instant, what: &str) -> anyhow::Result<()> {
        let mut delivered = self.delivered.subscribe();
        let waited = tokio::time::timeout_at(deadline, delivered.wait_for(|got| *got >= n)).await;
        let got = *self.delivered.borrow();
        match waited {
            Err(_) => bail!(
                "{what}: {got} of {n} events arrived in time (see the daprd logs under \
                 target/test-logs/)"
            ),
            Ok(Err(_)) => bail!("{what}: the consumer's recorder went away"),
            Ok(Ok(_)) => {}
        }
        Ok(())
    }

    /// (distinct, duplicates, unreadable, latency, last delivery).
    pub fn snapshot(&self) -> (usize, u64, u64, Histogram<u64>, Option<Instant>) {
        let r = self.recorder.lock().unwrap_or_else(PoisonError::into_inner);
        (
            r.seen.len(),
            r.duplicates,
            r.unreadable,
            r.latency_us.clone(),
            r.last_delivery,
        )
    }
}

/// Serves the consumer's AppCallback on a free port, TCP_NODELAY on or off (see
/// [`serve_with`]); returns the port.
pub async fn serve(subs: Subscriptions, nodelay: bool) -> anyhow::Result<u16> {
    let (port, _server) = serve_with(subs, nodelay, None).await?;
    Ok(port)
}
