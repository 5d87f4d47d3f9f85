//! The MCP tools: typed arguments (their JSON schemas are generated), each call made to
//! task-service's gRPC API as the caller, results as structured content and one line of text.

use std::collections::BTreeMap;

use rmcp::{
    ServerHandler,
    handler::server::{common::RequestId as CallId, router::tool::ToolRouter},
    model::{
        CallToolResult, ContentBlock, Implementation, RequestId, ServerCapabilities, ServerConfig,
    },
    schemars::{self, JsonSchema},
    tool, tool_handler, tool_router,
};
use serde::{Deserialize, Serialize};
use todo_proto::todo::{
    audit::v1::{ActivityEntry, ListTaskActivityRequest, audit_service_client::AuditServiceClient},
    notifications::v1::{
        ListNotificationsRequest, Notification,
        notification_service_client::NotificationServiceClient,
    },
    v1::{
        CompleteTaskRequest, CreateTaskRequest, DeleteTaskRequest, GetTaskRequest,
        ListTasksRequest, ReopenTaskRequest, Task, UpdateTaskRequest,
        task_service_client::TaskServiceClient,
    },
};
use tonic::transport::Channel;

use crate::{
    args::Parameters,
    failure::{ToolFailure, from_service_status, from_status},
    identity::{Caller, Identity},
    words::{self, BadArgument},
};

/// Declares a tool-argument struct with its own fields followed by the fields a tool may
/// set on a task (add_task: the new task's; update_task: only those given). Written out
/// in each struct, not `#[serde(flatten)]`, so that a bad value's error keeps its path
/// (`tasks[1].tags`).
macro_rules! with_task_fields {
    ($(#[$meta:meta])* pub struct $name:ident { $($own:tt)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($own)*
            /// Longer notes.
            #[serde(default)]
            pub description: Option<String>,
            /// low, medium, high or urgent (update_task: also none).
            #[serde(default)]
            pub priority: Option<String>,
            /// The tags (update_task: replaces all of them).
            #[serde(default)]
            pub tags: Option<Vec<String>>,
            /// When it is due: RFC 3339 (2026-05-01T09:00:00+02:00), or a local time
            /// (2026-05-01T09:00) read in time_zone. In update_task an empty string removes it.
            #[serde(default)]
            pub due: Option<String>,
            /// IANA time zone (Europe/Berlin) for local times and recurrence; default UTC.
            #[serde(default)]
            pub time_zone: Option<String>,
            /// How it repeats once completed: daily, weekly, monthly, yearly, or an RRULE
            /// (FREQ=WEEKLY;BYDAY=MO,WE). Needs a due time. In update_task an empty string
            /// stops repeating.
            #[serde(default)]
            pub repeat: Option<String>,
            /// With a plain repeat word: every N days/weeks/months/years.
            #[serde(default)]
            pub repeat_every: Option<u32>,
        }
    };
}

with_task_fields! {
    /// One task to create.
    #[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
    pub struct NewTask {
        /// What to do (1..500 characters).
        pub title: String,
        /// Idempotency key (a UUID): a later call with the same one creates nothing twice.
        /// When absent, one is derived from the session and the call's JSON-RPC id, so a
        /// resent call is safe too.
        #[serde(default)]
        pub request_id: Option<String>,
    }
}

/// Arguments of add_task.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct AddTasks {
    /// The tasks to create (one or more).
    pub tasks: Vec<NewTask>,
}

/// Arguments of list_tasks.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ListTasks {
    /// open, completed or all (default all).
    pub status: Option<String>,
    /// Only tasks with this tag.
    pub tag: Option<String>,
    /// Only tasks of this priority: low, medium, high, urgent.
    pub priority: Option<String>,
    /// Only tasks due at or after this time (RFC 3339).
    pub due_after: Option<String>,
    /// Only tasks due before this time (RFC 3339).
    pub due_before: Option<String>,
    /// create_time (default), due_time or priority, optionally followed by " desc".
    pub order_by: Option<String>,
    /// At most this many tasks (default 50, max 1000).
    pub page_size: Option<u32>,
    /// next_page_token of the previous call, for the next page (same filters).
    pub page_token: Option<String>,
}

/// One task named by id.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct TaskId {
    /// The task's id (from add_task or list_tasks).
    pub id: String,
}

/// Several tasks named by id.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct TaskIds {
    /// The tasks' ids (one or more).
    pub ids: Vec<String>,
}

with_task_fields! {
    /// Arguments of update_task: only the fields given change.
    #[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
    pub struct UpdateTask {
        /// The task's id.
        pub id: String,
        /// What to do (1..500 characters).
        #[serde(default)]
        pub title: Option<String>,
    }
}

/// Arguments of task_history.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct TaskHistory {
    /// The task's id (also of a deleted task).
    pub id: String,
    /// At most this many entries (default 50, max 500), oldest first.
    #[serde(default)]
    pub page_size: Option<u32>,
    /// next_page_token of the previous call, for the next page.
    #[serde(default)]
    pub page_token: Option<String>,
}

/// Arguments of list_notifications.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct ListNotifications {
    /// At most this many (default 50, max 500), most recently delivered first.
    #[serde(default)]
    pub page_size: Option<u32>,
    /// next_page_token of the previous call, for the next page.
    #[serde(default)]
    pub page_token: Option<String>,
}

/// One entry of a task's history as a tool returns it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct HistoryView {
    /// The event type, e.g. todo.task.updated.v1 or todo.reminder.due.v1.
    pub event: String,
    /// When it happened (RFC 3339, UTC).
    pub at: String,
    /// user:<id> or service:<app-id>.
    pub actor: String,
    /// For an update: field → {before, after} (JSON text).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub changes: BTreeMap<String, serde_json::Value>,
}

impl From<&ActivityEntry> for HistoryView {
    fn from(e: &ActivityEntry) -> Self {
        Self {
            event: e.r#type.clone(),
            at: utc(&e.occurred_at),
            actor: e.actor.clone(),
            changes: e
                .changes
                .iter()
                .map(|c| {
                    let v = serde_json::json!({ "before": c.before, "after": c.after });
                    (c.field.clone(), v)
                })
                .collect(),
        }
    }
}

/// A delivered reminder as a tool returns it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct NotificationView {
    pub task_id: String,
    pub task_title: String,
    /// When the task is due (RFC 3339, UTC), when it has a due time.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub due: String,
    /// When the user was told (RFC 3339, UTC).
    pub delivered_at: String,
    /// The channel it went out on.
    pub channel: String,
}

impl From<&Notification> for NotificationView {
    fn from(n: &Notification) -> Self {
        Self {
            task_id: n.task_id.clone(),
            task_title: n.task_title.clone(),
            due: utc(&n.due_time),
            delivered_at: utc(&n.delivered_at),
            channel: n.channel.clone(),
        }
    }
}

fn utc(ts: &Option<prost_types::Timestamp>) -> String {
    ts.as_ref()
        .and_then(todo_proto::from_timestamp)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// A page size argument as the services take it (0: their default).
fn page_size(n: Option<u32>) -> i32 {
    n.map_or(0, |n| i32::try_from(n).unwrap_or(i32::MAX))
}

/// The channels the tools call: task-service, audit-service, notification-service.
#[derive(Debug, Clone)]
pub struct Channels {
    pub tasks: Channel,
    pub audit: Channel,
    pub notifications: Channel,
}

/// A task as a tool returns it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct TaskView {
    pub id: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// open or completed.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// RFC 3339, in the task's time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time_zone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<String>,
    /// The recurring series it belongs to, and its place in it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub series_id: String,
    #[serde(default)]
    pub occurrence_index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}

impl From<&Task> for TaskView {
    fn from(t: &Task) -> Self {
        let at = |ts: &Option<prost_types::Timestamp>| {
            ts.as_ref()
                .and_then(todo_proto::from_timestamp)
                .map(|t2| words::rfc3339_in(t2, &t.time_zone))
        };
        Self {
            id: t.id.clone(),
            title: t.title.clone(),
            description: t.description.clone(),
            status: words::status_word(t.status()).to_owned(),
            priority: words::priority_word(t.priority()).map(str::to_owned),
            tags: t.tags.clone(),
            due: at(&t.due_time),
            time_zone: t.time_zone.clone(),
            repeat: t.recurrence.as_ref().map(words::recurrence_words),
            series_id: t.series_id.clone(),
            occurrence_index: t.occurrence_index,
            completed_at: at(&t.complete_time),
        }
    }
}

/// The MCP server: one per client session; all share the channel to task-service.
#[derive(Clone)]
pub struct TodoTools {
    client: TaskServiceClient<Channel>,
    audit: AuditServiceClient<Channel>,
    notifications: NotificationServiceClient<Channel>,
    identity: Identity,
    /// This session's id (one `TodoTools` per MCP session), for derived request ids.
    session: uuid::Uuid,
    tool_router: ToolRouter<Self>,
}

/// A tool's result. `Err` is the tool error (not a protocol error: rmcp answers it as a
/// result marked `isError`), so `?` ends a call with it.
type ToolResult = Result<CallToolResult, CallToolResult>;

/// A successful result: `value` as structured content, `summary` as its text.
fn done(summary: String, value: serde_json::Value) -> ToolResult {
    let mut r = CallToolResult::success(vec![ContentBlock::text(summary)]);
    r.structured_content = Some(value);
    Ok(r)
}

/// A tool error: the model reads `failure`, and `value` says what was done before it.
fn failed(failure: &ToolFailure, value: serde_json::Value) -> CallToolResult {
    let mut r = CallToolResult::error(vec![ContentBlock::text(failure.to_string())]);
    let mut value = value;
    if let (serde_json::Value::Object(map), ToolFailure::Bad(bad)) = (&mut value, failure) {
        map.insert("field".into(), bad.field.clone().into());
    }
    if let serde_json::Value::Object(map) = &mut value {
        map.insert("error".into(), failure.to_string().into());
    }
    r.structured_content = Some(value);
    r
}

/// A failure before anything was done: the tool error with nothing else to report.
impl From<ToolFailure> for CallToolResult {
    fn from(failure: ToolFailure) -> Self {
        failed(&failure, serde_json::json!({}))
    }
}

impl From<BadArgument> for CallToolResult {
    fn from(bad: BadArgument) -> Self {
        ToolFailure::from(bad).into()
    }
}

/// The service's answer to `call`, or the failure naming the argument under `at` (see
/// [`from_status`]).
async fn reply<T>(
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    at: &str,
) -> Result<T, ToolFailure> {
    reply_from(call, at, "task-service").await
}

/// [`reply`] from another service (audit-service, notification-service), named in its
/// failures.
async fn reply_from<T>(
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    at: &str,
    service: &str,
) -> Result<T, ToolFailure> {
    call.await
        .map(tonic::Response::into_inner)
        .map_err(|status| from_service_status(&status, at, service))
}

/// A successful result of one task: `summary`, and the task as `task`.
fn task_done(summary: String, t: &Task) -> ToolResult {
    done(summary, serde_json::json!({ "task": TaskView::from(t) }))
}

/// An optional word argument read by `parse`, or the default when it is absent.
fn opt_word<T: Default>(
    field: &str,
    word: Option<&str>,
    parse: impl Fn(&str, &str) -> Result<T, BadArgument>,
) -> Result<T, BadArgument> {
    word.map(|w| parse(field, w))
        .transpose()
        .map(Option::unwrap_or_default)
}

fn opt_zone(field: &str, tz: &Option<String>) -> Result<Option<chrono_tz::Tz>, BadArgument> {
    tz.as_deref()
        .filter(|z| !z.trim().is_empty())
        .map(|z| words::zone(field, z))
        .transpose()
}

/// The request id of item `index` of an add_task call when the model gave none: derived
/// from the MCP session and the call's JSON-RPC id, so a client that sends the same call
/// again (a retry after a lost answer keeps its id) creates nothing twice, while a new call
/// with the same words creates a new task.
pub fn derived_request_id(session: uuid::Uuid, call: &RequestId, index: usize) -> uuid::Uuid {
    let call = serde_json::to_string(call).unwrap_or_default();
    uuid::Uuid::new_v5(&session, format!("add_task/{call}/{index}").as_bytes())
}

/// A new task's request from the model's words; `at` is its argument path; `derived` the
/// request id used when the model gave none.
fn create_request(
    t: &NewTask,
    at: &str,
    derived: uuid::Uuid,
) -> Result<CreateTaskRequest, BadArgument> {
    let f = |name: &str| format!("{at}.{name}");
    let zone = opt_zone(&f("time_zone"), &t.time_zone)?;
    let due = t
        .due
        .as_deref()
        .map(|d| words::instant(&f("due"), d, zone))
        .transpose()?;
    let priority = opt_word(&f("priority"), t.priority.as_deref(), words::priority)?;
    let recurrence = t
        .repeat
        .as_deref()
        .map(|r| words::recurrence(&f("repeat"), r, t.repeat_every))
        .transpose()?;
    if t.repeat_every.is_some() && t.repeat.is_none() {
        return Err(BadArgument::new(f("repeat_every"), "goes with repeat"));
    }
    let request_id = match &t.request_id {
        Some(id) => uuid::Uuid::parse_str(id.trim())
            .map_err(|_| BadArgument::new(f("request_id"), "must be a UUID"))?
            .to_string(),
        None => derived.to_string(),
    };
    Ok(CreateTaskRequest {
        task: Some(Task {
            title: t.title.clone(),
            description: t.description.clone().unwrap_or_default(),
            priority: priority as i32,
            tags: t.tags.clone().unwrap_or_default(),
            due_time: due.map(todo_proto::to_timestamp),
            time_zone: zone.map(|z| z.name().to_owned()).unwrap_or_default(),
            recurrence,
            ..Task::default()
        }),
        request_id,
        no_default_reminders: false,
    })
}

fn list_request(p: &ListTasks) -> Result<ListTasksRequest, BadArgument> {
    let when = |field: &str, v: &Option<String>| {
        v.as_deref()
            .map(|t| words::instant(field, t, None).map(todo_proto::to_timestamp))
            .transpose()
    };
    Ok(ListTasksRequest {
        page_size: match p.page_size {
            Some(n) => {
                i32::try_from(n).map_err(|_| BadArgument::new("page_size", "at most 1000"))?
            }
            None => 0,
        },
        page_token: p.page_token.clone().unwrap_or_default(),
        status: opt_word("status", p.status.as_deref(), words::status)? as i32,
        tag: p.tag.clone().unwrap_or_default(),
        priority: opt_word("priority", p.priority.as_deref(), words::priority)? as i32,
        due_after: when("due_after", &p.due_after)?,
        due_before: when("due_before", &p.due_before)?,
        order_by: p.order_by.clone().unwrap_or_default(),
    })
}

fn update_request(p: &UpdateTask) -> Result<UpdateTaskRequest, BadArgument> {
    let mut task = Task {
        id: p.id.clone(),
        ..Task::default()
    };
    let mut paths = Vec::new();
    if let Some(title) = &p.title {
        task.title = title.clone();
        paths.push("title");
    }
    if let Some(d) = &p.description {
        task.description = d.clone();
        paths.push("description");
    }
    if let Some(pr) = &p.priority {
        task.priority = words::priority("priority", pr)? as i32;
        paths.push("priority");
    }
    if let Some(tags) = &p.tags {
        task.tags = tags.clone();
        paths.push("tags");
    }
    let zone = opt_zone("time_zone", &p.time_zone)?;
    if let Some(z) = zone {
        task.time_zone = z.name().to_owned();
        paths.push("time_zone");
    }
    if let Some(due) = &p.due {
        if !due.trim().is_empty() {
            task.due_time = Some(todo_proto::to_timestamp(words::instant("due", due, zone)?));
        }
        paths.push("due_time");
    }
    if let Some(r) = &p.repeat {
        if !r.trim().is_empty() {
            task.recurrence = Some(words::recurrence("repeat", r, p.repeat_every)?);
        }
        paths.push("recurrence");
    } else if p.repeat_every.is_some() {
        return Err(BadArgument::new("repeat_every", "goes with repeat"));
    }
    if paths.is_empty() {
        return Err(BadArgument::new(
            "id",
            "nothing to change: give at least one of title, description, priority, tags, due, \
             time_zone, repeat",
        ));
    }
    Ok(UpdateTaskRequest {
        task: Some(task),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.into_iter().map(str::to_owned).collect(),
        }),
    })
}

#[tool_router]
impl TodoTools {
    /// Tools calling the services over `channels` as the callers `identity` resolves.
    pub fn new(channels: Channels, identity: Identity) -> Self {
        Self {
            client: TaskServiceClient::new(channels.tasks),
            audit: AuditServiceClient::new(channels.audit),
            notifications: NotificationServiceClient::new(channels.notifications),
            identity,
            session: uuid::Uuid::new_v4(),
            tool_router: Self::tool_router(),
        }
    }

    /// The caller of a tool call whose HTTP head is `parts`, or the reason there is none.
    pub(crate) fn caller(
        &self,
        parts: Option<&http::request::Parts>,
    ) -> Result<Caller, ToolFailure> {
        self.identity.caller(parts).ok_or_else(|| {
            ToolFailure::Refused(
                "no identity: send an Authorization: Bearer <JWT> header".to_owned(),
            )
        })
    }

    fn request<T>(&self, caller: &Caller, msg: T) -> tonic::Request<T> {
        self.identity.request(caller, msg)
    }

    #[tool(
        description = "Create one or more tasks. Each may have a due time (RFC 3339, or local \
                       time plus time_zone), a priority word (low/medium/high/urgent), tags and \
                       a repeat rule (daily/weekly/monthly/yearly or an RRULE). Retrying with \
                       the same request_id creates nothing twice."
    )]
    async fn add_task(
        &self,
        Parameters(opened): Parameters<AddTasks>,
        CallId(call): CallId,
    ) -> ToolResult {
        let (p, caller) = opened?;
        if p.tasks.is_empty() {
            return Err(BadArgument::new("tasks", "give at least one task").into());
        }
        // Every task is checked before any is created, so a typo creates nothing.
        let mut requests = Vec::with_capacity(p.tasks.len());
        for (i, t) in p.tasks.iter().enumerate() {
            let derived = derived_request_id(self.session, &call, i);
            match create_request(t, &format!("tasks[{i}]"), derived) {
                Ok(r) => requests.push(r),
                Err(bad) => return Err(failed(&bad.into(), serde_json::json!({ "created": [] }))),
            }
        }
        let mut created = Vec::new();
        let mut client = self.client.clone();
        for (i, r) in requests.into_iter().enumerate() {
            let request_id = r.request_id.clone();
            match client.create_task(self.request(&caller, r)).await {
                Ok(t) => created.push((t.into_inner(), request_id)),
                Err(status) => {
                    let views: Vec<TaskView> = created.iter().map(|(t, _)| t.into()).collect();
                    let ids: Vec<&String> = created.iter().map(|(_, id)| id).collect();
                    return Err(failed(
                        &from_status(&status, &format!("tasks[{i}]")),
                        serde_json::json!({ "created": views, "request_ids": ids }),
                    ));
                }
            }
        }
        let summary = match created.as_slice() {
            [(t, _)] => format!("Created {}", words::line(t)),
            many => format!(
                "Created {} tasks: {}",
                many.len(),
                many.iter()
                    .map(|(t, _)| format!("{:?} ({})", t.title, t.id))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let views: Vec<TaskView> = created.iter().map(|(t, _)| t.into()).collect();
        let ids: Vec<&String> = created.iter().map(|(_, id)| id).collect();
        done(
            summary,
            serde_json::json!({ "created": views, "request_ids": ids }),
        )
    }

    #[tool(
        description = "List your tasks, newest first unless order_by says otherwise. Filters: \
                       status (open/completed/all), tag, priority, due_after/due_before (RFC \
                       3339). Pass next_page_token back as page_token for more."
    )]
    async fn list_tasks(&self, Parameters(opened): Parameters<ListTasks>) -> ToolResult {
        let (p, caller) = opened?;
        let request = self.request(&caller, list_request(&p)?);
        let r = reply(self.client.clone().list_tasks(request), "").await?;
        let views: Vec<TaskView> = r.tasks.iter().map(TaskView::from).collect();
        let mut summary = format!("{} task(s)", views.len());
        if !r.tasks.is_empty() {
            summary.push_str(": ");
            summary.push_str(
                &r.tasks
                    .iter()
                    .map(words::line)
                    .collect::<Vec<_>>()
                    .join("; "),
            );
        }
        if !r.next_page_token.is_empty() {
            summary.push_str(" (more: pass next_page_token)");
        }
        done(
            summary,
            serde_json::json!({ "tasks": views, "next_page_token": r.next_page_token }),
        )
    }

    #[tool(description = "Show one of your tasks by id.")]
    async fn get_task(&self, Parameters(opened): Parameters<TaskId>) -> ToolResult {
        let (p, caller) = opened?;
        let request = self.request(&caller, GetTaskRequest { id: p.id });
        let t = reply(self.client.clone().get_task(request), "id").await?;
        task_done(words::line(&t), &t)
    }

    #[tool(
        description = "Change a task: only the fields given change (title, description, \
                       priority, tags, due, time_zone, repeat). An empty due or repeat removes it."
    )]
    async fn update_task(&self, Parameters(opened): Parameters<UpdateTask>) -> ToolResult {
        let (p, caller) = opened?;
        let request = self.request(&caller, update_request(&p)?);
        // No item path: a field violation names the argument itself (title, not id.title),
        // and NOT_FOUND says "id" all the same.
        let t = reply(self.client.clone().update_task(request), "").await?;
        task_done(format!("Updated {}", words::line(&t)), &t)
    }

    #[tool(
        description = "Mark one or more tasks done. A repeating task's next occurrence is then \
                       created by the system (it shows up in list_tasks shortly after)."
    )]
    async fn complete_task(&self, Parameters(opened): Parameters<TaskIds>) -> ToolResult {
        let (p, caller) = opened?;
        if p.ids.is_empty() {
            return Err(BadArgument::new("ids", "give at least one task id").into());
        }
        let mut completed = Vec::new();
        let mut failures = BTreeMap::new();
        let mut first_failure = None;
        let mut client = self.client.clone();
        for (i, id) in p.ids.iter().enumerate() {
            let request = CompleteTaskRequest {
                id: id.clone(),
                etag: String::new(),
            };
            match client.complete_task(self.request(&caller, request)).await {
                Ok(t) => completed.push(t.into_inner()),
                Err(status) => {
                    let f = from_status(&status, &format!("ids[{i}]"));
                    failures.insert(id.clone(), f.to_string());
                    first_failure.get_or_insert(f);
                }
            }
        }
        let views: Vec<TaskView> = completed.iter().map(TaskView::from).collect();
        let value = serde_json::json!({ "completed": views, "failed": failures });
        match first_failure {
            Some(f) => Err(failed(&f, value)),
            None => {
                let summary = format!(
                    "Completed {}",
                    completed
                        .iter()
                        .map(words::line)
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                done(summary, value)
            }
        }
    }

    #[tool(description = "Mark a completed task open again.")]
    async fn reopen_task(&self, Parameters(opened): Parameters<TaskId>) -> ToolResult {
        let (p, caller) = opened?;
        let request = ReopenTaskRequest {
            id: p.id,
            etag: String::new(),
        };
        let request = self.request(&caller, request);
        let t = reply(self.client.clone().reopen_task(request), "id").await?;
        task_done(format!("Reopened {}", words::line(&t)), &t)
    }

    #[tool(description = "Delete a task for good.")]
    async fn delete_task(&self, Parameters(opened): Parameters<TaskId>) -> ToolResult {
        let (p, caller) = opened?;
        let request = DeleteTaskRequest {
            id: p.id.clone(),
            etag: String::new(),
        };
        let request = self.request(&caller, request);
        reply(self.client.clone().delete_task(request), "id").await?;
        done(
            format!("Deleted task {}", p.id),
            serde_json::json!({ "deleted": p.id }),
        )
    }

    #[tool(
        description = "The history of one of your tasks, oldest first: created, each update \
                       with the fields' values before and after, completed, reopened, \
                       reminders scheduled/due/cancelled, deleted; also after deletion. From \
                       audit-service."
    )]
    async fn task_history(&self, Parameters(opened): Parameters<TaskHistory>) -> ToolResult {
        let (p, caller) = opened?;
        let request = ListTaskActivityRequest {
            task_id: p.id.trim().to_owned(),
            page_size: page_size(p.page_size),
            page_token: p.page_token.unwrap_or_default(),
        };
        let request = self.identity.request_direct(&caller, request);
        let page = reply_from(
            self.audit.clone().list_task_activity(request),
            "id",
            "audit-service",
        )
        .await?;
        let entries: Vec<HistoryView> = page.entries.iter().map(Into::into).collect();
        let summary = format!(
            "{} entries of task {}: {}",
            entries.len(),
            p.id.trim(),
            entries
                .iter()
                .map(|e| e.event.trim_start_matches("todo.").trim_end_matches(".v1"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        done(
            summary,
            serde_json::json!({
                "entries": entries,
                "next_page_token": page.next_page_token,
            }),
        )
    }

    #[tool(
        description = "Your delivered reminders (notifications), most recent first: which task, \
                       when it is due, when you were told. From notification-service."
    )]
    async fn list_notifications(
        &self,
        Parameters(opened): Parameters<ListNotifications>,
    ) -> ToolResult {
        let (p, caller) = opened?;
        let request = ListNotificationsRequest {
            page_size: page_size(p.page_size),
            page_token: p.page_token.unwrap_or_default(),
        };
        let request = self.identity.request_direct(&caller, request);
        let mut client = self.notifications.clone();
        let page = reply_from(
            client.list_notifications(request),
            "page_token",
            "notification-service",
        )
        .await?;
        let list: Vec<NotificationView> = page.notifications.iter().map(Into::into).collect();
        let summary = match list.first() {
            None => "No notifications".to_owned(),
            Some(n) => format!(
                "{} notifications; latest: {:?} at {}",
                list.len(),
                n.task_title,
                n.delivered_at
            ),
        };
        done(
            summary,
            serde_json::json!({
                "notifications": list,
                "next_page_token": page.next_page_token,
            }),
        )
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for TodoTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("todo-mcp", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Manage the user's tasks: add_task, list_tasks, get_task, update_task, \
             complete_task, reopen_task, delete_task. Times are RFC 3339; priorities and \
             repeat rules are plain words.",
            )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn update_sends_only_the_fields_given() {
        let r = update_request(&UpdateTask {
            id: "t1".into(),
            priority: Some("high".into()),
            due: Some(String::new()),
            ..UpdateTask::default()
        })
        .unwrap();
        assert_eq!(r.update_mask.unwrap().paths, ["priority", "due_time"]);
        let task = r.task.unwrap();
        assert_eq!(task.due_time, None);
    }

    #[test]
    fn an_update_of_nothing_is_refused() {
        let e = update_request(&UpdateTask {
            id: "t1".into(),
            ..UpdateTask::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "id");
    }

    #[test]
    fn a_resent_call_derives_the_same_request_ids_a_new_call_others() {
        let session = uuid::Uuid::new_v4();
        let call = RequestId::Number(7);
        let first = derived_request_id(session, &call, 0);
        assert_eq!(first, derived_request_id(session, &call, 0));
        assert_ne!(first, derived_request_id(session, &call, 1));
        assert_ne!(first, derived_request_id(session, &RequestId::Number(8), 0));
        assert_ne!(first, derived_request_id(uuid::Uuid::new_v4(), &call, 0));
    }

    #[test]
    fn a_new_task_gets_a_request_id_and_its_bad_fields_named() {
        let t = NewTask {
            title: "x".into(),
            ..NewTask::default()
        };
        let derived = uuid::Uuid::new_v4();
        let r = create_request(&t, "tasks[0]", derived).unwrap();
        assert_eq!(r.request_id, derived.to_string());
        let bad = NewTask {
            due: Some("next tuesday".into()),
            ..t
        };
        assert_eq!(
            create_request(&bad, "tasks[3]", derived).unwrap_err().field,
            "tasks[3].due"
        );
    }
}
