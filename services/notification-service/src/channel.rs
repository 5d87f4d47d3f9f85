//! Where notifications go out: the [`Channel`] trait and its first implementation, one
//! structured JSON line per notification on stdout.

use std::{
    fmt,
    io::Write,
    sync::{Mutex, PoisonError},
};

use chrono::{SecondsFormat, Utc};
use serde_json::json;

use crate::notification::Notification;

/// A way to tell a user about a reminder.
///
/// Called once per notification, between the delivery log's claim and its record: the
/// handling first claims the reminder (a leased, create-only write), then delivers through
/// the channel, then marks the claim delivered together with the user's list (see
/// [`crate::delivery_log`] for why in that order). An error is treated as transient: the
/// claim is released and the event retried. A channel that talks to an outside provider
/// should pass `reminder_id` as the provider's idempotency key where it has one.
#[async_trait::async_trait]
pub trait Channel: Send + Sync + fmt::Debug {
    /// The channel's name, recorded with each notification (e.g. `log`).
    fn name(&self) -> &str;

    /// Delivers `notification`; `Ok` once it is out.
    async fn deliver(&self, notification: &Notification) -> Result<(), ChannelError>;
}

/// A delivery that did not go out.
#[derive(Debug, thiserror::Error)]
#[error("channel {channel}: {reason}")]
pub struct ChannelError {
    pub channel: String,
    pub reason: String,
}

/// The `target` of the log lines, for whoever filters a mixed log stream.
pub const LOG_TARGET: &str = "notification";
/// The channel name of [`JsonLogChannel`].
pub const LOG_CHANNEL: &str = "log";

/// One JSON line per notification, written whole (one `write_all`) so lines from concurrent
/// deliveries never interleave. Always JSON, whatever `LOG_FORMAT` says: these lines are
/// the product, not diagnostics. The shape follows the service's JSON logs (`timestamp`,
/// `level`, `target`, `message`, then flat fields), so one log pipeline reads both.
pub struct JsonLogChannel {
    out: Mutex<Box<dyn Write + Send>>,
}

impl fmt::Debug for JsonLogChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLogChannel").finish_non_exhaustive()
    }
}

impl JsonLogChannel {
    /// Lines on the process's stdout.
    pub fn stdout() -> Self {
        Self::new(std::io::stdout())
    }

    /// Lines on any writer.
    pub fn new(out: impl Write + Send + 'static) -> Self {
        Self {
            out: Mutex::new(Box::new(out)),
        }
    }
}

/// The log line of a notification (without the trailing newline).
pub fn log_line(n: &Notification) -> serde_json::Value {
    let rfc3339 = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    json!({
        "timestamp": rfc3339(Utc::now()),
        "level": "INFO",
        "target": LOG_TARGET,
        "message": "reminder delivered",
        "channel": n.channel,
        "user_id": n.user_id,
        "task_id": n.task_id,
        "title": n.task_title,
        "due_time": n.due_time.map(rfc3339),
        "remind_at": rfc3339(n.remind_at),
        "delivered_at": rfc3339(n.delivered_at),
        "lateness_ms": n.lateness_ms,
        "fire_lateness_ms": n.fire_lateness_ms,
        "reminder_id": n.reminder_id,
        "event_id": n.event_id,
    })
}

#[async_trait::async_trait]
impl Channel for JsonLogChannel {
    fn name(&self) -> &str {
        LOG_CHANNEL
    }

    async fn deliver(&self, notification: &Notification) -> Result<(), ChannelError> {
        let mut line = log_line(notification).to_string();
        line.push('\n');
        // A panic elsewhere while holding the lock leaves the writer usable: keep writing.
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        out.write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| ChannelError {
                channel: LOG_CHANNEL.to_owned(),
                reason: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::*;
    use chrono::DateTime;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A writer that always fails.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn notification(reminder_id: &str) -> Notification {
        Notification {
            reminder_id: reminder_id.into(),
            task_id: "t-1".into(),
            user_id: "alice".into(),
            task_title: "Pay \"rent\"\nnow 🏠".into(),
            due_time: Some(at("2030-01-01T08:00:00Z")),
            remind_at: at("2030-01-01T07:00:00Z"),
            delivered_at: at("2030-01-01T07:00:01.250Z"),
            lateness_ms: 1_250,
            fire_lateness_ms: None,
            channel: LOG_CHANNEL.into(),
            event_id: "e-1".into(),
        }
    }

    #[tokio::test]
    async fn writes_one_json_line_per_notification() {
        let buf = Buffer::default();
        let channel = JsonLogChannel::new(buf.clone());
        assert_eq!(channel.name(), "log");
        channel.deliver(&notification("r-1")).await.unwrap();
        channel.deliver(&notification("r-2")).await.unwrap();

        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(text.ends_with('\n'));
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["target"], LOG_TARGET);
        assert_eq!(first["message"], "reminder delivered");
        assert_eq!(first["channel"], "log");
        assert_eq!(first["user_id"], "alice");
        assert_eq!(first["task_id"], "t-1");
        assert_eq!(
            first["title"], "Pay \"rent\"\nnow 🏠",
            "escaped, still one line"
        );
        assert_eq!(first["due_time"], "2030-01-01T08:00:00.000Z");
        assert_eq!(first["remind_at"], "2030-01-01T07:00:00.000Z");
        assert_eq!(first["delivered_at"], "2030-01-01T07:00:01.250Z");
        assert_eq!(first["lateness_ms"], 1250);
        assert_eq!(first["fire_lateness_ms"], serde_json::Value::Null);
        assert_eq!(first["reminder_id"], "r-1");
        assert_eq!(first["event_id"], "e-1");
        assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));
        let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(second["reminder_id"], "r-2");
    }

    #[tokio::test]
    async fn a_failed_write_is_an_error_naming_the_channel() {
        let channel = JsonLogChannel::new(Broken);
        let err = channel.deliver(&notification("r-1")).await.unwrap_err();
        assert_eq!(err.channel, "log");
        assert!(err.to_string().contains("disk full"), "{err}");
    }
}
