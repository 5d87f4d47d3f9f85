//! The Task API benchmark: a gRPC load generator against task-service on SQLite and on
//! PostgreSQL.
//!
//! task-service is built in-process by `task_service::build` (exactly what `main` runs),
//! with `AUTH_MODE=dev` (callers name themselves with `x-user-id`), on 127.0.0.1:0, on a
//! fresh database: a new SQLite file in a temporary directory, and a new PostgreSQL
//! database created on the server at `DATABASE_URL_PG` (dropped at the end). The load
//! generator talks to it over real HTTP/2 connections (`BENCH_CHANNELS` tonic channels,
//! requests spread round-robin over them) from the same process.
//!
//! Per database, after a warm-up of `BENCH_WARMUP` requests of each RPC (not counted):
//!
//! - closed loop: `BENCH_REQUESTS` CreateTask, then as many GetTask (ids picked across
//!   everything created), then as many ListTasks (`page_size` 50, default order), each
//!   with `BENCH_CONCURRENCY` requests in flight, spread over `BENCH_USERS` users;
//! - open loop: CreateTask at `BENCH_RATE` requests/s for `BENCH_RATE_SECS` s, sent on
//!   schedule whatever the answers do (a pacing thread), latency measured from the instant
//!   each request was due to be sent (so a stall counts against every request it delays).
//!
//! Latency is recorded in HDR histograms (µs, 3 significant digits); throughput is requests
//! / wall time of the phase. Each phase also reports CPU ms per request and peak RSS of this
//! process (load generator and task-service) and, on PostgreSQL, of the server (postmaster
//! and backends), read from /proc by `todo_harness::processes`. Failed requests are counted and reported, and the example
//! exits non-zero if any request failed.
//!
//! Run with `just bench-api`, i.e. `cargo run --release -p todo-bench --bin
//! bench_api` (PostgreSQL must be up: `bash scripts/pg.sh up`). Environment:
//! `BENCH_REQUESTS` (10000 per RPC), `BENCH_WARMUP` (500 per RPC), `BENCH_CONCURRENCY`
//! (32), `BENCH_USERS` (100), `BENCH_CHANNELS` (4), `BENCH_PAGE_SIZE` (50), `BENCH_RATE`
//! (1000 requests/s), `BENCH_RATE_SECS` (5), `BENCH_DATABASES` (`sqlite,postgres`),
//! `DATABASE_URL_PG` (postgres://todo:todo@127.0.0.1:15432/todo); the service's own
//! `DATABASE_MAX_CONNECTIONS`, `MAX_CONCURRENT_REQUESTS` and `REQUEST_TIMEOUT_MS` are passed
//! through when set.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use todo_service::cli::ServiceConfig as _;

use anyhow::{Context, ensure};
use hdrhistogram::Histogram;
use task_service::{App, auth::AuthMode};
use todo_bench::{
    api::{self, describe},
    db::{Db, databases_from_env, pg_admin_url},
    report::{command, histogram, micros, ms, server_version, usage_block},
};
use todo_harness::{
    bench::{CpuSample, cores_used, env_usize},
    machine::{cpu_model, mem_total},
    pg,
    processes::{PhaseUsage, ProcessSet, UsageRow},
};
use todo_proto::todo::v1::{
    CreateTaskRequest, GetTaskRequest, ListTasksRequest, task_service_client::TaskServiceClient,
};
use tonic::{Request, Status, metadata::AsciiMetadataValue, transport::Channel};

/// Where the service's outbox relay is told its sidecar is: a port nothing listens on.
const NO_SIDECAR: &str = "http://127.0.0.1:1";
/// The goal: CreateTask p99 at most this many µs at the open-loop rate.
const GOAL_P99_US: u64 = 5_000;
const GOAL_RATE: usize = 1_000;
/// How many failure messages a phase keeps for the report.
const KEEP_ERRORS: usize = 3;

/// What to run, from the environment.
#[derive(Debug, Clone)]
struct Config {
    requests: usize,
    warmup: usize,
    concurrency: usize,
    users: usize,
    channels: usize,
    page_size: usize,
    rate: usize,
    rate_secs: usize,
    databases: Vec<Db>,
    pg_admin_url: String,
}

impl Config {
    fn from_env() -> anyhow::Result<Self> {
        let (databases, _) = databases_from_env()?;
        let page_size = env_usize("BENCH_PAGE_SIZE", 50)?;
        ensure!(page_size <= 1000, "BENCH_PAGE_SIZE must be at most 1000");
        Ok(Self {
            requests: env_usize("BENCH_REQUESTS", 10_000)?,
            warmup: env_usize("BENCH_WARMUP", 500)?,
            concurrency: env_usize("BENCH_CONCURRENCY", 32)?,
            users: env_usize("BENCH_USERS", 100)?,
            channels: env_usize("BENCH_CHANNELS", 4)?,
            page_size,
            rate: env_usize("BENCH_RATE", GOAL_RATE)?,
            rate_secs: env_usize("BENCH_RATE_SECS", 5)?,
            databases,
            pg_admin_url: pg_admin_url(),
        })
    }
}

/// The figures of one measured phase.
struct Figures {
    database: Db,
    rpc: &'static str,
    load: String,
    requests: usize,
    errors: usize,
    first_errors: Vec<String>,
    elapsed: Duration,
    /// Successful requests only.
    latency_us: Histogram<u64>,
    cpu: String,
    /// CPU and memory of this process (and of the PostgreSQL server) over the phase.
    usage: PhaseUsage,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// What the workers of one phase saw.
struct Outcome {
    latency_us: Histogram<u64>,
    errors: usize,
    first_errors: Vec<String>,
    /// (user index, task id) of the tasks a CreateTask phase made.
    created: Vec<(usize, String)>,
}

impl Outcome {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latency_us: histogram()?,
            errors: 0,
            first_errors: Vec::new(),
            created: Vec::new(),
        })
    }

    fn fail(&mut self, what: String) {
        self.errors += 1;
        if self.first_errors.len() < KEEP_ERRORS {
            self.first_errors.push(what);
        }
    }

    fn merge(&mut self, other: Self) -> anyhow::Result<()> {
        self.latency_us.add(&other.latency_us)?;
        self.errors += other.errors;
        for e in other.first_errors {
            if self.first_errors.len() < KEEP_ERRORS {
                self.first_errors.push(e);
            }
        }
        self.created.extend(other.created);
        Ok(())
    }
}

/// The connections to the service and the users requests are spread over.
struct Clients {
    clients: Vec<TaskServiceClient<Channel>>,
    /// The `x-user-id` header value of each user.
    users: Vec<AsciiMetadataValue>,
}

impl Clients {
    async fn connect(addr: std::net::SocketAddr, cfg: &Config) -> anyhow::Result<Self> {
        let clients = api::connect(addr, cfg.channels).await?;
        let users = api::users("bench-user", cfg.users)?;
        Ok(Self { clients, users })
    }

    fn client(&self, seq: usize) -> TaskServiceClient<Channel> {
        self.clients[seq % self.clients.len()].clone()
    }

    fn user_of(&self, seq: usize) -> usize {
        seq % self.users.len()
    }

    fn request<T>(&self, user: usize, msg: T) -> Request<T> {
        api::as_user(&self.users[user % self.users.len()], msg)
    }

    /// CreateTask number `seq`, as user `seq % users`; answers (user, new task id).
    async fn create(&self, seq: usize) -> Result<(usize, String), Status> {
        let user = self.user_of(seq);
        let msg = CreateTaskRequest {
            task: Some(api::task(seq, "bench_api")),
            // As a well-behaved client sends it: the idempotency key of this create.
            request_id: uuid::Uuid::new_v4().to_string(),
            no_default_reminders: false,
        };
        let task = self
            .client(seq)
            .create_task(self.request(user, msg))
            .await?
            .into_inner();
        Ok((user, task.id))
    }
}

/// Runs `n` calls of `op(seq)` with `concurrency` in flight; records each one's latency.
async fn closed_loop<F, Fut>(n: usize, concurrency: usize, op: F) -> anyhow::Result<Outcome>
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<(usize, String)>, String>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(n) {
        let (next, op) = (next.clone(), op.clone());
        workers.spawn(async move {
            let mut out = Outcome::new()?;
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= n {
                    return anyhow::Ok(out);
                }
                let sent = Instant::now();
                let result = op(seq).await;
                let took = sent.elapsed();
                match result {
                    Ok(created) => {
                        out.latency_us.saturating_record(micros(took));
                        out.created.extend(created);
                    }
                    Err(e) => out.fail(e),
                }
            }
        });
    }
    let mut total = Outcome::new()?;
    while let Some(joined) = workers.join_next().await {
        total.merge(joined.context("a load worker panicked")??)?;
    }
    Ok(total)
}

/// The tasks made so far: what GetTask asks for and how long each user's list is.
#[derive(Default, Clone)]
struct Made {
    ids: Vec<(usize, String)>,
    per_user: HashMap<usize, usize>,
}

impl Made {
    fn add(&mut self, created: &[(usize, String)]) {
        for (user, id) in created {
            self.ids.push((*user, id.clone()));
            *self.per_user.entry(*user).or_default() += 1;
        }
    }
}

async fn create_phase(
    clients: &Arc<Clients>,
    first_seq: usize,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Outcome> {
    let c = clients.clone();
    closed_loop(n, concurrency, move |i| {
        let c = c.clone();
        async move {
            c.create(first_seq + i)
                .await
                .map(Some)
                .map_err(|s| describe(&s))
        }
    })
    .await
}

async fn get_phase(
    clients: &Arc<Clients>,
    made: &Arc<Made>,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Outcome> {
    ensure!(!made.ids.is_empty(), "no task was created, nothing to get");
    let (c, made) = (clients.clone(), made.clone());
    closed_loop(n, concurrency, move |i| {
        let (c, made) = (c.clone(), made.clone());
        async move {
            // A spread-out walk over every task created (7919 is prime).
            let (user, id) = &made.ids[i.wrapping_mul(7919) % made.ids.len()];
            let got = c
                .client(i)
                .get_task(c.request(*user, GetTaskRequest { id: id.clone() }))
                .await
                .map_err(|s| describe(&s))?
                .into_inner();
            if &got.id != id {
                return Err(format!("GetTask {id} answered task {}", got.id));
            }
            Ok(None)
        }
    })
    .await
}

async fn list_phase(
    clients: &Arc<Clients>,
    made: &Arc<Made>,
    n: usize,
    concurrency: usize,
    page_size: usize,
) -> anyhow::Result<Outcome> {
    let (c, made) = (clients.clone(), made.clone());
    let size = i32::try_from(page_size)?;
    closed_loop(n, concurrency, move |i| {
        let (c, made) = (c.clone(), made.clone());
        async move {
            let user = c.user_of(i);
            let msg = ListTasksRequest {
                page_size: size,
                ..ListTasksRequest::default()
            };
            let page = c
                .client(i)
                .list_tasks(c.request(user, msg))
                .await
                .map_err(|s| describe(&s))?
                .into_inner();
            let expected = made
                .per_user
                .get(&user)
                .copied()
                .unwrap_or(0)
                .min(page_size);
            if page.tasks.len() != expected {
                return Err(format!(
                    "ListTasks of user {user} answered {} tasks, expected {expected}",
                    page.tasks.len()
                ));
            }
            Ok(None)
        }
    })
    .await
}

/// CreateTask at `rate` per second for `secs` seconds, on schedule (open loop).
///
/// A plain thread paces the sends (tokio's timer has a 1 ms granularity, as coarse as the
/// period itself) and spawns each request onto the runtime at the instant it is due;
/// latency runs from that due instant to the answer.
async fn open_loop_create(
    clients: &Arc<Clients>,
    first_seq: usize,
    rate: usize,
    secs: usize,
) -> anyhow::Result<(Outcome, Duration)> {
    let total = rate * secs;
    let period_ns = 1e9 / rate as f64;
    let handle = tokio::runtime::Handle::current();
    let c = clients.clone();
    let (start, handles) = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut handles = Vec::with_capacity(total);
        for k in 0..total {
            let due = start + Duration::from_nanos((k as f64 * period_ns) as u64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let c = c.clone();
            handles.push(handle.spawn(async move {
                let result = c.create(first_seq + k).await;
                let done = Instant::now();
                (done.duration_since(due), done, result)
            }));
        }
        (start, handles)
    })
    .await
    .context("the pacing thread panicked")?;
    let mut out = Outcome::new()?;
    let mut last = start;
    for h in handles {
        let (latency, done, result) = h.await.context("a request task panicked")?;
        last = last.max(done);
        match result {
            Ok(created) => {
                out.latency_us.saturating_record(micros(latency));
                out.created.push(created);
            }
            Err(s) => out.fail(describe(&s)),
        }
    }
    Ok((out, last.duration_since(start)))
}

/// What one database run reports besides its figures.
struct RunInfo {
    database: Db,
    version: String,
    pool: u32,
    /// The processes whose CPU and memory were measured.
    processes: ProcessSet,
}

/// Builds task-service on `url` and measures every phase against it.
async fn measure(database: Db, url: &str, cfg: &Config) -> anyhow::Result<(Vec<Figures>, RunInfo)> {
    // The service's own defaults for this database (pool size, limits, timeout), with the
    // tuning variables passed through when set.
    let mut service = task_service::Config::from_lookup(|k| match k {
        "AUTH_MODE" => Some("dev".to_owned()),
        "APP_ADDR" => Some("127.0.0.1:0".to_owned()),
        "DATABASE_URL" => Some(url.to_owned()),
        // The outbox relay has no sidecar here: point it at a port nothing listens on
        // (never at a daprd that may be running for `just up`), under its own topic prefix.
        "DAPR_GRPC_ENDPOINT" => Some(NO_SIDECAR.to_owned()),
        "TOPIC_PREFIX" => Some(format!("bench-{}", uuid::Uuid::new_v4().simple())),
        // Metrics are recorded as in production, served on a port of the OS's choosing.
        "METRICS_ADDR" => Some("127.0.0.1:0".to_owned()),
        "DATABASE_MAX_CONNECTIONS"
        | "MAX_CONCURRENT_REQUESTS"
        | "REQUEST_TIMEOUT_MS"
        | "WRITE_GROUP_MAX" => std::env::var(k).ok(),
        _ => None,
    })?;
    service.database_url = url.to_owned();
    service.auth = AuthMode::Dev;
    let pool = service.database_max_connections;
    let app: App = task_service::build(service)
        .await
        .with_context(|| format!("starting task-service on {}", database.name()))?;
    let mut processes = ProcessSet::new().this_process("bench");
    if database == Db::Postgres {
        processes =
            processes.process_tree("PostgreSQL", pg::server_pid(&cfg.pg_admin_url).await.ok());
    }
    let info = RunInfo {
        database,
        version: server_version(&app.db).await,
        pool,
        processes,
    };
    let clients = Arc::new(Clients::connect(app.addr, cfg).await?);
    let result = phases(database, &clients, cfg, &info.processes).await;
    drop(clients);
    let stopped = app.shutdown().await;
    let figures = result?;
    stopped.context("stopping task-service")?;
    Ok((figures, info))
}

async fn phases(
    database: Db,
    clients: &Arc<Clients>,
    cfg: &Config,
    procs: &ProcessSet,
) -> anyhow::Result<Vec<Figures>> {
    let name = database.name();
    let mut made = Made::default();
    let mut seq = 0;

    eprintln!(
        "bench_api: {name}: warm-up, {} requests per RPC",
        cfg.warmup
    );
    let warm = create_phase(clients, seq, cfg.warmup, cfg.concurrency).await?;
    seq += cfg.warmup;
    made.add(&warm.created);
    let mut warm_errors = warm.errors;
    let mut warm_failures = warm.first_errors;
    let snapshot = Arc::new(made.clone());
    for out in [
        get_phase(clients, &snapshot, cfg.warmup, cfg.concurrency).await?,
        list_phase(
            clients,
            &snapshot,
            cfg.warmup,
            cfg.concurrency,
            cfg.page_size,
        )
        .await?,
    ] {
        warm_errors += out.errors;
        warm_failures.extend(out.first_errors);
    }
    ensure!(
        warm_errors == 0,
        "{name}: {warm_errors} warm-up requests failed, e.g. {warm_failures:?}"
    );

    let mut figures = Vec::new();
    let closed = format!("closed, {} in flight", cfg.concurrency);
    let mut record = |rpc: &'static str,
                      load: String,
                      requests: usize,
                      out: Outcome,
                      elapsed: Duration,
                      cpu: String,
                      usage: PhaseUsage| {
        eprintln!(
            "bench_api: {name}: {rpc} ({load}): {requests} in {:.2} s, {} errors",
            elapsed.as_secs_f64(),
            out.errors
        );
        figures.push(Figures {
            database,
            rpc,
            load,
            requests,
            errors: out.errors,
            first_errors: out.first_errors,
            elapsed,
            latency_us: out.latency_us,
            cpu,
            usage,
        });
    };

    // CreateTask, closed loop.
    let (t0, c0, m) = (Instant::now(), CpuSample::now(), procs.start());
    let out = create_phase(clients, seq, cfg.requests, cfg.concurrency).await?;
    let elapsed = t0.elapsed();
    let (cpu, usage) = (cores_used(c0, CpuSample::now(), elapsed), m.stop());
    seq += cfg.requests;
    made.add(&out.created);
    record(
        "CreateTask",
        closed.clone(),
        cfg.requests,
        out,
        elapsed,
        cpu,
        usage,
    );

    let made = Arc::new(made);
    let (t0, c0, m) = (Instant::now(), CpuSample::now(), procs.start());
    let out = get_phase(clients, &made, cfg.requests, cfg.concurrency).await?;
    let elapsed = t0.elapsed();
    let (cpu, usage) = (cores_used(c0, CpuSample::now(), elapsed), m.stop());
    record(
        "GetTask",
        closed.clone(),
        cfg.requests,
        out,
        elapsed,
        cpu,
        usage,
    );

    let (t0, c0, m) = (Instant::now(), CpuSample::now(), procs.start());
    let out = list_phase(clients, &made, cfg.requests, cfg.concurrency, cfg.page_size).await?;
    let elapsed = t0.elapsed();
    let (cpu, usage) = (cores_used(c0, CpuSample::now(), elapsed), m.stop());
    record(
        "ListTasks",
        format!("{closed}, page_size {}", cfg.page_size),
        cfg.requests,
        out,
        elapsed,
        cpu,
        usage,
    );

    // CreateTask, open loop at the goal's rate.
    let (c0, m) = (CpuSample::now(), procs.start());
    let (out, elapsed) = open_loop_create(clients, seq, cfg.rate, cfg.rate_secs).await?;
    let (cpu, usage) = (cores_used(c0, CpuSample::now(), elapsed), m.stop());
    record(
        "CreateTask",
        format!("open, {}/s for {} s", cfg.rate, cfg.rate_secs),
        cfg.rate * cfg.rate_secs,
        out,
        elapsed,
        cpu,
        usage,
    );
    Ok(figures)
}

/// One database from creation to cleanup.
async fn run_database(database: Db, cfg: &Config) -> anyhow::Result<(Vec<Figures>, RunInfo)> {
    match database {
        Db::Sqlite => {
            let dir = tempfile::tempdir()?;
            let url = format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("tasks.db").display()
            );
            measure(database, &url, cfg).await
        }
        Db::Postgres => {
            let (name, url) = pg::create_database(&cfg.pg_admin_url, "bench").await?;
            eprintln!("bench_api: PostgreSQL: database {name} created");
            let result = measure(database, &url, cfg).await;
            let dropped = pg::drop_database(&cfg.pg_admin_url, &name).await;
            let out = result?;
            dropped.with_context(|| format!("dropping the benchmark database {name}"))?;
            eprintln!("bench_api: PostgreSQL: database {name} dropped");
            Ok(out)
        }
    }
}

fn table(figures: &[Figures]) -> String {
    let mut out = String::from(
        "| database | RPC | load | requests | errors | req/s | p50 ms | p90 ms | p99 ms | \
         max ms | CPU cores (bench process / host) |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for f in figures {
        let h = &f.latency_us;
        let q = |q: f64| {
            if h.is_empty() {
                "–".to_owned()
            } else {
                ms(h.value_at_quantile(q))
            }
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} |\n",
            f.database.name(),
            f.rpc,
            f.load,
            f.requests,
            f.errors,
            f.rate(),
            q(0.50),
            q(0.90),
            q(0.99),
            if h.is_empty() {
                "–".to_owned()
            } else {
                ms(h.max())
            },
            f.cpu,
        ));
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::from_env()?;
    // What the machine does without us: other busy processes skew every figure.
    let (t0, c0) = (Instant::now(), CpuSample::now());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_load = cores_used(c0, CpuSample::now(), t0.elapsed());
    let mut figures = Vec::new();
    let mut infos = Vec::new();
    for &database in &cfg.databases {
        let (f, info) = run_database(database, &cfg).await?;
        figures.extend(f);
        infos.push(info);
    }

    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("## Task API: gRPC → task-service → SQLite / PostgreSQL\n");
    println!("{}", table(&figures));
    for i in &infos {
        let labels: Vec<String> = figures
            .iter()
            .filter(|f| f.database == i.database)
            .map(|f| format!("{} ({})", f.rpc, f.load))
            .collect();
        let rows: Vec<UsageRow<'_>> = figures
            .iter()
            .filter(|f| f.database == i.database)
            .zip(&labels)
            .map(|(f, label)| UsageRow {
                phase: label,
                ops: f.requests as u64,
                usage: &f.usage,
            })
            .collect();
        println!(
            "{}",
            usage_block(i.database.name(), &i.processes, "request", &rows)
        );
    }
    println!(
        "- command: {}",
        command(
            "bench_api",
            &[
                "DATABASE_MAX_CONNECTIONS",
                "MAX_CONCURRENT_REQUESTS",
                "REQUEST_TIMEOUT_MS",
                "WRITE_GROUP_MAX"
            ]
        )
    );
    println!(
        "- machine: nproc {cpus}, {}, {} RAM; load generator, task-service and the database \
         server all on these cores",
        cpu_model(),
        mem_total()
    );
    println!("- CPU busy in the second before the run (this process / host): {idle_load} cores");
    for i in &infos {
        let how = i.database.fresh();
        println!(
            "- {} {} ({how}); pool of {} connections",
            i.database.name(),
            i.version,
            i.pool
        );
    }
    println!(
        "- workload: {} warm-up requests per RPC (not counted), then {} per RPC with {} in \
         flight over {} HTTP/2 connections, {} users; CreateTask carries 2 tags and a \
         request_id; GetTask walks every task created; ListTasks page_size {}; then CreateTask \
         open loop at {}/s for {} s, latency from each request's scheduled send instant",
        cfg.warmup,
        cfg.requests,
        cfg.concurrency,
        cfg.channels,
        cfg.users,
        cfg.page_size,
        cfg.rate,
        cfg.rate_secs
    );
    for f in figures.iter().filter(|f| f.load.starts_with("open")) {
        let p99 = f.latency_us.value_at_quantile(0.99);
        let verdict = if cfg.rate < GOAL_RATE {
            "not comparable (rate below the goal's)"
        } else if f.errors == 0 && !f.latency_us.is_empty() && p99 <= GOAL_P99_US {
            "met"
        } else {
            "NOT met"
        };
        println!(
            "- goal CreateTask p99 ≤ {} ms at {GOAL_RATE} requests/s, {}: p99 {} ms at {}/s → {verdict}",
            ms(GOAL_P99_US),
            f.database.name(),
            ms(p99),
            cfg.rate
        );
    }
    let failed: usize = figures.iter().map(|f| f.errors).sum();
    for f in figures.iter().filter(|f| f.errors > 0) {
        println!(
            "- {} {} ({}): {} failed, e.g. {:?}",
            f.database.name(),
            f.rpc,
            f.load,
            f.errors,
            f.first_errors
        );
    }
    ensure!(failed == 0, "{failed} requests failed");
    Ok(())
}
