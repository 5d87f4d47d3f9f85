//! Property tests: next occurrences move forward, exist locally, and respect count/until.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers outside #[test] fns.

use std::num::NonZeroU32;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use proptest::prelude::*;
use todo_recurrence::{
    Anchor, Completion, End, Frequency, Pattern, RecurrenceRule, local_to_instant, next_due,
};

const RRULES: &[&str] = &[
    "FREQ=MONTHLY;BYDAY=-1FR",
    "FREQ=MONTHLY;BYMONTHDAY=-1",
    "FREQ=MONTHLY;BYMONTHDAY=31",
    "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,TH",
    "FREQ=DAILY;BYHOUR=2,9;BYMINUTE=30",
    // The last Sundays of March and October: the days clocks change in Europe.
    "FREQ=YEARLY;BYMONTH=3,10;BYDAY=-1SU",
];

fn time_zone() -> impl Strategy<Value = Tz> {
    prop_oneof![
        Just(Tz::UTC),
        Just(chrono_tz::Europe::Berlin),
        Just(chrono_tz::America::New_York),
        Just(chrono_tz::Australia::Lord_Howe),
        Just(chrono_tz::Pacific::Apia),
    ]
}

fn pattern() -> impl Strategy<Value = Pattern> {
    let weekday = (0u8..7).prop_map(|d| Weekday::try_from(d).unwrap_or(Weekday::Mon));
    prop_oneof![
        (
            prop_oneof![
                Just(Frequency::Daily),
                Just(Frequency::Monthly),
                Just(Frequency::Yearly)
            ],
            1u32..=4
        )
            .prop_map(|(frequency, interval)| Pattern::Every {
                frequency,
                interval,
                weekdays: vec![],
            }),
        (1u32..=3, prop::collection::vec(weekday, 0..4)).prop_map(|(interval, weekdays)| {
            Pattern::Every {
                frequency: Frequency::Weekly,
                interval,
                weekdays,
            }
        }),
        prop::sample::select(RRULES).prop_map(|s| Pattern::Rrule(s.to_owned())),
    ]
}

fn anchor() -> impl Strategy<Value = Anchor> {
    prop_oneof![Just(Anchor::DueTime), Just(Anchor::CompletionTime)]
}

/// A wall-clock time between 2000 and 2039, often at the hours clocks change.
fn wall_clock() -> impl Strategy<Value = NaiveDateTime> {
    (
        0i64..(40 * 365),
        prop_oneof![0u32..24, 1u32..4],
        prop::sample::select(&[0u32, 15, 30, 45][..]),
    )
        .prop_map(|(day, hour, minute)| {
            let date = NaiveDate::from_ymd_opt(2000, 1, 1).unwrap() + Duration::days(day);
            date.and_hms_opt(hour, minute, 0).unwrap()
        })
}

fn build(pattern: Pattern, anchor: Anchor, end: End) -> RecurrenceRule {
    RecurrenceRule::new(pattern, anchor, end).unwrap()
}

/// The due time of the task `steps` completions into the series, each completed on time.
fn due_after(rule: &RecurrenceRule, tz: Tz, start: DateTime<Utc>, steps: u32) -> DateTime<Utc> {
    let mut due = start;
    for index in 0..steps {
        let completion = Completion {
            due: Some(due),
            series_start: Some(start),
            occurrence_index: index,
            completed_at: due,
        };
        match next_due(rule, tz, &completion).unwrap() {
            Some(next) => due = next,
            None => break,
        }
    }
    due
}

proptest! {
    #[test]
    fn next_is_later_and_exists_on_the_wall_clock(
        tz in time_zone(),
        pattern in pattern(),
        anchor in anchor(),
        start_wall in wall_clock(),
        steps in 0u32..4,
        completion_offset_minutes in -(10 * 24 * 60i64)..(90 * 24 * 60),
        has_due in prop::bool::weighted(0.9),
        until_days in prop::option::of(0i64..200),
    ) {
        let start = local_to_instant(tz, start_wall).unwrap();
        let end = until_days.map_or(End::Never, |d| End::Until(start + Duration::days(d)));
        let rule = build(pattern.clone(), anchor, End::Never);
        let due = due_after(&rule, tz, start, steps);
        let completed_at = due + Duration::minutes(completion_offset_minutes);
        let rule = build(pattern.clone(), anchor, end);
        let completion = Completion {
            due: has_due.then_some(due),
            series_start: Some(start),
            occurrence_index: steps,
            completed_at,
        };

        let next = next_due(&rule, tz, &completion).unwrap();
        if let Some(next) = next {
            prop_assert!(next > completed_at, "{next} not after completion {completed_at}");
            if anchor == Anchor::DueTime && has_due {
                prop_assert!(next > due, "{next} not after due {due}");
            }
            if let End::Until(until) = end {
                prop_assert!(next <= until, "{next} after until {until}");
            }
            prop_assert_eq!(next.nanosecond(), 0);
            let local = next.with_timezone(&tz).naive_local();
            prop_assert_eq!(local_to_instant(tz, local), Some(next), "local {} does not round-trip", local);

            // Structured rules keep the series' time of day (or the end of its gap).
            if matches!(pattern, Pattern::Every { .. }) {
                let time = start.with_timezone(&tz).time();
                let date = local.date();
                let candidates = [date, date.pred_opt().unwrap()];
                prop_assert!(
                    candidates.iter().any(|d| local_to_instant(tz, d.and_time(time)) == Some(next)),
                    "{} is not the series' {} on its date", local, time
                );
            }
        } else {
            prop_assert!(matches!(end, End::Until(_)), "only until ends this series");
        }
    }

    #[test]
    fn series_never_exceed_their_count(
        tz in time_zone(),
        pattern in pattern(),
        anchor in anchor(),
        start_wall in wall_clock(),
        count in 1u32..6,
        offsets in prop::collection::vec(-(2 * 24 * 60i64)..(10 * 24 * 60), 6),
    ) {
        let start = local_to_instant(tz, start_wall).unwrap();
        let rule = build(pattern, anchor, End::Count(NonZeroU32::new(count).unwrap()));
        let mut due = start;
        let mut tasks = 1u32;
        for (index, offset) in (0u32..).zip(&offsets) {
            let completion = Completion {
                due: Some(due),
                series_start: Some(start),
                occurrence_index: index,
                completed_at: due + Duration::minutes(*offset),
            };
            match next_due(&rule, tz, &completion).unwrap() {
                Some(next) => {
                    due = next;
                    tasks += 1;
                }
                None => break,
            }
        }
        prop_assert_eq!(tasks, count);
    }
}
