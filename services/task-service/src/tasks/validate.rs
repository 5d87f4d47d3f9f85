//! Validation of API input, pure: every rejection names the field it is about.

use std::str::FromStr;

use todo_proto::todo::v1::{Priority, Recurrence, Reminder, Task, reminder::When};

/// One reason a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

pub const MAX_TITLE: usize = 500;
pub const MAX_DESCRIPTION: usize = 10_000;
pub const MAX_TAGS: usize = 20;
pub const MAX_TAG: usize = 50;
pub const MAX_REMINDERS: usize = 10;
/// Past this many tags a list is refused whole, its elements unread (duplicates within the
/// limit are still merged).
const MAX_LISTED: usize = 10 * MAX_TAGS;
/// The largest protobuf Duration (10,000 years).
const MAX_DURATION_SECONDS: i64 = 315_576_000_000;

/// The user-settable fields of a task, validated and normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFields {
    pub title: String,
    pub description: String,
    pub priority: i32,
    pub tags: Vec<String>,
    pub due_time: Option<chrono::DateTime<chrono::Utc>>,
    pub time_zone: String,
    pub recurrence: Option<Recurrence>,
    pub reminders: Vec<Reminder>,
}

/// Checks the user-settable fields of `task` (prefixing field names with `prefix`, e.g.
/// `task.`) and returns them normalised: title trimmed, tags trimmed and de-duplicated,
/// time zone defaulted to UTC. Collects every violation, not just the first.
/// Text may not hold NUL: PostgreSQL's text cannot store it, and no client means it.
pub const NO_NUL: &str = "must not contain NUL (U+0000)";

pub fn task_fields(task: &Task, prefix: &str) -> Result<TaskFields, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let f = |name: &str| format!("{prefix}{name}");

    let title = task.title.trim().to_owned();
    let title_len = title.chars().count();
    if title_len == 0 {
        v.push(FieldViolation::new(f("title"), "must not be empty"));
    } else if title.contains('\0') {
        v.push(FieldViolation::new(f("title"), NO_NUL));
    } else if title_len > MAX_TITLE {
        v.push(FieldViolation::new(
            f("title"),
            format!("must be at most {MAX_TITLE} characters, got {title_len}"),
        ));
    }

    let desc_len = task.description.chars().count();
    if task.description.contains('\0') {
        v.push(FieldViolation::new(f("description"), NO_NUL));
    } else if desc_len > MAX_DESCRIPTION {
        v.push(FieldViolation::new(
            f("description"),
            format!("must be at most {MAX_DESCRIPTION} characters, got {desc_len}"),
        ));
    }

    if Priority::try_from(task.priority).is_err() {
        v.push(FieldViolation::new(
            f("priority"),
            format!("unknown priority {}", task.priority),
        ));
    }

    // A list far past its limit is refused as a whole, before its elements are looked at:
    // each one checked (and each violation written into the answer) is work and memory the
    // caller chose the size of.
    let too_many_tags = task.tags.len() > MAX_LISTED;
    if too_many_tags {
        v.push(FieldViolation::new(
            f("tags"),
            format!("at most {MAX_TAGS} tags, got {}", task.tags.len()),
        ));
    }
    let listed_tags = if too_many_tags {
        &[][..]
    } else {
        &task.tags[..]
    };
    let mut tags: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, tag) in listed_tags.iter().enumerate() {
        let t = tag.trim();
        let n = t.chars().count();
        if n == 0 {
            v.push(FieldViolation::new(
                format!("{}[{i}]", f("tags")),
                "must not be empty",
            ));
        } else if t.contains('\0') {
            v.push(FieldViolation::new(format!("{}[{i}]", f("tags")), NO_NUL));
        } else if n > MAX_TAG {
            v.push(FieldViolation::new(
                format!("{}[{i}]", f("tags")),
                format!("must be at most {MAX_TAG} characters, got {n}"),
            ));
        } else if seen.insert(t) {
            tags.push(t.to_owned());
        }
    }
    if !too_many_tags && tags.len() > MAX_TAGS {
        v.push(FieldViolation::new(
            f("tags"),
            format!("at most {MAX_TAGS} tags, got {}", tags.len()),
        ));
    }

    let due_time = match &task.due_time {
        None => None,
        Some(ts) => match todo_proto::from_timestamp(ts) {
            Some(t) => Some(t),
            None => {
                v.push(FieldViolation::new(f("due_time"), "not a valid timestamp"));
                None
            }
        },
    };

    let time_zone = if task.time_zone.is_empty() {
        "UTC".to_owned()
    } else if chrono_tz::Tz::from_str(&task.time_zone).is_ok() {
        task.time_zone.clone()
    } else {
        v.push(FieldViolation::new(
            f("time_zone"),
            format!(
                "{:?} is not an IANA time zone (e.g. \"Europe/Berlin\")",
                task.time_zone
            ),
        ));
        task.time_zone.clone()
    };

    if let Some(r) = &task.recurrence
        && let Err(e) = todo_recurrence::validate(r)
    {
        v.push(recurrence_violation(prefix, e));
    }

    if !task.reminders.is_empty() && task.due_time.is_none() {
        let only_absolute = task
            .reminders
            .iter()
            .all(|r| matches!(r.when, Some(When::At(_))));
        if !only_absolute {
            v.push(FieldViolation::new(
                f("reminders"),
                "reminders relative to the due time need a due_time",
            ));
        }
    }
    if task.reminders.len() > MAX_REMINDERS {
        v.push(FieldViolation::new(
            f("reminders"),
            format!(
                "at most {MAX_REMINDERS} reminders, got {}",
                task.reminders.len()
            ),
        ));
    }
    // (Past the limit, the list is refused as a whole: see the tags.)
    let listed_reminders = if task.reminders.len() > MAX_REMINDERS {
        &[][..]
    } else {
        &task.reminders[..]
    };
    for (i, r) in listed_reminders.iter().enumerate() {
        let field = format!("{}[{i}]", f("reminders"));
        match &r.when {
            None => v.push(FieldViolation::new(field, "set before_due or at")),
            Some(When::BeforeDue(d)) => {
                if d.seconds < 0 || d.nanos < 0 {
                    v.push(FieldViolation::new(
                        format!("{field}.before_due"),
                        "must not be negative",
                    ));
                } else if d.seconds > MAX_DURATION_SECONDS || d.nanos >= 1_000_000_000 {
                    // Protobuf's Duration range; a reminder outside it could never be planned.
                    v.push(FieldViolation::new(
                        format!("{field}.before_due"),
                        "not a valid duration (seconds at most 315,576,000,000, nanos below \
                         1,000,000,000)",
                    ));
                }
            }
            Some(When::At(ts)) => {
                if todo_proto::from_timestamp(ts).is_none() {
                    v.push(FieldViolation::new(
                        format!("{field}.at"),
                        "not a valid timestamp",
                    ));
                }
            }
        }
    }

    if v.is_empty() {
        Ok(TaskFields {
            title,
            description: task.description.clone(),
            priority: task.priority,
            tags,
            due_time,
            time_zone,
            recurrence: task.recurrence.clone(),
            reminders: task.reminders.clone(),
        })
    } else {
        Err(v)
    }
}

fn recurrence_violation(prefix: &str, e: todo_recurrence::RecurrenceError) -> FieldViolation {
    match e {
        todo_recurrence::RecurrenceError::InvalidRecurrence { field, reason } => {
            FieldViolation::new(format!("{prefix}{field}"), reason)
        }
        other => FieldViolation::new(format!("{prefix}recurrence"), other.to_string()),
    }
}

/// The paths UpdateTask's `update_mask` may name.
pub const UPDATABLE: [&str; 8] = [
    "title",
    "description",
    "priority",
    "tags",
    "due_time",
    "time_zone",
    "recurrence",
    "reminders",
];

/// Checks an update mask: non-empty, known paths only.
pub fn update_mask(paths: &[String]) -> Result<(), Vec<FieldViolation>> {
    if paths.is_empty() {
        return Err(vec![FieldViolation::new(
            "update_mask",
            format!("name the fields to change, among {}", UPDATABLE.join(", ")),
        )]);
    }
    let unknown: Vec<FieldViolation> = paths
        .iter()
        .filter(|p| !UPDATABLE.contains(&p.as_str()))
        .map(|p| {
            FieldViolation::new(
                "update_mask",
                format!(
                    "unknown or read-only path {p:?}; updatable: {}",
                    UPDATABLE.join(", ")
                ),
            )
        })
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(unknown)
    }
}

/// Parses a task id (a UUID) named by `field`.
pub fn task_id(id: &str, field: &str) -> Result<uuid::Uuid, Vec<FieldViolation>> {
    uuid::Uuid::parse_str(id).map_err(|_| {
        vec![FieldViolation::new(
            field,
            format!("{id:?} is not a task id (a UUID)"),
        )]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Duration;

    fn task(title: &str) -> Task {
        Task {
            title: title.into(),
            ..Task::default()
        }
    }

    fn fields(r: Result<TaskFields, Vec<FieldViolation>>) -> Vec<String> {
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.field)
            .collect()
    }

    #[test]
    fn title_is_trimmed_and_bounded() {
        assert_eq!(task_fields(&task("  hi  "), "task.").unwrap().title, "hi");
        assert_eq!(fields(task_fields(&task("a\0b"), "task.")), ["task.title"]);
        assert_eq!(fields(task_fields(&task("   "), "task.")), ["task.title"]);
        assert_eq!(
            fields(task_fields(&task(&"é".repeat(501)), "task.")),
            ["task.title"]
        );
        assert!(task_fields(&task(&"é".repeat(500)), "task.").is_ok());
    }

    #[test]
    fn tags_are_bounded_and_deduplicated() {
        let mut t = task("x");
        t.tags = vec!["a".into(), " a ".into(), "b".into()];
        assert_eq!(task_fields(&t, "").unwrap().tags, ["a", "b"]);
        t.tags = (0..21).map(|i| i.to_string()).collect();
        assert_eq!(fields(task_fields(&t, "")), ["tags"]);
        t.tags = vec!["x".repeat(51)];
        assert_eq!(fields(task_fields(&t, "")), ["tags[0]"]);
    }

    /// Regression (hostile input): the de-duplication compared every tag with every kept
    /// one and the limit was checked after it, and each bad element added a violation to
    /// the answer, so a request of a million tags took minutes of CPU or hundreds of MB.
    #[test]
    fn a_list_far_past_its_limit_is_refused_whole() {
        let mut t = task("x");
        t.tags = (0..5_000).map(|i| i.to_string()).collect();
        assert_eq!(fields(task_fields(&t, "task.")), ["task.tags"]);
        t.tags = vec![String::new(); 1_000_000];
        assert_eq!(fields(task_fields(&t, "task.")), ["task.tags"]);
        // Within ten times the limit, duplicates still count once.
        t.tags = (0..200).map(|i| (i % 20).to_string()).collect();
        assert_eq!(task_fields(&t, "").unwrap().tags.len(), 20);
        t.tags = Vec::new();
        t.due_time = Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 0,
        });
        t.reminders = vec![Reminder::default(); 1_000_000];
        assert_eq!(fields(task_fields(&t, "task.")), ["task.reminders"]);
    }

    /// Regression: a reminder `before_due` that no instant can be computed from (nanos of a
    /// second or more, seconds past protobuf's range) was stored and never fired.
    #[test]
    fn a_reminder_offset_outside_protobufs_range_is_named() {
        let mut t = task("x");
        t.due_time = Some(prost_types::Timestamp {
            seconds: 1_900_000_000,
            nanos: 0,
        });
        for (seconds, nanos) in [(60, 2_000_000_000), (315_576_000_001, 0), (i64::MAX, 0)] {
            t.reminders = vec![Reminder {
                when: Some(When::BeforeDue(Duration { seconds, nanos })),
            }];
            assert_eq!(
                fields(task_fields(&t, "task.")),
                ["task.reminders[0].before_due"],
                "{seconds} s {nanos} ns"
            );
        }
        t.reminders = vec![Reminder {
            when: Some(When::BeforeDue(Duration {
                seconds: 315_576_000_000,
                nanos: 999_999_999,
            })),
        }];
        assert!(task_fields(&t, "").is_ok());
    }

    #[test]
    fn unknown_priority_and_zone_are_named() {
        let mut t = task("x");
        t.priority = 99;
        t.time_zone = "Mars/Olympus".into();
        assert_eq!(
            fields(task_fields(&t, "task.")),
            ["task.priority", "task.time_zone"]
        );
    }

    #[test]
    fn relative_reminders_need_a_due_time() {
        let mut t = task("x");
        t.reminders = vec![Reminder {
            when: Some(When::BeforeDue(Duration {
                seconds: 60,
                nanos: 0,
            })),
        }];
        assert_eq!(fields(task_fields(&t, "")), ["reminders"]);
        t.due_time = Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 0,
        });
        assert!(task_fields(&t, "").is_ok());
        t.reminders = vec![t.reminders[0]; 11];
        assert_eq!(fields(task_fields(&t, "")), ["reminders"]);
    }

    #[test]
    fn masks_name_known_paths() {
        assert!(update_mask(&["title".into()]).is_ok());
        assert!(update_mask(&[]).is_err());
        assert!(update_mask(&["status".into()]).is_err());
    }
}
