//! The next due time of a recurring task, computed on wall-clock times in the task's zone.

use chrono::{DateTime, Datelike, NaiveDateTime, SubsecRound, TimeZone, Utc};
use chrono_tz::Tz;
use rrule::{RRule, RRuleSet, Unvalidated};

use crate::{
    error::{Field, RecurrenceError},
    local_time::local_to_instant,
    proto::{TIMESTAMP_RANGE, in_timestamp_range},
    rule::{Anchor, End, MAX_TIMES_PER_DAY, RecurrenceRule, times_per_day},
};

/// How many occurrences the engine walks past (from the series' start to the completion
/// time) before it gives up: a daily series of 270 years.
pub const MAX_SCANNED_OCCURRENCES: usize = 100_000;

/// The task just completed, as the engine needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The completed task's due time; `None` for a task without one.
    pub due: Option<DateTime<Utc>>,
    /// The due time the series' rhythm is counted from: the first task's due time (or the
    /// due time the user last set explicitly). It keeps the day of month (31 stays 31 after
    /// a capped 28 February) and the time of day (02:30 stays 02:30 after a day when 02:30
    /// did not exist). `None` falls back to `due`.
    pub series_start: Option<DateTime<Utc>>,
    /// The completed task's place in the series: 0 for the first task.
    pub occurrence_index: u32,
    /// When the task was completed.
    pub completed_at: DateTime<Utc>,
}

/// The due time of the task that follows `completion` in the series, or `None` when the
/// series has ended (by count or until).
///
/// See the crate documentation for the semantics. Times are computed to the second; the
/// result has no sub-second part.
///
/// # Errors
///
/// [`RecurrenceError::NoOccurrence`] when the next occurrence is more than
/// [`MAX_SCANNED_OCCURRENCES`] away from the completed task's due time (a dense rule, such as
/// every 15 minutes, may be that far from the series' start: then it counts from the due
/// time, as without a start) or outside the range of a protobuf `Timestamp`
/// (0001-01-01T00:00:00Z..=9999-12-31T23:59:59Z); also, naming the field, when a time of
/// `completion` lies outside that range.
pub fn next_due(
    rule: &RecurrenceRule,
    time_zone: Tz,
    completion: &Completion,
) -> Result<Option<DateTime<Utc>>, RecurrenceError> {
    // Before anything else: that far out, the wall-clock time in the task's zone may be beyond
    // chrono's range (a due time in the year 262142 panicked in Asia/Tokyo), and an
    // out-of-range series start must not quietly fall back to the due time below.
    let times = [
        ("Completion::due", completion.due),
        ("Completion::series_start", completion.series_start),
        ("Completion::completed_at", Some(completion.completed_at)),
    ];
    for (field, time) in times {
        if let Some(t) = time.filter(|t| !in_timestamp_range(*t)) {
            return Err(RecurrenceError::no_occurrence(format!(
                "{field} {t} is outside the timestamp range {TIMESTAMP_RANGE}"
            )));
        }
    }
    match next_due_counted(rule, time_zone, completion) {
        Err(RecurrenceError::NoOccurrence { .. }) if completion.series_start.is_some() => {
            let from_due = Completion {
                series_start: None,
                ..*completion
            };
            next_due_counted(rule, time_zone, &from_due)
        }
        other => other,
    }
}

/// [`next_due`], counting from `completion.series_start` whatever it costs.
fn next_due_counted(
    rule: &RecurrenceRule,
    time_zone: Tz,
    completion: &Completion,
) -> Result<Option<DateTime<Utc>>, RecurrenceError> {
    if let End::Count(count) = rule.end()
        && u64::from(completion.occurrence_index) + 1 >= u64::from(count.get())
    {
        return Ok(None);
    }
    let wall_clock = |t: DateTime<Utc>| t.with_timezone(&time_zone).naive_local().trunc_subsecs(0);

    // `start` is the series' DTSTART in wall-clock time; occurrences must come strictly after
    // `after_wall` (completion anchor only) and strictly after `after` (an instant).
    let (start, after_wall, after) = match (rule.anchor(), completion.due) {
        (Anchor::DueTime, Some(due)) => {
            let after = due.max(completion.completed_at);
            let start = skip_calendar_cycles(
                wall_clock(completion.series_start.unwrap_or(due)),
                wall_clock(after),
                rule.iteration().get_interval(),
            );
            (start, None, after)
        }
        // Counted from the completion: its date in the task's zone, at the series' time of
        // day when there is one. A task without a due time is counted this way too.
        (Anchor::CompletionTime, _) | (Anchor::DueTime, None) => {
            let completed = wall_clock(completion.completed_at);
            let time = completion
                .series_start
                .or(completion.due)
                .map_or(completed.time(), |t| wall_clock(t).time());
            let start = completed.date().and_time(time);
            (start, Some(start), completion.completed_at)
        }
    };

    // The rule was checked when it was built; what the `rrule` crate refuses now is about
    // this start (e.g. a year beyond its range), not about the rule.
    let series = FloatingSeries::new(rule.iteration(), start).map_err(|e| match e {
        RecurrenceError::InvalidRecurrence { reason, .. } => {
            RecurrenceError::no_occurrence(format!("cannot start the series at {start}: {reason}"))
        }
        other => other,
    })?;
    for (scanned, wall) in series.iter().enumerate() {
        if scanned >= MAX_SCANNED_OCCURRENCES {
            return Err(RecurrenceError::no_occurrence(format!(
                "more than {MAX_SCANNED_OCCURRENCES} occurrences between the series' start and \
                 the completion"
            )));
        }
        if after_wall.is_some_and(|s| wall <= s) {
            continue;
        }
        if matches!(rule.end(), End::UntilLocal(until) if wall > until) {
            return Ok(None);
        }
        let instant = local_to_instant(time_zone, wall).ok_or_else(|| {
            RecurrenceError::no_occurrence(format!("{wall} is out of range in {time_zone}"))
        })?;
        if matches!(rule.end(), End::Until(until) if instant > until) {
            return Ok(None);
        }
        if instant > after {
            if !in_timestamp_range(instant) {
                return Err(RecurrenceError::no_occurrence(format!(
                    "the next occurrence, {instant}, is outside the timestamp range \
                     {TIMESTAMP_RANGE}"
                )));
            }
            return Ok(Some(instant));
        }
    }
    Err(RecurrenceError::no_occurrence(
        "the rule produced no further occurrence within the search limits",
    ))
}

/// How many years the Gregorian calendar takes to repeat itself: 400 years have the same
/// leap days and are 146 097 days, exactly 20 871 weeks, so every date falls on the same
/// weekday and in the same ISO week again.
const GREGORIAN_CYCLE_YEARS: i32 = 400;

/// `start` moved forward by whole calendar cycles towards `target`, so that the search walks
/// less than 400 × interval years plus two (146 097 periods of a daily rule, 400 of a yearly
/// one) instead of everything since a start that may lie millennia back (a due time in the year 1 with
/// `FREQ=DAILY;BYMONTH=2;BYMONTHDAY=29` walked 740 000 days).
///
/// The series keeps its meaning: `interval` cycles are a whole number of the rule's periods
/// (400 × interval years, 4 800 × interval months, 20 871 × interval weeks or
/// 146 097 × interval days), and the moved start has the same month, day of month, weekday,
/// ISO week and time of day, so the periods from there on hold the same occurrences. (Easter
/// would break this, and the `rrule` crate's BYEASTER is not enabled.) The occurrences
/// before the moved start are dropped; the start stays over a year before `target`, so
/// those are all before it too.
fn skip_calendar_cycles(
    start: NaiveDateTime,
    target: NaiveDateTime,
    interval: u16,
) -> NaiveDateTime {
    let step = GREGORIAN_CYCLE_YEARS * i32::from(interval.max(1));
    let years = target.year() - start.year() - 2;
    if years < step {
        return start;
    }
    start
        .with_year(start.year() + years / step * step)
        .unwrap_or(start)
}

/// A rule's occurrences as wall-clock times, from a wall-clock start.
///
/// The `rrule` crate runs in UTC here, used as a "floating" zone: its UTC times are the
/// task's wall-clock times. Resolving them in the task's zone is left to
/// [`local_to_instant`], which handles gaps and folds the way users expect (the crate's own
/// zone support moves 02:30 in a gap to 03:30 and skips days whose midnight does not exist).
pub(crate) struct FloatingSeries {
    set: RRuleSet,
}

impl FloatingSeries {
    pub(crate) fn new(
        rule: &RRule<Unvalidated>,
        start: NaiveDateTime,
    ) -> Result<Self, RecurrenceError> {
        let dt_start = rrule::Tz::UTC.from_utc_datetime(&start);
        let mut set = RRuleSet::new(dt_start).limit();
        for part in month_end_capped(rule, start) {
            let part = part
                .validate(dt_start)
                .map_err(|e| RecurrenceError::invalid(Field::Rrule, e.to_string()))?;
            set = set.rrule(part);
        }
        Ok(Self { set })
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = NaiveDateTime> + '_ {
        (&self.set).into_iter().map(|t| t.naive_utc())
    }
}

/// The rule, rewritten so that a day of month taken from the start (29, 30 or 31) falls on
/// the month's last day when the month is shorter, instead of skipping the month as RFC 5545
/// does: "the last of days 28..=D" is `BYMONTHDAY=28,..,D;BYSETPOS=-1`. With k times a day
/// (BYHOUR=9,17 is k = 2) the set holds k times per day, so it is `BYSETPOS=-k..=-1`, every
/// time of the last day.
///
/// Only when the day comes from the start (no BYMONTHDAY, BYDAY, BYYEARDAY, BYWEEKNO or
/// BYSETPOS of the rule's own). A yearly rule is split into one rule per month, as BYSETPOS
/// counts within the whole year.
fn month_end_capped(rule: &RRule<Unvalidated>, start: NaiveDateTime) -> Vec<RRule<Unvalidated>> {
    let day = start.day();
    let picks_its_days = !rule.get_by_month_day().is_empty()
        || !rule.get_by_weekday().is_empty()
        || !rule.get_by_year_day().is_empty()
        || !rule.get_by_week_no().is_empty()
        || !rule.get_by_set_pos().is_empty();
    if day < 29 || picks_its_days {
        return vec![rule.clone()];
    }
    // At most MAX_TIMES_PER_DAY, checked when the rule was built (the `min` only keeps a
    // broken check from building a huge BYSETPOS).
    let times = i32::try_from(times_per_day(rule).min(MAX_TIMES_PER_DAY)).unwrap_or(1);
    let last_day: Vec<i32> = (-times..=-1).collect();
    let days: Vec<i8> = (28..=day).filter_map(|d| i8::try_from(d).ok()).collect();
    match rule.get_freq() {
        rrule::Frequency::Monthly => {
            vec![rule.clone().by_month_day(days).by_set_pos(last_day)]
        }
        rrule::Frequency::Yearly => {
            let months = if rule.get_by_month().is_empty() {
                u8::try_from(start.month()).into_iter().collect()
            } else {
                rule.get_by_month().to_vec()
            };
            months
                .into_iter()
                .filter_map(|m| chrono::Month::try_from(m).ok())
                .map(|m| {
                    rule.clone()
                        .by_month(&[m])
                        .by_month_day(days.clone())
                        .by_set_pos(last_day.clone())
                })
                .collect()
        }
        _ => vec![rule.clone()],
    }
}
