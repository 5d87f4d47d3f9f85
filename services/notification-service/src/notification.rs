//! The core: a due reminder event becomes a [`Notification`], or the reason it never can.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use todo_proto::{
    from_timestamp, to_timestamp,
    todo::{events::v1::ReminderEvent, notifications::v1 as api},
};

/// The longest id accepted (user, reminder, task, event): they become state store keys.
pub const MAX_ID_LEN: usize = 256;

/// One reminder, delivered (or being delivered) to its user. Stored as JSON in the delivery
/// log, so fields are only ever added (with `#[serde(default)]`), never renamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub reminder_id: String,
    pub task_id: String,
    pub user_id: String,
    #[serde(default)]
    pub task_title: String,
    #[serde(default)]
    pub due_time: Option<DateTime<Utc>>,
    pub remind_at: DateTime<Utc>,
    pub delivered_at: DateTime<Utc>,
    /// `delivered_at - remind_at`, never negative, in milliseconds.
    pub lateness_ms: u64,
    /// How late the scheduler fired it (the event's own `lateness`), in milliseconds.
    #[serde(default)]
    pub fire_lateness_ms: Option<u64>,
    /// The channel it went out on.
    pub channel: String,
    /// The due event that caused it.
    #[serde(default)]
    pub event_id: String,
}

#[cfg(test)]
impl Notification {
    /// A test notification: reminder `reminder_id` of alice's task `t`, due to remind at
    /// 2030-01-01, delivered at `delivered_at` through the log channel.
    pub(crate) fn delivered_at(reminder_id: &str, delivered_at: DateTime<Utc>) -> Self {
        Self {
            reminder_id: reminder_id.into(),
            task_id: "t".into(),
            user_id: "alice".into(),
            task_title: String::new(),
            due_time: None,
            remind_at: DateTime::from_timestamp(1_893_456_000, 0).unwrap_or_default(),
            delivered_at,
            lateness_ms: 0,
            fire_lateness_ms: None,
            channel: "log".into(),
            event_id: String::new(),
        }
    }
}

/// Why a due event can never become a notification (it is DROPped to the dead-letter topic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidReminder {
    #[error("{field} is required")]
    Missing { field: &'static str },
    #[error("{field} is {len} bytes long; at most {MAX_ID_LEN}")]
    TooLong { field: &'static str, len: usize },
    #[error("{field} is not a valid timestamp")]
    BadTimestamp { field: &'static str },
    #[error("{field} is not a valid duration")]
    BadDuration { field: &'static str },
}

fn id<'a>(field: &'static str, value: &'a str) -> Result<&'a str, InvalidReminder> {
    let value = value.trim();
    if value.is_empty() {
        return Err(InvalidReminder::Missing { field });
    }
    if value.len() > MAX_ID_LEN {
        return Err(InvalidReminder::TooLong {
            field,
            len: value.len(),
        });
    }
    Ok(value)
}

fn instant(
    field: &'static str,
    ts: Option<&prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, InvalidReminder> {
    ts.map(|t| from_timestamp(t).ok_or(InvalidReminder::BadTimestamp { field }))
        .transpose()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The notification a due reminder event asks for, delivered at `now` on `channel`.
///
/// Required: `user_id` (every event is someone's), `reminder_id` (the idempotency key),
/// `task_id` and `remind_at` (a reminder without its moment is malformed). `event_id` is
/// kept for tracing only, and may be empty.
pub fn notification_from(
    event: &ReminderEvent,
    channel: &str,
    now: DateTime<Utc>,
) -> Result<Notification, InvalidReminder> {
    let user_id = id("user_id", &event.user_id)?;
    let reminder_id = id("reminder_id", &event.reminder_id)?;
    let task_id = id("task_id", &event.task_id)?;
    if event.event_id.len() > MAX_ID_LEN {
        return Err(InvalidReminder::TooLong {
            field: "event_id",
            len: event.event_id.len(),
        });
    }
    let remind_at = instant("remind_at", event.remind_at.as_ref())?
        .ok_or(InvalidReminder::Missing { field: "remind_at" })?;
    let due_time = instant("due_time", event.due_time.as_ref())?;
    let fire_lateness = event
        .lateness
        .map(|d| {
            Duration::try_from(d).map_err(|_| InvalidReminder::BadDuration { field: "lateness" })
        })
        .transpose()?;
    // An early delivery (clock skew between the scheduler and this host) is on time.
    let lateness = (now - remind_at).to_std().unwrap_or(Duration::ZERO);
    Ok(Notification {
        reminder_id: reminder_id.to_owned(),
        task_id: task_id.to_owned(),
        user_id: user_id.to_owned(),
        task_title: event.task_title.clone(),
        due_time,
        remind_at,
        delivered_at: now,
        lateness_ms: millis(lateness),
        fire_lateness_ms: fire_lateness.map(millis),
        channel: channel.to_owned(),
        event_id: event.event_id.clone(),
    })
}

impl Notification {
    /// How late the user was told.
    pub fn lateness(&self) -> Duration {
        Duration::from_millis(self.lateness_ms)
    }
}

fn proto_duration(ms: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        // Below 1e9: fits.
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

impl From<&Notification> for api::Notification {
    fn from(n: &Notification) -> Self {
        Self {
            reminder_id: n.reminder_id.clone(),
            task_id: n.task_id.clone(),
            user_id: n.user_id.clone(),
            task_title: n.task_title.clone(),
            due_time: n.due_time.map(to_timestamp),
            remind_at: Some(to_timestamp(n.remind_at)),
            delivered_at: Some(to_timestamp(n.delivered_at)),
            lateness: Some(proto_duration(n.lateness_ms)),
            fire_lateness: n.fire_lateness_ms.map(proto_duration),
            channel: n.channel.clone(),
            event_id: n.event_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn due() -> ReminderEvent {
        ReminderEvent {
            event_id: "e-1".into(),
            occurred_at: Some(to_timestamp(at("2030-01-01T07:00:01Z"))),
            user_id: "alice".into(),
            reminder_id: "r-1".into(),
            task_id: "t-1".into(),
            task_title: "Water the plants".into(),
            due_time: Some(to_timestamp(at("2030-01-01T08:00:00Z"))),
            remind_at: Some(to_timestamp(at("2030-01-01T07:00:00Z"))),
            lateness: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            reason: String::new(),
            actor: "service:task-service".into(),
        }
    }

    #[test]
    fn a_due_event_becomes_a_notification_with_its_lateness() {
        let now = at("2030-01-01T07:00:02.500Z");
        let n = notification_from(&due(), "log", now).unwrap();
        assert_eq!(n.user_id, "alice");
        assert_eq!(n.reminder_id, "r-1");
        assert_eq!(n.task_id, "t-1");
        assert_eq!(n.task_title, "Water the plants");
        assert_eq!(n.due_time, Some(at("2030-01-01T08:00:00Z")));
        assert_eq!(n.remind_at, at("2030-01-01T07:00:00Z"));
        assert_eq!(n.delivered_at, now);
        assert_eq!(n.lateness_ms, 2_500);
        assert_eq!(n.fire_lateness_ms, Some(1_000));
        assert_eq!(n.channel, "log");
        assert_eq!(n.event_id, "e-1");

        let p = api::Notification::from(&n);
        assert_eq!(
            p.lateness,
            Some(prost_types::Duration {
                seconds: 2,
                nanos: 500_000_000
            })
        );
        assert_eq!(p.delivered_at, Some(to_timestamp(now)));
    }

    #[test]
    fn early_is_on_time_and_optional_fields_may_be_absent() {
        let mut e = due();
        e.due_time = None;
        e.lateness = None;
        e.event_id = String::new();
        let n = notification_from(&e, "log", at("2030-01-01T06:59:00Z")).unwrap();
        assert_eq!(n.lateness_ms, 0);
        assert_eq!(n.due_time, None);
        assert_eq!(n.fire_lateness_ms, None);
    }

    #[test]
    fn invalid_events_name_the_field() {
        let now = at("2030-01-01T07:00:00Z");
        type Break = fn(&mut ReminderEvent);
        let cases: [(&str, Break, InvalidReminder); 8] = [
            (
                "no user",
                |e| e.user_id = " ".into(),
                InvalidReminder::Missing { field: "user_id" },
            ),
            (
                "no reminder id",
                |e| e.reminder_id.clear(),
                InvalidReminder::Missing {
                    field: "reminder_id",
                },
            ),
            (
                "no task",
                |e| e.task_id.clear(),
                InvalidReminder::Missing { field: "task_id" },
            ),
            (
                "no moment",
                |e| e.remind_at = None,
                InvalidReminder::Missing { field: "remind_at" },
            ),
            (
                "long user",
                |e| e.user_id = "u".repeat(300),
                InvalidReminder::TooLong {
                    field: "user_id",
                    len: 300,
                },
            ),
            (
                "bad moment",
                |e| {
                    e.remind_at = Some(prost_types::Timestamp {
                        seconds: 1,
                        nanos: -5,
                    })
                },
                InvalidReminder::BadTimestamp { field: "remind_at" },
            ),
            (
                "bad due time",
                |e| {
                    e.due_time = Some(prost_types::Timestamp {
                        seconds: i64::MAX,
                        nanos: 0,
                    })
                },
                InvalidReminder::BadTimestamp { field: "due_time" },
            ),
            (
                "negative lateness",
                |e| {
                    e.lateness = Some(prost_types::Duration {
                        seconds: -1,
                        nanos: 0,
                    })
                },
                InvalidReminder::BadDuration { field: "lateness" },
            ),
        ];
        for (what, break_it, want) in cases {
            let mut e = due();
            break_it(&mut e);
            assert_eq!(notification_from(&e, "log", now), Err(want), "{what}");
        }
    }

    #[test]
    fn stored_json_round_trips_and_tolerates_added_fields() {
        let n = notification_from(&due(), "log", at("2030-01-01T07:00:03Z")).unwrap();
        let json = serde_json::to_value(&n).unwrap();
        assert_eq!(serde_json::from_value::<Notification>(json).unwrap(), n);
        let minimal = serde_json::json!({
            "reminder_id": "r", "task_id": "t", "user_id": "u",
            "remind_at": "2030-01-01T07:00:00Z", "delivered_at": "2030-01-01T07:00:01Z",
            "lateness_ms": 1000, "channel": "log", "a_future_field": true
        });
        let n: Notification = serde_json::from_value(minimal).unwrap();
        assert_eq!(n.lateness(), Duration::from_secs(1));
        assert_eq!(n.task_title, "");
    }
}
