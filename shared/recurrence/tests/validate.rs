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
        ("interval beside rrule", Recurrence { interval: 2, ..rrule("FREQ=DAILY") }, Some(Field::Interval)),
        ("interval too large", structured(F::Daily, 1001, &[]), Some(Field::Interval)),
        ("weekdays beside rrule", Recurrence { by_weekday: vec![W::Monday as i32], ..rrule("FREQ=WEEKLY") }, Some(Field::ByWeekday)),
        ("weekdays on a monthly rule", structured(F::Monthly, 1, &[W::Monday]), Some(Field::ByWeekday)),
        ("unspecified weekday", structured(F::Weekly, 1, &[W::Unspecified]), Some(Field::ByWeekday)),
        ("unknown weekday", Recurrence { by_weekday: vec![8], ..structured(F::Weekly, 1, &[]) }, Some(Field::ByWeekday)),
        ("unknown anchor", Recurrence { anchor: 7, ..structured(F::Daily, 1, &[]) }, Some(Field::Anchor)),
        ("until and count", Recurrence { until: until(), count: 3, ..structured(F::Daily, 1, &[]) }, Some(Field::Until)),
        ("until out of range", Recurrence { until: Some(Timestamp { seconds: 0, nanos: -1 }), ..structured(F::Daily, 1, &[]) }, Some(Field::Until)),
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
