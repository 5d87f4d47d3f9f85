//! The recurrence rule as plain Rust values, checked once when it is built.

use std::{collections::HashSet, num::NonZeroU32};

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc, Weekday};
use rrule::{NWeekday, RRule, Unvalidated};

use crate::{
    engine::FloatingSeries,
    error::{Field, RecurrenceError},
};

/// The largest interval accepted, in periods of the rule's frequency. Larger ones are
/// almost certainly typos and only make the search for occurrences longer.
pub const MAX_INTERVAL: u32 = 1000;

/// The most times of day an RRULE may name: |BYHOUR| × |BYMINUTE| × |BYSECOND|, each
/// counted as 1 when absent (the time then comes from the series' start).
///
/// The `rrule` crate builds a whole period (every matching day × every time of day) before
/// it yields the first occurrence of it, so the times of day multiply the work of every
/// period: a yearly rule on every day at every second of the day is 31.5 million times
/// (over a gigabyte, for one call of [`crate::validate`]). 96 is every 15 minutes around
/// the clock, the densest rhythm a task plausibly has; with it one period holds at most
/// 366 × 96 ≈ 35 000 times. The day parts (BYYEARDAY, BYWEEKNO, BYMONTHDAY, BYDAY, BYMONTH)
/// need no bound of their own: they only pick days within the period, at most 366.
pub const MAX_TIMES_PER_DAY: usize = 96;

/// How often a structured rule repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Frequency {
    /// Every `interval` days.
    Daily,
    /// Every `interval` weeks, on the given weekdays (or the weekday of the start).
    Weekly,
    /// Every `interval` months, on the start's day of month (capped to the month's length).
    Monthly,
    /// Every `interval` years, on the start's month and day (29 February becomes 28 February
    /// in common years).
    Yearly,
}

/// Where the next occurrence is counted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Anchor {
    /// From the series' due times (the default): the rhythm is fixed by the calendar.
    #[default]
    DueTime,
    /// From the moment the task was completed (Todoist's "every!").
    CompletionTime,
}

/// When a series stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum End {
    /// Never.
    #[default]
    Never,
    /// After the last occurrence due at or before this instant (inclusive).
    Until(DateTime<Utc>),
    /// After the last occurrence whose wall-clock time in the task's zone is at or before
    /// this one (inclusive). Comes from an RRULE `UNTIL` without `Z`; a date-only `UNTIL`
    /// covers the whole day (23:59:59).
    UntilLocal(NaiveDateTime),
    /// After this many tasks in the series: the task with occurrence index `count - 1`
    /// is the last one.
    Count(NonZeroU32),
}

/// What the rule repeats on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// A structured rule.
    Every {
        /// The period.
        frequency: Frequency,
        /// Every `interval` periods, 1..=[`MAX_INTERVAL`].
        interval: u32,
        /// For weekly rules only: the weekdays it falls on; empty means the start's weekday.
        weekdays: Vec<Weekday>,
    },
    /// An RFC 5545 RRULE, with or without the `RRULE:` prefix, e.g. `FREQ=MONTHLY;BYDAY=-1FR`.
    /// Frequencies below daily are not supported; `COUNT` and `UNTIL` are moved to [`End`].
    Rrule(String),
}

/// A checked recurrence rule: a [`Pattern`], an [`Anchor`] and an [`End`].
///
/// Build it with [`RecurrenceRule::new`] or from the API message with `TryFrom<&Recurrence>`;
/// both reject what [`crate::validate`] rejects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecurrenceRule {
    pattern: Pattern,
    anchor: Anchor,
    end: End,
    /// The pattern in the `rrule` crate's terms, without `COUNT`/`UNTIL` (ends are ours).
    iteration: RRule<Unvalidated>,
}

impl RecurrenceRule {
    /// Checks the parts and builds the rule.
    ///
    /// An RRULE's `COUNT` or `UNTIL` becomes the rule's [`End`] (and must not clash with a
    /// non-`Never` `end`); the stored pattern is the RRULE in upper case, without its prefix,
    /// `COUNT` and `UNTIL`. Weekdays are sorted and deduplicated.
    pub fn new(pattern: Pattern, anchor: Anchor, end: End) -> Result<Self, RecurrenceError> {
        let (pattern, iteration, end) = match pattern {
            Pattern::Every {
                frequency,
                interval,
                weekdays,
            } => {
                let (iteration, weekdays) = structured(frequency, interval, weekdays)?;
                let pattern = Pattern::Every {
                    frequency,
                    interval,
                    weekdays,
                };
                (pattern, iteration, end)
            }
            Pattern::Rrule(text) => {
                let parsed = parse_rrule(&text)?;
                let end = match (end, parsed.end) {
                    (end, End::Never) => end,
                    (End::Never, from_rrule) => from_rrule,
                    (End::Count(_), _) => {
                        return Err(RecurrenceError::invalid(
                            Field::Count,
                            "recurrence.rrule already ends the series (COUNT or UNTIL); \
                             give the end in one place",
                        ));
                    }
                    (End::Until(_) | End::UntilLocal(_), _) => {
                        return Err(RecurrenceError::invalid(
                            Field::Until,
                            "recurrence.rrule already ends the series (COUNT or UNTIL); \
                             give the end in one place",
                        ));
                    }
                };
                (Pattern::Rrule(parsed.text), parsed.rule, end)
            }
        };
        ensure_produces_occurrences(&iteration)?;
        Ok(Self {
            pattern,
            anchor,
            end,
            iteration,
        })
    }

    /// What the rule repeats on, normalised (see [`RecurrenceRule::new`]).
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    /// Where the next occurrence is counted from.
    pub fn anchor(&self) -> Anchor {
        self.anchor
    }

    /// When the series stops.
    pub fn end(&self) -> End {
        self.end
    }

    pub(crate) fn iteration(&self) -> &RRule<Unvalidated> {
        &self.iteration
    }
}

fn check_interval(interval: u32, field: Field) -> Result<u16, RecurrenceError> {
    if interval == 0 {
        return Err(RecurrenceError::invalid(
            field,
            "the interval must be at least 1",
        ));
    }
    if interval > MAX_INTERVAL {
        return Err(RecurrenceError::invalid(
            field,
            format!("the interval must be at most {MAX_INTERVAL}, got {interval}"),
        ));
    }
    u16::try_from(interval)
        .map_err(|_| RecurrenceError::invalid(field, "the interval is too large"))
}

fn structured(
    frequency: Frequency,
    interval: u32,
    mut weekdays: Vec<Weekday>,
) -> Result<(RRule<Unvalidated>, Vec<Weekday>), RecurrenceError> {
    let interval = check_interval(interval, Field::Interval)?;
    if !weekdays.is_empty() && frequency != Frequency::Weekly {
        return Err(RecurrenceError::invalid(
            Field::ByWeekday,
            "weekdays only apply to weekly rules; use an rrule (e.g. FREQ=MONTHLY;BYDAY=-1FR) \
             for other frequencies",
        ));
    }
    weekdays.sort_by_key(Weekday::num_days_from_monday);
    weekdays.dedup();
    let freq = match frequency {
        Frequency::Daily => rrule::Frequency::Daily,
        Frequency::Weekly => rrule::Frequency::Weekly,
        Frequency::Monthly => rrule::Frequency::Monthly,
        Frequency::Yearly => rrule::Frequency::Yearly,
    };
    let mut rule = RRule::new(freq).interval(interval);
    if !weekdays.is_empty() {
        rule = rule.by_weekday(weekdays.iter().map(|d| NWeekday::Every(*d)).collect());
    }
    Ok((rule, weekdays))
}

struct ParsedRrule {
    rule: RRule<Unvalidated>,
    text: String,
    end: End,
}

/// Splits `COUNT` and `UNTIL` off the RRULE (this crate applies ends itself, per task and in
/// the task's zone) and parses the rest with the `rrule` crate.
fn parse_rrule(raw: &str) -> Result<ParsedRrule, RecurrenceError> {
    let invalid = |reason: String| RecurrenceError::invalid(Field::Rrule, reason);
    let upper = raw.trim().to_ascii_uppercase();
    let body = upper.strip_prefix("RRULE:").unwrap_or(&upper).trim();
    if body.is_empty() {
        return Err(invalid("the RRULE is empty".into()));
    }
    if body.contains([':', '\n', '\r']) {
        return Err(invalid(
            "must be one RRULE such as FREQ=WEEKLY;BYDAY=MO, without DTSTART or other \
             properties"
                .into(),
        ));
    }
    let mut seen = HashSet::new();
    let mut kept = Vec::new();
    let (mut count, mut until) = (None, None);
    for part in body.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, value)) = part.split_once('=') else {
            return Err(invalid(format!("{part:?} is not NAME=VALUE")));
        };
        let (name, value) = (name.trim(), value.trim());
        if !seen.insert(name.to_owned()) {
            return Err(invalid(format!("{name} appears more than once")));
        }
        match name {
            "COUNT" => {
                let n = value.parse::<NonZeroU32>().map_err(|_| {
                    invalid(format!(
                        "COUNT must be a number of at least 1, got {value:?}"
                    ))
                })?;
                count = Some(End::Count(n));
            }
            "UNTIL" => {
                let end = parse_until(value).ok_or_else(|| {
                    invalid(format!(
                        "UNTIL must look like 20251231T235959Z, 20251231T235959 or 20251231, \
                         got {value:?}"
                    ))
                })?;
                until = Some(end);
            }
            _ => kept.push(format!("{name}={value}")),
        }
    }
    let text = kept.join(";");
    let rule: RRule<Unvalidated> = text
        .parse()
        .map_err(|e: rrule::RRuleError| invalid(e.to_string()))?;
    if matches!(
        rule.get_freq(),
        rrule::Frequency::Hourly | rrule::Frequency::Minutely | rrule::Frequency::Secondly
    ) {
        return Err(invalid(format!(
            "FREQ={} is not supported: tasks repeat daily at most often",
            rule.get_freq()
        )));
    }
    check_interval(u32::from(rule.get_interval()), Field::Rrule)?;
    let times_per_day = times_per_day(&rule);
    if times_per_day > MAX_TIMES_PER_DAY {
        return Err(invalid(format!(
            "BYHOUR, BYMINUTE and BYSECOND give {times_per_day} times a day; at most \
             {MAX_TIMES_PER_DAY} (every 15 minutes) are supported"
        )));
    }
    let end = match (count, until) {
        (Some(_), Some(_)) => {
            return Err(invalid("COUNT and UNTIL cannot both be set".into()));
        }
        (Some(end), None) | (None, Some(end)) => end,
        (None, None) => End::Never,
    };
    Ok(ParsedRrule { rule, text, end })
}

/// How many times of day the rule's occurrences fall on: the distinct BYHOUR, BYMINUTE and
/// BYSECOND values multiplied, a missing part counting as one (the start's). The `rrule`
/// crate drops duplicates only when it validates the rule, so they are dropped here too.
pub(crate) fn times_per_day(rule: &RRule<Unvalidated>) -> usize {
    fn distinct(values: &[u8]) -> usize {
        values.iter().collect::<HashSet<_>>().len().max(1)
    }
    distinct(rule.get_by_hour())
        .saturating_mul(distinct(rule.get_by_minute()))
        .saturating_mul(distinct(rule.get_by_second()))
}

fn parse_until(value: &str) -> Option<End> {
    if let Ok(t) = NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%SZ") {
        return Some(End::Until(t.and_utc()));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%S") {
        return Some(End::UntilLocal(t));
    }
    let day = NaiveDate::parse_from_str(value, "%Y%m%d").ok()?;
    Some(End::UntilLocal(
        day.and_time(NaiveTime::from_hms_opt(23, 59, 59)?),
    ))
}

/// Rejects rules the `rrule` crate refuses (e.g. BYMONTHDAY with FREQ=WEEKLY) and rules that
/// can never match (e.g. 30 February), from a start on the first of a month, where the start
/// adds no day-of-month of its own.
fn ensure_produces_occurrences(rule: &RRule<Unvalidated>) -> Result<(), RecurrenceError> {
    let reference = NaiveDate::from_ymd_opt(2001, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .ok_or_else(|| RecurrenceError::no_occurrence("reference date out of range"))?;
    let series = FloatingSeries::new(rule, reference)?;
    if series.iter().next().is_none() {
        return Err(RecurrenceError::invalid(
            Field::Rrule,
            "the rule never produces an occurrence",
        ));
    }
    Ok(())
}
