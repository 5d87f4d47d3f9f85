//! Watch cursors: where a client of `todo.sync.v1.SyncService/WatchTasks` stands.
//!
//! A cursor names the last change of the caller's sequence the client has seen
//! (`TaskChanged.user_seq`, the same on every replica) and when the cursor was issued, so a
//! replica can tell whether it has held every change since. Written `v1.<seq>.<unix ms>`;
//! clients treat it as opaque.

use chrono::{DateTime, TimeZone, Utc};

/// A decoded cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchCursor {
    /// The last change of the user's sequence the client has (0: none yet).
    pub seq: u64,
    /// When it was issued (by ListTasks, or by the stream with a change or heartbeat).
    pub issued_at: DateTime<Utc>,
}

/// Why a cursor does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a watch cursor (expected one given by ListTasks or WatchTasks)")]
pub struct BadCursor;

impl WatchCursor {
    pub fn new(seq: u64, issued_at: DateTime<Utc>) -> Self {
        Self { seq, issued_at }
    }

    /// Decodes a cursor written by [`WatchCursor::encode`].
    pub fn decode(text: &str) -> Result<Self, BadCursor> {
        let mut parts = text.trim().split('.');
        let (Some("v1"), Some(seq), Some(ms), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(BadCursor);
        };
        // No sequence reaches u64::MAX, and no cursor was issued before 1970.
        let seq = seq
            .parse::<u64>()
            .ok()
            .filter(|s| *s < u64::MAX)
            .ok_or(BadCursor)?;
        let ms = ms
            .parse::<i64>()
            .ok()
            .filter(|ms| *ms >= 0)
            .ok_or(BadCursor)?;
        let issued_at = Utc.timestamp_millis_opt(ms).single().ok_or(BadCursor)?;
        Ok(Self { seq, issued_at })
    }

    pub fn encode(&self) -> String {
        format!("v1.{}.{}", self.seq, self.issued_at.timestamp_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_survives_its_text_and_garbage_is_refused() {
        let c = WatchCursor::new(42, Utc.timestamp_millis_opt(1_780_000_000_123).unwrap());
        assert_eq!(c.encode(), "v1.42.1780000000123");
        assert_eq!(WatchCursor::decode(&c.encode()), Ok(c));
        for bad in [
            "",
            "v1",
            "v1.1",
            "v2.1.1",
            "v1.-1.1",
            "v1.1.x",
            "v1.1.1.1",
            "v1.1.99999999999999999",
            "v1.1.-8334601315200000",
            "v1.18446744073709551615.0",
        ] {
            assert_eq!(WatchCursor::decode(bad), Err(BadCursor), "{bad}");
        }
    }
}
