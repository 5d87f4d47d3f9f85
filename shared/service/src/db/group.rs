//! Group commit: concurrent write transactions share one database transaction.
//!
//! A [`GroupWriter`] runs writes on lanes. Each lane takes the writes that queued while
//! its previous group ran, runs them in one transaction and commits once for all of them;
//! every caller gets its answer only after that commit. The writes first run straight in
//! the transaction, with no savepoint: on SQLite every statement is a round trip to the
//! connection's thread, and a savepoint and its release would be a third of a task
//! write's statements. When one of them fails (a constraint, a lost optimistic check, any
//! error of its own), the transaction is rolled back and the group runs again with each
//! write inside a savepoint: the failing write rolls back to its savepoint and fails
//! alone; the others still commit. So a write may run twice, and must not act outside its
//! transaction. A write that arrives at an idle lane runs at once, in a transaction of its
//! own: group commit costs nothing when there is nothing to group.
//!
//! A group's first run may also hold inserts back ([`insert_later`]): the rows a write
//! asks to insert later are kept, per table in the order they came, and inserted after the
//! group's last write, one statement per table for the whole group, before the commit. So N
//! task creations cost one insert of N tasks and one of their events instead of N of each.
//! Those statements go to the database in one call, also for a lone write (each call is a
//! round trip: to sqlx's connection thread on SQLite, to the server on PostgreSQL): on
//! SQLite as one text of several statements, on PostgreSQL as one statement whose earlier
//! inserts are data-modifying CTEs. Only rows nothing in the group reads back may
//! be held (a new task's row, its tags, its events); when the held inserts fail, the group
//! runs again with savepoints, where every insert runs at once, so the failure is still
//! the write's own.
//!
//! Writes name a key (the user); a key always goes to the same lane, and a group runs its
//! writes sorted by key (a user's own in the order they came). SQLite has one writer, so
//! one lane. PostgreSQL gets several: a group holds the row locks of its writes until it
//! commits, and two groups that took two users in the opposite order would deadlock. One
//! lane per user rules that out inside a process; the sort rules it out between replicas
//! (every group locks users in the same order).

use std::{
    any::Any,
    hash::BuildHasher,
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use futures::{FutureExt, future::BoxFuture};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, ExecResult, Iterable, QueryResult, QueryTrait, RuntimeErr, Statement,
    TransactionTrait,
    sea_query::{CommonTableExpression, InsertStatement, WithClause},
};
use tokio::sync::{mpsc, oneshot};

/// How many writes at most share one commit. (On PostgreSQL each savepoint that writes is
/// a subtransaction, and a backend caches 64 of them: do not raise it there.)
pub const MAX_GROUP: usize = 64;

/// How many writes may wait for a lane before callers wait to queue.
const LANE_QUEUE: usize = 1024;

/// Runs writes in shared transactions (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct GroupWriter {
    lanes: Arc<[mpsc::Sender<Box<dyn Work>>]>,
    hasher: std::hash::RandomState,
    stats: Arc<Stats>,
}

/// What the lanes did since the writer started.
#[derive(Debug, Default)]
struct Stats {
    groups: AtomicU64,
    writes: AtomicU64,
    /// Groups run again with savepoints because a write failed.
    regrouped: AtomicU64,
    /// Rows inserted late, at the end of their group's first run.
    held: AtomicU64,
}

impl std::fmt::Debug for GroupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupWriter")
            .field("lanes", &self.lanes.len())
            .finish()
    }
}

impl GroupWriter {
    /// Starts `lanes` lanes (at least one) writing through `db`, each grouping up to
    /// `max_group` writes per commit. Must be called inside a Tokio runtime; the lanes end
    /// when the last clone of the writer is dropped, after the writes already queued.
    pub fn new(db: DatabaseConnection, lanes: usize, max_group: usize) -> Self {
        let stats = Arc::new(Stats::default());
        let lanes: Arc<[_]> = (0..lanes.max(1))
            .map(|lane| {
                let (tx, rx) = mpsc::channel(LANE_QUEUE);
                tokio::spawn(run_lane(
                    db.clone(),
                    rx,
                    max_group.max(1),
                    lane,
                    stats.clone(),
                ));
                tx
            })
            .collect();
        Self {
            lanes,
            hasher: std::hash::RandomState::new(),
            stats,
        }
    }

    /// How many transactions the lanes ran, and how many writes they held, so far.
    pub fn groups_and_writes(&self) -> (u64, u64) {
        (
            self.stats.groups.load(Ordering::Relaxed),
            self.stats.writes.load(Ordering::Relaxed),
        )
    }

    /// How many groups (a lone write that held rows too) ran a second time, each write in a
    /// savepoint, because one of their writes or their held inserts failed.
    pub fn regrouped(&self) -> u64 {
        self.stats.regrouped.load(Ordering::Relaxed)
    }

    /// How many rows were held back and inserted at the end of their group.
    pub fn held_rows(&self) -> u64 {
        self.stats.held.load(Ordering::Relaxed)
    }

    /// How many lanes write at once.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// Runs `work` in a transaction shared with the other writes queued at the same time,
    /// and answers once that transaction committed. When `work` fails, its own changes are
    /// rolled back and its error is the answer; when the shared commit fails, every write of
    /// the group gets that error (usually nothing of theirs is written, but a commit whose
    /// acknowledgement was lost may have gone through, so the after-commit step of each
    /// write whose own work succeeded still runs). `work` may run twice (the
    /// first run rolled back, see the module docs): it must not act outside `txn`.
    pub async fn write<T, E, F>(&self, key: &str, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbErr> + Send + 'static,
        F: for<'t> Fn(&'t GroupTxn<'t>) -> BoxFuture<'t, Result<T, E>> + Send + Sync + 'static,
    {
        self.write_then(key, work, |_: &T| {}).await
    }

    /// [`write`](Self::write), and `committed` with the write's result once it committed,
    /// before the answer: run by the lane, so also when the caller went away meanwhile (a
    /// cancelled request), for what must follow every commit (waking whoever reads what it
    /// wrote). Not run when the write failed or its group rolled back. Also run when the
    /// write succeeded and then its group's COMMIT failed: the outcome of a commit whose
    /// acknowledgement was lost is unknown (PostgreSQL may have committed it), so the step
    /// must be harmless when nothing was committed (a wake-up that finds nothing).
    pub async fn write_then<T, E, F, A>(&self, key: &str, work: F, committed: A) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbErr> + Send + 'static,
        F: for<'t> Fn(&'t GroupTxn<'t>) -> BoxFuture<'t, Result<T, E>> + Send + Sync + 'static,
        A: FnOnce(&T) + Send + 'static,
    {
        let lane = &self.lanes[(self.hasher.hash_one(key) % self.lanes.len() as u64) as usize];
        let (reply, answer) = oneshot::channel();
        let key = key.to_owned();
        lane.send(Box::new(Job {
            key,
            work,
            result: None,
            committed: Box::new(committed),
            reply,
        }))
        .await
        .map_err(|_| E::from(stopped()))?;
        answer.await.unwrap_or_else(|_| Err(E::from(stopped())))
    }
}

fn stopped() -> DbErr {
    DbErr::Conn(RuntimeErr::Internal(
        "the database writer stopped".to_owned(),
    ))
}

/// The shared transaction as one write sees it: it runs statements on the group's
/// transaction (or on the write's savepoint), and in a group's first run it may hold
/// inserts back to the group's end ([`insert_later`]).
pub struct GroupTxn<'t> {
    txn: &'t DatabaseTransaction,
    later: Option<&'t Later>,
}

impl std::fmt::Debug for GroupTxn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupTxn")
            .field("holds_inserts", &self.later.is_some())
            .finish()
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for GroupTxn<'_> {
    fn get_database_backend(&self) -> DbBackend {
        self.txn.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.txn.execute_raw(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.txn.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.txn.query_one_raw(stmt).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.txn.query_all_raw(stmt).await
    }
}

/// A connection that may hold inserts back: [`GroupTxn`] in a group's first run; anything
/// else inserts at once.
pub trait InsertLater: ConnectionTrait {
    /// Where held inserts wait, when this connection holds them.
    #[doc(hidden)]
    fn later(&self) -> Option<&Later> {
        None
    }
}

impl InsertLater for GroupTxn<'_> {
    fn later(&self) -> Option<&Later> {
        self.later
    }
}

impl InsertLater for DatabaseTransaction {}

impl InsertLater for DatabaseConnection {}

/// Inserts `rows` into their table, or, in a group's first run, holds them back to be
/// inserted with the other writes' rows of that table after the group's last write. Only
/// for rows nothing reads back before the commit, and whose failure may surface late: a
/// held insert that fails makes the whole group run again with savepoints, each insert at
/// once. Rows of one table keep their order (a user's events their sequence); tables are
/// inserted in the order the group first held a row of them (a task before its tags). Rows
/// of one table must set the same columns (else the group runs again without holding).
/// Held rows cannot be taken back: a write that holds rows and then recovers from an error
/// of its own still has them inserted, so hold only once the write will succeed or fail as
/// a whole; and a write that holds a table's rows must not insert that table's rows at once.
pub async fn insert_later<A, C>(db: &C, rows: impl IntoIterator<Item = A>) -> Result<(), DbErr>
where
    A: ActiveModelTrait + Send + 'static,
    C: InsertLater,
{
    match db.later() {
        Some(later) => {
            later.hold(rows);
            Ok(())
        }
        None => super::insert_all(db, rows).await,
    }
}

/// Inserts held back by a group's first run, per table in the order first held.
#[derive(Default)]
pub struct Later {
    tables: Mutex<Vec<Box<dyn HeldRows>>>,
    /// Rows could not be held (not reached): the group must run again without holding.
    lost: std::sync::atomic::AtomicBool,
}

impl Later {
    fn hold<A: ActiveModelTrait + Send + 'static>(&self, rows: impl IntoIterator<Item = A>) {
        // Collected before the lock: the caller's iterator runs no code under it.
        let rows: Vec<A> = rows.into_iter().collect();
        if rows.is_empty() {
            return;
        }
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        let i = match tables.iter_mut().position(|t| t.as_any().is::<Held<A>>()) {
            Some(i) => i,
            None => {
                tables.push(Box::new(Held::<A> {
                    rows: Vec::new(),
                    mixed: false,
                }));
                tables.len() - 1
            }
        };
        match tables[i].as_any().downcast_mut::<Held<A>>() {
            Some(held) => held.extend(rows),
            // (Found by its type just above: not reached.)
            None => self.lost.store(true, Ordering::Relaxed),
        }
    }

    /// Whether any row is held.
    fn holds_any(&self) -> bool {
        !self
            .tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Inserts everything held, table by table, and says how many rows; the first error
    /// stops it. Each call is a round trip (to sqlx's connection thread on SQLite, to the
    /// server on PostgreSQL), so the tables' inserts go in as few calls as the parameter
    /// limit allows: on SQLite as several statements in one text, on PostgreSQL as one
    /// statement whose earlier inserts are data-modifying CTEs (`WITH held_0 AS (INSERT …)
    /// INSERT …`; a later table's foreign key to an earlier one's rows is checked at the
    /// statement's end, when both are in).
    async fn insert(self, txn: &DatabaseTransaction) -> Result<u64, DbErr> {
        if self.lost.load(Ordering::Relaxed) {
            return Err(DbErr::Custom("held rows were lost".to_owned()));
        }
        let backend = txn.get_database_backend();
        let tables = self.tables.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut rows = 0;
        let mut inserts = Vec::new();
        for held in tables {
            rows += held.statements(&mut inserts)?;
        }
        for call in few_calls(backend, inserts) {
            txn.execute_raw(call).await?;
        }
        Ok(rows)
    }
}

/// `inserts` (each with its count of bind parameters) in as few calls as [`MAX_PARAMETERS`]
/// allows, in order: on SQLite consecutive statements joined into one text (SQLite runs a
/// text's statements one after another, binding the values in order); on PostgreSQL, which
/// takes one statement per call, consecutive inserts as one `WITH` statement.
fn few_calls(backend: DbBackend, inserts: Vec<(InsertStatement, usize)>) -> Vec<Statement> {
    let mut runs: Vec<(Vec<InsertStatement>, usize)> = Vec::new();
    for (insert, params) in inserts {
        match runs.last_mut() {
            Some((run, n)) if *n + params <= MAX_PARAMETERS => {
                run.push(insert);
                *n += params;
            }
            _ => runs.push((vec![insert], params)),
        }
    }
    runs.into_iter()
        .filter_map(|(mut run, _)| {
            let last = run.pop()?;
            Some(match backend {
                _ if run.is_empty() => backend.build(&last),
                DbBackend::Postgres => {
                    let mut with = WithClause::new();
                    for (i, earlier) in run.into_iter().enumerate() {
                        with.cte(
                            CommonTableExpression::new()
                                .query(earlier)
                                .table_name(format!("held_{i}"))
                                .to_owned(),
                        );
                    }
                    backend.build(&with.query(last))
                }
                _ => {
                    let mut sql = String::new();
                    let mut values = Vec::new();
                    for s in run.iter().chain([&last]) {
                        let s = backend.build(s);
                        if !sql.is_empty() {
                            sql.push_str(";\n");
                        }
                        sql.push_str(&s.sql);
                        values.extend(s.values.map(|v| v.0).unwrap_or_default());
                    }
                    Statement::from_sql_and_values(backend, sql, values)
                }
            })
        })
        .collect()
}

/// Bind parameters per statement at most: under SQLite's 32,766 and PostgreSQL's 65,535.
const MAX_PARAMETERS: usize = 30_000;

/// The held rows of one table.
trait HeldRows: Send {
    fn as_any(&mut self) -> &mut dyn Any;
    /// Adds the inserts of the rows, in order, each with its count of bind parameters, to
    /// `into`; says how many rows.
    fn statements(self: Box<Self>, into: &mut Vec<(InsertStatement, usize)>) -> Result<u64, DbErr>;
}

/// The held rows of one table. They must all set the same columns: in one multi-row
/// insert, a column some row leaves unset would get NULL rather than its default.
struct Held<A> {
    rows: Vec<A>,
    /// A row set other columns than the first: the group runs again without holding.
    mixed: bool,
}

impl<A: ActiveModelTrait> Held<A> {
    fn extend(&mut self, rows: Vec<A>) {
        if let Some(first) = self.rows.first().or(rows.first()) {
            let same = |r: &A| {
                <<A::Entity as EntityTrait>::Column as Iterable>::iter()
                    .all(|c| r.is_not_set(c) == first.is_not_set(c))
            };
            self.mixed |= !rows.iter().all(same);
        }
        self.rows.extend(rows);
    }
}

impl<A: ActiveModelTrait + Send + 'static> HeldRows for Held<A> {
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }

    fn statements(self: Box<Self>, into: &mut Vec<(InsertStatement, usize)>) -> Result<u64, DbErr> {
        if self.mixed {
            return Err(DbErr::Custom(format!(
                "held rows of {} set different columns",
                sea_orm::EntityName::table_name(&<A::Entity as Default>::default())
            )));
        }
        let count = self.rows.len() as u64;
        let mut rows = self.rows;
        // Every row sets the same columns (checked as they came): the first's count.
        let columns = rows.first().map_or(1, |r| {
            <<A::Entity as EntityTrait>::Column as Iterable>::iter()
                .filter(|c| !r.is_not_set(*c))
                .count()
                .max(1)
        });
        let per_statement = (MAX_PARAMETERS / columns).max(1);
        while !rows.is_empty() {
            let rest = rows.split_off(rows.len().min(per_statement));
            let params = rows.len() * columns;
            into.push((
                <A::Entity as EntityTrait>::insert_many(rows).into_query(),
                params,
            ));
            rows = rest;
        }
        Ok(count)
    }
}

/// How a write runs in an attempt of its group.
#[derive(Clone, Copy)]
enum Mode<'a> {
    /// Straight in the shared transaction, holding inserts back in `Later` when given.
    Straight(Option<&'a Later>),
    /// In a savepoint of its own, every insert at once.
    Savepoint,
}

/// One queued write, with its caller's answer channel (type-erased for the lane).
trait Work: Send {
    /// The key the write was queued under (its user).
    fn key(&self) -> &str;
    /// Runs the write on `txn` (as `mode` says) and keeps its result for the answer,
    /// replacing that of an earlier attempt.
    fn run<'a>(&'a mut self, txn: &'a DatabaseTransaction, mode: Mode<'a>) -> BoxFuture<'a, Ran>;
    /// Answers the caller (see [`Ended`]).
    fn finish(self: Box<Self>, ended: &Ended);
}

/// How a write's attempt went.
struct Ran {
    /// The write succeeded.
    ok: bool,
    /// The shared transaction can still take the next write.
    usable: bool,
}

struct Job<F, T, E> {
    key: String,
    work: F,
    result: Option<Result<T, E>>,
    /// Run with the result once it committed.
    committed: Box<dyn FnOnce(&T) + Send>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<F, T, E> Work for Job<F, T, E>
where
    T: Send + 'static,
    E: From<DbErr> + Send + 'static,
    F: for<'t> Fn(&'t GroupTxn<'t>) -> BoxFuture<'t, Result<T, E>> + Send + Sync + 'static,
{
    fn key(&self) -> &str {
        &self.key
    }

    fn run<'a>(&'a mut self, txn: &'a DatabaseTransaction, mode: Mode<'a>) -> BoxFuture<'a, Ran> {
        Box::pin(async move {
            let work = &self.work;
            let (result, usable) = match mode {
                Mode::Straight(later) => {
                    let txn = GroupTxn { txn, later };
                    (guarded(async { work(&txn).await }).await, true)
                }
                Mode::Savepoint => match txn.begin().await {
                    Err(e) => (Err(E::from(e)), false),
                    Ok(savepoint) => match guarded(async {
                        work(&GroupTxn {
                            txn: &savepoint,
                            later: None,
                        })
                        .await
                    })
                    .await
                    {
                        Ok(v) => match savepoint.commit().await {
                            Ok(()) => (Ok(v), true),
                            Err(e) => (Err(E::from(e)), false),
                        },
                        Err(e) => {
                            let usable = savepoint.rollback().await.is_ok();
                            (Err(e), usable)
                        }
                    },
                },
            };
            let ok = result.is_ok();
            self.result = Some(result);
            Ran { ok, usable }
        })
    }

    fn finish(self: Box<Self>, ended: &Ended) {
        let Self {
            result,
            committed,
            reply,
            ..
        } = *self;
        let own = result.unwrap_or_else(|| Err(E::from(stopped())));
        let step = |v: &T| {
            if std::panic::catch_unwind(AssertUnwindSafe(|| committed(v))).is_err() {
                tracing::error!("a write's after-commit step panicked");
            }
        };
        let answer = match ended {
            // A write that failed rolled back alone; its error stands (also when it came
            // from a sibling's change: that change is committed).
            Ended::Committed => {
                if let Ok(v) = &own {
                    step(v);
                }
                own
            }
            Ended::NothingToCommit => own,
            // A write's own failure may have come from a sibling's change that is now gone
            // (a conflict, a duplicate key): the group's error is every write's answer.
            Ended::Failed(e) => Err(E::from(e.clone())),
            // The write may be committed after all (a lost acknowledgement): its step runs,
            // so that whoever reads what it wrote is not left to a poll.
            Ended::CommitFailed(e) => {
                if let Ok(v) = &own {
                    step(v);
                }
                Err(E::from(e.clone()))
            }
        };
        // The caller may have gone (cancelled); what committed stays committed.
        let _ = reply.send(answer);
    }
}

/// A write (called inside the future, so a panic in its synchronous part is caught too),
/// with a panic turned into an error of that write alone.
async fn guarded<T, E: From<DbErr>>(
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            Err(E::from(DbErr::Custom(
                "a write panicked; it was rolled back".to_owned(),
            )))
        })
}

async fn run_lane(
    db: DatabaseConnection,
    mut queue: mpsc::Receiver<Box<dyn Work>>,
    max_group: usize,
    lane: usize,
    stats: Arc<Stats>,
) {
    let lane = lane.to_string();
    let mut group: Vec<Box<dyn Work>> = Vec::with_capacity(max_group);
    while queue.recv_many(&mut group, max_group).await > 0 {
        metrics::histogram!("db_group_commit_writes", "lane" => lane.clone())
            .record(group.len() as f64);
        stats.groups.fetch_add(1, Ordering::Relaxed);
        stats
            .writes
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        // A panic here (not in a write: those are caught) fails this group's callers
        // (their answer channels drop: "the database writer stopped"), not the lane.
        let ran = AssertUnwindSafe(run_group(&db, std::mem::take(&mut group), &stats, &lane))
            .catch_unwind()
            .await;
        if ran.is_err() {
            tracing::error!(lane = %lane, "a write group panicked; its writes were not saved");
        }
    }
}

/// How a group's transaction ended, for the answers.
enum Ended {
    Committed,
    /// Every write failed on its own (each rolled back before the next ran).
    NothingToCommit,
    /// The transaction broke or could not start: nothing of any write was saved.
    Failed(DbErr),
    /// Its COMMIT answered an error. Usually nothing was saved, but when the error was a
    /// lost acknowledgement (the connection broke after PostgreSQL committed), it was.
    CommitFailed(DbErr),
}

/// Runs one group, sorted by key (stable: a key's writes keep their order), then answers
/// every write. First every write runs straight in the shared transaction; when one of
/// them fails, that transaction is rolled back and the group runs again with each write in
/// a savepoint, so the failure is that write's alone.
async fn run_group(
    db: &DatabaseConnection,
    mut group: Vec<Box<dyn Work>>,
    stats: &Stats,
    lane: &str,
) {
    group.sort_by(|a, b| a.key().cmp(b.key()));
    let ended = match attempt(db, &mut group, false).await {
        Attempt::Ended(ended, held) => {
            if matches!(ended, Ended::Committed) {
                stats.held.fetch_add(held, Ordering::Relaxed);
            }
            ended
        }
        // Alone, its failure is its answer; nothing else was written. (Unless it held rows:
        // then it runs again with its inserts at once, as it would in a group.)
        Attempt::WriteFailed { held: false } if group.len() == 1 => Ended::NothingToCommit,
        Attempt::WriteFailed { .. } | Attempt::HeldFailed => {
            stats.regrouped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("db_group_commit_rerun_total", "lane" => lane.to_owned())
                .increment(1);
            match attempt(db, &mut group, true).await {
                Attempt::Ended(ended, _) => ended,
                // (Savepoints make every failure its write's own, and hold nothing: not
                // reached.)
                Attempt::WriteFailed { .. } | Attempt::HeldFailed => Ended::Failed(DbErr::Custom(
                    "a group's second run failed as a whole; nothing was saved".to_owned(),
                )),
            }
        }
    };
    for w in group {
        w.finish(&ended);
    }
}

/// How an attempt at a group went.
enum Attempt {
    /// The transaction ended so, with this many held rows inserted.
    Ended(Ended, u64),
    /// A write failed without savepoints: rolled back, nothing saved. `held`: rows were
    /// held back before it failed.
    WriteFailed { held: bool },
    /// Every write succeeded, the held inserts failed: rolled back, nothing saved.
    HeldFailed,
}

/// Runs the writes in one transaction, each inside a savepoint when `savepoints`, and ends
/// it. Without savepoints, every write (a lone one too) holds its inserts back to the
/// group's end; the first write that fails, or held inserts that fail, roll the transaction
/// back (run them again with savepoints).
async fn attempt(
    db: &DatabaseConnection,
    group: &mut [Box<dyn Work>],
    savepoints: bool,
) -> Attempt {
    let txn = match db.begin().await {
        Ok(t) => t,
        Err(e) => return Attempt::Ended(Ended::Failed(e), 0),
    };
    // A lone write holds its inserts too: they then cost one call instead of one per table.
    let later = (!savepoints).then(Later::default);
    let mode = if savepoints {
        Mode::Savepoint
    } else {
        Mode::Straight(later.as_ref())
    };
    let mut any_ok = false;
    for w in group.iter_mut() {
        let ran = w.run(&txn, mode).await;
        if !ran.ok && !savepoints {
            let _ = txn.rollback().await;
            let held = later.as_ref().is_some_and(Later::holds_any);
            return Attempt::WriteFailed { held };
        }
        if !ran.usable {
            let _ = txn.rollback().await;
            return Attempt::Ended(
                Ended::Failed(DbErr::Conn(RuntimeErr::Internal(
                    "the shared transaction failed; nothing of this write was saved".to_owned(),
                ))),
                0,
            );
        }
        any_ok |= ran.ok;
    }
    let held = match later {
        Some(later) => match later.insert(&txn).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::debug!(error = %e, "held inserts failed; the group runs again with savepoints");
                let _ = txn.rollback().await;
                return Attempt::HeldFailed;
            }
        },
        None => 0,
    };
    let ended = if !any_ok {
        let _ = txn.rollback().await;
        Ended::NothingToCommit
    } else {
        match txn.commit().await {
            Ok(()) => Ended::Committed,
            Err(e) => Ended::CommitFailed(e),
        }
    };
    Attempt::Ended(ended, held)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::sea_query::{Alias, Query};

    fn insert(table: &str, value: i64) -> InsertStatement {
        Query::insert()
            .into_table(Alias::new(table))
            .columns([Alias::new("v")])
            .values_panic([value.into()])
            .to_owned()
    }

    /// Held inserts go in as few calls as the parameter limit allows, in their order: a
    /// `WITH` statement on PostgreSQL, one text of several statements on SQLite; an insert
    /// that would pass the limit starts the next call.
    #[test]
    fn held_inserts_go_in_as_few_calls_as_the_limit_allows() {
        let inserts = || {
            vec![
                (insert("a", 1), 20_000),
                (insert("b", 2), MAX_PARAMETERS - 20_000),
                (insert("c", 3), 1),
                (insert("d", 4), 1),
            ]
        };
        let values = |s: &Statement| s.values.as_ref().map_or(0, |v| v.0.len());

        let pg = few_calls(DbBackend::Postgres, inserts());
        assert_eq!(pg.len(), 2, "{pg:?}");
        assert!(
            pg[0]
                .sql
                .starts_with(r#"WITH "held_0" AS (INSERT INTO "a""#),
            "{}",
            pg[0].sql
        );
        assert!(pg[0].sql.contains(r#") INSERT INTO "b""#), "{}", pg[0].sql);
        assert!(
            pg[1]
                .sql
                .starts_with(r#"WITH "held_0" AS (INSERT INTO "c""#)
        );
        assert!(pg[1].sql.contains(r#") INSERT INTO "d""#), "{}", pg[1].sql);
        assert_eq!(pg.iter().map(values).collect::<Vec<_>>(), [2, 2]);

        let sqlite = few_calls(DbBackend::Sqlite, inserts());
        assert_eq!(sqlite.len(), 2, "{sqlite:?}");
        assert_eq!(
            sqlite[0].sql,
            "INSERT INTO \"a\" (\"v\") VALUES (?);\nINSERT INTO \"b\" (\"v\") VALUES (?)"
        );
        assert_eq!(sqlite.iter().map(values).collect::<Vec<_>>(), [2, 2]);

        // A lone insert is itself, with no WITH around it.
        let lone = few_calls(DbBackend::Postgres, vec![(insert("a", 1), 1)]);
        assert_eq!(lone.len(), 1);
        assert_eq!(lone[0].sql, r#"INSERT INTO "a" ("v") VALUES ($1)"#);
        assert!(few_calls(DbBackend::Postgres, Vec::new()).is_empty());
    }
}
