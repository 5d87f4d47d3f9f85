//! The thin shell around the core: each bulk delivery of due reminder events in, one
//! delivery per reminder out.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use dapr_appcallback::{Event, Outcome, Route, Subscriptions};
use prost::Message;
use todo_proto::todo::events::v1::ReminderEvent;
use todo_service::per_user;
use todo_topology::{
    components::PUBSUB,
    event_types::{REMINDER_DUE, REMINDER_FAMILY},
};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::{
    channel::Channel,
    config::Topics,
    delivery_log::{DeliveryLog, Once, OnceError},
    notification::{Notification, notification_from},
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
    /// How many users' reminders are handled at the same time, across batches.
    users_at_once: Arc<Semaphore>,
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
            users_at_once: Arc::new(Semaphore::new(per_user::USERS_AT_ONCE.keys_at_once.max(1))),
        }
    }

    /// One bulk delivery of `reminders`: due events delivered once each, together (see
    /// crate::delivery_batch), the family's other types acknowledged, the rest DROPped. One
    /// outcome per event, in their order. Runs in a task of its own: a request cancelled by
    /// a timeout or a dropped connection (the sidecar dying) must not cut a batch between its
    /// claim and its record (see crate::delivery_log). The redelivered events wait for it, and
    /// find them recorded.
    async fn on_batch(self: Arc<Self>, events: Vec<Event<Vec<u8>>>) -> Vec<Outcome> {
        let count = events.len();
        let me = self.clone();
        let handled = tokio::spawn(async move { me.handle_batch(events).await }.in_current_span());
        match handled.await {
            Ok(outcomes) => outcomes,
            // Only a bug or a runtime shutting down gets here: the events are delivered again.
            Err(e) => {
                tracing::error!(error = %e, events = count, "a batch of reminders did not finish: retrying it");
                self.stats.retried.add(count as u64);
                vec![Outcome::Retry; count]
            }
        }
    }

    async fn handle_batch(&self, events: Vec<Event<Vec<u8>>>) -> Vec<Outcome> {
        let mut outcomes = vec![Outcome::Retry; events.len()];
        let mut due: Vec<(usize, Notification)> = Vec::with_capacity(events.len());
        // When each handling starts: strictly increasing, so a user's list keeps the order
        // of the batch (it is sorted by delivery time).
        let mut last: Option<DateTime<Utc>> = None;
        for (i, e) in events.into_iter().enumerate() {
            if e.event_type != REMINDER_DUE {
                outcomes[i] = self.not_handled(&e);
                continue;
            }
            let m = match ReminderEvent::decode(e.message.as_slice()) {
                Ok(m) => m,
                Err(err) => {
                    tracing::warn!(
                        error = %err,
                        event_id = %e.id,
                        bytes = e.message.len(),
                        dead_letter_topic = %self.topics.reminders_dead_letter,
                        "event does not decode as a ReminderEvent: dropping to the dead-letter topic"
                    );
                    outcomes[i] = self.stats.dropped.count(Outcome::Drop);
                    continue;
                }
            };
            let now = match last {
                Some(t) => Utc::now().max(t + TimeDelta::nanoseconds(1)),
                None => Utc::now(),
            };
            last = Some(now);
            match notification_from(&m, self.channel.name(), now) {
                Ok(n) => due.push((i, n)),
                Err(why) => {
                    tracing::warn!(
                        reason = %why,
                        event_id = %e.id,
                        reminder_event_id = %m.event_id,
                        dead_letter_topic = %self.topics.reminders_dead_letter,
                        "invalid due reminder: dropping to the dead-letter topic"
                    );
                    outcomes[i] = self.stats.dropped.count(Outcome::Drop);
                }
            }
        }
        if due.is_empty() {
            return outcomes;
        }
        let (indexes, ns): (Vec<usize>, Vec<Notification>) = due.into_iter().unzip();
        let answers = self
            .log
            .deliver_batch(ns.clone(), self.channel.clone(), self.users_at_once.clone())
            .await;
        for ((i, n), answer) in indexes.into_iter().zip(&ns).zip(answers) {
            let span = tracing::info_span!(
                "reminder_due",
                reminder_id = %n.reminder_id,
                task_id = %n.task_id,
                user_id = %n.user_id,
                event_id = %n.event_id,
            );
            outcomes[i] = span.in_scope(|| self.answer(n, answer));
        }
        outcomes
    }

    /// An event of another type: SUCCESS for the family's other types (scheduled, cancelled,
    /// those added later), DROP for the rest (another version of `due`, a stranger's type).
    fn not_handled(&self, e: &Event<Vec<u8>>) -> Outcome {
        let t = e.event_type.as_str();
        if todo_service::another_type_of_family(t, REMINDER_FAMILY, REMINDER_DUE) {
            tracing::debug!(event_type = t, "not ours: acknowledged");
            return self.stats.not_ours.count(Outcome::Success);
        }
        tracing::warn!(
            topic = %e.topic,
            event_type = t,
            event_id = %e.id,
            dead_letter_topic = %self.topics.reminders_dead_letter,
            "no handler for this CloudEvent type: dropping to the dead-letter topic"
        );
        self.stats.dropped.count(Outcome::Drop)
    }

    /// What to answer for `n`, given how delivering it ended; counted and logged.
    fn answer(&self, n: &Notification, delivered: Result<Once, OnceError>) -> Outcome {
        let stats = &self.stats;
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
            // A claim that cannot be read will not read better on a retry, nor will a
            // channel that panics deliver: dead-letter the event, to be looked at, instead of
            // blocking its partition.
            Err(e) if e.is_final() => {
                tracing::error!(
                    error = %e,
                    dead_letter_topic = %self.topics.reminders_dead_letter,
                    "reminder cannot be delivered: dropping to the dead-letter topic"
                );
                stats.dropped.count(Outcome::Drop)
            }
            Err(OnceError::HeldBack) => {
                tracing::debug!("held back behind an earlier reminder of the user: retrying");
                stats.retried.count(Outcome::Retry)
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

    /// The routing table: `reminders` in bulk (raw payloads, see [`Route::bulk_raw`], as
    /// [`todo_service::per_user`] says), each delivery handled as one batch
    /// ([`Self::on_batch`]): its due events delivered together, each user's in order and
    /// several users at once; scheduled, cancelled (task-service's bookkeeping) and reminder
    /// types added later acknowledged as not ours; the rest (another version of `due`, a
    /// stranger's type, bytes that are no `ReminderEvent`) counted and DROPped to
    /// `reminders-dlq`. daprd cannot apply routing rules to raw payloads, so the
    /// subscription takes every type on the topic and the types are told apart here (as
    /// [`todo_service::one_of_family_bulk`] does). Once a user's event is answered RETRY,
    /// the user's later events in the batch are answered RETRY unhandled: daprd redelivers
    /// them after it.
    pub fn subscriptions(self: Arc<Self>) -> Subscriptions {
        let t = &self.topics;
        let route = Route::new(PUBSUB, &t.reminders, &t.reminders_dead_letter)
            .bulk_raw(per_user::BULK_MAX_MESSAGES, per_user::BULK_MAX_AWAIT_MS);
        Subscriptions::builder()
            .route_batch(route, move |events| {
                let me = self.clone();
                async move { me.on_batch(events).await }
            })
            .build()
    }
}
