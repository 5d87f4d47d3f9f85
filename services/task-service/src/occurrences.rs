//! Consumes `todo.occurrence.requested.v1`: creates the next task of a recurring series,
//! exactly once. The task id is deterministic (chosen by recurring-task-service), and the
//! create is an atomic insert-if-absent (`ON CONFLICT (id) DO NOTHING`) that also refuses
//! the id of a deleted task (its tombstone): a redelivered or replayed request changes
//! nothing, and a deleted occurrence never comes back.

use std::sync::Arc;

use chrono::Utc;
use dapr_appcallback::{Event, Outcome, Route, Subscriptions};
use sea_orm::{DbErr, SqlErr};
use todo_proto::todo::events::v1::{OccurrenceRequested, TaskEventKind};
use todo_service::db::GroupWriter;
use todo_topology::{components::PUBSUB, event_types};
use uuid::Uuid;

use crate::{
    events::{self, Topics},
    outbox::{self, Wakeup},
    tasks::{self, validate},
};

todo_service::counters! {
    /// How the events on `task-occurrences` ended, since start, each counted once (those
    /// that do not decode as an `OccurrenceRequested` among the dropped). The Prometheus
    /// counter covers the same events.
    pub struct IntakeStats;
    /// A point-in-time copy of [`IntakeStats`].
    pub struct IntakeStatsSnapshot;
    family not_ours, dropped;
    bulk retried;
    metric "occurrence_requests_handled_total";
    /// Requests that created their task.
    created,
    /// Requests whose task exists already or was deleted (a redelivery): SUCCESS, nothing
    /// written.
    existed,
    /// Events of no other type are expected on the topic; kept for the family rules.
    not_ours,
    /// Events answered DROP (invalid, another user's ids, unknown type, undecodable).
    dropped,
    /// Events answered RETRY (the database unavailable, or held behind an earlier RETRY of
    /// the same series in the same delivery).
    retried,
}

/// The subscription of task-service to `task-occurrences`: in bulk (raw payloads), each
/// series' requests one after another and several series at once, so the requests of one
/// delivery share commits through the group writer. Only
/// [`OCCURRENCE_REQUESTED`](todo_topology::event_types::OCCURRENCE_REQUESTED) is taken;
/// any other type (another version, `todo.occurrence.skipped.v1`, a stranger's) and bytes
/// that are no `OccurrenceRequested` are DROPped to `task-occurrences-dlq`.
pub fn subscriptions(occurrences: Occurrences, stats: Arc<IntakeStats>) -> Subscriptions {
    let topics = &occurrences.topics;
    let route = Route::new(
        PUBSUB,
        topics.task_occurrences.clone(),
        topics.task_occurrences_dead_letter.clone(),
    )
    .event_type(event_types::OCCURRENCE_REQUESTED);
    use todo_service::per_user::{BULK_MAX_AWAIT_MS, BULK_MAX_MESSAGES, SERIES_AT_ONCE};
    todo_service::one_of_family_bulk(
        route.bulk_raw(BULK_MAX_MESSAGES, BULK_MAX_AWAIT_MS),
        OCCURRENCE_FAMILY,
        stats,
        Arc::new(occurrences),
        SERIES_AT_ONCE,
        // In order per series (see recurring-task-service's completions): one user's series
        // share group commits instead of waiting for one commit each.
        |m: &OccurrenceRequested| {
            if m.series_id.is_empty() {
                m.user_id.clone()
            } else {
                m.series_id.clone()
            }
        },
        |o: Arc<Occurrences>, e| async move { o.handle(e).await },
    )
}

/// The "family" is the type itself, whole: no other type on the topic (not even one that
/// starts like it) is knowingly ignored, so every other type is DROPped.
const OCCURRENCE_FAMILY: &str = event_types::OCCURRENCE_REQUESTED;

/// The handler's state.
#[derive(Debug, Clone)]
pub struct Occurrences {
    /// The Task API's group writer: an occurrence shares commits with the API's writes.
    pub writer: GroupWriter,
    pub topics: Topics,
    pub wakeup: Wakeup,
    pub nudge: crate::reminders::Nudge,
    pub stats: Arc<IntakeStats>,
}

impl Occurrences {
    pub async fn handle(&self, event: Event<OccurrenceRequested>) -> Outcome {
        let m = event.message;
        let drop = |why: &str| {
            tracing::warn!(event_id = %m.event_id, task_id = %m.task_id, reason = why, "occurrence request dropped to the dead-letter topic");
            self.stats.dropped.count(Outcome::Drop)
        };
        let Ok(id) = Uuid::parse_str(&m.task_id) else {
            return drop("task_id is not a UUID");
        };
        if m.user_id.is_empty() {
            return drop("no user_id");
        }
        if m.user_id.contains('\0') {
            // PostgreSQL's text cannot hold it: the insert would fail on every redelivery.
            return drop("user_id contains NUL");
        }
        let Some(template) = m.template.as_ref() else {
            return drop("no template");
        };
        if !template.user_id.is_empty() && template.user_id != m.user_id {
            return drop("the template belongs to another user");
        }
        let mut t = template.clone();
        t.due_time = m.due_time;
        let fields = match validate::task_fields(&t, "template.") {
            Ok(f) => f,
            Err(v) => return drop(&format!("invalid template: {v:?}")),
        };
        let (Ok(series), Ok(parent)) = (
            Uuid::parse_str(&m.series_id),
            Uuid::parse_str(&m.parent_task_id),
        ) else {
            return drop("series_id or parent_task_id is not a UUID");
        };
        let mut row = tasks::new_row(&m.user_id, id, &fields, Utc::now());
        row.series_id = Some(series);
        row.parent_task_id = Some(parent);
        row.occurrence_index = i32::try_from(m.occurrence_index).unwrap_or(i32::MAX);
        // The series keeps counting from where it started (new_row set the new due time).
        if let (Some(start), Some(_)) = (template.series_start_time.as_ref(), &row.recurrence) {
            let Some(start) = todo_proto::from_timestamp(start) else {
                return drop("template.series_start_time is not a valid timestamp");
            };
            row.series_start = Some(tasks::micros(start));
        }
        let (topics, user) = (self.topics.clone(), m.user_id.clone());
        let result = self
            .writer
            .write_then(
                &m.user_id,
                move |txn| {
                    Box::pin(create(
                        txn,
                        topics.clone(),
                        user.clone(),
                        row.clone(),
                        [series, parent, id],
                    ))
                },
                // Run by the writer: also when this delivery is cancelled meanwhile.
                crate::reminders::after_commit(&self.wakeup, &self.nudge),
            )
            .await;
        match result {
            Ok(_) => self.stats.created.count(Outcome::Success),
            Err(NotCreated::Refused(why)) => drop(why),
            Err(NotCreated::Exists) => self.stats.existed.count(Outcome::Success),
            Err(NotCreated::Database(e))
                if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) =>
            {
                self.stats.existed.count(Outcome::Success)
            }
            Err(NotCreated::Database(e)) => {
                tracing::warn!(error = %e, "occurrence request: database unavailable; retry");
                self.stats.retried.count(Outcome::Retry)
            }
        }
    }
}

/// Why an occurrence was not created (its write is rolled back).
#[derive(Debug)]
enum NotCreated {
    /// The request names another user's task: dead-letter it.
    Refused(&'static str),
    /// Created by an earlier delivery, or deleted since: nothing to do.
    Exists,
    Database(DbErr),
}

impl From<DbErr> for NotCreated {
    fn from(e: DbErr) -> Self {
        Self::Database(e)
    }
}

/// Creates occurrence `row` of `user` (inside the writer's transaction), unless `named`
/// (its series, parent and own id) belong to another user or it exists or was deleted.
async fn create(
    txn: &todo_service::db::GroupTxn<'_>,
    topics: Topics,
    user: String,
    mut row: crate::db::entities::task::Model,
    named: [Uuid; 3],
) -> Result<crate::reminders::Scheduled, NotCreated> {
    let [series, parent, id] = named;
    // The series and the task it follows must be the requester's: a request naming
    // another user's series would take the id of that user's next occurrence (and
    // so swallow it) and file a stranger's task under their series.
    let (rows, gone) = tasks::existing_and_deleted(txn, &[series, parent, id]).await?;
    let owner_of = |named: Uuid| {
        rows.iter()
            .find(|r| r.id == named)
            .map(|r| r.user_id.as_str())
            .or_else(|| {
                gone.iter()
                    .find(|t| t.task_id == named)
                    .map(|t| t.user_id.as_str())
            })
    };
    let named = [
        (series, "series_id is another user's task"),
        (parent, "parent_task_id is another user's task"),
        (id, "task_id is another user's task"),
    ];
    for (named, why) in named {
        if owner_of(named).is_some_and(|owner| owner != user) {
            return Err(NotCreated::Refused(why));
        }
    }
    // The series keeps its reminder policy: on the defaults (and so the soon-due
    // rule) only when the task it follows was. A parent deleted meanwhile counts
    // as the caller's choice.
    row.default_reminders = rows
        .iter()
        .any(|p| p.id == parent && p.user_id == user && p.default_reminders);
    // Already created by an earlier delivery, or deleted since: done. (Looked up above;
    // the insert below still does nothing when a concurrent one won.)
    if owner_of(id).is_some() {
        return Err(NotCreated::Exists);
    }
    let snapshot = tasks::to_proto(&row);
    if !tasks::insert_if_absent(txn, &row).await? {
        return Err(NotCreated::Exists);
    }
    // Checked after the insert: a delete that committed while it waited on the id
    // is seen here (its tombstone), and the insert is undone.
    if tasks::is_deleted(txn, id).await? {
        tracing::info!(task_id = %id, "occurrence request for a deleted task: nothing created");
        return Err(NotCreated::Exists);
    }
    let change = events::Change {
        kind: TaskEventKind::Created,
        task: &snapshot,
        changed_fields: vec![],
        // Asked for by recurring-task-service, on the completion of the previous one.
        actor: todo_topology::actors::service(todo_topology::app_ids::RECURRING_TASK_SERVICE),
        user_seq: 0,
    };
    outbox::write_change(txn, &topics, change).await?;
    // A deterministic id may have had rows before (created, deleted, requested again).
    Ok(crate::reminders::replan(
        txn,
        &topics,
        id,
        &user,
        Some(&snapshot),
        crate::reminders::Policy::due_set(row.default_reminders),
        "",
    )
    .await?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use todo_proto::todo::v1::Task;

    use super::*;

    /// Regression (hostile events): a request whose `user_id` held NUL passed the checks,
    /// and PostgreSQL refused the insert on every redelivery (RETRY without end, holding the
    /// series' later requests back); it is dropped to the dead-letter topic.
    #[tokio::test]
    async fn a_user_id_with_nul_is_dropped_and_creates_nothing() {
        let db = crate::db::connect("sqlite::memory:", 1)
            .await
            .expect("an in-memory database");
        let occurrences = Occurrences {
            writer: GroupWriter::new(db.clone(), 1, 8),
            topics: Topics::new("t"),
            wakeup: Wakeup::default(),
            nudge: crate::reminders::Nudge::default(),
            stats: Arc::new(IntakeStats::default()),
        };
        let series = Uuid::new_v4().to_string();
        let request = |user: &str| OccurrenceRequested {
            event_id: Uuid::now_v7().to_string(),
            user_id: user.to_owned(),
            task_id: Uuid::new_v4().to_string(),
            series_id: series.clone(),
            parent_task_id: series.clone(),
            occurrence_index: 1,
            template: Some(Task {
                title: "water the plants".into(),
                ..Task::default()
            }),
            ..OccurrenceRequested::default()
        };
        let event = |m: OccurrenceRequested| Event {
            id: m.event_id.clone(),
            event_type: event_types::OCCURRENCE_REQUESTED.to_owned(),
            source: String::new(),
            topic: "t.task-occurrences".to_owned(),
            pubsub_name: PUBSUB.to_owned(),
            traceparent: None,
            raw: Vec::new(),
            message: m,
        };
        let hostile = request("ali\0ce");
        let id = Uuid::parse_str(&hostile.task_id).unwrap();
        assert_eq!(occurrences.handle(event(hostile)).await, Outcome::Drop);
        assert!(tasks::find(&db, "ali\0ce", id).await.unwrap().is_none());
        // The same request from a plain user id creates its task.
        let fine = request("alice");
        let id = Uuid::parse_str(&fine.task_id).unwrap();
        assert_eq!(occurrences.handle(event(fine)).await, Outcome::Success);
        assert!(tasks::find(&db, "alice", id).await.unwrap().is_some());
    }
}
