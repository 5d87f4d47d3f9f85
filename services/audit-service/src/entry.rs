//! What an event becomes in the audit log, and what an entry shows its reader (pure: no I/O).

use chrono::{DateTime, SecondsFormat, Utc};
use prost::Message;
use serde_json::{Value, json};
use todo_proto::todo::{
    audit::v1::{ActivityEntry, FieldChange, ReminderDetail},
    events::v1::{ReminderEvent, TaskEvent, TaskEventKind},
    v1::{Priority, Recurrence, Reminder, Task, reminder::When},
};
use todo_topology::event_types;

/// An event ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub event_id: String,
    pub event_type: String,
    pub task_id: String,
    pub user_id: String,
    /// Microseconds since the epoch.
    pub occurred_at: i64,
    pub actor: String,
    pub trace_id: String,
    pub cloud_event_id: String,
    pub payload: Vec<u8>,
}

/// Why an event can never be stored (it is DROPped to the dead-letter topic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A CloudEvent type this version of the service does not know (another family, or
    /// another version of a known type).
    UnknownType(String),
    /// The bytes are not the protobuf message of the type.
    Undecodable(String),
    /// It decodes but misses what every event carries, or contradicts its type.
    Invalid(&'static str),
}

impl Refusal {
    /// The metric label of the refusal.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::UnknownType(_) => "unknown_type",
            Refusal::Undecodable(_) => "undecodable",
            Refusal::Invalid(_) => "invalid",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UnknownType(t) => write!(f, "unknown event type {t:?}"),
            Refusal::Undecodable(e) => write!(f, "does not decode: {e}"),
            Refusal::Invalid(why) => write!(f, "invalid: {why}"),
        }
    }
}

/// The task event kinds by CloudEvent type.
const TASK_TYPES: [(&str, TaskEventKind); 5] = [
    (event_types::TASK_CREATED, TaskEventKind::Created),
    (event_types::TASK_UPDATED, TaskEventKind::Updated),
    (event_types::TASK_COMPLETED, TaskEventKind::Completed),
    (event_types::TASK_REOPENED, TaskEventKind::Reopened),
    (event_types::TASK_DELETED, TaskEventKind::Deleted),
];

/// The reminder event types.
const REMINDER_TYPES: [&str; 3] = [
    event_types::REMINDER_SCHEDULED,
    event_types::REMINDER_DUE,
    event_types::REMINDER_CANCELLED,
];

/// Every CloudEvent type the audit log records.
pub fn known_types() -> impl Iterator<Item = &'static str> {
    TASK_TYPES.iter().map(|(t, _)| *t).chain(REMINDER_TYPES)
}

/// The entry an event becomes. `traceparent` is the CloudEvent's W3C trace context.
pub fn from_event(
    event_type: &str,
    data: &[u8],
    cloud_event_id: &str,
    traceparent: Option<&str>,
) -> Result<NewEntry, Refusal> {
    let decode_err = |e: prost::DecodeError| Refusal::Undecodable(e.to_string());
    let (event_id, user_id, task_id, occurred_at, actor) =
        if let Some((_, kind)) = TASK_TYPES.iter().find(|(t, _)| *t == event_type) {
            let ev = TaskEvent::decode(data).map_err(decode_err)?;
            if ev.kind != *kind as i32 {
                return Err(Refusal::Invalid("kind does not match the CloudEvent type"));
            }
            let task = ev.task.ok_or(Refusal::Invalid("task missing"))?;
            if task.user_id != ev.user_id {
                return Err(Refusal::Invalid("task.user_id is not the event's user_id"));
            }
            (ev.event_id, ev.user_id, task.id, ev.occurred_at, ev.actor)
        } else if REMINDER_TYPES.contains(&event_type) {
            let ev = ReminderEvent::decode(data).map_err(decode_err)?;
            (
                ev.event_id,
                ev.user_id,
                ev.task_id,
                ev.occurred_at,
                ev.actor,
            )
        } else {
            return Err(Refusal::UnknownType(event_type.to_owned()));
        };
    if uuid::Uuid::parse_str(&event_id).is_err() {
        return Err(Refusal::Invalid("event_id is not a UUID"));
    }
    if user_id.is_empty() {
        return Err(Refusal::Invalid("user_id missing"));
    }
    if uuid::Uuid::parse_str(&task_id).is_err() {
        return Err(Refusal::Invalid("task id is not a UUID"));
    }
    let occurred_at = occurred_at
        .and_then(|t| todo_proto::from_timestamp(&t))
        .ok_or(Refusal::Invalid("occurred_at missing or out of range"))?;
    Ok(NewEntry {
        event_id,
        event_type: event_type.to_owned(),
        task_id,
        user_id,
        occurred_at: occurred_at.timestamp_micros(),
        actor,
        trace_id: traceparent.and_then(trace_id).unwrap_or_default(),
        cloud_event_id: cloud_event_id.to_owned(),
        payload: data.to_vec(),
    })
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
pub fn trace_id(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0'))
        .then(|| id.to_ascii_lowercase())
}

/// A stored entry as its reader sees it. `previous` is the payload of the task event
/// before it in the task's history, when the log holds one (the snapshot an update is
/// compared with).
#[allow(clippy::too_many_arguments)]
pub fn to_activity(
    event_id: String,
    event_type: String,
    task_id: String,
    user_id: String,
    occurred_at: i64,
    recorded_at: i64,
    actor: String,
    trace_id: String,
    payload: &[u8],
    previous: Option<&[u8]>,
) -> ActivityEntry {
    let ts = |us: i64| DateTime::from_timestamp_micros(us).map(todo_proto::to_timestamp);
    let mut entry = ActivityEntry {
        event_id,
        task_id,
        user_id,
        occurred_at: ts(occurred_at),
        recorded_at: ts(recorded_at),
        actor,
        trace_id,
        ..ActivityEntry::default()
    };
    if is_task_type(&event_type) {
        // Stored only after it decoded: a failure here would be a corrupt row, shown bare.
        if let Ok(ev) = TaskEvent::decode(payload) {
            if event_type == event_types::TASK_UPDATED {
                let before = previous
                    .and_then(|p| TaskEvent::decode(p).ok())
                    .and_then(|p| p.task);
                entry.changes = changes(
                    before.as_ref(),
                    ev.task.as_ref().unwrap_or(&Task::default()),
                    &ev.changed_fields,
                );
            }
            entry.task = ev.task;
        }
    } else if let Ok(ev) = ReminderEvent::decode(payload) {
        entry.reminder = Some(ReminderDetail {
            reminder_id: ev.reminder_id,
            task_title: ev.task_title,
            due_time: ev.due_time,
            remind_at: ev.remind_at,
            reason: ev.reason,
        });
    }
    entry.r#type = event_type;
    entry
}

/// Whether a CloudEvent type is one of the task events (whose payload holds a snapshot).
pub fn is_task_type(event_type: &str) -> bool {
    TASK_TYPES.iter().any(|(t, _)| *t == event_type)
}

/// Each changed field with its value in `before` (empty when there is no previous
/// snapshot) and in `after`, as JSON text.
pub fn changes(before: Option<&Task>, after: &Task, fields: &[String]) -> Vec<FieldChange> {
    fields
        .iter()
        .map(|field| FieldChange {
            field: field.clone(),
            before: before
                .map(|b| field_value(b, field).to_string())
                .unwrap_or_default(),
            after: field_value(after, field).to_string(),
        })
        .collect()
}

/// The value of an updatable field of a task, as JSON.
pub fn field_value(task: &Task, field: &str) -> Value {
    match field {
        "title" => json!(task.title),
        "description" => json!(task.description),
        "priority" => json!(
            Priority::try_from(task.priority)
                .map(|p| p.as_str_name())
                .unwrap_or("PRIORITY_UNSPECIFIED")
        ),
        "tags" => json!(task.tags),
        "due_time" => task.due_time.map_or(Value::Null, |t| json!(rfc3339(&t))),
        "time_zone" => json!(task.time_zone),
        "recurrence" => task.recurrence.as_ref().map_or(Value::Null, recurrence),
        "reminders" => Value::Array(task.reminders.iter().map(reminder).collect()),
        _ => Value::Null,
    }
}

fn rfc3339(t: &prost_types::Timestamp) -> String {
    todo_proto::from_timestamp(t)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

fn recurrence(r: &Recurrence) -> Value {
    use todo_proto::todo::v1::{Anchor, Frequency, Weekday};
    let mut v = serde_json::Map::new();
    let name = |s: &str| Value::String(s.to_owned());
    if let Ok(f) = Frequency::try_from(r.frequency)
        && f != Frequency::Unspecified
    {
        v.insert("frequency".into(), name(f.as_str_name()));
    }
    if r.interval > 0 {
        v.insert("interval".into(), json!(r.interval));
    }
    if !r.by_weekday.is_empty() {
        let days = r
            .by_weekday
            .iter()
            .filter_map(|d| Weekday::try_from(*d).ok())
            .map(|d| name(d.as_str_name()))
            .collect();
        v.insert("by_weekday".into(), Value::Array(days));
    }
    if !r.rrule.is_empty() {
        v.insert("rrule".into(), json!(r.rrule));
    }
    if let Ok(a) = Anchor::try_from(r.anchor)
        && a != Anchor::Unspecified
    {
        v.insert("anchor".into(), name(a.as_str_name()));
    }
    if let Some(until) = &r.until {
        v.insert("until".into(), json!(rfc3339(until)));
    }
    if r.count > 0 {
        v.insert("count".into(), json!(r.count));
    }
    Value::Object(v)
}

fn reminder(r: &Reminder) -> Value {
    match &r.when {
        Some(When::BeforeDue(d)) => json!({ "before_due": format!("{}s", d.seconds) }),
        Some(When::At(t)) => json!({ "at": rfc3339(t) }),
        None => Value::Null,
    }
}

/// Microseconds since the epoch of a timestamp (for queries).
pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn task(title: &str, priority: Priority) -> Task {
        Task {
            id: "0192b8a0-0000-7000-8000-000000000001".into(),
            user_id: "alice".into(),
            title: title.into(),
            priority: priority as i32,
            ..Task::default()
        }
    }

    fn event(kind: TaskEventKind, t: Task, changed: &[&str]) -> Vec<u8> {
        TaskEvent {
            event_id: "0192b8a0-0000-7000-8000-0000000000e1".into(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5_000,
            }),
            user_id: "alice".into(),
            kind: kind as i32,
            task: Some(t),
            changed_fields: changed.iter().map(|s| (*s).to_owned()).collect(),
            actor: "user:alice".into(),
        }
        .encode_to_vec()
    }

    #[test]
    fn a_task_event_becomes_an_entry_with_its_trace() {
        let data = event(TaskEventKind::Created, task("a", Priority::Low), &[]);
        let e = from_event(event_types::TASK_CREATED, &data, "ce-1", Some(TP)).unwrap();
        assert_eq!(e.task_id, "0192b8a0-0000-7000-8000-000000000001");
        assert_eq!(e.occurred_at, 1_700_000_000_000_005);
        assert_eq!(e.actor, "user:alice");
        assert_eq!(e.trace_id, "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(e.payload, data);
    }

    #[test]
    fn refusals_say_why() {
        let data = event(TaskEventKind::Created, task("a", Priority::Low), &[]);
        assert!(matches!(
            from_event("todo.task.created.v2", &data, "x", None),
            Err(Refusal::UnknownType(_))
        ));
        assert!(matches!(
            from_event(event_types::TASK_CREATED, &[0xff, 0xff], "x", None),
            Err(Refusal::Undecodable(_))
        ));
        assert_eq!(
            from_event(event_types::TASK_DELETED, &data, "x", None),
            Err(Refusal::Invalid("kind does not match the CloudEvent type"))
        );
        let empty = TaskEvent {
            kind: TaskEventKind::Created as i32,
            ..TaskEvent::default()
        };
        assert!(matches!(
            from_event(event_types::TASK_CREATED, &empty.encode_to_vec(), "x", None),
            Err(Refusal::Invalid(_))
        ));
    }

    #[test]
    fn an_update_shows_before_and_after_from_the_previous_snapshot() {
        let before = event(TaskEventKind::Created, task("buy milk", Priority::Low), &[]);
        let after = event(
            TaskEventKind::Updated,
            task("buy oat milk", Priority::High),
            &["title", "priority"],
        );
        let a = to_activity(
            "e".into(),
            event_types::TASK_UPDATED.into(),
            "t".into(),
            "alice".into(),
            1,
            2,
            "user:alice".into(),
            String::new(),
            &after,
            Some(&before),
        );
        let got: Vec<_> = a
            .changes
            .iter()
            .map(|c| (c.field.as_str(), c.before.as_str(), c.after.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("title", "\"buy milk\"", "\"buy oat milk\""),
                ("priority", "\"PRIORITY_LOW\"", "\"PRIORITY_HIGH\""),
            ]
        );
        assert_eq!(a.task.map(|t| t.title).as_deref(), Some("buy oat milk"));
        // Without a previous snapshot the before values are unknown (empty), not invented.
        let alone = changes(None, &task("x", Priority::Low), &["title".into()]);
        assert_eq!(alone[0].before, "");
    }

    #[test]
    fn trace_ids_are_read_from_traceparent() {
        assert_eq!(
            trace_id(TP).as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(
            trace_id("00-00000000000000000000000000000000-b7ad6b7169203331-00"),
            None
        );
        assert_eq!(trace_id("garbage"), None);
    }
}
