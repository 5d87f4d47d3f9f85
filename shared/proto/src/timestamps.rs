//! Conversions between chrono instants and protobuf Timestamps.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

/// The protobuf `Timestamp` of an instant.
pub fn to_timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// The first second a protobuf `Timestamp` may hold: 0001-01-01T00:00:00Z.
pub const MIN_SECONDS: i64 = -62_135_596_800;
/// The last second a protobuf `Timestamp` may hold: 9999-12-31T23:59:59Z.
pub const MAX_SECONDS: i64 = 253_402_300_799;

/// The instant of a protobuf `Timestamp`, or `None` when it is out of the range protobuf
/// defines for it (years 1 to 9999, nanos below a second). Wider instants, which chrono
/// could hold, are refused: no client means them, and arithmetic on them (a time zone's
/// offset, a recurrence walked from year -9999) overflows or runs for minutes.
pub fn from_timestamp(ts: &Timestamp) -> Option<DateTime<Utc>> {
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&ts.seconds) {
        return None;
    }
    let nanos = u32::try_from(ts.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)?;
    DateTime::from_timestamp(ts.seconds, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(from_timestamp(&to_timestamp(t)), Some(t));
    }

    #[test]
    fn only_protobufs_range_is_an_instant() {
        let at = |seconds, nanos| from_timestamp(&Timestamp { seconds, nanos });
        assert_eq!(
            at(MIN_SECONDS, 0).map(|t| t.to_rfc3339()).as_deref(),
            Some("0001-01-01T00:00:00+00:00")
        );
        assert_eq!(
            at(MAX_SECONDS, 999_999_999).map(|t| t.timestamp()),
            Some(MAX_SECONDS)
        );
        assert_eq!(at(MIN_SECONDS - 1, 0), None);
        assert_eq!(at(MAX_SECONDS + 1, 0), None);
        // chrono's own limits (262,143 BC to AD 262,142), which it would accept.
        assert_eq!(at(-8_334_601_228_800, 0), None);
        assert_eq!(at(8_210_266_876_799, 0), None);
        assert_eq!(at(0, 1_000_000_000), None);
    }

    #[test]
    fn rejects_negative_nanos() {
        let ts = Timestamp {
            seconds: 1,
            nanos: -1,
        };
        assert_eq!(from_timestamp(&ts), None);
    }
}
