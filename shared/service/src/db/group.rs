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
//! Writes name a key (the user); a key always goes to the same lane, and a group runs its
//! writes sorted by key (a user's own in the order they came). SQLite has one writer, so
//! one lane. PostgreSQL gets several: a group holds the row locks of its writes until it
//! commits, and two groups that took two users in the opposite order would deadlock. One
//! lane per user rules that out inside a process; the sort rules it out between replicas
//! (every group locks users in the same order).

use std::{
    hash::BuildHasher,
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use futures::{FutureExt, future::BoxFuture};
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr, RuntimeErr, TransactionTrait};
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

    /// How many groups ran a second time, each write in a savepoint, because one of their
    /// writes failed.
    pub fn regrouped(&self) -> u64 {
        self.stats.regrouped.load(Ordering::Relaxed)
    }

    /// How many lanes write at once.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// Runs `work` in a transaction shared with the other writes queued at the same time,
    /// and answers once that transaction committed. When `work` fails, its own changes are
    /// rolled back and its error is the answer; when the shared commit fails, every write of
    /// the group gets that error (nothing of theirs is written). `work` may run twice (the
    /// first run rolled back, see the module docs): it must not act outside `txn`.
    pub async fn write<T, E, F>(&self, key: &str, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbErr> + Send + 'static,
        F: for<'t> Fn(&'t DatabaseTransaction) -> BoxFuture<'t, Result<T, E>>
            + Send
            + Sync
            + 'static,
    {
        let lane = &self.lanes[(self.hasher.hash_one(key) % self.lanes.len() as u64) as usize];
        let (reply, answer) = oneshot::channel();
        let key = key.to_owned();
        lane.send(Box::new(Job {
            key,
            work,
            result: None,
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

/// One queued write, with its caller's answer channel (type-erased for the lane).
trait Work: Send {
    /// The key the write was queued under (its user).
    fn key(&self) -> &str;
    /// Runs the write on `txn` (inside a savepoint of it when `savepoint`) and keeps its
    /// result for the answer, replacing that of an earlier attempt.
    fn run<'a>(&'a mut self, txn: &'a DatabaseTransaction, savepoint: bool) -> BoxFuture<'a, Ran>;
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
    reply: oneshot::Sender<Result<T, E>>,
}

impl<F, T, E> Work for Job<F, T, E>
where
    T: Send + 'static,
    E: From<DbErr> + Send + 'static,
    F: for<'t> Fn(&'t DatabaseTransaction) -> BoxFuture<'t, Result<T, E>> + Send + Sync + 'static,
{
    fn key(&self) -> &str {
        &self.key
    }

    fn run<'a>(&'a mut self, txn: &'a DatabaseTransaction, savepoint: bool) -> BoxFuture<'a, Ran> {
        Box::pin(async move {
            let work = &self.work;
            let (result, usable) = if !savepoint {
                (guarded(async { work(txn).await }).await, true)
            } else {
                match txn.begin().await {
                    Err(e) => (Err(E::from(e)), false),
                    Ok(savepoint) => match guarded(async { work(&savepoint).await }).await {
                        Ok(v) => match savepoint.commit().await {
                            Ok(()) => (Ok(v), true),
                            Err(e) => (Err(E::from(e)), false),
                        },
                        Err(e) => {
                            let usable = savepoint.rollback().await.is_ok();
                            (Err(e), usable)
                        }
                    },
                }
            };
            let ok = result.is_ok();
            self.result = Some(result);
            Ran { ok, usable }
        })
    }

    fn finish(self: Box<Self>, ended: &Ended) {
        let answer = match ended {
            // A write that failed rolled back alone; its error stands (also when it came
            // from a sibling's change: that change is committed).
            Ended::Committed | Ended::NothingToCommit => {
                self.result.unwrap_or_else(|| Err(E::from(stopped())))
            }
            // A write's own failure may have come from a sibling's change that is now gone
            // (a conflict, a duplicate key): the group's error is every write's answer.
            Ended::Failed(e) => Err(E::from(e.clone())),
        };
        // The caller may have gone (cancelled); what committed stays committed.
        let _ = self.reply.send(answer);
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
    /// The transaction broke, could not start, or its commit failed: nothing of any write
    /// was saved.
    Failed(DbErr),
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
        Some(ended) => ended,
        // Alone, its failure is its answer; nothing else was written.
        None if group.len() == 1 => Ended::NothingToCommit,
        None => {
            stats.regrouped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("db_group_commit_rerun_total", "lane" => lane.to_owned())
                .increment(1);
            attempt(db, &mut group, true)
                .await
                .unwrap_or(Ended::NothingToCommit)
        }
    };
    for w in group {
        w.finish(&ended);
    }
}

/// Runs the writes in one transaction, each inside a savepoint when `savepoints`, and ends
/// it. Without savepoints, the first write that fails rolls the transaction back and the
/// answer is `None` (run them again with savepoints).
async fn attempt(
    db: &DatabaseConnection,
    group: &mut [Box<dyn Work>],
    savepoints: bool,
) -> Option<Ended> {
    let txn = match db.begin().await {
        Ok(t) => t,
        Err(e) => return Some(Ended::Failed(e)),
    };
    let mut any_ok = false;
    for w in group.iter_mut() {
        let ran = w.run(&txn, savepoints).await;
        if !ran.ok && !savepoints {
            let _ = txn.rollback().await;
            return None;
        }
        if !ran.usable {
            let _ = txn.rollback().await;
            return Some(Ended::Failed(DbErr::Conn(RuntimeErr::Internal(
                "the shared transaction failed; nothing of this write was saved".to_owned(),
            ))));
        }
        any_ok |= ran.ok;
    }
    Some(if !any_ok {
        let _ = txn.rollback().await;
        Ended::NothingToCommit
    } else {
        match txn.commit().await {
            Ok(()) => Ended::Committed,
            Err(e) => Ended::Failed(e),
        }
    })
}
