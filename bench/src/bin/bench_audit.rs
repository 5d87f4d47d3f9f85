//! The audit-service benchmark: how fast the audit log takes task events in, next to the
//! raw pipe measured in the same run.
//!
//! Everything is real and on 127.0.0.1: the Kafka broker (`scripts/kafka.sh up`, reused when
//! it answers), one daprd per app, and audit-service as it is deployed: its release binary
//! (`target/release/audit-service`, which `just bench-audit` builds first) run as a child
//! process with `AUTH_MODE=dev`, its own database and its own daprd, under a fresh
//! `TOPIC_PREFIX`. Events are protobuf `TaskEvent`s (task created) published by a publisher
//! app through its own daprd, exactly as the outbox relay publishes them.
//!
//! 1. Raw pipe, single-event delivery: `BENCH_EVENTS` events bulk-published (`publish_bulk`
//!    of `BENCH_BATCH`, one call in flight) to a fresh topic, delivered one event per
//!    `OnTopicEvent` to a consumer in this process that answers SUCCESS at once (after a
//!    warm-up of `BENCH_WARMUP` events on another topic). Events/s = events / (first publish
//!    → last delivery); latency = delivery − the publish instant carried in `occurred_at`.
//! 2. Audit burst, per database (SQLite file; PostgreSQL when `DATABASE_URL_PG` is set, on a
//!    fresh database dropped afterwards): after a warm-up of `BENCH_WARMUP` events, the same
//!    number of events bulk-published the same way to the prefix's `task-events`, over
//!    `BENCH_USERS` users (partition keys). Events/s = events / (first publish → the last
//!    entry's `recorded_at`); lag = `recorded_at` − `occurred_at` of every entry, read back
//!    through `ListActivity` (dev auth: `x-user-id`). Completion is polled with a `COUNT(*)`
//!    on the audit database every 50 ms (cheaper than paging through the API while the load
//!    runs); the entries are read through the API once all are there.
//! 3. Audit sustained (SQLite): open loop at `BENCH_RATE` events/s for `BENCH_SECONDS` s,
//!    one `publish` per event, sent on schedule by a 1 ms tokio interval, each publish a task
//!    of its own (at most `BENCH_IN_FLIGHT` in flight); lag as above.
//!
//! CPU per event is the audit-service process's utime + stime (`/proc/<pid>/stat`) from the
//! first publish to the moment all entries were counted, divided by the events; over the
//! same span, every process of the path is measured the same way (`todo_harness::processes`:
//! this process, each daprd, Kafka's JVM, audit-service, the PostgreSQL server) with its
//! peak RSS.
//!
//! Every entry is counted by `event_id`: the benchmark exits non-zero when an entry is
//! missing or stored twice, or a phase does not complete within `BENCH_TIMEOUT_SECS`.
//!
//! Run with `just bench-audit`, i.e. `cargo build --release -p audit-service` then `cargo
//! run --release -p todo-bench --bin bench_audit`. Environment: `BENCH_EVENTS` (5000),
//! `BENCH_WARMUP` (500), `BENCH_BATCH` (100), `BENCH_USERS` (20), `BENCH_RATE` (1000),
//! `BENCH_SECONDS` (10), `BENCH_IN_FLIGHT` (256), `BENCH_TIMEOUT_SECS` (60 per phase),
//! `DATABASE_URL_PG` (the PostgreSQL server for the PostgreSQL phase; unset: no such phase),
//! `AUDIT_SERVICE_BIN` (the binary; default `target/release/audit-service`); audit-service's
//! own `AUDIT_BULK_MAX_MESSAGES`, `AUDIT_BULK_MAX_AWAIT_MS` and `DATABASE_MAX_CONNECTIONS`
//! reach it when set.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use audit_service::db::entry;
use chrono::{DateTime, Utc};
use dapr_appcallback::{Event, Outcome, Route, Subscriptions};
use dapr_publisher::{OutgoingEvent, Publisher};
use hdrhistogram::Histogram;
use sea_orm::{
    ColumnTrait, Database, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
};
use todo_bench::{
    api,
    pipe::{self, Phase, serve},
    report::{command, histogram, micros, ms, quantile, server_version, usage_block},
};
use todo_harness::{
    Daprd, DaprdOptions,
    bench::{CpuSample, cores_used, env_usize, process_ticks},
    ensure_kafka, free_port, kafka_brokers, kafka_pid, log_dir,
    machine::{cpu_model, daprd_version, kafka_version, log_complaints, mem_total},
    pg,
    processes::{PhaseUsage, ProcessSet, UsageRow},
    repo_root, unique,
};
use todo_proto::todo::{
    audit::v1::{ListActivityRequest, audit_service_client::AuditServiceClient},
    events::v1::{TaskEvent, TaskEventKind},
    v1::Task,
};
use todo_topology::{Topics, components::PUBSUB, event_types, topics};
use tokio::{
    process::{Child, Command},
    sync::Semaphore,
    task::JoinSet,
    time::{Instant, MissedTickBehavior},
};
use tonic::{Request, metadata::AsciiMetadataValue, transport::Channel};

/// The goals: audit lag p99 at task-service's sustained mutation rate, and burst
/// ingestion at least the raw pipe's single-event delivery rate.
const GOAL_LAG_P99_US: u64 = 200_000;
const GOAL_RATE: usize = 1_000;
/// ListActivity's largest page.
const PAGE_SIZE: i32 = 500;
/// How often completion is polled (a `COUNT(*)` on the audit database).
const POLL: Duration = Duration::from_millis(50);
/// How long audit-service may take to answer after its start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// What every daprd here warns at start, by design of a local run: left out of the report.
const STARTUP_WARNINGS: [&str; 4] = [
    "mTLS is disabled",
    "Actor runtime disabled",
    "No scheduler host addresses",
    "App channel is not initialized",
];
/// audit-service's variables that reach it from this process's environment when set.
const PASSED_THROUGH: [&str; 3] = [
    "AUDIT_BULK_MAX_MESSAGES",
    "AUDIT_BULK_MAX_AWAIT_MS",
    "DATABASE_MAX_CONNECTIONS",
];

/// What to run, from the environment.
#[derive(Debug, Clone)]
struct Config {
    events: usize,
    warmup: usize,
    batch: usize,
    users: usize,
    rate: usize,
    seconds: usize,
    in_flight: usize,
    timeout: Duration,
    /// `DATABASE_URL_PG`: the server of the PostgreSQL phase, if any.
    pg_admin_url: Option<String>,
    binary: PathBuf,
}

impl Config {
    fn from_env() -> anyhow::Result<Self> {
        let binary = match std::env::var("AUDIT_SERVICE_BIN") {
            Ok(p) if !p.trim().is_empty() => PathBuf::from(p),
            _ => std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| repo_root().join("target"))
                .join("release/audit-service"),
        };
        ensure!(
            binary.exists(),
            "audit-service binary not found at {}: build it with `cargo build --release -p \
             audit-service` (`just bench-audit` does) or point AUDIT_SERVICE_BIN at it",
            binary.display()
        );
        Ok(Self {
            events: env_usize("BENCH_EVENTS", 5_000)?,
            warmup: env_usize("BENCH_WARMUP", 500)?,
            batch: env_usize("BENCH_BATCH", 100)?,
            users: env_usize("BENCH_USERS", 20)?,
            rate: env_usize("BENCH_RATE", GOAL_RATE)?,
            seconds: env_usize("BENCH_SECONDS", 10)?,
            in_flight: env_usize("BENCH_IN_FLIGHT", 256)?,
            timeout: Duration::from_secs(env_usize("BENCH_TIMEOUT_SECS", 60)? as u64),
            pg_admin_url: std::env::var(pg::ADMIN_URL_VAR)
                .ok()
                .filter(|v| !v.trim().is_empty()),
            binary: std::fs::canonicalize(&binary).unwrap_or(binary),
        })
    }
}

/// A task creation of user `<tag>-user-<seq % users>` on `topic`, stamped with the current
/// instant as its `occurred_at`.
fn stamped_event(topic: &str, tag: &str, seq: usize, users: usize) -> OutgoingEvent {
    let task = Task {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: user(tag, seq % users),
        ..api::task(seq, "bench_audit")
    };
    pipe::stamped_event(
        topic,
        TaskEventKind::Created,
        event_types::TASK_CREATED,
        vec![],
        task,
    )
}

fn user(tag: &str, n: usize) -> String {
    format!("{tag}-user-{n:03}")
}

/// Publishes `events` events of `tag` to `topic` with `publish_bulk` of `batch`, one call in
/// flight, by `deadline`.
async fn publish_in_bulk(
    publisher: &Publisher,
    topic: &str,
    tag: &str,
    events: usize,
    cfg: &Config,
    deadline: Instant,
) -> anyhow::Result<()> {
    let mut first = 0;
    while first < events {
        let last = (first + cfg.batch).min(events);
        let batch: Vec<_> = (first..last)
            .map(|seq| stamped_event(topic, tag, seq, cfg.users))
            .collect();
        let outcome = tokio::time::timeout_at(deadline, publisher.publish_bulk(&batch))
            .await
            .with_context(|| format!("publishing to {topic} took longer than {:?}", cfg.timeout))?
            .with_context(|| format!("bulk-publishing events {first}..{last} to {topic}"))?;
        if let Some((id, err)) = outcome.failed.first() {
            bail!(
                "{} of {} entries of a batch failed, e.g. {id}: {err}",
                outcome.failed.len(),
                batch.len()
            );
        }
        first = last;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The figures.

/// One row of the report.
struct Figures {
    path: String,
    load: String,
    events: usize,
    /// First publish → last delivery (raw pipe) or last `recorded_at` (audit).
    elapsed: Duration,
    /// Delivery (raw pipe) or `recorded_at` (audit) − `occurred_at`, in µs.
    lag_us: Histogram<u64>,
    /// audit-service's CPU per event, in ms.
    cpu_ms_per_event: Option<f64>,
    /// Cores used from the first publish to completion: "this process / whole machine".
    cores: String,
    /// First publish → all entries counted (audit: polled every [`POLL`]).
    seen_complete: Option<Duration>,
    /// Sustained load: events sent per second, and the latest send behind its schedule.
    sent: Option<(f64, Duration)>,
    /// CPU and memory of each process over the same span as `cores`.
    usage: Option<PhaseUsage>,
}

impl Figures {
    fn per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn p99_us(&self) -> u64 {
        if self.lag_us.is_empty() {
            u64::MAX
        } else {
            self.lag_us.value_at_quantile(0.99)
        }
    }
}

// ---------------------------------------------------------------------------------------
// The raw pipe.

async fn run_pipe(
    publisher: &Publisher,
    topic: &str,
    phase: &Phase,
    events: usize,
    cfg: &Config,
    procs: &ProcessSet,
) -> anyhow::Result<Figures> {
    let deadline = Instant::now() + cfg.timeout;
    let (started, c0, meter) = (Instant::now(), CpuSample::now(), procs.start());
    publish_in_bulk(publisher, topic, "pipe", events, cfg, deadline).await?;
    phase
        .wait_for(events, deadline, &format!("raw pipe on {topic}"))
        .await?;
    let cores = cores_used(c0, CpuSample::now(), started.elapsed());
    let usage = meter.stop();
    let (got, duplicates, unreadable, lag_us, last) = phase.snapshot();
    ensure!(
        got == events && duplicates == 0 && unreadable == 0,
        "raw pipe on {topic}: {got} distinct events of {events}, {duplicates} duplicates, \
         {unreadable} unreadable"
    );
    Ok(Figures {
        path: "raw pipe, single-event delivery".to_owned(),
        load: format!("publish_bulk of {}, 1 in flight", cfg.batch),
        events,
        elapsed: last.unwrap_or(started).duration_since(started),
        lag_us,
        cpu_ms_per_event: None,
        cores,
        seen_complete: None,
        sent: None,
        usage: Some(usage),
    })
}

// ---------------------------------------------------------------------------------------
// audit-service.

/// audit-service as a child process, with its daprd and a connection to its database.
struct Audit {
    database: &'static str,
    child: Child,
    pid: u32,
    sidecar: Daprd,
    client: AuditServiceClient<Channel>,
    /// For the completion poll only.
    db: DatabaseConnection,
    version: String,
    topic: String,
    log_path: PathBuf,
    /// The processes on the path: this process (the publisher), its daprd, Kafka,
    /// audit-service's daprd, audit-service, and the PostgreSQL server when it is used.
    processes: ProcessSet,
}

impl Audit {
    async fn start(
        database: &'static str,
        url: &str,
        cfg: &Config,
        publisher_pid: Option<u32>,
    ) -> anyhow::Result<Self> {
        let prefix = unique("bench-audit");
        let topic = Topics::new(&prefix).task_events;
        let (app_port, grpc_port) = (free_port()?, free_port()?);
        let log_path = log_dir().join(format!("{prefix}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut child = Command::new(&cfg.binary)
            .env("APP_ADDR", format!("127.0.0.1:{app_port}"))
            .env("AUTH_MODE", "dev")
            .env("DATABASE_URL", url)
            .env("DAPR_GRPC_PORT", grpc_port.to_string())
            .env("TOPIC_PREFIX", &prefix)
            .env("METRICS_ADDR", "off")
            .env("RUST_LOG", "warn")
            .env_remove("APP_API_TOKEN")
            .env_remove("DAPR_API_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", cfg.binary.display()))?;
        let pid = child
            .id()
            .context("audit-service exited as soon as it started")?;
        let client = connect(&mut child, app_port, &log_path).await?;
        let mut opts = DaprdOptions::new(unique("audit-service"), Some(app_port));
        opts.grpc_port = Some(grpc_port);
        let sidecar = Daprd::start(opts)
            .await
            .context("starting audit-service's daprd")?;
        let db = Database::connect(url)
            .await
            .context("opening the audit database to poll it")?;
        let version = server_version(&db).await;
        let mut processes = ProcessSet::new()
            .this_process("bench")
            .process("daprd publisher", publisher_pid)
            .process("Kafka", kafka_pid())
            .process("daprd audit", sidecar.pid())
            .process("audit-service", Some(pid));
        if let (true, Some(admin)) = (url.starts_with("postgres"), &cfg.pg_admin_url) {
            processes = processes.process_tree("PostgreSQL", pg::server_pid(admin).await.ok());
        }
        Ok(Self {
            database,
            child,
            pid,
            sidecar,
            client,
            db,
            version,
            topic,
            log_path,
            processes,
        })
    }

    /// Entries stored of users `<tag>-user-*`.
    async fn count(&self, tag: &str) -> anyhow::Result<u64> {
        Ok(entry::Entity::find()
            .filter(entry::Column::UserId.starts_with(format!("{tag}-user-")))
            .count(&self.db)
            .await?)
    }

    /// Waits until `n` entries of `tag` are stored, by `deadline`.
    async fn wait_count(&mut self, tag: &str, n: usize, deadline: Instant) -> anyhow::Result<()> {
        loop {
            let got = self.count(tag).await?;
            if got >= n as u64 {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "audit-service exited ({status}) with {got} of {n} {tag} entries stored; \
                     log: {}",
                    self.log_path.display()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} {tag}: {got} of {n} entries stored in time (logs: {} and {})",
                    self.database,
                    self.log_path.display(),
                    self.sidecar.log_path.display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every entry of users `<tag>-user-0 .. users`, through ListActivity: (event id,
    /// occurred_at, recorded_at).
    async fn entries(
        &mut self,
        tag: &str,
        users: usize,
    ) -> anyhow::Result<Vec<(String, DateTime<Utc>, DateTime<Utc>)>> {
        let mut out = Vec::new();
        for u in 0..users {
            let who = AsciiMetadataValue::try_from(user(tag, u))?;
            let mut token = String::new();
            loop {
                let mut req = Request::new(ListActivityRequest {
                    page_size: PAGE_SIZE,
                    page_token: token,
                    ..ListActivityRequest::default()
                });
                req.metadata_mut().insert("x-user-id", who.clone());
                let page = self
                    .client
                    .list_activity(req)
                    .await
                    .with_context(|| format!("ListActivity of {}", user(tag, u)))?
                    .into_inner();
                for e in page.entries {
                    let at = |t: Option<&prost_types::Timestamp>, what: &str| {
                        t.and_then(todo_proto::from_timestamp)
                            .with_context(|| format!("entry {} without {what}", e.event_id))
                    };
                    let occurred = at(e.occurred_at.as_ref(), "occurred_at")?;
                    let recorded = at(e.recorded_at.as_ref(), "recorded_at")?;
                    out.push((e.event_id, occurred, recorded));
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        Ok(out)
    }

    fn ticks(&self) -> Option<u64> {
        process_ticks(&self.pid.to_string())
    }

    /// The figures of the `events` entries of `tag`, published from `started`
    /// (`started_at` on the wall clock), all counted at `seen`.
    #[allow(clippy::too_many_arguments)]
    async fn figures(
        &mut self,
        tag: &str,
        events: usize,
        users: usize,
        (started, started_at): (Instant, DateTime<Utc>),
        seen: Instant,
        cpu: (Option<u64>, Option<u64>, String),
        (path, load): (String, String),
    ) -> anyhow::Result<Figures> {
        let entries = self.entries(tag, users).await?;
        let ids: HashSet<&str> = entries.iter().map(|(id, _, _)| id.as_str()).collect();
        ensure!(
            entries.len() == events && ids.len() == events,
            "{} {tag}: {} entries ({} distinct event ids) for {events} events published",
            self.database,
            entries.len(),
            ids.len()
        );
        let mut lag_us = histogram()?;
        let mut last = started_at;
        for (_, occurred, recorded) in &entries {
            let us = (*recorded - *occurred).num_microseconds().unwrap_or(0);
            lag_us.saturating_record(u64::try_from(us).unwrap_or(0).max(1));
            last = last.max(*recorded);
        }
        let (t0, t1, cores) = cpu;
        let cpu_ms_per_event = match (t0, t1) {
            // USER_HZ is 100: a tick is 10 ms.
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 * 10.0 / events as f64),
            _ => None,
        };
        Ok(Figures {
            path,
            load,
            events,
            elapsed: (last - started_at).to_std().unwrap_or_default(),
            lag_us,
            cpu_ms_per_event,
            cores,
            seen_complete: Some(seen.duration_since(started)),
            sent: None,
            usage: None,
        })
    }

    /// Bulk-publishes `events` events of `tag` and waits for their entries.
    async fn burst(
        &mut self,
        publisher: &Publisher,
        tag: &str,
        events: usize,
        cfg: &Config,
    ) -> anyhow::Result<Figures> {
        let deadline = Instant::now() + cfg.timeout;
        let (t0, c0, meter) = (self.ticks(), CpuSample::now(), self.processes.start());
        let started = (Instant::now(), Utc::now());
        publish_in_bulk(publisher, &self.topic, tag, events, cfg, deadline).await?;
        self.wait_count(tag, events, deadline).await?;
        let seen = Instant::now();
        let usage = meter.stop();
        let cpu = (
            t0,
            self.ticks(),
            cores_used(c0, CpuSample::now(), started.0.elapsed()),
        );
        let what = (
            format!("audit burst, {}", self.database),
            format!("publish_bulk of {}, 1 in flight", cfg.batch),
        );
        let mut f = self
            .figures(tag, events, cfg.users, started, seen, cpu, what)
            .await?;
        f.usage = Some(usage);
        Ok(f)
    }

    /// Publishes `rate` events/s for `seconds` s, one `publish` each, on schedule; waits for
    /// their entries.
    async fn sustained(
        &mut self,
        publisher: &Publisher,
        tag: &'static str,
        cfg: &Config,
    ) -> anyhow::Result<Figures> {
        let events = cfg.rate * cfg.seconds;
        let deadline = Instant::now() + Duration::from_secs(cfg.seconds as u64) + cfg.timeout;
        let slots = Arc::new(Semaphore::new(cfg.in_flight));
        let (t0, c0, meter) = (self.ticks(), CpuSample::now(), self.processes.start());
        let started = (Instant::now(), Utc::now());
        let mut ticker = tokio::time::interval(Duration::from_millis(1));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut sends = JoinSet::new();
        let (mut sent, mut behind) = (0, Duration::ZERO);
        while sent < events {
            ticker.tick().await;
            let now = Instant::now();
            let due = ((now.duration_since(started.0).as_secs_f64() * cfg.rate as f64) as usize
                + 1)
            .min(events);
            while sent < due {
                let slot = slots.clone().acquire_owned().await?;
                let scheduled = started.0 + Duration::from_secs_f64(sent as f64 / cfg.rate as f64);
                behind = behind.max(Instant::now().saturating_duration_since(scheduled));
                let event = stamped_event(&self.topic, tag, sent, cfg.users);
                let publisher = publisher.clone();
                let seq = sent;
                sends.spawn(async move {
                    let out = publisher
                        .publish(&event)
                        .await
                        .with_context(|| format!("publishing event {seq}"));
                    drop(slot);
                    out
                });
                sent += 1;
            }
            // Reap what has finished, so the set stays small.
            while let Some(done) = sends.try_join_next() {
                done.context("a publish task failed")??;
            }
        }
        let sent_for = started.0.elapsed();
        while let Some(done) = tokio::time::timeout_at(deadline, sends.join_next())
            .await
            .context("publishing did not finish in time")?
        {
            done.context("a publish task failed")??;
        }
        self.wait_count(tag, events, deadline).await?;
        let seen = Instant::now();
        let usage = meter.stop();
        let cpu = (
            t0,
            self.ticks(),
            cores_used(c0, CpuSample::now(), started.0.elapsed()),
        );
        let what = (
            format!("audit sustained, {}", self.database),
            format!(
                "open loop: publish {}/s for {} s, ≤ {} in flight",
                cfg.rate, cfg.seconds, cfg.in_flight
            ),
        );
        let mut f = self
            .figures(tag, events, cfg.users, started, seen, cpu, what)
            .await?;
        f.sent = Some((events as f64 / sent_for.as_secs_f64(), behind));
        f.usage = Some(usage);
        Ok(f)
    }

    /// Stops the sidecar, then the service; answers their log paths.
    async fn stop(mut self) -> anyhow::Result<Logs> {
        let stopped = self.sidecar.stop().await;
        self.db.close().await?;
        self.child.start_kill()?;
        self.child.wait().await?;
        stopped.context("stopping audit-service's daprd")?;
        Ok(Logs {
            database: self.database,
            version: self.version,
            app: self.log_path,
            sidecar_id: self.sidecar.options.app_id.clone(),
            sidecar: self.sidecar.log_path.clone(),
            processes: self.processes,
        })
    }
}

/// Where a run's audit-service and daprd logged.
struct Logs {
    database: &'static str,
    version: String,
    app: PathBuf,
    sidecar_id: String,
    sidecar: PathBuf,
    processes: ProcessSet,
}

/// Connects to audit-service on `port` once it answers (at most [`START_TIMEOUT`]).
async fn connect(
    child: &mut Child,
    port: u16,
    log: &Path,
) -> anyhow::Result<AuditServiceClient<Channel>> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "audit-service exited during start ({status}); log: {}",
                log.display()
            );
        }
        match AuditServiceClient::connect(format!("http://127.0.0.1:{port}")).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= deadline => {
                bail!(
                    "audit-service did not answer on 127.0.0.1:{port} within {START_TIMEOUT:?}: \
                     {e}; log: {}",
                    log.display()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One database's phases: warm-up, burst and (`sustained`) the open loop.
async fn measure(
    database: &'static str,
    url: &str,
    publisher: &Publisher,
    sustained: bool,
    cfg: &Config,
    publisher_pid: Option<u32>,
) -> anyhow::Result<(Vec<Figures>, Logs)> {
    let mut audit = Audit::start(database, url, cfg, publisher_pid).await?;
    let result = async {
        eprintln!(
            "bench_audit: {database}: warm-up, {} events on {}",
            cfg.warmup, audit.topic
        );
        audit.burst(publisher, "warm", cfg.warmup, cfg).await?;
        eprintln!("bench_audit: {database}: burst, {} events", cfg.events);
        let mut out = vec![audit.burst(publisher, "burst", cfg.events, cfg).await?];
        eprintln!(
            "bench_audit: {database}: burst: {:.0} events/s",
            out[0].per_sec()
        );
        if sustained {
            eprintln!(
                "bench_audit: {database}: sustained, {}/s for {} s",
                cfg.rate, cfg.seconds
            );
            out.push(audit.sustained(publisher, "sust", cfg).await?);
        }
        anyhow::Ok(out)
    }
    .await;
    let logs = audit.stop().await;
    let figures = result?;
    Ok((figures, logs?))
}

// ---------------------------------------------------------------------------------------
// The report.

fn table(pipe_rate: f64, figures: &[Figures]) -> String {
    let mut out = String::from(
        "| path | load | events | events/s | ratio to raw pipe | lag p50 ms | lag p99 ms | \
         lag max ms | CPU ms/event (audit-service) | CPU cores (bench process / host) |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for f in figures {
        let h = &f.lag_us;
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} | {} | {} | {} | {} | {} |\n",
            f.path,
            f.load,
            f.events,
            f.per_sec(),
            f.per_sec() / pipe_rate,
            quantile(h, 0.50),
            quantile(h, 0.99),
            quantile(h, 1.0),
            f.cpu_ms_per_event
                .map_or_else(|| "–".to_owned(), |c| format!("{c:.2}")),
            f.cores,
        ));
    }
    out
}

fn print_log(what: &str, path: &Path, complaints: &[String]) {
    println!(
        "- {what} log: {} ({} warning/error lines besides the usual startup ones)",
        std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display(),
        complaints.len()
    );
    for line in complaints.iter().take(3) {
        println!("  - `{line}`");
    }
}

/// The lines of audit-service's log (it runs with `RUST_LOG=warn`) without terminal colours,
/// but for the dev-auth warning every run here gives.
fn app_log_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An SGR sequence: ESC [ … m.
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("AUTH_MODE=dev"))
        .map(str::to_owned)
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::from_env()?;
    // What the machine does without us: other busy processes skew every figure.
    let (t0, c0) = (Instant::now(), CpuSample::now());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_load = cores_used(c0, CpuSample::now(), t0.elapsed());
    ensure_kafka().await?;

    // 1. The raw pipe: a consumer in this process, one event per OnTopicEvent.
    let pipe_warm_topic = unique("bench-audit-pipe-warmup");
    let pipe_topic = unique("bench-audit-pipe");
    let (pipe_warm, pipe_phase) = (Phase::new()?, Phase::new()?);
    let mut subs = Subscriptions::builder();
    for (topic, phase) in [(&pipe_warm_topic, &pipe_warm), (&pipe_topic, &pipe_phase)] {
        let p = phase.clone();
        subs = subs.route(
            Route::new(PUBSUB, topic.clone(), topics::dead_letter(topic)),
            move |e: Event<TaskEvent>| {
                p.record(&e.message);
                async { Outcome::Success }
            },
        );
    }
    let port = serve(subs.build(), true).await?;
    let mut consumer = Daprd::start(DaprdOptions::new(unique("bench-audit-sub"), Some(port)))
        .await
        .context("starting the consumer's daprd")?;
    let (publ, publisher) = todo_harness::recorder::publisher("bench-audit-pub").await?;
    let pipe_procs = ProcessSet::new()
        .this_process("bench")
        .process("daprd publisher", publ.pid())
        .process("Kafka", kafka_pid())
        .process("daprd consumer", consumer.pid());
    eprintln!(
        "bench_audit: raw pipe warm-up, {} events on {pipe_warm_topic}",
        cfg.warmup
    );
    run_pipe(
        &publisher,
        &pipe_warm_topic,
        &pipe_warm,
        cfg.warmup,
        &cfg,
        &pipe_procs,
    )
    .await?;
    eprintln!(
        "bench_audit: raw pipe measured, {} events on {pipe_topic}",
        cfg.events
    );
    let pipe = run_pipe(
        &publisher,
        &pipe_topic,
        &pipe_phase,
        cfg.events,
        &cfg,
        &pipe_procs,
    )
    .await?;
    let pipe_rate = pipe.per_sec();
    eprintln!("bench_audit: raw pipe: {pipe_rate:.0} events/s");
    consumer
        .stop()
        .await
        .context("stopping the consumer's daprd")?;

    // 2. and 3. audit-service, per database.
    let mut figures = vec![pipe];
    let mut logs = Vec::new();
    let dir = tempfile::tempdir()?;
    let sqlite_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("audit.db").display()
    );
    let (f, l) = measure("SQLite", &sqlite_url, &publisher, true, &cfg, publ.pid()).await?;
    figures.extend(f);
    logs.push(l);
    if let Some(admin) = &cfg.pg_admin_url {
        let (name, url) = pg::create_database(admin, "bench_audit").await?;
        eprintln!("bench_audit: PostgreSQL: database {name} created");
        let result = measure("PostgreSQL", &url, &publisher, false, &cfg, publ.pid()).await;
        let dropped = pg::drop_database(admin, &name).await;
        let (f, l) = result?;
        dropped.with_context(|| format!("dropping the benchmark database {name}"))?;
        eprintln!("bench_audit: PostgreSQL: database {name} dropped");
        // The PostgreSQL burst goes right after SQLite's burst.
        let at = figures.len() - 1;
        for (i, row) in f.into_iter().enumerate() {
            figures.insert(at + i, row);
        }
        logs.push(l);
    } else {
        eprintln!("bench_audit: DATABASE_URL_PG is not set: no PostgreSQL phase");
    }
    drop(publisher);

    // The report.
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "## audit-service ingestion: daprd → Kafka → daprd (bulk) → audit-service → database\n"
    );
    println!("{}", table(pipe_rate, &figures));
    let usage_rows = |pick: &dyn Fn(&Figures) -> bool| -> Vec<UsageRow<'_>> {
        figures
            .iter()
            .filter(|f| pick(f))
            .filter_map(|f| {
                Some(UsageRow {
                    phase: &f.path,
                    ops: f.events as u64,
                    usage: f.usage.as_ref()?,
                })
            })
            .collect()
    };
    println!(
        "{}",
        usage_block(
            "Raw pipe (first publish → last delivery)",
            &pipe_procs,
            "event",
            &usage_rows(&|f| f.path.starts_with("raw pipe"))
        )
    );
    for l in &logs {
        println!(
            "{}",
            usage_block(
                &format!(
                    "audit-service, {} (first publish → all entries counted)",
                    l.database
                ),
                &l.processes,
                "event",
                &usage_rows(&|f| f.path.ends_with(&format!(", {}", l.database)))
            )
        );
    }
    println!("- command: {}", command("bench_audit", &PASSED_THROUGH));
    println!(
        "- machine: nproc {cpus}, {}, {} RAM; daprd {}; Kafka {} (single KRaft node, {}); \
         Kafka, every daprd, audit-service, the database server and this process (publisher, \
         raw-pipe consumer) all on these cores",
        cpu_model(),
        mem_total(),
        daprd_version().await?,
        kafka_version(),
        kafka_brokers()
    );
    println!("- CPU busy in the second before the run (this process / host): {idle_load} cores");
    for l in &logs {
        println!(
            "- {} {}: audit-service {} (release binary, child process), `AUTH_MODE=dev`, \
             bulk subscription at its defaults unless AUDIT_BULK_* is set",
            l.database,
            l.version,
            cfg.binary.display()
        );
    }
    println!(
        "- workload: `TaskEvent` (task created) over {} users (partition keys); raw pipe and \
         bursts after {} warm-up events on the same consumer; events/s = events / (first \
         publish → last delivery, or the last entry's `recorded_at`); lag = delivery (raw \
         pipe) or `recorded_at` − `occurred_at` (stamped just before publish); `recorded_at` \
         is taken before the batch's INSERT and COMMIT",
        cfg.users, cfg.warmup
    );
    println!(
        "- CPU ms/event = audit-service's utime + stime from the first publish until all \
         entries were counted, / events; every process of the path (its daprd, the \
         publisher's, Kafka, the database server) is in the blocks above"
    );
    for f in &figures {
        let Some(seen) = f.seen_complete else {
            continue;
        };
        println!(
            "- {}: all entries counted {:.2} s after the first publish (polled every {} ms){}",
            f.path,
            seen.as_secs_f64(),
            POLL.as_millis(),
            f.sent.map_or_else(String::new, |(rate, behind)| format!(
                "; sent {rate:.0} events/s, at most {} ms behind schedule",
                ms(micros(behind))
            ))
        );
    }

    // Goals.
    for f in figures.iter().filter(|f| f.path.starts_with("audit burst")) {
        println!(
            "- goal burst ingestion ≥ the raw pipe's single-event delivery, {}: {:.0} vs {:.0} \
             events/s → {}",
            f.path.trim_start_matches("audit burst, "),
            f.per_sec(),
            pipe_rate,
            if f.per_sec() >= pipe_rate {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    for f in figures
        .iter()
        .filter(|f| f.path.starts_with("audit sustained"))
    {
        let verdict = if cfg.rate < GOAL_RATE {
            "not comparable (rate below the goal's)"
        } else if f.p99_us() <= GOAL_LAG_P99_US {
            "met"
        } else {
            "NOT met"
        };
        println!(
            "- goal lag p99 ≤ {} ms at {GOAL_RATE} events/s, {}: p99 {} ms at {}/s → {verdict}",
            ms(GOAL_LAG_P99_US),
            f.path.trim_start_matches("audit sustained, "),
            quantile(&f.lag_us, 0.99),
            cfg.rate
        );
    }

    print_log(
        &format!("daprd {}", publ.options.app_id),
        &publ.log_path,
        &log_complaints(&publ.log_path, &STARTUP_WARNINGS),
    );
    print_log(
        &format!("daprd {}", consumer.options.app_id),
        &consumer.log_path,
        &log_complaints(&consumer.log_path, &STARTUP_WARNINGS),
    );
    for l in &logs {
        print_log(
            &format!("daprd {} ({})", l.sidecar_id, l.database),
            &l.sidecar,
            &log_complaints(&l.sidecar, &STARTUP_WARNINGS),
        );
        print_log(
            &format!(
                "audit-service ({}, RUST_LOG=warn, the dev-auth warning left out)",
                l.database
            ),
            &l.app,
            &app_log_lines(&l.app),
        );
    }
    if let Some(admin) = &cfg.pg_admin_url {
        println!("- PostgreSQL server: {}", pg::redact(admin));
    }
    println!("- every entry stored exactly once (counted by event_id through ListActivity)");
    Ok(())
}
