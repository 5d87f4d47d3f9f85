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

/// Whether `event_type` is a version of the change type other than the one this build
/// reads (`todo.task.changed.v2` next to `todo.task.changed.v1`).
fn is_other_version(event_type: &str) -> bool {
    let base = |t: &str| t.rsplit_once(".v").map_or(t, |(base, _)| base).to_owned();
    base(event_type) == base(TASK_CHANGED)
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
            // Another version of the change type (`todo.task.changed.v2`) is a format this
            // build cannot read: dead-lettered, to be seen, never silently acknowledged.
            if e.event_type.starts_with(TASK_FAMILY) && !is_other_version(&e.event_type) {
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
        } else if m.task.is_none() {
            // Every change carries its task (as it was before, for a delete): without one
            // there is nothing to stream, and nothing to check the owner against.
            Some("no task snapshot")
        } else if m
            .task
            .as_ref()
            .is_some_and(|t| t.user_id != m.user_id || t.id != m.task_id)
        {
            // Streamed to the event's user: a snapshot of someone else's task (or of another
            // task) must never reach their streams.
            Some("the task snapshot is not the event's user's task")
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use todo_proto::todo::v1::Task;

    use todo_service::Counters as _;

    use super::*;
    use crate::hub::Limits;

    fn updates() -> Updates {
        Updates::new(
            Hub::new(Limits::default()),
            Topics::new("t"),
            Arc::new(Stats::default()),
        )
    }

    fn change(user: &str, task_owner: &str, seq: u64) -> TaskChanged {
        TaskChanged {
            user_id: user.into(),
            user_seq: seq,
            task_id: "t1".into(),
            task: Some(Task {
                id: "t1".into(),
                user_id: task_owner.into(),
                ..Task::default()
            }),
            ..TaskChanged::default()
        }
    }

    fn event(event_type: &str, m: &TaskChanged) -> Event<Vec<u8>> {
        Event {
            id: "e".into(),
            event_type: event_type.into(),
            source: String::new(),
            topic: "t.task-updates".into(),
            pubsub_name: BROADCAST_PUBSUB.into(),
            traceparent: None,
            message: m.encode_to_vec(),
            raw: m.encode_to_vec(),
        }
    }

    /// Regression (hostile events): a change naming alice with bob's task (or with no task
    /// at all) was streamed to alice, and took her sequence number 1 from her real first
    /// change.
    #[test]
    fn a_change_of_another_users_task_is_dropped() {
        let u = updates();
        assert_eq!(u.on_change(change("alice", "bob", 1)), Outcome::Drop);
        let mut other_task = change("alice", "alice", 1);
        other_task.task_id = "t2".into();
        assert_eq!(u.on_change(other_task), Outcome::Drop);
        let mut no_snapshot = change("alice", "alice", 1);
        no_snapshot.task = None;
        assert_eq!(u.on_change(no_snapshot), Outcome::Drop);
        assert_eq!(u.on_change(change("alice", "alice", 1)), Outcome::Success);
        assert_eq!(u.stats.snapshot().applied, 1);
    }

    /// Regression (hostile events): `todo.task.changed.v2` was acknowledged as "another task
    /// type", so a future format was lost without a trace instead of dead-lettered.
    #[test]
    fn another_version_of_the_change_type_is_dropped_other_task_types_ignored() {
        let u = updates();
        let m = change("alice", "alice", 1);
        let outcomes = u.on_batch(vec![
            event("todo.task.changed.v2", &m),
            event("todo.task.archived.v1", &m),
            event("com.example.unknown.v1", &m),
            event(TASK_CHANGED, &m),
        ]);
        assert_eq!(
            outcomes,
            [
                Outcome::Drop,
                Outcome::Success,
                Outcome::Drop,
                Outcome::Success
            ]
        );
        let s = u.stats.snapshot();
        assert_eq!((s.applied, s.not_ours, s.dropped), (1, 1, 2));
    }
}
