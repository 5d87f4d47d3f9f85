//! The load generators' side of task-service's gRPC API: connections and callers.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use todo_proto::todo::v1::{Priority, Task, task_service_client::TaskServiceClient};
use tonic::{
    Request, Status,
    metadata::AsciiMetadataValue,
    transport::{Channel, Endpoint},
};

/// `n` clients of the service at `addr`, each on its own HTTP/2 connection (TCP_NODELAY,
/// 30 s per request).
pub async fn connect(
    addr: SocketAddr,
    n: usize,
) -> anyhow::Result<Vec<TaskServiceClient<Channel>>> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        // One `connect` is one HTTP/2 connection.
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .with_context(|| format!("connecting to task-service at {addr}"))?;
        clients.push(TaskServiceClient::new(channel));
    }
    Ok(clients)
}

/// The `x-user-id` header values of `n` users `<prefix>-000`, `<prefix>-001`, ...
/// (`AUTH_MODE=dev`: callers name themselves).
pub fn users(prefix: &str, n: usize) -> anyhow::Result<Vec<AsciiMetadataValue>> {
    (0..n)
        .map(|u| {
            AsciiMetadataValue::try_from(format!("{prefix}-{u:03}"))
                .context("a user id that is not a header value")
        })
        .collect()
}

/// `msg` as a request of `user`.
pub fn as_user<T>(user: &AsciiMetadataValue, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("x-user-id", user.clone());
    r
}

/// A failed call in a report: its code and message.
pub fn describe(s: &Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// Task number `seq` of a benchmark: a task of realistic size, "created by the
/// `<created_by>` example".
pub fn task(seq: usize, created_by: &str) -> Task {
    Task {
        title: format!("benchmark task {seq}"),
        description: format!("a task of realistic size, created by the {created_by} example"),
        priority: Priority::Medium as i32,
        tags: vec!["bench".to_owned(), format!("tag-{}", seq % 8)],
        ..Task::default()
    }
}
