//! Group commit: concurrent write transactions share one database transaction.
//!
//! A [`GroupWriter`] runs writes on lanes. Each lane takes the writes that queued while
//! its previous group ran, runs each inside a savepoint of one transaction, and commits
//! once for all of them; every caller gets its answer only after that commit. A write that
//! fails (a constraint, a lost optimistic check, any error of its own) rolls back to its
//! savepoint and fails alone; the others still commit. A write that arrives at an idle lane
//! runs at once, in a transaction of its own, without a savepoint: group commit costs
//! nothing when there is nothing to group.
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

    /// How many lanes write at once.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// Runs `work` in a transaction shared with the other writes queued at the same time,
    /// and answers once that transaction committed. When `work` fails, its own changes are
    /// rolled back and its error is the answer; when the shared commit fails, every write of
    /// the group gets that error (nothing of theirs is written).
    pub async fn write<T, E, F>(&self, key: &str, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbErr> + Send + 'static,
        F: for<'t> FnOnce(&'t DatabaseTransaction) -> BoxFuture<'t, Result<T, E>> + Send + 'static,
    {
        let lane = &self.lanes[(self.hasher.hash_one(key) % self.lanes.len() as u64) as usize];
        let (reply, answer) = oneshot::channel();
        let key = key.to_owned();
        lane.send(Box::new(Job { key, work, reply }))
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
    /// Runs the write on `txn`, inside a savepoint when `alone` is false. The bool is
    /// whether `txn` is still usable for the next write.
    fn run<'t>(
        self: Box<Self>,
        txn: &'t DatabaseTransaction,
        alone: bool,
    ) -> BoxFuture<'t, (Box<dyn Settled>, bool)>;
    /// Answers without running: the group's transaction could not even start.
    fn fail(self: Box<Self>, e: DbErr);
}

/// A write that ran, waiting for its group's commit.
trait Settled: Send {
    fn succeeded(&self) -> bool;
    /// Answers the caller (see [`Ended`]).
    fn finish(self: Box<Self>, ended: &Ended);
}

struct Job<F, T, E> {
    key: String,
    work: F,
    reply: oneshot::Sender<Result<T, E>>,
}

struct Outcome<T, E> {
    result: Result<T, E>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<F, T, E> Work for Job<F, T, E>
where
    T: Send + 'static,
    E: From<DbErr> + Send + 'static,
    F: for<'t> FnOnce(&'t DatabaseTransaction) -> BoxFuture<'t, Result<T, E>> + Send + 'static,
{
    fn key(&self) -> &str {
        &self.key
    }

    fn run<'t>(
        self: Box<Self>,
        txn: &'t DatabaseTransaction,
        alone: bool,
    ) -> BoxFuture<'t, (Box<dyn Settled>, bool)> {
        Box::pin(async move {
            let Job { work, reply, .. } = *self;
            let (result, usable) = if alone {
                let r = guarded(async move { work(txn).await }).await;
                (r, true)
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
            (
                Box::new(Outcome { result, reply }) as Box<dyn Settled>,
                usable,
            )
        })
    }

    fn fail(self: Box<Self>, e: DbErr) {
        let _ = self.reply.send(Err(E::from(e)));
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

impl<T: Send, E: From<DbErr> + Send> Settled for Outcome<T, E> {
    fn succeeded(&self) -> bool {
        self.result.is_ok()
    }

    fn finish(self: Box<Self>, ended: &Ended) {
        let answer = match ended {
            // A write that failed rolled back alone; its error stands (also when it came
            // from a sibling's change: that change is committed).
            Ended::Committed | Ended::NothingToCommit => self.result,
            // A write's own failure may have come from a sibling's change that is now gone
            // (a conflict, a duplicate key): the group's error is every write's answer.
            Ended::Failed(e) => Err(E::from(e.clone())),
        };
        // The caller may have gone (cancelled); what committed stays committed.
        let _ = self.reply.send(answer);
    }
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
        let ran = AssertUnwindSafe(run_group(&db, std::mem::take(&mut group)))
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
    /// The transaction broke or its commit failed: nothing of any write was saved.
    Failed(DbErr),
}

/// Runs one group: each write in turn (in a savepoint unless it is alone), sorted by key
/// (stable: a key's writes keep their order), then one commit.
async fn run_group(db: &DatabaseConnection, mut group: Vec<Box<dyn Work>>) {
    group.sort_by(|a, b| a.key().cmp(b.key()));
    let txn = match db.begin().await {
        Ok(t) => t,
        Err(e) => {
            for w in group {
                w.fail(e.clone());
            }
            return;
        }
    };
    let alone = group.len() == 1;
    let mut settled: Vec<Box<dyn Settled>> = Vec::with_capacity(group.len());
    let mut broken: Option<DbErr> = None;
    for w in group {
        if let Some(e) = &broken {
            w.fail(e.clone());
            continue;
        }
        let (s, usable) = w.run(&txn, alone).await;
        if !usable {
            broken = Some(DbErr::Conn(RuntimeErr::Internal(
                "the shared transaction failed; nothing of this write was saved".to_owned(),
            )));
        }
        settled.push(s);
    }
    let ended = if let Some(e) = broken {
        let _ = txn.rollback().await;
        Ended::Failed(e)
    } else if !settled.iter().any(|s| s.succeeded()) {
        let _ = txn.rollback().await;
        Ended::NothingToCommit
    } else {
        match txn.commit().await {
            Ok(()) => Ended::Committed,
            Err(e) => Ended::Failed(e),
        }
    };
    for s in settled {
        s.finish(&ended);
    }
}
