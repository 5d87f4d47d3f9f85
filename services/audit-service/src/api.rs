//! `todo.audit.v1.AuditService`: each caller reads the history of their own tasks.

use std::collections::HashMap;

use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, Order, QueryFilter, QueryOrder,
    QuerySelect,
};
use todo_auth::into_caller;
use todo_proto::todo::audit::v1::{
    ActivityEntry, ListActivityRequest, ListActivityResponse, ListTaskActivityRequest,
    audit_service_server::AuditService,
};
use todo_service::{
    db::status_of as db_status,
    paging::{self, After as Token, PageToken},
};
use tonic::{Request, Response, Status};

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

fn page_size(n: i32) -> Result<u64, Status> {
    paging::page_size(n, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
}

/// Entries after `after` in the order things happened.
fn after(token: Option<&Token>) -> Condition {
    match token {
        None => Condition::all(),
        Some(t) => Condition::any().add(Column::OccurredAt.gt(t.at)).add(
            Condition::all()
                .add(Column::OccurredAt.eq(t.at))
                .add(Column::EventId.gt(t.id.clone())),
        ),
    }
}

impl AuditApi {
    /// One page of the caller's entries matching `filter`, oldest first, as readers see
    /// them, and the next page's token.
    async fn page(
        &self,
        filter: Condition,
        token: Option<&Token>,
        size: u64,
        query: String,
    ) -> Result<(Vec<ActivityEntry>, String), Status> {
        let mut rows = entry::Entity::find()
            .filter(filter)
            .filter(after(token))
            .order_by(Column::OccurredAt, Order::Asc)
            .order_by(Column::EventId, Order::Asc)
            .limit(size + 1)
            .all(&self.db)
            .await
            .map_err(db_status("listing activity"))?;
        let next = if rows.len() as u64 > size {
            rows.truncate(size as usize);
            rows.last()
                .map(|last| {
                    Token {
                        at: last.occurred_at,
                        id: last.event_id.clone(),
                        q: query,
                    }
                    .encode()
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
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
        Ok((entries, next))
    }

    /// The payload of the task event just before `row` in its task's history.
    async fn previous_snapshot(&self, row: &entry::Model) -> Result<Option<Vec<u8>>, Status> {
        let task_types: Vec<&str> = known_types().filter(|t| is_task_type(t)).collect();
        let before = Condition::any()
            .add(Column::OccurredAt.lt(row.occurred_at))
            .add(
                Condition::all()
                    .add(Column::OccurredAt.eq(row.occurred_at))
                    .add(Column::EventId.lt(row.event_id.clone())),
            );
        let prev = entry::Entity::find()
            .filter(Column::UserId.eq(row.user_id.clone()))
            .filter(Column::TaskId.eq(row.task_id.clone()))
            .filter(Column::EventType.is_in(task_types))
            .filter(before)
            .order_by(Column::OccurredAt, Order::Desc)
            .order_by(Column::EventId, Order::Desc)
            .one(&self.db)
            .await
            .map_err(db_status("reading the previous snapshot"))?;
        Ok(prev.map(|p| p.payload))
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_task_activity(
        &self,
        request: Request<ListTaskActivityRequest>,
    ) -> Result<Response<ListActivityResponse>, Status> {
        let (user, req) = into_caller(request)?;
        let task_id = uuid::Uuid::parse_str(req.task_id.trim())
            .map_err(|_| Status::invalid_argument("task_id: must be a task id (a UUID)"))?
            .to_string();
        let size = page_size(req.page_size)?;
        let query = format!("task:{task_id}");
        let token = Token::decode(&req.page_token, &query)?;
        let filter = Condition::all()
            .add(Column::UserId.eq(user))
            .add(Column::TaskId.eq(task_id.clone()));
        let first_page = token.is_none();
        let (entries, next_page_token) = self.page(filter, token.as_ref(), size, query).await?;
        // Nothing at all: not the caller's task (or never one). Same answer either way.
        if first_page && entries.is_empty() {
            return Err(Status::not_found(format!("task {task_id}: no history")));
        }
        Ok(Response::new(ListActivityResponse {
            entries,
            next_page_token,
        }))
    }

    async fn list_activity(
        &self,
        request: Request<ListActivityRequest>,
    ) -> Result<Response<ListActivityResponse>, Status> {
        let (user, req) = into_caller(request)?;
        let size = page_size(req.page_size)?;
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
        let token = Token::decode(&req.page_token, &query)?;
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
        let (entries, next_page_token) = self.page(filter, token.as_ref(), size, query).await?;
        Ok(Response::new(ListActivityResponse {
            entries,
            next_page_token,
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_belong_to_their_query() {
        let t = Token {
            at: 5,
            id: "e".into(),
            q: "task:x".into(),
        };
        let s = t.encode();
        assert_eq!(Token::decode(&s, "task:x").unwrap(), Some(t));
        assert!(Token::decode(&s, "task:y").is_err());
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(10_000).unwrap(), MAX_PAGE_SIZE);
        assert!(page_size(-1).is_err());
    }
}
