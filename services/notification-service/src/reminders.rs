//! The thin shell around the core: due reminder events in, one delivery each out.

use std::sync::Arc;

use chrono::Utc;
use dapr_appcallback::{Event, Outcome, Route, Subscriptions};
use todo_proto::todo::events::v1::ReminderEvent;
use todo_topology::{
    components::PUBSUB,
    event_types::{REMINDER_DUE, REMINDER_FAMILY},
};
use tracing::Instrument;

use crate::{
    channel::Channel,
    config::Topics,
    delivery_log::{DeliveryLog, LogError, Once, OnceError},
    notification::notification_from,
};

todo_service::counters! {
    /// How many events ended how, since start, every event on `reminders` counted once
    /// (those that do not decode as a `ReminderEvent` among the dropped). The Prometheus
    /// counter covers the same events.
    pub struct Stats;
    /// A point-in-time copy of [`Stats`].
    pub struct StatsSnapshot;
    family not_ours, dropped;
    bulk retried;
    metric "reminders_handled_total";
    /// Due events recorded and delivered by this process.
    delivered,
    /// Due events whose reminder was already recorded (SUCCESS, nothing delivered).
    duplicates,
    /// Events of other reminder types (SUCCESS, untouched).
    not_ours,
    /// Events answered DROP (invalid, unknown type).
    dropped,
    /// Events answered RETRY (state store or channel failed, or held behind an earlier
    /// RETRY of the same user in the same delivery).
    retried,
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
                return stats.dropped.count(Outcome::Drop);
            }
        };
        let delivered = self.log.deliver_once(&n, self.channel.as_ref()).await;
        if let Ok(Once::Delivered | Once::DeliveredTakenOver | Once::DeliveredUnrecorded(_)) =
            &delivered
        {
            // From the reminder's moment to its delivery: the lateness users feel.
            metrics::histogram!("reminder_lateness_seconds").record(n.lateness().as_secs_f64());
        }
        match delivered {
            Ok(Once::Delivered) => {
                tracing::debug!(lateness_ms = n.lateness_ms, channel = %n.channel, "reminder delivered");
                stats.delivered.count(Outcome::Success)
            }
            Ok(Once::DeliveredTakenOver) => {
                tracing::warn!(
                    channel = %n.channel,
                    "reminder delivered, but this handling outlived its lease and was taken over: it may be delivered twice"
                );
                stats.delivered.count(Outcome::Success)
            }
            Ok(Once::DeliveredUnrecorded(e)) => {
                // Acknowledged all the same: a retry would deliver it again.
                tracing::error!(
                    error = %e,
                    store = %self.log.store_name(),
                    "reminder delivered but not recorded: it is not listed"
                );
                stats.delivered.count(Outcome::Success)
            }
            Ok(Once::Duplicate(earlier)) => {
                tracing::info!(
                    earlier_event_id = %earlier.event_id,
                    earlier_delivered_at = %earlier.delivered_at,
                    "reminder already delivered: skipping"
                );
                stats.duplicates.count(Outcome::Success)
            }
            // A claim that cannot be read will not read better on a retry: dead-letter the
            // event, to be looked at, instead of blocking its partition.
            Err(e @ OnceError::Claim(LogError::Corrupt { .. })) => {
                tracing::error!(
                    error = %e,
                    dead_letter_topic = %self.topics.reminders_dead_letter,
                    "unreadable delivery record: dropping to the dead-letter topic"
                );
                stats.dropped.count(Outcome::Drop)
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
                stats.retried.count(Outcome::Retry)
            }
        }
    }

    /// [`Self::on_due`] for [`todo_service::one_of_family_bulk`], which runs each handling
    /// in a task of its own: a request cancelled by a timeout or a dropped connection (the
    /// sidecar dying) must not cut a delivery between its claim and its record (see
    /// crate::delivery_log). The redelivered event waits for it, and finds it recorded.
    async fn on_due_owned(self: Arc<Self>, e: Event<ReminderEvent>) -> Outcome {
        self.on_due(&e).await
    }

    /// The routing table: `reminders` in bulk (raw payloads, see [`Route::bulk_raw`]),
    /// entry by entry: due events to [`Self::on_due`], each user's in order and several
    /// users at once; scheduled, cancelled (task-service's bookkeeping) and reminder types
    /// added later acknowledged as not ours; the rest (another version of `due`, a
    /// stranger's type, bytes that are no `ReminderEvent`) counted and DROPped to
    /// `reminders-dlq` (see [`todo_service::one_of_family_per_user`]). A user's list
    /// (`inbox:<user>`) is one read-modify-write per delivery: handled in order, the writes
    /// of one batch do not race each other.
    pub fn subscriptions(self: Arc<Self>) -> Subscriptions {
        let t = &self.topics;
        let due =
            Route::new(PUBSUB, &t.reminders, &t.reminders_dead_letter).event_type(REMINDER_DUE);
        let stats = self.stats.clone();
        let user = |m: &ReminderEvent| m.user_id.clone();
        todo_service::one_of_family_per_user(
            due,
            REMINDER_FAMILY,
            stats,
            self,
            user,
            Self::on_due_owned,
        )
    }
}
