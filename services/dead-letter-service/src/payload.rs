//! A dead letter's payload read for people: the protobuf message its CloudEvent type names,
//! decoded through the descriptor set and rendered as proto3 JSON; or, when it does not
//! decode, why not (the raw bytes are kept either way).

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage};
use todo_topology::event_types;

/// The descriptor set every service serves for reflection, decoded once.
static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    DescriptorPool::decode(todo_proto::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
});

/// What a payload says, as far as it could be read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decoded {
    /// Proto3 JSON of the message, or JSON the payload already was; empty when neither.
    pub json: String,
    /// Why it could not be read, or empty.
    pub error: String,
    /// The event's `user_id` (the partition key its producer used), or empty.
    pub user_id: String,
}

/// The full name of the message a CloudEvent type carries, or `None` for a type this
/// system does not publish. By family, so a version added later (`…v2`) is still tried.
pub fn message_for(event_type: &str) -> Option<&'static str> {
    if event_type.starts_with("todo.task.changed.") {
        Some("todo.events.v1.TaskChanged")
    } else if event_type.starts_with(event_types::TASK_FAMILY) {
        Some("todo.events.v1.TaskEvent")
    } else if event_type.starts_with(event_types::REMINDER_FAMILY) {
        Some("todo.events.v1.ReminderEvent")
    } else if event_type.starts_with("todo.occurrence.") {
        Some("todo.events.v1.OccurrenceRequested")
    } else {
        None
    }
}

/// Reads `bytes` as the message `event_type` names. Never fails: what cannot be read is
/// said in [`Decoded::error`].
pub fn decode(event_type: &str, bytes: &[u8]) -> Decoded {
    let Some(name) = message_for(event_type) else {
        // Not one of ours; perhaps someone published JSON.
        return match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(v) if v.is_object() => Decoded {
                user_id: v["user_id"].as_str().unwrap_or_default().to_owned(),
                json: v.to_string(),
                error: String::new(),
            },
            _ => failed(format!("unknown CloudEvent type {event_type:?}")),
        };
    };
    let pool = match POOL.as_ref() {
        Ok(pool) => pool,
        Err(e) => return failed(format!("descriptor set: {e}")),
    };
    let Some(descriptor) = pool.get_message_by_name(name) else {
        return failed(format!("{name} is not in the descriptor set"));
    };
    let message = match DynamicMessage::decode(descriptor, bytes) {
        Ok(m) => m,
        Err(e) => return failed(format!("not a {name}: {e}")),
    };
    let user_id = message
        .get_field_by_name("user_id")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    match serde_json::to_string(&message) {
        Ok(json) => Decoded {
            json,
            error: String::new(),
            user_id,
        },
        Err(e) => Decoded {
            user_id,
            ..failed(format!("{name} as JSON: {e}"))
        },
    }
}

fn failed(error: String) -> Decoded {
    Decoded {
        error,
        ..Decoded::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use prost::Message;
    use todo_proto::todo::{
        events::v1::{OccurrenceRequested, ReminderEvent, TaskEvent, TaskEventKind},
        v1::Task,
    };

    #[test]
    fn each_family_names_its_message() {
        let cases = [
            (
                event_types::TASK_COMPLETED,
                Some("todo.events.v1.TaskEvent"),
            ),
            ("todo.task.archived.v2", Some("todo.events.v1.TaskEvent")),
            (
                event_types::TASK_CHANGED,
                Some("todo.events.v1.TaskChanged"),
            ),
            (
                event_types::REMINDER_DUE,
                Some("todo.events.v1.ReminderEvent"),
            ),
            (
                event_types::OCCURRENCE_REQUESTED,
                Some("todo.events.v1.OccurrenceRequested"),
            ),
            ("com.example.other", None),
        ];
        for (t, want) in cases {
            assert_eq!(message_for(t), want, "{t}");
        }
    }

    #[test]
    fn a_task_event_becomes_proto3_json_with_its_user() {
        let ev = TaskEvent {
            event_id: "e1".into(),
            user_id: "alice".into(),
            kind: TaskEventKind::Completed as i32,
            occurred_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            task: Some(Task {
                title: "buy milk".into(),
                ..Task::default()
            }),
            ..TaskEvent::default()
        };
        let d = decode("todo.task.completed.v2", &ev.encode_to_vec());
        assert_eq!(d.error, "");
        assert_eq!(d.user_id, "alice");
        let v: serde_json::Value = serde_json::from_str(&d.json).unwrap();
        assert_eq!(v["eventId"], "e1");
        assert_eq!(v["kind"], "TASK_EVENT_KIND_COMPLETED");
        assert_eq!(v["occurredAt"], "2023-11-14T22:13:20Z");
        assert_eq!(v["task"]["title"], "buy milk");
    }

    #[test]
    fn reminders_and_occurrences_decode_too() {
        let r = ReminderEvent {
            user_id: "bob".into(),
            reminder_id: "r1".into(),
            ..ReminderEvent::default()
        };
        let d = decode(event_types::REMINDER_DUE, &r.encode_to_vec());
        assert_eq!((d.user_id.as_str(), d.error.as_str()), ("bob", ""));
        let o = OccurrenceRequested {
            user_id: "carol".into(),
            ..OccurrenceRequested::default()
        };
        let d = decode(event_types::OCCURRENCE_REQUESTED, &o.encode_to_vec());
        assert_eq!(d.user_id, "carol");
    }

    #[test]
    fn what_does_not_decode_says_why_and_has_no_json() {
        let d = decode(event_types::TASK_CREATED, &[0xff, 0xff, 0xff]);
        assert!(d.json.is_empty());
        assert!(
            d.error.starts_with("not a todo.events.v1.TaskEvent"),
            "{}",
            d.error
        );
        let d = decode("com.example.other", &[1, 2, 3]);
        assert_eq!(d.error, "unknown CloudEvent type \"com.example.other\"");
        // Someone else's JSON is shown as it is.
        let d = decode("com.example.other", br#"{"user_id":"dave","x":1}"#);
        assert_eq!((d.user_id.as_str(), d.error.as_str()), ("dave", ""));
    }
}
