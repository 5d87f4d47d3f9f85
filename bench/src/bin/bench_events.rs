//! The task-events benchmark: mutations through the outbox, relay, daprd and Kafka to a
//! consumer, next to the raw pipe measured in the same run.
//!
//! Everything is real and on 127.0.0.1: the Kafka broker (`scripts/kafka.sh up`, reused when
//! it answers), one daprd per app, task-service built in-process by `task_service::build`
//! (what `main` runs, `AUTH_MODE=dev`) on a fresh database, its outbox relay publishing
//! through its own daprd under a fresh `TOPIC_PREFIX`, and one consumer app (the AppCallback
//! runtime of dapr-appcallback, answering SUCCESS at once) behind its own daprd, subscribed
//! to every topic of the run from the start.
//!
//! 1. Raw pipe: a publisher app → its daprd → Kafka → the consumer's daprd → the consumer,
//!    `publish_bulk` with `BENCH_PIPE_BATCH` (100) events per call and one call in flight,
//!    as the relay publishes; `BENCH_PIPE_EVENTS` events after a warm-up on another topic,
//!    once per delivery mode: one event per `OnTopicEvent` call, then bulk subscribe with
//!    raw payloads (`Route::bulk_raw`, as the services and the task-events consumer below
//!    subscribe) of at most `BENCH_SUB_BATCH` (100) events per call, daprd
//!    waiting at most `BENCH_SUB_AWAIT_MS` (10) ms to fill one. Throughput = events / (first
//!    publish → last delivery); latency = delivery − the publish instant carried in
//!    `occurred_at`. The goals' share of the raw pipe is taken of the faster mode. (At
//!    5,000 events the bulk mode's phase lasted 0.4 s and read 9,300-13,900 events/s;
//!    20,000 take a second or more, about as long as the sustained mutations below.)
//! 2. Per database (`BENCH_DATABASES`, SQLite and PostgreSQL), after a warm-up:
//!    - sustained: `BENCH_MUTATIONS` mutations as chains of CreateTask → UpdateTask (title)
//!      → CompleteTask, `BENCH_CONCURRENCY` chains in flight over `BENCH_USERS` users;
//!      mutations/s end to end = task events delivered to the consumer / (first request →
//!      last delivery). The outbox depth (`SELECT COUNT(*)` of the outbox table) is sampled
//!      every `BENCH_SAMPLE_MS` ms; its growth while the load runs (least-squares slope) says
//!      whether the relay kept up.
//!    - open loop: CreateTask at `BENCH_RATE` (1000) per second for `BENCH_RATE_SECS` (5)
//!      s, sent on schedule by a pacing thread; commit → consumer latency = the consumer's
//!      receive instant − the event's `occurred_at`, which the service stamps inside the
//!      mutation's transaction just before it commits (so the figure includes the commit
//!      itself; both clocks are this process's).
//!
//! Each phase also reports, over the same span, CPU ms per event or mutation and peak RSS of
//! every process on the path (this process, each daprd, Kafka's JVM, the PostgreSQL server),
//! read from /proc by `todo_harness::processes`.
//!
//! Every task event is counted by `event_id`: the example exits non-zero when a request
//! failed, an event is missing or arrived twice, an event of nobody's arrived, or the
//! outbox is not empty at the end. Each mutation also writes a `TaskChanged` notice to
//! task-updates (nobody subscribes to it here), so the relay publishes two events per
//! mutation.
//!
//! Run with `just bench-events`, i.e. `cargo run --release -p todo-bench --bin
//! bench_events`. Environment: `BENCH_PIPE_EVENTS` (20000), `BENCH_PIPE_BATCH` (100),
//! `BENCH_SUB_BATCH` (100), `BENCH_SUB_AWAIT_MS` (10),
//! `BENCH_MUTATIONS` (6000, rounded up to whole chains of 3), `BENCH_WARMUP` (300
//! mutations), `BENCH_CONCURRENCY` (32), `BENCH_USERS` (100), `BENCH_CHANNELS` (4),
//! `BENCH_RATE` (1000), `BENCH_RATE_SECS` (5), `BENCH_SAMPLE_MS` (250), `BENCH_TIMEOUT_SECS`
//! (180 per phase), `BENCH_DATABASES` (`sqlite,postgres`; PostgreSQL is skipped with a note
//! when it does not answer and was not named), `DATABASE_URL_PG`
//! (postgres://todo:todo@127.0.0.1:15432/todo); the service's `DATABASE_MAX_CONNECTIONS`,
//! `MAX_CONCURRENT_REQUESTS`, `REQUEST_TIMEOUT_MS`, `OUTBOX_BATCH_SIZE` and `OUTBOX_POLL_MS`
//! are passed through when set.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};
use todo_service::cli::ServiceConfig as _;

use anyhow::{Context, bail, ensure};
use dapr_appcallback::{Event, Outcome, Route, Subscriptions};
use dapr_publisher::{OutgoingEvent, Publisher};
use hdrhistogram::Histogram;
use prost::Message as _;
use prost_types::FieldMask;
use sea_orm::{DatabaseConnection, EntityTrait, PaginatorTrait};
use task_service::{App, auth::AuthMode, db::entities::outbox, events::Topics};
use todo_bench::{
    api::{self, describe},
    db::{Db, databases_from_env, pg_admin_url},
    pipe::{self, Delivery, Phase, serve},
    report::{command, histogram, micros, ms, quantile, server_version, usage_block},
};
use todo_harness::{
    Daprd, DaprdOptions,
    bench::{CpuSample, cores_used, env_usize},
    ensure_kafka, free_port, kafka_brokers, kafka_pid,
    machine::{cpu_model, log_complaints, mem_total},
    pg,
    processes::{PhaseUsage, ProcessSet, UsageRow},
    unique,
};
use todo_proto::todo::{
    events::v1::{TaskEvent, TaskEventKind},
    v1::{
        CompleteTaskRequest, CreateTaskRequest, Task, UpdateTaskRequest,
        task_service_client::TaskServiceClient,
    },
};
use todo_topology::{components::PUBSUB, event_types, topics};
use tokio::{task::JoinSet, time::Instant};
use tonic::{Request, Status, metadata::AsciiMetadataValue, transport::Channel};

/// The goals: mutations/s end to end, as a share of the raw pipe, and commit →
/// consumer p99 at the open-loop rate.
const GOAL_MUTATIONS_PER_SEC: f64 = 5_000.0;
const GOAL_SHARE_OF_PIPE: f64 = 0.5;
const GOAL_P99_US: u64 = 100_000;
const GOAL_RATE: usize = 1_000;
/// Mutations per chain: CreateTask, UpdateTask, CompleteTask.
const CHAIN: usize = 3;
/// How many failure messages a phase keeps for the report.
const KEEP_ERRORS: usize = 3;
/// After the last expected delivery, how long to keep listening for duplicates.
const SETTLE: Duration = Duration::from_secs(2);

/// What to run, from the environment.
#[derive(Debug, Clone)]
struct Config {
    pipe_events: usize,
    pipe_batch: usize,
    /// The raw pipe's bulk-subscribe mode.
    pipe_bulk_delivery: Delivery,
    /// Chains of `CHAIN` mutations in the sustained phase.
    chains: usize,
    warmup_chains: usize,
    concurrency: usize,
    users: usize,
    channels: usize,
    rate: usize,
    rate_secs: usize,
    sample: Duration,
    timeout: Duration,
    databases: Vec<Db>,
    /// Whether the databases were named (then an unreachable PostgreSQL is an error).
    databases_named: bool,
    pg_admin_url: String,
}

impl Config {
    fn from_env() -> anyhow::Result<Self> {
        let (databases, databases_named) = databases_from_env()?;
        Ok(Self {
            pipe_events: env_usize("BENCH_PIPE_EVENTS", 20_000)?,
            pipe_batch: env_usize("BENCH_PIPE_BATCH", 100)?,
            pipe_bulk_delivery: Delivery::bulk_from_env()?,
            chains: env_usize("BENCH_MUTATIONS", 6_000)?.div_ceil(CHAIN),
            warmup_chains: env_usize("BENCH_WARMUP", 300)?.div_ceil(CHAIN),
            concurrency: env_usize("BENCH_CONCURRENCY", 32)?,
            users: env_usize("BENCH_USERS", 100)?,
            channels: env_usize("BENCH_CHANNELS", 4)?,
            rate: env_usize("BENCH_RATE", GOAL_RATE)?,
            rate_secs: env_usize("BENCH_RATE_SECS", 5)?,
            sample: Duration::from_millis(env_usize("BENCH_SAMPLE_MS", 250)? as u64),
            timeout: Duration::from_secs(env_usize("BENCH_TIMEOUT_SECS", 180)? as u64),
            databases,
            databases_named,
            pg_admin_url: pg_admin_url(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// The consumer.

/// The phases of one database's task-events topic, told apart by the user id's first word.
struct EventsSink {
    warm: Arc<Phase>,
    sustained: Arc<Phase>,
    open: Arc<Phase>,
    /// Events of a user no phase made.
    stray: AtomicUsize,
}

const WARM: &str = "warm";
const SUSTAINED: &str = "sust";
const OPEN: &str = "open";

impl EventsSink {
    fn new() -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            warm: Phase::new()?,
            sustained: Phase::new()?,
            open: Phase::new()?,
            stray: AtomicUsize::new(0),
        }))
    }

    fn record(&self, event: &TaskEvent) {
        match event.user_id.split('-').next() {
            Some(WARM) => self.warm.record(event),
            Some(SUSTAINED) => self.sustained.record(event),
            Some(OPEN) => self.open.record(event),
            _ => {
                self.stray.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The raw pipe.

/// The raw pipe's figures, in one delivery mode.
struct PipeFigures {
    delivery: Delivery,
    events: usize,
    /// First publish → last delivery.
    elapsed: Duration,
    latency_us: Histogram<u64>,
    duplicates: u64,
    cpu: String,
    /// CPU and memory of each process, first publish → last delivery.
    usage: PhaseUsage,
}

/// A creation of task number `seq`, of user `seq % users`, stamped with its publish time.
fn stamped_event(topic: &str, seq: usize, users: usize) -> OutgoingEvent {
    let task = Task {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: format!("pipe-user-{}", seq % users),
        ..api::task(seq, "bench_events")
    };
    pipe::stamped_event(
        topic,
        TaskEventKind::Created,
        event_types::TASK_CREATED,
        vec![],
        task,
    )
}

/// Publishes `events` events in bulk, one call in flight, to `topic` (which the consumer
/// takes as `delivery` says), and waits for every delivery.
async fn run_pipe(
    publisher: &Publisher,
    (topic, delivery): (&str, Delivery),
    phase: &Phase,
    events: usize,
    cfg: &Config,
    procs: &ProcessSet,
) -> anyhow::Result<PipeFigures> {
    let deadline = Instant::now() + cfg.timeout;
    let (started, c0, meter) = (Instant::now(), CpuSample::now(), procs.start());
    let mut first = 0;
    while first < events {
        let last = (first + cfg.pipe_batch).min(events);
        let batch: Vec<_> = (first..last)
            .map(|seq| stamped_event(topic, seq, cfg.users))
            .collect();
        let outcome = tokio::time::timeout_at(deadline, publisher.publish_bulk(&batch))
            .await
            .with_context(|| format!("publishing to {topic} took longer than {:?}", cfg.timeout))?
            .with_context(|| format!("bulk-publishing events {first}..{last}"))?;
        if let Some((id, err)) = outcome.failed.first() {
            bail!(
                "{} of {} entries of a batch failed, e.g. {id}: {err}",
                outcome.failed.len(),
                batch.len()
            );
        }
        first = last;
    }
    phase
        .wait_for(events, deadline, &format!("raw pipe on {topic}"))
        .await?;
    let cpu = cores_used(c0, CpuSample::now(), started.elapsed());
    let usage = meter.stop();
    tokio::time::sleep(SETTLE).await;
    let (got, duplicates, unreadable, latency_us, last) = phase.snapshot();
    ensure!(
        got == events,
        "raw pipe ({}): {got} distinct events arrived, {events} were published",
        delivery.describe()
    );
    ensure!(
        unreadable == 0,
        "raw pipe ({}): {unreadable} events unreadable",
        delivery.describe()
    );
    let elapsed = last.unwrap_or(started).duration_since(started);
    Ok(PipeFigures {
        delivery,
        events,
        elapsed,
        latency_us,
        duplicates,
        cpu,
        usage,
    })
}

// ---------------------------------------------------------------------------------------
// The load on task-service.

/// The connections to the service.
struct Clients {
    clients: Vec<TaskServiceClient<Channel>>,
    users: usize,
}

impl Clients {
    async fn connect(addr: std::net::SocketAddr, cfg: &Config) -> anyhow::Result<Self> {
        let clients = api::connect(addr, cfg.channels).await?;
        Ok(Self {
            clients,
            users: cfg.users,
        })
    }

    fn client(&self, seq: usize) -> TaskServiceClient<Channel> {
        self.clients[seq % self.clients.len()].clone()
    }

    /// A request as user `<tag>-user-<seq % users>` (dev auth trusts `x-user-id`).
    fn request<T>(&self, tag: &str, seq: usize, msg: T) -> Result<Request<T>, Status> {
        let mut r = Request::new(msg);
        let user = AsciiMetadataValue::try_from(format!("{tag}-user-{:03}", seq % self.users))
            .map_err(|e| Status::internal(format!("user id header: {e}")))?;
        r.metadata_mut().insert("x-user-id", user);
        Ok(r)
    }

    async fn create(&self, tag: &str, seq: usize) -> Result<Task, Status> {
        let msg = CreateTaskRequest {
            task: Some(api::task(seq, "bench_events")),
            request_id: uuid::Uuid::new_v4().to_string(),
            no_default_reminders: false,
        };
        Ok(self
            .client(seq)
            .create_task(self.request(tag, seq, msg)?)
            .await?
            .into_inner())
    }

    /// Create → update (title) → complete; answers how many of the 3 succeeded, or the
    /// first failure with that count.
    async fn chain(&self, tag: &str, seq: usize) -> Result<usize, (usize, String)> {
        let task = self.create(tag, seq).await.map_err(|s| (0, describe(&s)))?;
        let update = UpdateTaskRequest {
            task: Some(Task {
                id: task.id.clone(),
                title: format!("benchmark task {seq}, renamed"),
                ..Task::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["title".to_owned()],
            }),
        };
        self.client(seq)
            .update_task(
                self.request(tag, seq, update)
                    .map_err(|s| (1, describe(&s)))?,
            )
            .await
            .map_err(|s| (1, describe(&s)))?;
        let complete = CompleteTaskRequest {
            id: task.id,
            etag: String::new(),
        };
        self.client(seq)
            .complete_task(
                self.request(tag, seq, complete)
                    .map_err(|s| (2, describe(&s)))?,
            )
            .await
            .map_err(|s| (2, describe(&s)))?;
        Ok(CHAIN)
    }
}

/// What the load generator of one phase saw.
struct Load {
    /// Mutations answered OK.
    ok: usize,
    errors: usize,
    first_errors: Vec<String>,
    /// Request latency (the API's answer), successful requests only.
    api_us: Histogram<u64>,
    last_answer: Instant,
}

impl Load {
    fn new(at: Instant) -> anyhow::Result<Self> {
        Ok(Self {
            ok: 0,
            errors: 0,
            first_errors: Vec::new(),
            api_us: histogram()?,
            last_answer: at,
        })
    }

    fn fail(&mut self, what: String) {
        self.errors += 1;
        if self.first_errors.len() < KEEP_ERRORS {
            self.first_errors.push(what);
        }
    }

    fn merge(&mut self, other: Self) -> anyhow::Result<()> {
        self.ok += other.ok;
        self.errors += other.errors;
        for e in other.first_errors {
            if self.first_errors.len() < KEEP_ERRORS {
                self.first_errors.push(e);
            }
        }
        self.api_us.add(&other.api_us)?;
        self.last_answer = self.last_answer.max(other.last_answer);
        Ok(())
    }
}

/// `chains` chains, `concurrency` in flight; api_us records whole chains.
async fn closed_chains(
    clients: &Arc<Clients>,
    tag: &'static str,
    chains: usize,
    concurrency: usize,
) -> anyhow::Result<Load> {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.min(chains) {
        let (next, c) = (next.clone(), clients.clone());
        workers.spawn(async move {
            let mut out = Load::new(started)?;
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= chains {
                    return anyhow::Ok(out);
                }
                let sent = Instant::now();
                match c.chain(tag, seq).await {
                    Ok(n) => {
                        out.ok += n;
                        out.api_us.saturating_record(micros(sent.elapsed()));
                    }
                    Err((n, e)) => {
                        out.ok += n;
                        out.fail(e);
                    }
                }
                out.last_answer = Instant::now();
            }
        });
    }
    let mut total = Load::new(started)?;
    while let Some(joined) = workers.join_next().await {
        total.merge(joined.context("a load worker panicked")??)?;
    }
    Ok(total)
}

/// CreateTask at `rate` per second for `secs` seconds, on schedule (open loop).
///
/// A plain thread paces the sends (tokio's timer has a 1 ms granularity, as coarse as the
/// period itself) and spawns each request onto the runtime at the instant it is due.
async fn open_loop_create(
    clients: &Arc<Clients>,
    tag: &'static str,
    rate: usize,
    secs: usize,
) -> anyhow::Result<Load> {
    let total = rate * secs;
    let period_ns = 1e9 / rate as f64;
    let handle = tokio::runtime::Handle::current();
    let c = clients.clone();
    let (start, handles) = tokio::task::spawn_blocking(move || {
        let start = std::time::Instant::now();
        let mut handles = Vec::with_capacity(total);
        for k in 0..total {
            let due = start + Duration::from_nanos((k as f64 * period_ns) as u64);
            let now = std::time::Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let c = c.clone();
            handles.push(handle.spawn(async move {
                let result = c.create(tag, k).await;
                let done = Instant::now();
                (Instant::from_std(due), done, result)
            }));
        }
        (Instant::from_std(start), handles)
    })
    .await
    .context("the pacing thread panicked")?;
    let mut out = Load::new(start)?;
    for h in handles {
        let (due, done, result) = h.await.context("a request task panicked")?;
        out.last_answer = out.last_answer.max(done);
        match result {
            Ok(_) => {
                out.ok += 1;
                out.api_us
                    .saturating_record(micros(done.duration_since(due)));
            }
            Err(s) => out.fail(describe(&s)),
        }
    }
    Ok(out)
}

/// Samples the outbox depth every `every` until stopped; answers (since start, depth).
fn sample_outbox(
    db: DatabaseConnection,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(Duration, u64)>> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut samples = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            if let Ok(depth) = outbox::Entity::find().count(&db).await {
                samples.push((start.elapsed(), depth));
            }
        }
        samples
    })
}

/// Least-squares slope of depth over time, in rows per second.
fn slope(samples: &[(Duration, u64)]) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let mx = samples.iter().map(|(t, _)| t.as_secs_f64()).sum::<f64>() / n;
    let my = samples.iter().map(|(_, d)| *d as f64).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (t, d) in samples {
        let dx = t.as_secs_f64() - mx;
        sxy += dx * (*d as f64 - my);
        sxx += dx * dx;
    }
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// The figures of one measured task-events phase.
struct EventFigures {
    database: Db,
    load: String,
    load_out: Load,
    delivered: usize,
    duplicates: u64,
    unreadable: u64,
    /// First request → last delivery.
    elapsed: Duration,
    /// First request → last answer.
    answered: Duration,
    latency_us: Histogram<u64>,
    /// Outbox depth samples while the load ran, and after until everything was delivered.
    samples: Vec<(Duration, u64)>,
    cpu: String,
    /// CPU and memory of each process, first request → last delivery.
    usage: PhaseUsage,
}

impl EventFigures {
    fn per_sec(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64()
    }

    fn max_depth(&self) -> u64 {
        self.samples.iter().map(|(_, d)| *d).max().unwrap_or(0)
    }

    /// Outbox growth while the load ran (rows/s), and rows written per second then.
    fn growth(&self) -> (f64, f64) {
        let during: Vec<_> = self
            .samples
            .iter()
            .copied()
            .filter(|(t, _)| *t <= self.answered)
            .collect();
        // Two rows per mutation: the TaskEvent and the TaskChanged notice.
        let written = 2.0 * self.load_out.ok as f64 / self.answered.as_secs_f64();
        (slope(&during), written)
    }

    /// Whether the outbox stayed bounded: it grew by less than a tenth of what was written
    /// (`None` when the load was too short to tell: fewer than 4 samples).
    fn keeps_up(&self) -> Option<bool> {
        let during = self
            .samples
            .iter()
            .filter(|(t, _)| *t <= self.answered)
            .count();
        let (growth, written) = self.growth();
        (during >= 4).then_some(growth <= 0.1 * written)
    }
}

/// Runs one phase: the load, the outbox sampler, and the wait for every event.
async fn measure_phase<F, Fut>(
    database: Db,
    app: &App,
    phase: &Phase,
    load: String,
    cfg: &Config,
    procs: &ProcessSet,
    run: F,
) -> anyhow::Result<EventFigures>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Load>>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_outbox(app.db.clone(), cfg.sample, stop.clone());
    let (started, c0, meter) = (Instant::now(), CpuSample::now(), procs.start());
    let out = run().await?;
    let deadline = Instant::now() + cfg.timeout;
    let waited = phase
        .wait_for(out.ok, deadline, &format!("{} {load}", database.name()))
        .await;
    let cpu = cores_used(c0, CpuSample::now(), started.elapsed());
    let usage = meter.stop();
    stop.store(true, Ordering::Relaxed);
    if waited.is_ok() {
        tokio::time::sleep(SETTLE).await;
    }
    let samples = sampler.await.context("the outbox sampler panicked")?;
    waited?;
    let (delivered, duplicates, unreadable, latency_us, last) = phase.snapshot();
    let elapsed = last.unwrap_or(started).duration_since(started);
    // The sampler's clock started a moment before `started`; close enough at 250 ms steps.
    let answered = out.last_answer.duration_since(started);
    eprintln!(
        "bench_events: {}: {load}: {} mutations answered in {:.2} s, {delivered} events \
         delivered in {:.2} s, {} errors",
        database.name(),
        out.ok,
        answered.as_secs_f64(),
        elapsed.as_secs_f64(),
        out.errors
    );
    Ok(EventFigures {
        database,
        load,
        load_out: out,
        delivered,
        duplicates,
        unreadable,
        elapsed,
        answered,
        latency_us,
        samples,
        cpu,
        usage,
    })
}

/// What one database run reports besides its figures.
struct RunInfo {
    database: Db,
    version: String,
    pool: u32,
    relay_batch: u64,
    stray: usize,
    sidecar_log: std::path::PathBuf,
    complaints: Vec<String>,
    /// The processes whose CPU and memory were measured.
    processes: ProcessSet,
}

/// Builds task-service and its sidecar on `url` and measures every phase.
async fn measure_database(
    database: Db,
    url: &str,
    prefix: &str,
    sink: &EventsSink,
    cfg: &Config,
    consumer_pid: Option<u32>,
) -> anyhow::Result<(Vec<EventFigures>, RunInfo)> {
    let grpc_port = free_port()?;
    let mut service = task_service::Config::from_lookup(|k| match k {
        "AUTH_MODE" => Some("dev".to_owned()),
        "APP_ADDR" => Some("127.0.0.1:0".to_owned()),
        "DATABASE_URL" => Some(url.to_owned()),
        "DAPR_GRPC_ENDPOINT" => Some(format!("http://127.0.0.1:{grpc_port}")),
        "TOPIC_PREFIX" => Some(prefix.to_owned()),
        // One global recorder per process, and never the port `just up` uses.
        "METRICS_ADDR" => Some("off".to_owned()),
        "DATABASE_MAX_CONNECTIONS"
        | "MAX_CONCURRENT_REQUESTS"
        | "REQUEST_TIMEOUT_MS"
        | "OUTBOX_BATCH_SIZE"
        | "OUTBOX_POLL_MS"
        | "WRITE_GROUP_MAX" => std::env::var(k).ok(),
        _ => None,
    })?;
    service.auth = AuthMode::Dev;
    let pool = service.database_max_connections;
    let relay_batch = service.relay.batch_size;
    let app = task_service::build(service)
        .await
        .with_context(|| format!("starting task-service on {}", database.name()))?;
    let mut opts = DaprdOptions::new(unique("bench-task-service"), Some(app.addr.port()));
    opts.grpc_port = Some(grpc_port);
    let mut sidecar = Daprd::start(opts)
        .await
        .context("starting task-service's daprd")?;
    let version = server_version(&app.db).await;
    let mut processes = ProcessSet::new()
        .this_process("bench")
        .process("daprd task-service", sidecar.pid())
        .process("daprd consumer", consumer_pid)
        .process("Kafka", kafka_pid());
    if database == Db::Postgres {
        processes =
            processes.process_tree("PostgreSQL", pg::server_pid(&cfg.pg_admin_url).await.ok());
    }
    let procs = &processes;
    let result = async {
        let clients = Arc::new(Clients::connect(app.addr, cfg).await?);
        eprintln!(
            "bench_events: {}: warm-up, {} mutations",
            database.name(),
            cfg.warmup_chains * CHAIN
        );
        let warm = closed_chains(&clients, WARM, cfg.warmup_chains, cfg.concurrency).await?;
        ensure!(
            warm.errors == 0,
            "{}: {} warm-up requests failed, e.g. {:?}",
            database.name(),
            warm.errors,
            warm.first_errors
        );
        sink.warm
            .wait_for(
                warm.ok,
                Instant::now() + cfg.timeout,
                &format!("{} warm-up", database.name()),
            )
            .await?;
        tokio::time::sleep(SETTLE).await;

        let mut figures = Vec::new();
        let load = format!(
            "sustained: create → update → complete, {} chains in flight",
            cfg.concurrency
        );
        figures.push(
            measure_phase(database, &app, &sink.sustained, load, cfg, procs, || {
                closed_chains(&clients, SUSTAINED, cfg.chains, cfg.concurrency)
            })
            .await?,
        );
        let load = format!(
            "open loop: CreateTask {}/s for {} s",
            cfg.rate, cfg.rate_secs
        );
        figures.push(
            measure_phase(database, &app, &sink.open, load, cfg, procs, || {
                open_loop_create(&clients, OPEN, cfg.rate, cfg.rate_secs)
            })
            .await?,
        );
        let left = outbox::Entity::find().count(&app.db).await?;
        ensure!(
            left == 0,
            "{}: {left} outbox rows left after every event arrived",
            database.name()
        );
        anyhow::Ok(figures)
    }
    .await;
    let stopped = app.shutdown().await;
    let sidecar_stopped = sidecar.stop().await;
    let figures = result?;
    stopped.context("stopping task-service")?;
    sidecar_stopped.context("stopping task-service's daprd")?;
    Ok((
        figures,
        RunInfo {
            database,
            version,
            pool,
            relay_batch,
            stray: sink.stray.load(Ordering::Relaxed),
            sidecar_log: sidecar.log_path.clone(),
            complaints: log_complaints(&sidecar.log_path, &STARTUP_WARNINGS),
            processes,
        },
    ))
}

/// One database from creation to cleanup; `None` when PostgreSQL was not asked for by
/// name and does not answer.
async fn run_database(
    database: Db,
    prefix: &str,
    sink: &EventsSink,
    cfg: &Config,
    consumer_pid: Option<u32>,
) -> anyhow::Result<Option<(Vec<EventFigures>, RunInfo)>> {
    match database {
        Db::Sqlite => {
            let dir = tempfile::tempdir()?;
            let url = format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("tasks.db").display()
            );
            Ok(Some(
                measure_database(database, &url, prefix, sink, cfg, consumer_pid).await?,
            ))
        }
        Db::Postgres => {
            let (name, url) = match pg::create_database(&cfg.pg_admin_url, "bench").await {
                Ok(created) => created,
                Err(e) if !cfg.databases_named => {
                    eprintln!("bench_events: skipping PostgreSQL: {e:#}");
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            eprintln!("bench_events: PostgreSQL: database {name} created");
            let result = measure_database(database, &url, prefix, sink, cfg, consumer_pid).await;
            let dropped = pg::drop_database(&cfg.pg_admin_url, &name).await;
            let out = result?;
            dropped.with_context(|| format!("dropping the benchmark database {name}"))?;
            eprintln!("bench_events: PostgreSQL: database {name} dropped");
            Ok(Some(out))
        }
    }
}

// ---------------------------------------------------------------------------------------
// The report.

impl PipeFigures {
    fn per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    /// The table's path and load cells: `raw pipe` (one event per call, as the task-events
    /// consumer takes them) or `raw pipe, bulk subscribe`.
    fn path_and_load(&self, cfg: &Config) -> (&'static str, String) {
        let publish = format!("publish_bulk of {}, 1 in flight", cfg.pipe_batch);
        match self.delivery {
            Delivery::Single => ("raw pipe", publish),
            Delivery::Bulk { .. } => (
                "raw pipe, bulk subscribe",
                format!("{publish}; {}", self.delivery.describe()),
            ),
        }
    }

    /// The phase's name in the CPU table: `raw pipe, publish_bulk of 100, 1 in flight`, then
    /// `, bulk subscribe ≤ 100 per call, 10 ms` in bulk.
    fn label(&self, cfg: &Config) -> String {
        let publish = format!("raw pipe, publish_bulk of {}, 1 in flight", cfg.pipe_batch);
        match self.delivery {
            Delivery::Single => publish,
            Delivery::Bulk { .. } => format!("{publish}, {}", self.delivery.describe()),
        }
    }
}

fn table(pipes: &[PipeFigures], cfg: &Config, figures: &[EventFigures]) -> String {
    let mut out = String::from(
        "| path | load | count | end to end /s | answered /s | p50 ms | p90 ms | p99 ms | \
         max ms | outbox max depth | outbox growth rows/s (written rows/s) | duplicates | \
         CPU cores (bench process / host) |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for pipe in pipes {
        let h = &pipe.latency_us;
        let (path, load) = pipe.path_and_load(cfg);
        out.push_str(&format!(
            "| {path} | {load} | {} events | {:.0} events/s | – | {} | {} | {} | {} | – | – | {} \
             | {} |\n",
            pipe.events,
            pipe.per_sec(),
            quantile(h, 0.50),
            quantile(h, 0.90),
            quantile(h, 0.99),
            quantile(h, 1.0),
            pipe.duplicates,
            pipe.cpu,
        ));
    }
    for f in figures {
        let h = &f.latency_us;
        let (growth, written) = f.growth();
        out.push_str(&format!(
            "| task events, {} | {} | {} mutations | {:.0} mutations/s | {:.0} | {} | {} | {} \
             | {} | {} | {:.0} ({:.0}) | {} | {} |\n",
            f.database.name(),
            f.load,
            f.load_out.ok,
            f.per_sec(),
            f.load_out.ok as f64 / f.answered.as_secs_f64(),
            quantile(h, 0.50),
            quantile(h, 0.90),
            quantile(h, 0.99),
            quantile(h, 1.0),
            f.max_depth(),
            growth,
            written,
            f.duplicates,
            f.cpu,
        ));
    }
    out
}

/// The outbox depth over a phase, the largest sample of each second, e.g. `0, 120, 340, 0`
/// (`–` for a second without a sample: the count query itself waited that long).
fn depth_series(f: &EventFigures) -> String {
    let mut per_second: Vec<Option<u64>> = Vec::new();
    for (t, d) in &f.samples {
        let s = t.as_secs() as usize;
        if per_second.len() <= s {
            per_second.resize(s + 1, None);
        }
        per_second[s] = Some(per_second[s].map_or(*d, |m| m.max(*d)));
    }
    per_second
        .iter()
        .map(|d| d.map_or_else(|| "–".to_owned(), |d| d.to_string()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What every daprd here warns at start, by design of a local run (no mTLS, no placement,
/// no scheduler; no app behind the publisher's sidecar): left out of the report so that a
/// real complaint stands out.
const STARTUP_WARNINGS: [&str; 4] = [
    "mTLS is disabled",
    "Actor runtime disabled",
    "No scheduler host addresses",
    "App channel is not initialized",
];

fn print_log(app_id: &str, path: &Path, complaints: &[String]) {
    println!(
        "- daprd {app_id} log: {} ({} warning/error lines besides the usual startup ones)",
        std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display(),
        complaints.len()
    );
    for line in complaints.iter().take(3) {
        println!("  - `{line}`");
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::from_env()?;
    // What the machine does without us: other busy processes skew every figure.
    let (t0, c0) = (Instant::now(), CpuSample::now());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_load = cores_used(c0, CpuSample::now(), t0.elapsed());
    ensure_kafka().await?;

    // One consumer app and its daprd for the whole run; every topic is known now, so daprd
    // subscribes once. The raw pipe: a warm-up topic and a measured one per delivery mode.
    let mut subs = Subscriptions::builder();
    let mut pipe_modes = Vec::new();
    for (delivery, name) in [
        (Delivery::Single, "bench-events-pipe"),
        (cfg.pipe_bulk_delivery, "bench-events-pipe-bulk"),
    ] {
        let (warm, measured) = (Phase::new()?, Phase::new()?);
        let warm_topic = unique(&format!("{name}-warmup"));
        let topic = unique(name);
        subs = warm.subscribe(subs, &warm_topic, delivery);
        subs = measured.subscribe(subs, &topic, delivery);
        pipe_modes.push((delivery, (warm_topic, warm), (topic, measured)));
    }
    let mut per_db = Vec::new();
    for &database in &cfg.databases {
        let prefix = unique("bench-events");
        let sink = EventsSink::new()?;
        let topic = Topics::new(&prefix).task_events;
        let s = sink.clone();
        // The consumer takes task events as the services do (audit-service, sync-service):
        // in bulk, with raw payloads, in the raw pipe's bulk mode.
        let Delivery::Bulk {
            max_messages,
            max_await_ms,
        } = cfg.pipe_bulk_delivery
        else {
            anyhow::bail!("the task-events consumer needs the bulk delivery mode");
        };
        subs = subs.route_batch(
            Route::new(PUBSUB, topic.clone(), topics::dead_letter(&topic))
                .bulk_raw(max_messages, max_await_ms),
            move |events: Vec<Event<Vec<u8>>>| {
                let outcomes = events
                    .iter()
                    .map(|e| match TaskEvent::decode(e.message.as_slice()) {
                        Ok(event) => {
                            s.record(&event);
                            Outcome::Success
                        }
                        // Dead-lettered; the run then misses it and fails its count.
                        Err(_) => Outcome::Drop,
                    })
                    .collect();
                async move { outcomes }
            },
        );
        per_db.push((database, prefix, sink));
    }
    let port = serve(subs.build(), true).await?;
    let consumer = Daprd::start(DaprdOptions::new(unique("bench-consumer"), Some(port)))
        .await
        .context("starting the consumer's daprd")?;

    // 1. The raw pipe.
    let (publ, publisher) = todo_harness::recorder::publisher("bench-publisher").await?;
    let pipe_procs = ProcessSet::new()
        .this_process("bench")
        .process("daprd publisher", publ.pid())
        .process("daprd consumer", consumer.pid())
        .process("Kafka", kafka_pid());
    let warm_events = (cfg.warmup_chains * CHAIN).max(cfg.pipe_batch);
    let mut pipes = Vec::new();
    for (delivery, (warm_topic, warm), (topic, measured)) in &pipe_modes {
        let how = delivery.describe();
        eprintln!("bench_events: raw pipe ({how}) warm-up, {warm_events} events on {warm_topic}");
        run_pipe(
            &publisher,
            (warm_topic, *delivery),
            warm,
            warm_events,
            &cfg,
            &pipe_procs,
        )
        .await?;
        eprintln!(
            "bench_events: raw pipe ({how}) measured, {} events on {topic}",
            cfg.pipe_events
        );
        let pipe = run_pipe(
            &publisher,
            (topic, *delivery),
            measured,
            cfg.pipe_events,
            &cfg,
            &pipe_procs,
        )
        .await?;
        eprintln!(
            "bench_events: raw pipe ({how}): {:.0} events/s",
            pipe.per_sec()
        );
        pipes.push(pipe);
    }
    drop(publisher);
    let publ_log = (
        publ.options.app_id.clone(),
        publ.log_path.clone(),
        log_complaints(&publ.log_path, &STARTUP_WARNINGS),
    );
    drop(publ);

    // 2. Task events, per database.
    let mut figures = Vec::new();
    let mut infos = Vec::new();
    for (database, prefix, sink) in &per_db {
        if let Some((f, info)) = run_database(*database, prefix, sink, &cfg, consumer.pid()).await?
        {
            figures.extend(f);
            infos.push(info);
        }
    }
    ensure!(!infos.is_empty(), "no database was measured");

    // The goals' reference: the raw pipe in its best delivery mode of this run.
    let best_pipe = pipes
        .iter()
        .max_by(|a, b| a.per_sec().total_cmp(&b.per_sec()))
        .context("no raw pipe was measured")?;
    let pipe_rate = best_pipe.per_sec();
    let (best_path, _) = best_pipe.path_and_load(&cfg);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "## Task events end to end: mutation → outbox → relay → daprd → Kafka → daprd → consumer\n"
    );
    println!("{}", table(&pipes, &cfg, &figures));
    let pipe_labels: Vec<String> = pipes.iter().map(|p| p.label(&cfg)).collect();
    let pipe_rows: Vec<UsageRow<'_>> = pipes
        .iter()
        .zip(&pipe_labels)
        .map(|(p, label)| UsageRow {
            phase: label,
            ops: p.events as u64,
            usage: &p.usage,
        })
        .collect();
    println!(
        "{}",
        usage_block(
            "Raw pipe (first publish → last delivery)",
            &pipe_procs,
            "event",
            &pipe_rows
        )
    );
    for i in &infos {
        let rows: Vec<UsageRow<'_>> = figures
            .iter()
            .filter(|f| f.database == i.database)
            .map(|f| UsageRow {
                phase: &f.load,
                ops: f.load_out.ok as u64,
                usage: &f.usage,
            })
            .collect();
        println!(
            "{}",
            usage_block(
                &format!(
                    "Task events, {} (first request → last delivery)",
                    i.database.name()
                ),
                &i.processes,
                "mutation",
                &rows
            )
        );
    }
    println!(
        "- command: {}",
        command(
            "bench_events",
            &[
                "DATABASE_MAX_CONNECTIONS",
                "MAX_CONCURRENT_REQUESTS",
                "REQUEST_TIMEOUT_MS",
                "OUTBOX_BATCH_SIZE",
                "OUTBOX_POLL_MS",
                "WRITE_GROUP_MAX"
            ]
        )
    );
    println!(
        "- machine: nproc {cpus}, {}, {} RAM; Kafka {} (single KRaft node), the daprd \
         sidecars, the database server and this process (load generator, task-service, \
         consumer) all on these cores",
        cpu_model(),
        mem_total(),
        kafka_brokers()
    );
    println!("- CPU busy in the second before the run (this process / host): {idle_load} cores");
    for i in &infos {
        let how = i.database.fresh();
        println!(
            "- {} {} ({how}); pool of {} connections; relay batch {} rows",
            i.database.name(),
            i.version,
            i.pool,
            i.relay_batch
        );
    }
    println!(
        "- workload: raw pipe {} events per delivery mode, each after {warm_events} warm-up \
         events on another topic (the task-events consumer takes one event per call); per database \
         {} warm-up mutations, then {} mutations as create → update → complete chains ({} in \
         flight over {} HTTP/2 connections, {} users), then CreateTask open loop at {}/s for \
         {} s; each mutation is one TaskEvent on task-events (counted) and one TaskChanged on \
         task-updates (published, not consumed); outbox depth sampled every {} ms",
        cfg.pipe_events,
        cfg.warmup_chains * CHAIN,
        cfg.chains * CHAIN,
        cfg.concurrency,
        cfg.channels,
        cfg.users,
        cfg.rate,
        cfg.rate_secs,
        cfg.sample.as_millis()
    );
    println!(
        "- end to end /s = events delivered / (first publish or request → last delivery); \
         answered /s = mutations answered / (first request → last answer); latency = consumer \
         receive − `occurred_at` (raw pipe: the publish instant; task events: stamped inside \
         the mutation's transaction just before commit); outbox growth = least-squares slope \
         of the depth while the load ran"
    );
    for f in &figures {
        println!(
            "- outbox depth, {} {}: {} (one sample per second; drained {:.2} s after the last \
             answer)",
            f.database.name(),
            f.load,
            depth_series(f),
            f.elapsed.saturating_sub(f.answered).as_secs_f64()
        );
    }

    // Goals.
    for f in figures.iter().filter(|f| f.load.starts_with("sustained")) {
        let rate = f.per_sec();
        let share = rate / pipe_rate;
        println!(
            "- goal ≥ {:.0} mutations/s end to end, {}: {rate:.0}/s → {}; relay {} (outbox \
             growth {:.0} rows/s of {:.0} written)",
            GOAL_MUTATIONS_PER_SEC,
            f.database.name(),
            if rate >= GOAL_MUTATIONS_PER_SEC {
                "met"
            } else {
                "NOT met"
            },
            match f.keeps_up() {
                Some(true) => "kept up",
                Some(false) => "fell behind",
                None => "too short a load to tell whether the relay kept up",
            },
            f.growth().0,
            f.growth().1
        );
        println!(
            "- goal ≥ {:.0} % of the raw pipe, {}: {rate:.0} mutations/s vs {pipe_rate:.0} \
             events/s ({best_path}, the run's best raw-pipe mode) = {:.0} % → {} (each \
             mutation is 2 events on Kafka: {:.0} % in events)",
            GOAL_SHARE_OF_PIPE * 100.0,
            f.database.name(),
            share * 100.0,
            if share >= GOAL_SHARE_OF_PIPE {
                "met"
            } else {
                "NOT met"
            },
            2.0 * share * 100.0
        );
    }
    for f in figures.iter().filter(|f| f.load.starts_with("open")) {
        let p99 = if f.latency_us.is_empty() {
            u64::MAX
        } else {
            f.latency_us.value_at_quantile(0.99)
        };
        let verdict = if cfg.rate < GOAL_RATE {
            "not comparable (rate below the goal's)"
        } else if p99 <= GOAL_P99_US {
            "met"
        } else {
            "NOT met"
        };
        println!(
            "- goal commit → consumer p99 ≤ {} ms at {GOAL_RATE} mutations/s, {}: p99 {} ms \
             at {}/s (API answer p99 {} ms) → {verdict}",
            ms(GOAL_P99_US),
            f.database.name(),
            quantile(&f.latency_us, 0.99),
            cfg.rate,
            quantile(&f.load_out.api_us, 0.99),
        );
    }
    print_log(&publ_log.0, &publ_log.1, &publ_log.2);
    print_log(
        &consumer.options.app_id,
        &consumer.log_path,
        &log_complaints(&consumer.log_path, &STARTUP_WARNINGS),
    );
    for i in &infos {
        print_log(
            &format!("task-service ({})", i.database.name()),
            &i.sidecar_log,
            &i.complaints,
        );
    }

    // Exactly once, nothing failed.
    let mut problems = Vec::new();
    for pipe in pipes.iter().filter(|p| p.duplicates > 0) {
        problems.push(format!(
            "{}: {} duplicate deliveries",
            pipe.path_and_load(&cfg).0,
            pipe.duplicates
        ));
    }
    for f in &figures {
        let name = format!("{} {}", f.database.name(), f.load);
        if f.load_out.errors > 0 {
            problems.push(format!(
                "{name}: {} requests failed, e.g. {:?}",
                f.load_out.errors, f.load_out.first_errors
            ));
        }
        if f.delivered != f.load_out.ok {
            problems.push(format!(
                "{name}: {} distinct events delivered for {} mutations",
                f.delivered, f.load_out.ok
            ));
        }
        if f.duplicates > 0 {
            problems.push(format!("{name}: {} duplicate deliveries", f.duplicates));
        }
        if f.unreadable > 0 {
            problems.push(format!(
                "{name}: {} events without occurred_at",
                f.unreadable
            ));
        }
    }
    for i in infos.iter().filter(|i| i.stray > 0) {
        problems.push(format!(
            "{}: {} events of users no phase made",
            i.database.name(),
            i.stray
        ));
    }
    for p in &problems {
        println!("- FAILED: {p}");
    }
    ensure!(problems.is_empty(), "{} checks failed", problems.len());
    println!("- every task event arrived exactly once (counted by event_id)");
    Ok(())
}
