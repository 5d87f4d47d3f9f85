//! Table-driven cases for `validate`: what the API accepts and which field it blames.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers outside #[test] fns.

use std::num::NonZeroU32;

use chrono::{DateTime, NaiveDate, Weekday};
use todo_proto::{
    prost_types::Timestamp,
    to_timestamp,
    todo::v1::{Anchor as ProtoAnchor, Frequency as F, Recurrence, Weekday as W},
};
use todo_recurrence::{
    Anchor, End, Field, Frequency, Pattern, RecurrenceError, RecurrenceRule, validate,
};

fn structured(frequency: F, interval: u32, weekdays: &[W]) -> Recurrence {
    Recurrence {
        frequency: frequency as i32,
        interval,
        by_weekday: weekdays.iter().map(|w| *w as i32).collect(),
        ..Recurrence::default()
    }
}

fn rrule(s: &str) -> Recurrence {
    Recurrence {
        rrule: s.to_owned(),
        ..Recurrence::default()
    }
}

fn until() -> Option<Timestamp> {
    Some(to_timestamp(
        DateTime::from_timestamp(1_767_225_599, 0).unwrap(),
    ))
}

fn list(values: std::ops::Range<u32>) -> String {
    values.map(|v| v.to_string()).collect::<Vec<_>>().join(",")
}

fn every_second_of_every_day() -> String {
    format!(
        "FREQ=YEARLY;BYDAY=MO,TU,WE,TH,FR,SA,SU;BYHOUR={};BYMINUTE={};BYSECOND={}",
        list(0..24),
        list(0..60),
        list(0..60)
    )
}

#[rustfmt::skip]
fn cases() -> Vec<(&'static str, Recurrence, Option<Field>)> {
    vec![
        ("daily", structured(F::Daily, 0, &[]), None),
        ("weekly with weekdays", structured(F::Weekly, 2, &[W::Monday, W::Friday]), None),
        ("monthly with until", Recurrence { until: until(), ..structured(F::Monthly, 1, &[]) }, None),
        ("yearly with count", Recurrence { count: 5, ..structured(F::Yearly, 1, &[]) }, None),
        ("completion anchor", Recurrence { anchor: ProtoAnchor::CompletionTime as i32, ..structured(F::Daily, 3, &[]) }, None),
        ("rrule", rrule("FREQ=MONTHLY;BYDAY=-1FR"), None),
        ("rrule with prefix and COUNT", rrule("RRULE:FREQ=DAILY;COUNT=3"), None),
        ("rrule with UNTIL", rrule("FREQ=DAILY;UNTIL=20261231T000000Z"), None),
        ("nothing set", Recurrence::default(), Some(Field::Frequency)),
        ("unknown frequency", Recurrence { frequency: 9, ..Recurrence::default() }, Some(Field::Frequency)),
        ("frequency and rrule", Recurrence { rrule: "FREQ=DAILY".into(), ..structured(F::Daily, 0, &[]) }, Some(Field::Rrule)),
        ("unparsable rrule", rrule("every tuesday"), Some(Field::Rrule)),
        ("rrule without FREQ", rrule("INTERVAL=2"), Some(Field::Rrule)),
        ("unknown rrule part", rrule("FREQ=DAILY;BYFULLMOON=1"), Some(Field::Rrule)),
        ("hourly rrule", rrule("FREQ=HOURLY"), Some(Field::Rrule)),
        ("rrule with DTSTART", rrule("DTSTART:20250101T090000Z\nRRULE:FREQ=DAILY"), Some(Field::Rrule)),
        ("rrule part twice", rrule("FREQ=DAILY;INTERVAL=2;INTERVAL=3"), Some(Field::Rrule)),
        ("rrule BYMONTHDAY on weekly", rrule("FREQ=WEEKLY;BYMONTHDAY=3"), Some(Field::Rrule)),
        ("rrule COUNT=0", rrule("FREQ=DAILY;COUNT=0"), Some(Field::Rrule)),
        ("rrule COUNT and UNTIL", rrule("FREQ=DAILY;COUNT=3;UNTIL=20261231T000000Z"), Some(Field::Rrule)),
        ("rrule bad UNTIL", rrule("FREQ=DAILY;UNTIL=tomorrow"), Some(Field::Rrule)),
        ("rrule that never matches", rrule("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"), Some(Field::Rrule)),
        ("rrule interval too large", rrule("FREQ=DAILY;INTERVAL=5000"), Some(Field::Rrule)),
        // Regression: rrule builds a whole period before yielding; this one, every second of
        // every day of a year, is 31.5 million times (over a gigabyte, seconds of work).
        ("rrule with every second of the day", rrule(&every_second_of_every_day()), Some(Field::Rrule)),
        ("rrule with two seconds every minute", rrule("FREQ=DAILY;BYHOUR=9;BYMINUTE=0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49;BYSECOND=0,30"), Some(Field::Rrule)),
        ("rrule every 15 minutes", rrule(&format!("FREQ=DAILY;BYHOUR={};BYMINUTE=0,15,30,45", list(0..24))), None),
        ("rrule with repeated hours", rrule(&format!("FREQ=DAILY;BYHOUR={},{};BYMINUTE=0,15,30,45", list(0..24), list(0..24))), None),
        ("interval beside rrule", Recurrence { interval: 2, ..rrule("FREQ=DAILY") }, Some(Field::Interval)),
        ("interval too large", structured(F::Daily, 1001, &[]), Some(Field::Interval)),
        ("weekdays beside rrule", Recurrence { by_weekday: vec![W::Monday as i32], ..rrule("FREQ=WEEKLY") }, Some(Field::ByWeekday)),
        ("weekdays on a monthly rule", structured(F::Monthly, 1, &[W::Monday]), Some(Field::ByWeekday)),
        ("unspecified weekday", structured(F::Weekly, 1, &[W::Unspecified]), Some(Field::ByWeekday)),
        ("unknown weekday", Recurrence { by_weekday: vec![8], ..structured(F::Weekly, 1, &[]) }, Some(Field::ByWeekday)),
        ("unknown anchor", Recurrence { anchor: 7, ..structured(F::Daily, 1, &[]) }, Some(Field::Anchor)),
        ("until and count", Recurrence { until: until(), count: 3, ..structured(F::Daily, 1, &[]) }, Some(Field::Until)),
        ("until out of range", Recurrence { until: Some(Timestamp { seconds: 0, nanos: -1 }), ..structured(F::Daily, 1, &[]) }, Some(Field::Until)),
        // Regression: chrono's range (to the year 262142) was accepted; protobuf's ends in 9999.
        ("until after 9999", Recurrence { until: Some(Timestamp { seconds: 253_402_300_800, nanos: 0 }), ..structured(F::Daily, 1, &[]) }, Some(Field::Until)),
        ("until before 0001", Recurrence { until: Some(Timestamp { seconds: -62_135_596_801, nanos: 0 }), ..structured(F::Daily, 1, &[]) }, Some(Field::Until)),
        ("until at the end of 9999", Recurrence { until: Some(Timestamp { seconds: 253_402_300_799, nanos: 999_999_999 }), ..structured(F::Daily, 1, &[]) }, None),
        ("count beside rrule COUNT", Recurrence { count: 3, ..rrule("FREQ=DAILY;COUNT=3") }, Some(Field::Count)),
        ("until beside rrule UNTIL", Recurrence { until: until(), ..rrule("FREQ=DAILY;UNTIL=20261231T000000Z") }, Some(Field::Until)),
    ]
}

#[test]
fn validate_table() {
    let mut failures = Vec::new();
    for (name, recurrence, expected) in cases() {
        let got = validate(&recurrence);
        let ok = match (&got, expected) {
            (Ok(()), None) => true,
            (Err(RecurrenceError::InvalidRecurrence { field, .. }), Some(want)) => *field == want,
            _ => false,
        };
        if !ok {
            failures.push(format!("{name}: got {got:?}, want {expected:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn conversion_moves_rrule_ends_and_normalises() {
    let rule = RecurrenceRule::try_from(&rrule(" rrule:freq=daily;count=3;interval=2 ")).unwrap();
    assert_eq!(
        rule.pattern(),
        &Pattern::Rrule("FREQ=DAILY;INTERVAL=2".into())
    );
    assert_eq!(rule.end(), End::Count(NonZeroU32::new(3).unwrap()));
    assert_eq!(rule.anchor(), Anchor::DueTime);

    let rule = RecurrenceRule::try_from(&rrule("FREQ=DAILY;UNTIL=20250111T090000")).unwrap();
    let local = NaiveDate::from_ymd_opt(2025, 1, 11)
        .unwrap()
        .and_hms_opt(9, 0, 0)
        .unwrap();
    assert_eq!(rule.end(), End::UntilLocal(local));

    let weekly = structured(F::Weekly, 0, &[W::Friday, W::Monday, W::Friday]);
    let rule = RecurrenceRule::try_from(&weekly).unwrap();
    assert_eq!(
        rule.pattern(),
        &Pattern::Every {
            frequency: Frequency::Weekly,
            interval: 1,
            weekdays: vec![Weekday::Mon, Weekday::Fri],
        }
    );
}

#[test]
fn errors_name_the_field() {
    let err = validate(&structured(F::Monthly, 1, &[W::Monday])).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid recurrence.by_weekday: "),
        "{err}"
    );
    let err = validate(&rrule("FREQ=HOURLY")).unwrap_err();
    assert!(
        err.to_string().starts_with("invalid recurrence.rrule: "),
        "{err}"
    );
}
