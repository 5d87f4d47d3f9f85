//! The consumer of `task-updates`: each change handed to the hub.

use std::sync::Arc;

use dapr_appcallback::{Event, Outcome, Route, Subscriptions};
use prost::Message as _;
use todo_proto::todo::events::v1::TaskChanged;
use todo_topology::{
    Topics,
    components::BROADCAST_PUBSUB,
    event_types::{TASK_CHANGED, TASK_FAMILY},
};

use crate::hub::{Applied, Hub};

todo_service::counters! {
    /// How many events on `task-updates` ended how, since start.
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
    /// Events answered DROP (undecodable, no user, no sequence number, unknown type).
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

    /// One bulk delivery, in order: each change applied, held or a duplicate (SUCCESS);
    /// the family's other types acknowledged; DROP for what can never be placed.
    pub fn on_batch(&self, events: Vec<Event<Vec<u8>>>) -> Vec<Outcome> {
        events.into_iter().map(|e| self.on_event(e)).collect()
    }

    fn on_event(&self, e: Event<Vec<u8>>) -> Outcome {
        if e.event_type != TASK_CHANGED {
            if e.event_type.starts_with(TASK_FAMILY) {
                return self.stats.not_ours.count(Outcome::Success);
            }
            tracing::warn!(
                event_type = %e.event_type,
                dead_letter_topic = %self.topics.task_updates_dead_letter,
                "unknown event type on task-updates: dropping to the dead-letter topic"
            );
            return self.stats.dropped.count(Outcome::Drop);
        }
        match TaskChanged::decode(e.message.as_slice()) {
            Ok(m) => self.on_change(m),
            Err(err) => {
                tracing::warn!(
                    error = %err,
                    event_id = %e.id,
                    dead_letter_topic = %self.topics.task_updates_dead_letter,
                    "task change does not decode: dropping to the dead-letter topic"
                );
                self.stats.dropped.count(Outcome::Drop)
            }
        }
    }

    /// One change: applied, held or a duplicate (all SUCCESS); DROP when it can never be
    /// placed in its owner's sequence.
    pub fn on_change(&self, m: TaskChanged) -> Outcome {
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

    /// The subscription: `task-updates` through the broadcast component (every replica
    /// gets every change), in bulk (`bulk` = most entries per delivery, ms to fill one) with
    /// raw payloads (the types are told apart here, see [`Self::on_batch`]).
    pub fn subscriptions(self: Arc<Self>, bulk: (i32, i32)) -> Subscriptions {
        let t = &self.topics;
        let route = Route::new(
            BROADCAST_PUBSUB,
            &t.task_updates,
            &t.task_updates_dead_letter,
        )
        .bulk_raw(bulk.0, bulk.1);
        Subscriptions::builder()
            .route_batch(route, move |events| {
                let me = self.clone();
                async move { me.on_batch(events) }
            })
            .build()
    }
}
