//! `todo.sync.v1.SyncService`: WatchTasks, the caller's changes as a server stream.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use todo_auth::into_caller;
use todo_proto::{
    todo::sync::v1::{
        Heartbeat, Resync, TaskChange, WatchTasksRequest, sync_service_server::SyncService,
        task_change::Message,
    },
    watch_cursor::WatchCursor,
};
use tonic::{Request, Response, Status};

use crate::hub::{End, Hub, Refused, Shared, Start};

/// The stream of one watch.
pub type ChangeStream = Pin<Box<dyn Stream<Item = Result<TaskChange, Status>> + Send>>;

/// Serves WatchTasks from the hub.
#[derive(Debug, Clone)]
pub struct SyncApi {
    hub: Arc<Hub>,
    heartbeat: Duration,
}

impl SyncApi {
    pub fn new(hub: Arc<Hub>, heartbeat: Duration) -> Self {
        Self { hub, heartbeat }
    }
}

fn sent(kind: &'static str) {
    metrics::counter!("sync_messages_sent_total", "kind" => kind).increment(1);
}

/// A change as the stream sends it: its cursor is its sequence number at its `occurred_at`
/// (every later change of the user was made after it).
fn change_message(change: &Shared) -> TaskChange {
    sent("change");
    let at = change
        .occurred_at
        .as_ref()
        .and_then(todo_proto::from_timestamp)
        .unwrap_or_default();
    TaskChange {
        cursor: WatchCursor::new(change.user_seq, at).encode(),
        message: Some(Message::Change(change.as_ref().clone())),
    }
}

fn resync(reason: &'static str) -> TaskChange {
    sent("resync");
    tracing::info!(reason, "watch ends with RESYNC");
    TaskChange {
        cursor: String::new(),
        message: Some(Message::Resync(Resync {
            reason: reason.to_owned(),
        })),
    }
}

#[tonic::async_trait]
impl SyncService for SyncApi {
    type WatchTasksStream = ChangeStream;

    async fn watch_tasks(
        &self,
        request: Request<WatchTasksRequest>,
    ) -> Result<Response<ChangeStream>, Status> {
        let (user, req) = into_caller(request)?;
        let cursor = match req.cursor.trim() {
            "" => None,
            text => Some(
                WatchCursor::decode(text)
                    .map_err(|e| Status::invalid_argument(format!("cursor: {e}")))?,
            ),
        };
        let start = self.hub.watch(&user, cursor).map_err(|e| match e {
            Refused::Closed => Status::unavailable(format!(
                "{e}: reconnect (to another replica) with your last cursor"
            )),
            Refused::TooMany(_) | Refused::TooManyForUser(_) => {
                Status::resource_exhausted(e.to_string())
            }
        })?;
        let mut watch = match start {
            Start::Stream(w) => w,
            Start::Resync(reason) => {
                let once: ChangeStream = Box::pin(futures::stream::iter([Ok(resync(reason))]));
                return Ok(Response::new(once));
            }
        };
        tracing::debug!(%user, backlog = watch.backlog.len(), "watch opened");
        let hub = self.hub.clone();
        let heartbeat = self.heartbeat;
        let stream = async_stream::stream! {
            let mut last = watch.after;
            for change in std::mem::take(&mut watch.backlog) {
                last = Some(change.user_seq);
                yield Ok(change_message(&change));
            }
            loop {
                tokio::select! {
                    got = watch.rx.recv() => match got {
                        Some(change) => {
                            last = Some(change.user_seq);
                            yield Ok(change_message(&change));
                        }
                        None => {
                            match watch.end() {
                                End::Resync(reason) => yield Ok(resync(reason)),
                                End::Shutdown => yield Err(Status::unavailable(
                                    "sync-service is shutting down: reconnect with your last cursor",
                                )),
                            }
                            break;
                        }
                    },
                    () = tokio::time::sleep(heartbeat) => {
                        sent("heartbeat");
                        let time = hub.heartbeat_time();
                        yield Ok(TaskChange {
                            cursor: last
                                .map(|seq| WatchCursor::new(seq, time).encode())
                                .unwrap_or_default(),
                            message: Some(Message::Heartbeat(Heartbeat {
                                time: Some(todo_proto::to_timestamp(time)),
                            })),
                        });
                    }
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}
