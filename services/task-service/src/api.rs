//! The `todo.v1.TaskService` gRPC handlers: decode, authorise, validate, persist, map.

use chrono::Utc;
use sea_orm::{DatabaseConnection, DbErr, SqlErr};
use todo_proto::todo::events::v1::TaskEventKind;
use todo_proto::todo::v1::{
    CompleteTaskRequest, CreateTaskRequest, DeleteTaskRequest, GetTaskRequest, ListTasksRequest,
    ListTasksResponse, Priority, ReopenTaskRequest, Task, TaskStatus, UpdateTaskRequest,
    task_service_server::TaskService,
};
use todo_service::db::GroupWriter;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    auth::into_caller,
    db::entities::task,
    error::TaskError,
    events::{self, Topics},
    outbox::{self, Wakeup},
    reminders::{self, Nudge},
    tasks::{
        self, Filters,
        paging::{Order, PageToken},
        validate::{self, FieldViolation},
    },
};

pub const DEFAULT_PAGE_SIZE: i32 = 50;
pub const MAX_PAGE_SIZE: i32 = 1000;

/// The Task API over one database. Every change commits with its events (outbox).
#[derive(Debug, Clone)]
pub struct TaskApi {
    /// Reads.
    pub db: DatabaseConnection,
    /// Write transactions, grouped: concurrent writes share a commit (see
    /// [`todo_service::db::GroupWriter`]).
    pub writer: GroupWriter,
    pub topics: Topics,
    /// Wakes the outbox relay after a commit.
    pub wakeup: Wakeup,
    /// Wakes the reminder scheduler when a commit planned a reminder.
    pub nudge: Nudge,
    /// The reminders a task with a due time and none of its own gets.
    pub default_reminders: Vec<todo_proto::todo::v1::Reminder>,
}

impl TaskApi {
    /// What follows a commit (see [`reminders::after_commit`]).
    fn after_commit(&self) -> impl FnOnce(&reminders::Scheduled) + Send + 'static {
        reminders::after_commit(&self.wakeup, &self.nudge)
    }

    /// Writes the events of a change the caller made to their task (inside its transaction).
    async fn record<C: todo_service::db::InsertLater>(
        txn: &C,
        topics: &Topics,
        kind: TaskEventKind,
        task: &Task,
        changed_fields: Vec<String>,
    ) -> Result<(), DbErr> {
        let change = events::Change {
            kind,
            task,
            changed_fields,
            // Every API change is made by the task's owner: the caller.
            actor: todo_topology::actors::user(&task.user_id),
            user_seq: 0,
        };
        outbox::write_change(txn, topics, change).await
    }

    async fn load(&self, user: &str, id: Uuid) -> Result<task::Model, TaskError> {
        tasks::find(&self.db, user, id)
            .await?
            .ok_or_else(|| TaskError::NotFound(id.to_string()))
    }

    /// CompleteTask and ReopenTask: the caller's task moved to `R::TO`.
    async fn transition<R: StatusChange>(
        &self,
        request: Request<R>,
    ) -> Result<Response<Task>, Status> {
        let (user, req) = into_caller(request)?;
        let (id, etag) = req.target();
        Ok(Response::new(
            self.set_status(&user, id, etag, R::TO).await?,
        ))
    }

    /// Changes a task's status (complete or reopen), idempotently.
    async fn set_status(
        &self,
        user: &str,
        id: &str,
        etag: &str,
        to: TaskStatus,
    ) -> Result<Task, TaskError> {
        let id = validate::task_id(id, "id")?;
        let row = self.load(user, id).await?;
        check_etag(&row, etag)?;
        if row.status == to as i16 {
            // Already there: nothing changes, nothing is emitted.
            return Ok(tasks::to_proto(&row));
        }
        let now = tasks::micros(Utc::now());
        let mut next = row.clone();
        next.status = to as i16;
        next.complete_time = (to == TaskStatus::Completed).then_some(now);
        next.update_time = now;
        next.version = row.version + 1;
        let snapshot = tasks::to_proto(&next);
        let kind = if to == TaskStatus::Completed {
            TaskEventKind::Completed
        } else {
            TaskEventKind::Reopened
        };
        let why = if to == TaskStatus::Completed {
            "task completed"
        } else {
            ""
        };
        let policy = reminders::Policy::keep(row.default_reminders);
        let (topics, task) = (self.topics.clone(), snapshot.clone());
        let expected = row.version;
        self.writer
            .write_then(
                user,
                move |txn| {
                    let (row, next, topics, task) =
                        (row.clone(), next.clone(), topics.clone(), task.clone());
                    Box::pin(async move {
                        if !tasks::update_if(txn, &next, expected, false).await? {
                            return Err(TaskError::Conflict);
                        }
                        Self::record(txn, &topics, kind, &task, vec![]).await?;
                        let scheduled =
                            reminders::replan_from(txn, &topics, &row, Some(&task), policy, why)
                                .await?;
                        Ok(scheduled)
                    })
                },
                self.after_commit(),
            )
            .await?;
        Ok(snapshot)
    }
}

fn check_etag(row: &task::Model, given: &str) -> Result<(), TaskError> {
    let current = tasks::etag(row.version);
    if !given.is_empty() && given != current {
        return Err(TaskError::StaleEtag {
            given: given.to_owned(),
            current,
        });
    }
    Ok(())
}

/// The updatable paths whose values differ between two snapshots.
fn changed_paths(a: &Task, b: &Task) -> Vec<String> {
    let mut out = Vec::new();
    let mut diff = |name: &str, changed: bool| {
        if changed {
            out.push(name.to_owned());
        }
    };
    diff("title", a.title != b.title);
    diff("description", a.description != b.description);
    diff("priority", a.priority != b.priority);
    diff("tags", a.tags != b.tags);
    diff("due_time", a.due_time != b.due_time);
    diff("time_zone", a.time_zone != b.time_zone);
    diff("recurrence", a.recurrence != b.recurrence);
    diff("reminders", a.reminders != b.reminders);
    out
}

/// CompleteTask and ReopenTask: the same call, each moving the task to its own status.
trait StatusChange {
    /// The status the call moves the task to.
    const TO: TaskStatus;
    /// The task's `id` and the `etag` the caller read it at.
    fn target(&self) -> (&str, &str);
}

impl StatusChange for CompleteTaskRequest {
    const TO: TaskStatus = TaskStatus::Completed;
    fn target(&self) -> (&str, &str) {
        (&self.id, &self.etag)
    }
}

impl StatusChange for ReopenTaskRequest {
    const TO: TaskStatus = TaskStatus::Open;
    fn target(&self) -> (&str, &str) {
        (&self.id, &self.etag)
    }
}

/// A list filter on the enum `E`: 0 (unspecified) filters nothing; a value `E` does not
/// know is a violation of `field`.
fn enum_filter<E: TryFrom<i32>>(
    value: i32,
    field: &str,
    violations: &mut Vec<FieldViolation>,
) -> Option<i16> {
    if value == 0 {
        return None;
    }
    if E::try_from(value).is_err() {
        violations.push(FieldViolation::new(
            field,
            format!("unknown {field} {value}"),
        ));
        return None;
    }
    i16::try_from(value).ok()
}

fn invalid(field: &str, description: impl Into<String>) -> TaskError {
    TaskError::Invalid(vec![FieldViolation::new(field, description)])
}

fn is_unique_violation(e: &DbErr) -> bool {
    matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

#[tonic::async_trait]
impl TaskService for TaskApi {
    async fn create_task(
        &self,
        request: Request<CreateTaskRequest>,
    ) -> Result<Response<Task>, Status> {
        let (user, req) = into_caller(request)?;
        let Some(task) = req.task.as_ref() else {
            return Err(invalid("task", "required").into());
        };
        let mut violations = Vec::new();
        if !req.request_id.is_empty() && Uuid::parse_str(&req.request_id).is_err() {
            violations.push(FieldViolation::new("request_id", "must be a UUID"));
        }
        let mut fields = match validate::task_fields(task, "task.") {
            Ok(f) => f,
            Err(v) => {
                violations.extend(v);
                return Err(TaskError::Invalid(violations).into());
            }
        };
        if !violations.is_empty() {
            return Err(TaskError::Invalid(violations).into());
        }
        // Without reminders of its own the task uses the defaults whenever it has a due time
        // (now or later), unless the caller asked for none.
        let uses_defaults = fields.reminders.is_empty() && !req.no_default_reminders;
        if uses_defaults && fields.due_time.is_some() {
            fields.reminders = self.default_reminders.clone();
        }
        // A retry of a create that committed (same request id) fails on the unique index of
        // (user, request id) and is answered with that task, below: no read before each write.
        let request_id = (!req.request_id.is_empty()).then(|| req.request_id.to_lowercase());
        let mut row = tasks::new_row(&user, Uuid::now_v7(), &fields, Utc::now());
        row.request_id = request_id.clone();
        row.default_reminders = uses_defaults;
        let snapshot = tasks::to_proto(&row);
        let (topics, owner, task) = (self.topics.clone(), user.clone(), snapshot.clone());
        let result: Result<reminders::Scheduled, DbErr> = self
            .writer
            .write_then(
                &user,
                move |txn| {
                    let (row, topics, owner, task) =
                        (row.clone(), topics.clone(), owner.clone(), task.clone());
                    Box::pin(async move {
                        tasks::insert(txn, &row).await?;
                        Self::record(txn, &topics, TaskEventKind::Created, &task, vec![]).await?;
                        reminders::schedule_new(
                            txn,
                            &topics,
                            row.id,
                            &owner,
                            &task,
                            reminders::Policy::due_set(uses_defaults),
                        )
                        .await
                    })
                },
                self.after_commit(),
            )
            .await;
        match result {
            Ok(_) => Ok(Response::new(snapshot)),
            // A retry, or a concurrent one that won the race: answer with its task.
            Err(e) if request_id.is_some() && is_unique_violation(&e) => {
                let rid = request_id.as_deref().unwrap_or_default();
                let existing = tasks::find_by_request(&self.db, &user, rid)
                    .await
                    .map_err(TaskError::from)?
                    .ok_or(TaskError::Conflict)?;
                Ok(Response::new(tasks::to_proto(&existing)))
            }
            Err(e) => Err(TaskError::from(e).into()),
        }
    }

    async fn get_task(&self, request: Request<GetTaskRequest>) -> Result<Response<Task>, Status> {
        let (user, req) = into_caller(request)?;
        let id = validate::task_id(&req.id, "id").map_err(TaskError::from)?;
        let row = self.load(&user, id).await?;
        Ok(Response::new(tasks::to_proto(&row)))
    }

    async fn list_tasks(
        &self,
        request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let (user, req) = into_caller(request)?;
        let mut v = Vec::new();
        let page_size = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if (1..=MAX_PAGE_SIZE).contains(&n) => n,
            n => {
                v.push(FieldViolation::new(
                    "page_size",
                    format!("must be between 1 and {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE}), got {n}"),
                ));
                DEFAULT_PAGE_SIZE
            }
        };
        let order = Order::parse(&req.order_by).unwrap_or_else(|e| {
            v.push(FieldViolation::new("order_by", e));
            Order::parse("").unwrap_or(Order {
                key: tasks::paging::OrderKey::CreateTime,
                desc: false,
            })
        });
        let mut filters = Filters {
            status: enum_filter::<TaskStatus>(req.status, "status", &mut v),
            priority: enum_filter::<Priority>(req.priority, "priority", &mut v),
            tag: (!req.tag.is_empty()).then(|| req.tag.trim().to_owned()),
            ..Filters::default()
        };
        for (field, ts, slot) in [
            ("due_after", &req.due_after, &mut filters.due_after),
            ("due_before", &req.due_before, &mut filters.due_before),
        ] {
            if let Some(ts) = ts {
                match todo_proto::from_timestamp(ts) {
                    Some(t) => *slot = Some(tasks::micros(t)),
                    None => v.push(FieldViolation::new(field, "not a valid timestamp")),
                }
            }
        }
        if req.tag.contains('\0') {
            v.push(FieldViolation::new("tag", validate::NO_NUL));
        }
        let token = if req.page_token.is_empty() {
            None
        } else {
            match PageToken::decode(&req.page_token) {
                Some(t) if t.q == filters.fingerprint(&order) => Some(t),
                Some(_) => {
                    v.push(FieldViolation::new(
                        "page_token",
                        "belongs to a query with other filters or order",
                    ));
                    None
                }
                None => {
                    v.push(FieldViolation::new("page_token", "malformed page token"));
                    None
                }
            }
        };
        if !v.is_empty() {
            return Err(TaskError::Invalid(v).into());
        }
        // Read before the tasks: a change that commits in between is in the list and comes
        // again on the watch, never in neither.
        let seq = outbox::last_user_seq(&self.db, &user)
            .await
            .map_err(TaskError::from)?;
        let watch_cursor = todo_proto::watch_cursor::WatchCursor::new(seq, Utc::now()).encode();
        let (rows, next) = tasks::list(
            &self.db,
            &user,
            &filters,
            order,
            u64::try_from(page_size).unwrap_or(50),
            token.as_ref(),
        )
        .await
        .map_err(TaskError::from)?;
        Ok(Response::new(ListTasksResponse {
            tasks: rows.iter().map(tasks::to_proto).collect(),
            next_page_token: next.map(|t| t.encode()).unwrap_or_default(),
            watch_cursor,
        }))
    }

    async fn update_task(
        &self,
        request: Request<UpdateTaskRequest>,
    ) -> Result<Response<Task>, Status> {
        let (user, req) = into_caller(request)?;
        let Some(patch) = req.task else {
            return Err(invalid("task", "required").into());
        };
        let id = validate::task_id(&patch.id, "task.id").map_err(TaskError::from)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        validate::update_mask(&paths).map_err(TaskError::from)?;
        let row = self.load(&user, id).await?;
        check_etag(&row, &patch.etag)?;

        let mut merged = tasks::to_proto(&row);
        for p in &paths {
            match p.as_str() {
                "title" => merged.title = patch.title.clone(),
                "description" => merged.description = patch.description.clone(),
                "priority" => merged.priority = patch.priority,
                "tags" => merged.tags = patch.tags.clone(),
                "due_time" => merged.due_time = patch.due_time,
                "time_zone" => merged.time_zone = patch.time_zone.clone(),
                "recurrence" => merged.recurrence = patch.recurrence.clone(),
                "reminders" => merged.reminders = patch.reminders.clone(),
                _ => {}
            }
        }
        // Reminders set by the caller are theirs from now on; a task on the defaults gets
        // them whenever it has a due time (a due time added later included).
        let uses_defaults = row.default_reminders && !paths.iter().any(|p| p == "reminders");
        if uses_defaults {
            merged.reminders = if merged.due_time.is_some() {
                self.default_reminders.clone()
            } else {
                Vec::new()
            };
        }
        let fields = validate::task_fields(&merged, "task.").map_err(TaskError::from)?;
        let mut next = row.clone();
        tasks::apply_fields(&mut next, &fields);
        next.default_reminders = uses_defaults;
        if next == row {
            // Nothing changed: no write, no new etag.
            return Ok(Response::new(tasks::to_proto(&row)));
        }
        if next.recurrence.is_some() && next.series_id.is_none() {
            next.series_id = Some(next.id);
        }
        // A due time, rule or time zone set by the caller (or a task made recurring)
        // restarts the rhythm at this task's due time.
        if next.recurrence.is_none() {
            next.series_start = None;
        } else if next.due_time != row.due_time
            || next.recurrence != row.recurrence
            || next.time_zone != row.time_zone
        {
            next.series_start = next.due_time;
        }
        next.update_time = tasks::micros(Utc::now());
        next.version = row.version + 1;
        let tags_changed = next.tags != row.tags;
        let before = tasks::to_proto(&row);
        let snapshot = tasks::to_proto(&next);
        let changed = changed_paths(&before, &snapshot);
        let replan = changed
            .iter()
            .any(|c| c == "due_time" || c == "reminders" || c == "title");
        let policy = if changed.iter().any(|c| c == "due_time") {
            reminders::Policy::due_set(uses_defaults)
        } else {
            reminders::Policy::keep(uses_defaults)
        };
        let (topics, task) = (self.topics.clone(), snapshot.clone());
        let expected = row.version;
        self.writer
            .write_then(
                &user,
                move |txn| {
                    let (row, next, topics, task, changed) = (
                        row.clone(),
                        next.clone(),
                        topics.clone(),
                        task.clone(),
                        changed.clone(),
                    );
                    Box::pin(async move {
                        if !tasks::update_if(txn, &next, expected, tags_changed).await? {
                            return Err(TaskError::Conflict);
                        }
                        Self::record(txn, &topics, TaskEventKind::Updated, &task, changed).await?;
                        if !replan {
                            return Ok(None);
                        }
                        let scheduled = reminders::replan_from(
                            txn,
                            &topics,
                            &row,
                            Some(&task),
                            policy,
                            "rescheduled",
                        )
                        .await?;
                        Ok(scheduled)
                    })
                },
                self.after_commit(),
            )
            .await?;
        Ok(Response::new(snapshot))
    }

    async fn complete_task(
        &self,
        request: Request<CompleteTaskRequest>,
    ) -> Result<Response<Task>, Status> {
        self.transition(request).await
    }

    async fn reopen_task(
        &self,
        request: Request<ReopenTaskRequest>,
    ) -> Result<Response<Task>, Status> {
        self.transition(request).await
    }

    async fn delete_task(
        &self,
        request: Request<DeleteTaskRequest>,
    ) -> Result<Response<()>, Status> {
        let (user, req) = into_caller(request)?;
        let id = validate::task_id(&req.id, "id").map_err(TaskError::from)?;
        let row = self.load(&user, id).await?;
        check_etag(&row, &req.etag)?;
        let snapshot = tasks::to_proto(&row);
        let topics = self.topics.clone();
        self.writer
            .write_then(
                &user,
                move |txn| {
                    let (row, topics, snapshot) = (row.clone(), topics.clone(), snapshot.clone());
                    Box::pin(async move {
                        if !tasks::delete_if(txn, &row, row.version).await? {
                            return Err(TaskError::Conflict);
                        }
                        Self::record(txn, &topics, TaskEventKind::Deleted, &snapshot, vec![])
                            .await?;
                        reminders::replan_from(
                            txn,
                            &topics,
                            &row,
                            None,
                            reminders::Policy::default(),
                            "task deleted",
                        )
                        .await?;
                        // A deleted task's reminders are cancelled: nothing new to schedule.
                        Ok::<reminders::Scheduled, TaskError>(None)
                    })
                },
                self.after_commit(),
            )
            .await?;
        Ok(Response::new(()))
    }
}
