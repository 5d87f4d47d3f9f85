//! The thin shell around the core: due reminder events in, one delivery each out.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use chrono::Utc;
use dapr_appcallback::{Event, Outcome, Route, Subscriptions};
use todo_proto::todo::events::v1::ReminderEvent;
use todo_topology::{components::PUBSUB, event_types};
use tracing::Instrument;

use crate::{
    channel::Channel,
    config::Topics,
    delivery_log::{DeliveryLog, LogError, Once, OnceError},
    notification::notification_from,
};

/// How many events ended how, since start. Events that do not decode as a `ReminderEvent`
/// are DROPped by the AppCallback runtime before they reach a handler, and are not counted.
#[derive(Debug, Default)]
pub struct Stats {
    delivered: AtomicU64,
    duplicates: AtomicU64,
    not_ours: AtomicU64,
    dropped: AtomicU64,
    retried: AtomicU64,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Due events recorded and delivered by this process.
    pub delivered: u64,
    /// Due events whose reminder was already recorded (SUCCESS, nothing delivered).
    pub duplicates: u64,
    /// Events of other reminder types (SUCCESS, untouched).
    pub not_ours: u64,
    /// Events answered DROP (invalid, unknown type).
    pub dropped: u64,
    /// Events answered RETRY (state store or channel failed).
    pub retried: u64,
}

impl StatsSnapshot {
    /// Every answer given, RETRYs included.
    pub fn handled(&self) -> u64 {
        self.delivered + self.duplicates + self.not_ours + self.dropped + self.retried
    }
}

impl todo_service::Counters for Stats {
    type Snapshot = StatsSnapshot;
    fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            delivered: self.delivered.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            not_ours: self.not_ours.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
        }
    }
}

impl Stats {
    /// Counts one answer here and in the Prometheus counter `reminders_handled_total{result}`
    /// (due reminders and other events on `reminders`).
    fn count(counter: &AtomicU64, result: &'static str, outcome: Outcome) -> Outcome {
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("reminders_handled_total", "result" => result).increment(1);
        outcome
    }
}

/// Handles the events of `reminders`.
#[derive(Debug)]
pub struct Reminders {
    log: DeliveryLog,
    channel: Arc<dyn Channel>,
    topics: Topics,
    stats: Arc<Stats>,
}

impl Reminders {
    pub fn new(
        log: DeliveryLog,
        channel: Arc<dyn Channel>,
        topics: Topics,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            log,
            channel,
            topics,
            stats,
        }
    }

    /// The routing table: due events to [`Self::on_due`], the other reminder types acknowledged as
    /// not ours; the rest is DROPped to `reminders-dlq`.
    pub fn subscriptions(self: Arc<Self>) -> Subscriptions {
        let route = Route::new(
            PUBSUB,
            &self.topics.reminders,
            &self.topics.reminders_dead_letter,
        );
        let due = self.clone();
        let stats = self.stats.clone();
        let dropped = self.stats.clone();
        Subscriptions::builder()
            .route(
                route.clone().event_type(event_types::REMINDER_DUE),
                move |e: Event<ReminderEvent>| {
                    let this = due.clone();
                    // In a task of its own: a request cancelled by a timeout or a dropped
                    // connection (the sidecar dying) must not cut a delivery between its
                    // claim and its record (see crate::delivery_log). The redelivered event
                    // waits for it, and finds it recorded.
                    async move {
                        let handling =
                            tokio::spawn(async move { this.on_due(&e).await }.in_current_span());
                        handling.await.unwrap_or_else(|e| {
                            // As the AppCallback runtime does: a panic would recur on every
                            // redelivery. A cancelled task (the runtime stopping) is retried.
                            let outcome = if e.is_panic() {
                                Outcome::Drop
                            } else {
                                Outcome::Retry
                            };
                            tracing::error!(error = %e, ?outcome, "reminder handler failed");
                            outcome
                        })
                    }
                },
            )
            // Scheduled, cancelled (task-service's bookkeeping) and reminder types added
            // later are not ours: acknowledged untouched.
            // Anything else (another version of `due`, a stranger's type) is counted and
            // DROPped to the dead-letter topic.
            .family(
                &route,
                event_types::REMINDER_FAMILY,
                move |_| {
                    Stats::count(&stats.not_ours, "not_ours", Outcome::Success);
                },
                move |_| {
                    Stats::count(&dropped.dropped, "dropped", Outcome::Drop);
                },
            )
            .build()
    }

    /// A due reminder: delivered once, whoever else handles it (see crate::delivery_log).
    pub async fn on_due(&self, event: &Event<ReminderEvent>) -> Outcome {
        let m = &event.message;
        let span = tracing::info_span!(
            "reminder_due",
            reminder_id = %m.reminder_id,
            task_id = %m.task_id,
            user_id = %m.user_id,
        );
        self.deliver_once(m).instrument(span).await
    }

    async fn deliver_once(&self, m: &ReminderEvent) -> Outcome {
        let stats = &self.stats;
        let n = match notification_from(m, self.channel.name(), Utc::now()) {
            Ok(n) => n,
            Err(why) => {
                tracing::warn!(
                    reason = %why,
                    reminder_event_id = %m.event_id,
                    dead_letter_topic = %self.topics.reminders_dead_letter,
                    "invalid due reminder: dropping to the dead-letter topic"
                );
                return Stats::count(&stats.dropped, "dropped", Outcome::Drop);
            }
        };
        match self.log.deliver_once(&n, self.channel.as_ref()).await {
            Ok(Once::Delivered) => {
                tracing::debug!(lateness_ms = n.lateness_ms, channel = %n.channel, "reminder delivered");
                Stats::count(&stats.delivered, "delivered", Outcome::Success)
            }
            Ok(Once::DeliveredTakenOver) => {
                tracing::warn!(
                    channel = %n.channel,
                    "reminder delivered, but this handling outlived its lease and was taken over: it may be delivered twice"
                );
                Stats::count(&stats.delivered, "delivered", Outcome::Success)
            }
            Ok(Once::DeliveredUnrecorded(e)) => {
                // Acknowledged all the same: a retry would deliver it again.
                tracing::error!(
                    error = %e,
                    store = %self.log.store_name(),
                    "reminder delivered but not recorded: it is not listed"
                );
                Stats::count(&stats.delivered, "delivered", Outcome::Success)
            }
            Ok(Once::Duplicate(earlier)) => {
                tracing::info!(
                    earlier_event_id = %earlier.event_id,
                    earlier_delivered_at = %earlier.delivered_at,
                    "reminder already delivered: skipping"
                );
                Stats::count(&stats.duplicates, "duplicates", Outcome::Success)
            }
            // A claim that cannot be read will not read better on a retry: dead-letter the
            // event, to be looked at, instead of blocking its partition.
            Err(e @ OnceError::Claim(LogError::Corrupt { .. })) => {
                tracing::error!(
                    error = %e,
                    dead_letter_topic = %self.topics.reminders_dead_letter,
                    "unreadable delivery record: dropping to the dead-letter topic"
                );
                Stats::count(&stats.dropped, "dropped", Outcome::Drop)
            }
            Err(e) => {
                tracing::warn!(error = %e, store = %self.log.store_name(), "reminder not delivered: retrying");
                if let OnceError::Delivery {
                    release: Some(release),
                    ..
                } = &e
                {
                    tracing::warn!(
                        error = %release,
                        "could not release the claim of a failed delivery: the retry waits for its lease"
                    );
                }
                Stats::count(&stats.retried, "retried", Outcome::Retry)
            }
        }
    }
}
