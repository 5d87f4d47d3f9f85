//! `todo.audit.v1.AuditService`: each caller reads the history of their own tasks.

use std::collections::HashMap;

use sea_orm::{ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter, Select};
use todo_proto::todo::audit::v1::{
    ListActivityRequest, ListActivityResponse, ListTaskActivityRequest,
    audit_service_server::AuditService,
};
use todo_service::{
    db::status_of as db_status,
    paging::{self, Keyset, PageRequest},
};
use tonic::Status;

use crate::{
    db::entry::{self, Column},
    entry::{is_task_type, known_types, to_activity},
};

/// Entries per page when the request says 0.
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// The most entries per page.
pub const MAX_PAGE_SIZE: u64 = 500;
/// The most event types one ListActivity may filter on.
pub const MAX_TYPES: usize = 16;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct AuditApi {
    db: DatabaseConnection,
}

impl AuditApi {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

/// Entries per page: the default and the most.
const PAGE_SIZES: (u64, u64) = (DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);

/// The order things happened in: a page of history and the entry before another.
fn in_order() -> Keyset<Column> {
    Keyset::oldest_first(Column::OccurredAt, Column::EventId)
}

impl AuditApi {
    /// One page of the caller's entries matching `filter`, oldest first, as readers see
    /// them, with the next page's token: the answer of both listings.
    async fn page(
        &self,
        filter: Condition,
        request: PageRequest,
    ) -> Result<ListActivityResponse, Status> {
        let (rows, next_page_token) = in_order()
            .page(filter, request, &self.db, "listing activity")
            .await?;
        // The snapshot each update is compared with: the task event before it, from this
        // page when it is there, else from the log.
        let mut last_snapshot: HashMap<String, Vec<u8>> = HashMap::new();
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let previous = match last_snapshot.get(&row.task_id) {
                Some(p) => Some(p.clone()),
                None if row.event_type == todo_topology::event_types::TASK_UPDATED => {
                    self.previous_snapshot(&row).await?
                }
                None => None,
            };
            if is_task_type(&row.event_type) {
                last_snapshot.insert(row.task_id.clone(), row.payload.clone());
            }
            entries.push(to_activity(
                row.event_id,
                row.event_type,
                row.task_id,
                row.user_id,
                row.occurred_at,
                row.recorded_at,
                row.actor,
                row.trace_id,
                &row.payload,
                previous.as_deref(),
            ));
        }
        Ok(ListActivityResponse {
            entries,
            next_page_token,
        })
    }

    /// The payload of the task event just before `row` in its task's history.
    async fn previous_snapshot(&self, row: &entry::Model) -> Result<Option<Vec<u8>>, Status> {
        let prev = previous_task_event(row)
            .one(&self.db)
            .await
            .map_err(db_status("reading the previous snapshot"))?;
        Ok(prev.map(|p| p.payload))
    }
}

/// The task events before `row` in its task's history, newest first: seeks the task's
/// index to `(occurred_at, event_id) < (?, ?)`.
fn previous_task_event(row: &entry::Model) -> Select<entry::Entity> {
    let task_types: Vec<&str> = known_types().filter(|t| is_task_type(t)).collect();
    let backwards = Keyset::newest_first(Column::OccurredAt, Column::EventId);
    backwards
        .sorted(entry::Entity::find())
        .filter(Column::UserId.eq(row.user_id.clone()))
        .filter(Column::TaskId.eq(row.task_id.clone()))
        .filter(Column::EventType.is_in(task_types))
        .filter(backwards.after(row.occurred_at, &row.event_id))
}

/// ListTaskActivity's rows: the caller's entries of one task.
fn task_filter(user: String, task_id: String) -> Condition {
    Condition::all()
        .add(Column::UserId.eq(user))
        .add(Column::TaskId.eq(task_id))
}

/// ListActivity's rows: the caller's entries in a time range (micros, start inclusive)
/// of some types (any when empty).
fn activity_filter(
    user: String,
    since: Option<i64>,
    until: Option<i64>,
    types: Vec<String>,
) -> Condition {
    let mut filter = Condition::all().add(Column::UserId.eq(user));
    if let Some(s) = since {
        filter = filter.add(Column::OccurredAt.gte(s));
    }
    if let Some(u) = until {
        filter = filter.add(Column::OccurredAt.lt(u));
    }
    if !types.is_empty() {
        filter = filter.add(Column::EventType.is_in(types));
    }
    filter
}

todo_auth::caller_rpcs!(AuditService for AuditApi {
    list_task_activity(ListTaskActivityRequest) -> ListActivityResponse;
    list_activity(ListActivityRequest) -> ListActivityResponse;
});

/// The RPCs, for the caller `user` (see [`todo_auth::caller_rpcs!`]).
impl AuditApi {
    async fn list_task_activity(
        &self,
        user: String,
        req: ListTaskActivityRequest,
    ) -> Result<ListActivityResponse, Status> {
        let task_id = uuid::Uuid::parse_str(req.task_id.trim())
            .map_err(|_| Status::invalid_argument("task_id: must be a task id (a UUID)"))?
            .to_string();
        let page = PageRequest::new(
            req.page_size,
            &req.page_token,
            PAGE_SIZES,
            format!("task:{task_id}"),
        )?;
        let filter = task_filter(user, task_id.clone());
        let first_page = page.token.is_none();
        let history = self.page(filter, page).await?;
        // Nothing at all: not the caller's task (or never one). Same answer either way.
        if first_page && history.entries.is_empty() {
            return Err(Status::not_found(format!("task {task_id}: no history")));
        }
        Ok(history)
    }

    async fn list_activity(
        &self,
        user: String,
        req: ListActivityRequest,
    ) -> Result<ListActivityResponse, Status> {
        let (since, until) = paging::time_range(req.since.as_ref(), req.until.as_ref())?;
        if req.types.len() > MAX_TYPES {
            return Err(Status::invalid_argument(format!(
                "types: at most {MAX_TYPES}"
            )));
        }
        let mut types: Vec<String> = Vec::with_capacity(req.types.len());
        for (i, t) in req.types.iter().enumerate() {
            let t = t.trim();
            if !known_types().any(|k| k == t) {
                return Err(Status::invalid_argument(format!(
                    "types[{i}]: {t:?} is not an event type the audit log records (one of: {})",
                    known_types().collect::<Vec<_>>().join(", ")
                )));
            }
            types.push(t.to_owned());
        }
        types.sort();
        types.dedup();
        let query = format!(
            "activity:{}:{}:{}",
            since.unwrap_or(i64::MIN),
            until.unwrap_or(i64::MAX),
            types.join(",")
        );
        let page = PageRequest::new(req.page_size, &req.page_token, PAGE_SIZES, query)?;
        // After a token at or after `since`, every later entry is too (oldest first): the
        // bound is left out so that the page seeks the index to the token, not to `since`.
        let since = since.filter(|s| page.token.as_ref().is_none_or(|t| t.at < *s));
        self.page(activity_filter(user, since, until, types), page)
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sea_orm::{DbBackend, QueryTrait};
    use todo_service::paging::After;

    /// SQLite's own plan of `select` on the migrated schema, its steps joined by `; `.
    async fn plan(db: &DatabaseConnection, select: Select<entry::Entity>) -> String {
        todo_service::db::sqlite_plan(db, select.build(DbBackend::Sqlite))
            .await
            .expect("a plan")
    }

    fn token() -> After {
        After {
            at: 1_700_000_000_000_000,
            id: "e1".to_owned(),
            q: String::new(),
        }
    }

    /// A page after a token seeks the caller's index to the token's row value instead of
    /// walking the caller's entries before it: ListActivity (with and without filters)
    /// and ListTaskActivity.
    #[tokio::test]
    async fn activity_pages_seek_their_index_to_the_token() {
        let db = crate::db::connect("sqlite::memory:", 1).await.unwrap();
        let t = token();
        let user = || "u1".to_owned();
        let task = "0190a1b2-0000-7000-8000-000000000001".to_owned();
        let pages = [
            (
                "ListActivity",
                activity_filter(user(), None, None, vec![]),
                "SEARCH audit_entries USING INDEX ix_audit_user (user_id=? AND (occurred_at,event_id)>(?,?))",
            ),
            (
                "ListActivity by type",
                activity_filter(
                    user(),
                    None,
                    None,
                    vec![todo_topology::event_types::TASK_UPDATED.to_owned()],
                ),
                "SEARCH audit_entries USING INDEX ix_audit_user (user_id=? AND (occurred_at,event_id)>(?,?))",
            ),
            (
                "ListActivity in a time range",
                // `since` before the token is left out by the RPC: the token implies it.
                activity_filter(user(), None, Some(t.at + 1_000_000), vec![]),
                "SEARCH audit_entries USING INDEX ix_audit_user (user_id=? AND (occurred_at,event_id)>(?,?)",
            ),
            (
                "ListTaskActivity",
                task_filter(user(), task),
                "SEARCH audit_entries USING INDEX ix_audit_task (user_id=? AND task_id=? AND (occurred_at,event_id)>(?,?))",
            ),
        ];
        for (what, filter, want) in pages {
            let p = plan(&db, in_order().select(filter, Some(&t), 50)).await;
            assert!(
                p.contains(want) && !p.contains("TEMP B-TREE"),
                "{what}: planned {p}"
            );
        }
    }

    /// The task event before an entry seeks its task's index backwards from the entry.
    #[tokio::test]
    async fn previous_snapshot_seeks_the_task_index() {
        let db = crate::db::connect("sqlite::memory:", 1).await.unwrap();
        let row = entry::Model {
            seq: 1,
            event_id: "e1".to_owned(),
            event_type: todo_topology::event_types::TASK_UPDATED.to_owned(),
            task_id: "0190a1b2-0000-7000-8000-000000000001".to_owned(),
            user_id: "u1".to_owned(),
            occurred_at: 1_700_000_000_000_000,
            recorded_at: 1_700_000_000_000_000,
            actor: "u1".to_owned(),
            trace_id: String::new(),
            cloud_event_id: "c1".to_owned(),
            payload: vec![],
        };
        let p = plan(&db, previous_task_event(&row)).await;
        assert!(
            p.contains(
                "SEARCH audit_entries USING INDEX ix_audit_task (user_id=? AND task_id=? AND (occurred_at,event_id)<(?,?))"
            ) && !p.contains("TEMP B-TREE"),
            "planned {p}"
        );
    }
}
