//! What a model writes (`"high"`, `"daily"`, `2026-05-01T09:00` in `Europe/Berlin`) turned
//! into the Task API's values, and back; pure functions, each error naming its field.

use chrono::{DateTime, NaiveDateTime, TimeZone as _, Utc};
use chrono_tz::Tz;
use todo_proto::todo::v1::{Frequency, Priority, Recurrence, Task, TaskStatus};

/// A tool argument that cannot be used: `field` is its path in the tool's arguments
/// (`tasks[1].due`), `reason` says what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct BadArgument {
    pub field: String,
    pub reason: String,
}

impl BadArgument {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// `"low" | "medium" | "high" | "urgent"` (or `"none"`).
pub fn priority(field: &str, word: &str) -> Result<Priority, BadArgument> {
    Ok(match word.trim().to_ascii_lowercase().as_str() {
        "none" | "" => Priority::Unspecified,
        "low" => Priority::Low,
        "medium" | "normal" => Priority::Medium,
        "high" => Priority::High,
        "urgent" => Priority::Urgent,
        other => {
            return Err(BadArgument::new(
                field,
                format!("{other:?} is not one of low, medium, high, urgent"),
            ));
        }
    })
}

/// The word for a priority (`None` when unset).
pub fn priority_word(p: Priority) -> Option<&'static str> {
    match p {
        Priority::Unspecified => None,
        Priority::Low => Some("low"),
        Priority::Medium => Some("medium"),
        Priority::High => Some("high"),
        Priority::Urgent => Some("urgent"),
    }
}

/// `"open" | "completed"` (`"all"` is no filter).
pub fn status(field: &str, word: &str) -> Result<TaskStatus, BadArgument> {
    Ok(match word.trim().to_ascii_lowercase().as_str() {
        "all" | "" => TaskStatus::Unspecified,
        "open" => TaskStatus::Open,
        "completed" | "done" => TaskStatus::Completed,
        other => {
            return Err(BadArgument::new(
                field,
                format!("{other:?} is not one of open, completed, all"),
            ));
        }
    })
}

/// The word for a status.
pub fn status_word(s: TaskStatus) -> &'static str {
    match s {
        TaskStatus::Unspecified => "unknown",
        TaskStatus::Open => "open",
        TaskStatus::Completed => "completed",
    }
}

/// How a task repeats: `"daily" | "weekly" | "monthly" | "yearly"` (every `every` periods),
/// or an RFC 5545 RRULE (`"FREQ=WEEKLY;BYDAY=MO,WE"`, with or without `RRULE:`).
pub fn recurrence(field: &str, word: &str, every: Option<u32>) -> Result<Recurrence, BadArgument> {
    let word = word.trim();
    let upper = word.to_ascii_uppercase();
    if upper.starts_with("FREQ=") || upper.starts_with("RRULE:") {
        if every.is_some() {
            return Err(BadArgument::new(
                field,
                "repeat_every goes with a plain frequency; put INTERVAL= in the RRULE instead",
            ));
        }
        return Ok(Recurrence {
            rrule: upper.trim_start_matches("RRULE:").to_owned(),
            ..Recurrence::default()
        });
    }
    let frequency = match word.to_ascii_lowercase().as_str() {
        "daily" | "day" | "every day" => Frequency::Daily,
        "weekly" | "week" | "every week" => Frequency::Weekly,
        "monthly" | "month" | "every month" => Frequency::Monthly,
        "yearly" | "year" | "annually" | "every year" => Frequency::Yearly,
        other => {
            return Err(BadArgument::new(
                field,
                format!("{other:?} is not daily, weekly, monthly, yearly or an RRULE (FREQ=...)"),
            ));
        }
    };
    Ok(Recurrence {
        frequency: frequency as i32,
        interval: every.unwrap_or(0),
        ..Recurrence::default()
    })
}

/// How a recurrence reads (`"daily"`, `"every 2 weeks"`, the RRULE).
pub fn recurrence_words(r: &Recurrence) -> String {
    if !r.rrule.is_empty() {
        return r.rrule.clone();
    }
    let (word, unit) = match Frequency::try_from(r.frequency).unwrap_or_default() {
        Frequency::Daily => ("daily", "days"),
        Frequency::Weekly => ("weekly", "weeks"),
        Frequency::Monthly => ("monthly", "months"),
        Frequency::Yearly => ("yearly", "years"),
        Frequency::Unspecified => ("unspecified", "periods"),
    };
    if r.interval > 1 {
        format!("every {} {unit}", r.interval)
    } else {
        word.to_owned()
    }
}

/// An IANA time zone name.
pub fn zone(field: &str, name: &str) -> Result<Tz, BadArgument> {
    name.trim().parse::<Tz>().map_err(|_| {
        BadArgument::new(
            field,
            format!("{name:?} is not an IANA time zone (e.g. Europe/Berlin, UTC)"),
        )
    })
}

/// An instant: RFC 3339 (`2026-05-01T09:00:00Z`, `…+02:00`), or a local date-time without
/// offset (`2026-05-01T09:00`) read in `zone` (UTC when none).
pub fn instant(field: &str, text: &str, zone: Option<Tz>) -> Result<DateTime<Utc>, BadArgument> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let local = [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok());
    let bad = || {
        BadArgument::new(
            field,
            format!(
                "{text:?} is not an RFC 3339 time (e.g. 2026-05-01T09:00:00Z, \
                 2026-05-01T09:00:00+02:00, or 2026-05-01T09:00 with time_zone)"
            ),
        )
    };
    let local = local.ok_or_else(bad)?;
    zone.unwrap_or(chrono_tz::UTC)
        .from_local_datetime(&local)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| {
            BadArgument::new(field, format!("{text:?} does not exist in that time zone"))
        })
}

/// An instant as RFC 3339 in the task's zone (so a person reads their own 09:00).
pub fn rfc3339_in(t: DateTime<Utc>, zone: &str) -> String {
    match zone.parse::<Tz>() {
        Ok(tz) if !zone.is_empty() => t.with_timezone(&tz).to_rfc3339(),
        _ => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
    }
}

/// A one-line description of a task, for text summaries.
pub fn line(t: &Task) -> String {
    let mut s = format!("{:?} ({})", t.title, t.id);
    if let Some(p) = priority_word(t.priority()) {
        s.push_str(&format!(", {p}"));
    }
    if let Some(due) = t.due_time.as_ref().and_then(todo_proto::from_timestamp) {
        s.push_str(&format!(", due {}", rfc3339_in(due, &t.time_zone)));
    }
    if let Some(r) = &t.recurrence {
        s.push_str(&format!(", repeats {}", recurrence_words(r)));
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn priorities_are_words() {
        assert_eq!(priority("p", "High").unwrap(), Priority::High);
        assert_eq!(priority("p", "urgent").unwrap(), Priority::Urgent);
        assert_eq!(
            priority("tasks[0].priority", "asap").unwrap_err().field,
            "tasks[0].priority"
        );
        assert_eq!(priority_word(Priority::Low), Some("low"));
    }

    #[test]
    fn frequencies_are_words_or_rrules() {
        let r = recurrence("r", "daily", None).unwrap();
        assert_eq!((r.frequency(), r.interval), (Frequency::Daily, 0));
        let r = recurrence("r", "weekly", Some(2)).unwrap();
        assert_eq!(recurrence_words(&r), "every 2 weeks");
        let r = recurrence("r", "RRULE:FREQ=MONTHLY;BYDAY=-1FR", None).unwrap();
        assert_eq!(r.rrule, "FREQ=MONTHLY;BYDAY=-1FR");
        assert_eq!(recurrence("r", "fortnightly", None).unwrap_err().field, "r");
        assert_eq!(
            recurrence("r", "FREQ=DAILY", Some(2)).unwrap_err().field,
            "r"
        );
    }

    #[test]
    fn times_are_rfc3339_or_local_in_a_zone() {
        let utc = instant("due", "2026-05-01T09:00:00Z", None).unwrap();
        assert_eq!(utc.to_rfc3339(), "2026-05-01T09:00:00+00:00");
        let offset = instant("due", "2026-05-01T09:00:00+02:00", None).unwrap();
        assert_eq!(offset.to_rfc3339(), "2026-05-01T07:00:00+00:00");
        let berlin = zone("time_zone", "Europe/Berlin").unwrap();
        let local = instant("due", "2026-05-01T09:00", Some(berlin)).unwrap();
        assert_eq!(local, offset);
        assert_eq!(
            rfc3339_in(local, "Europe/Berlin"),
            "2026-05-01T09:00:00+02:00"
        );
        let e = instant("tasks[0].due", "tomorrow-ish", None).unwrap_err();
        assert_eq!(e.field, "tasks[0].due");
        assert_eq!(
            zone("time_zone", "Mars/Olympus").unwrap_err().field,
            "time_zone"
        );
    }

    #[test]
    fn statuses_are_words() {
        assert_eq!(status("s", "open").unwrap(), TaskStatus::Open);
        assert_eq!(status("s", "all").unwrap(), TaskStatus::Unspecified);
        assert!(status("s", "maybe").is_err());
    }
}
