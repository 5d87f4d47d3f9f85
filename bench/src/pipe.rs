//! The measuring consumer: an AppCallback app that records, once per event id, how long
//! each `TaskEvent` took from the instant carried in its `occurred_at` to its delivery.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError},
};

use anyhow::bail;
use chrono::Utc;
use dapr_appcallback::Subscriptions;
use dapr_publisher::OutgoingEvent;
use hdrhistogram::Histogram;
use prost::Message;
use todo_harness::recorder::serve_with;
use todo_proto::todo::{
    events::v1::{TaskEvent, TaskEventKind},
    v1::Task,
};
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

/// What the consumer has seen of one phase.
struct Recorder {
    seen: HashSet<String>,
    duplicates: u64,
    /// Events whose `occurred_at` was missing or out of range.
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
