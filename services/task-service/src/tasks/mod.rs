//! Tasks: conversions between rows and the API's `Task`, and the queries over them.
//! Every function takes the caller's user id: a task of another user does not exist.

pub mod paging;
pub mod validate;

use chrono::{DateTime, Utc};
use prost::Message;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect, Set,
    sea_query::{Expr, ExprTrait, Query},
};
use todo_proto::todo::v1::{Recurrence, Reminder, Task, TaskStatus};
use todo_service::db::InsertLater;
use uuid::Uuid;

use crate::db::entities::{task, task_tag, tombstone};
use paging::{Order, OrderKey, PageToken};
use validate::TaskFields;

/// Microseconds since the Unix epoch.
pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// The encoded form of a task's reminders.
#[derive(Clone, PartialEq, Message)]
struct ReminderList {
    #[prost(message, repeated, tag = "1")]
    items: Vec<Reminder>,
}

/// The etag of a row version.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// The API's view of a row.
pub fn to_proto(m: &task::Model) -> Task {
    Task {
        id: m.id.to_string(),
        user_id: m.user_id.clone(),
        title: m.title.clone(),
        description: m.description.clone(),
        status: i32::from(m.status),
        priority: i32::from(m.priority),
        tags: serde_json::from_str(&m.tags).unwrap_or_default(),
        due_time: m.due_time.map(from_micros),
        time_zone: m.time_zone.clone(),
        recurrence: m
            .recurrence
            .as_deref()
            .and_then(|b| Recurrence::decode(b).ok()),
        reminders: ReminderList::decode(m.reminders.as_slice())
            .map(|l| l.items)
            .unwrap_or_default(),
        series_id: m.series_id.map(|u| u.to_string()).unwrap_or_default(),
        parent_task_id: m.parent_task_id.map(|u| u.to_string()).unwrap_or_default(),
        occurrence_index: u32::try_from(m.occurrence_index).unwrap_or_default(),
        create_time: Some(from_micros(m.create_time)),
        update_time: Some(from_micros(m.update_time)),
        complete_time: m.complete_time.map(from_micros),
        etag: etag(m.version),
        series_start_time: m.series_start.map(from_micros),
    }
}

/// Writes the user-settable fields onto a row.
pub fn apply_fields(m: &mut task::Model, f: &TaskFields) {
    m.title = f.title.clone();
    m.description = f.description.clone();
    m.priority = i16::try_from(f.priority).unwrap_or_default();
    m.tags = serde_json::to_string(&f.tags).unwrap_or_else(|_| "[]".to_owned());
    m.due_time = f.due_time.map(micros);
    m.due_sort = m.due_time.unwrap_or(i64::MAX);
    m.time_zone = f.time_zone.clone();
    m.recurrence = f.recurrence.as_ref().map(Message::encode_to_vec);
    m.reminders = ReminderList {
        items: f.reminders.clone(),
    }
    .encode_to_vec();
}

/// A new open task owned by `user`.
pub fn new_row(user: &str, id: Uuid, f: &TaskFields, now: DateTime<Utc>) -> task::Model {
    let mut m = task::Model {
        id,
        user_id: user.to_owned(),
        title: String::new(),
        description: String::new(),
        status: TaskStatus::Open as i16,
        priority: 0,
        tags: "[]".to_owned(),
        due_time: None,
        due_sort: i64::MAX,
        time_zone: "UTC".to_owned(),
        recurrence: None,
        reminders: Vec::new(),
        series_id: None,
        parent_task_id: None,
        occurrence_index: 0,
        create_time: micros(now),
        update_time: micros(now),
        complete_time: None,
        version: 1,
        request_id: None,
        series_start: None,
        default_reminders: false,
    };
    apply_fields(&mut m, f);
    if f.recurrence.is_some() {
        m.series_id = Some(id);
        m.series_start = m.due_time;
    }
    m
}

fn tags_of(m: &task::Model) -> Vec<String> {
    serde_json::from_str(&m.tags).unwrap_or_default()
}

/// Inserts a new row and its tag index; in a group commit's first run both are held back
/// and inserted with the group's other new tasks ([`todo_service::db::insert_later`]). Only
/// for a task with a new id, which nothing in the group can read before the commit.
pub async fn insert<C: InsertLater>(db: &C, m: &task::Model) -> Result<(), sea_orm::DbErr> {
    todo_service::db::insert_later(db, [m.clone().into_active_model()]).await?;
    todo_service::db::insert_later(db, tag_rows(m)).await
}

/// Inserts a row and its tag index unless a task with its id exists (atomically:
/// `INSERT … ON CONFLICT (id) DO NOTHING`). Returns whether it was inserted.
pub async fn insert_if_absent<C: ConnectionTrait>(
    db: &C,
    m: &task::Model,
) -> Result<bool, sea_orm::DbErr> {
    let inserted = task::Entity::insert(m.clone().into_active_model())
        .on_conflict(do_nothing_on(task::Column::Id))
        .exec_without_returning(db)
        .await?;
    if inserted == 0 {
        return Ok(false);
    }
    insert_tags(db, m).await?;
    Ok(true)
}

/// Whether a task with this id was deleted (its tombstone exists).
pub async fn is_deleted<C: ConnectionTrait>(db: &C, id: Uuid) -> Result<bool, sea_orm::DbErr> {
    Ok(tombstone::Entity::find_by_id(id).one(db).await?.is_some())
}

/// The tasks among `ids` that exist, whoever owns them, and the owners of those among the
/// others that were deleted (their tombstones): two statements at most.
pub async fn existing_and_deleted<C: ConnectionTrait>(
    db: &C,
    ids: &[Uuid],
) -> Result<(Vec<task::Model>, Vec<tombstone::Model>), sea_orm::DbErr> {
    let rows = task::Entity::find()
        .filter(task::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?;
    let missing: Vec<Uuid> = ids
        .iter()
        .copied()
        .filter(|id| !rows.iter().any(|r| r.id == *id))
        .collect();
    let gone = if missing.is_empty() {
        Vec::new()
    } else {
        tombstone::Entity::find()
            .filter(tombstone::Column::TaskId.is_in(missing))
            .all(db)
            .await?
    };
    Ok((rows, gone))
}

/// Replaces the tag index of an existing task.
async fn replace_tags<C: ConnectionTrait>(db: &C, m: &task::Model) -> Result<(), sea_orm::DbErr> {
    task_tag::Entity::delete_many()
        .filter(task_tag::Column::TaskId.eq(m.id))
        .exec(db)
        .await?;
    insert_tags(db, m).await
}

async fn insert_tags<C: ConnectionTrait>(db: &C, m: &task::Model) -> Result<(), sea_orm::DbErr> {
    todo_service::db::insert_all(db, tag_rows(m)).await
}

/// The tag index rows of `m`.
fn tag_rows(m: &task::Model) -> Vec<task_tag::ActiveModel> {
    tags_of(m)
        .into_iter()
        .map(|tag| task_tag::ActiveModel {
            task_id: Set(m.id),
            tag: Set(tag),
            user_id: Set(m.user_id.clone()),
        })
        .collect()
}

/// The caller's task with this id.
pub async fn find<C: ConnectionTrait>(
    db: &C,
    user: &str,
    id: Uuid,
) -> Result<Option<task::Model>, sea_orm::DbErr> {
    task::Entity::find_by_id(id)
        .filter(task::Column::UserId.eq(user))
        .one(db)
        .await
}

/// The caller's task created with this idempotency key.
pub async fn find_by_request<C: ConnectionTrait>(
    db: &C,
    user: &str,
    request_id: &str,
) -> Result<Option<task::Model>, sea_orm::DbErr> {
    task::Entity::find()
        .filter(task::Column::UserId.eq(user))
        .filter(task::Column::RequestId.eq(request_id))
        .one(db)
        .await
}

/// Writes `m` (with its version already incremented) if the stored version is still
/// `expected`. Returns false when someone else changed it first.
pub async fn update_if<C: ConnectionTrait>(
    db: &C,
    m: &task::Model,
    expected: i64,
    tags_changed: bool,
) -> Result<bool, sea_orm::DbErr> {
    let mut am: task::ActiveModel = m.clone().into_active_model();
    am = am.reset_all();
    am.id = sea_orm::ActiveValue::Unchanged(m.id);
    let res = task::Entity::update_many()
        .set(am)
        .filter(at_version(m, expected))
        .exec(db)
        .await?;
    if res.rows_affected != 1 {
        return Ok(false);
    }
    if tags_changed {
        replace_tags(db, m).await?;
    }
    Ok(true)
}

/// Deletes the caller's task if its version is still `expected`, leaving a tombstone of its
/// id (in the same transaction) so it is never created again.
pub async fn delete_if<C: ConnectionTrait>(
    db: &C,
    m: &task::Model,
    expected: i64,
) -> Result<bool, sea_orm::DbErr> {
    task_tag::Entity::delete_many()
        .filter(task_tag::Column::TaskId.eq(m.id))
        .exec(db)
        .await?;
    let res = task::Entity::delete_many()
        .filter(at_version(m, expected))
        .exec(db)
        .await?;
    if res.rows_affected != 1 {
        return Ok(false);
    }
    tombstone::Entity::insert(tombstone::ActiveModel {
        task_id: Set(m.id),
        user_id: Set(m.user_id.clone()),
        deleted_at: Set(micros(Utc::now())),
    })
    .on_conflict(do_nothing_on(tombstone::Column::TaskId))
    .exec_without_returning(db)
    .await?;
    Ok(true)
}

/// ListTasks' filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub status: Option<i16>,
    pub tag: Option<String>,
    pub priority: Option<i16>,
    pub due_after: Option<i64>,
    pub due_before: Option<i64>,
}

impl Filters {
    /// A canonical text of the filters and order, stored in page tokens.
    pub fn fingerprint(&self, order: &Order) -> String {
        format!("{self:?}|{order:?}")
    }
}

fn sort_value(m: &task::Model, key: OrderKey) -> i64 {
    match key {
        OrderKey::CreateTime => m.create_time,
        OrderKey::DueTime => m.due_sort,
        OrderKey::Priority => i64::from(m.priority),
    }
}

/// One page of the caller's tasks, and the token of the next page if there is one.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    user: &str,
    filters: &Filters,
    order: Order,
    page_size: u64,
    after: Option<&PageToken>,
) -> Result<(Vec<task::Model>, Option<PageToken>), sea_orm::DbErr> {
    let mut rows = list_query(user, filters, order, page_size, after)
        .all(db)
        .await?;
    let next = if rows.len() as u64 > page_size {
        rows.truncate(page_size as usize);
        rows.last().map(|last| PageToken {
            k: sort_value(last, order.key),
            i: last.id,
            q: filters.fingerprint(&order),
        })
    } else {
        None
    };
    Ok((rows, next))
}

/// The select of [`list`]: the caller's tasks matching `filters` after the token, in
/// `order`, one more than a page.
fn list_query(
    user: &str,
    filters: &Filters,
    order: Order,
    page_size: u64,
    after: Option<&PageToken>,
) -> sea_orm::Select<task::Entity> {
    let col = match order.key {
        OrderKey::CreateTime => task::Column::CreateTime,
        OrderKey::DueTime => task::Column::DueSort,
        OrderKey::Priority => task::Column::Priority,
    };
    let mut q = task::Entity::find().filter(task::Column::UserId.eq(user));
    if let Some(s) = filters.status {
        q = q.filter(task::Column::Status.eq(s));
    }
    if let Some(p) = filters.priority {
        q = q.filter(task::Column::Priority.eq(p));
    }
    if let Some(t) = filters.due_after {
        q = q.filter(task::Column::DueTime.gte(t));
    }
    if let Some(t) = filters.due_before {
        q = q.filter(task::Column::DueTime.lt(t));
    }
    if let Some(tag) = &filters.tag {
        q = q.filter(
            task::Column::Id.in_subquery(
                Query::select()
                    .column(task_tag::Column::TaskId)
                    .from(task_tag::Entity)
                    .and_where(Expr::col(task_tag::Column::UserId).eq(user))
                    .and_where(Expr::col(task_tag::Column::Tag).eq(tag.as_str()))
                    .to_owned(),
            ),
        );
    }
    if let Some(t) = after {
        // `(key, id) > (?, ?)` (`<` descending): both ways the same and both NOT NULL (a
        // due time is sorted by `due_sort`, never NULL), so it seeks the user's index.
        q = q.filter(todo_service::paging::row_after(
            [(col, t.k.into()), (task::Column::Id, t.i.into())],
            order.desc,
        ));
    }
    let dir = if order.desc {
        sea_orm::Order::Desc
    } else {
        sea_orm::Order::Asc
    };
    q.order_by(col, dir.clone())
        .order_by(task::Column::Id, dir)
        .limit(page_size + 1)
}

/// The caller's row `m` while it is still at version `expected` (optimistic concurrency).
fn at_version(m: &task::Model, expected: i64) -> sea_orm::Condition {
    sea_orm::Condition::all()
        .add(task::Column::Id.eq(m.id))
        .add(task::Column::UserId.eq(m.user_id.as_str()))
        .add(task::Column::Version.eq(expected))
}

/// `ON CONFLICT (<column>) DO NOTHING`: an insert-if-absent.
fn do_nothing_on(column: impl sea_orm::sea_query::IntoIden) -> sea_orm::sea_query::OnConflict {
    sea_orm::sea_query::OnConflict::column(column)
        .do_nothing()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page after a token seeks the user's index of its order to the token's row value
    /// (the query plan of SQLite itself, on the migrated schema), for every order and
    /// direction, rather than walking the user's rows before the token.
    #[tokio::test]
    async fn list_pages_seek_their_index_to_the_token() {
        use sea_orm::{DbBackend, QueryTrait};
        let db = crate::db::connect("sqlite::memory:", 1)
            .await
            .expect("an in-memory database");
        let token = PageToken {
            k: 1_700_000_000_000_000,
            i: Uuid::now_v7(),
            q: String::new(),
        };
        for (key, index, column) in [
            (OrderKey::CreateTime, "ix_tasks_user_create", "create_time"),
            (OrderKey::DueTime, "ix_tasks_user_due", "due_sort"),
            (OrderKey::Priority, "ix_tasks_user_priority", "priority"),
        ] {
            for desc in [false, true] {
                let order = Order { key, desc };
                let s = list_query("u1", &Filters::default(), order, 50, Some(&token))
                    .build(DbBackend::Sqlite);
                let plan = todo_service::db::sqlite_plan(&db, s.clone())
                    .await
                    .expect("a plan");
                let cmp = if desc { "<" } else { ">" };
                assert!(
                    plan.contains(&format!("SEARCH tasks USING INDEX {index}"))
                        && plan.contains(&format!("user_id=? AND ({column},id){cmp}(?,?)"))
                        && !plan.contains("TEMP B-TREE"),
                    "{order:?}: {}: planned {plan}",
                    s.sql
                );
            }
        }
    }

    #[test]
    fn micros_round_trip_through_timestamps() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap();
        assert_eq!(todo_proto::from_timestamp(&from_micros(micros(t))), Some(t));
        let before_epoch = DateTime::from_timestamp(-5, 500_000_000).unwrap();
        assert_eq!(
            todo_proto::from_timestamp(&from_micros(micros(before_epoch))),
            Some(before_epoch)
        );
    }
}
