//! The thin shell around the core: completed task events in, `OccurrenceRequested` out.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use chrono::Utc;
use dapr_appcallback::{Event, Outcome, Route, Subscriptions};
use dapr_publisher::{OutgoingEvent, Publisher};
use prost::Message;
use todo_proto::todo::events::v1::TaskEvent;
use todo_topology::{components::PUBSUB, event_types};
use uuid::Uuid;

use crate::{
    config::Topics,
    occurrence::{Decision, next_occurrence},
};

/// How many events ended how, since start. Events that do not decode as a `TaskEvent` are
/// DROPped by the AppCallback runtime before they reach a handler, and are not counted.
#[derive(Debug, Default)]
pub struct Stats {
    published: AtomicU64,
    nothing_to_do: AtomicU64,
    not_ours: AtomicU64,
    dropped: AtomicU64,
    retried: AtomicU64,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Completed events that produced a published `OccurrenceRequested`.
    pub published: u64,
    /// Completed events of one-off tasks or of ended series (SUCCESS, nothing published).
    pub nothing_to_do: u64,
    /// Events of other task event types (SUCCESS, untouched).
    pub not_ours: u64,
    /// Events answered DROP (invalid, unknown type, publish refused for good).
    pub dropped: u64,
    /// Events answered RETRY (publishing failed transiently).
    pub retried: u64,
}

impl StatsSnapshot {
    /// Every answer given, RETRYs included.
    pub fn handled(&self) -> u64 {
        self.published + self.nothing_to_do + self.not_ours + self.dropped + self.retried
    }
}

impl todo_service::Counters for Stats {
    type Snapshot = StatsSnapshot;
    fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            published: self.published.load(Ordering::Relaxed),
            nothing_to_do: self.nothing_to_do.load(Ordering::Relaxed),
            not_ours: self.not_ours.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
        }
    }
}

impl Stats {
    /// Counts one answer here and in the Prometheus counter `task_events_handled_total{result}`
    /// (events on `task-events`).
    fn count(counter: &AtomicU64, result: &'static str, outcome: Outcome) -> Outcome {
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("task_events_handled_total", "result" => result).increment(1);
        outcome
    }
}

/// Handles the events of `task-events`.
#[derive(Debug)]
pub struct Completions {
    publisher: Publisher,
    topics: Topics,
    stats: Arc<Stats>,
}

impl Completions {
    pub fn new(publisher: Publisher, topics: Topics, stats: Arc<Stats>) -> Self {
        Self {
            publisher,
            topics,
            stats,
        }
    }

    /// The routing table: completed events to [`Self::on_completed`], the other task types
    /// acknowledged as not ours; the rest is DROPped to `task-events-dlq`.
    pub fn subscriptions(self: Arc<Self>) -> Subscriptions {
        let route = Route::new(
            PUBSUB,
            &self.topics.task_events,
            &self.topics.task_events_dead_letter,
        );
        let completed = self.clone();
        let stats = self.stats.clone();
        let dropped = self.stats.clone();
        Subscriptions::builder()
            .route(
                route.clone().event_type(event_types::TASK_COMPLETED),
                move |e: Event<TaskEvent>| {
                    let this = completed.clone();
                    async move { this.on_completed(&e).await }
                },
            )
            // Created, updated, … (and task types added later) are not ours: acknowledged.
            // Anything else (another version of `completed`, a stranger's type) is counted
            // and DROPped to the dead-letter topic, where it is seen.
            .family(
                &route,
                event_types::TASK_FAMILY,
                move |_| {
                    Stats::count(&stats.not_ours, "not_ours", Outcome::Success);
                },
                move |_| {
                    Stats::count(&dropped.dropped, "dropped", Outcome::Drop);
                },
            )
            .build()
    }

    /// A completed task: publish its next occurrence, if it has one.
    pub async fn on_completed(&self, event: &Event<TaskEvent>) -> Outcome {
        let stats = &self.stats;
        let message = &event.message;
        let task_id = message.task.as_ref().map_or("", |t| t.id.as_str());
        let occurrence = match next_occurrence(message, Uuid::now_v7(), Utc::now()) {
            Ok(Decision::Next(o)) => o,
            Ok(decision) => {
                tracing::debug!(task_id, ?decision, "nothing to publish");
                return Stats::count(&stats.nothing_to_do, "nothing_to_do", Outcome::Success);
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
                return Stats::count(&stats.dropped, "dropped", Outcome::Drop);
            }
        };
        let outgoing = OutgoingEvent {
            id: occurrence.event_id.clone(),
            topic: self.topics.task_occurrences.clone(),
            event_type: event_types::OCCURRENCE_REQUESTED.to_owned(),
            key: occurrence.user_id.clone(),
            data: occurrence.encode_to_vec(),
        };
        match self.publisher.publish(&outgoing).await {
            Ok(()) => {
                tracing::info!(
                    parent_task_id = task_id,
                    next_task_id = %occurrence.task_id,
                    occurrence_index = occurrence.occurrence_index,
                    next_due = ?occurrence.due_time.as_ref().and_then(todo_proto::from_timestamp),
                    "next occurrence requested"
                );
                Stats::count(&stats.published, "published", Outcome::Success)
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, task_id, "publishing the next occurrence failed: retrying");
                Stats::count(&stats.retried, "retried", Outcome::Retry)
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    task_id,
                    "the sidecar refused the next occurrence for good: dropping to the dead-letter topic"
                );
                Stats::count(&stats.dropped, "dropped", Outcome::Drop)
            }
        }
    }
}
