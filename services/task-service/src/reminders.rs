//! Reminders: planning (pure) and the durable schedule.
//!
//! A task's reminders are offsets before its due time or absolute instants. A task created
//! without reminders uses the defaults (24 h and 1 h before; `DEFAULT_REMINDERS_SECS`)
//! whenever it has a due time — at creation or when one is set later — unless the request
//! asked for none (`no_default_reminders`, remembered in `tasks.default_reminders`).
//! Reminders whose moment has already passed when they are planned are not scheduled.
//!
//! Soon-due rule: when a task uses the default reminders and every default moment is
//! already past but its due time is not (a task due in 30 minutes), one reminder fires
//! now instead. It applies when the due time is set (create, a due-time change, a next
//! occurrence), never to reminders the caller chose, and at most once per due time (its
//! id is derived from the due time, not the moment). Each planned reminder is
//! a row in `reminders`, written in the same transaction as the task change, with a
//! stable id (UUIDv5 of the task id and the moment), so re-planning a task that did not
//! really change keeps its reminders and emits nothing.
//!
//! The scheduler claims due rows (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so several
//! replicas never fire one twice) and, in one transaction, marks each fired and writes
//! `todo.reminder.due.v1` to the outbox. A reminder missed while the service was down
//! fires on start with its lateness, unless it is later than `REMINDER_MAX_LATENESS_SECS`,
//! in which case it is cancelled with that reason.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use prost::Message;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
    sea_query::{Expr, LockBehavior, LockType, SimpleExpr},
};
use todo_proto::todo::{
    events::v1::ReminderEvent,
    v1::{Reminder, Task, TaskStatus, reminder::When},
};
use todo_service::db::InsertLater;
use todo_topology::event_types;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use crate::{
    db::entities::reminder,
    events::{PendingEvent, Topics},
    outbox::{self, Wakeup},
};

/// Namespace of reminder ids (UUIDv5 of task id bytes + moment in microseconds).
const REMINDER_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_3c52_9b7e_4d21_8f40_2c6e_91d3_a7b5);

pub const PENDING: i16 = 0;
pub const FIRED: i16 = 1;
pub const CANCELLED: i16 = 2;

/// The default reminders: 24 h and 1 h before the due time.
pub fn default_reminders() -> Vec<Reminder> {
    [24 * 3600, 3600]
        .into_iter()
        .map(|s| Reminder {
            when: Some(When::BeforeDue(prost_types::Duration {
                seconds: s,
                nanos: 0,
            })),
        })
        .collect()
}

/// How a task's reminders are planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// The reminders are the service's defaults (not the caller's choice).
    pub defaults: bool,
    /// The due time was just set (create, due-time change, next occurrence): the soon-due
    /// rule may add a reminder now.
    pub due_just_set: bool,
}

impl Policy {
    /// Planning for a change that did not set the due time (rename, reopen, ...).
    pub fn keep(defaults: bool) -> Self {
        Self {
            defaults,
            due_just_set: false,
        }
    }

    /// Planning right after the due time was set.
    pub fn due_set(defaults: bool) -> Self {
        Self {
            defaults,
            due_just_set: true,
        }
    }
}

/// The id of the soon-due reminder of a task for one due time.
fn soon_id(task_id: Uuid, due: DateTime<Utc>) -> Uuid {
    let mut name = task_id.as_bytes().to_vec();
    name.extend_from_slice(b"soon");
    name.extend_from_slice(&due.timestamp_micros().to_be_bytes());
    Uuid::new_v5(&REMINDER_NAMESPACE, &name)
}

/// One reminder moment of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub reminder_id: Uuid,
    pub remind_at: i64,
}

/// The reminders to schedule for `task` now (pure): none for a task that is completed or
/// has no due time (absolute ones still count), none in the past, one per distinct moment;
/// plus the soon-due reminder (at `now`) when `policy` allows it and every default moment
/// is past while the due time is not (see the module docs).
pub fn plan(task: &Task, policy: Policy, now: DateTime<Utc>) -> Vec<Planned> {
    if task.status == TaskStatus::Completed as i32 {
        return Vec::new();
    }
    let Ok(task_id) = Uuid::parse_str(&task.id) else {
        return Vec::new();
    };
    let due = task.due_time.as_ref().and_then(todo_proto::from_timestamp);
    let mut out: Vec<Planned> = Vec::new();
    let mut any_moment = false;
    for r in &task.reminders {
        let at = match &r.when {
            Some(When::BeforeDue(d)) => due.and_then(|due| {
                chrono::Duration::new(d.seconds, u32::try_from(d.nanos).unwrap_or(0))
                    .and_then(|d| due.checked_sub_signed(d))
            }),
            Some(When::At(ts)) => todo_proto::from_timestamp(ts),
            None => None,
        };
        let Some(at) = at else { continue };
        any_moment = true;
        if at <= now {
            continue;
        }
        let micros = at.timestamp_micros();
        if out.iter().any(|p| p.remind_at == micros) {
            continue;
        }
        let mut name = task_id.as_bytes().to_vec();
        name.extend_from_slice(&micros.to_be_bytes());
        out.push(Planned {
            reminder_id: Uuid::new_v5(&REMINDER_NAMESPACE, &name),
            remind_at: micros,
        });
    }
    if policy.defaults
        && policy.due_just_set
        && any_moment
        && out.is_empty()
        && let Some(due) = due.filter(|d| *d > now)
    {
        out.push(Planned {
            reminder_id: soon_id(task_id, due),
            remind_at: now.timestamp_micros(),
        });
    }
    out.sort_by_key(|p| p.remind_at);
    out
}

fn event(
    topics: &Topics,
    event_type: &'static str,
    row: &reminder::Model,
    now: DateTime<Utc>,
    reason: &str,
) -> PendingEvent {
    let ts = |us: i64| DateTime::from_timestamp_micros(us).map(todo_proto::to_timestamp);
    let lateness = (event_type == event_types::REMINDER_DUE).then(|| {
        let late = (now.timestamp_micros() - row.remind_at).max(0);
        prost_types::Duration {
            seconds: late / 1_000_000,
            nanos: ((late % 1_000_000) * 1000) as i32,
        }
    });
    let event_id = Uuid::now_v7();
    let msg = ReminderEvent {
        event_id: event_id.to_string(),
        occurred_at: Some(todo_proto::to_timestamp(now)),
        user_id: row.user_id.clone(),
        reminder_id: row.reminder_id.to_string(),
        task_id: row.task_id.to_string(),
        task_title: row.task_title.clone(),
        due_time: row.due_time.and_then(ts),
        remind_at: ts(row.remind_at),
        lateness,
        reason: reason.to_owned(),
        actor: todo_topology::actors::service(todo_topology::app_ids::TASK_SERVICE),
    };
    PendingEvent {
        event_id,
        topic: topics.reminders.clone(),
        event_type,
        key: row.user_id.clone(),
        payload: msg.encode_to_vec(),
        created_at: now.timestamp_micros(),
    }
}

/// Re-plans `task`'s reminders inside the caller's transaction: cancels pending ones that
/// are no longer planned (`reason`), schedules new ones, keeps the rest. `task = None`
/// (deleted) cancels everything pending. Returns when the earliest new reminder is due.
pub async fn replan<C: InsertLater>(
    db: &C,
    topics: &Topics,
    task_id: Uuid,
    user_id: &str,
    task: Option<&Task>,
    policy: Policy,
    reason: &str,
) -> Result<Scheduled, DbErr> {
    let mut pending = reminder::Entity::find()
        .filter(reminder::Column::TaskId.eq(task_id))
        .filter(reminder::Column::State.eq(PENDING));
    if db.get_database_backend() == DbBackend::Postgres {
        // Locked until the change commits: the scheduler (which skips locked rows) cannot
        // fire one of them meanwhile, and one it is firing now is waited for and then read
        // as fired. Unlocked, a reminder fired between this read and the cancel below got
        // both its due event and a cancelled event, though only the first was true.
        pending = pending.lock(LockType::Update);
    }
    let pending = pending.all(db).await?;
    let subject = Subject {
        task_id,
        user_id,
        task,
        policy,
        reason,
    };
    apply_plan(db, topics, subject, Some(pending)).await
}

/// Whether reminders of the task stored as `row` may be pending. Every change of a task's
/// row re-plans its reminders in the same transaction (create, an update of its due time,
/// reminders or title, complete, reopen, delete, a next occurrence), and planning leaves
/// pending only what the row plans: moments from its due time or absolute instants, for a
/// task that is not completed. So a completed task, and one with neither a due time nor
/// reminders of its own, has none pending.
pub fn may_have_pending(row: &crate::db::entities::task::Model) -> bool {
    row.status != TaskStatus::Completed as i16
        && (row.due_time.is_some() || !row.reminders.is_empty())
}

/// [`replan`] for a change of the task that was stored as `before` (the row the change's
/// transaction replaces, checked by its version): when none of its reminders can be
/// pending ([`may_have_pending`]), they are not looked up, which spares a task without a
/// due time one statement per change.
pub async fn replan_from<C: InsertLater>(
    db: &C,
    topics: &Topics,
    before: &crate::db::entities::task::Model,
    task: Option<&Task>,
    policy: Policy,
    reason: &str,
) -> Result<Scheduled, DbErr> {
    if may_have_pending(before) {
        return replan(db, topics, before.id, &before.user_id, task, policy, reason).await;
    }
    let subject = Subject {
        task_id: before.id,
        user_id: &before.user_id,
        task,
        policy,
        reason,
    };
    apply_plan(db, topics, subject, Some(Vec::new())).await
}

/// Schedules the reminders of a task created in this transaction: it has no reminder
/// rows yet, so nothing is looked up or cancelled.
pub async fn schedule_new<C: InsertLater>(
    db: &C,
    topics: &Topics,
    task_id: Uuid,
    user_id: &str,
    task: &Task,
    policy: Policy,
) -> Result<Scheduled, DbErr> {
    let subject = Subject {
        task_id,
        user_id,
        task: Some(task),
        policy,
        reason: "",
    };
    apply_plan(db, topics, subject, None).await
}

/// What [`apply_plan`] plans for: a task (`None` once deleted), how, and why the reminders it
/// cancels are cancelled.
struct Subject<'a> {
    task_id: Uuid,
    user_id: &'a str,
    task: Option<&'a Task>,
    policy: Policy,
    reason: &'a str,
}

/// Sets `values` on those of the reminders `ids` that are still pending (a reminder fired
/// or cancelled meanwhile stays as it is).
async fn update_pending<C: ConnectionTrait>(
    db: &C,
    ids: Vec<Uuid>,
    values: impl IntoIterator<Item = (reminder::Column, SimpleExpr)>,
) -> Result<(), DbErr> {
    if ids.is_empty() {
        return Ok(());
    }
    values
        .into_iter()
        .fold(
            reminder::Entity::update_many(),
            |update, (column, value)| update.col_expr(column, value),
        )
        .filter(reminder::Column::ReminderId.is_in(ids))
        .filter(in_state(PENDING))
        .exec(db)
        .await?;
    Ok(())
}

/// `state = <state>` in a statement that names its reminders by id, written `state + 0` so
/// that it is a value to check and not an index key: with three ids or more, SQLite's
/// planner (no statistics) took `ix_reminders_state_at` for `state = ?` over the primary key
/// and walked every pending (or cancelled) reminder of every user, once per fired batch and
/// per task change that cancels or renames reminders.
fn in_state(state: i16) -> SimpleExpr {
    use sea_orm::sea_query::ExprTrait;
    Expr::col((reminder::Entity, reminder::Column::State))
        .add(0)
        .eq(state)
}

/// Moves those of the reminders `ids` that are still pending to `state`.
async fn set_pending_state<C: ConnectionTrait>(
    db: &C,
    ids: Vec<Uuid>,
    state: i16,
) -> Result<(), DbErr> {
    update_pending(db, ids, [(reminder::Column::State, Expr::value(state))]).await
}

/// The earliest moment (µs since the epoch) of the reminders a change scheduled, when it
/// scheduled any: what the [`Scheduler`] is nudged with once the change commits.
pub type Scheduled = Option<i64>;

/// `existing`: the task's pending reminders, or `None` for a task that has no rows at all.
async fn apply_plan<C: InsertLater>(
    db: &C,
    topics: &Topics,
    subject: Subject<'_>,
    existing: Option<Vec<reminder::Model>>,
) -> Result<Scheduled, DbErr> {
    let Subject {
        task_id,
        user_id,
        task,
        policy,
        reason,
    } = subject;
    let now = Utc::now();
    let is_new = existing.is_none();
    let pending = existing.unwrap_or_default();
    let planned = task.map(|t| plan(t, policy, now)).unwrap_or_default();
    let title = task.map(|t| t.title.clone()).unwrap_or_default();
    let due = task
        .and_then(|t| t.due_time.as_ref())
        .and_then(todo_proto::from_timestamp)
        .map(|d| d.timestamp_micros());
    // A soon-due reminder still pending for the current due time stays (a rename right
    // after the create must not cancel it); completion or deletion plans nothing: cancelled.
    let soon = task
        .filter(|t| t.status != TaskStatus::Completed as i32)
        .and(due)
        .and_then(DateTime::from_timestamp_micros)
        .map(|d| soon_id(task_id, d));
    let mut events = Vec::new();
    let mut cancel = Vec::new();
    for row in &pending {
        if !planned.iter().any(|p| p.reminder_id == row.reminder_id)
            && Some(row.reminder_id) != soon
        {
            cancel.push(row.reminder_id);
            events.push(event(
                topics,
                event_types::REMINDER_CANCELLED,
                row,
                now,
                reason,
            ));
        }
    }
    // Kept reminders carry the task's title and due time into their events: keep them
    // current (a renamed task is reminded of by its new name).
    let stale: Vec<Uuid> = pending
        .iter()
        .filter(|r| !cancel.contains(&r.reminder_id))
        .filter(|r| r.task_title != title || r.due_time != due)
        .map(|r| r.reminder_id)
        .collect();
    set_pending_state(db, cancel, CANCELLED).await?;
    if task.is_some() {
        let values = [
            (reminder::Column::TaskTitle, Expr::value(title.clone())),
            (reminder::Column::DueTime, Expr::value(due)),
        ];
        update_pending(db, stale, values).await?;
    }
    // A reminder cancelled earlier (e.g. before a reopen) may be planned again.
    let ids: Vec<Uuid> = planned.iter().map(|p| p.reminder_id).collect();
    if !is_new && !ids.is_empty() {
        reminder::Entity::delete_many()
            .filter(reminder::Column::ReminderId.is_in(ids))
            .filter(in_state(CANCELLED))
            .exec(db)
            .await?;
    }
    let mut scheduled: Scheduled = None;
    for p in planned {
        if pending.iter().any(|r| r.reminder_id == p.reminder_id) {
            continue;
        }
        let row = reminder::Model {
            reminder_id: p.reminder_id,
            task_id,
            user_id: user_id.to_owned(),
            task_title: title.clone(),
            due_time: due,
            remind_at: p.remind_at,
            state: PENDING,
        };
        // A reminder fired or cancelled before (same moment) stays as it was.
        let inserted = reminder::Entity::insert(reminder::ActiveModel {
            reminder_id: Set(row.reminder_id),
            task_id: Set(row.task_id),
            user_id: Set(row.user_id.clone()),
            task_title: Set(row.task_title.clone()),
            due_time: Set(row.due_time),
            remind_at: Set(row.remind_at),
            state: Set(PENDING),
        })
        .on_conflict(
            sea_orm::sea_query::OnConflict::column(reminder::Column::ReminderId)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
        if inserted > 0 {
            scheduled = Some(scheduled.map_or(p.remind_at, |s| s.min(p.remind_at)));
            events.push(event(
                topics,
                event_types::REMINDER_SCHEDULED,
                &row,
                now,
                "",
            ));
        }
    }
    outbox::write(db, events).await?;
    Ok(scheduled)
}

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Longest sleep when nothing is pending soon.
    pub max_sleep: Duration,
    /// Reminders later than this when the scheduler gets to them are cancelled, not fired.
    pub max_lateness: Duration,
    pub batch_size: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_sleep: Duration::from_secs(30),
            max_lateness: Duration::from_secs(6 * 3600),
            batch_size: 200,
        }
    }
}

/// Tells the scheduler when a newly planned reminder is due: it wakes then if that is
/// before its next look at the database, and stays asleep otherwise (a reminder a day
/// ahead costs the scheduler no query per task created).
#[derive(Debug, Clone)]
pub struct Nudge(Arc<NudgeState>);

#[derive(Debug)]
struct NudgeState {
    notify: Notify,
    /// The earliest moment nudged since the scheduler last looked (µs; `i64::MAX`: none).
    earliest: AtomicI64,
}

impl Default for Nudge {
    fn default() -> Self {
        Self(Arc::new(NudgeState {
            notify: Notify::new(),
            earliest: AtomicI64::new(i64::MAX),
        }))
    }
}

/// What follows a commit of a task change: the relay publishes its events, the scheduler
/// looks at its new plan. For [`todo_service::db::GroupWriter::write_then`], which runs it
/// after the commit also when the caller cancelled meanwhile (the events then do not wait
/// for the relay's poll).
pub fn after_commit(
    wakeup: &crate::outbox::Wakeup,
    nudge: &Nudge,
) -> impl FnOnce(&Scheduled) + Send + 'static {
    let (wakeup, nudge) = (wakeup.clone(), nudge.clone());
    move |scheduled| {
        wakeup.wake();
        nudge.nudge(*scheduled);
    }
}

impl Nudge {
    /// A reminder due at `scheduled` (µs since the epoch) was committed; `None` does nothing.
    pub fn nudge(&self, scheduled: Scheduled) {
        if let Some(at) = scheduled {
            self.0.earliest.fetch_min(at, Ordering::SeqCst);
            self.0.notify.notify_one();
        }
    }

    /// The earliest moment nudged since the last call, if any.
    fn take(&self) -> Option<i64> {
        let at = self.0.earliest.swap(i64::MAX, Ordering::SeqCst);
        (at != i64::MAX).then_some(at)
    }

    /// The scheduler's sleep: `sleep`, or until a reminder nudged meanwhile is due if that
    /// comes first (one nudged before the sleep began counts too), or until `stop` changes.
    async fn sleep(&self, sleep: Duration, stop: &mut watch::Receiver<bool>) {
        let mut deadline = tokio::time::Instant::now() + sleep;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return,
                _ = stop.changed() => return,
                () = self.0.notify.notified() => {
                    let Some(at) = self.take() else { continue };
                    let until = u64::try_from(at - Utc::now().timestamp_micros()).unwrap_or(0);
                    let due = tokio::time::Instant::now() + Duration::from_micros(until);
                    deadline = deadline.min(due);
                }
            }
        }
    }
}

pub struct Scheduler {
    pub db: DatabaseConnection,
    pub topics: Topics,
    pub config: SchedulerConfig,
    pub nudge: Nudge,
    pub relay: Wakeup,
}

/// The scheduler's pauses after consecutive database errors: 50 ms, doubling to 2 s (a busy
/// database is usually free again at once; a database that is down is not hammered).
pub fn error_backoff() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::new()
        .with_min_delay(ERROR_PAUSE_MIN)
        .with_max_delay(ERROR_PAUSE_MAX)
        .with_factor(2.0)
        .without_max_times()
        .build()
}

const ERROR_PAUSE_MIN: Duration = Duration::from_millis(50);
const ERROR_PAUSE_MAX: Duration = Duration::from_secs(2);

impl Scheduler {
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut errors = error_backoff();
        loop {
            if *stop.borrow() {
                return;
            }
            let sleep = match self.fire_due().await {
                Ok(n) if n as u64 >= self.config.batch_size => {
                    errors = error_backoff();
                    continue;
                }
                Ok(_) => {
                    errors = error_backoff();
                    self.until_next().await.unwrap_or(self.config.max_sleep)
                }
                Err(e) => {
                    let pause = errors.next().unwrap_or(ERROR_PAUSE_MAX);
                    tracing::warn!(error = %e, retry_in = ?pause, "reminder scheduler: database error; retrying");
                    pause
                }
            };
            self.nudge.sleep(sleep, &mut stop).await;
        }
    }

    /// Time until the next pending reminder (capped by `max_sleep`).
    async fn until_next(&self) -> Result<Duration, DbErr> {
        let next = reminder::Entity::find()
            .filter(reminder::Column::State.eq(PENDING))
            .order_by_asc(reminder::Column::RemindAt)
            .one(&self.db)
            .await?;
        let now = Utc::now().timestamp_micros();
        Ok(match next {
            None => self.config.max_sleep,
            Some(r) => Duration::from_micros(u64::try_from(r.remind_at - now).unwrap_or(0))
                .min(self.config.max_sleep),
        })
    }

    /// Fires (or, when too late, cancels) the reminders that are due; returns how many.
    pub async fn fire_due(&self) -> Result<usize, DbErr> {
        let now = Utc::now();
        let txn = self.db.begin().await?;
        let mut q = reminder::Entity::find()
            .filter(reminder::Column::State.eq(PENDING))
            .filter(reminder::Column::RemindAt.lte(now.timestamp_micros()))
            .order_by_asc(reminder::Column::RemindAt)
            .limit(self.config.batch_size);
        if self.db.get_database_backend() == DbBackend::Postgres {
            q = q.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        let due = q.all(&txn).await?;
        if due.is_empty() {
            txn.rollback().await?;
            return Ok(0);
        }
        let max_late = i64::try_from(self.config.max_lateness.as_micros()).unwrap_or(i64::MAX);
        let mut events = Vec::with_capacity(due.len());
        let (mut fired, mut cancelled) = (Vec::new(), Vec::new());
        for r in &due {
            let late = now.timestamp_micros() - r.remind_at;
            if late > max_late {
                cancelled.push(r.reminder_id);
                let why = format!(
                    "missed by {}s (more than REMINDER_MAX_LATENESS_SECS)",
                    late / 1_000_000
                );
                events.push(event(
                    &self.topics,
                    event_types::REMINDER_CANCELLED,
                    r,
                    now,
                    &why,
                ));
            } else {
                fired.push(r.reminder_id);
                events.push(event(&self.topics, event_types::REMINDER_DUE, r, now, ""));
            }
        }
        set_pending_state(&txn, fired, FIRED).await?;
        set_pending_state(&txn, cancelled, CANCELLED).await?;
        outbox::write(&txn, events).await?;
        txn.commit().await?;
        self.relay.wake();
        Ok(due.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statements that name reminders by id, and a task's pending reminders, are
    /// planned on the keys they name (the query plan of SQLite itself, on the migrated schema).
    #[tokio::test]
    async fn reminder_statements_use_the_key_they_name() {
        use sea_orm::{QueryTrait, Statement};
        let db = crate::db::connect("sqlite::memory:", 1)
            .await
            .expect("an in-memory database");
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        let by_id = [
            reminder::Entity::update_many()
                .col_expr(reminder::Column::State, Expr::value(FIRED))
                .filter(reminder::Column::ReminderId.is_in(ids.clone()))
                .filter(in_state(PENDING))
                .build(DbBackend::Sqlite),
            reminder::Entity::delete_many()
                .filter(reminder::Column::ReminderId.is_in(ids))
                .filter(in_state(CANCELLED))
                .build(DbBackend::Sqlite),
        ];
        let by_task = reminder::Entity::find()
            .filter(reminder::Column::TaskId.eq(Uuid::now_v7()))
            .filter(reminder::Column::State.eq(PENDING))
            .build(DbBackend::Sqlite);
        let plan = |s: Statement| {
            let db = &db;
            async move { todo_service::db::sqlite_plan(db, s).await.expect("a plan") }
        };
        for s in by_id {
            let sql = s.sql.clone();
            let p = plan(s).await;
            assert!(
                p.contains("sqlite_autoindex_reminders_1") && !p.contains("ix_reminders_state_at"),
                "{sql}: planned {p}"
            );
        }
        let p = plan(by_task).await;
        assert!(
            p.contains("ix_reminders_task_state"),
            "by task: planned {p}"
        );
    }

    #[tokio::test]
    async fn a_nudge_wakes_the_scheduler_only_when_its_reminder_is_due_first() {
        let (_stop, mut stop_rx) = watch::channel(false);
        let nudge = Nudge::default();
        let in_micros = |d: Duration| Utc::now().timestamp_micros() + d.as_micros() as i64;

        // Nudged (before the sleep began) with a reminder due in an hour: the 30 s sleep
        // goes on.
        nudge.nudge(Some(in_micros(Duration::from_secs(3600))));
        let slept = tokio::time::timeout(
            Duration::from_millis(300),
            nudge.sleep(Duration::from_secs(30), &mut stop_rx),
        )
        .await;
        assert!(slept.is_err(), "woke for a reminder due in an hour");

        // Nudged during the sleep with one due in 50 ms, then with a later one: it wakes
        // for the first, long before its 30 s.
        let waker = nudge.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            waker.nudge(Some(in_micros(Duration::from_millis(50))));
            waker.nudge(Some(in_micros(Duration::from_secs(600))));
            waker.nudge(None);
        });
        tokio::time::timeout(
            Duration::from_secs(20),
            nudge.sleep(Duration::from_secs(30), &mut stop_rx),
        )
        .await
        .expect("a reminder due in 50 ms did not wake the scheduler");

        // A reminder already due wakes it at once.
        nudge.nudge(Some(in_micros(Duration::ZERO) - 1_000_000));
        tokio::time::timeout(
            Duration::from_secs(20),
            nudge.sleep(Duration::from_secs(30), &mut stop_rx),
        )
        .await
        .expect("an overdue reminder did not wake the scheduler");
    }

    fn task(due: Option<i64>, reminders: Vec<Reminder>) -> Task {
        Task {
            id: Uuid::now_v7().to_string(),
            due_time: due.map(|s| prost_types::Timestamp {
                seconds: s,
                nanos: 0,
            }),
            reminders,
            status: TaskStatus::Open as i32,
            ..Task::default()
        }
    }

    fn before(s: i64) -> Reminder {
        Reminder {
            when: Some(When::BeforeDue(prost_types::Duration {
                seconds: s,
                nanos: 0,
            })),
        }
    }

    fn at(s: i64) -> Reminder {
        Reminder {
            when: Some(When::At(prost_types::Timestamp {
                seconds: s,
                nanos: 0,
            })),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_000_000, 0).unwrap()
    }

    #[test]
    fn relative_and_absolute_moments_in_order() {
        let t = task(
            Some(1_100_000),
            vec![before(3600), at(1_050_000), before(86_400)],
        );
        let p: Vec<i64> = plan(&t, Policy::default(), now())
            .iter()
            .map(|p| p.remind_at / 1_000_000)
            .collect();
        assert_eq!(p, [1_013_600, 1_050_000, 1_096_400]);
    }

    #[test]
    fn past_moments_and_duplicates_are_not_scheduled() {
        let t = task(
            Some(1_003_000),
            vec![before(86_400), before(3600), before(1000), at(1_002_000)],
        );
        let p = plan(&t, Policy::default(), now());
        assert_eq!(p.len(), 1, "{p:?}");
    }

    #[test]
    fn completed_or_undated_tasks_have_no_relative_reminders() {
        let mut t = task(Some(1_100_000), vec![before(60)]);
        t.status = TaskStatus::Completed as i32;
        assert!(plan(&t, Policy::default(), now()).is_empty());
        assert!(plan(&task(None, vec![before(60)]), Policy::default(), now()).is_empty());
        assert_eq!(
            plan(&task(None, vec![at(1_000_100)]), Policy::default(), now()).len(),
            1
        );
    }

    #[test]
    fn ids_are_stable_per_task_and_moment() {
        let t = task(Some(1_100_000), vec![before(60)]);
        assert_eq!(
            plan(&t, Policy::default(), now()),
            plan(&t, Policy::default(), now())
        );
        let mut moved = t.clone();
        moved.due_time = Some(prost_types::Timestamp {
            seconds: 1_200_000,
            nanos: 0,
        });
        assert_ne!(
            plan(&t, Policy::default(), now())[0].reminder_id,
            plan(&moved, Policy::default(), now())[0].reminder_id
        );
    }

    #[test]
    fn defaults_are_a_day_and_an_hour_before() {
        let t = task(Some(1_200_000), default_reminders());
        let p: Vec<i64> = plan(&t, Policy::default(), now())
            .iter()
            .map(|p| p.remind_at / 1_000_000)
            .collect();
        assert_eq!(p, [1_113_600, 1_196_400]);
    }

    #[test]
    fn soon_due_rule_table() {
        let defaults = Policy::due_set(true);
        // (due in s, reminders, policy, expected moments in s after now)
        type Case = (&'static str, i64, Vec<Reminder>, Policy, Vec<i64>);
        let cases: Vec<Case> = vec![
            (
                "due in 30 min, defaults",
                1800,
                default_reminders(),
                defaults,
                vec![0],
            ),
            (
                "due in 2 h: the 1 h default is ahead",
                7200,
                default_reminders(),
                defaults,
                vec![3600],
            ),
            (
                "due in 23 h: the 1 h default is ahead",
                23 * 3600,
                default_reminders(),
                defaults,
                vec![22 * 3600],
            ),
            (
                "already due: nothing",
                -10,
                default_reminders(),
                defaults,
                vec![],
            ),
            (
                "explicit reminders are never topped up",
                1800,
                vec![before(3600)],
                Policy::due_set(false),
                vec![],
            ),
            (
                "no reminders at all (opted out)",
                1800,
                vec![],
                defaults,
                vec![],
            ),
            (
                "due time not just set (rename)",
                1800,
                default_reminders(),
                Policy::keep(true),
                vec![],
            ),
        ];
        for (name, due_in, reminders, policy, want) in cases {
            let t = task(Some(1_000_000 + due_in), reminders);
            let got: Vec<i64> = plan(&t, policy, now())
                .iter()
                .map(|p| p.remind_at / 1_000_000 - 1_000_000)
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn the_soon_reminder_has_one_id_per_due_time() {
        let t = task(Some(1_001_800), default_reminders());
        let a = plan(&t, Policy::due_set(true), now());
        let later = now() + chrono::Duration::seconds(60);
        let b = plan(&t, Policy::due_set(true), later);
        assert_eq!(
            a[0].reminder_id, b[0].reminder_id,
            "planned again: same reminder"
        );
        let mut moved = t.clone();
        moved.due_time = Some(prost_types::Timestamp {
            seconds: 1_001_500,
            nanos: 0,
        });
        assert_ne!(
            plan(&moved, Policy::due_set(true), now())[0].reminder_id,
            a[0].reminder_id,
            "a new due time gets its own"
        );
    }

    #[test]
    fn error_pauses_double_from_50_ms_to_2_s() {
        let got: Vec<u128> = error_backoff().take(8).map(|d| d.as_millis()).collect();
        assert_eq!(got, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
    }
}
