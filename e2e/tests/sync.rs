//! Live sync on the real stack: task-service (its database, outbox relay and sidecar) →
//! task-updates on Kafka → sync-service (a broadcast consumer group per replica, its
//! sidecar) → WatchTasks streams.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod stack;

use std::time::Duration;

use todo_harness::{Backend, unique};
use todo_proto::{
    todo::{
        events::v1::{TaskChanged, TaskEventKind},
        sync::v1::{
            TaskChange, WatchTasksRequest, sync_service_client::SyncServiceClient,
            task_change::Message,
        },
        v1::{CreateTaskRequest, ListTasksRequest, Task, task_service_client::TaskServiceClient},
    },
    watch_cursor::WatchCursor,
};
use todo_topology::app_ids;
use tonic::{Request, Streaming, transport::Channel};

fn as_user<T>(user: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("x-user-id", user.parse().unwrap());
    r
}

type Tasks = TaskServiceClient<Channel>;
type Sync = SyncServiceClient<Channel>;

/// A sync-service replica with its sidecar (app id `sync-service`: the broadcast component
/// is scoped to it).
async fn sync_replica(
    prefix: &str,
    own: &[(&str, &str)],
) -> (sync_service::App, todo_harness::Daprd, Sync) {
    let mut vars = vec![("AUTH_MODE", "dev"), ("SYNC_HEARTBEAT_MS", "300")];
    vars.extend_from_slice(own);
    let (app, sidecar) = stack::start_as(
        app_ids::SYNC_SERVICE.to_owned(),
        prefix,
        &vars,
        sync_service::build,
        |a: &sync_service::App| a.addr,
    )
    .await;
    let client = SyncServiceClient::connect(format!("http://{}", app.addr))
        .await
        .unwrap();
    (app, sidecar, client)
}

async fn task_replica(prefix: &str, url: &str) -> (task_service::App, todo_harness::Daprd, Tasks) {
    let (app, sidecar) = stack::start(
        "task-service",
        prefix,
        &[("AUTH_MODE", "dev"), ("DATABASE_URL", url)],
        task_service::build,
        |a: &task_service::App| a.addr,
    )
    .await;
    let client = TaskServiceClient::connect(format!("http://{}", app.addr))
        .await
        .unwrap();
    (app, sidecar, client)
}

async fn create(api: &mut Tasks, user: &str, title: &str) -> Task {
    api.create_task(as_user(
        user,
        CreateTaskRequest {
            task: Some(Task {
                title: title.into(),
                ..Task::default()
            }),
            ..Default::default()
        },
    ))
    .await
    .unwrap()
    .into_inner()
}

/// A broadcast group starts at the newest offset once it has joined: make changes (of a
/// user of its own) until every replica has seen one.
async fn until_consuming(api: &mut Tasks, replicas: &[&sync_service::App]) {
    let probe = unique("probe");
    for _ in 0..300 {
        create(api, &probe, "probe").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if replicas.iter().all(|r| r.stats().applied > 0) {
            // A replica vouches for cursors issued from then on, less the clock allowance
            // (SYNC_CLOCK_SKEW_MS, 2 s by default).
            tokio::time::sleep(Duration::from_millis(2_500)).await;
            return;
        }
    }
    panic!("sync-service never received a change from task-updates");
}

async fn watch(sync: &mut Sync, user: &str, cursor: &str) -> Streaming<TaskChange> {
    sync.watch_tasks(as_user(
        user,
        WatchTasksRequest {
            cursor: cursor.into(),
        },
    ))
    .await
    .unwrap()
    .into_inner()
}

/// The next message that is not a heartbeat (None: the stream ended).
async fn next(stream: &mut Streaming<TaskChange>) -> Option<TaskChange> {
    // Heartbeats do not count: without a change, a RESYNC or the end within 60 s, fail
    // (instead of waiting on heartbeats for ever).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("no change, RESYNC or end within 60 s")
            .unwrap()?;
        if !matches!(m.message, Some(Message::Heartbeat(_))) {
            return Some(m);
        }
    }
}

/// The next `n` changes, with the cursor after the last.
async fn changes(stream: &mut Streaming<TaskChange>, n: usize) -> (Vec<TaskChanged>, String) {
    let mut out = Vec::new();
    let mut cursor = String::new();
    while out.len() < n {
        let m = next(stream).await.expect("the stream ended");
        match m.message {
            Some(Message::Change(c)) => {
                cursor = m.cursor;
                out.push(c);
            }
            other => panic!("expected a change, got {other:?}"),
        }
    }
    (out, cursor)
}

/// Nothing but heartbeats for `quiet`; each carries a cursor once the stream has one.
async fn only_heartbeats(stream: &mut Streaming<TaskChange>, quiet: Duration) -> usize {
    let mut beats = 0;
    let until = tokio::time::Instant::now() + quiet;
    while let Ok(m) = tokio::time::timeout_at(until, stream.message()).await {
        let m = m.unwrap().expect("the stream ended");
        assert!(
            matches!(m.message, Some(Message::Heartbeat(_))),
            "expected only heartbeats, got {m:?}"
        );
        beats += 1;
    }
    beats
}

fn seqs(changes: &[TaskChanged]) -> Vec<u64> {
    changes.iter().map(|c| c.user_seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_sees_exactly_its_own_changes_in_order_and_a_slow_one_is_cut_off() {
    todo_harness::ensure_kafka().await.unwrap();
    let prefix = unique("e2esync");
    let dir = tempfile::tempdir().unwrap();
    let (sync_app, _sync_sidecar, mut sync) =
        sync_replica(&prefix, &[("SYNC_STREAM_BUFFER", "64")]).await;
    let url = todo_harness::fresh_database(Backend::Sqlite, &dir, "tasks.db").await;
    let (_tasks_app, _tasks_sidecar, mut api) = task_replica(&prefix, &url).await;
    until_consuming(&mut api, &[&sync_app]).await;

    // A cursor that is not one: INVALID_ARGUMENT naming the field.
    let bad = sync
        .watch_tasks(as_user(
            "alice",
            WatchTasksRequest {
                cursor: "v9.x".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().starts_with("cursor:"), "{}", bad.message());

    // alice lists, then watches from the list's cursor; bob watches from now.
    let alice = unique("alice");
    let bob = unique("bob");
    let listed = api
        .list_tasks(as_user(&alice, ListTasksRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        WatchCursor::decode(&listed.watch_cursor).unwrap().seq,
        0,
        "no change yet"
    );
    let mut alices = watch(&mut sync, &alice, &listed.watch_cursor).await;
    let mut bobs = watch(&mut sync, &bob, "").await;

    // The walkthrough.
    let [created, updated, completed, reopened] = stack::walkthrough(&mut api, &alice).await;

    // Exactly those five, in order, each with the task the API answered.
    let (got, last) = changes(&mut alices, 5).await;
    let kinds: Vec<TaskEventKind> = got.iter().map(|c| c.kind()).collect();
    assert_eq!(
        kinds,
        [
            TaskEventKind::Created,
            TaskEventKind::Updated,
            TaskEventKind::Completed,
            TaskEventKind::Reopened,
            TaskEventKind::Deleted
        ]
    );
    assert_eq!(seqs(&got), [1, 2, 3, 4, 5]);
    let snapshots: Vec<Task> = got.iter().map(|c| c.task.clone().unwrap()).collect();
    assert_eq!(snapshots[0], created);
    assert_eq!(snapshots[1], updated);
    assert_eq!(snapshots[2], completed);
    assert_eq!(snapshots[3], reopened);
    assert_eq!(snapshots[4].id, created.id);
    assert_eq!(got[1].changed_fields, ["title", "priority"]);
    assert!(got.iter().all(|c| c.user_id == alice));
    assert_eq!(WatchCursor::decode(&last).unwrap().seq, 5);
    // Nothing more for alice, and nothing of alice's for bob: heartbeats only.
    assert!(only_heartbeats(&mut alices, Duration::from_secs(2)).await > 0);
    assert!(only_heartbeats(&mut bobs, Duration::from_millis(500)).await > 0);
    // bob's own change reaches bob.
    let bobs_task = create(&mut api, &bob, "bob's").await;
    let (got, _) = changes(&mut bobs, 1).await;
    assert_eq!(got[0].task.as_ref().unwrap(), &bobs_task);
    assert_eq!(got[0].user_id, bob);

    // carol opens a stream and never reads while 10,000 changes of hers flow.
    let carol = unique("carol");
    let mut carols = watch(&mut sync, &carol, "").await;
    let open_before = sync_app.open_streams();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let mut api = api.clone();
            let carol = carol.clone();
            tokio::spawn(async move {
                for i in 0..1_250 {
                    create(&mut api, &carol, &format!("t{w}-{i}")).await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    // Her stream holds what fitted, then RESYNC, then ends; the hub forgot the stream.
    let mut received = 0u64;
    let resync = loop {
        match next(&mut carols)
            .await
            .expect("ended without RESYNC")
            .message
        {
            Some(Message::Change(c)) => {
                received += 1;
                assert_eq!(c.user_seq, received, "in order, from her first change");
            }
            Some(Message::Resync(r)) => break r,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(resync.reason, "slow_consumer");
    assert!(received < 10_000, "received {received}");
    assert!(
        next(&mut carols).await.is_none(),
        "the stream ends after RESYNC"
    );
    assert_eq!(sync_app.open_streams(), open_before - 1);
    eprintln!(
        "slow client: {received} of 10000 changes queued before RESYNC; test process VmHWM {}",
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmHWM"))
            .unwrap_or("?")
    );
    drop((alices, bobs));
    let stats = sync_app.shutdown().await.unwrap();
    assert_eq!(stats.dropped, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_of_each_resume_from_a_cursor_on_either_and_resync_past_the_window() {
    todo_harness::ensure_kafka().await.unwrap();
    let prefix = unique("e2esync2");
    let dir = tempfile::tempdir().unwrap();
    let window = [("SYNC_WINDOW_CHANGES", "150")];
    let (sync_a, _sa, mut watch_a) = sync_replica(&prefix, &window).await;
    let (sync_b, _sb, mut watch_b) = sync_replica(&prefix, &window).await;
    let url = todo_harness::fresh_database(Backend::Postgres, &dir, "tasks.db").await;
    let (_ta, _tsa, mut api_a) = task_replica(&prefix, &url).await;
    let (_tb, _tsb, mut api_b) = task_replica(&prefix, &url).await;
    until_consuming(&mut api_a, &[&sync_a, &sync_b]).await;

    // alice lists through task-service A and watches on both sync replicas; her changes go
    // through both task-service replicas in turn.
    let alice = unique("alice");
    let cursor = api_a
        .list_tasks(as_user(&alice, ListTasksRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .watch_cursor;
    let mut on_a = watch(&mut watch_a, &alice, &cursor).await;
    let mut on_b = watch(&mut watch_b, &alice, &cursor).await;
    let mut made = Vec::new();
    for i in 0..10 {
        let api = if i % 2 == 0 { &mut api_a } else { &mut api_b };
        made.push(create(api, &alice, &format!("task {i}")).await);
    }
    let (seen_a, _) = changes(&mut on_a, 10).await;
    let (seen_b, cursor_b) = changes(&mut on_b, 10).await;
    for seen in [&seen_a, &seen_b] {
        assert_eq!(seqs(seen), (1..=10).collect::<Vec<_>>());
        let tasks: Vec<Task> = seen.iter().map(|c| c.task.clone().unwrap()).collect();
        assert_eq!(tasks, made);
    }

    // The client on B goes away; 100 changes are made meanwhile, through both task-services.
    drop(on_b);
    for i in 0..100 {
        let api = if i % 2 == 0 { &mut api_b } else { &mut api_a };
        create(api, &alice, &format!("offline {i}")).await;
    }
    // It reconnects with its last cursor, to the other replica and to the same one: all
    // 100, in order, none twice, then nothing more.
    for sync in [&mut watch_a, &mut watch_b] {
        let mut again = watch(sync, &alice, &cursor_b).await;
        let (missed, _) = changes(&mut again, 100).await;
        assert_eq!(seqs(&missed), (11..=110).collect::<Vec<_>>());
        assert!(only_heartbeats(&mut again, Duration::from_secs(1)).await > 0);
    }
    // The live stream on A saw them too.
    let (live, _) = changes(&mut on_a, 100).await;
    assert_eq!(seqs(&live), (11..=110).collect::<Vec<_>>());

    // 200 more: the window (150 changes) no longer reaches back to the old cursor.
    for i in 0..200 {
        create(&mut api_a, &alice, &format!("more {i}")).await;
    }
    let (_, _) = changes(&mut on_a, 200).await;
    let mut stale = watch(&mut watch_b, &alice, &cursor_b).await;
    match next(&mut stale).await.unwrap().message {
        Some(Message::Resync(r)) => assert_eq!(r.reason, "cursor_outside_window"),
        other => panic!("expected RESYNC, got {other:?}"),
    }
    assert!(next(&mut stale).await.is_none());
    for s in [sync_a, sync_b] {
        let stats = s.shutdown().await.unwrap();
        assert_eq!(stats.dropped, 0, "{stats:?}");
    }
}
