//! The hub: each user's recent changes (a bounded window, in their sequence order) and
//! their open streams, in memory.
//!
//! Changes arrive numbered in their owner's sequence (`TaskChanged.user_seq`: 1, 2, 3, …
//! with no gap, the same on every replica). The hub keeps each user's window contiguous:
//! a change already seen is a duplicate and ignored; one that arrives before an earlier
//! one (the outbox relay republishing after a failed bulk) is held until the gap fills,
//! and a gap that does not fill (too many held, or held too long) ends that user's streams
//! with RESYNC. A change is queued to each of the user's streams under the same lock that
//! registers a stream, so a stream gets its backlog and then every later change, once,
//! in order.
//!
//! A stream's queue is bounded: a client that does not keep up is cut off with RESYNC
//! instead of growing memory. Disconnects free everything (the stream's guard removes it).
//!
//! Whether a cursor can resume here (see [`Hub::watch`]):
//! - the replica knows the user: it can when its window still holds the change after the
//!   cursor's (or the cursor is at or past the last change it saw);
//! - it does not: it can when it was already consuming when the cursor was issued (nothing
//!   of this user has happened since, or it would know the user), and the cursor is younger
//!   than the window.
//!
//! A cursor's time is when the client was known to have every change of the user before
//! it: the read time for ListTasks, the change's `occurred_at` for a change, and the
//! replica's now less its observed consumer lag for a heartbeat.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use todo_proto::{todo::events::v1::TaskChanged, watch_cursor::WatchCursor};
use tokio::sync::mpsc;

/// The most changes held per user while waiting for an earlier one.
const GAP_LIMIT: usize = 1_000;
/// How long a gap may stay open before the user's streams are told to RESYNC.
const GAP_TIMEOUT: Duration = Duration::from_secs(30);

/// The window, the buffers and the limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `SYNC_WINDOW_CHANGES`: changes held per user.
    pub window_changes: usize,
    /// `SYNC_WINDOW_SECS`: how long a change is held.
    pub window_time: Duration,
    /// `SYNC_STREAM_BUFFER`: changes queued per stream before RESYNC.
    pub stream_buffer: usize,
    /// `SYNC_MAX_STREAMS_PER_USER`.
    pub max_streams_per_user: usize,
    /// `SYNC_MAX_STREAMS`.
    pub max_streams: usize,
    /// `SYNC_CLOCK_SKEW_MS`: allowance for clocks and consumer lag when judging cursor times.
    pub clock_skew: Duration,
    /// `SYNC_MAX_HELD_CHANGES`: changes held for all users together; past it the oldest
    /// go first (their users' old cursors then RESYNC).
    pub max_held: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            window_changes: 1_000,
            window_time: Duration::from_secs(600),
            stream_buffer: 256,
            max_streams_per_user: 32,
            max_streams: 20_000,
            clock_skew: Duration::from_secs(2),
            max_held: 100_000,
        }
    }
}

/// Why a stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client must list again: the reason is sent in the RESYNC message.
    Resync(&'static str),
    /// The replica is shutting down: the client reconnects with its cursor.
    Shutdown,
}

/// Reasons of RESYNC.
pub mod reasons {
    /// The cursor is older than what this replica holds.
    pub const OUTSIDE_WINDOW: &str = "cursor_outside_window";
    /// The client did not read fast enough: its queue overflowed.
    pub const SLOW_CONSUMER: &str = "slow_consumer";
    /// A change of the user never arrived while later ones did.
    pub const GAP: &str = "gap";
}

/// What happened to a change handed to the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// In the window and queued to the user's streams (with any held ones it released).
    Applied,
    /// Seen before (a redelivery): nothing changed.
    Duplicate,
    /// Held until the changes before it arrive.
    Held,
}

/// Why a watch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("at most {0} open streams per user on one replica")]
    TooManyForUser(usize),
    #[error("at most {0} open streams on this replica")]
    TooMany(usize),
    #[error("sync-service is shutting down")]
    Closed,
}

/// One change as held and sent.
pub type Shared = Arc<TaskChanged>;

/// A change in a window.
#[derive(Debug)]
struct Held {
    seq: u64,
    received: Instant,
    change: Shared,
}

/// A stream of a user, as the hub sees it.
#[derive(Debug)]
struct Watcher {
    id: u64,
    /// The last sequence number queued to it (or its cursor's).
    after: u64,
    /// Whether the client holds exactly `after` (it resumed from a cursor, or was sent a
    /// change): the next change it gets must then be `after + 1`. A stream from now of a
    /// user this replica does not know yet starts with whatever comes first.
    exact: bool,
    tx: mpsc::Sender<Shared>,
    end: Arc<OnceLock<End>>,
}

impl Watcher {
    /// Ends the stream: once its queue is drained it reads `end`.
    fn end(self, why: End) {
        let _ = self.end.set(why);
    }
}

#[derive(Debug, Default)]
struct User {
    /// Contiguous, ascending.
    window: VecDeque<Held>,
    /// The last change of the contiguous run (None: no change seen yet).
    last_seq: Option<u64>,
    /// Changes that came before their predecessors.
    pending: BTreeMap<u64, Held>,
    pending_since: Option<Instant>,
    watchers: Vec<Watcher>,
    last_change: Option<Instant>,
}

impl User {
    /// Appends the next change and queues it to the streams.
    fn push(&mut self, held: Held, stats: &HubStats) {
        let seq = held.seq;
        let change = held.change.clone();
        self.last_seq = Some(seq);
        self.last_change = Some(held.received);
        self.window.push_back(held);
        self.watchers.retain_mut(|w| {
            if seq <= w.after {
                return true;
            }
            if w.exact && seq != w.after + 1 {
                // The run of a user this replica did not know started past the client's
                // cursor (the change after it overtook its predecessor, or was consumed
                // before this replica listened): the client cannot be told what it missed.
                stats.count_resync(reasons::GAP);
                let _ = w.end.set(End::Resync(reasons::GAP));
                return false;
            }
            match w.tx.try_send(change.clone()) {
                Ok(()) => {
                    w.after = seq;
                    w.exact = true;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    stats.count_resync(reasons::SLOW_CONSUMER);
                    let _ = w.end.set(End::Resync(reasons::SLOW_CONSUMER));
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    /// Releases held changes that are now next in line.
    fn release(&mut self, stats: &HubStats) {
        while let Some(next) = self.last_seq.map(|s| s + 1)
            && let Some(held) = self.pending.remove(&next)
        {
            self.push(held, stats);
        }
        if self.pending.is_empty() {
            self.pending_since = None;
        }
    }

    /// Gives up on a gap: the held changes become the start of a new run, and every stream
    /// of the user (which cannot be told what is missing) ends with RESYNC.
    fn give_up(&mut self, stats: &HubStats) {
        let Some((&last, _)) = self.pending.last_key_value() else {
            return;
        };
        for w in self.watchers.drain(..) {
            stats.count_resync(reasons::GAP);
            w.end(End::Resync(reasons::GAP));
        }
        self.window.clear();
        self.pending.clear();
        self.pending_since = None;
        self.last_seq = Some(last);
    }

    /// The first sequence number a resuming client can get here.
    fn first_available(&self) -> Option<u64> {
        self.window
            .front()
            .map(|h| h.seq)
            .or(self.last_seq.map(|s| s + 1))
    }

    fn trim(&mut self, limits: &Limits, now: Instant) {
        while self.window.len() > limits.window_changes {
            self.window.pop_front();
        }
        while self
            .window
            .front()
            .is_some_and(|h| now.duration_since(h.received) > limits.window_time)
        {
            self.window.pop_front();
        }
    }
}

/// Counts kept by the hub (also Prometheus metrics).
#[derive(Debug, Default)]
struct HubStats {
    open: AtomicUsize,
}

impl HubStats {
    fn count_resync(&self, reason: &'static str) {
        metrics::counter!("sync_resyncs_total", "reason" => reason).increment(1);
    }
}

#[derive(Debug, Default)]
struct State {
    users: HashMap<Arc<str>, User>,
    /// Every change taken into a window, in arrival order (some already trimmed): the
    /// oldest held go first when there are more than `max_held`.
    arrivals: VecDeque<(Arc<str>, u64)>,
    /// When the first change arrived: from then on this replica has seen every change.
    listening_since: Option<DateTime<Utc>>,
    /// The largest consumer lag (now − occurred_at) seen since the last sweep, and before it.
    lag: Duration,
    previous_lag: Duration,
    closed: bool,
}

impl State {
    /// The key of `user` in `users`: the one already there, or a new one (the only
    /// allocation of a user id; the arrivals and stream guards share it).
    fn key(&self, user: &str) -> Arc<str> {
        self.users
            .get_key_value(user)
            .map_or_else(|| Arc::from(user), |(k, _)| k.clone())
    }
}

/// The users' windows and streams.
#[derive(Debug)]
pub struct Hub {
    limits: Limits,
    state: Mutex<State>,
    stats: HubStats,
    next_id: AtomicU64,
}

/// A registered stream: what it missed, then what comes, then why it ended.
#[derive(Debug)]
pub struct Watch {
    /// Changes after the cursor the window held, in order.
    pub backlog: Vec<Shared>,
    /// The later changes, as they arrive.
    pub rx: mpsc::Receiver<Shared>,
    /// Where the client stands before the backlog (None: from now, no change seen yet).
    pub after: Option<u64>,
    end: Arc<OnceLock<End>>,
    _guard: Guard,
}

impl Watch {
    /// Why the stream ended, once its queue is closed.
    pub fn end(&self) -> End {
        self.end.get().copied().unwrap_or(End::Shutdown)
    }
}

/// Removes its stream from the hub when the stream is dropped (the client went away).
#[derive(Debug)]
struct Guard {
    hub: Arc<Hub>,
    user: Arc<str>,
    id: u64,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut state = self.hub.lock();
        if let Some(user) = state.users.get_mut(&*self.user) {
            user.watchers.retain(|w| w.id != self.id);
        }
        drop(state);
        let open = self.hub.stats.open.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!("sync_streams_open").set(open as f64);
    }
}

/// The answer to a watch: a stream, or RESYNC at once.
#[derive(Debug)]
pub enum Start {
    Stream(Watch),
    Resync(&'static str),
}

impl Hub {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            state: Mutex::new(State::default()),
            stats: HubStats::default(),
            next_id: AtomicU64::new(1),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (each step is whole).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many streams are open.
    pub fn open_streams(&self) -> usize {
        self.stats.open.load(Ordering::Relaxed)
    }

    /// Takes one change (`user_id` and `user_seq` already checked by the caller).
    pub fn apply(&self, change: TaskChanged) -> Applied {
        let now = Instant::now();
        let lag = change
            .occurred_at
            .as_ref()
            .and_then(todo_proto::from_timestamp)
            .and_then(|t| (Utc::now() - t).to_std().ok())
            .unwrap_or_default();
        metrics::histogram!("sync_event_lag_seconds").record(lag.as_secs_f64());
        let seq = change.user_seq;
        let mut state = self.lock();
        state.listening_since.get_or_insert_with(Utc::now);
        state.lag = state.lag.max(lag);
        let who = state.key(&change.user_id);
        let user = state.users.entry(who.clone()).or_default();
        let held = Held {
            seq,
            received: now,
            change: Arc::new(change),
        };
        let applied = match user.last_seq {
            // The first change this replica sees of the user starts its run.
            None => {
                user.push(held, &self.stats);
                Applied::Applied
            }
            Some(last) if seq <= last || user.pending.contains_key(&seq) => Applied::Duplicate,
            Some(last) if seq == last + 1 => {
                user.push(held, &self.stats);
                user.release(&self.stats);
                Applied::Applied
            }
            Some(_) => {
                user.pending.insert(seq, held);
                user.pending_since.get_or_insert(now);
                if user.pending.len() > GAP_LIMIT {
                    tracing::warn!(
                        held = user.pending.len(),
                        "a change never arrived: streams of the user resync"
                    );
                    user.give_up(&self.stats);
                }
                Applied::Held
            }
        };
        user.trim(&self.limits, now);
        if applied != Applied::Duplicate {
            state.arrivals.push_back((who, seq));
            while state.arrivals.len() > self.limits.max_held {
                let Some((who, oldest)) = state.arrivals.pop_front() else {
                    break;
                };
                if let Some(u) = state.users.get_mut(&*who)
                    && u.window.front().is_some_and(|h| h.seq == oldest)
                {
                    u.window.pop_front();
                }
            }
        }
        applied
    }

    /// Registers a stream of `user` starting after `cursor` (None: from now).
    pub fn watch(
        self: &Arc<Self>,
        user: &str,
        cursor: Option<WatchCursor>,
    ) -> Result<Start, Refused> {
        let limits = &self.limits;
        let mut state = self.lock();
        if state.closed {
            return Err(Refused::Closed);
        }
        if self.open_streams() >= limits.max_streams {
            return Err(Refused::TooMany(limits.max_streams));
        }
        let listening_since = state.listening_since;
        let key = state.key(user);
        let u = state.users.entry(key.clone()).or_default();
        if u.watchers.len() >= limits.max_streams_per_user {
            return Err(Refused::TooManyForUser(limits.max_streams_per_user));
        }
        let (after, backlog) = match (cursor, u.last_seq) {
            (None, last) => (last, Vec::new()),
            (Some(c), Some(last)) => {
                if c.seq.saturating_add(1) < u.first_available().unwrap_or(last + 1) {
                    return Ok(Start::Resync(reasons::OUTSIDE_WINDOW));
                }
                let backlog: Vec<Shared> = u
                    .window
                    .iter()
                    .filter(|h| h.seq > c.seq)
                    .map(|h| h.change.clone())
                    .collect();
                (Some(c.seq), backlog)
            }
            (Some(c), None) => {
                let skew = chrono::Duration::from_std(limits.clock_skew).unwrap_or_default();
                let window = chrono::Duration::from_std(limits.window_time).unwrap_or_default();
                // (Checked arithmetic: the time is the client's. A cursor from the future was
                // not issued by a replica with a sane clock: not vouched for either.)
                let now = Utc::now();
                let vouched = listening_since.is_some_and(|since| {
                    c.issued_at
                        .checked_sub_signed(skew)
                        .is_some_and(|t| t >= since)
                }) && now
                    .checked_sub_signed(window)
                    .is_none_or(|oldest| c.issued_at >= oldest)
                    && now
                        .checked_add_signed(skew)
                        .is_none_or(|latest| c.issued_at <= latest);
                if !vouched {
                    return Ok(Start::Resync(reasons::OUTSIDE_WINDOW));
                }
                (Some(c.seq), Vec::new())
            }
        };
        let (tx, rx) = mpsc::channel(limits.stream_buffer);
        let end = Arc::new(OnceLock::new());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        u.watchers.push(Watcher {
            id,
            after: backlog
                .last()
                .map(|c| c.user_seq)
                .or(after)
                .unwrap_or_default(),
            exact: after.is_some() || !backlog.is_empty(),
            tx,
            end: end.clone(),
        });
        // Counted under the lock that checked the limit, so concurrent calls cannot pass it.
        let open = self.stats.open.fetch_add(1, Ordering::Relaxed) + 1;
        drop(state);
        metrics::gauge!("sync_streams_open").set(open as f64);
        Ok(Start::Stream(Watch {
            backlog,
            rx,
            after,
            end,
            _guard: Guard {
                hub: self.clone(),
                user: key,
                id,
            },
        }))
    }

    /// The time a heartbeat's cursor carries: now, less the consumer lag seen lately and
    /// the clock allowance (the client has every change made before it).
    pub fn heartbeat_time(&self) -> DateTime<Utc> {
        let state = self.lock();
        // (An event's `occurred_at` is the producer's word: a lag beyond the window is
        // capped there, where a cursor is out of the window anyway.)
        let lag = (state.lag.max(state.previous_lag) + self.limits.clock_skew)
            .min(self.limits.window_time);
        let now = Utc::now();
        chrono::Duration::from_std(lag)
            .ok()
            .and_then(|lag| now.checked_sub_signed(lag))
            .unwrap_or(now)
    }

    /// Drops what fell out of the window: old changes, idle users with no stream, gaps
    /// open too long. Called periodically.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut state = self.lock();
        state.previous_lag = std::mem::take(&mut state.lag);
        let limits = &self.limits;
        let mut held = 0usize;
        let State {
            users, arrivals, ..
        } = &mut *state;
        users.retain(|_, u| {
            if u.pending_since
                .is_some_and(|since| now.duration_since(since) > GAP_TIMEOUT)
            {
                tracing::warn!(
                    held = u.pending.len(),
                    "a change never arrived: streams of the user resync"
                );
                u.give_up(&self.stats);
            }
            u.trim(limits, now);
            held += u.window.len() + u.pending.len();
            !u.watchers.is_empty()
                || !u.pending.is_empty()
                || u.last_change
                    .is_some_and(|t| now.duration_since(t) <= limits.window_time)
        });
        // Forget the arrivals already trimmed, so they do not count against the cap.
        arrivals.retain(|(who, seq)| {
            users
                .get(&**who)
                .is_some_and(|u| u.window.front().is_some_and(|h| h.seq <= *seq))
        });
        metrics::gauge!("sync_users_held").set(users.len() as f64);
        metrics::gauge!("sync_changes_held").set(held as f64);
    }

    /// Ends every stream (the replica is stopping) and refuses new ones.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        for u in state.users.values_mut() {
            for w in u.watchers.drain(..) {
                w.end(End::Shutdown);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn change(user: &str, seq: u64) -> TaskChanged {
        TaskChanged {
            user_id: user.into(),
            user_seq: seq,
            task_id: format!("t{seq}"),
            occurred_at: Some(todo_proto::to_timestamp(Utc::now())),
            ..TaskChanged::default()
        }
    }

    /// `user`'s changes numbered `seqs`, applied in order (outcomes not checked).
    fn apply_all(hub: &Hub, user: &str, seqs: std::ops::RangeInclusive<u64>) {
        for s in seqs {
            hub.apply(change(user, s));
        }
    }

    fn stream(start: Start) -> Watch {
        match start {
            Start::Stream(w) => w,
            Start::Resync(r) => panic!("resync: {r}"),
        }
    }

    fn drain(w: &mut Watch) -> Vec<u64> {
        let mut got: Vec<u64> = w.backlog.drain(..).map(|c| c.user_seq).collect();
        while let Ok(c) = w.rx.try_recv() {
            got.push(c.user_seq);
        }
        got
    }

    fn cursor(seq: u64) -> Option<WatchCursor> {
        Some(WatchCursor::new(seq, Utc::now()))
    }

    #[test]
    fn a_stream_gets_its_backlog_then_each_change_once_in_order() {
        let hub = Hub::new(Limits::default());
        for s in 1..=5 {
            assert_eq!(hub.apply(change("alice", s)), Applied::Applied);
        }
        let mut w = stream(hub.watch("alice", cursor(2)).unwrap());
        // A redelivery, then a change that comes before its predecessor.
        assert_eq!(hub.apply(change("alice", 4)), Applied::Duplicate);
        assert_eq!(hub.apply(change("alice", 7)), Applied::Held);
        assert_eq!(hub.apply(change("alice", 6)), Applied::Applied);
        assert_eq!(hub.apply(change("bob", 1)), Applied::Applied);
        assert_eq!(drain(&mut w), [3, 4, 5, 6, 7]);
    }

    /// Regression (hostile input): a cursor at the edge of chrono's time range panicked the
    /// handler under the hub's lock (`issued_at - skew`), and an event whose `occurred_at`
    /// was near it panicked every heartbeat after it (`now - lag`).
    #[test]
    fn times_at_the_edge_of_the_range_resync_instead_of_panicking() {
        let hub = Hub::new(Limits {
            clock_skew: Duration::from_millis(1),
            ..Limits::default()
        });
        let mut early = change("bob", 1);
        early.occurred_at = Some(todo_proto::to_timestamp(DateTime::<Utc>::MIN_UTC));
        hub.apply(early);
        let hb = hub.heartbeat_time();
        assert!(hb <= Utc::now() && hb >= Utc::now() - chrono::Duration::hours(1));
        for issued_at in [
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            Utc::now() + chrono::Duration::hours(1),
        ] {
            let c = Some(WatchCursor::new(5, issued_at));
            assert!(
                matches!(
                    hub.watch("carol", c).unwrap(),
                    Start::Resync(reasons::OUTSIDE_WINDOW)
                ),
                "{issued_at}"
            );
        }
        // A cursor past every sequence of a user the replica knows: no overflow, no backlog.
        let mut w = stream(
            hub.watch("bob", Some(WatchCursor::new(u64::MAX, Utc::now())))
                .unwrap(),
        );
        assert!(drain(&mut w).is_empty());
        // A cursor issued after the replica began listening is still vouched for.
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(matches!(
            hub.watch("carol", cursor(5)).unwrap(),
            Start::Stream(_)
        ));
    }

    #[test]
    fn a_cursor_older_than_the_window_resyncs() {
        let hub = Hub::new(Limits {
            window_changes: 3,
            ..Limits::default()
        });
        apply_all(&hub, "alice", 1..=10);
        // 8, 9, 10 are held: a client at 7 resumes, one at 6 cannot.
        assert_eq!(
            drain(&mut stream(hub.watch("alice", cursor(7)).unwrap())),
            [8, 9, 10]
        );
        assert!(matches!(
            hub.watch("alice", cursor(6)).unwrap(),
            Start::Resync(reasons::OUTSIDE_WINDOW)
        ));
        // A client ahead of this replica (it lags) gets only what is newer than its cursor.
        let mut ahead = stream(hub.watch("alice", cursor(12)).unwrap());
        apply_all(&hub, "alice", 11..=13);
        assert_eq!(drain(&mut ahead), [13]);
    }

    #[test]
    fn an_unknown_user_resumes_only_from_a_cursor_issued_while_listening() {
        let hub = Hub::new(Limits {
            clock_skew: Duration::from_millis(1),
            ..Limits::default()
        });
        let before = WatchCursor::new(3, Utc::now() - chrono::Duration::seconds(5));
        // Not listening yet: nothing can be vouched for.
        assert!(matches!(
            hub.watch("carol", Some(before)).unwrap(),
            Start::Resync(_)
        ));
        hub.apply(change("bob", 1));
        assert!(matches!(
            hub.watch("carol", Some(before)).unwrap(),
            Start::Resync(_)
        ));
        // (Past the clock allowance since the replica began listening.)
        std::thread::sleep(std::time::Duration::from_millis(5));
        let mut w = stream(hub.watch("carol", cursor(3)).unwrap());
        hub.apply(change("carol", 4));
        assert_eq!(drain(&mut w), [4]);
    }

    /// Regression: a stream resumed from cursor 5 of a user this replica did not know was
    /// sent 7 (which had overtaken 6) and never 6, which then counted as a duplicate; it
    /// now ends with RESYNC `gap`. A stream from now takes whatever comes first.
    #[test]
    fn a_run_that_starts_past_a_resumed_cursor_resyncs_the_stream() {
        let hub = Hub::new(Limits {
            clock_skew: Duration::from_millis(1),
            ..Limits::default()
        });
        hub.apply(change("bob", 1));
        std::thread::sleep(std::time::Duration::from_millis(5));
        let mut resumed = stream(hub.watch("carol", cursor(5)).unwrap());
        let mut live = stream(hub.watch("carol", None).unwrap());
        assert_eq!(hub.apply(change("carol", 7)), Applied::Applied);
        assert_eq!(hub.apply(change("carol", 6)), Applied::Duplicate);
        assert_eq!(hub.apply(change("carol", 8)), Applied::Applied);
        assert!(drain(&mut resumed).is_empty());
        assert_eq!(resumed.end(), End::Resync(reasons::GAP));
        assert_eq!(drain(&mut live), [7, 8]);
    }

    #[test]
    fn a_slow_stream_is_cut_off_and_a_dropped_one_freed() {
        let hub = Hub::new(Limits {
            stream_buffer: 2,
            ..Limits::default()
        });
        hub.apply(change("alice", 1));
        let mut slow = stream(hub.watch("alice", None).unwrap());
        let gone = stream(hub.watch("alice", None).unwrap());
        assert_eq!(hub.open_streams(), 2);
        drop(gone);
        assert_eq!(hub.open_streams(), 1);
        apply_all(&hub, "alice", 2..=5);
        assert_eq!(drain(&mut slow), [2, 3]);
        assert_eq!(
            slow.rx.try_recv().unwrap_err(),
            mpsc::error::TryRecvError::Disconnected
        );
        assert_eq!(slow.end(), End::Resync(reasons::SLOW_CONSUMER));
    }

    #[test]
    fn limits_refuse_and_close_ends_every_stream() {
        let hub = Hub::new(Limits {
            max_streams_per_user: 1,
            max_streams: 2,
            ..Limits::default()
        });
        let a = stream(hub.watch("alice", None).unwrap());
        assert_eq!(
            hub.watch("alice", None).unwrap_err(),
            Refused::TooManyForUser(1)
        );
        let _b = stream(hub.watch("bob", None).unwrap());
        assert_eq!(hub.watch("carol", None).unwrap_err(), Refused::TooMany(2));
        hub.close();
        assert_eq!(a.end(), End::Shutdown);
        assert_eq!(hub.watch("dave", None).unwrap_err(), Refused::Closed);
    }

    #[test]
    fn the_oldest_changes_of_all_users_go_first_past_the_cap() {
        let hub = Hub::new(Limits {
            max_held: 4,
            ..Limits::default()
        });
        for s in 1..=3 {
            hub.apply(change("alice", s));
            hub.apply(change("bob", s));
        }
        // Six arrived, four are held: the first of each user went.
        assert!(matches!(
            hub.watch("alice", cursor(0)).unwrap(),
            Start::Resync(_)
        ));
        assert_eq!(
            drain(&mut stream(hub.watch("alice", cursor(1)).unwrap())),
            [2, 3]
        );
        assert_eq!(
            drain(&mut stream(hub.watch("bob", cursor(1)).unwrap())),
            [2, 3]
        );
        hub.sweep();
        hub.apply(change("carol", 1));
        assert_eq!(
            drain(&mut stream(hub.watch("carol", cursor(0)).unwrap())),
            [1]
        );
    }

    #[test]
    fn a_gap_that_never_fills_resyncs_the_users_streams() {
        let hub = Hub::new(Limits::default());
        hub.apply(change("alice", 1));
        let w = stream(hub.watch("alice", cursor(1)).unwrap());
        apply_all(&hub, "alice", 3..=3 + GAP_LIMIT as u64);
        assert_eq!(w.end(), End::Resync(reasons::GAP));
        // The held changes start a new run: a client at its end resumes, one before it
        // (which would need the lost change's successors) cannot.
        let last = 2 + GAP_LIMIT as u64 + 1;
        assert!(matches!(
            hub.watch("alice", cursor(last)).unwrap(),
            Start::Stream(_)
        ));
        assert!(matches!(
            hub.watch("alice", cursor(last - 1)).unwrap(),
            Start::Resync(reasons::OUTSIDE_WINDOW)
        ));
    }
}
