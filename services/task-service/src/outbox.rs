//! The transactional outbox and its relay.
//!
//! Mutations write their events into `outbox` in the same transaction as the change, so
//! an event exists exactly when its change committed. The relay, woken right after each
//! commit (and polling as a fallback), publishes rows in insertion order through the
//! sidecar in bulk, per topic, and deletes them only after Dapr acknowledged them. While
//! the sidecar or Kafka is down it backs off exponentially with jitter; nothing is lost.
//!
//! Order per user: a bulk call is split by the Kafka producer into several in-flight
//! requests, and when the broker is failing over, an early request can fail while a later
//! one succeeds. So a bulk is a set of per-user chains (each user's events on the topic, in
//! order), and when some entries fail, each chain is acknowledged only up to its first
//! failed entry ([`acknowledged`]): a user's later events stay in the outbox and go out
//! again after the failed one, so the newest event is the last one a consumer sees. (daprd
//! 1.18 answers a partly failed bulk over gRPC with an error for the whole call; then
//! nothing is acknowledged.) After any failure the relay turns careful: it publishes each
//! user's events one at a time (users in parallel), the next only after the previous was
//! acknowledged, until careful publishing has gone through for [`CAREFUL_HOLD`], counted
//! from its first success after the last failure; then it returns to bulk. The hold covers
//! a broker's return: for a while after Kafka restarts, partition leaders are still being
//! elected, and a bulk's early request can fail where a later one succeeds (CI saw a user's
//! events first delivered as `[1, 0, 2, …]` when the relay went back to bulk after the
//! first careful batch). It is not counted from the failure: careful publishes can wait
//! out an outage longer than the hold, and went back to bulk the moment Kafka returned
//! (docs/chaos.md, seed 11). What is
//! left is a bulk that partly fails while Kafka looked healthy (an oversized entry, a
//! leader moving mid-call): a consumer may then see a user's later event once before the
//! earlier one, and sees it again after it, so the newest is always last (see
//! docs/events.md, "Delivery guarantees").
//!
//! On PostgreSQL several replicas may run: a transaction-scoped advisory lock
//! lets one relay work at a time (others stand by), which keeps each user's order. On
//! SQLite the one process is the one relay. Either way a drain publishes up to
//! [`PIPELINE_BATCHES`] bulks one after another, reading the next while one publishes
//! ([`pending_rows`] says how the next is chosen on each database).

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBuilder};

use chrono::Utc;
use dapr_publisher::{OutgoingEvent, PublishError, Publisher};
use rand::Rng;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait,
};
use todo_service::db::InsertLater;
use tokio::sync::{Notify, watch};

use crate::{
    db::entities::{outbox, user_change},
    events::{self, PendingEvent},
};

/// Writes events into the outbox (call inside the mutation's transaction). In a group
/// commit's first run the rows are held back and inserted with the group's other events,
/// in the order they were written ([`todo_service::db::insert_later`]).
pub async fn write<C: InsertLater>(db: &C, events: Vec<PendingEvent>) -> Result<(), DbErr> {
    todo_service::db::insert_later(
        db,
        events.into_iter().map(|e| outbox::ActiveModel {
            seq: NotSet,
            event_id: Set(e.event_id),
            topic: Set(e.topic),
            event_type: Set(e.event_type.to_owned()),
            partition_key: Set(e.key),
            payload: Set(e.payload),
            created_at: Set(e.created_at),
        }),
    )
    .await
}

/// Writes the events of one task change, numbered in its owner's sequence of changes (call
/// inside the mutation's transaction). Taking the next number locks the owner's counter
/// until the commit, so one user's changes commit, and enter the outbox, in their order.
pub async fn write_change<C: InsertLater>(
    db: &C,
    topics: &events::Topics,
    mut change: events::Change<'_>,
) -> Result<(), DbErr> {
    change.user_seq = next_user_seq(db, &change.task.user_id).await?;
    write(db, events::task_changed(topics, change, Utc::now())).await
}

/// Takes the next number of `user`'s sequence of changes (1 for their first).
async fn next_user_seq<C: ConnectionTrait>(db: &C, user: &str) -> Result<u64, DbErr> {
    use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
    let row = user_change::Entity::insert(user_change::ActiveModel {
        user_id: Set(user.to_owned()),
        seq: Set(1),
    })
    .on_conflict(
        OnConflict::column(user_change::Column::UserId)
            .value(
                user_change::Column::Seq,
                Expr::col((user_change::Entity, user_change::Column::Seq)).add(1),
            )
            .to_owned(),
    )
    .exec_with_returning(db)
    .await?;
    Ok(u64::try_from(row.seq).unwrap_or_default())
}

/// The `user_seq` of `user`'s last change (0 before the first): where a watch that follows
/// a read starts.
pub async fn last_user_seq<C: ConnectionTrait>(db: &C, user: &str) -> Result<u64, DbErr> {
    Ok(user_change::Entity::find_by_id(user.to_owned())
        .one(db)
        .await?
        .map_or(0, |r| u64::try_from(r.seq).unwrap_or_default()))
}

/// How the relay paces itself.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows per iteration (and at most per bulk publish).
    pub batch_size: u64,
    /// Fallback poll interval when no commit woke the relay.
    pub poll_interval: Duration,
    /// Warn when the oldest unsent row is older than this.
    pub warn_age: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 200,
            poll_interval: Duration::from_secs(1),
            warn_age: Duration::from_secs(60),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Why one relay iteration stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] DbErr),
    #[error("publish: {0}")]
    Publish(#[from] PublishError),
    #[error("{failed} of {total} events were not acknowledged (first: {first})")]
    Partial {
        failed: usize,
        total: usize,
        first: String,
    },
}

/// Wakes the relay after a commit.
#[derive(Debug, Clone, Default)]
pub struct Wakeup(Arc<Notify>);

impl Wakeup {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// The rows of one bulk (in insertion order) that may be deleted when the entries whose
/// event ids are in `failed` were not acknowledged: each (topic, user) chain up to its first
/// failed entry, none of that user's events on the topic after it (pure).
pub fn acknowledged(batch: &[&outbox::Model], failed: &HashSet<String>) -> Vec<i64> {
    let mut broken: HashSet<(&str, &str)> = HashSet::new();
    let mut acked = Vec::with_capacity(batch.len());
    for r in batch {
        let chain = (r.topic.as_str(), r.partition_key.as_str());
        if broken.contains(&chain) {
            continue;
        }
        if failed.contains(&r.event_id.to_string()) {
            broken.insert(chain);
            continue;
        }
        acked.push(r.seq);
    }
    acked
}

/// The relay's pauses after consecutive failures: `min_backoff`, doubling up to
/// `max_backoff`, without end (each is then scaled by a random 0.5–1.0 so replicas do not
/// retry in step).
pub fn publish_backoff(config: &RelayConfig) -> backon::ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(config.min_backoff)
        .with_max_delay(config.max_backoff)
        .with_factor(2.0)
        .without_max_times()
        .build()
}

/// What one bulk publish came to: the rows to delete, and why the others were not.
struct Published {
    acked: Vec<i64>,
    failure: Option<RelayError>,
}

/// Advisory lock key of the relay ("todo-outbox-relay").
const RELAY_LOCK: i64 = 0x746f_646f_7265_6c61;

pub struct Relay {
    /// Writes (deletes of published rows); on PostgreSQL also the reads and the lease.
    db: DatabaseConnection,
    /// Where the relay reads pending rows on SQLite (the read pool: WAL readers never wait
    /// for, nor hold up, the one writer connection).
    reads: DatabaseConnection,
    publisher: Publisher,
    config: RelayConfig,
    wakeup: Wakeup,
    /// After a failure: publish per user, one event at a time (see the module docs).
    careful: std::sync::Mutex<Careful>,
}

/// Whether the relay publishes carefully (per user, one event at a time), and since when
/// careful publishing has gone through without a failure.
#[derive(Debug, Default)]
struct Careful {
    on: bool,
    /// When the first careful batch after the last failure went through.
    calm_since: Option<std::time::Instant>,
}

impl Careful {
    /// A publish failed: careful, and the calm starts again at the next success.
    fn failed(&mut self) {
        self.on = true;
        self.calm_since = None;
    }

    /// A careful batch went through at `now`: back to bulk once careful publishing has
    /// gone through for [`CAREFUL_HOLD`]. Counted from the first success, not from the
    /// failure: while Kafka is down, careful publishes may wait longer than the hold
    /// before they fail or go through, and the first one through is when Kafka is back,
    /// its partition leaders perhaps still settling. Says whether it went back to bulk.
    fn went_through(&mut self, now: std::time::Instant) -> bool {
        let since = *self.calm_since.get_or_insert(now);
        if self.on && now.duration_since(since) >= CAREFUL_HOLD {
            self.on = false;
            return true;
        }
        false
    }
}

/// How many users' event chains are published at once in careful mode.
const CAREFUL_CONCURRENCY: usize = 16;

/// How long careful publishing must go through, after the last failure, before the relay
/// goes back to bulk (see the module docs and [`Careful`]).
pub const CAREFUL_HOLD: Duration = Duration::from_secs(10);

/// How many full batches one drain publishes back to back, each read while the one before
/// it was being published (see [`pending_rows`] for how the next one is chosen).
const PIPELINE_BATCHES: usize = 8;

impl Relay {
    pub fn new(
        db: DatabaseConnection,
        publisher: Publisher,
        config: RelayConfig,
        wakeup: Wakeup,
    ) -> Self {
        Self {
            reads: db.clone(),
            db,
            publisher,
            config,
            wakeup,
            careful: std::sync::Mutex::default(),
        }
    }

    /// Reads pending rows from `reads` instead (SQLite: the read pool, see [`Relay`]).
    pub fn reading_from(mut self, reads: DatabaseConnection) -> Self {
        if self.db.get_database_backend() == DbBackend::Sqlite {
            self.reads = reads;
        }
        self
    }

    fn backoff(&self) -> backon::ExponentialBackoff {
        publish_backoff(&self.config)
    }

    /// Runs until `stop` turns true, finishing the batch in hand.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = self.backoff();
        let mut last_stats = tokio::time::Instant::now() - Duration::from_secs(60);
        loop {
            if *stop.borrow() {
                return;
            }
            if last_stats.elapsed() >= Duration::from_secs(5) {
                last_stats = tokio::time::Instant::now();
                self.report_depth().await;
            }
            let wait = match self.drain_once().await {
                Ok(n) if n as u64 >= self.config.batch_size => {
                    backoff = self.backoff();
                    continue;
                }
                Ok(_) => {
                    backoff = self.backoff();
                    None
                }
                Err(e) => {
                    metrics::counter!("outbox_publish_failures_total").increment(1);
                    let jitter = rand::rng().random_range(0.5..1.0);
                    let pause = backoff.next().unwrap_or(self.config.max_backoff);
                    let sleep = pause.mul_f64(jitter);
                    tracing::warn!(error = %e, retry_in = ?sleep, "outbox relay: publish failed; will retry");
                    Some(sleep)
                }
            };
            let sleep = wait.unwrap_or(self.config.poll_interval);
            tokio::select! {
                () = self.wakeup.0.notified(), if wait.is_none() => {}
                () = tokio::time::sleep(sleep) => {}
                _ = stop.changed() => {}
            }
        }
    }

    async fn report_depth(&self) {
        let depth = outbox::Entity::find().count(&self.reads).await.unwrap_or(0);
        let oldest = outbox::Entity::find()
            .order_by_asc(outbox::Column::Seq)
            .one(&self.reads)
            .await
            .ok()
            .flatten();
        metrics::gauge!("outbox_depth").set(depth as f64);
        let age = oldest
            .map(|r| (Utc::now().timestamp_micros() - r.created_at).max(0) as f64 / 1e6)
            .unwrap_or(0.0);
        metrics::gauge!("outbox_oldest_age_seconds").set(age);
        if age > self.config.warn_age.as_secs_f64() {
            tracing::warn!(
                depth,
                oldest_age_secs = age,
                "outbox: events are waiting longer than OUTBOX_WARN_AGE_SECS; is the sidecar or Kafka down?"
            );
        }
    }

    /// Publishes what is pending, up to [`PIPELINE_BATCHES`] bulks; returns how many rows
    /// it handled.
    pub async fn drain_once(&self) -> Result<usize, RelayError> {
        if self.db.get_database_backend() == DbBackend::Postgres {
            // The lease is the transaction: held for the whole drain, it does nothing else.
            // Reads and deletes go through the pool, each committed on its own, so a failed
            // statement cannot abort the lease's transaction and take the drain's earlier
            // deletes back with it (its rows would all be published again).
            let txn = self.db.begin().await?;
            let got = txn
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_try_advisory_xact_lock($1) AS locked",
                    [RELAY_LOCK.into()],
                ))
                .await?
                .map(|r| r.try_get::<bool>("", "locked"))
                .transpose()?
                .unwrap_or(false);
            if !got {
                return Ok(0); // another replica's relay is working
            }
            // (A pool of one connection has only the lease's: then through it, and a failed
            // statement takes that drain's deletes back.)
            let pool = self.db.get_postgres_connection_pool();
            let result = if pool.options().get_max_connections() > 1 {
                self.drain(&self.db, &self.db).await
            } else {
                self.drain(&txn, &txn).await
            };
            txn.commit().await?;
            result
        } else {
            // SQLite: never hold the single write lock while waiting on the network.
            self.drain(&self.reads, &self.db).await
        }
    }

    /// The next rows to publish: the oldest, or, while `in_flight` is being published and
    /// `undeleted` is being deleted, the oldest of the others (see [`pending_rows`]).
    async fn pending<C: ConnectionTrait>(
        &self,
        reads: &C,
        in_flight: &[outbox::Model],
        undeleted: &[i64],
    ) -> Result<Vec<outbox::Model>, DbErr> {
        let skip = if self.db.get_database_backend() == DbBackend::Sqlite {
            // One writer: rows commit in `seq` order, so "after the batch in flight" is exact.
            Skip::After(in_flight.last().map_or(0, |r| r.seq))
        } else {
            Skip::These(
                in_flight
                    .iter()
                    .map(|r| r.seq)
                    .chain(undeleted.iter().copied())
                    .collect(),
            )
        };
        pending_rows(reads, self.config.batch_size, &skip).await
    }

    /// Publishes pending rows in order, batch after batch (up to [`PIPELINE_BATCHES`]):
    /// while a full batch is being published, the next one is read and the rows of the one
    /// before it are deleted, so the next publish starts as soon as the previous one was
    /// acknowledged. Publishes never overlap: a user's events reach Kafka in their order.
    /// Every acknowledged row is deleted before it returns (the next drain reads from the
    /// oldest row). Returns how many rows it handled.
    async fn drain<R: ConnectionTrait, W: ConnectionTrait>(
        &self,
        reads: &R,
        writes: &W,
    ) -> Result<usize, RelayError> {
        let batches = PIPELINE_BATCHES;
        let mut rows = self.pending(reads, &[], &[]).await?;
        let mut handled = 0;
        // The acknowledged rows of the batch before, deleted while the next one publishes.
        let mut undeleted: Vec<i64> = Vec::new();
        for batch in 1..=batches {
            if rows.is_empty() {
                break;
            }
            if self.careful().on {
                delete_acknowledged(writes, &undeleted).await?;
                return Ok(handled + self.publish_carefully(writes, &rows).await?);
            }
            let full = rows.len() as u64 >= self.config.batch_size && batch < batches;
            let read_next = async {
                if full {
                    self.pending(reads, &rows, &undeleted).await
                } else {
                    Ok(Vec::new())
                }
            };
            let (published, next, deleted) = tokio::join!(
                self.publish(&rows),
                read_next,
                delete_acknowledged(writes, &undeleted)
            );
            let Published { acked, failure } = published;
            if failure.is_some() {
                self.failed();
            }
            if let Err(e) = deleted {
                // This bulk's rows stay too: deleting them while the bulk before stays would
                // publish its events again after these, and a user's newest event would not
                // be the last one seen. Both go out again, in order (at least once, as ever).
                return Err(e.into());
            }
            if let Some(e) = failure {
                delete_acknowledged(writes, &acked).await?;
                return Err(e);
            }
            undeleted = acked;
            handled += rows.len();
            rows = match next {
                Ok(next) => next,
                Err(e) => {
                    delete_acknowledged(writes, &undeleted).await?;
                    return Err(e.into());
                }
            };
        }
        delete_acknowledged(writes, &undeleted).await?;
        Ok(handled)
    }

    /// Publishes `rows` in bulk: which rows were acknowledged (each user's chain on a topic
    /// up to its first failed entry, see [`acknowledged`]) and the failure, if any. Deletes
    /// nothing: [`delete_acknowledged`] does, once their turn comes.
    async fn publish(&self, rows: &[outbox::Model]) -> Published {
        metrics::histogram!("outbox_relay_batch_size").record(rows.len() as f64);
        // One bulk call per topic, each in insertion order; the topics at the same time
        // (order is kept per user within a topic, and topics are independent).
        let mut by_topic: BTreeMap<&str, Vec<&outbox::Model>> = BTreeMap::new();
        for r in rows {
            by_topic.entry(r.topic.as_str()).or_default().push(r);
        }
        let publishing = by_topic.values().map(|batch| async move {
            let events: Vec<OutgoingEvent> = batch
                .iter()
                .map(|r| OutgoingEvent {
                    id: r.event_id.to_string(),
                    topic: r.topic.clone(),
                    event_type: r.event_type.clone(),
                    key: r.partition_key.clone(),
                    data: r.payload.clone(),
                })
                .collect();
            (batch, self.publisher.publish_bulk(&events).await)
        });
        let mut acked: Vec<i64> = Vec::with_capacity(rows.len());
        let mut failure: Option<RelayError> = None;
        for (batch, result) in futures::future::join_all(publishing).await {
            match result {
                Ok(outcome) if outcome.failed.is_empty() => {
                    acked.extend(batch.iter().map(|r| r.seq));
                }
                Ok(outcome) => {
                    let failed: HashSet<String> =
                        outcome.failed.iter().map(|(id, _)| id.clone()).collect();
                    acked.extend(acknowledged(batch, &failed));
                    failure = Some(RelayError::Partial {
                        failed: outcome.failed.len(),
                        total: batch.len(),
                        first: outcome.failed[0].1.clone(),
                    });
                }
                Err(e) => failure = Some(e.into()),
            }
        }
        Published { acked, failure }
    }

    /// Careful mode: each user's events one at a time, in order; users in parallel.
    async fn publish_carefully<C: ConnectionTrait>(
        &self,
        db: &C,
        rows: &[outbox::Model],
    ) -> Result<usize, RelayError> {
        let mut chains: BTreeMap<(String, String), Vec<(i64, OutgoingEvent)>> = BTreeMap::new();
        for r in rows {
            chains
                .entry((r.topic.clone(), r.partition_key.clone()))
                .or_default()
                .push((
                    r.seq,
                    OutgoingEvent {
                        id: r.event_id.to_string(),
                        topic: r.topic.clone(),
                        event_type: r.event_type.clone(),
                        key: r.partition_key.clone(),
                        data: r.payload.clone(),
                    },
                ));
        }
        let limit = Arc::new(tokio::sync::Semaphore::new(CAREFUL_CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        for chain in chains.into_values() {
            let publisher = self.publisher.clone();
            let limit = limit.clone();
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let mut acked = Vec::with_capacity(chain.len());
                for (seq, event) in chain {
                    if let Err(e) = publisher.publish(&event).await {
                        return (acked, Some(e));
                    }
                    acked.push(seq);
                }
                (acked, None)
            });
        }
        let mut results: Vec<(Vec<i64>, Option<PublishError>)> = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(r) => results.push(r),
                Err(e) => tracing::error!(error = %e, "outbox relay: a publish task failed"),
            }
        }
        let mut acked = Vec::new();
        let mut failure = None;
        for (a, e) in results {
            acked.extend(a);
            if failure.is_none() {
                failure = e;
            }
        }
        delete_acknowledged(db, &acked).await?;
        match failure {
            Some(e) => {
                self.failed();
                Err(e.into())
            }
            None => {
                if self.careful().went_through(std::time::Instant::now()) {
                    tracing::info!(
                        events = rows.len(),
                        "outbox relay: publishing works again; back to bulk"
                    );
                }
                Ok(rows.len())
            }
        }
    }

    fn careful(&self) -> std::sync::MutexGuard<'_, Careful> {
        self.careful.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A publish failed: careful from now on (see [`Careful`]).
    fn failed(&self) {
        self.careful().failed();
    }
}

/// Which rows a read of the outbox passes over: those of the batches a drain has in hand.
#[derive(Debug, Clone)]
pub enum Skip {
    /// Those up to this `seq` (SQLite, where rows commit in `seq` order).
    After(i64),
    /// These rows (PostgreSQL).
    These(Vec<i64>),
}

/// The oldest `limit` rows of the outbox, in `seq` order, but for those `skip` names.
///
/// On PostgreSQL a row's `seq` is taken at insert and the row becomes visible at commit, so
/// a row may appear after rows with higher numbers were read: a read "after the batch in
/// flight" would pass over it and publish its user's next event before it. So there the
/// next batch is read from the oldest row, passing over only the rows in hand: the same
/// rows a drain of its own would read once those were deleted. That keeps the order of
/// each user's task changes: they take their counter's row lock ([`write_change`]) until
/// their commit, so a user's later change is visible only once the earlier ones are, and a
/// read that finds it finds them too. (Rows written without that lock, the reminders the
/// scheduler fires, are ordered per reminder by the reminder's own row lock.)
pub async fn pending_rows<C: ConnectionTrait>(
    reads: &C,
    limit: u64,
    skip: &Skip,
) -> Result<Vec<outbox::Model>, DbErr> {
    let q = match skip {
        Skip::After(seq) => outbox::Entity::find().filter(outbox::Column::Seq.gt(*seq)),
        Skip::These(seqs) if seqs.is_empty() => outbox::Entity::find(),
        Skip::These(seqs) => {
            outbox::Entity::find().filter(outbox::Column::Seq.is_not_in(seqs.iter().copied()))
        }
    };
    q.order_by_asc(outbox::Column::Seq)
        .limit(limit)
        .all(reads)
        .await
}

/// Deletes the rows Dapr acknowledged (and counts them as published).
async fn delete_acknowledged<C: ConnectionTrait>(db: &C, acked: &[i64]) -> Result<(), DbErr> {
    if acked.is_empty() {
        return Ok(());
    }
    outbox::Entity::delete_many()
        .filter(outbox::Column::Seq.is_in(acked.iter().copied()))
        .exec(db)
        .await?;
    metrics::counter!("outbox_events_published_total").increment(acked.len() as u64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hold counts from the first careful success after the last failure: careful
    /// publishes that waited out a Kafka outage longer than the hold do not end it.
    #[test]
    fn careful_mode_ends_only_after_the_hold_of_going_through() {
        let t0 = std::time::Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut c = Careful::default();
        c.failed();
        // The first careful batch waited out a 15 s outage: Kafka has just come back.
        assert!(!c.went_through(at(15)));
        assert!(!c.went_through(at(24)));
        assert!(c.on);
        // A failure within the hold starts it again.
        c.failed();
        assert!(!c.went_through(at(26)));
        assert!(!c.went_through(at(35)));
        assert!(
            c.went_through(at(36)),
            "10 s of careful publishing went through"
        );
        assert!(!c.on);
        // Already in bulk: nothing to end.
        assert!(!c.went_through(at(60)));
    }

    fn row(seq: i64, topic: &str, user: &str) -> outbox::Model {
        outbox::Model {
            seq,
            event_id: uuid::Uuid::from_u128(seq as u128),
            topic: topic.to_owned(),
            event_type: "t".to_owned(),
            partition_key: user.to_owned(),
            payload: Vec::new(),
            created_at: 0,
        }
    }

    #[test]
    fn a_users_chain_stops_at_its_first_failure() {
        // (name, rows as (seq, topic, user), failed seqs, acknowledged seqs)
        type Case = (
            &'static str,
            Vec<(i64, &'static str, &'static str)>,
            Vec<i64>,
            Vec<i64>,
        );
        let cases: Vec<Case> = vec![
            (
                "nothing failed: everything",
                vec![(1, "t", "a"), (2, "t", "b"), (3, "t", "a")],
                vec![],
                vec![1, 2, 3],
            ),
            (
                "a's middle event failed: a's later ones wait, b goes on",
                vec![
                    (1, "t", "a"),
                    (2, "t", "a"),
                    (3, "t", "b"),
                    (4, "t", "a"),
                    (5, "t", "b"),
                ],
                vec![2],
                vec![1, 3, 5],
            ),
            (
                "a later event failed alone: the earlier one is acknowledged",
                vec![(1, "t", "a"), (2, "t", "a"), (3, "t", "a")],
                vec![3],
                vec![1, 2],
            ),
            (
                "first event failed: none of that user's",
                vec![(1, "t", "a"), (2, "t", "a"), (3, "t", "b")],
                vec![1],
                vec![3],
            ),
            (
                "chains are per topic too",
                vec![(1, "t", "a"), (2, "u", "a"), (3, "t", "a"), (4, "u", "a")],
                vec![1],
                vec![2, 4],
            ),
            (
                "everything failed",
                vec![(1, "t", "a"), (2, "t", "b")],
                vec![1, 2],
                vec![],
            ),
        ];
        for (name, rows, failed, want) in cases {
            let rows: Vec<outbox::Model> = rows.into_iter().map(|(s, t, u)| row(s, t, u)).collect();
            let batch: Vec<&outbox::Model> = rows.iter().collect();
            let failed: HashSet<String> = failed
                .into_iter()
                .map(|s| uuid::Uuid::from_u128(s as u128).to_string())
                .collect();
            assert_eq!(acknowledged(&batch, &failed), want, "{name}");
        }
    }

    #[test]
    fn backoff_keeps_its_bounds() {
        // (backon multiplies in f32: a few nanoseconds off exact doubling.)
        let got: Vec<u128> = publish_backoff(&RelayConfig::default())
            .take(9)
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(got, [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
    }
}
