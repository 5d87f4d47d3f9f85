//! The consumer of `task-updates`: each change handed to the hub.

use std::sync::Arc;

use dapr_appcallback::{Event, Outcome, Route, Subscriptions};
use todo_proto::todo::events::v1::TaskChanged;
use todo_topology::{
    Topics,
    components::BROADCAST_PUBSUB,
    event_types::{TASK_CHANGED, TASK_FAMILY},
};

use crate::hub::{Applied, Hub};

todo_service::counters! {
    /// How many events on `task-updates` ended how, since start. Events that do not decode
    /// as a `TaskChanged` are DROPped by the AppCallback runtime and not counted here.
    pub struct Stats;
    /// A point-in-time copy of [`Stats`].
    pub struct StatsSnapshot;
    family not_ours, dropped;
    metric "sync_changes_handled_total";
    /// Changes applied (queued to the user's streams).
    applied,
    /// Changes seen before (redeliveries): nothing sent.
    duplicates,
    /// Changes held until an earlier one arrives.
    held,
    /// Other task types (SUCCESS, untouched).
    not_ours,
    /// Events answered DROP (no user, no sequence number, unknown type).
    dropped,
}

/// Hands each change on `task-updates` to the hub.
#[derive(Debug)]
pub struct Updates {
    hub: Arc<Hub>,
    topics: Topics,
    stats: Arc<Stats>,
}

impl Updates {
    pub fn new(hub: Arc<Hub>, topics: Topics, stats: Arc<Stats>) -> Self {
        Self { hub, topics, stats }
    }

    /// One change: applied, held or a duplicate (all SUCCESS); DROP when it can never be
    /// placed in its owner's sequence.
    pub fn on_change(&self, event: Event<TaskChanged>) -> Outcome {
        let m = event.message;
        let why = if m.user_id.is_empty() {
            Some("no user_id")
        } else if m.user_seq == 0 {
            Some("no user_seq (a producer older than live sync)")
        } else if m.task_id.is_empty() {
            Some("no task_id")
        } else {
            None
        };
        if let Some(why) = why {
            tracing::warn!(
                reason = why,
                event_id = %m.event_id,
                dead_letter_topic = %self.topics.task_updates_dead_letter,
                "task change cannot be placed: dropping to the dead-letter topic"
            );
            return self.stats.dropped.count(Outcome::Drop);
        }
        match self.hub.apply(m) {
            Applied::Applied => self.stats.applied.count(Outcome::Success),
            Applied::Duplicate => self.stats.duplicates.count(Outcome::Success),
            Applied::Held => self.stats.held.count(Outcome::Success),
        }
    }

    /// The routing table: `todo.task.changed.v1` to [`Self::on_change`] through the
    /// broadcast component (every replica gets every change); other task types
    /// acknowledged; anything else DROPped to `task-updates-dlq`.
    pub fn subscriptions(self: Arc<Self>) -> Subscriptions {
        let t = &self.topics;
        let route = Route::new(
            BROADCAST_PUBSUB,
            &t.task_updates,
            &t.task_updates_dead_letter,
        )
        .event_type(TASK_CHANGED);
        let stats = self.stats.clone();
        todo_service::one_of_family(route, TASK_FAMILY, stats, self, |me, e| async move {
            me.on_change(e)
        })
    }
}
