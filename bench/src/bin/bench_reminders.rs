//! The reminder benchmark: 10,000 reminders due within 60 s, through the whole chain, and
//! how late each one reached its user.
//!
//! Everything runs for real, in one process plus its sidecars:
//!
//! ```text
//! load generator --gRPC CreateTask--> task-service (SQLite or PostgreSQL)
//!   reminder scheduler --outbox--> relay --> daprd(task) --> Kafka <prefix>.reminders
//!   --> daprd(notification) --> notification-service (delivery log in the SQLite state
//!   store) --> recording Channel (wall-clock time of each delivery)
//! ```
//!
//! task-service is built by `task_service::build` (what its `main` runs) on a fresh
//! database: a SQLite file in a temporary directory, or, with `BENCH_DATABASE=postgres`, a
//! fresh database created on `DATABASE_URL_PG` (dropped at the end). notification-service is
//! built by `notification_service::build_with_channel` with a [`Channel`] that records each
//! delivery and when it went out; its sidecar loads a copy of dapr-components/ whose
//! `notification-state` store is a SQLite file of its own, or, with
//! `BENCH_STATE_STORE=postgres`, Dapr's PostgreSQL state store (`state.postgresql` v2, as
//! kustomize/base deploys it) on a fresh database created on `DATABASE_URL_PG` (dropped at
//! the end). Both use `AUTH_MODE=dev`, their other settings at their defaults, and a unique
//! `TOPIC_PREFIX`.
//!
//! Method: `BENCH_REMINDERS` tasks are created through the gRPC API (`BENCH_CONCURRENCY`
//! in flight, round-robin over `BENCH_USERS` users), each with one absolute reminder; the
//! reminders are evenly spaced over a window of `BENCH_WINDOW_SECS` that opens
//! `BENCH_START_SECS` after the first create (creation must be over by then, or the run
//! fails and says to raise it). The run then waits until every reminder was delivered, or
//! `BENCH_TIMEOUT_SECS` past the window's end, then `BENCH_SETTLE_SECS` more for late
//! duplicates. Figures:
//!
//! - lateness = delivery wall-clock time − `remind_at` (HDR histogram, µs);
//! - its parts: the scheduler's own fire lateness (carried by the event), the pipe (fire →
//!   the service's handler starts: outbox relay, daprd, Kafka, daprd, queueing behind the
//!   partition's earlier events) and the claim (handler start → channel call);
//! - per-event handling time when the partition had a queue: with events of a partition
//!   handed over one at a time (Dapr's Kafka consumer, non-bulk), the gap between two
//!   handler starts on a partition is the whole handling of the first (claim, deliver,
//!   record, answer, daprd's commit and hand-over of the next). Partitions are inferred from
//!   the key (user id) with Sarama's hash partitioner, as daprd's producer picks them;
//! - duplicates (a reminder delivered more than once: must be 0) and missing reminders (must
//!   be 0): the example exits non-zero if either is not.
//!
//! CPU per reminder and peak RSS of each process of the chain (this process, both daprd,
//! Kafka's JVM, the PostgreSQL server when used) are read from /proc over the create phase
//! and over the window (`todo_harness::processes`).
//!
//! Run with `just bench-reminders`, i.e. `cargo run --release -p todo-bench
//! --bin bench_reminders` (Kafka on 127.0.0.1:19092 is started when it does not answer;
//! daprd from `just bootstrap`). Environment: `BENCH_REMINDERS` (10000), `BENCH_WINDOW_SECS`
//! (60), `BENCH_START_SECS` (30), `BENCH_USERS` (100), `BENCH_CONCURRENCY` (32),
//! `BENCH_CHANNELS` (4), `BENCH_TIMEOUT_SECS` (180), `BENCH_SETTLE_SECS` (5),
//! `BENCH_PARTITIONS` (3, as scripts/kafka.sh creates topics), `BENCH_DATABASE` (`sqlite` or
//! `postgres`), `BENCH_STATE_STORE` (`sqlite` or `postgres`), `DATABASE_URL_PG` (postgres://todo:todo@127.0.0.1:15432/todo). Passed
//! through to the services when set: `DATABASE_MAX_CONNECTIONS`, `OUTBOX_BATCH_SIZE`,
//! `OUTBOX_POLL_MS`, `NOTIFICATION_CLAIM_LEASE_MS`, `STATE_TIMEOUT_MS`,
//! `NOTIFICATIONS_PER_USER`. `RUST_LOG` filters the services' logs (default `warn`).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use todo_service::cli::ServiceConfig as _;

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, TimeDelta, Utc};
use hdrhistogram::Histogram;
use notification_service::{
    channel::{Channel, ChannelError},
    notification::Notification,
    reminders::StatsSnapshot,
};
use todo_bench::{
    api,
    db::{Db, pg_admin_url},
    report::{command, histogram, ms, usage_block},
};
use todo_harness::{
    Daprd, DaprdOptions,
    bench::{CpuSample, cores_used, env_usize},
    ensure_kafka, free_port, kafka_pid,
    machine::{cpu_model, mem_total},
    pg,
    processes::{PhaseMeter, PhaseUsage, ProcessSet, UsageRow},
    repo_root, unique,
};
use todo_proto::{
    to_timestamp,
    todo::v1::{
        CreateTaskRequest, Reminder, Task, reminder::When, task_service_client::TaskServiceClient,
    },
};
use todo_topology::{app_ids, topics};
use tonic::{Request, transport::Channel as GrpcChannel};

/// The issue's goal: lateness p99 at most this (µs).
const GOAL_P99_US: u64 = 1_000_000;
/// What the seeds ask for: lateness under this (µs).
const SEED_LIMIT_US: u64 = 10_000_000;
/// A reminder fired this long before the previous handling on its partition started was
/// surely queued behind it (the unloaded pipe takes ~15 ms: see bench-pipe).
const QUEUED_MARGIN: TimeDelta = TimeDelta::milliseconds(100);
/// How many failure messages the create phase keeps for the report.
const KEEP_ERRORS: usize = 3;

/// What to run, from the environment.
#[derive(Debug, Clone)]
struct Config {
    reminders: usize,
    window: Duration,
    start: Duration,
    users: usize,
    concurrency: usize,
    channels: usize,
    timeout: Duration,
    settle: Duration,
    partitions: u32,
    database: Db,
    /// Where notification-service's delivery log is kept.
    state_store: Db,
    pg_admin_url: String,
}

/// `sqlite` (the default) or `postgres` from the variable `name`.
fn db_from_env(name: &str) -> anyhow::Result<Db> {
    Ok(
        match std::env::var(name)
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "" | "sqlite" => Db::Sqlite,
            "postgres" | "postgresql" | "pg" => Db::Postgres,
            other => bail!("{name}: unknown database {other:?} (sqlite, postgres)"),
        },
    )
}

fn env_secs(name: &str, default: u64) -> anyhow::Result<Duration> {
    Ok(Duration::from_secs(u64::try_from(env_usize(
        name,
        usize::try_from(default)?,
    )?)?))
}

impl Config {
    fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            reminders: env_usize("BENCH_REMINDERS", 10_000)?,
            window: env_secs("BENCH_WINDOW_SECS", 60)?,
            start: env_secs("BENCH_START_SECS", 30)?,
            users: env_usize("BENCH_USERS", 100)?,
            concurrency: env_usize("BENCH_CONCURRENCY", 32)?,
            channels: env_usize("BENCH_CHANNELS", 4)?,
            timeout: env_secs("BENCH_TIMEOUT_SECS", 180)?,
            settle: env_secs("BENCH_SETTLE_SECS", 5)?,
            partitions: u32::try_from(env_usize("BENCH_PARTITIONS", 3)?)?,
            database: db_from_env("BENCH_DATABASE")?,
            state_store: db_from_env("BENCH_STATE_STORE")?,
            pg_admin_url: pg_admin_url(),
        })
    }
}

// ------------------------------------------------------------------ the recording channel

/// One delivery, as the channel saw it.
#[derive(Debug, Clone)]
struct Delivery {
    notification: Notification,
    /// Wall-clock time of the channel call.
    at: DateTime<Utc>,
}

/// A [`Channel`] that remembers every delivery and when it went out.
#[derive(Debug, Default)]
struct Recorder {
    deliveries: Mutex<Vec<Delivery>>,
    count: AtomicUsize,
}

#[async_trait::async_trait]
impl Channel for Recorder {
    fn name(&self) -> &str {
        "bench-recorder"
    }

    async fn deliver(&self, n: &Notification) -> Result<(), ChannelError> {
        let at = Utc::now();
        self.deliveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Delivery {
                notification: n.clone(),
                at,
            });
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl Recorder {
    fn all(&self) -> Vec<Delivery> {
        self.deliveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

// ------------------------------------------------------------------ the chain

/// A copy of dapr-components/ whose notification state store is a SQLite file of its own
/// (as notification-service's tests do) or, given `state_pg`, Dapr's PostgreSQL state store
/// on that database, loaded by the sidecar `app_id`.
struct Resources {
    components: tempfile::TempDir,
    /// Outside `components`: daprd watches that folder and reloads on every change there.
    _data: tempfile::TempDir,
}

fn replace_once(text: &str, from: &str, to: &str) -> anyhow::Result<String> {
    ensure!(
        text.matches(from).count() == 1,
        "expected {from:?} once in statestore-notifications.yaml"
    );
    Ok(text.replace(from, to))
}

fn resources(app_id: &str, state_pg: Option<&str>) -> anyhow::Result<Resources> {
    let temp = |prefix: &str| tempfile::Builder::new().prefix(prefix).tempdir();
    let (components, data) = (temp("bench-ns-components-")?, temp("bench-ns-data-")?);
    let src = repo_root().join("dapr-components");
    for entry in std::fs::read_dir(&src).with_context(|| src.display().to_string())? {
        let path = entry?.path();
        let Some(name) = path.file_name() else {
            continue;
        };
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let mut text = std::fs::read_to_string(&path)?;
        if name == "statestore-notifications.yaml"
            && let Some(url) = state_pg
        {
            text = postgres_state_store(url, app_id);
        } else if name == "statestore-notifications.yaml" {
            let db = data.path().join("notifications.db");
            text = replace_once(&text, ".data/notifications.db", &db.display().to_string())?;
            text = replace_once(
                &text,
                &format!("  - {}\n", app_ids::NOTIFICATION_SERVICE),
                &format!("  - {app_id}\n"),
            )?;
        }
        std::fs::write(components.path().join(name), text)?;
    }
    Ok(Resources {
        components,
        _data: data,
    })
}

/// notification-service's store as kustomize/base/dapr/statestore-notification.yaml
/// deploys it, with the connection string in place of its secret reference.
fn postgres_state_store(url: &str, app_id: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {store}\nspec:\n  \
         type: state.postgresql\n  version: v2\n  metadata:\n    - name: connectionString\n      \
         value: \"{url}\"\n    - name: tablePrefix\n      value: notification_\n    \
         - name: timeout\n      value: 20s\n    - name: cleanupInterval\n      value: 1h\n\
         scopes:\n  - {app_id}\n",
        store = notification_service::STATE_STORE,
    )
}

/// A service's configuration lookup: `fixed` first, then the passed-through variables.
fn lookup(
    fixed: Vec<(&'static str, String)>,
    pass: &'static [&'static str],
) -> impl Fn(&str) -> Option<String> {
    let fixed: HashMap<&'static str, String> = fixed.into_iter().collect();
    move |k: &str| {
        fixed
            .get(k)
            .cloned()
            .or_else(|| pass.contains(&k).then(|| std::env::var(k).ok()).flatten())
    }
}

struct NotificationSide {
    app: notification_service::App,
    sidecar: Daprd,
    _resources: Resources,
}

async fn start_notification_service(
    prefix: &str,
    recorder: Arc<Recorder>,
    state_pg: Option<&str>,
) -> anyhow::Result<NotificationSide> {
    let app_id = unique("bench-notification-service");
    let resources = resources(&app_id, state_pg)?;
    let grpc_port = free_port()?;
    let config = notification_service::Config::from_lookup(lookup(
        vec![
            ("APP_ADDR", "127.0.0.1:0".to_owned()),
            ("AUTH_MODE", "dev".to_owned()),
            (topics::PREFIX_VAR, prefix.to_owned()),
            ("DAPR_GRPC_PORT", grpc_port.to_string()),
        ],
        &[
            "NOTIFICATION_CLAIM_LEASE_MS",
            "STATE_TIMEOUT_MS",
            "NOTIFICATIONS_PER_USER",
        ],
    ))?;
    let app = notification_service::build_with_channel(config, recorder).await?;
    let mut opts = DaprdOptions::new(app_id, Some(app.addr.port()));
    opts.resources_path = resources.components.path().to_owned();
    opts.grpc_port = Some(grpc_port);
    let sidecar = Daprd::start(opts).await?;
    Ok(NotificationSide {
        app,
        sidecar,
        _resources: resources,
    })
}

struct TaskSide {
    app: task_service::App,
    sidecar: Daprd,
    _dir: tempfile::TempDir,
}

async fn start_task_service(prefix: &str, database_url: &str) -> anyhow::Result<TaskSide> {
    let dir = tempfile::Builder::new().prefix("bench-tasks-").tempdir()?;
    let url = if database_url.is_empty() {
        format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("tasks.db").display()
        )
    } else {
        database_url.to_owned()
    };
    let grpc_port = free_port()?;
    let config = task_service::Config::from_lookup(lookup(
        vec![
            ("APP_ADDR", "127.0.0.1:0".to_owned()),
            ("AUTH_MODE", "dev".to_owned()),
            ("METRICS_ADDR", "off".to_owned()),
            ("DATABASE_URL", url),
            (topics::PREFIX_VAR, prefix.to_owned()),
            ("DAPR_GRPC_PORT", grpc_port.to_string()),
        ],
        &[
            "DATABASE_MAX_CONNECTIONS",
            "OUTBOX_BATCH_SIZE",
            "OUTBOX_POLL_MS",
        ],
    ))?;
    let app = task_service::build(config).await?;
    let mut opts = DaprdOptions::new(unique("bench-task-service"), Some(app.addr.port()));
    opts.grpc_port = Some(grpc_port);
    let sidecar = Daprd::start(opts).await?;
    Ok(TaskSide {
        app,
        sidecar,
        _dir: dir,
    })
}

// ------------------------------------------------------------------ creating the reminders

/// One reminder the benchmark asked for.
#[derive(Debug, Clone)]
struct Planned {
    remind_at: DateTime<Utc>,
}

/// Creates the tasks, `concurrency` requests in flight; answers task id → its reminder, and
/// the failures.
async fn create_all(
    addr: std::net::SocketAddr,
    cfg: &Config,
    window_start: DateTime<Utc>,
) -> anyhow::Result<(HashMap<String, Planned>, usize, Vec<String>)> {
    let clients = api::connect(addr, cfg.channels).await?;
    let users = api::users("bench-user", cfg.users)?;
    let clients: Arc<Vec<TaskServiceClient<GrpcChannel>>> = Arc::new(clients);
    let users = Arc::new(users);
    let step_ns = cfg.window.as_nanos() / cfg.reminders as u128;
    let n = cfg.reminders;
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..cfg.concurrency.min(n) {
        let (clients, users, next) = (clients.clone(), users.clone(), next.clone());
        workers.spawn(async move {
            let mut made = Vec::new();
            let mut errors = Vec::new();
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= n {
                    return (made, errors);
                }
                let offset = TimeDelta::nanoseconds(
                    i64::try_from(step_ns * seq as u128).unwrap_or(i64::MAX),
                );
                let remind_at = window_start + offset;
                let task = Task {
                    title: format!("benchmark reminder {seq}"),
                    due_time: Some(to_timestamp(remind_at + TimeDelta::hours(1))),
                    reminders: vec![Reminder {
                        when: Some(When::At(to_timestamp(remind_at))),
                    }],
                    ..Task::default()
                };
                let mut req = Request::new(CreateTaskRequest {
                    task: Some(task),
                    request_id: uuid::Uuid::new_v4().to_string(),
                    no_default_reminders: true,
                });
                req.metadata_mut()
                    .insert("x-user-id", users[seq % users.len()].clone());
                match clients[seq % clients.len()].clone().create_task(req).await {
                    Ok(r) => made.push((r.into_inner().id, Planned { remind_at })),
                    Err(s) => errors.push(format!("{:?}: {}", s.code(), s.message())),
                }
            }
        });
    }
    let mut planned = HashMap::with_capacity(n);
    let (mut failed, mut first_errors) = (0, Vec::new());
    while let Some(joined) = workers.join_next().await {
        let (made, errors) = joined.context("a create worker panicked")?;
        planned.extend(made);
        failed += errors.len();
        first_errors.extend(errors);
    }
    first_errors.truncate(KEEP_ERRORS);
    Ok((planned, failed, first_errors))
}

// ------------------------------------------------------------------ measuring

/// Microseconds of a (possibly negative) span, clamped to the histogram's range.
fn us(d: TimeDelta) -> u64 {
    u64::try_from(d.num_microseconds().unwrap_or(i64::MAX))
        .unwrap_or(0)
        .max(1)
}

/// p50 / p90 / p99 / max of a histogram, in ms.
fn quantiles(h: &Histogram<u64>) -> [String; 4] {
    if h.is_empty() {
        return ["–".into(), "–".into(), "–".into(), "–".into()];
    }
    [
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.90)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
    ]
}

/// The partition daprd's producer picks for `key`: Sarama's hash partitioner (FNV-1a, as a
/// signed 32-bit number, remainder, absolute value).
fn partition(key: &str, partitions: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let p = (h as i32) % (partitions as i32);
    p.unsigned_abs()
}

/// Cores each process used over a phase: "name 0.42, …".
fn cores_by_process(usage: &PhaseUsage) -> String {
    let wall = usage.wall.as_secs_f64();
    usage
        .processes
        .iter()
        .map(|p| match p.cpu_ms {
            Some(ms) if wall > 0.0 => format!("{} {:.2}", p.name, ms / 1000.0 / wall),
            _ => format!("{} n/a", p.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// When the event of a delivery was fired by the scheduler (ms resolution).
fn fired_at(n: &Notification) -> Option<DateTime<Utc>> {
    n.fire_lateness_ms
        .and_then(|l| i64::try_from(l).ok())
        .map(|l| n.remind_at + TimeDelta::milliseconds(l))
}

/// Everything the run measured.
struct Report {
    expected: usize,
    delivered_distinct: usize,
    duplicates: usize,
    missing: usize,
    unexpected: usize,
    wrong_moment: usize,
    lateness: Histogram<u64>,
    fire: Histogram<u64>,
    pipe: Histogram<u64>,
    claim: Histogram<u64>,
    /// Per-event handling time on a partition with a queue, and its two parts.
    cycle: Histogram<u64>,
    cycle_claim: Histogram<u64>,
    cycle_rest: Histogram<u64>,
    /// Consecutive handlings on one inferred partition that overlapped (0 if the inference
    /// and the one-at-a-time model hold).
    overlaps: usize,
    over_seed_limit: usize,
    /// Per 10 s of `remind_at`: (count, p50, p99, max) lateness in µs.
    timeline: BTreeMap<i64, Histogram<u64>>,
    first_delivery: Option<DateTime<Utc>>,
    last_delivery: Option<DateTime<Utc>>,
}

fn analyse(
    cfg: &Config,
    planned: &HashMap<String, Planned>,
    deliveries: &[Delivery],
    window_start: DateTime<Utc>,
) -> anyhow::Result<Report> {
    let mut r = Report {
        expected: planned.len(),
        delivered_distinct: 0,
        duplicates: 0,
        missing: 0,
        unexpected: 0,
        wrong_moment: 0,
        lateness: histogram()?,
        fire: histogram()?,
        pipe: histogram()?,
        claim: histogram()?,
        cycle: histogram()?,
        cycle_claim: histogram()?,
        cycle_rest: histogram()?,
        overlaps: 0,
        over_seed_limit: 0,
        timeline: BTreeMap::new(),
        first_delivery: deliveries.iter().map(|d| d.at).min(),
        last_delivery: deliveries.iter().map(|d| d.at).max(),
    };
    let mut per_reminder: HashMap<&str, usize> = HashMap::new();
    let mut per_task: HashMap<&str, usize> = HashMap::new();
    for d in deliveries {
        let n = &d.notification;
        *per_reminder.entry(n.reminder_id.as_str()).or_default() += 1;
        *per_task.entry(n.task_id.as_str()).or_default() += 1;
        let Some(p) = planned.get(&n.task_id) else {
            r.unexpected += 1;
            continue;
        };
        if (n.remind_at - p.remind_at).num_microseconds() != Some(0) {
            r.wrong_moment += 1;
        }
        let late = us(d.at - n.remind_at);
        r.lateness.saturating_record(late);
        if late >= SEED_LIMIT_US {
            r.over_seed_limit += 1;
        }
        if let Some(f) = n.fire_lateness_ms {
            r.fire.saturating_record(f.saturating_mul(1000).max(1));
        }
        if let Some(fired) = fired_at(n) {
            r.pipe.saturating_record(us(n.delivered_at - fired));
        }
        r.claim.saturating_record(us(d.at - n.delivered_at));
        let bucket = (n.remind_at - window_start).num_seconds().div_euclid(10) * 10;
        match r.timeline.get_mut(&bucket) {
            Some(h) => h.saturating_record(late),
            None => {
                let mut h = histogram()?;
                h.saturating_record(late);
                r.timeline.insert(bucket, h);
            }
        }
    }
    r.delivered_distinct = per_reminder.len();
    r.duplicates = per_reminder.values().map(|c| c - 1).sum();
    r.missing = planned
        .keys()
        .filter(|t| !per_task.contains_key(t.as_str()))
        .count();

    // Handlings on one partition, in the order their handlers started.
    let mut by_partition: HashMap<u32, Vec<&Delivery>> = HashMap::new();
    for d in deliveries {
        by_partition
            .entry(partition(&d.notification.user_id, cfg.partitions))
            .or_default()
            .push(d);
    }
    for list in by_partition.values_mut() {
        list.sort_by_key(|d| d.notification.delivered_at);
        for pair in list.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if b.notification.delivered_at < a.at {
                r.overlaps += 1;
                continue;
            }
            let queued = fired_at(&b.notification)
                .is_some_and(|f| f + QUEUED_MARGIN <= a.notification.delivered_at);
            if queued {
                r.cycle.saturating_record(us(
                    b.notification.delivered_at - a.notification.delivered_at
                ));
                r.cycle_claim
                    .saturating_record(us(a.at - a.notification.delivered_at));
                r.cycle_rest
                    .saturating_record(us(b.notification.delivered_at - a.at));
            }
        }
    }
    Ok(r)
}

fn secs(d: TimeDelta) -> String {
    format!("{:.1}", d.num_milliseconds() as f64 / 1000.0)
}

// ------------------------------------------------------------------ the run

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    todo_telemetry::init("warn");
    let cfg = Config::from_env()?;
    let (t, c) = (Instant::now(), CpuSample::now());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_load = cores_used(c, CpuSample::now(), t.elapsed());

    ensure_kafka().await?;
    let prefix = unique("bench-rem");
    let pg = match cfg.database {
        Db::Sqlite => None,
        Db::Postgres => Some(pg::create_database(&cfg.pg_admin_url, "bench_rem").await?),
    };
    let url = pg.as_ref().map(|(_, u)| u.clone()).unwrap_or_default();
    let state_pg = match cfg.state_store {
        Db::Sqlite => None,
        Db::Postgres => Some(pg::create_database(&cfg.pg_admin_url, "bench_rem_state").await?),
    };
    let recorder = Arc::new(Recorder::default());
    let started = Instant::now();
    let (notif, tasks) = tokio::join!(
        start_notification_service(
            &prefix,
            recorder.clone(),
            state_pg.as_ref().map(|(_, u)| u.as_str())
        ),
        start_task_service(&prefix, &url),
    );
    let (notif, tasks) = (notif?, tasks?);
    eprintln!(
        "bench-reminders: chain up in {:.1} s (prefix {prefix}; sidecar logs {} and {})",
        started.elapsed().as_secs_f64(),
        notif.sidecar.log_path.display(),
        tasks.sidecar.log_path.display()
    );

    let outcome = run(&cfg, &tasks, &notif, &recorder).await;

    let NotificationSide { app, sidecar, .. } = notif;
    let stats_before = app.stats();
    let _ = tokio::time::timeout(Duration::from_secs(10), app.shutdown()).await;
    drop(sidecar);
    let TaskSide { app, sidecar, .. } = tasks;
    let _ = tokio::time::timeout(Duration::from_secs(10), app.shutdown()).await;
    drop(sidecar);
    for (name, _) in pg.iter().chain(state_pg.iter()) {
        if let Err(e) = pg::drop_database(&cfg.pg_admin_url, name).await {
            eprintln!("bench-reminders: could not drop database {name}: {e:#}");
        }
    }
    let (report, run_info) = outcome?;
    print_report(&cfg, &report, &run_info, stats_before, &idle_load);
    ensure!(
        report.missing == 0 && report.duplicates == 0 && report.unexpected == 0,
        "{} reminders missing, {} delivered more than once, {} not ours",
        report.missing,
        report.duplicates,
        report.unexpected
    );
    ensure!(
        report.wrong_moment == 0,
        "{} deliveries carried another remind_at than the one asked for",
        report.wrong_moment
    );
    Ok(())
}

/// What the run observed besides the deliveries.
struct RunInfo {
    create_wall: Duration,
    create_rate: f64,
    scheduled_drained_after: Option<Duration>,
    window_start: DateTime<Utc>,
    window_end: DateTime<Utc>,
    cpu_create: String,
    cpu_window: String,
    /// Cores per process of the chain during the window.
    cpu_window_by_process: String,
    database: &'static str,
    /// The processes of the chain, and what they used creating the tasks and during the
    /// window (window start → last delivery).
    processes: ProcessSet,
    usage_create: PhaseUsage,
    usage_window: Option<PhaseUsage>,
    delivered: usize,
}

async fn run(
    cfg: &Config,
    tasks: &TaskSide,
    notif: &NotificationSide,
    recorder: &Recorder,
) -> anyhow::Result<(Report, RunInfo)> {
    let mut procs = ProcessSet::new()
        .this_process("bench")
        .process("daprd task-service", tasks.sidecar.pid())
        .process("daprd notification", notif.sidecar.pid())
        .process("Kafka", kafka_pid());
    if cfg.database == Db::Postgres || cfg.state_store == Db::Postgres {
        procs = procs.process_tree("PostgreSQL", pg::server_pid(&cfg.pg_admin_url).await.ok());
    }
    let t0 = Utc::now();
    let window_start = t0 + TimeDelta::from_std(cfg.start)?;
    let window_end = window_start + TimeDelta::from_std(cfg.window)?;
    let create_started = Instant::now();
    let (cpu0, create_meter) = (CpuSample::now(), procs.start());
    let (planned, failed, first_errors) = create_all(tasks.app.addr, cfg, window_start).await?;
    let create_wall = create_started.elapsed();
    let cpu_create = cores_used(cpu0, CpuSample::now(), create_wall);
    let usage_create = create_meter.stop();
    let create_rate = planned.len() as f64 / create_wall.as_secs_f64();
    eprintln!(
        "bench-reminders: created {} tasks in {:.1} s ({create_rate:.0}/s), {failed} failed; \
         window opens in {} s",
        planned.len(),
        create_wall.as_secs_f64(),
        secs(window_start - Utc::now())
    );
    ensure!(
        failed == 0,
        "{failed} CreateTask calls failed, e.g. {first_errors:?}"
    );
    ensure!(
        Utc::now() + TimeDelta::seconds(1) < window_start,
        "creating took {:.1} s, past the window's start {} s after the first create: raise \
         BENCH_START_SECS",
        create_wall.as_secs_f64(),
        cfg.start.as_secs()
    );

    // Until the window opens: the `scheduled` events of the creates drain (acknowledged
    // untouched by notification-service), so they do not compete with the due ones.
    let mut scheduled_drained_after = None;
    let expected = planned.len();
    let deadline = window_end + TimeDelta::from_std(cfg.timeout)?;
    let mut last_print = Instant::now();
    let mut cpu_window_start = None;
    let mut window_meter: Option<PhaseMeter> = None;
    let mut window_started_at = None;
    loop {
        let now = Utc::now();
        let s = notif.app.stats();
        if scheduled_drained_after.is_none() && s.not_ours >= expected as u64 {
            scheduled_drained_after = Some(create_started.elapsed());
        }
        if window_started_at.is_none() && now >= window_start {
            window_started_at = Some(Instant::now());
            cpu_window_start = CpuSample::now();
            window_meter = Some(procs.start());
        }
        let delivered = recorder.count();
        if delivered >= expected {
            break;
        }
        if now > deadline {
            eprintln!(
                "bench-reminders: gave up {} s after the window's end with {delivered} of \
                 {expected} delivered",
                cfg.timeout.as_secs()
            );
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            eprintln!(
                "bench-reminders: t{:+.1} s of the window: {delivered}/{expected} delivered; \
                 service answers {s:?}",
                (now - window_start).num_milliseconds() as f64 / 1000.0
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let usage_window = window_meter.map(PhaseMeter::stop);
    let (cpu_window, cpu_window_by_process) = match (window_started_at, &usage_window) {
        (Some(t), Some(u)) => (
            cores_used(cpu_window_start, CpuSample::now(), t.elapsed()),
            cores_by_process(u),
        ),
        _ => ("n/a".to_owned(), "n/a".to_owned()),
    };
    let delivered = recorder.count();
    // Late duplicates (a redelivery after the last first delivery) would show up now.
    tokio::time::sleep(cfg.settle).await;
    let deliveries = recorder.all();
    let report = analyse(cfg, &planned, &deliveries, window_start)?;
    Ok((
        report,
        RunInfo {
            create_wall,
            create_rate,
            scheduled_drained_after,
            window_start,
            window_end,
            cpu_create,
            cpu_window,
            cpu_window_by_process,
            database: match cfg.database {
                Db::Sqlite => "SQLite (fresh file, WAL)",
                Db::Postgres => "PostgreSQL (fresh database on DATABASE_URL_PG)",
            },
            processes: procs,
            usage_create,
            usage_window,
            delivered,
        },
    ))
}

fn print_report(cfg: &Config, r: &Report, info: &RunInfo, stats: StatsSnapshot, idle_load: &str) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "## Reminders: task-service scheduler → outbox → daprd → Kafka → daprd → notification-service\n"
    );
    println!(
        "| reminders | window s | users | delivered | duplicates | missing | p50 ms | p90 ms | p99 ms | max ms | over 10 s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let [p50, p90, p99, max] = quantiles(&r.lateness);
    println!(
        "| {} | {} | {} | {} | {} | {} | {p50} | {p90} | {p99} | {max} | {} |",
        r.expected,
        cfg.window.as_secs(),
        cfg.users,
        r.delivered_distinct,
        r.duplicates,
        r.missing,
        r.over_seed_limit
    );
    println!("\nWhere the lateness comes from (ms):\n");
    println!("| part | p50 | p90 | p99 | max |");
    println!("|---|---:|---:|---:|---:|");
    for (name, h) in [
        ("lateness (delivery − remind_at)", &r.lateness),
        ("scheduler fire lateness (fire − remind_at)", &r.fire),
        ("pipe (fire → handler starts)", &r.pipe),
        ("claim (handler start → channel)", &r.claim),
        (
            "handling per event, queued partitions (start → next start)",
            &r.cycle,
        ),
        ("… of which claim", &r.cycle_claim),
        ("… of which record + answer + next hand-over", &r.cycle_rest),
    ] {
        let [a, b, c, d] = quantiles(h);
        println!("| {name} | {a} | {b} | {c} | {d} |");
    }
    let create_label = format!(
        "create {} tasks ({} in flight)",
        r.expected, cfg.concurrency
    );
    let mut rows = vec![UsageRow {
        phase: &create_label,
        ops: r.expected as u64,
        usage: &info.usage_create,
    }];
    if let Some(u) = &info.usage_window {
        rows.push(UsageRow {
            phase: "window: window start → last delivery",
            ops: info.delivered as u64,
            usage: u,
        });
    }
    println!();
    print!(
        "{}",
        usage_block(
            "Per phase (create: per task created; window: per reminder delivered)",
            &info.processes,
            "reminder",
            &rows
        )
    );
    println!("\nLateness by moment in the window (remind_at − window start):\n");
    println!("| s | reminders | p50 ms | p99 ms | max ms |");
    println!("|---:|---:|---:|---:|---:|");
    for (bucket, h) in &r.timeline {
        let [a, _, c, d] = quantiles(h);
        println!(
            "| {bucket}–{} | {} | {a} | {c} | {d} |",
            bucket + 10,
            h.len()
        );
    }
    println!();
    println!(
        "- command: {}",
        command(
            "bench_reminders",
            &[
                "DATABASE_MAX_CONNECTIONS",
                "OUTBOX_BATCH_SIZE",
                "OUTBOX_POLL_MS",
                "NOTIFICATION_CLAIM_LEASE_MS",
                "STATE_TIMEOUT_MS",
                "NOTIFICATIONS_PER_USER"
            ]
        )
    );
    println!(
        "- machine: nproc {cpus}, {}, {} RAM; Kafka, both daprd and this process (load \
         generator, task-service, notification-service) all on these cores",
        cpu_model(),
        mem_total()
    );
    println!("- CPU busy in the second before the run (this process / host): {idle_load} cores");
    println!(
        "- task-service on {}; {} tasks created with one absolute reminder each, {} in \
         flight, {} users: {:.1} s ({:.0}/s), CPU {} cores (process / host)",
        info.database,
        r.expected,
        cfg.concurrency,
        cfg.users,
        info.create_wall.as_secs_f64(),
        info.create_rate,
        info.cpu_create
    );
    println!(
        "- notification-service's delivery log: {}",
        match cfg.state_store {
            Db::Sqlite => "Dapr's SQLite state store (state.sqlite, a fresh file)",
            Db::Postgres =>
                "Dapr's PostgreSQL state store (state.postgresql v2, a fresh database on DATABASE_URL_PG)",
        }
    );
    match info.scheduled_drained_after {
        Some(d) => println!(
            "- the creates' `scheduled` events were all acknowledged by notification-service {:.1} s after the first create",
            d.as_secs_f64()
        ),
        None => println!(
            "- the creates' `scheduled` events had not all been acknowledged when the run ended"
        ),
    }
    println!(
        "- window: {} → {} ({} s after the first create); first delivery at window {}, last at \
         window {} s (end of window = {} s); CPU during the window {} cores (process / host)",
        info.window_start.format("%H:%M:%S%.3f"),
        info.window_end.format("%H:%M:%S%.3f"),
        cfg.start.as_secs(),
        r.first_delivery.map_or("–".to_owned(), |t| format!(
            "{} s",
            secs(t - info.window_start)
        )),
        r.last_delivery
            .map_or("–".to_owned(), |t| secs(t - info.window_start)),
        cfg.window.as_secs(),
        info.cpu_window
    );
    println!(
        "- CPU during the window by process, in cores: {}",
        info.cpu_window_by_process
    );
    println!(
        "- notification-service answers: {} delivered, {} already delivered (redeliveries \
         caught by the delivery log), {} not ours (scheduled/cancelled), {} RETRY, {} DROP",
        stats.delivered, stats.duplicates, stats.not_ours, stats.retried, stats.dropped
    );
    println!(
        "- partition inference (Sarama hash of the user id over {} partitions): {} overlapping \
         handlings on one partition (0 = one at a time, as assumed)",
        cfg.partitions, r.overlaps
    );
    if r.unexpected > 0 || r.wrong_moment > 0 {
        println!(
            "- {} deliveries of tasks not created here, {} with another remind_at than asked",
            r.unexpected, r.wrong_moment
        );
    }
    let p99 = r.lateness.value_at_quantile(0.99);
    let complete = r.missing == 0 && r.duplicates == 0 && !r.lateness.is_empty();
    println!(
        "- goal lateness p99 ≤ {} ms: {}; seeds' limit < {} s for every reminder: {}",
        ms(GOAL_P99_US),
        if complete && p99 <= GOAL_P99_US {
            "met"
        } else {
            "NOT met"
        },
        SEED_LIMIT_US / 1_000_000,
        if complete && r.lateness.max() < SEED_LIMIT_US {
            "met"
        } else {
            "NOT met"
        }
    );
}
