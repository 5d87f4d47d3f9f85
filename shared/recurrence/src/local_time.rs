//! Wall-clock times in a task's time zone, turned into instants across DST gaps and folds.

use chrono::{DateTime, Duration, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use crate::RecurrenceError;

/// The time zone named by a task's `time_zone` field; an empty name means UTC, as in the API.
pub fn parse_time_zone(name: &str) -> Result<Tz, RecurrenceError> {
    let name = name.trim();
    if name.is_empty() {
        return Ok(Tz::UTC);
    }
    name.parse::<Tz>()
        .map_err(|_| RecurrenceError::UnknownTimeZone {
            name: name.to_owned(),
        })
}

/// The instant a wall-clock time in `tz` stands for.
///
/// - A time that exists once maps to that instant.
/// - An ambiguous time (the hour repeated when clocks fall back) maps to its first, earlier
///   instant.
/// - A time that does not exist (skipped when clocks spring forward) maps to the first valid
///   instant after the gap, i.e. the moment of the transition: 02:30 on the day Berlin moves
///   from 02:00 to 03:00 becomes 03:00 CEST.
///
/// `None` only if the time is outside chrono's range.
pub fn local_to_instant(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        chrono::LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        chrono::LocalResult::Ambiguous(earlier, _) => Some(earlier.with_timezone(&Utc)),
        chrono::LocalResult::None => end_of_gap(tz, local),
    }
}

/// The first instant whose wall-clock time is later than `local`, a time inside a gap.
///
/// UTC offsets lie within -12 h..=+14 h and no gap is longer than a day (Samoa skipped
/// 30 December 2011), so the instant lies between `local - 38 h` and `local + 36 h` read as
/// UTC; the wall-clock time only grows over such a window (no zone folds back within a day
/// of a gap), so a binary search over whole seconds finds it. Transitions fall on whole
/// seconds, and so does `local` in this crate.
fn end_of_gap(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let after = |secs: i64| -> Option<bool> {
        let instant = DateTime::<Utc>::from_timestamp(secs, 0)?;
        let offset = tz.offset_from_utc_datetime(&instant.naive_utc()).fix();
        Some(instant.naive_utc() + Duration::seconds(i64::from(offset.local_minus_utc())) > local)
    };
    let as_utc = local.and_utc().timestamp();
    let mut lo = as_utc.checked_sub(38 * 3600)?;
    let mut hi = as_utc.checked_add(36 * 3600)?;
    if after(lo)? || !after(hi)? {
        return None;
    }
    // Invariant: after(lo) is false, after(hi) is true.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if after(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::<Utc>::from_timestamp(hi, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn naive(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, min, 0)
            .unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn resolves_wall_clock_times() {
        let berlin = chrono_tz::Europe::Berlin;
        let new_york = chrono_tz::America::New_York;
        let lord_howe = chrono_tz::Australia::Lord_Howe;
        let cases = [
            (
                "plain",
                berlin,
                naive(2025, 1, 15, 9, 0),
                "2025-01-15T08:00:00Z",
            ),
            (
                "gap start",
                berlin,
                naive(2025, 3, 30, 2, 0),
                "2025-03-30T01:00:00Z",
            ),
            (
                "inside gap",
                berlin,
                naive(2025, 3, 30, 2, 30),
                "2025-03-30T01:00:00Z",
            ),
            (
                "gap end",
                berlin,
                naive(2025, 3, 30, 3, 0),
                "2025-03-30T01:00:00Z",
            ),
            (
                "fold first",
                berlin,
                naive(2025, 10, 26, 2, 30),
                "2025-10-26T00:30:00Z",
            ),
            (
                "ny gap",
                new_york,
                naive(2025, 3, 9, 2, 30),
                "2025-03-09T07:00:00Z",
            ),
            (
                "ny fold",
                new_york,
                naive(2025, 11, 2, 1, 30),
                "2025-11-02T05:30:00Z",
            ),
            // Lord Howe Island springs forward by 30 minutes, 02:00 -> 02:30 (+10:30 -> +11).
            (
                "half-hour gap",
                lord_howe,
                naive(2025, 10, 5, 2, 15),
                "2025-10-04T15:30:00Z",
            ),
            // Samoa skipped the whole of 30 December 2011.
            (
                "day-long gap",
                chrono_tz::Pacific::Apia,
                naive(2011, 12, 30, 12, 0),
                "2011-12-30T10:00:00Z",
            ),
        ];
        for (name, tz, local, expected) in cases {
            assert_eq!(local_to_instant(tz, local), Some(utc(expected)), "{name}");
        }
    }

    #[test]
    fn parses_time_zone_names() {
        assert_eq!(parse_time_zone(""), Ok(Tz::UTC));
        assert_eq!(
            parse_time_zone("Europe/Berlin"),
            Ok(chrono_tz::Europe::Berlin)
        );
        assert_eq!(
            parse_time_zone("Mars/Olympus_Mons"),
            Err(RecurrenceError::UnknownTimeZone {
                name: "Mars/Olympus_Mons".into()
            })
        );
    }
}
