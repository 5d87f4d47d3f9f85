//! The pure core: a completed task event in, the request for the next occurrence (or why not) out.
//!
//! No I/O, no clock, no randomness: the caller passes the new event's id and the time, so the
//! same completed event always maps to the same next task (same id, index, due time, fields).

use chrono::{DateTime, Utc};
use todo_proto::{
    from_timestamp, to_timestamp,
    todo::{
        events::v1::{OccurrenceRequested, TaskEvent, TaskEventKind},
        v1::{Task, reminder::When},
    },
};
use todo_recurrence::{Completion, RecurrenceError, RecurrenceRule, next_due, parse_time_zone};
use uuid::Uuid;

/// The UUIDv5 namespace of occurrence task ids. Fixed forever: changing it would give a
/// redelivered completion a different next-task id, and task-service would create the
/// occurrence twice. (A random v4 UUID chosen once for this purpose.)
pub const TASK_ID_NAMESPACE: Uuid = Uuid::from_u128(0x2640_2c08_738d_4a71_a0c9_1f8a_5667_c30a);

/// The id of the task with `occurrence_index` in the series `series_id`: UUIDv5 in
/// [`TASK_ID_NAMESPACE`] of the series id's 16 bytes followed by the index as 4 big-endian
/// bytes.
///
/// It depends on nothing else, so every delivery of the same completion names the same
/// task, and task-service's `INSERT .. ON CONFLICT (id) DO NOTHING` creates it exactly once.
pub fn occurrence_task_id(series_id: Uuid, occurrence_index: u32) -> Uuid {
    let mut name = [0u8; 20];
    name[..16].copy_from_slice(series_id.as_bytes());
    name[16..].copy_from_slice(&occurrence_index.to_be_bytes());
    Uuid::new_v5(&TASK_ID_NAMESPACE, &name)
}

/// What a valid completed event calls for.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Publish this request for the next task.
    Next(Box<OccurrenceRequested>),
    /// The task does not repeat: nothing to do.
    NotRecurring,
    /// The series has ended (count reached or past until): nothing to do.
    SeriesEnded,
}

/// Why a completed event can never produce an occurrence (it is dead-lettered).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidEvent {
    #[error("the event's kind is {kind}, not TASK_EVENT_KIND_COMPLETED")]
    NotCompleted { kind: i32 },
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("event.user_id {event_user:?} is not the task's owner task.user_id {task_user:?}")]
    WrongUser {
        event_user: String,
        task_user: String,
    },
    #[error("{field} {value:?} is not a UUID")]
    NotAUuid { field: &'static str, value: String },
    #[error("{field} is not a valid timestamp")]
    BadTimestamp { field: &'static str },
    #[error("task.occurrence_index {0} is the last one possible")]
    IndexExhausted(u32),
    #[error("{0}")]
    Recurrence(#[from] RecurrenceError),
}

/// Decides what the completion in `event` calls for.
///
/// `event_id` and `now` become the new event's `event_id` and `occurred_at`.
///
/// The engine counts from the task's `series_start_time` (the series' first due time, or
/// the one last set by the user), so a monthly series on the 31st that was capped to the
/// 30th returns to the 31st, and one whose 02:30 fell into a DST gap returns to 02:30. A task
/// without it (written before the field existed) counts from its own due time.
pub fn next_occurrence(
    event: &TaskEvent,
    event_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Decision, InvalidEvent> {
    if event.kind != TaskEventKind::Completed as i32 {
        return Err(InvalidEvent::NotCompleted { kind: event.kind });
    }
    let task = event.task.as_ref().ok_or(InvalidEvent::Missing("task"))?;
    if event.user_id.is_empty() {
        return Err(InvalidEvent::Missing("user_id"));
    }
    if task.user_id.is_empty() {
        return Err(InvalidEvent::Missing("task.user_id"));
    }
    if event.user_id != task.user_id {
        return Err(InvalidEvent::WrongUser {
            event_user: event.user_id.clone(),
            task_user: task.user_id.clone(),
        });
    }
    let task_id = uuid_field("task.id", &task.id)?;
    let Some(recurrence) = &task.recurrence else {
        return Ok(Decision::NotRecurring);
    };
    let rule = RecurrenceRule::try_from(recurrence)?;
    let time_zone = parse_time_zone(&task.time_zone)?;
    // The first task of a series is its own series (task-service sets series_id = id);
    // a later one without a series id cannot be placed.
    let series_id = match (task.series_id.is_empty(), task.occurrence_index) {
        (true, 0) => task_id,
        (true, _) => return Err(InvalidEvent::Missing("task.series_id")),
        (false, _) => uuid_field("task.series_id", &task.series_id)?,
    };
    let due = task
        .due_time
        .as_ref()
        .map(|t| timestamp("task.due_time", t))
        .transpose()?;
    // The snapshot's completion time; an older producer's event time is the next best.
    let completed_at = match (&task.complete_time, &event.occurred_at) {
        (Some(t), _) => timestamp("task.complete_time", t)?,
        (None, Some(t)) => timestamp("occurred_at", t)?,
        (None, None) => return Err(InvalidEvent::Missing("task.complete_time")),
    };
    let next_index = task
        .occurrence_index
        .checked_add(1)
        .ok_or(InvalidEvent::IndexExhausted(task.occurrence_index))?;
    let series_start = task
        .series_start_time
        .as_ref()
        .map(|t| timestamp("task.series_start_time", t))
        .transpose()?;
    let completion = Completion {
        due,
        series_start,
        occurrence_index: task.occurrence_index,
        completed_at,
    };
    let Some(next_due) = next_due(&rule, time_zone, &completion)? else {
        return Ok(Decision::SeriesEnded);
    };
    let mut template = template(task);
    if template.series_start_time.is_none() {
        // A task with neither a due time nor a series start was counted from its completion
        // (see `next_due`): that instant, to the second, is where the series starts. Carried
        // over, it keeps the series' day of month and time of day; left out, the next task
        // would start the series at its own due time, which may be capped (Jan 31 → Feb 28,
        // then the 28th ever after) or moved past a DST gap (02:30 → 03:00 ever after).
        template.series_start_time = Some(to_timestamp(
            DateTime::from_timestamp(completed_at.timestamp(), 0).unwrap_or(completed_at),
        ));
    }
    Ok(Decision::Next(Box::new(OccurrenceRequested {
        event_id: event_id.to_string(),
        occurred_at: Some(to_timestamp(now)),
        user_id: event.user_id.clone(),
        task_id: occurrence_task_id(series_id, next_index).to_string(),
        series_id: series_id.to_string(),
        parent_task_id: task_id.to_string(),
        occurrence_index: next_index,
        due_time: Some(to_timestamp(next_due)),
        template: Some(template),
    })))
}

/// The fields the next task carries over: title, description, priority, tags, time zone,
/// recurrence, the series' start (or, for a task without one, its due time; for a task with
/// neither, [`next_occurrence`] sets the completion it counted from) and the
/// reminders relative to the due time. Reminders at an absolute instant belong to the
/// completed task's moment and are not repeated.
pub fn template(task: &Task) -> Task {
    Task {
        series_start_time: task.series_start_time.or(task.due_time),
        title: task.title.clone(),
        description: task.description.clone(),
        priority: task.priority,
        tags: task.tags.clone(),
        time_zone: task.time_zone.clone(),
        recurrence: task.recurrence.clone(),
        reminders: task
            .reminders
            .iter()
            .filter(|r| matches!(r.when, Some(When::BeforeDue(_))))
            .cloned()
            .collect(),
        ..Task::default()
    }
}

fn uuid_field(field: &'static str, value: &str) -> Result<Uuid, InvalidEvent> {
    if value.is_empty() {
        return Err(InvalidEvent::Missing(field));
    }
    Uuid::parse_str(value).map_err(|_| InvalidEvent::NotAUuid {
        field,
        value: value.to_owned(),
    })
}

fn timestamp(
    field: &'static str,
    t: &prost_types::Timestamp,
) -> Result<DateTime<Utc>, InvalidEvent> {
    from_timestamp(t).ok_or(InvalidEvent::BadTimestamp { field })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use prost_types::Duration;
    use todo_proto::todo::v1::{Frequency, Priority, Recurrence, Reminder, TaskStatus, Weekday};

    const USER: &str = "alice";
    const SERIES: &str = "0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b";
    const TASK: &str = "0190a3b4-5c6d-7e8f-9a0b-ffffffffffff";

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn daily() -> Recurrence {
        Recurrence {
            frequency: Frequency::Daily as i32,
            ..Recurrence::default()
        }
    }

    /// Task 3 of a daily series due 2030-01-01 09:00 Berlin, completed the evening before.
    fn completed(recurrence: Option<Recurrence>) -> TaskEvent {
        TaskEvent {
            event_id: Uuid::now_v7().to_string(),
            occurred_at: Some(to_timestamp(at("2029-12-31T18:00:05Z"))),
            user_id: USER.into(),
            kind: TaskEventKind::Completed as i32,
            task: Some(Task {
                id: TASK.into(),
                user_id: USER.into(),
                title: "Water the plants".into(),
                description: "the big ones too".into(),
                status: TaskStatus::Completed as i32,
                priority: Priority::High as i32,
                tags: vec!["home".into(), "garden".into()],
                due_time: Some(to_timestamp(at("2030-01-01T08:00:00Z"))),
                time_zone: "Europe/Berlin".into(),
                recurrence,
                reminders: vec![
                    Reminder {
                        when: Some(When::BeforeDue(Duration {
                            seconds: 3600,
                            nanos: 0,
                        })),
                    },
                    Reminder {
                        when: Some(When::At(to_timestamp(at("2029-12-31T07:00:00Z")))),
                    },
                ],
                series_id: SERIES.into(),
                parent_task_id: "0190a3b4-0000-7000-8000-000000000000".into(),
                occurrence_index: 3,
                complete_time: Some(to_timestamp(at("2029-12-31T18:00:00Z"))),
                etag: "\"4\"".into(),
                ..Task::default()
            }),
            changed_fields: vec![],
            actor: "user:test".into(),
        }
    }

    fn decide(e: &TaskEvent) -> Result<Decision, InvalidEvent> {
        next_occurrence(e, Uuid::nil(), at("2029-12-31T18:00:06Z"))
    }

    fn next(e: &TaskEvent) -> OccurrenceRequested {
        match decide(e).unwrap() {
            Decision::Next(o) => *o,
            other => panic!("expected an occurrence, got {other:?}"),
        }
    }

    fn with_task(mut e: TaskEvent, f: impl FnOnce(&mut Task)) -> TaskEvent {
        f(e.task.as_mut().unwrap());
        e
    }

    /// Regression: a monthly task without a due time completed on Jan 31 was next due Feb 28,
    /// and the series then started at that capped due time: Mar 28, Apr 28, … instead of
    /// returning to the 31st. The completion it was counted from is now the series' start.
    #[test]
    fn a_series_without_a_due_time_starts_at_the_completion_it_was_counted_from() {
        let monthly = Recurrence {
            frequency: Frequency::Monthly as i32,
            ..Recurrence::default()
        };
        let first = with_task(completed(Some(monthly)), |t| {
            t.due_time = None;
            t.time_zone = "UTC".into();
            t.occurrence_index = 0;
            t.complete_time = Some(to_timestamp(at("2030-01-31T10:00:00.250Z")));
        });
        let o = next(&first);
        assert_eq!(o.due_time, Some(to_timestamp(at("2030-02-28T10:00:00Z"))));
        let start = o.template.as_ref().unwrap().series_start_time;
        assert_eq!(start, Some(to_timestamp(at("2030-01-31T10:00:00Z"))));
        // The next task as task-service stores it (its series start is the template's, or
        // its own due time without one), completed on the day.
        let second = with_task(first, |t| {
            t.due_time = o.due_time;
            t.series_start_time = start.or(o.due_time);
            t.occurrence_index = 1;
            t.complete_time = Some(to_timestamp(at("2030-02-28T12:00:00Z")));
        });
        let o = next_occurrence(&second, Uuid::nil(), at("2030-02-28T12:00:01Z")).unwrap();
        let Decision::Next(o) = o else {
            panic!("expected an occurrence, got {o:?}")
        };
        assert_eq!(o.due_time, Some(to_timestamp(at("2030-03-31T10:00:00Z"))));
    }

    #[test]
    fn the_task_id_is_a_fixed_uuid_v5_of_series_and_index() {
        let series = Uuid::parse_str(SERIES).unwrap();
        let id = occurrence_task_id(series, 4);
        assert_eq!(id.get_version_num(), 5);
        // Golden value (also computed with Python: uuid5 of the namespace and series bytes +
        // b"\x00\x00\x00\x04"): if it changes, redelivered completions create duplicates.
        assert_eq!(id.to_string(), "f574c8e0-dd7e-59fc-b51d-def28c798f29");
        assert_eq!(occurrence_task_id(series, 4), id);
        assert_ne!(occurrence_task_id(series, 5), id);
        assert_ne!(occurrence_task_id(Uuid::now_v7(), 4), id);
    }

    #[test]
    fn a_daily_task_maps_to_the_next_day_with_its_fields_carried() {
        let e = completed(Some(daily()));
        let o = next(&e);
        let series = Uuid::parse_str(SERIES).unwrap();
        let task = e.task.as_ref().unwrap();
        assert_eq!(o.event_id, Uuid::nil().to_string());
        assert_eq!(
            o.occurred_at,
            Some(to_timestamp(at("2029-12-31T18:00:06Z")))
        );
        assert_eq!(o.user_id, USER);
        assert_eq!(o.task_id, occurrence_task_id(series, 4).to_string());
        assert_eq!(o.series_id, SERIES);
        assert_eq!(o.parent_task_id, TASK);
        assert_eq!(o.occurrence_index, 4);
        // 09:00 in Berlin (CET, UTC+1) on the next day.
        assert_eq!(o.due_time, Some(to_timestamp(at("2030-01-02T08:00:00Z"))));
        let t = o.template.unwrap();
        assert_eq!(t.title, task.title);
        assert_eq!(t.description, task.description);
        assert_eq!(t.priority, Priority::High as i32);
        assert_eq!(t.tags, task.tags);
        assert_eq!(t.time_zone, "Europe/Berlin");
        assert_eq!(t.recurrence, Some(daily()));
        assert_eq!(
            t.reminders,
            task.reminders[..1],
            "only the relative reminder"
        );
        // Nothing that belongs to the completed task leaks into the template.
        assert_eq!(
            (t.id, t.status, t.etag, t.series_id, t.occurrence_index),
            (String::new(), 0, String::new(), String::new(), 0)
        );
        assert!(t.due_time.is_none() && t.complete_time.is_none() && t.user_id.is_empty());
        // A task without a series start hands its own due time on as the series' start.
        assert_eq!(t.series_start_time, task.due_time);
    }

    #[test]
    fn a_dense_rule_far_from_its_start_counts_from_the_due_time() {
        // Every 15 minutes of every hour since 2026: ~105,000 occurrences between the start
        // and this task, more than the engine scans; the next one is still 15 minutes on.
        let hours: Vec<String> = (0..24).map(|h| h.to_string()).collect();
        let e = with_task(
            completed(Some(Recurrence {
                rrule: format!("FREQ=DAILY;BYHOUR={};BYMINUTE=0,15,30,45", hours.join(",")),
                ..Recurrence::default()
            })),
            |t| {
                t.time_zone = "UTC".into();
                t.series_start_time = Some(to_timestamp(at("2027-01-01T00:00:00Z")));
            },
        );
        let o = next(&e);
        assert_eq!(o.due_time, Some(to_timestamp(at("2030-01-01T08:15:00Z"))));
    }

    #[test]
    fn a_monthly_series_on_the_31st_returns_to_the_31st_after_a_short_month() {
        let monthly = Recurrence {
            frequency: Frequency::Monthly as i32,
            ..Recurrence::default()
        };
        // The series started on Friday 31 January 2031 at 09:00 UTC; this is its
        // occurrence capped to 28 February, completed that morning.
        let start = to_timestamp(at("2031-01-31T09:00:00Z"));
        let capped = |series_start: Option<prost_types::Timestamp>| {
            with_task(completed(Some(monthly.clone())), |t| {
                t.time_zone = "UTC".into();
                t.due_time = Some(to_timestamp(at("2031-02-28T09:00:00Z")));
                t.complete_time = Some(to_timestamp(at("2031-02-28T10:00:00Z")));
                t.series_start_time = series_start;
            })
        };
        let decide_at = |e: &TaskEvent| match next_occurrence(e, Uuid::nil(), Utc::now()) {
            Ok(Decision::Next(o)) => *o,
            other => panic!("expected an occurrence, got {other:?}"),
        };
        let o = decide_at(&capped(Some(start)));
        assert_eq!(o.due_time, Some(to_timestamp(at("2031-03-31T09:00:00Z"))));
        assert_eq!(
            o.template.unwrap().series_start_time,
            Some(start),
            "the start is carried on"
        );
        // Without the series' start (a task written before the field existed) the capped
        // day is all there is.
        let o = decide_at(&capped(None));
        assert_eq!(o.due_time, Some(to_timestamp(at("2031-03-28T09:00:00Z"))));

        let bad = with_task(capped(None), |t| {
            t.series_start_time = Some(prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0,
            });
        });
        assert!(matches!(
            decide(&bad),
            Err(InvalidEvent::BadTimestamp {
                field: "task.series_start_time"
            })
        ));
    }

    #[test]
    fn the_same_event_always_names_the_same_task() {
        let e = completed(Some(daily()));
        let a = next_occurrence(&e, Uuid::now_v7(), Utc::now()).unwrap();
        let b = next_occurrence(&e, Uuid::now_v7(), Utc::now()).unwrap();
        match (a, b) {
            (Decision::Next(a), Decision::Next(b)) => {
                assert_eq!(a.task_id, b.task_id);
                assert_eq!(a.due_time, b.due_time);
                assert_eq!(a.template, b.template);
                assert_ne!(a.event_id, b.event_id);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_weekly_rrule_and_the_completion_anchor_are_honoured() {
        // Tuesday 2030-01-01; next Monday/Friday is Friday 2030-01-04.
        let e = completed(Some(Recurrence {
            rrule: "FREQ=WEEKLY;BYDAY=MO,FR".into(),
            ..Recurrence::default()
        }));
        assert_eq!(
            next(&e).due_time,
            Some(to_timestamp(at("2030-01-04T08:00:00Z")))
        );
        // Every 3 days counted from the completion (Dec 31) at the task's 09:00: Jan 3.
        let e = completed(Some(Recurrence {
            frequency: Frequency::Daily as i32,
            interval: 3,
            anchor: todo_proto::todo::v1::Anchor::CompletionTime as i32,
            ..Recurrence::default()
        }));
        assert_eq!(
            next(&e).due_time,
            Some(to_timestamp(at("2030-01-03T08:00:00Z")))
        );
    }

    #[test]
    fn the_first_task_of_a_series_is_its_own_series() {
        let e = with_task(completed(Some(daily())), |t| {
            t.series_id.clear();
            t.occurrence_index = 0;
        });
        let o = next(&e);
        assert_eq!(o.series_id, TASK);
        assert_eq!(o.occurrence_index, 1);
        assert_eq!(
            o.task_id,
            occurrence_task_id(Uuid::parse_str(TASK).unwrap(), 1).to_string()
        );
    }

    #[test]
    fn a_task_without_a_due_time_is_due_one_period_after_its_completion() {
        let e = with_task(completed(Some(daily())), |t| t.due_time = None);
        assert_eq!(
            next(&e).due_time,
            Some(to_timestamp(at("2030-01-01T18:00:00Z")))
        );
    }

    #[test]
    fn nothing_to_do_for_a_one_off_task_or_an_ended_series() {
        assert_eq!(decide(&completed(None)), Ok(Decision::NotRecurring));
        // Index 3 is the 4th task: with count 4 it was the last.
        let count = Recurrence {
            count: 4,
            ..daily()
        };
        assert_eq!(decide(&completed(Some(count))), Ok(Decision::SeriesEnded));
        let count = Recurrence {
            count: 5,
            ..daily()
        };
        assert_eq!(next(&completed(Some(count))).occurrence_index, 4);
        let until = Recurrence {
            until: Some(to_timestamp(at("2030-01-01T23:00:00Z"))),
            ..daily()
        };
        assert_eq!(decide(&completed(Some(until))), Ok(Decision::SeriesEnded));
    }

    #[test]
    fn invalid_events_say_why() {
        let ok = || completed(Some(daily()));
        let cases: Vec<(TaskEvent, InvalidEvent)> = vec![
            (
                TaskEvent {
                    kind: TaskEventKind::Updated as i32,
                    ..ok()
                },
                InvalidEvent::NotCompleted { kind: 2 },
            ),
            (
                TaskEvent { task: None, ..ok() },
                InvalidEvent::Missing("task"),
            ),
            (
                TaskEvent {
                    user_id: String::new(),
                    ..ok()
                },
                InvalidEvent::Missing("user_id"),
            ),
            (
                with_task(ok(), |t| t.user_id = "mallory".into()),
                InvalidEvent::WrongUser {
                    event_user: USER.into(),
                    task_user: "mallory".into(),
                },
            ),
            (
                with_task(ok(), |t| t.user_id.clear()),
                InvalidEvent::Missing("task.user_id"),
            ),
            (
                with_task(ok(), |t| t.id = "42".into()),
                InvalidEvent::NotAUuid {
                    field: "task.id",
                    value: "42".into(),
                },
            ),
            (
                with_task(ok(), |t| t.series_id.clear()),
                InvalidEvent::Missing("task.series_id"),
            ),
            (
                // complete_time falls back to occurred_at; without either it is missing.
                TaskEvent {
                    occurred_at: None,
                    ..with_task(ok(), |t| t.complete_time = None)
                },
                InvalidEvent::Missing("task.complete_time"),
            ),
            (
                with_task(ok(), |t| t.occurrence_index = u32::MAX),
                InvalidEvent::IndexExhausted(u32::MAX),
            ),
            (
                with_task(ok(), |t| {
                    t.due_time = Some(prost_types::Timestamp {
                        seconds: 0,
                        nanos: -1,
                    })
                }),
                InvalidEvent::BadTimestamp {
                    field: "task.due_time",
                },
            ),
        ];
        for (event, want) in cases {
            assert_eq!(decide(&event), Err(want.clone()), "{want}");
        }
    }

    #[test]
    fn a_bad_rule_or_time_zone_is_invalid_even_when_the_owner_matches() {
        let bad_rules = [
            Recurrence::default(),
            Recurrence {
                rrule: "FREQ=SOMETIMES".into(),
                ..Recurrence::default()
            },
            Recurrence {
                frequency: Frequency::Monthly as i32,
                by_weekday: vec![Weekday::Monday as i32],
                ..Recurrence::default()
            },
            Recurrence {
                rrule: "FREQ=HOURLY".into(),
                ..Recurrence::default()
            },
        ];
        for r in bad_rules {
            assert!(
                matches!(
                    decide(&completed(Some(r.clone()))),
                    Err(InvalidEvent::Recurrence(
                        RecurrenceError::InvalidRecurrence { .. }
                    ))
                ),
                "{r:?}"
            );
        }
        let e = with_task(completed(Some(daily())), |t| {
            t.time_zone = "Mars/Olympus".into()
        });
        assert!(matches!(
            decide(&e),
            Err(InvalidEvent::Recurrence(
                RecurrenceError::UnknownTimeZone { .. }
            ))
        ));
    }

    #[test]
    fn a_wrong_user_is_invalid_even_for_a_one_off_task() {
        let e = with_task(completed(None), |t| t.user_id = "mallory".into());
        assert!(matches!(decide(&e), Err(InvalidEvent::WrongUser { .. })));
    }
}
