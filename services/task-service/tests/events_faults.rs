//! Task events when Kafka, the sidecar or the service itself goes down: every RPC still
//! succeeds, and every committed event arrives later, in order per user.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use todo_harness::on_both_databases;
#[path = "common/events.rs"]
mod stack;

use std::{collections::HashMap, time::Duration};

use prost::Message;
use sea_orm::{EntityTrait, PaginatorTrait};
use task_service::{db::entities::outbox, events::Topics};
use todo_harness::{
    Daprd, DaprdOptions, DedicatedKafka, free_port, recorder::Recorder, resources_for, unique,
};
use todo_proto::todo::{events::v1::TaskEvent, v1::task_service_client::TaskServiceClient};

use common::{Backend, as_user, fresh_database};
use stack::{Stack, new_task};

/// 5 users × 100 creates, users concurrently, each user's creates one after another.
async fn five_hundred_mutations(stack: &Stack, user_prefix: &str) {
    let mut handles = Vec::new();
    for u in 0..5 {
        let mut c = stack.client().await;
        let user = format!("{user_prefix}-{u}");
        handles.push(tokio::spawn(async move {
            for i in 0..100 {
                tokio::time::timeout(
                    Duration::from_secs(5),
                    c.create_task(as_user(&user, new_task(&format!("{i}")))),
                )
                .await
                .expect("the API does not wait on Dapr or Kafka")
                .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
}

fn assert_in_order_per_user(events: &[(String, TaskEvent)]) {
    let mut per_user: HashMap<String, Vec<i64>> = HashMap::new();
    for (_, e) in events {
        per_user
            .entry(e.user_id.clone())
            .or_default()
            .push(e.task.as_ref().unwrap().title.parse().unwrap());
    }
    for (u, seq) in &per_user {
        if seq.windows(2).any(|w| w[1] != w[0] + 1) {
            eprintln!("{u}: {seq:?}");
        }
    }
    let mut last: HashMap<String, i64> = HashMap::new();
    for (_, e) in events {
        let i: i64 = e.task.as_ref().unwrap().title.parse().unwrap();
        let prev = last.entry(e.user_id.clone()).or_insert(-1);
        assert_eq!(i, *prev + 1, "events of {} in order", e.user_id);
        *prev = i;
    }
}

async fn outbox_rows(url: &str) -> u64 {
    let db = sea_orm::Database::connect(url).await.unwrap();
    let n = outbox::Entity::find().count(&db).await.unwrap();
    db.close().await.unwrap();
    n
}

async fn with_kafka_stopped_every_rpc_succeeds_and_all_events_arrive_later(backend: Backend) {
    let mut kafka = DedicatedKafka::start().await.unwrap();
    let resources = resources_for(&kafka.brokers()).unwrap();
    let stack = Stack::start(backend, Some(resources.path().to_owned())).await;
    let user = unique("k");
    kafka.down().await.unwrap();
    five_hundred_mutations(&stack, &user).await;
    assert!(
        outbox_rows(&stack.url).await > 0,
        "events wait in the outbox while Kafka is down"
    );
    kafka.up().await.unwrap();
    let events = stack
        .wait_for_events(&user, 500, Duration::from_secs(180))
        .await;
    assert_eq!(events.len(), 500, "each event once in the dedup view");
    assert_in_order_per_user(&events);
}

/// The relay at work while users commit: bulks of 8 rows, so a drain reads the next bulk
/// while one publishes nearly all the time, and on PostgreSQL rows commit out of `seq` order
/// (several write lanes). Each user's events still arrive once each, in order.
async fn with_everything_up_a_pipelined_relay_keeps_each_users_order(backend: Backend) {
    let stack = Stack::start_with(backend, None, |c| c.relay.batch_size = 8).await;
    let user = unique("p");
    five_hundred_mutations(&stack, &user).await;
    let events = stack
        .wait_for_events(&user, 500, Duration::from_secs(120))
        .await;
    assert_eq!(events.len(), 500, "each event once in the dedup view");
    assert_in_order_per_user(&events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_sidecar_stopped_every_rpc_succeeds_and_all_events_arrive_after_its_restart() {
    let mut stack = Stack::start(Backend::Sqlite, None).await;
    let user = unique("d");
    stack.sidecar.stop().await.unwrap();
    five_hundred_mutations(&stack, &user).await;
    assert!(outbox_rows(&stack.url).await > 0);
    stack.sidecar.restart().await.unwrap();
    let events = stack
        .wait_for_events(&user, 500, Duration::from_secs(120))
        .await;
    assert_eq!(events.len(), 500);
    assert_in_order_per_user(&events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_service_killed_with_sigkill_loses_no_committed_event() {
    todo_harness::ensure_kafka().await.unwrap();
    let topics = Topics::new(&unique("kill"));
    let recorder = Recorder::start("recorder", std::slice::from_ref(&topics.task_events), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(Backend::Sqlite, &dir).await;
    let app_port = free_port().unwrap();
    let grpc_port = free_port().unwrap();
    let prefix = topics
        .task_events
        .trim_end_matches(".task-events")
        .to_owned();
    let spawn = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_task-service"))
            .env("APP_ADDR", format!("127.0.0.1:{app_port}"))
            .env("DATABASE_URL", &url)
            .env("AUTH_MODE", "jwt")
            .env("JWT_SECRET", common::SECRET)
            .env("DAPR_GRPC_PORT", grpc_port.to_string())
            .env("TOPIC_PREFIX", &prefix)
            .env("METRICS_ADDR", "off")
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let connect = || async {
        for _ in 0..100 {
            if let Ok(c) = TaskServiceClient::connect(format!("http://127.0.0.1:{app_port}")).await
            {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("task-service did not come up");
    };
    let mut child = spawn();
    let mut c = connect().await;
    let mut opts = DaprdOptions::new(unique("task-service"), Some(app_port));
    opts.grpc_port = Some(grpc_port);
    let _sidecar = Daprd::start(opts).await.unwrap();

    // A stream of creates; SIGKILL lands in the middle of it.
    let user = unique("s");
    let mut committed = 0usize;
    for i in 0..400 {
        if i == 150 {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            let _ = child.wait().await;
            child = spawn();
            c = connect().await;
        }
        if c.create_task(as_user(&user, new_task(&format!("{i}"))))
            .await
            .is_ok()
        {
            committed += 1;
        }
    }
    assert!(
        committed >= 399,
        "creates after the restart succeed ({committed})"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let all = recorder.inbox.on(&topics.task_events);
        let ids: std::collections::HashSet<String> = all
            .iter()
            .map(|(_, b)| TaskEvent::decode(b.as_slice()).unwrap().event_id)
            .collect();
        if ids.len() >= committed {
            assert_eq!(
                ids.len(),
                committed,
                "every committed mutation's event, and no other"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {committed} events arrived",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.start_kill().unwrap();
}

on_both_databases!(4;
    with_kafka_stopped_every_rpc_succeeds_and_all_events_arrive_later,
    with_everything_up_a_pipelined_relay_keeps_each_users_order,
);
