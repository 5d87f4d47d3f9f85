//! The recurrence engine: given a recurring task that was just completed, when is the next one due?
//!
//! Pure functions over plain values, no I/O. The API checks rules with [`validate`]; the
//! recurring-task service turns the completed task into a [`RecurrenceRule`] (from the proto,
//! `TryFrom<&Recurrence>`), a [`Completion`] and a time zone ([`parse_time_zone`]), and calls
//! [`next_due`].
//!
//! # Semantics
//!
//! The `rrule` crate does the RFC 5545 calendar work; on top of it, this crate does what
//! RFC 5545 leaves out or does differently from what users expect:
//!
//! - **Wall-clock time in the task's zone.** The rule runs on wall-clock times in the task's
//!   IANA zone, so "daily at 09:00 Europe/Berlin" stays at 09:00 local across
//!   daylight-saving changes. A wall-clock time that does not exist (clocks spring forward)
//!   becomes the first valid instant after the gap (02:30 → 03:00 CEST); an ambiguous one
//!   (clocks fall back) takes the first, earlier instant. The following occurrences return
//!   to the series' own time of day (taken from [`Completion::series_start`]).
//! - **Month ends.** A monthly rule on the 29th, 30th or 31st falls on the last day of
//!   shorter months instead of skipping them: Jan 31 → Feb 28 (Feb 29 in a leap year) →
//!   Mar 31 → Apr 30. The day of month comes from the series' start, never from the capped
//!   previous due time, so the series returns to the 31st whenever the month has one. A
//!   yearly rule on Feb 29 falls on Feb 28 in common years. This applies when the day of
//!   month comes from the start; an RRULE's explicit `BYMONTHDAY=31` keeps the RFC meaning
//!   (months without a 31st are skipped); `BYMONTHDAY=-1` means the last day.
//! - **Anchors.** [`Anchor::DueTime`] (the default) keeps the calendar rhythm of the series
//!   (its start, interval and weekdays). [`Anchor::CompletionTime`] (Todoist's "every!")
//!   restarts the rule on the completion date, at the series' time of day: "every! 3 days",
//!   completed on the 5th, is next due on the 8th, whether the task was due on the 4th or
//!   the 10th. So with this anchor an early completion can give a next due time earlier than
//!   the completed task's own.
//! - **Late completion.** Completing an overdue task does not create an occurrence already
//!   in the past: the next due time is the first occurrence of the series strictly after
//!   both the completed task's due time and the completion time. The series keeps its rhythm
//!   (a fortnightly Monday task completed three weeks late is next due on the Monday of the
//!   series' next fortnight, not on "completion + 2 weeks"). Occurrences skipped this way are
//!   not tasks and do not count towards `count`.
//! - **Ends.** [`End::Until`] is inclusive: an occurrence due exactly at `until` is created.
//!   [`End::Count`] counts tasks by their occurrence index, which starts at 0 for the first
//!   task: with count N, the task with index N-1 is the last, and completing it creates
//!   nothing (neither does completing any later index).
//! - **No due time.** A recurring task without a due time gets its first due time from the
//!   rule counted from the completion time, as with [`Anchor::CompletionTime`] (daily,
//!   completed Tuesday 14:23:17 → Wednesday 14:23:17).
//!
//! Every result is strictly later than the completion time, to the second (sub-second parts
//! are dropped), and its wall-clock time exists in the task's zone. Frequencies below daily
//! are rejected, and so are RRULEs with more than [`MAX_TIMES_PER_DAY`] times a day.

#![warn(missing_docs)]

mod engine;
mod error;
mod local_time;
mod proto;
mod rule;

pub use chrono_tz::Tz;
pub use engine::{Completion, MAX_SCANNED_OCCURRENCES, next_due};
pub use error::{Field, RecurrenceError};
pub use local_time::{local_to_instant, parse_time_zone};
pub use proto::validate;
pub use rule::{Anchor, End, Frequency, MAX_INTERVAL, MAX_TIMES_PER_DAY, Pattern, RecurrenceRule};
