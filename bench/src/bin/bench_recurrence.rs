//! The recurrence benchmark: how long after a recurring task is completed its next occurrence
//! is visible through the Task API, over the whole real chain.
//!
//! ```text
//! bench --CompleteTask--> task-service (SQLite: UPDATE task + INSERT outbox, commit) --> reply
//!   outbox relay --> daprd(task-service) --> Kafka <prefix>.task-events
//!   --> daprd(recurring) --OnTopicEvent--> recurring-task-service --publish--> daprd(recurring)
//!   --> Kafka <prefix>.task-occurrences --> daprd(task-service) --OnTopicEvent--> task-service
//!   (INSERT next task + outbox, commit) <--GetTask-- bench (polling)
//! ```
//!
//! Both services are built in this process by the functions their `main`s call
//! (`task_service::build`, `recurring_task_service::build`), each with its own real daprd
//! (started by `todo-harness`, `dapr-components/` as under `just up`, logs in
//! `target/test-logs/`), on the Kafka broker `just kafka-up` runs, under a topic prefix
//! and app ids of this run's own. task-service runs in `AUTH_MODE=dev` on a fresh SQLite
//! file in a temporary directory, with its production defaults otherwise (outbox relay
//! woken by each commit, default reminders 24 h and 1 h before due).
//!
//! Method:
//!
//! 1. Create `BENCH_WARMUP + BENCH_COMPLETIONS` recurring tasks with CreateTask (8 in
//!    flight), spread round-robin over `BENCH_USERS` users: daily, due 09:00
//!    Europe/Berlin on a June day of 2030 (plus one minute per task), so no reminder fires
//!    and no daylight-saving change falls between a task and its next occurrence. Wait
//!    until recurring-task-service has answered every resulting `task.created` event, so
//!    no backlog is left in the pipe.
//! 2. Warm-up: complete the first `BENCH_WARMUP` tasks as in step 3; not counted (topics
//!    and consumer groups settle, connections open).
//! 3. Measured: complete the other `BENCH_COMPLETIONS` tasks open loop, paced at
//!    `BENCH_RATE` CompleteTask calls per second (sent on schedule whatever earlier ones do).
//!    After each CompleteTask answers, its next occurrence's id is computed with
//!    [`occurrence_task_id`] (series id and index + 1 from the answer) and fetched with
//!    GetTask every `BENCH_POLL_MS` ms (from one send to the next) until it is found, all
//!    polls together capped at `BENCH_POLL_BUDGET` per second (so a backlog in an
//!    overloaded chain does not turn into a flood of polls: resolution degrades instead). The
//!    latency of a completion is from the instant the CompleteTask **response arrived**
//!    (the completion is committed) to the instant the first successful GetTask response
//!    arrived: an upper bound, late by at most one poll interval plus one GetTask round
//!    trip. Reported beside it: the same end point from the instant the CompleteTask
//!    **request was sent**; the completed task's `complete_time` → the occurrence's
//!    `create_time`, both stamped by task-service (one clock, no polling error: the
//!    pipe's own latency, without the reply and the poll); and the CompleteTask round trip.
//! 4. Checks: every occurrence found has the expected id, series, parent, index 1, status
//!    open and a due time exactly one day later; after `BENCH_SETTLE_MS` (for late
//!    redeliveries), every user's tasks are listed (ListTasks, all pages) and each completed
//!    series must have exactly one task with index 1 (no duplicate, none missing) and no
//!    other task may exist. recurring-task-service must have dropped nothing.
//!
//! Over the measured phase, CPU ms per completion and peak RSS of this process (both services,
//! the load and its polls), both daprd and Kafka's JVM (`todo_harness::processes`).
//!
//! Latencies go into HDR histograms (µs, 3 significant digits). Throughput is measured
//! completions / (first CompleteTask sent → last occurrence seen). The example exits
//! non-zero on any failed call, any occurrence not seen within `BENCH_TIMEOUT_SECS`, any
//! wrong, duplicate or missing task; missing the latency goal is reported, not an error.
//!
//! Run with `just bench-recurrence`, i.e. `cargo run --release -p todo-bench
//! --bin bench_recurrence`. Environment: `BENCH_COMPLETIONS` (500), `BENCH_WARMUP`
//! (20), `BENCH_RATE` (20 completions/s), `BENCH_USERS` (10), `BENCH_POLL_MS` (5),
//! `BENCH_POLL_BUDGET` (1000 GetTask/s), `BENCH_TIMEOUT_SECS` (30), `BENCH_SETTLE_MS` (2000); task-service's
//! `DATABASE_MAX_CONNECTIONS`, `OUTBOX_BATCH_SIZE`, `OUTBOX_POLL_MS`,
//! `MAX_CONCURRENT_REQUESTS`, `REQUEST_TIMEOUT_MS` and recurring-task-service's
//! `PUBLISH_TIMEOUT_MS` are passed through when set. `RUST_LOG` (default `warn`, without
//! tower-http's line per NOT_FOUND poll) filters the services' logs.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use todo_service::cli::ServiceConfig as _;

use anyhow::{Context, ensure};
use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use recurring_task_service::{completions::StatsSnapshot, occurrence::occurrence_task_id};
use todo_bench::{
    api::{self, describe},
    report::{command, histogram, micros, usage_block},
};
use todo_harness::{
    Daprd, DaprdOptions,
    bench::{CpuSample, cores, env_usize},
    ensure_kafka, free_port, kafka_pid,
    machine::{cpu_model, mem_total},
    processes::{PhaseUsage, ProcessSet, UsageRow},
    unique,
};
use todo_proto::{
    from_timestamp, to_timestamp,
    todo::v1::{
        CompleteTaskRequest, CreateTaskRequest, Frequency, GetTaskRequest, ListTasksRequest,
        Priority, Recurrence, Task, TaskStatus, task_service_client::TaskServiceClient,
    },
};
use todo_topology::topics;
use tonic::{Code, Request, Status, metadata::AsciiMetadataValue, transport::Channel};

/// The issue's goal: completion → next occurrence visible, p99 at most this many ms.
const GOAL_P99_MS: f64 = 200.0;
/// What the seed requirements ask: the next occurrence within this many ms.
const SEED_LIMIT_MS: f64 = 5_000.0;
/// The first task's due time: Monday 3 June 2030, 09:00 in Berlin (summer time).
const FIRST_DUE: &str = "2030-06-03T07:00:00Z";
const TIME_ZONE: &str = "Europe/Berlin";
/// CreateTask calls in flight while setting up.
const CREATE_CONCURRENCY: usize = 8;
/// How many failure messages the report keeps.
const KEEP_ERRORS: usize = 5;
/// How long setup steps (daprd, draining the created events) may take.
const SETUP_WAIT: Duration = Duration::from_secs(120);

/// What to run, from the environment.
#[derive(Debug, Clone)]
struct Config {
    completions: usize,
    warmup: usize,
    rate: f64,
    users: usize,
    poll: Duration,
    /// At most this many GetTask polls per second in all (`BENCH_POLL_BUDGET`).
    poll_budget: usize,
    timeout: Duration,
    settle: Duration,
}

impl Config {
    fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            completions: env_usize("BENCH_COMPLETIONS", 500)?,
            warmup: env_usize("BENCH_WARMUP", 20)?,
            rate: env_usize("BENCH_RATE", 20)? as f64,
            users: env_usize("BENCH_USERS", 10)?,
            poll: Duration::from_millis(env_usize("BENCH_POLL_MS", 5)? as u64),
            poll_budget: env_usize("BENCH_POLL_BUDGET", 1000)?,
            timeout: Duration::from_secs(env_usize("BENCH_TIMEOUT_SECS", 30)? as u64),
            settle: Duration::from_millis(env_usize("BENCH_SETTLE_MS", 2000)? as u64),
        })
    }
}

/// The two services, their sidecars and the database folder, all of this run's own.
struct Stack {
    tasks: Option<task_service::App>,
    recurring: Option<recurring_task_service::App>,
    sidecars: Vec<Daprd>,
    prefix: String,
    _dir: tempfile::TempDir,
}

/// An environment variable the services read, passed through when set.
fn passed_through(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

impl Stack {
    async fn start() -> anyhow::Result<Self> {
        ensure_kafka().await?;
        let prefix = unique("bench-rec");
        let dir = tempfile::tempdir()?;
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("tasks.db").display()
        );
        // Each app must know its sidecar's gRPC port before the sidecar starts (daprd waits
        // for its app): pick the ports now and hand them to the harness.
        let (tasks_dapr, recurring_dapr) = (free_port()?, free_port()?);
        let tasks_config = task_service::Config::from_lookup(|k| match k {
            "AUTH_MODE" => Some("dev".to_owned()),
            "APP_ADDR" => Some("127.0.0.1:0".to_owned()),
            "DATABASE_URL" => Some(url.clone()),
            "DAPR_GRPC_ENDPOINT" => Some(format!("http://127.0.0.1:{tasks_dapr}")),
            topics::PREFIX_VAR => Some(prefix.clone()),
            // Recorded as in production, served on a port of the OS's choosing.
            "METRICS_ADDR" => Some("127.0.0.1:0".to_owned()),
            "DATABASE_MAX_CONNECTIONS"
            | "OUTBOX_BATCH_SIZE"
            | "OUTBOX_POLL_MS"
            | "MAX_CONCURRENT_REQUESTS"
            | "REQUEST_TIMEOUT_MS"
            | "WRITE_GROUP_MAX" => passed_through(k),
            _ => None,
        })?;
        let recurring_config = recurring_task_service::Config::from_lookup(|k| match k {
            "APP_ADDR" => Some("127.0.0.1:0".to_owned()),
            "DAPR_GRPC_ENDPOINT" => Some(format!("http://127.0.0.1:{recurring_dapr}")),
            topics::PREFIX_VAR => Some(prefix.clone()),
            "PUBLISH_TIMEOUT_MS" => passed_through(k),
            _ => None,
        })?;
        let tasks = task_service::build(tasks_config)
            .await
            .context("starting task-service")?;
        let recurring = recurring_task_service::build(recurring_config)
            .await
            .context("starting recurring-task-service")?;

        let mut tasks_opts = DaprdOptions::new(unique("bench-rec-tasks"), Some(tasks.addr.port()));
        tasks_opts.grpc_port = Some(tasks_dapr);
        let mut recurring_opts =
            DaprdOptions::new(unique("bench-rec-recurring"), Some(recurring.addr.port()));
        recurring_opts.grpc_port = Some(recurring_dapr);
        let (a, b) = tokio::join!(Daprd::start(tasks_opts), Daprd::start(recurring_opts));
        let sidecars = vec![
            a.context("starting task-service's daprd")?,
            b.context("starting recurring-task-service's daprd")?,
        ];
        for d in &sidecars {
            eprintln!(
                "bench_recurrence: daprd {} up, log {}",
                d.options.app_id,
                d.log_path.display()
            );
        }
        Ok(Self {
            tasks: Some(tasks),
            recurring: Some(recurring),
            sidecars,
            prefix,
            _dir: dir,
        })
    }

    /// The processes on the chain, for CPU per completion: this process (both services and
    /// the load), both daprd, Kafka.
    fn processes(&self) -> ProcessSet {
        ProcessSet::new()
            .this_process("bench")
            .process("daprd task-service", self.sidecars[0].pid())
            .process("daprd recurring", self.sidecars[1].pid())
            .process("Kafka", kafka_pid())
    }

    fn tasks_addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        Ok(self.tasks.as_ref().context("task-service stopped")?.addr)
    }

    fn recurring_stats(&self) -> StatsSnapshot {
        self.recurring
            .as_ref()
            .map(recurring_task_service::App::stats)
            .unwrap_or_default()
    }

    /// Waits until recurring-task-service has answered at least `n` deliveries.
    async fn handled(&self, n: u64, timeout: Duration) -> anyhow::Result<StatsSnapshot> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.recurring_stats();
            if s.handled() >= n {
                return Ok(s);
            }
            ensure!(
                Instant::now() < deadline,
                "recurring-task-service answered {} of {n} events within {timeout:?}: {s:?}",
                s.handled()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sidecars first (no delivery lands on a stopped app), then the apps.
    async fn stop(mut self) -> anyhow::Result<()> {
        for d in &mut self.sidecars {
            d.stop().await?;
        }
        if let Some(app) = self.recurring.take() {
            app.shutdown()
                .await
                .context("stopping recurring-task-service")?;
        }
        if let Some(app) = self.tasks.take() {
            app.shutdown().await.context("stopping task-service")?;
        }
        Ok(())
    }
}

/// The Task API over one HTTP/2 connection, as the benchmark's users.
struct Api {
    client: TaskServiceClient<Channel>,
    /// The `x-user-id` header value of each user.
    users: Vec<AsciiMetadataValue>,
}

impl Api {
    async fn connect(addr: std::net::SocketAddr, users: usize) -> anyhow::Result<Self> {
        let client = api::connect(addr, 1)
            .await?
            .pop()
            .context("no connection to task-service")?;
        let users = api::users("bench-rec-user", users)?;
        Ok(Self { client, users })
    }

    fn request<T>(&self, user: usize, msg: T) -> Request<T> {
        api::as_user(&self.users[user], msg)
    }

    async fn get(&self, user: usize, id: &str) -> Result<Task, Status> {
        let msg = GetTaskRequest { id: id.to_owned() };
        Ok(self
            .client
            .clone()
            .get_task(self.request(user, msg))
            .await?
            .into_inner())
    }

    /// Every task of `user`, all pages.
    async fn list_all(&self, user: usize) -> Result<Vec<Task>, Status> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let msg = ListTasksRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                ..ListTasksRequest::default()
            };
            let page = self
                .client
                .clone()
                .list_tasks(self.request(user, msg))
                .await?
                .into_inner();
            out.extend(page.tasks);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = page.next_page_token;
        }
    }
}

/// One recurring task the benchmark created, and what its next occurrence must look like.
#[derive(Debug, Clone)]
struct Series {
    user: usize,
    /// The first task's id, which is also the series id.
    id: String,
    due: DateTime<Utc>,
    /// `occurrence_task_id(series, index + 1)`.
    next_id: String,
}

fn parse_time(s: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc))
}

/// Creates `n` daily tasks, `CREATE_CONCURRENCY` calls in flight.
async fn create_series(api: &Arc<Api>, n: usize) -> anyhow::Result<Vec<Series>> {
    let first_due = parse_time(FIRST_DUE)?;
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CREATE_CONCURRENCY.min(n) {
        let (api, next) = (api.clone(), next.clone());
        workers.spawn(async move {
            let mut made = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(made);
                }
                let user = i % api.users.len();
                let due = first_due + chrono::Duration::minutes(i as i64);
                let msg = CreateTaskRequest {
                    task: Some(Task {
                        title: format!("water the plants #{i}"),
                        description: "a daily task, created by the bench_recurrence example"
                            .to_owned(),
                        priority: Priority::Medium as i32,
                        tags: vec!["bench".to_owned(), "home".to_owned()],
                        due_time: Some(to_timestamp(due)),
                        time_zone: TIME_ZONE.to_owned(),
                        recurrence: Some(Recurrence {
                            frequency: Frequency::Daily as i32,
                            ..Recurrence::default()
                        }),
                        ..Task::default()
                    }),
                    request_id: uuid::Uuid::new_v4().to_string(),
                    no_default_reminders: false,
                };
                let t = api
                    .client
                    .clone()
                    .create_task(api.request(user, msg))
                    .await
                    .map_err(|s| anyhow::anyhow!("CreateTask #{i}: {}", describe(&s)))?
                    .into_inner();
                let series = uuid::Uuid::parse_str(&t.series_id).with_context(|| {
                    format!("CreateTask #{i}: series_id {:?} is not a UUID", t.series_id)
                })?;
                made.push((
                    i,
                    Series {
                        user,
                        next_id: occurrence_task_id(series, t.occurrence_index + 1).to_string(),
                        id: t.id,
                        due,
                    },
                ));
            }
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(joined) = workers.join_next().await {
        all.extend(joined.context("a create worker panicked")??);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, s)| s).collect())
}

/// Spaces all GetTask polls at least `gap` apart. Without it an overloaded chain (a
/// backlog of thousands of unseen occurrences, each polled every few ms) would be swamped
/// by the benchmark's own polling; with it, polls stay within the budget and a poll's
/// resolution degrades instead (see the polls per completion in the report).
struct PollPacer {
    next: std::sync::Mutex<tokio::time::Instant>,
    gap: Duration,
}

impl PollPacer {
    fn new(per_second: usize) -> Self {
        Self {
            next: std::sync::Mutex::new(tokio::time::Instant::now()),
            gap: Duration::from_secs_f64(1.0 / per_second as f64),
        }
    }

    /// Waits until `not_before` and a free slot in the budget.
    async fn turn(&self, not_before: tokio::time::Instant) {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let slot = (*next).max(not_before);
            *next = slot + self.gap;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// What one completion gave.
enum Sample {
    Seen {
        /// CompleteTask response → occurrence seen.
        from_response: Duration,
        /// CompleteTask request sent → occurrence seen.
        from_request: Duration,
        /// CompleteTask round trip.
        complete_rpc: Duration,
        /// The completed task's `complete_time` → the occurrence's `create_time`: both
        /// stamped by task-service's clock, so free of the polling's resolution.
        server_side: Option<Duration>,
        /// GetTask calls it took.
        polls: usize,
        /// When it was seen.
        seen: Instant,
    },
    Failed(String),
}

/// Completes `s`, then polls for its next occurrence and checks it.
async fn complete_and_watch(
    api: Arc<Api>,
    pacer: Arc<PollPacer>,
    s: Series,
    cfg: Arc<Config>,
) -> Sample {
    let sent = Instant::now();
    let msg = CompleteTaskRequest {
        id: s.id.clone(),
        etag: String::new(),
    };
    let done = api
        .client
        .clone()
        .complete_task(api.request(s.user, msg))
        .await;
    let answered = Instant::now();
    let completed_at = match done {
        Err(e) => return Sample::Failed(format!("CompleteTask {}: {}", s.id, describe(&e))),
        Ok(t) if t.get_ref().status() != TaskStatus::Completed => {
            return Sample::Failed(format!("CompleteTask {}: answered {:?}", s.id, t.get_ref()));
        }
        Ok(t) => t.get_ref().complete_time.as_ref().and_then(from_timestamp),
    };
    let deadline = answered + cfg.timeout;
    let mut polls = 0;
    let mut poll_due = tokio::time::Instant::now();
    loop {
        pacer.turn(poll_due).await;
        let poll_sent = tokio::time::Instant::now();
        polls += 1;
        match api.get(s.user, &s.next_id).await {
            Ok(t) => {
                let seen = Instant::now();
                if let Err(why) = check_occurrence(&s, &t) {
                    return Sample::Failed(why);
                }
                let created_at = t.create_time.as_ref().and_then(from_timestamp);
                return Sample::Seen {
                    from_response: seen - answered,
                    from_request: seen - sent,
                    complete_rpc: answered - sent,
                    server_side: completed_at
                        .zip(created_at)
                        .and_then(|(c, o)| (o - c).to_std().ok()),
                    polls,
                    seen,
                };
            }
            Err(e) if e.code() == Code::NotFound => {}
            Err(e) => {
                return Sample::Failed(format!("GetTask {}: {}", s.next_id, describe(&e)));
            }
        }
        if Instant::now() >= deadline {
            return Sample::Failed(format!(
                "the next occurrence {} of {} was not visible {:?} after completion",
                s.next_id, s.id, cfg.timeout
            ));
        }
        poll_due = poll_sent + cfg.poll;
    }
}

/// The occurrence must be the series' task number 1, open, due exactly a day later.
fn check_occurrence(s: &Series, t: &Task) -> Result<(), String> {
    let due = t.due_time.as_ref().and_then(from_timestamp);
    let want_due = s.due + chrono::Duration::days(1);
    let ok = t.id == s.next_id
        && t.series_id == s.id
        && t.parent_task_id == s.id
        && t.occurrence_index == 1
        && t.status() == TaskStatus::Open
        && due == Some(want_due)
        && t.time_zone == TIME_ZONE;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "next occurrence of {} is not as expected (id {}, series {}, parent {}, index 1, \
             open, due {want_due}): {t:?}",
            s.id, s.next_id, s.id, s.id
        ))
    }
}

/// What one phase of completions saw.
struct Outcome {
    from_response: Histogram<u64>,
    from_request: Histogram<u64>,
    complete_rpc: Histogram<u64>,
    server_side: Histogram<u64>,
    polls: usize,
    failures: usize,
    first_failures: Vec<String>,
    /// First CompleteTask sent → last occurrence seen.
    elapsed: Duration,
    /// First → last CompleteTask scheduled send: the offered rate's span.
    sending: Duration,
}

/// Completes `series` open loop at `cfg.rate` per second, each watched until its next
/// occurrence is visible.
async fn run_phase(
    api: &Arc<Api>,
    series: &[Series],
    cfg: &Arc<Config>,
) -> anyhow::Result<Outcome> {
    let mut out = Outcome {
        from_response: histogram()?,
        from_request: histogram()?,
        complete_rpc: histogram()?,
        server_side: histogram()?,
        polls: 0,
        failures: 0,
        first_failures: Vec::new(),
        elapsed: Duration::ZERO,
        sending: Duration::ZERO,
    };
    let period = Duration::from_secs_f64(1.0 / cfg.rate);
    let start = tokio::time::Instant::now();
    let started = Instant::now();
    let mut watchers = tokio::task::JoinSet::new();
    let pacer = Arc::new(PollPacer::new(cfg.poll_budget));
    for (i, s) in series.iter().enumerate() {
        // On schedule, whatever the earlier completions are doing.
        tokio::time::sleep_until(start + period.mul_f64(i as f64)).await;
        watchers.spawn(complete_and_watch(
            api.clone(),
            pacer.clone(),
            s.clone(),
            cfg.clone(),
        ));
    }
    out.sending = started.elapsed();
    let mut last_seen = started;
    while let Some(joined) = watchers.join_next().await {
        match joined.context("a completion watcher panicked")? {
            Sample::Seen {
                from_response,
                from_request,
                complete_rpc,
                server_side,
                polls,
                seen,
            } => {
                if let Some(d) = server_side {
                    out.server_side.saturating_record(micros(d));
                }
                out.from_response.saturating_record(micros(from_response));
                out.from_request.saturating_record(micros(from_request));
                out.complete_rpc.saturating_record(micros(complete_rpc));
                out.polls += polls;
                last_seen = last_seen.max(seen);
            }
            Sample::Failed(why) => {
                out.failures += 1;
                if out.first_failures.len() < KEEP_ERRORS {
                    out.first_failures.push(why);
                }
            }
        }
    }
    out.elapsed = last_seen - started;
    Ok(out)
}

/// What the final listing found.
#[derive(Debug, Default)]
struct Audit {
    tasks: usize,
    /// Tasks beyond the first of the same (series, index).
    duplicates: usize,
    /// Completed series without a task of index 1.
    missing: usize,
    /// Tasks that are neither a created first task nor an expected next occurrence.
    unexpected: usize,
    first_problems: Vec<String>,
}

impl Audit {
    fn problem(&mut self, what: String) {
        if self.first_problems.len() < KEEP_ERRORS {
            self.first_problems.push(what);
        }
    }

    fn ok(&self) -> bool {
        self.duplicates == 0 && self.missing == 0 && self.unexpected == 0
    }
}

/// Lists every user's tasks: each completed series has exactly one next task, nothing else.
async fn audit(api: &Api, all: &[Series], completed: usize) -> anyhow::Result<Audit> {
    let mut by_key: HashMap<(String, u32), Vec<String>> = HashMap::new();
    let mut a = Audit::default();
    for user in 0..api.users.len() {
        let tasks = api
            .list_all(user)
            .await
            .map_err(|s| anyhow::anyhow!("ListTasks as user {user}: {}", describe(&s)))?;
        a.tasks += tasks.len();
        for t in tasks {
            by_key
                .entry((t.series_id.clone(), t.occurrence_index))
                .or_default()
                .push(t.id);
        }
    }
    let mut expected: HashSet<(String, u32)> = HashSet::new();
    for (i, s) in all.iter().enumerate() {
        expected.insert((s.id.clone(), 0));
        if i < completed {
            expected.insert((s.id.clone(), 1));
            match by_key.get(&(s.id.clone(), 1)).map(Vec::as_slice) {
                None | Some([]) => {
                    a.missing += 1;
                    a.problem(format!("series {}: no next occurrence", s.id));
                }
                Some([one]) if *one == s.next_id => {}
                Some(ids) => {
                    a.duplicates += ids.len().saturating_sub(1);
                    a.problem(format!(
                        "series {}: index 1 is {ids:?}, expected only {}",
                        s.id, s.next_id
                    ));
                }
            }
        }
    }
    for (key, ids) in &by_key {
        if !expected.contains(key) {
            a.unexpected += ids.len();
            a.problem(format!("unexpected task(s) {ids:?} for {key:?}"));
        } else if key.1 == 0 && ids.len() > 1 {
            a.duplicates += ids.len() - 1;
            a.problem(format!(
                "first task of series {} {} times",
                key.0,
                ids.len()
            ));
        }
    }
    Ok(a)
}

/// Cores used, as "this process / whole machine", to two decimals.
fn cores_used(from: Option<CpuSample>, to: Option<CpuSample>, wall: Duration) -> String {
    cores(from, to, wall).map_or_else(|| "n/a".to_owned(), |(p, h)| format!("{p:.2} / {h:.2}"))
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn row(what: &str, h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return format!("| {what} | 0 | – | – | – | – | – | – |\n");
    }
    format!(
        "| {what} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
        h.len(),
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.90)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
        h.mean() / 1000.0,
        ms(h.min()),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // task-service's tower-http trace layer logs every non-OK answer at ERROR, and most
    // GetTask polls are meant to answer NOT_FOUND: silenced, not to time a log writer.
    todo_telemetry::init("warn,tower_http::trace::on_failure=off");
    let cfg = Arc::new(Config::from_env()?);
    // What the machine does without us: other busy processes skew every figure.
    let (t0, c0) = (Instant::now(), CpuSample::now());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_load = cores_used(c0, CpuSample::now(), t0.elapsed());

    let stack = Stack::start().await?;
    let result = run(&stack, &cfg).await;
    let stopped = stack.stop().await;
    let report = result?;
    stopped?;
    print_report(&cfg, &report, &idle_load);
    ensure!(
        report.measured.failures == 0 && report.audit.ok() && report.stats.dropped == 0,
        "the run failed: {} completions failed, audit {:?}, recurring-task-service {:?}",
        report.measured.failures,
        report.audit,
        report.stats
    );
    Ok(())
}

/// Everything a run measured and checked.
struct Report {
    prefix: String,
    measured: Outcome,
    cpu: String,
    /// The processes measured, and what they used over the measured phase.
    processes: ProcessSet,
    usage: PhaseUsage,
    audit: Audit,
    stats: StatsSnapshot,
    /// recurring-task-service's answers to the warm-up and measured completions alone.
    created_events: u64,
}

async fn run(stack: &Stack, cfg: &Arc<Config>) -> anyhow::Result<Report> {
    let api = Arc::new(Api::connect(stack.tasks_addr()?, cfg.users).await?);
    let total = cfg.warmup + cfg.completions;
    eprintln!(
        "bench_recurrence: creating {total} daily tasks over {} users",
        cfg.users
    );
    let series = create_series(&api, total).await?;
    // Each CreateTask publishes task.created; recurring-task-service acknowledges them
    // untouched. Let that backlog drain before anything is measured.
    let before = stack.handled(total as u64, SETUP_WAIT).await?;
    eprintln!("bench_recurrence: {total} task.created events answered ({before:?})");

    eprintln!(
        "bench_recurrence: warm-up, {} completions at {}/s (not counted)",
        cfg.warmup, cfg.rate
    );
    let warm = run_phase(&api, &series[..cfg.warmup], cfg).await?;
    ensure!(
        warm.failures == 0,
        "{} warm-up completions failed, e.g. {:?}",
        warm.failures,
        warm.first_failures
    );

    eprintln!(
        "bench_recurrence: measuring {} completions at {}/s",
        cfg.completions, cfg.rate
    );
    let processes = stack.processes();
    let (c0, meter) = (CpuSample::now(), processes.start());
    let measured = run_phase(&api, &series[cfg.warmup..], cfg).await?;
    let cpu = cores_used(c0, CpuSample::now(), measured.elapsed);
    let usage = meter.stop();
    eprintln!(
        "bench_recurrence: {} seen, {} failed in {:.1} s; settling {:?} before the audit",
        measured.from_response.len(),
        measured.failures,
        measured.elapsed.as_secs_f64(),
        cfg.settle
    );
    tokio::time::sleep(cfg.settle).await;
    let audit = audit(&api, &series, total).await?;
    let stats = stack.recurring_stats();
    Ok(Report {
        prefix: stack.prefix.clone(),
        measured,
        cpu,
        processes,
        usage,
        audit,
        stats,
        created_events: before.handled(),
    })
}

fn print_report(cfg: &Config, r: &Report, idle_load: &str) {
    let m = &r.measured;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("## Recurring tasks (just bench-recurrence)\n");
    println!(
        "| measure | completions | p50 ms | p90 ms | p99 ms | max ms | mean ms | min ms |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|"
    );
    print!(
        "{}",
        row(
            "**CompleteTask response → next occurrence visible**",
            &m.from_response
        )
    );
    print!(
        "{}",
        row(
            "CompleteTask request sent → next occurrence visible",
            &m.from_request
        )
    );
    print!(
        "{}",
        row(
            "task-service's clock: complete_time → occurrence create_time",
            &m.server_side
        )
    );
    print!("{}", row("CompleteTask round trip", &m.complete_rpc));
    println!();
    let seen = m.from_response.len() as f64;
    let label = format!("{} completions at {}/s", cfg.completions, cfg.rate);
    println!(
        "{}",
        usage_block(
            "Measured phase (first CompleteTask sent → last occurrence seen)",
            &r.processes,
            "completion",
            &[UsageRow {
                phase: &label,
                ops: m.from_response.len(),
                usage: &r.usage,
            }]
        )
    );
    println!(
        "- command: {}",
        command(
            "bench_recurrence",
            &[
                "DATABASE_MAX_CONNECTIONS",
                "OUTBOX_BATCH_SIZE",
                "OUTBOX_POLL_MS",
                "MAX_CONCURRENT_REQUESTS",
                "REQUEST_TIMEOUT_MS",
                "PUBLISH_TIMEOUT_MS"
            ]
        )
    );
    println!(
        "- machine: nproc {cpus}, {}, {} RAM; Kafka, two daprd and this process (both \
         services and the load) all on these cores",
        cpu_model(),
        mem_total()
    );
    println!("- CPU busy in the second before the run (this process / host): {idle_load} cores");
    println!(
        "- CPU during the measured phase (this process / host): {} cores",
        r.cpu
    );
    println!(
        "- load: {} completions (after {} warm-up ones) open loop at {}/s over {} users, \
         sent in {:.1} s; {:.1} completions/s end to end (first CompleteTask sent → last \
         occurrence seen, {:.1} s)",
        cfg.completions,
        cfg.warmup,
        cfg.rate,
        cfg.users,
        m.sending.as_secs_f64(),
        seen / m.elapsed.as_secs_f64().max(f64::EPSILON),
        m.elapsed.as_secs_f64()
    );
    println!(
        "- visibility: GetTask of the deterministic next id every {} ms (at most {} polls/s in \
         all); {:.1} polls per completion on average; a figure is late by at most one poll \
         interval plus one GetTask round trip",
        cfg.poll.as_millis(),
        cfg.poll_budget,
        m.polls as f64 / seen.max(1.0)
    );
    println!(
        "- audit after {} ms: {} tasks listed; duplicates {}, missing {}, unexpected {}{}",
        cfg.settle.as_millis(),
        r.audit.tasks,
        r.audit.duplicates,
        r.audit.missing,
        r.audit.unexpected,
        if r.audit.first_problems.is_empty() {
            String::new()
        } else {
            format!(", e.g. {:?}", r.audit.first_problems)
        }
    );
    let s = &r.stats;
    println!(
        "- recurring-task-service answers: {} published, {} nothing to do, {} other event \
         types, {} dropped, {} retried ({} of them before the first completion); topic prefix {}",
        s.published, s.nothing_to_do, s.not_ours, s.dropped, s.retried, r.created_events, r.prefix
    );
    if m.failures > 0 {
        println!(
            "- {} completions FAILED, e.g. {:?}",
            m.failures, m.first_failures
        );
    }
    if !m.from_response.is_empty() {
        let p99 = ms(m.from_response.value_at_quantile(0.99));
        let max = ms(m.from_response.max());
        let verdict = if m.failures == 0 && p99 <= GOAL_P99_MS {
            "met"
        } else {
            "NOT met"
        };
        println!(
            "- goal p99 ≤ {GOAL_P99_MS:.0} ms (completion response → next occurrence visible): \
             p99 {p99:.1} ms → {verdict}"
        );
        let seeds = if m.failures == 0 && max < SEED_LIMIT_MS {
            "met"
        } else {
            "NOT met"
        };
        println!(
            "- seeds' requirement, every next occurrence within {:.0} s: max {max:.1} ms → {seeds}",
            SEED_LIMIT_MS / 1000.0
        );
    }
}
