//! The events a task change produces, as outbox rows (pure: no I/O).

use chrono::{DateTime, Utc};
use prost::Message;
use todo_proto::todo::{
    events::v1::{TaskChanged, TaskEvent, TaskEventKind},
    v1::Task,
};
use todo_topology::event_types;
use uuid::Uuid;

pub use todo_topology::Topics;

/// One event to write to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    pub event_id: Uuid,
    pub topic: String,
    pub event_type: &'static str,
    pub key: String,
    pub payload: Vec<u8>,
    pub created_at: i64,
}

/// The CloudEvent type of a task event kind.
pub fn event_type(kind: TaskEventKind) -> &'static str {
    match kind {
        TaskEventKind::Created | TaskEventKind::Unspecified => event_types::TASK_CREATED,
        TaskEventKind::Updated => event_types::TASK_UPDATED,
        TaskEventKind::Completed => event_types::TASK_COMPLETED,
        TaskEventKind::Reopened => event_types::TASK_REOPENED,
        TaskEventKind::Deleted => event_types::TASK_DELETED,
    }
}

/// One change of a task: what changed, the task after it (before it, for deleted), who
/// made it (`actor`), and its number in the owner's sequence of changes (`user_seq`).
#[derive(Debug, Clone)]
pub struct Change<'a> {
    pub kind: TaskEventKind,
    pub task: &'a Task,
    pub changed_fields: Vec<String>,
    pub actor: String,
    pub user_seq: u64,
}

/// The events of one change: the full `TaskEvent` on task-events and a `TaskChanged` with
/// the task and its `user_seq` on task-updates (for live clients), both keyed by the owner.
pub fn task_changed(topics: &Topics, change: Change<'_>, now: DateTime<Utc>) -> Vec<PendingEvent> {
    let Change {
        kind,
        task,
        changed_fields,
        actor,
        user_seq,
    } = change;
    let event_id = Uuid::now_v7();
    let occurred_at = Some(todo_proto::to_timestamp(now));
    let full = TaskEvent {
        event_id: event_id.to_string(),
        occurred_at,
        user_id: task.user_id.clone(),
        kind: kind as i32,
        task: Some(task.clone()),
        changed_fields: changed_fields.clone(),
        actor: actor.clone(),
    };
    let notice_id = Uuid::now_v7();
    let notice = TaskChanged {
        event_id: notice_id.to_string(),
        occurred_at,
        user_id: task.user_id.clone(),
        task_id: task.id.clone(),
        kind: kind as i32,
        etag: if kind == TaskEventKind::Deleted {
            String::new()
        } else {
            task.etag.clone()
        },
        task: Some(task.clone()),
        user_seq,
        changed_fields,
        actor,
    };
    let created_at = now.timestamp_micros();
    vec![
        PendingEvent {
            event_id,
            topic: topics.task_events.clone(),
            event_type: event_type(kind),
            key: task.user_id.clone(),
            payload: full.encode_to_vec(),
            created_at,
        },
        PendingEvent {
            event_id: notice_id,
            topic: topics.task_updates.clone(),
            event_type: event_types::TASK_CHANGED,
            key: task.user_id.clone(),
            payload: notice.encode_to_vec(),
            created_at,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_a_full_event_and_a_notice_keyed_by_the_owner() {
        let topics = Topics::new("ns");
        let task = Task {
            id: "t1".into(),
            user_id: "alice".into(),
            title: "x".into(),
            etag: "\"2\"".into(),
            ..Task::default()
        };
        let evs = task_changed(
            &topics,
            Change {
                kind: TaskEventKind::Updated,
                task: &task,
                changed_fields: vec!["title".into()],
                actor: "user:alice".into(),
                user_seq: 7,
            },
            Utc::now(),
        );
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].topic, "ns.task-events");
        assert_eq!(evs[0].event_type, "todo.task.updated.v1");
        assert_eq!(evs[1].topic, "ns.task-updates");
        assert!(evs.iter().all(|e| e.key == "alice"));
        let full = TaskEvent::decode(evs[0].payload.as_slice()).unwrap();
        assert_eq!(full.task.unwrap(), task);
        assert_eq!(full.changed_fields, ["title"]);
        assert_eq!(full.event_id, evs[0].event_id.to_string());
        let notice = TaskChanged::decode(evs[1].payload.as_slice()).unwrap();
        assert_eq!((notice.user_seq, notice.task.unwrap()), (7, task));
        assert_eq!(notice.changed_fields, ["title"]);
        assert_eq!(Topics::new("").task_events, "task-events");
    }
}
