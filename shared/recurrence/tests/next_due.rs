//! Table-driven cases for `next_due`: frequencies, month ends, zones, anchors and ends.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers outside #[test] fns.

use std::num::NonZeroU32;

use chrono::{DateTime, NaiveDate, Utc, Weekday};
use chrono_tz::{America::New_York, Asia, Australia::Lord_Howe, Europe::Berlin, Tz, UTC};
use todo_recurrence::{
    Anchor, Completion, End, Frequency, Pattern, RecurrenceError, RecurrenceRule, next_due,
};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("bad time {s}: {e}"))
        .with_timezone(&Utc)
}

fn every(frequency: Frequency, interval: u32) -> Pattern {
    Pattern::Every {
        frequency,
        interval,
        weekdays: vec![],
    }
}

fn weekly_on(interval: u32, weekdays: &[Weekday]) -> Pattern {
    Pattern::Every {
        frequency: Frequency::Weekly,
        interval,
        weekdays: weekdays.to_vec(),
    }
}

fn rrule(s: &str) -> Pattern {
    Pattern::Rrule(s.to_owned())
}

fn count(n: u32) -> End {
    End::Count(NonZeroU32::new(n).unwrap())
}

struct Case {
    name: &'static str,
    pattern: Pattern,
    anchor: Anchor,
    end: End,
    tz: Tz,
    due: Option<&'static str>,
    series_start: Option<&'static str>,
    index: u32,
    completed: &'static str,
    expected: Option<&'static str>,
}

/// A due-anchored, never-ending case; adjust with the methods below.
fn case(
    name: &'static str,
    pattern: Pattern,
    tz: Tz,
    due: Option<&'static str>,
    completed: &'static str,
    expected: Option<&'static str>,
) -> Case {
    Case {
        name,
        pattern,
        anchor: Anchor::DueTime,
        end: End::Never,
        tz,
        due,
        series_start: None,
        index: 0,
        completed,
        expected,
    }
}

impl Case {
    fn series(mut self, start: &'static str) -> Self {
        self.series_start = Some(start);
        self
    }
    fn index(mut self, index: u32) -> Self {
        self.index = index;
        self
    }
    fn end(mut self, end: End) -> Self {
        self.end = end;
        self
    }
    fn anchored_on_completion(mut self) -> Self {
        self.anchor = Anchor::CompletionTime;
        self
    }
}

use Frequency::{Daily, Monthly, Weekly, Yearly};
use Weekday::{Fri, Mon, Thu, Tue, Wed};

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    vec![
        // Frequencies and intervals.
        case("daily", every(Daily, 1), UTC, Some("2025-01-10T09:00:00Z"), "2025-01-10T08:00:00Z", Some("2025-01-11T09:00:00Z")),
        case("daily every 3 days", every(Daily, 3), UTC, Some("2025-01-10T09:00:00Z"), "2025-01-10T10:00:00Z", Some("2025-01-13T09:00:00Z")),
        case("weekly on the start's weekday", every(Weekly, 1), UTC, Some("2025-01-10T09:00:00Z"), "2025-01-10T09:30:00Z", Some("2025-01-17T09:00:00Z")),
        case("weekly every 2 weeks", every(Weekly, 2), UTC, Some("2025-01-10T09:00:00Z"), "2025-01-10T09:30:00Z", Some("2025-01-24T09:00:00Z")),
        case("weekly mon/wed/fri from monday", weekly_on(1, &[Mon, Wed, Fri]), UTC, Some("2025-01-06T09:00:00Z"), "2025-01-06T10:00:00Z", Some("2025-01-08T09:00:00Z")),
        case("weekly mon/wed/fri from friday", weekly_on(1, &[Fri, Wed, Mon]), UTC, Some("2025-01-10T09:00:00Z"), "2025-01-10T10:00:00Z", Some("2025-01-13T09:00:00Z")).series("2025-01-06T09:00:00Z"),
        case("fortnightly tue/thu keeps its weeks", weekly_on(2, &[Tue, Thu]), UTC, Some("2025-01-09T09:00:00Z"), "2025-01-09T10:00:00Z", Some("2025-01-21T09:00:00Z")).series("2025-01-07T09:00:00Z"),
        case("monthly on the 15th", every(Monthly, 1), UTC, Some("2025-01-15T09:00:00Z"), "2025-01-15T10:00:00Z", Some("2025-02-15T09:00:00Z")),
        case("quarterly", every(Monthly, 3), UTC, Some("2025-01-15T09:00:00Z"), "2025-01-15T10:00:00Z", Some("2025-04-15T09:00:00Z")),
        case("yearly", every(Yearly, 1), UTC, Some("2025-03-15T09:00:00Z"), "2025-03-15T10:00:00Z", Some("2026-03-15T09:00:00Z")),
        case("yearly on jan 31", every(Yearly, 1), UTC, Some("2025-01-31T09:00:00Z"), "2025-01-31T10:00:00Z", Some("2026-01-31T09:00:00Z")),

        // Month ends: capped, and back to the original day.
        case("31st -> feb 28", every(Monthly, 1), UTC, Some("2023-01-31T09:00:00Z"), "2023-01-31T10:00:00Z", Some("2023-02-28T09:00:00Z")),
        case("feb 28 -> mar 31", every(Monthly, 1), UTC, Some("2023-02-28T09:00:00Z"), "2023-02-28T10:00:00Z", Some("2023-03-31T09:00:00Z")).series("2023-01-31T09:00:00Z").index(1),
        case("mar 31 -> apr 30", every(Monthly, 1), UTC, Some("2023-03-31T09:00:00Z"), "2023-03-31T10:00:00Z", Some("2023-04-30T09:00:00Z")).series("2023-01-31T09:00:00Z").index(2),
        case("apr 30 -> may 31", every(Monthly, 1), UTC, Some("2023-04-30T09:00:00Z"), "2023-04-30T10:00:00Z", Some("2023-05-31T09:00:00Z")).series("2023-01-31T09:00:00Z").index(3),
        case("nov 30 -> dec 31", every(Monthly, 1), UTC, Some("2023-11-30T09:00:00Z"), "2023-11-30T10:00:00Z", Some("2023-12-31T09:00:00Z")).series("2023-10-31T09:00:00Z"),
        case("31st -> feb 29 in a leap year", every(Monthly, 1), UTC, Some("2024-01-31T09:00:00Z"), "2024-01-31T10:00:00Z", Some("2024-02-29T09:00:00Z")),
        case("feb 29 -> mar 31", every(Monthly, 1), UTC, Some("2024-02-29T09:00:00Z"), "2024-02-29T10:00:00Z", Some("2024-03-31T09:00:00Z")).series("2024-01-31T09:00:00Z"),
        case("every 2 months from the 31st", every(Monthly, 2), UTC, Some("2024-02-29T09:00:00Z"), "2024-02-29T10:00:00Z", Some("2024-04-30T09:00:00Z")).series("2023-12-31T09:00:00Z"),
        case("30th -> feb 28", every(Monthly, 1), UTC, Some("2023-01-30T09:00:00Z"), "2023-01-30T10:00:00Z", Some("2023-02-28T09:00:00Z")),
        case("feb 28 -> mar 30", every(Monthly, 1), UTC, Some("2023-02-28T09:00:00Z"), "2023-02-28T10:00:00Z", Some("2023-03-30T09:00:00Z")).series("2023-01-30T09:00:00Z"),
        case("29th -> feb 28 in a common year", every(Monthly, 1), UTC, Some("2023-01-29T09:00:00Z"), "2023-01-29T10:00:00Z", Some("2023-02-28T09:00:00Z")),
        case("29th -> feb 29 in a leap year", every(Monthly, 1), UTC, Some("2024-01-29T09:00:00Z"), "2024-01-29T10:00:00Z", Some("2024-02-29T09:00:00Z")),
        case("without series start the capped day sticks", every(Monthly, 1), UTC, Some("2023-02-28T09:00:00Z"), "2023-02-28T10:00:00Z", Some("2023-03-28T09:00:00Z")),
        case("yearly feb 29 -> feb 28", every(Yearly, 1), UTC, Some("2024-02-29T09:00:00Z"), "2024-02-29T10:00:00Z", Some("2025-02-28T09:00:00Z")),
        case("yearly feb 28 -> feb 29 in the next leap year", every(Yearly, 1), UTC, Some("2027-02-28T09:00:00Z"), "2027-02-28T10:00:00Z", Some("2028-02-29T09:00:00Z")).series("2024-02-29T09:00:00Z"),
        case("every 2 years from feb 29", every(Yearly, 2), UTC, Some("2024-02-29T09:00:00Z"), "2024-02-29T10:00:00Z", Some("2026-02-28T09:00:00Z")),
        // Regression: with several times a day the month end was not capped (BYSETPOS=-1 kept
        // only the last time of the last day, so the rule was left alone): Jan 31 -> Mar 31.
        case("twice a day on the 31st -> feb 28", rrule("FREQ=MONTHLY;BYHOUR=9,17"), UTC, Some("2023-01-31T09:00:00Z"), "2023-01-31T18:00:00Z", Some("2023-02-28T09:00:00Z")),
        case("twice a day on feb 28, capped: the later time", rrule("FREQ=MONTHLY;BYHOUR=9,17"), UTC, Some("2023-02-28T09:00:00Z"), "2023-02-28T10:00:00Z", Some("2023-02-28T17:00:00Z")).series("2023-01-31T09:00:00Z"),
        case("twice a day, capped, back to the 31st", rrule("FREQ=MONTHLY;BYHOUR=9,17"), UTC, Some("2023-02-28T17:00:00Z"), "2023-02-28T18:00:00Z", Some("2023-03-31T09:00:00Z")).series("2023-01-31T09:00:00Z"),
        case("twice a day on the 31st -> feb 29 in berlin", rrule("FREQ=MONTHLY;BYHOUR=9,17;BYMINUTE=30"), Berlin, Some("2024-01-31T09:30:00+01:00"), "2024-01-31T18:00:00+01:00", Some("2024-02-29T09:30:00+01:00")),
        case("yearly twice a day from feb 29 -> feb 28", rrule("FREQ=YEARLY;BYHOUR=9,17"), UTC, Some("2024-02-29T17:00:00Z"), "2024-02-29T18:00:00Z", Some("2025-02-28T09:00:00Z")).series("2024-02-29T09:00:00Z"),

        // RRULE strings.
        case("last friday of the month", rrule("FREQ=MONTHLY;BYDAY=-1FR"), UTC, Some("2025-01-31T09:00:00Z"), "2025-01-31T10:00:00Z", Some("2025-02-28T09:00:00Z")),
        case("RRULE: prefix", rrule("RRULE:FREQ=MONTHLY;BYDAY=-1FR"), UTC, Some("2025-02-28T09:00:00Z"), "2025-02-28T10:00:00Z", Some("2025-03-28T09:00:00Z")),
        case("lower case rrule", rrule("rrule:freq=weekly;byday=mo,th"), UTC, Some("2025-01-06T09:00:00Z"), "2025-01-06T10:00:00Z", Some("2025-01-09T09:00:00Z")),
        case("rrule monthly inherits capping", rrule("FREQ=MONTHLY"), UTC, Some("2023-01-31T09:00:00Z"), "2023-01-31T10:00:00Z", Some("2023-02-28T09:00:00Z")),
        case("explicit BYMONTHDAY=31 skips short months", rrule("FREQ=MONTHLY;BYMONTHDAY=31"), UTC, Some("2023-01-31T09:00:00Z"), "2023-01-31T10:00:00Z", Some("2023-03-31T09:00:00Z")),
        case("BYMONTHDAY=-1 is the last day", rrule("FREQ=MONTHLY;BYMONTHDAY=-1"), UTC, Some("2023-01-31T09:00:00Z"), "2023-01-31T10:00:00Z", Some("2023-02-28T09:00:00Z")),
        case("yearly in two months, capped per month", rrule("FREQ=YEARLY;BYMONTH=2,6"), UTC, Some("2023-06-30T09:00:00Z"), "2023-06-30T10:00:00Z", Some("2024-02-29T09:00:00Z")).series("2023-05-31T09:00:00Z"),
        case("twice a day", rrule("FREQ=DAILY;BYHOUR=9,17;BYMINUTE=0"), UTC, Some("2025-01-10T09:00:00Z"), "2025-01-10T09:30:00Z", Some("2025-01-10T17:00:00Z")),
        case("rrule fortnightly monday", rrule("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO"), UTC, Some("2025-01-06T09:00:00Z"), "2025-01-06T09:30:00Z", Some("2025-01-20T09:00:00Z")),

        // Time zones: the rule runs in local time.
        case("berlin 09:00 across spring forward", every(Daily, 1), Berlin, Some("2025-03-29T09:00:00+01:00"), "2025-03-29T10:00:00+01:00", Some("2025-03-30T09:00:00+02:00")),
        case("berlin 09:00 across fall back", every(Daily, 1), Berlin, Some("2025-10-25T09:00:00+02:00"), "2025-10-25T10:00:00+02:00", Some("2025-10-26T09:00:00+01:00")),
        case("new york 09:00 across spring forward", every(Daily, 1), New_York, Some("2025-03-08T09:00:00-05:00"), "2025-03-08T10:00:00-05:00", Some("2025-03-09T09:00:00-04:00")),
        case("new york 09:00 across fall back", every(Daily, 1), New_York, Some("2025-11-01T09:00:00-04:00"), "2025-11-01T10:00:00-04:00", Some("2025-11-02T09:00:00-05:00")),
        case("berlin 02:30 in the gap -> 03:00", every(Daily, 1), Berlin, Some("2025-03-29T02:30:00+01:00"), "2025-03-29T03:00:00+01:00", Some("2025-03-30T03:00:00+02:00")),
        case("berlin back to 02:30 after the gap", every(Daily, 1), Berlin, Some("2025-03-30T03:00:00+02:00"), "2025-03-30T04:00:00+02:00", Some("2025-03-31T02:30:00+02:00")).series("2025-03-29T02:30:00+01:00"),
        case("new york 02:30 in the gap -> 03:00", every(Daily, 1), New_York, Some("2025-03-08T02:30:00-05:00"), "2025-03-08T03:00:00-05:00", Some("2025-03-09T03:00:00-04:00")),
        case("new york ambiguous 01:30 -> first", every(Daily, 1), New_York, Some("2025-11-01T01:30:00-04:00"), "2025-11-01T02:00:00-04:00", Some("2025-11-02T01:30:00-04:00")),
        case("new york completed in the repeated hour", every(Daily, 1), New_York, Some("2025-11-02T01:30:00-04:00"), "2025-11-02T01:10:00-05:00", Some("2025-11-03T01:30:00-05:00")),
        case("berlin ambiguous 02:30 -> first", every(Daily, 1), Berlin, Some("2025-10-25T02:30:00+02:00"), "2025-10-25T03:00:00+02:00", Some("2025-10-26T02:30:00+02:00")),
        case("berlin weekly across spring forward", every(Weekly, 1), Berlin, Some("2025-03-24T09:00:00+01:00"), "2025-03-24T10:00:00+01:00", Some("2025-03-31T09:00:00+02:00")),
        case("new york monthly across fall back", every(Monthly, 1), New_York, Some("2025-10-15T09:00:00-04:00"), "2025-10-15T10:00:00-04:00", Some("2025-11-15T09:00:00-05:00")),
        case("new york month end on local date", every(Monthly, 1), New_York, Some("2025-01-31T21:00:00-05:00"), "2025-01-31T22:00:00-05:00", Some("2025-02-28T21:00:00-05:00")),
        case("lord howe half-hour gap", every(Daily, 1), Lord_Howe, Some("2025-10-04T02:15:00+10:30"), "2025-10-04T03:00:00+10:30", Some("2025-10-05T02:30:00+11:00")),

        // Anchored on the completion ("every!").
        case("every! 3 days, completed late", every(Daily, 3), UTC, Some("2025-01-10T09:00:00Z"), "2025-01-12T15:00:00Z", Some("2025-01-15T09:00:00Z")).anchored_on_completion(),
        case("every! 3 days, completed early", every(Daily, 3), UTC, Some("2025-01-10T09:00:00Z"), "2025-01-05T15:00:00Z", Some("2025-01-08T09:00:00Z")).anchored_on_completion(),
        case("every! day, completed before the time of day", every(Daily, 1), UTC, Some("2025-01-10T09:00:00Z"), "2025-01-12T07:00:00Z", Some("2025-01-13T09:00:00Z")).anchored_on_completion(),
        case("every! month from jan 31 -> feb 29", every(Monthly, 1), UTC, Some("2024-01-20T09:00:00Z"), "2024-01-31T20:00:00Z", Some("2024-02-29T09:00:00Z")).anchored_on_completion(),
        case("every! week across spring forward", every(Weekly, 1), Berlin, Some("2025-03-20T09:00:00+01:00"), "2025-03-26T18:00:00+01:00", Some("2025-04-02T09:00:00+02:00")).anchored_on_completion(),
        case("every! day uses the local completion date", every(Daily, 1), New_York, Some("2025-01-10T09:00:00-05:00"), "2025-01-12T23:30:00-05:00", Some("2025-01-13T09:00:00-05:00")).anchored_on_completion(),

        // Late and early completion with the due-time anchor.
        case("late: first occurrence after completion", every(Daily, 1), UTC, Some("2025-01-01T09:00:00Z"), "2025-01-05T12:00:00Z", Some("2025-01-06T09:00:00Z")),
        case("late: later the same day", every(Daily, 1), UTC, Some("2025-01-01T09:00:00Z"), "2025-01-05T08:00:00Z", Some("2025-01-05T09:00:00Z")),
        case("late: weekly mon/wed/fri", weekly_on(1, &[Mon, Wed, Fri]), UTC, Some("2025-01-06T09:00:00Z"), "2025-01-14T12:00:00Z", Some("2025-01-15T09:00:00Z")),
        case("late: fortnightly keeps its weeks", every(Weekly, 2), UTC, Some("2025-01-06T09:00:00Z"), "2025-01-27T12:00:00Z", Some("2025-02-03T09:00:00Z")).series("2025-01-06T09:00:00Z"),
        case("late: monthly 31st", every(Monthly, 1), UTC, Some("2023-01-31T09:00:00Z"), "2023-03-05T12:00:00Z", Some("2023-03-31T09:00:00Z")),
        case("early: after the due time", every(Daily, 1), UTC, Some("2025-01-10T09:00:00Z"), "2025-01-01T12:00:00Z", Some("2025-01-11T09:00:00Z")),
        case("completed exactly at the next occurrence", every(Daily, 1), UTC, Some("2025-01-10T09:00:00Z"), "2025-01-11T09:00:00Z", Some("2025-01-12T09:00:00Z")),
        // Regression: a due time centuries back was walked from, day by day (millions of days
        // from the year -9999); a dense rule gave up after 100 000 occurrences instead.
        case("late by two millennia: leap days", rrule("FREQ=DAILY;BYMONTH=2;BYMONTHDAY=29"), UTC, Some("0001-03-01T09:00:00Z"), "2025-06-01T12:00:00Z", Some("2028-02-29T09:00:00Z")),
        case("late by two millennia: twice a day", rrule("FREQ=DAILY;BYHOUR=9,17;BYMINUTE=0"), UTC, Some("0001-01-01T09:00:00Z"), "2025-06-01T12:00:00Z", Some("2025-06-01T17:00:00Z")),
        case("late by two millennia: fortnightly keeps its weeks", every(Weekly, 2), UTC, Some("0001-01-01T09:00:00Z"), "2025-06-01T12:00:00Z", Some("2025-06-09T09:00:00Z")),
        case("late by two millennia: feb 29 capped", every(Yearly, 1), UTC, Some("0004-02-29T09:00:00Z"), "2025-03-01T12:00:00Z", Some("2026-02-28T09:00:00Z")),
        case("series start two millennia back", every(Monthly, 1), UTC, Some("2025-05-31T09:00:00Z"), "2025-05-31T10:00:00Z", Some("2025-06-30T09:00:00Z")).series("0031-01-31T09:00:00Z"),

        // Ends.
        case("until is inclusive", every(Daily, 1), UTC, Some("2025-01-10T09:00:00Z"), "2025-01-10T10:00:00Z", Some("2025-01-11T09:00:00Z")).end(End::Until(at("2025-01-11T09:00:00Z"))),
        case("until one second earlier", every(Daily, 1), UTC, Some("2025-01-10T09:00:00Z"), "2025-01-10T10:00:00Z", None).end(End::Until(at("2025-01-11T08:59:59Z"))),
        case("until passed while late", every(Daily, 1), UTC, Some("2025-01-10T09:00:00Z"), "2025-01-20T10:00:00Z", None).end(End::Until(at("2025-01-12T09:00:00Z"))),
        case("rrule UNTIL (UTC) is inclusive", rrule("FREQ=DAILY;UNTIL=20250111T090000Z"), UTC, Some("2025-01-10T09:00:00Z"), "2025-01-10T10:00:00Z", Some("2025-01-11T09:00:00Z")),
        case("rrule UNTIL (UTC) one second earlier", rrule("FREQ=DAILY;UNTIL=20250111T085959Z"), UTC, Some("2025-01-10T09:00:00Z"), "2025-01-10T10:00:00Z", None),
        case("rrule UNTIL (date) covers the local day", rrule("FREQ=DAILY;UNTIL=20250111"), Berlin, Some("2025-01-10T23:30:00+01:00"), "2025-01-10T23:40:00+01:00", Some("2025-01-11T23:30:00+01:00")),
        case("rrule UNTIL (date) ends after that day", rrule("FREQ=DAILY;UNTIL=20250111"), Berlin, Some("2025-01-11T23:30:00+01:00"), "2025-01-11T23:40:00+01:00", None),
        case("rrule UNTIL (local time) is inclusive", rrule("FREQ=DAILY;UNTIL=20250111T090000"), Berlin, Some("2025-01-10T09:00:00+01:00"), "2025-01-10T10:00:00+01:00", Some("2025-01-11T09:00:00+01:00")),
        case("count 3, index 1 has a successor", every(Daily, 1), UTC, Some("2025-01-11T09:00:00Z"), "2025-01-11T10:00:00Z", Some("2025-01-12T09:00:00Z")).end(count(3)).index(1),
        case("count 3, index 2 is the last", every(Daily, 1), UTC, Some("2025-01-12T09:00:00Z"), "2025-01-12T10:00:00Z", None).end(count(3)).index(2),
        case("count 1, the first is the last", every(Daily, 1), UTC, Some("2025-01-10T09:00:00Z"), "2025-01-10T10:00:00Z", None).end(count(1)),
        case("rrule COUNT=2, index 0", rrule("FREQ=WEEKLY;COUNT=2"), UTC, Some("2025-01-10T09:00:00Z"), "2025-01-10T10:00:00Z", Some("2025-01-17T09:00:00Z")),
        case("rrule COUNT=2, index 1 is the last", rrule("FREQ=WEEKLY;COUNT=2"), UTC, Some("2025-01-17T09:00:00Z"), "2025-01-17T10:00:00Z", None).index(1),
        case("skipped occurrences do not count", every(Daily, 1), UTC, Some("2025-01-10T09:00:00Z"), "2025-01-20T10:00:00Z", Some("2025-01-21T09:00:00Z")).end(count(2)),

        // Tasks without a due time: counted from the completion.
        case("no due: daily from completion", every(Daily, 1), UTC, None, "2025-01-14T14:23:17.5Z", Some("2025-01-15T14:23:17Z")),
        case("no due: weekly on monday", weekly_on(1, &[Mon]), UTC, None, "2025-01-14T14:23:17Z", Some("2025-01-20T14:23:17Z")),
        case("no due: series time of day", every(Daily, 1), UTC, None, "2025-01-14T14:00:00Z", Some("2025-01-15T09:00:00Z")).series("2025-01-01T09:00:00Z"),
        case("no due: count still ends", every(Daily, 1), UTC, None, "2025-01-14T14:00:00Z", None).end(count(2)).index(1),
        case("no due: local date in the zone", every(Daily, 1), Berlin, None, "2025-03-29T23:30:00+01:00", Some("2025-03-30T23:30:00+02:00")),
    ]
}

#[test]
fn next_due_table() {
    let cases = cases();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for c in cases {
        let rule = match RecurrenceRule::new(c.pattern.clone(), c.anchor, c.end) {
            Ok(rule) => rule,
            Err(e) => {
                failures.push(format!("{}: rule rejected: {e}", c.name));
                continue;
            }
        };
        let completion = Completion {
            due: c.due.map(at),
            series_start: c.series_start.map(at),
            occurrence_index: c.index,
            completed_at: at(c.completed),
        };
        let got = next_due(&rule, c.tz, &completion);
        let want = Ok(c.expected.map(at));
        if got != want {
            failures.push(format!(
                "{}: got {:?}, want {:?}",
                c.name,
                got.map(|t| t.map(|t| t.with_timezone(&c.tz).to_rfc3339())),
                want.map(|t: Option<DateTime<Utc>>| t.map(|t| t.with_timezone(&c.tz).to_rfc3339())),
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A completion of a never-ending daily rule, for the range checks below.
fn daily_completion(due: DateTime<Utc>, completed_at: DateTime<Utc>) -> Completion {
    Completion {
        due: Some(due),
        series_start: None,
        occurrence_index: 0,
        completed_at,
    }
}

fn no_occurrence_reason(got: Result<Option<DateTime<Utc>>, RecurrenceError>) -> String {
    match got {
        Err(RecurrenceError::NoOccurrence { reason }) => reason,
        other => panic!("expected NoOccurrence, got {other:?}"),
    }
}

#[test]
fn times_outside_the_timestamp_range_are_refused_naming_the_field() {
    // Regression: the year 262142 is within chrono's range in UTC but not in Tokyo
    // (+09:00); turning it into Tokyo's wall-clock time panicked.
    let rule = RecurrenceRule::new(every(Daily, 1), Anchor::DueTime, End::Never).unwrap();
    let far_future = NaiveDate::from_ymd_opt(262_142, 12, 31)
        .and_then(|d| d.and_hms_opt(20, 0, 0))
        .unwrap()
        .and_utc();
    let now = at("2025-06-01T12:00:00Z");
    let reason = no_occurrence_reason(next_due(
        &rule,
        Asia::Tokyo,
        &daily_completion(far_future, now),
    ));
    assert!(reason.starts_with("Completion::due "), "{reason}");

    let reason = no_occurrence_reason(next_due(
        &rule,
        Asia::Tokyo,
        &daily_completion(now, far_future),
    ));
    assert!(reason.starts_with("Completion::completed_at "), "{reason}");

    let before_year_1 = at("0000-12-31T23:59:59Z");
    let completion = Completion {
        series_start: Some(before_year_1),
        ..daily_completion(now, now)
    };
    let reason = no_occurrence_reason(next_due(&rule, UTC, &completion));
    assert!(reason.starts_with("Completion::series_start "), "{reason}");

    // The range's ends themselves are fine.
    let first = at("0001-01-01T00:00:00Z");
    assert_eq!(
        next_due(&rule, UTC, &daily_completion(first, first)),
        Ok(Some(at("0001-01-02T00:00:00Z")))
    );
    let last = at("9999-12-30T23:59:59Z");
    assert_eq!(
        next_due(&rule, UTC, &daily_completion(last, last)),
        Ok(Some(at("9999-12-31T23:59:59Z")))
    );
}

#[test]
fn a_next_occurrence_after_the_year_9999_is_refused() {
    let rule = RecurrenceRule::new(every(Daily, 1), Anchor::DueTime, End::Never).unwrap();
    let last = at("9999-12-31T23:59:59Z");
    let reason = no_occurrence_reason(next_due(&rule, UTC, &daily_completion(last, last)));
    assert!(reason.contains("outside the timestamp range"), "{reason}");
}
