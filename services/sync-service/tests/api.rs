//! WatchTasks at its edges, on the real server (no sidecar needed: sync-service only
//! receives): who may watch, cursors that are not cursors, the stream limits, heartbeats,
//! and gRPC-Web over HTTP/1.1 on the same port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use prost::Message as _;
use sync_service::{App, Config, config::ServiceConfig};
use todo_proto::todo::sync::v1::{
    TaskChange, WatchTasksRequest, sync_service_client::SyncServiceClient, task_change::Message,
};
use tonic::{Code, Request, transport::Channel};

async fn start(own: &[(&str, &str)]) -> (App, SyncServiceClient<Channel>) {
    let mut vars = vec![
        ("APP_ADDR", "127.0.0.1:0"),
        ("METRICS_ADDR", "off"),
        ("AUTH_MODE", "dev"),
        ("SYNC_HEARTBEAT_MS", "200"),
    ];
    vars.extend_from_slice(own);
    let config = Config::from_lookup(todo_env::from_pairs(&vars)).unwrap();
    let app = sync_service::build(config).await.unwrap();
    let client = SyncServiceClient::connect(format!("http://{}", app.addr))
        .await
        .unwrap();
    (app, client)
}

fn as_user(user: &str, cursor: &str) -> Request<WatchTasksRequest> {
    let mut r = Request::new(WatchTasksRequest {
        cursor: cursor.into(),
    });
    r.metadata_mut().insert("x-user-id", user.parse().unwrap());
    r
}

#[tokio::test]
async fn callers_cursors_and_limits() {
    let (app, mut client) = start(&[("SYNC_MAX_STREAMS_PER_USER", "2")]).await;

    // No caller: UNAUTHENTICATED. A cursor that is not one: INVALID_ARGUMENT naming it.
    let anon = client
        .watch_tasks(WatchTasksRequest::default())
        .await
        .unwrap_err();
    assert_eq!(anon.code(), Code::Unauthenticated);
    let bad = client
        .watch_tasks(as_user("alice", "42"))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("cursor:"), "{}", bad.message());

    // A cursor this replica cannot vouch for (it has received nothing yet): RESYNC, end.
    let mut stale = client
        .watch_tasks(as_user("alice", "v1.3.1700000000000"))
        .await
        .unwrap()
        .into_inner();
    let m = stale.message().await.unwrap().unwrap();
    assert!(matches!(m.message, Some(Message::Resync(r)) if r.reason == "cursor_outside_window"));
    assert!(stale.message().await.unwrap().is_none());

    // Two streams for alice; a third is refused, bob's is not. An idle stream beats.
    let mut first = client
        .watch_tasks(as_user("alice", ""))
        .await
        .unwrap()
        .into_inner();
    let _second = client.watch_tasks(as_user("alice", "")).await.unwrap();
    let third = client.watch_tasks(as_user("alice", "")).await.unwrap_err();
    assert_eq!(third.code(), Code::ResourceExhausted);
    let _bobs = client.watch_tasks(as_user("bob", "")).await.unwrap();
    assert_eq!(app.open_streams(), 3);
    let beat = tokio::time::timeout(Duration::from_secs(5), first.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(beat.message, Some(Message::Heartbeat(_))));

    // A stream that goes away is freed: alice may open another.
    drop(first);
    let mut freed = false;
    for _ in 0..50 {
        if app.open_streams() == 2 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "the closed stream was not freed");
    let _again = client.watch_tasks(as_user("alice", "")).await.unwrap();

    // Shutting down ends the open streams with UNAVAILABLE (reconnect with your cursor).
    let mut open = client
        .watch_tasks(as_user("carol", ""))
        .await
        .unwrap()
        .into_inner();
    let stopping = tokio::spawn(app.shutdown());
    let end = loop {
        match open.message().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert_eq!(end.unwrap_err().code(), Code::Unavailable);
    drop((_second, _bobs, _again));
    stopping.await.unwrap().unwrap();
}

/// One gRPC-Web frame: flag 0 (data), big-endian length, the message.
fn frame(m: &impl prost::Message) -> Vec<u8> {
    let body = m.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    out.extend(body);
    out
}

#[tokio::test]
async fn grpc_web_over_http1_on_the_same_port() {
    let (app, _client) = start(&[]).await;
    let http = reqwest::Client::builder().http1_only().build().unwrap();
    let url = format!("http://{}/todo.sync.v1.SyncService/WatchTasks", app.addr);
    let call = |cursor: &str| {
        http.post(&url)
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .header("x-user-id", "alice")
            .body(frame(&WatchTasksRequest {
                cursor: cursor.into(),
            }))
            .send()
    };

    // A refused call: trailers-only, the status in the headers.
    let refused = call("nonsense").await.unwrap();
    assert_eq!(refused.version(), reqwest::Version::HTTP_11);
    assert_eq!(refused.headers()["grpc-status"], "3");

    // A stream: its first message (a heartbeat) arrives as a data frame.
    let mut stream = call("").await.unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(
        stream.headers()["content-type"],
        "application/grpc-web+proto"
    );
    let mut got = Vec::new();
    while got.len() < 5
        || got.len() < 5 + u32::from_be_bytes([got[1], got[2], got[3], got[4]]) as usize
    {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
            .await
            .unwrap()
            .unwrap()
            .expect("the stream ended");
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got[0], 0, "a data frame");
    let len = u32::from_be_bytes([got[1], got[2], got[3], got[4]]) as usize;
    let m = TaskChange::decode(&got[5..5 + len]).unwrap();
    assert!(matches!(m.message, Some(Message::Heartbeat(_))), "{m:?}");
    drop(stream);
    app.shutdown().await.unwrap();
}
