//! audit-service SIGKILLed in the middle of a burst of 1,000 changes: after its restart
//! every change has its entry, each once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::HashSet, time::Duration};

use chrono::Utc;
use common::{connect, outgoing, task, task_event};
use todo_harness::{Backend, Daprd, DaprdOptions, free_port, unique};
use todo_proto::todo::events::v1::TaskEventKind;
use todo_topology::Topics;

const CHANGES: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_in_the_middle_of_a_burst_loses_and_doubles_nothing() {
    todo_harness::ensure_kafka().await.unwrap();
    let prefix = unique("aukill");
    let topics = Topics::new(&prefix);
    let dir = tempfile::tempdir().unwrap();
    let url = todo_harness::fresh_database(Backend::Sqlite, &dir, "audit.db").await;
    let app_port = free_port().unwrap();
    let grpc_port = free_port().unwrap();
    let spawn = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_audit-service"))
            .env("APP_ADDR", format!("127.0.0.1:{app_port}"))
            .env("DATABASE_URL", &url)
            .env("AUTH_MODE", "dev")
            .env("DAPR_GRPC_PORT", grpc_port.to_string())
            .env("TOPIC_PREFIX", &prefix)
            // Small deliveries, so that the burst takes many of them.
            .env("AUDIT_BULK_MAX_MESSAGES", "25")
            .env("METRICS_ADDR", "off")
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let addr = format!("127.0.0.1:{app_port}");
    let mut child = spawn();
    let mut client = connect(&addr).await;
    let mut opts = DaprdOptions::new(unique("audit-service"), Some(app_port));
    opts.grpc_port = Some(grpc_port);
    let _sidecar = Daprd::start(opts).await.unwrap();
    let (_publisher_sidecar, publisher) = todo_harness::recorder::publisher("publisher")
        .await
        .unwrap();

    // 1,000 changes of 50 tasks of one user, published in bursts of 100.
    let user = unique("burst");
    let ids: Vec<String> = (0..50).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let t0 = Utc::now();
    let events: Vec<_> = (0..CHANGES)
        .map(|i| {
            let t = task(
                &user,
                &ids[i % ids.len()],
                &format!("title {i}"),
                i as u32 + 1,
            );
            let kind = if i < ids.len() {
                TaskEventKind::Created
            } else {
                TaskEventKind::Updated
            };
            let at = t0 + chrono::Duration::milliseconds(i as i64);
            task_event(kind, &t, &["title"], at)
        })
        .collect();
    let publish = |range: std::ops::Range<usize>| {
        let batch: Vec<_> = events[range]
            .iter()
            .map(|e| outgoing(&topics.task_events, &user, e))
            .collect();
        let publisher = &publisher;
        async move {
            for chunk in batch.chunks(100) {
                let out = publisher.publish_bulk(chunk).await.unwrap();
                assert!(out.failed.is_empty(), "{out:?}");
            }
        }
    };
    publish(0..500).await;
    // Killed as soon as it has stored some of them, the second half of the burst still
    // to be published.
    common::wait_entries(&mut client, &user, 1, Duration::from_secs(60)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait().await;
    publish(500..CHANGES).await;
    child = spawn();
    client = connect(&addr).await;

    let entries = common::wait_entries(&mut client, &user, CHANGES, Duration::from_secs(180)).await;
    assert_eq!(entries.len(), CHANGES, "one entry per change, none twice");
    let stored: HashSet<&str> = entries.iter().map(|e| e.event_id.as_str()).collect();
    let published: HashSet<&str> = events.iter().map(|e| e.2.as_str()).collect();
    assert_eq!(stored, published);
    child.start_kill().unwrap();
}
