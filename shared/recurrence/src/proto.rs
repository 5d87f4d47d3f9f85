//! From the API's `todo.v1.Recurrence` to a [`RecurrenceRule`], naming the field at fault.

use std::num::NonZeroU32;

use chrono::{DateTime, Utc};

use todo_proto::{
    from_timestamp,
    todo::v1::{
        Anchor as ProtoAnchor, Frequency as ProtoFrequency, Recurrence, Weekday as ProtoWeekday,
    },
};

use crate::{
    error::{Field, RecurrenceError},
    rule::{Anchor, End, Frequency, Pattern, RecurrenceRule},
};

/// The range of a protobuf `Timestamp` ([`todo_proto::MIN_SECONDS`] ..=
/// [`todo_proto::MAX_SECONDS`]), for messages. Beyond it a wall-clock time in a task's zone
/// may not exist in chrono.
pub(crate) const TIMESTAMP_RANGE: &str = "0001-01-01T00:00:00Z..=9999-12-31T23:59:59Z";

/// Whether `t` fits in a protobuf `Timestamp` (sub-second parts are ignored), as
/// [`from_timestamp`] requires of the times it reads.
pub(crate) fn in_timestamp_range(t: DateTime<Utc>) -> bool {
    (todo_proto::MIN_SECONDS..=todo_proto::MAX_SECONDS).contains(&t.timestamp())
}

/// Checks a `Recurrence` as the API receives it: `Ok` exactly when
/// `RecurrenceRule::try_from` succeeds.
///
/// Rejected, with the field named: neither or both of `frequency` and `rrule`; an RRULE that
/// does not parse, has a frequency below daily or more than [`crate::MAX_TIMES_PER_DAY`]
/// times a day, carries DTSTART or other properties, or can never match; `interval` or
/// `by_weekday` next to an `rrule`; `interval` above [`crate::MAX_INTERVAL`]; `by_weekday`
/// on a non-weekly rule or holding `WEEKDAY_UNSPECIFIED`; both `until` and `count` (also
/// through the RRULE's `UNTIL`/`COUNT`); an `until` outside the protobuf `Timestamp` range
/// (0001..=9999); enum values the API does not know.
pub fn validate(recurrence: &Recurrence) -> Result<(), RecurrenceError> {
    RecurrenceRule::try_from(recurrence).map(|_| ())
}

impl TryFrom<&Recurrence> for RecurrenceRule {
    type Error = RecurrenceError;

    fn try_from(r: &Recurrence) -> Result<Self, Self::Error> {
        let frequency = ProtoFrequency::try_from(r.frequency).map_err(|_| {
            RecurrenceError::invalid(
                Field::Frequency,
                format!("unknown frequency {}", r.frequency),
            )
        })?;
        let anchor = match ProtoAnchor::try_from(r.anchor) {
            Ok(ProtoAnchor::Unspecified | ProtoAnchor::DueTime) => Anchor::DueTime,
            Ok(ProtoAnchor::CompletionTime) => Anchor::CompletionTime,
            Err(_) => {
                return Err(RecurrenceError::invalid(
                    Field::Anchor,
                    format!("unknown anchor {}", r.anchor),
                ));
            }
        };
        let end = end(r)?;
        let rrule = r.rrule.trim();
        let structured = match frequency {
            ProtoFrequency::Unspecified => None,
            ProtoFrequency::Daily => Some(Frequency::Daily),
            ProtoFrequency::Weekly => Some(Frequency::Weekly),
            ProtoFrequency::Monthly => Some(Frequency::Monthly),
            ProtoFrequency::Yearly => Some(Frequency::Yearly),
        };
        let pattern = match (structured, rrule.is_empty()) {
            (None, true) => {
                return Err(RecurrenceError::invalid(
                    Field::Frequency,
                    "set recurrence.frequency or recurrence.rrule",
                ));
            }
            (Some(_), false) => {
                return Err(RecurrenceError::invalid(
                    Field::Rrule,
                    "set either recurrence.frequency or recurrence.rrule, not both",
                ));
            }
            (None, false) => {
                if r.interval != 0 {
                    return Err(RecurrenceError::invalid(
                        Field::Interval,
                        "with recurrence.rrule, give the interval inside it (INTERVAL=n)",
                    ));
                }
                if !r.by_weekday.is_empty() {
                    return Err(RecurrenceError::invalid(
                        Field::ByWeekday,
                        "with recurrence.rrule, give the weekdays inside it (BYDAY=MO,WE)",
                    ));
                }
                Pattern::Rrule(rrule.to_owned())
            }
            (Some(frequency), true) => Pattern::Every {
                frequency,
                // The API's 0 means 1.
                interval: r.interval.max(1),
                weekdays: r
                    .by_weekday
                    .iter()
                    .map(|&w| weekday(w))
                    .collect::<Result<_, _>>()?,
            },
        };
        RecurrenceRule::new(pattern, anchor, end)
    }
}

fn end(r: &Recurrence) -> Result<End, RecurrenceError> {
    match (&r.until, NonZeroU32::new(r.count)) {
        (Some(_), Some(_)) => Err(RecurrenceError::invalid(
            Field::Until,
            "set either recurrence.until or recurrence.count, not both",
        )),
        (Some(until), None) => from_timestamp(until).map(End::Until).ok_or_else(|| {
            RecurrenceError::invalid(
                Field::Until,
                format!("not a valid timestamp (range {TIMESTAMP_RANGE})"),
            )
        }),
        (None, Some(count)) => Ok(End::Count(count)),
        (None, None) => Ok(End::Never),
    }
}

fn weekday(value: i32) -> Result<chrono::Weekday, RecurrenceError> {
    use chrono::Weekday::*;
    match ProtoWeekday::try_from(value) {
        Ok(ProtoWeekday::Monday) => Ok(Mon),
        Ok(ProtoWeekday::Tuesday) => Ok(Tue),
        Ok(ProtoWeekday::Wednesday) => Ok(Wed),
        Ok(ProtoWeekday::Thursday) => Ok(Thu),
        Ok(ProtoWeekday::Friday) => Ok(Fri),
        Ok(ProtoWeekday::Saturday) => Ok(Sat),
        Ok(ProtoWeekday::Sunday) => Ok(Sun),
        Ok(ProtoWeekday::Unspecified) | Err(_) => Err(RecurrenceError::invalid(
            Field::ByWeekday,
            format!("{value} is not a weekday (1 = Monday .. 7 = Sunday)"),
        )),
    }
}
