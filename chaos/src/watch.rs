//! The live clients: one WatchTasks watcher per user against sync-service, following the
//! protocol of docs/events.md ("Live sync"): ListTasks (its first page's `watch_cursor`),
//! then WatchTasks from that cursor, each change applied to a view of the user's tasks; on a
//! broken, refused or silent stream, WatchTasks again with the last cursor (after a
//! backoff); on RESYNC, list again. Every connection's changes are recorded for the checker.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use todo_proto::{
    todo::{
        events::v1::TaskEventKind,
        sync::v1::{
            TaskChange, WatchTasksRequest, sync_service_client::SyncServiceClient,
            task_change::Message,
        },
        v1::{ListTasksRequest, Task, task_service_client::TaskServiceClient},
    },
    watch_cursor::WatchCursor,
};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// What a watcher holds of one task: what the checker compares with the task's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewTask {
    pub version: i64,
    pub status: i32,
    pub title: String,
}

impl ViewTask {
    fn of(t: &Task) -> Self {
        Self {
            version: crate::checker::version(&t.etag).unwrap_or(-1),
            status: t.status,
            title: t.title.clone(),
        }
    }
}

/// A user's tasks as their watcher sees them (task id → task).
pub type View = HashMap<String, ViewTask>;

/// One change as a stream delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub seq: u64,
    pub task_id: String,
    pub version: i64,
}

/// One WatchTasks connection (one call), in the order its messages arrived.
#[derive(Debug, Clone)]
pub struct Connection {
    pub user: String,
    /// The `user_seq` of the cursor it was opened with: the stream owes `after + 1`, … next.
    pub after: u64,
    pub changes: Vec<Seen>,
}

/// Everything the watchers saw, shared with the checker.
#[derive(Debug, Default)]
pub struct WatchState {
    /// Each user's tasks as their watcher sees them now (task id → task).
    pub views: HashMap<String, View>,
    pub connections: Vec<Connection>,
    /// Counts by name: streams opened, reconnects, changes, heartbeats, RESYNC by reason, …
    pub counts: BTreeMap<String, u64>,
}

impl WatchState {
    fn count(&mut self, key: &str) {
        *self.counts.entry(key.to_owned()).or_default() += 1;
    }
}

/// The watchers of a run: their shared state and their tasks (aborted on drop).
pub struct Watchers {
    pub state: Arc<Mutex<WatchState>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock(state: &Mutex<WatchState>) -> MutexGuard<'_, WatchState> {
    // Each update is whole: a panic elsewhere leaves consistent data.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Watchers {
    /// Starts a watcher for each user: ListTasks through `tasks` (either replica),
    /// WatchTasks against sync-service at `sync_url`. `idle` is how long a stream may stay
    /// silent (no change, no heartbeat) before the watcher takes it for dead.
    pub fn start(
        users: &[String],
        tasks: Vec<TaskServiceClient<Channel>>,
        sync_url: &str,
        idle: Duration,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!tasks.is_empty(), "no Task API client to list with");
        // No request timeout on this channel: a stream lives as long as it is read.
        let channel = tonic::transport::Endpoint::from_shared(sync_url.to_owned())?
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        let mut counts = BTreeMap::new();
        for key in [STREAMS_OPENED, RECONNECTS, CHANGES_SEEN] {
            counts.insert(key.to_owned(), 0);
        }
        let state = Arc::new(Mutex::new(WatchState {
            counts,
            ..WatchState::default()
        }));
        let handles = users
            .iter()
            .enumerate()
            .map(|(i, user)| {
                let w = Watcher {
                    user: user.clone(),
                    tasks: tasks[i % tasks.len()].clone(),
                    sync: SyncServiceClient::new(channel.clone()),
                    state: state.clone(),
                    idle,
                };
                tokio::spawn(w.run())
            })
            .collect();
        Ok(Self {
            state,
            tasks: handles,
        })
    }

    /// The views and connections as they are now.
    pub fn snapshot(
        &self,
    ) -> (
        HashMap<String, View>,
        Vec<Connection>,
        BTreeMap<String, u64>,
    ) {
        let s = lock(&self.state);
        (s.views.clone(), s.connections.clone(), s.counts.clone())
    }
}

/// A doubling delay between attempts, reset by progress.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    /// First wait, and the most it grows to.
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(2);

    fn new() -> Self {
        Self { next: Self::FIRST }
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Self::MAX);
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// How a connection ended.
enum End {
    /// The stream broke, was refused or went silent: WatchTasks again with the cursor.
    Reconnect,
    /// RESYNC: list again.
    Resync,
}

/// The counts printed even when nothing happened.
const STREAMS_OPENED: &str = "watch streams opened";
const RECONNECTS: &str = "watch reconnects (with the last cursor)";
const CHANGES_SEEN: &str = "watch changes seen";

/// How long a call that should answer at once (ListTasks, opening a stream) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

struct Watcher {
    user: String,
    tasks: TaskServiceClient<Channel>,
    sync: SyncServiceClient<Channel>,
    state: Arc<Mutex<WatchState>>,
    idle: Duration,
}

fn as_user<T>(user: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = user.parse() {
        r.metadata_mut().insert("x-user-id", v);
    }
    r
}

impl Watcher {
    fn count(&self, key: &str) {
        lock(&self.state).count(key);
    }

    async fn run(mut self) {
        let mut backoff = Backoff::new();
        loop {
            // 1. ListTasks: the view and the first page's cursor.
            let Some(cursor) = self.list().await else {
                backoff.wait().await;
                continue;
            };
            // 2. WatchTasks from it, again with the latest cursor until RESYNC.
            let mut cursor = cursor;
            let mut first = true;
            loop {
                if !first {
                    self.count(RECONNECTS);
                }
                first = false;
                match self.watch(&mut cursor, &mut backoff).await {
                    End::Reconnect => backoff.wait().await,
                    End::Resync => break,
                }
            }
            backoff.wait().await;
        }
    }

    /// Lists every task of the user into the view; answers the first page's cursor.
    async fn list(&mut self) -> Option<String> {
        let mut view = HashMap::new();
        let mut cursor = None;
        let mut token = String::new();
        loop {
            let req = ListTasksRequest {
                page_size: 1000,
                page_token: token.clone(),
                ..ListTasksRequest::default()
            };
            let page = match tokio::time::timeout(
                CALL_TIMEOUT,
                self.tasks.list_tasks(as_user(&self.user, req)),
            )
            .await
            {
                Ok(Ok(page)) => page.into_inner(),
                Ok(Err(s)) => {
                    self.count(&format!("watch ListTasks failed: {:?}", s.code()));
                    return None;
                }
                Err(_) => {
                    self.count("watch ListTasks failed: timeout");
                    return None;
                }
            };
            cursor.get_or_insert(page.watch_cursor);
            view.extend(page.tasks.iter().map(|t| (t.id.clone(), ViewTask::of(t))));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let mut s = lock(&self.state);
        s.count("watch lists (ListTasks, at start and after RESYNC)");
        s.views.insert(self.user.clone(), view);
        cursor
    }

    /// One WatchTasks call, read until it ends; `cursor` follows every message.
    async fn watch(&mut self, cursor: &mut String, backoff: &mut Backoff) -> End {
        let after = match WatchCursor::decode(cursor) {
            Ok(c) => c.seq,
            Err(_) => {
                self.count("watch cursors that do not decode (listed again)");
                return End::Resync;
            }
        };
        let req = WatchTasksRequest {
            cursor: cursor.clone(),
        };
        let mut stream = match tokio::time::timeout(
            CALL_TIMEOUT,
            self.sync.watch_tasks(as_user(&self.user, req)),
        )
        .await
        {
            Ok(Ok(s)) => s.into_inner(),
            Ok(Err(s)) => {
                self.count(&format!("watch refused: {:?}", s.code()));
                return End::Reconnect;
            }
            Err(_) => {
                self.count("watch refused: no answer");
                return End::Reconnect;
            }
        };
        let conn = {
            let mut s = lock(&self.state);
            s.count(STREAMS_OPENED);
            s.connections.push(Connection {
                user: self.user.clone(),
                after,
                changes: Vec::new(),
            });
            s.connections.len() - 1
        };
        loop {
            let msg = match tokio::time::timeout(self.idle, stream.message()).await {
                Ok(Ok(Some(m))) => m,
                Ok(Ok(None)) => {
                    self.count("watch streams ended by the server without RESYNC");
                    return End::Reconnect;
                }
                Ok(Err(s)) => {
                    self.count(&format!("watch streams broken: {:?}", s.code()));
                    return End::Reconnect;
                }
                Err(_) => {
                    self.count("watch streams silent past the heartbeat (taken for dead)");
                    return End::Reconnect;
                }
            };
            if self.apply(conn, msg, cursor) {
                backoff.reset();
            } else {
                return End::Resync;
            }
        }
    }

    /// Applies one message to the view; false on RESYNC.
    fn apply(&self, conn: usize, msg: TaskChange, cursor: &mut String) -> bool {
        let mut s = lock(&self.state);
        match msg.message {
            Some(Message::Change(c)) => {
                s.count(CHANGES_SEEN);
                let version = c
                    .task
                    .as_ref()
                    .and_then(|t| crate::checker::version(&t.etag))
                    .unwrap_or(-1);
                if let Some(conn) = s.connections.get_mut(conn) {
                    conn.changes.push(Seen {
                        seq: c.user_seq,
                        task_id: c.task_id.clone(),
                        version,
                    });
                }
                let view = s.views.entry(self.user.clone()).or_default();
                if c.kind() == TaskEventKind::Deleted {
                    view.remove(&c.task_id);
                } else if let Some(t) = &c.task {
                    view.insert(c.task_id.clone(), ViewTask::of(t));
                }
            }
            Some(Message::Heartbeat(_)) => s.count("watch heartbeats seen"),
            Some(Message::Resync(r)) => {
                s.count(&format!("watch RESYNC: {}", r.reason));
                return false;
            }
            None => s.count("watch messages with nothing in them"),
        }
        if !msg.cursor.is_empty() {
            *cursor = msg.cursor;
        }
        true
    }
}
