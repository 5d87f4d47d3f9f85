//! The thin shell around the core: completed task events in, `OccurrenceRequested` out.

use std::sync::Arc;

use chrono::Utc;
use dapr_appcallback::{Event, Outcome, Route, Subscriptions};
use dapr_publisher::{GroupPublisher, OutgoingEvent, Publisher};
use prost::Message;
use todo_proto::todo::events::v1::TaskEvent;
use todo_topology::{
    components::PUBSUB,
    event_types::{self, TASK_COMPLETED, TASK_FAMILY},
};
use uuid::Uuid;

use crate::{
    config::Topics,
    occurrence::{Decision, next_occurrence},
};

todo_service::counters! {
    /// How many events ended how, since start, every event on `task-events` counted once
    /// (those that do not decode as a `TaskEvent` among the dropped). The Prometheus counter
    /// covers the same events.
    pub struct Stats;
    /// A point-in-time copy of [`Stats`].
    pub struct StatsSnapshot;
    family not_ours, dropped;
    bulk retried;
    metric "task_events_handled_total";
    /// Completed events that produced a published `OccurrenceRequested`.
    published,
    /// Completed events of one-off tasks or of ended series (SUCCESS, nothing published).
    nothing_to_do,
    /// Events of other task event types (SUCCESS, untouched).
    not_ours,
    /// Events answered DROP (invalid, unknown type, publish refused for good).
    dropped,
    /// Events answered RETRY (publishing failed transiently, or held behind an earlier
    /// RETRY of the same series in the same delivery).
    retried,
}

/// Handles the events of `task-events`.
#[derive(Debug)]
pub struct Completions {
    /// The batch's next occurrences, published together (one bulk call for those of
    /// several users handled at once).
    publisher: GroupPublisher,
    topics: Topics,
    stats: Arc<Stats>,
}

impl Completions {
    pub fn new(publisher: Publisher, topics: Topics, stats: Arc<Stats>) -> Self {
        Self {
            publisher: GroupPublisher::new(
                publisher,
                todo_service::per_user::SERIES_AT_ONCE.keys_at_once,
            ),
            topics,
            stats,
        }
    }

    /// A completed task: publish its next occurrence, if it has one.
    pub async fn on_completed(self: Arc<Self>, event: Event<TaskEvent>) -> Outcome {
        let stats = &self.stats;
        let message = &event.message;
        let task_id = message.task.as_ref().map_or("", |t| t.id.as_str());
        let occurrence = match next_occurrence(message, Uuid::now_v7(), Utc::now()) {
            Ok(Decision::Next(o)) => o,
            Ok(decision) => {
                tracing::debug!(task_id, ?decision, "nothing to publish");
                return stats.nothing_to_do.count(Outcome::Success);
            }
            Err(why) => {
                tracing::warn!(
                    reason = %why,
                    task_event_id = %message.event_id,
                    task_id,
                    user_id = %message.user_id,
                    dead_letter_topic = %self.topics.task_events_dead_letter,
                    "invalid completed-task event: dropping to the dead-letter topic"
                );
                return stats.dropped.count(Outcome::Drop);
            }
        };
        let outgoing = OutgoingEvent {
            id: occurrence.event_id.clone(),
            topic: self.topics.task_occurrences.clone(),
            event_type: event_types::OCCURRENCE_REQUESTED.to_owned(),
            key: occurrence.user_id.clone(),
            data: occurrence.encode_to_vec(),
        };
        match self.publisher.publish(outgoing).await {
            Ok(()) => {
                tracing::info!(
                    parent_task_id = task_id,
                    next_task_id = %occurrence.task_id,
                    occurrence_index = occurrence.occurrence_index,
                    next_due = ?occurrence.due_time.as_ref().and_then(todo_proto::from_timestamp),
                    "next occurrence requested"
                );
                stats.published.count(Outcome::Success)
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, task_id, "publishing the next occurrence failed: retrying");
                stats.retried.count(Outcome::Retry)
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    task_id,
                    "the sidecar refused the next occurrence for good: dropping to the dead-letter topic"
                );
                stats.dropped.count(Outcome::Drop)
            }
        }
    }

    /// The routing table: `task-events` in bulk (raw payloads, see [`Route::bulk_raw`]),
    /// entry by entry: completed events to [`Self::on_completed`], each series' in order and
    /// several series at once; created, updated, … (and task types added later)
    /// acknowledged as not ours; the rest (another version of `completed`, a stranger's
    /// type, bytes that are no `TaskEvent`) counted and DROPped to `task-events-dlq`, where
    /// it is seen (see [`todo_service::one_of_family_bulk`]).
    pub fn subscriptions(self: Arc<Self>) -> Subscriptions {
        let t = &self.topics;
        let completed = Route::new(PUBSUB, &t.task_events, &t.task_events_dead_letter)
            .event_type(TASK_COMPLETED);
        let stats = self.stats.clone();
        // In order per series, not per user: a series' completions ask for its occurrences
        // in turn, and nothing ties one series' requests to another's (each names its own
        // task, created once whatever the order). So a user's series go through at once, and
        // one user's burst does not queue their completions behind one publish each.
        let series = |m: &TaskEvent| match m.task.as_ref() {
            Some(t) if !t.series_id.is_empty() => t.series_id.clone(),
            Some(t) if !t.id.is_empty() => t.id.clone(),
            _ => m.user_id.clone(),
        };
        use todo_service::per_user::{BULK_MAX_AWAIT_MS, BULK_MAX_MESSAGES, SERIES_AT_ONCE};
        todo_service::one_of_family_bulk(
            completed.bulk_raw(BULK_MAX_MESSAGES, BULK_MAX_AWAIT_MS),
            TASK_FAMILY,
            stats,
            self,
            SERIES_AT_ONCE,
            series,
            Self::on_completed,
        )
    }
}
