//! The live-sync benchmark: many concurrent WatchTasks streams on one sync-service replica
//! while task changes are committed at a sustained rate.
//!
//! Everything is real and on 127.0.0.1: the Kafka broker (`scripts/kafka.sh up`, reused when
//! it answers), task-service in this process (the function its `main` calls; SQLite in a
//! temporary folder) with its daprd, and sync-service as it is deployed: its release binary
//! (`target/release/sync-service`, which `just bench-watch` builds first) run as a child
//! process with `AUTH_MODE=dev` and its own daprd (app id `sync-service`, the broadcast
//! component), under a fresh `TOPIC_PREFIX`.
//!
//! 1. `BENCH_STREAMS` streams (10,000) are opened over `BENCH_CONNECTIONS` HTTP/2
//!    connections (100), stream `i` watching user `i % BENCH_USERS` (2,000 users: 5 streams
//!    each, as a user with several devices).
//! 2. Open loop: `BENCH_RATE` CreateTask calls per second (500) for `BENCH_SECONDS` (20),
//!    spread round-robin over the users, each on schedule (a 1 ms tokio interval) in a task
//!    of its own.
//! 3. Every stream must receive exactly its user's changes, in `user_seq` order, none twice:
//!    the benchmark exits non-zero otherwise, or when they have not all arrived within
//!    `BENCH_TIMEOUT_SECS` (60) after the last commit.
//!
//! Latency = when a stream received a change − the change's `occurred_at` (stamped in the
//! change's transaction, just before its commit): commit → watcher, through the outbox
//! relay, daprd, Kafka, sync-service's daprd and sync-service. Messages/s = changes
//! delivered to streams / (first commit → last delivery). sync-service's CPU is its
//! utime + stime (`/proc/<pid>/stat`) over the load, per change and per message; its RSS is
//! `VmRSS` after the load and `VmHWM` (peak). This process (task-service and the 10,000
//! stream clients) is reported as a whole. Every process of the path (this one, both daprd,
//! Kafka's JVM, sync-service) is measured the same way over the load, with its peak RSS, by
//! `todo_harness::processes`.
//!
//! Run with `just bench-watch`.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use chrono::Utc;
use hdrhistogram::Histogram;
use todo_bench::report::{command, histogram, micros, quantile, usage_block};
use todo_harness::{
    Daprd, DaprdOptions,
    bench::env_usize,
    free_port, kafka_pid,
    machine::{cpu_model, daprd_version, kafka_version, mem_total},
    processes::{ProcessSet, UsageRow, parse_kib},
    unique,
};
use todo_proto::todo::{
    sync::v1::{WatchTasksRequest, sync_service_client::SyncServiceClient, task_change::Message},
    v1::{CreateTaskRequest, Task, task_service_client::TaskServiceClient},
};
use todo_service::cli::ServiceConfig;
use tokio::{process::Command, sync::Barrier, time::Instant};
use tonic::{
    Request,
    metadata::AsciiMetadataValue,
    transport::{Channel, Endpoint},
};

/// What one stream saw.
struct Seen {
    latencies: Histogram<u64>,
    received: u64,
    last_at: Option<Instant>,
    out_of_order: u64,
}

fn user(u: usize) -> String {
    format!("watch-user-{u}")
}

fn as_user<T>(who: &AsciiMetadataValue, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("x-user-id", who.clone());
    r
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| parse_kib(&s, field))
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let streams = env_usize("BENCH_STREAMS", 10_000)?;
    let connections = env_usize("BENCH_CONNECTIONS", 100)?;
    let users = env_usize("BENCH_USERS", 2_000)?;
    let rate = env_usize("BENCH_RATE", 500)?;
    let seconds = env_usize("BENCH_SECONDS", 20)?;
    let timeout = Duration::from_secs(env_usize("BENCH_TIMEOUT_SECS", 60)? as u64);
    ensure!(
        users <= streams,
        "BENCH_USERS must not exceed BENCH_STREAMS"
    );
    let binary = std::env::var("SYNC_SERVICE_BIN").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/sync-service"),
        PathBuf::from,
    );
    todo_harness::ensure_kafka().await?;
    let prefix = unique("bench-watch");

    // sync-service, its release binary, with its daprd.
    let (app_port, grpc_port) = (free_port()?, free_port()?);
    let log_path = std::env::temp_dir().join(format!("{prefix}-sync-service.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut child = Command::new(&binary)
        .env("APP_ADDR", format!("127.0.0.1:{app_port}"))
        .env("AUTH_MODE", "dev")
        .env("DAPR_GRPC_PORT", grpc_port.to_string())
        .env("TOPIC_PREFIX", &prefix)
        .env("METRICS_ADDR", "off")
        .env("SYNC_MAX_STREAMS", (streams + 100).to_string())
        .env("RUST_LOG", "warn")
        .env_remove("APP_API_TOKEN")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} (run `just bench-watch`)", binary.display()))?;
    let pid = child.id().context("sync-service exited at start")?;
    let sync_endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{app_port}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sync_endpoint.connect().await.is_err() {
        if let Some(status) = child.try_wait()? {
            bail!(
                "sync-service exited ({status}); log: {}",
                log_path.display()
            );
        }
        ensure!(
            Instant::now() < deadline,
            "sync-service did not answer; log: {}",
            log_path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut opts = DaprdOptions::new(todo_topology::app_ids::SYNC_SERVICE, Some(app_port));
    opts.grpc_port = Some(grpc_port);
    let sync_sidecar = Daprd::start(opts).await.context("sync-service's daprd")?;

    // task-service in this process, with its daprd.
    let dir = tempfile::tempdir()?;
    let db_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("tasks.db").display()
    );
    let task_grpc = free_port()?;
    let config = task_service::Config::from_lookup(|k| {
        Some(match k {
            "APP_ADDR" => "127.0.0.1:0".to_owned(),
            "AUTH_MODE" => "dev".to_owned(),
            "DATABASE_URL" => db_url.clone(),
            "DAPR_GRPC_PORT" => task_grpc.to_string(),
            "METRICS_ADDR" => "off".to_owned(),
            "TOPIC_PREFIX" => prefix.clone(),
            _ => return None,
        })
    })
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let tasks = task_service::build(config).await?;
    let mut opts = DaprdOptions::new(unique("task-service"), Some(tasks.addr.port()));
    opts.grpc_port = Some(task_grpc);
    let task_sidecar = Daprd::start(opts).await.context("task-service's daprd")?;
    let procs = ProcessSet::new()
        .this_process("bench")
        .process("daprd task-service", task_sidecar.pid())
        .process("Kafka", kafka_pid())
        .process("daprd sync", sync_sidecar.pid())
        .process("sync-service", Some(pid));
    let api = TaskServiceClient::connect(format!("http://{}", tasks.addr)).await?;

    // Until sync-service receives changes (its group starts at the newest offset once joined).
    let probe = AsciiMetadataValue::try_from("watch-probe")?;
    let mut probe_watch = SyncServiceClient::new(sync_endpoint.connect().await?)
        .watch_tasks(as_user(&probe, WatchTasksRequest::default()))
        .await?
        .into_inner();
    let create = |mut api: TaskServiceClient<Channel>, who: AsciiMetadataValue, title: String| async move {
        api.create_task(as_user(
            &who,
            CreateTaskRequest {
                task: Some(Task {
                    title,
                    ..Task::default()
                }),
                ..Default::default()
            },
        ))
        .await
    };
    let warm = Instant::now() + Duration::from_secs(120);
    loop {
        create(api.clone(), probe.clone(), "probe".into()).await?;
        match tokio::time::timeout(Duration::from_millis(500), probe_watch.message()).await {
            Ok(Ok(Some(m))) if matches!(m.message, Some(Message::Change(_))) => break,
            _ => ensure!(
                Instant::now() < warm,
                "sync-service never received a change"
            ),
        }
    }
    drop(probe_watch);

    // The streams.
    let channels: Vec<Channel> = {
        let mut out = Vec::new();
        for _ in 0..connections {
            out.push(sync_endpoint.connect().await?);
        }
        out
    };
    let opened = Arc::new(Barrier::new(streams + 1));
    let delivered = Arc::new(AtomicU64::new(0));
    let open_started = Instant::now();
    let mut readers = Vec::with_capacity(streams);
    for i in 0..streams {
        let mut client = SyncServiceClient::new(channels[i % connections].clone());
        let who = AsciiMetadataValue::try_from(user(i % users))?;
        let opened = opened.clone();
        let delivered = delivered.clone();
        let changes_of_user = (0..rate * seconds)
            .filter(|k| k % users == i % users)
            .count() as u64;
        readers.push(tokio::spawn(async move {
            let mut seen = Seen {
                latencies: histogram()?,
                received: 0,
                last_at: None,
                out_of_order: 0,
            };
            let stream = client
                .watch_tasks(as_user(&who, WatchTasksRequest::default()))
                .await;
            opened.wait().await;
            let mut stream = stream?.into_inner();
            let mut last_seq = 0;
            while seen.received < changes_of_user {
                let Some(m) = stream.message().await? else {
                    bail!("a stream ended early");
                };
                let at = Instant::now();
                let now = Utc::now();
                match m.message {
                    Some(Message::Change(c)) => {
                        if last_seq != 0 && c.user_seq != last_seq + 1 {
                            seen.out_of_order += 1;
                        }
                        last_seq = c.user_seq;
                        if let Some(t) = c.occurred_at.as_ref().and_then(todo_proto::from_timestamp)
                        {
                            let lat = (now - t).to_std().unwrap_or_default();
                            seen.latencies.record(micros(lat))?;
                        }
                        seen.received += 1;
                        seen.last_at = Some(at);
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Message::Resync(r)) => bail!("RESYNC ({})", r.reason),
                    _ => {}
                }
            }
            anyhow::Ok(seen)
        }));
    }
    opened.wait().await;
    let open_took = open_started.elapsed();
    let rss_open = status_kib(pid, "VmRSS:");

    // The load: open loop at `rate` per second.
    let total = rate * seconds;
    let meter = procs.start();
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut sent = 0usize;
    let mut calls = Vec::with_capacity(total);
    let who: Vec<AsciiMetadataValue> = (0..users)
        .map(|u| AsciiMetadataValue::try_from(user(u)))
        .collect::<Result<_, _>>()?;
    while sent < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as usize).min(total);
        while sent < due {
            calls.push(tokio::spawn(create(
                api.clone(),
                who[sent % users].clone(),
                format!("change {sent}"),
            )));
            sent += 1;
        }
    }
    let mut failed = 0;
    for c in calls {
        if !matches!(c.await, Ok(Ok(_))) {
            failed += 1;
        }
    }
    ensure!(failed == 0, "{failed} CreateTask calls failed");
    let committed = start.elapsed();

    // Every stream gets exactly its user's changes.
    let mut all = histogram()?;
    let mut received = 0u64;
    let mut out_of_order = 0u64;
    let mut last = start;
    let wait_until = Instant::now() + timeout;
    for r in readers {
        let left = wait_until.saturating_duration_since(Instant::now());
        let seen = tokio::time::timeout(left, r).await.with_context(|| {
            format!(
                "not every stream received its changes within {timeout:?} ({} of {} delivered)",
                delivered.load(Ordering::Relaxed),
                total * streams / users
            )
        })???;
        all.add(&seen.latencies)?;
        received += seen.received;
        out_of_order += seen.out_of_order;
        if let Some(at) = seen.last_at {
            last = last.max(at);
        }
    }
    let wall = last - start;
    let usage = meter.stop();
    let cpu_ms = |name: &str| {
        usage
            .processes
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.cpu_ms)
    };
    let (sync_ms, self_ms) = (cpu_ms("sync-service"), cpu_ms("bench"));
    let (rss, hwm) = (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"));
    ensure!(
        out_of_order == 0,
        "{out_of_order} changes out of order or repeated"
    );
    let ms_per =
        |t: Option<f64>, n: u64| t.map_or("n/a".to_owned(), |t| format!("{:.3}", t / n as f64));

    println!("# bench-watch");
    println!();
    println!(
        "machine: {}, {} cores, {}; daprd {}, Kafka {}",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem_total(),
        daprd_version().await.unwrap_or_default(),
        kafka_version()
    );
    println!("command: {}", command("bench_watch", &[]));
    println!();
    println!(
        "{streams} streams of {users} users over {connections} HTTP/2 connections (opened in {:.1} s); \
         {total} CreateTask at {rate}/s for {seconds} s (committed in {:.1} s)",
        open_took.as_secs_f64(),
        committed.as_secs_f64()
    );
    println!();
    println!(
        "| streams | changes/s | messages delivered | messages/s | commit → watcher p50 | p90 | p99 | max | sync-service CPU ms/change | ms/message | this process (task-service + clients) CPU ms/change | sync-service RSS open / after / peak |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {streams} | {rate} | {received} | {:.0} | {} ms | {} ms | {} ms | {} ms | {} | {} | {} | {} / {} / {} MiB |",
        received as f64 / wall.as_secs_f64(),
        quantile(&all, 0.5),
        quantile(&all, 0.9),
        quantile(&all, 0.99),
        quantile(&all, 1.0),
        ms_per(sync_ms, total as u64),
        ms_per(sync_ms, received),
        ms_per(self_ms, total as u64),
        rss_open / 1024,
        rss / 1024,
        hwm / 1024,
    );
    println!();
    let label = format!("{total} CreateTask at {rate}/s, {streams} streams");
    println!(
        "{}",
        usage_block(
            "Load (first commit → last delivery)",
            &procs,
            "change",
            &[UsageRow {
                phase: &label,
                ops: total as u64,
                usage: &usage,
            }]
        )
    );
    println!(
        "every stream received exactly its user's changes, in order, none twice ({received} = {total} changes × {} streams per user)",
        streams / users
    );
    drop(child);
    Ok(())
}
