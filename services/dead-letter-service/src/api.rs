//! `todo.deadletters.v1.DeadLetterService`: admins list, show, replay and discard.

use std::{collections::BTreeSet, sync::Arc};

use chrono::{DateTime, Utc};
use dapr_publisher::{OutgoingEvent, Publisher};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter, sea_query::Expr,
};
use todo_auth::into_caller;
use todo_proto::todo::deadletters::v1::{
    DeadLetter, DeadLetterStatus, DiscardDeadLetterRequest, GetDeadLetterRequest,
    ListDeadLettersRequest, ListDeadLettersResponse, ReplayDeadLetterRequest,
    dead_letter_service_server::DeadLetterService,
};
use todo_service::{
    db::status_of as db_status,
    paging::{self, Keyset, PageRequest},
};
use todo_topology::topics;
use tonic::{Request, Response, Status};

use crate::db::{
    dead_letter::{self, Column, Model},
    status,
};

/// Dead letters per page when the request says 0.
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// The most dead letters per page.
pub const MAX_PAGE_SIZE: u64 = 500;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct DeadLetterApi {
    /// Reads.
    db: DatabaseConnection,
    /// Writes (on SQLite: the one writer connection the intake shares).
    writer: DatabaseConnection,
    publisher: Publisher,
    admins: Arc<BTreeSet<String>>,
    /// `TOPIC_PREFIX`: a topic filter without it is read under it.
    prefix: String,
}

impl DeadLetterApi {
    pub fn new(
        db: DatabaseConnection,
        writer: DatabaseConnection,
        publisher: Publisher,
        admins: BTreeSet<String>,
        prefix: String,
    ) -> Self {
        Self {
            db,
            writer,
            publisher,
            admins: Arc::new(admins),
            prefix,
        }
    }

    /// The caller and the message, when the caller is an admin.
    fn admin<T>(&self, req: Request<T>) -> Result<(String, T), Status> {
        let (user, msg) = into_caller(req)?;
        if self.admins.contains(&user) {
            Ok((user, msg))
        } else {
            Err(Status::permission_denied(format!(
                "dead letters are for admins: {user:?} is not in DLQ_ADMINS"
            )))
        }
    }

    /// The original topic a filter names: `task-events`, `task-events-dlq` or the full
    /// `<prefix>.task-events` all name the deployment's `<prefix>.task-events`.
    fn topic(&self, given: &str) -> String {
        let given = given.trim();
        let given = given.strip_suffix("-dlq").unwrap_or(given);
        if self.prefix.is_empty() || given.starts_with(&format!("{}.", self.prefix)) {
            given.to_owned()
        } else {
            topics::namespaced(&self.prefix, given)
        }
    }

    /// The caller, when an admin, and the dead letter the request names (`id` reads its
    /// id field): how GetDeadLetter, ReplayDeadLetter and DiscardDeadLetter begin.
    async fn admin_and_letter<T>(
        &self,
        req: Request<T>,
        id: impl FnOnce(&T) -> &str,
    ) -> Result<(String, Model), Status> {
        let (user, msg) = self.admin(req)?;
        Ok((user, self.find(id(&msg)).await?))
    }

    async fn find(&self, id: &str) -> Result<Model, Status> {
        if id.trim().is_empty() {
            return Err(Status::invalid_argument("id: required"));
        }
        dead_letter::Entity::find_by_id(id.trim().to_owned())
            .one(&self.db)
            .await
            .map_err(db_status("reading the dead letter"))?
            .ok_or_else(|| Status::not_found(format!("dead letter {id:?}: no such id")))
    }

    /// The record after a change, read through the writer (which made it).
    async fn reread(&self, id: &str) -> Result<DeadLetter, Status> {
        dead_letter::Entity::find_by_id(id.to_owned())
            .one(&self.writer)
            .await
            .map_err(db_status("reading the dead letter"))?
            .map(|m| to_proto(m, true))
            .ok_or_else(|| Status::not_found(format!("dead letter {id:?}: no such id")))
    }
}

/// Dead letters per page: the default and the most.
const PAGE_SIZES: (u64, u64) = (DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);

fn timestamp(micros: i64) -> Option<prost_types::Timestamp> {
    DateTime::<Utc>::from_timestamp_micros(micros).map(todo_proto::to_timestamp)
}

/// The stored status as the API names it.
pub fn status_of(s: &str) -> DeadLetterStatus {
    match s {
        status::PENDING => DeadLetterStatus::Pending,
        status::REPLAYED => DeadLetterStatus::Replayed,
        status::DISCARDED => DeadLetterStatus::Discarded,
        _ => DeadLetterStatus::Unspecified,
    }
}

/// A record as the API shows it; the payload only when `full` (GetDeadLetter and changes).
pub fn to_proto(m: Model, full: bool) -> DeadLetter {
    let (payload, payload_json) = if full {
        (m.payload, m.payload_json)
    } else {
        (Vec::new(), String::new())
    };
    DeadLetter {
        status: status_of(&m.status) as i32,
        id: m.id,
        topic: m.topic,
        dead_letter_topic: m.dead_letter_topic,
        cloud_event_id: m.cloud_event_id,
        r#type: m.event_type,
        source: m.source,
        first_dead_lettered_at: timestamp(m.first_seen_at),
        last_dead_lettered_at: timestamp(m.last_seen_at),
        times_dead_lettered: m.times_dead_lettered,
        replay_count: m.replay_count,
        last_replayed_at: m.last_replayed_at.and_then(timestamp),
        replayed_by: m.replayed_by,
        discarded_at: m.discarded_at.and_then(timestamp),
        discarded_by: m.discarded_by,
        partition_key: m.partition_key,
        payload_json,
        decode_error: m.decode_error,
        payload,
        traceparent: m.traceparent,
    }
}

/// The order dead letters are listed in: last seen, newest first.
fn in_order() -> Keyset<Column> {
    Keyset::newest_first(Column::LastSeenAt, Column::Id)
}

/// The dead letters ListDeadLetters lists: of `topic` (any when `None`), of `types` (any
/// when empty), last seen in a time range (micros, start inclusive), in status `wanted`
/// (any but discarded when unspecified).
fn list_filter(
    topic: Option<String>,
    types: Vec<String>,
    since: Option<i64>,
    until: Option<i64>,
    wanted: DeadLetterStatus,
) -> Condition {
    let mut filter = Condition::all();
    if let Some(topic) = topic {
        filter = filter.add(Column::Topic.eq(topic));
    }
    if !types.is_empty() {
        filter = filter.add(Column::EventType.is_in(types));
    }
    if let Some(since) = since {
        filter = filter.add(Column::LastSeenAt.gte(since));
    }
    if let Some(until) = until {
        filter = filter.add(Column::LastSeenAt.lt(until));
    }
    filter.add(match wanted {
        DeadLetterStatus::Unspecified => Column::Status.ne(status::DISCARDED),
        DeadLetterStatus::Pending => Column::Status.eq(status::PENDING),
        DeadLetterStatus::Replayed => Column::Status.eq(status::REPLAYED),
        DeadLetterStatus::Discarded => Column::Status.eq(status::DISCARDED),
    })
}

#[tonic::async_trait]
impl DeadLetterService for DeadLetterApi {
    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let (_, req) = self.admin(request)?;
        let (since, until) = paging::time_range(req.since.as_ref(), req.until.as_ref())?;
        let wanted = DeadLetterStatus::try_from(req.status)
            .map_err(|_| Status::invalid_argument("status: not a DeadLetterStatus"))?;
        let topic = (!req.topic.trim().is_empty()).then(|| self.topic(&req.topic));
        let mut types: Vec<String> = req.types.iter().map(|t| t.trim().to_owned()).collect();
        types.retain(|t| !t.is_empty());
        let query = format!("{topic:?}|{types:?}|{since:?}|{until:?}|{}", req.status);
        let page = PageRequest::new(req.page_size, &req.page_token, PAGE_SIZES, query)?;
        // After a token seen before `until`, every later row is too (newest first): the
        // bound is left out so that the page seeks the index to the token, not to `until`.
        let until = until.filter(|u| page.token.as_ref().is_none_or(|t| t.at >= *u));
        let filter = list_filter(topic, types, since, until, wanted);
        let (rows, next_page_token) = in_order()
            .page(filter, page, &self.db, "listing dead letters")
            .await?;
        Ok(Response::new(ListDeadLettersResponse {
            dead_letters: rows.into_iter().map(|m| to_proto(m, false)).collect(),
            next_page_token,
        }))
    }

    async fn get_dead_letter(
        &self,
        request: Request<GetDeadLetterRequest>,
    ) -> Result<Response<DeadLetter>, Status> {
        let (_, m) = self.admin_and_letter(request, |r| &r.id).await?;
        Ok(Response::new(to_proto(m, true)))
    }

    async fn replay_dead_letter(
        &self,
        request: Request<ReplayDeadLetterRequest>,
    ) -> Result<Response<DeadLetter>, Status> {
        let (user, m) = self.admin_and_letter(request, |r| &r.id).await?;
        if m.status == status::DISCARDED {
            return Err(Status::failed_precondition(format!(
                "dead letter {:?} was discarded by {:?}: it is not replayed",
                m.id, m.discarded_by
            )));
        }
        // Marked replayed before the publish: were it marked after, a consumer that drops
        // it again at once could bring it back before the mark, and the mark would hide that.
        let now = Utc::now().timestamp_micros();
        let marked = mark_replayed(&self.writer, &m, &user, now)
            .await
            .map_err(db_status("marking the dead letter replayed"))?;
        if !marked {
            let current = self.reread(&m.id).await?;
            return Err(if current.status == DeadLetterStatus::Discarded as i32 {
                Status::failed_precondition(format!(
                    "dead letter {:?} was discarded meanwhile: it is not replayed",
                    m.id
                ))
            } else {
                Status::aborted(format!(
                    "dead letter {:?} was replayed by another request meanwhile (replay count \
                     {}); read it again before replaying it again",
                    m.id, current.replay_count
                ))
            });
        }
        let event = OutgoingEvent {
            id: m.cloud_event_id.clone(),
            topic: m.topic.clone(),
            event_type: m.event_type.clone(),
            key: m.partition_key.clone(),
            data: m.payload.clone(),
        };
        if let Err(e) = self.publisher.publish(&event).await {
            if e.outcome_unknown() {
                // It may have been published (daprd may still hand it to Kafka): the mark
                // stays, so the record never says "not replayed" of an event that was.
                tracing::warn!(error = %e, id = %m.id, topic = %m.topic, "replay's outcome unknown; it stays marked replayed");
                return Err(Status::deadline_exceeded(format!(
                    "replay: the sidecar did not answer ({e}); the event may have been \
                     published, so dead letter {:?} stays marked replayed (replay count {}). \
                     Check its topic's consumers before replaying it again",
                    m.id,
                    m.replay_count + 1
                )));
            }
            // The sidecar answered that it failed: put the record back as it was, nothing
            // was replayed.
            match undo_mark(&self.writer, &m, now).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(id = %m.id, "replay failed; the record changed since it was marked (discarded or replayed again), so it stays as that left it");
                }
                Err(undo) => {
                    tracing::error!(error = %undo, id = %m.id, "replay failed and its mark could not be undone");
                }
            }
            tracing::warn!(error = %e, id = %m.id, topic = %m.topic, "replay not published");
            return Err(if e.is_transient() {
                Status::unavailable(format!(
                    "replay: the sidecar or Kafka is unavailable; retry ({e})"
                ))
            } else {
                Status::failed_precondition(format!("replay: the sidecar refused it ({e})"))
            });
        }
        tracing::info!(
            id = %m.id,
            topic = %m.topic,
            event_type = %m.event_type,
            cloud_event_id = %m.cloud_event_id,
            by = %user,
            "dead letter replayed to its original topic"
        );
        metrics::counter!("dead_letters_replayed_total", "topic" => m.topic, "type" => m.event_type)
            .increment(1);
        Ok(Response::new(self.reread(&m.id).await?))
    }

    async fn discard_dead_letter(
        &self,
        request: Request<DiscardDeadLetterRequest>,
    ) -> Result<Response<DeadLetter>, Status> {
        let (user, m) = self.admin_and_letter(request, |r| &r.id).await?;
        if m.status != status::DISCARDED {
            dead_letter::Entity::update_many()
                .col_expr(Column::Status, Expr::value(status::DISCARDED))
                .col_expr(
                    Column::DiscardedAt,
                    Expr::value(Utc::now().timestamp_micros()),
                )
                .col_expr(Column::DiscardedBy, Expr::value(user.clone()))
                .filter(Column::Id.eq(m.id.clone()))
                .exec(&self.writer)
                .await
                .map_err(db_status("discarding the dead letter"))?;
            tracing::info!(id = %m.id, topic = %m.topic, by = %user, "dead letter discarded");
            metrics::counter!("dead_letters_discarded_total", "topic" => m.topic).increment(1);
        }
        Ok(Response::new(self.reread(&m.id).await?))
    }
}

/// Marks the dead letter read as `m` replayed by `user` at `now`, unless it was discarded
/// or replayed since it was read (compare-and-set on its replay count): two replays of one
/// record at once publish it once. Whether it was marked.
async fn mark_replayed<C: sea_orm::ConnectionTrait>(
    db: &C,
    m: &Model,
    user: &str,
    now: i64,
) -> Result<bool, sea_orm::DbErr> {
    let marked = dead_letter::Entity::update_many()
        .col_expr(Column::Status, Expr::value(status::REPLAYED))
        .col_expr(Column::ReplayCount, Expr::value(m.replay_count + 1))
        .col_expr(Column::LastReplayedAt, Expr::value(now))
        .col_expr(Column::ReplayedBy, Expr::value(user.to_owned()))
        .filter(Column::Id.eq(m.id.clone()))
        .filter(Column::Status.ne(status::DISCARDED))
        .filter(Column::ReplayCount.eq(m.replay_count))
        .exec(db)
        .await?;
    Ok(marked.rows_affected == 1)
}

/// Puts the dead letter back as it was read (`m`) after a replay marked at `now` failed to
/// publish, unless it changed since the mark (a discard, another replay): that change
/// stands. Whether it was put back.
async fn undo_mark<C: sea_orm::ConnectionTrait>(
    db: &C,
    m: &Model,
    now: i64,
) -> Result<bool, sea_orm::DbErr> {
    let undone = dead_letter::Entity::update_many()
        .col_expr(Column::Status, Expr::value(m.status.clone()))
        .col_expr(Column::ReplayCount, Expr::value(m.replay_count))
        .col_expr(Column::LastReplayedAt, Expr::value(m.last_replayed_at))
        .col_expr(Column::ReplayedBy, Expr::value(m.replayed_by.clone()))
        .filter(Column::Id.eq(m.id.clone()))
        .filter(Column::Status.eq(status::REPLAYED))
        .filter(Column::ReplayCount.eq(m.replay_count + 1))
        .filter(Column::LastReplayedAt.eq(now))
        .exec(db)
        .await?;
    Ok(undone.rows_affected == 1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn stored(db: &DatabaseConnection) -> Model {
        use sea_orm::{ActiveModelTrait, IntoActiveModel};
        let id = uuid::Uuid::now_v7().to_string();
        let m = Model {
            cloud_event_id: format!("ce-{id}"),
            id,
            topic: "t.task-events".into(),
            dead_letter_topic: "t.task-events-dlq".into(),
            event_type: "todo.task.created.v1".into(),
            source: "task-service".into(),
            traceparent: String::new(),
            partition_key: "alice".into(),
            payload: vec![1, 2, 3],
            payload_json: String::new(),
            decode_error: String::new(),
            first_seen_at: 1,
            last_seen_at: 1,
            times_dead_lettered: 1,
            status: status::PENDING.into(),
            replay_count: 0,
            last_replayed_at: None,
            replayed_by: String::new(),
            discarded_at: None,
            discarded_by: String::new(),
        };
        m.clone().into_active_model().insert(db).await.unwrap();
        m
    }

    async fn reread(db: &DatabaseConnection, id: &str) -> Model {
        dead_letter::Entity::find_by_id(id.to_owned())
            .one(db)
            .await
            .unwrap()
            .unwrap()
    }

    /// Regression: two replays of one record read before either marked it both marked it
    /// (the mark only required "not discarded") and both published it.
    #[tokio::test]
    async fn two_replays_of_one_read_mark_it_once() {
        let db = crate::db::connect("sqlite::memory:", 1).await.unwrap();
        let m = stored(&db).await;
        assert!(mark_replayed(&db, &m, "ops-a", 10).await.unwrap());
        assert!(!mark_replayed(&db, &m, "ops-b", 11).await.unwrap());
        let now = reread(&db, &m.id).await;
        assert_eq!((now.replay_count, now.replayed_by.as_str()), (1, "ops-a"));
        // Replaying again from a fresh read is still allowed.
        assert!(mark_replayed(&db, &now, "ops-b", 12).await.unwrap());
        assert_eq!(reread(&db, &m.id).await.replay_count, 2);
    }

    /// Regression: a replay whose publish failed put back the record as it had read it,
    /// over a discard made while it was publishing (the record came back `pending`).
    #[tokio::test]
    async fn a_failed_replay_does_not_undo_a_discard_made_meanwhile() {
        use sea_orm::ActiveValue::Set;
        let db = crate::db::connect("sqlite::memory:", 1).await.unwrap();
        let m = stored(&db).await;
        assert!(mark_replayed(&db, &m, "ops-a", 10).await.unwrap());
        dead_letter::Entity::update_many()
            .set(dead_letter::ActiveModel {
                status: Set(status::DISCARDED.into()),
                discarded_by: Set("ops-b".into()),
                ..Default::default()
            })
            .filter(Column::Id.eq(m.id.clone()))
            .exec(&db)
            .await
            .unwrap();
        assert!(!undo_mark(&db, &m, 10).await.unwrap());
        assert_eq!(reread(&db, &m.id).await.status, status::DISCARDED);

        // With nothing in between, the failed replay is undone.
        let other = stored(&db).await;
        assert!(mark_replayed(&db, &other, "ops-a", 20).await.unwrap());
        assert!(undo_mark(&db, &other, 20).await.unwrap());
        assert_eq!(reread(&db, &other.id).await, other);
    }

    /// A page after a token seeks the index of the listing's order to the token's row
    /// value, newest first, instead of walking every later dead letter: with no filters,
    /// with a status, and in a time range that began before the token (whose end the
    /// token implies, so it is left out as the RPC leaves it out).
    #[tokio::test]
    async fn dead_letter_pages_seek_their_index_to_the_token() {
        use sea_orm::{DbBackend, QueryTrait};
        let db = crate::db::connect("sqlite::memory:", 1).await.unwrap();
        let t = paging::After {
            at: 1_700_000_000_000_000,
            id: "d1".to_owned(),
            q: String::new(),
        };
        for (what, filter) in [
            (
                "unfiltered",
                list_filter(None, vec![], None, None, DeadLetterStatus::Unspecified),
            ),
            (
                "pending of a topic",
                list_filter(
                    Some("todo.tasks".to_owned()),
                    vec!["todo.task.created.v1".to_owned()],
                    None,
                    None,
                    DeadLetterStatus::Pending,
                ),
            ),
            (
                "since a time",
                list_filter(
                    None,
                    vec![],
                    Some(t.at - 1_000_000),
                    None,
                    DeadLetterStatus::Unspecified,
                ),
            ),
        ] {
            let s = in_order()
                .select(filter, Some(&t), 50)
                .build(DbBackend::Sqlite);
            let p = todo_service::db::sqlite_plan(&db, s.clone()).await.unwrap();
            assert!(
                p.starts_with("SEARCH dead_letters USING INDEX ix_dead_letters_seen (")
                    && p.contains("(last_seen_at,id)<(?,?)")
                    && !p.contains("TEMP B-TREE"),
                "{what}: {}: planned {p}",
                s.sql
            );
        }
    }

    #[test]
    fn statuses_map_both_ways() {
        for (s, want) in [
            (status::PENDING, DeadLetterStatus::Pending),
            (status::REPLAYED, DeadLetterStatus::Replayed),
            (status::DISCARDED, DeadLetterStatus::Discarded),
            ("??", DeadLetterStatus::Unspecified),
        ] {
            assert_eq!(status_of(s), want);
        }
    }
}
