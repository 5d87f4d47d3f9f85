//! The raw-pipe benchmark: Rust app → daprd → Kafka → daprd → Rust app, nothing else.
//!
//! Two apps on one machine, each with its own real daprd, talk through the real Kafka
//! broker (`scripts/kafka.sh up`). The publisher sends protobuf `TaskEvent`s exactly as the
//! services do (dapr-publisher: `application/octet-stream`, `cloudevent.type`,
//! `partitionKey`); the subscriber serves the AppCallback runtime of dapr-appcallback.
//!
//! Three measured phases, each on its own fresh topic and preceded by a warm-up on another
//! fresh topic (not counted):
//!
//! - single: `Publisher::publish`, one event per call, `BENCH_CONCURRENCY` (16) publishers
//!   at once; the subscriber takes one event per `OnTopicEvent` call;
//! - bulk: `Publisher::publish_bulk`, batches of `BENCH_BATCH` (100), `BENCH_BULK_CONCURRENCY`
//!   (1) batches in flight, as the outbox relay publishes; one event per `OnTopicEvent`;
//! - bulk + bulk subscribe: published as bulk, delivered by daprd's bulk subscribe with raw
//!   payloads (`Route::bulk_raw`, as the services subscribe), at most `BENCH_SUB_BATCH` (100)
//!   events per `OnBulkTopicEvent` call, daprd waiting at most `BENCH_SUB_AWAIT_MS` (10) ms
//!   to fill one.
//!
//! Latency is publish → delivery: every event carries the instant it was handed to the
//! publisher (`occurred_at`), and the subscriber's handler records now − occurred_at in an
//! HDR histogram. Throughput is events / (first publish → last delivery). Over the same
//! span, each process's CPU per event and peak RSS (`todo_harness::processes`): this process
//! (publisher and subscriber apps), both daprd and Kafka's JVM.
//!
//! Run with `just bench-pipe`, i.e. `cargo run --release -p todo-bench --bin
//! bench_pipe`. Environment: `BENCH_EVENTS` (20000 per phase; at 5,000 the bulk phases lasted under half a second), `BENCH_WARMUP` (500),
//! `BENCH_CONCURRENCY` (16), `BENCH_BATCH` (100), `BENCH_BULK_CONCURRENCY` (1),
//! `BENCH_SUB_BATCH` (100), `BENCH_SUB_AWAIT_MS` (10), `BENCH_USERS` (partition keys, 64), `BENCH_TIMEOUT_SECS` (180 per phase), `BENCH_NODELAY`
//! (1; 0 serves the subscriber without TCP_NODELAY, to show what that costs).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use dapr_appcallback::Subscriptions;
use dapr_publisher::{OutgoingEvent, Publisher};
use hdrhistogram::Histogram;
use todo_bench::{
    pipe::{self, Delivery},
    report::{command, ms, usage_block},
};
use todo_harness::{
    Daprd, DaprdOptions,
    bench::env_usize,
    ensure_kafka, kafka_brokers, kafka_pid,
    machine::{cpu_model, daprd_version, kafka_version, log_complaints, mem_total},
    processes::{PhaseUsage, ProcessSet, UsageRow},
    unique,
};
use todo_proto::todo::events::v1::TaskEventKind;
use todo_proto::todo::v1::Task;
use todo_topology::event_types;
use tokio::{task::JoinSet, time::Instant};

/// What to run, from the environment.
#[derive(Debug, Clone)]
struct Config {
    events: usize,
    warmup: usize,
    concurrency: usize,
    batch: usize,
    bulk_concurrency: usize,
    /// How the bulk-subscribe phase is delivered.
    bulk_delivery: Delivery,
    users: usize,
    timeout: Duration,
    /// Whether the subscriber app sets TCP_NODELAY on the connections daprd makes to it.
    nodelay: bool,
}

impl Config {
    fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            events: env_usize("BENCH_EVENTS", 20_000)?,
            warmup: env_usize("BENCH_WARMUP", 500)?,
            concurrency: env_usize("BENCH_CONCURRENCY", 16)?,
            batch: env_usize("BENCH_BATCH", 100)?,
            bulk_concurrency: env_usize("BENCH_BULK_CONCURRENCY", 1)?,
            bulk_delivery: Delivery::bulk_from_env()?,
            users: env_usize("BENCH_USERS", 64)?,
            timeout: Duration::from_secs(env_usize("BENCH_TIMEOUT_SECS", 180)? as u64),
            nodelay: match std::env::var("BENCH_NODELAY").as_deref() {
                Err(_) | Ok("1") => true,
                Ok("0") => false,
                Ok(other) => bail!("BENCH_NODELAY must be 0 or 1, got {other:?}"),
            },
        })
    }
}

/// How a phase publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One event per `publish` call, `concurrency` calls in flight.
    Single { concurrency: usize },
    /// `publish_bulk` with `batch` events per call, `concurrency` calls in flight.
    Bulk { batch: usize, concurrency: usize },
}

impl Mode {
    fn concurrency(self) -> usize {
        match self {
            Self::Single { concurrency } | Self::Bulk { concurrency, .. } => concurrency,
        }
    }
    fn batch(self) -> usize {
        match self {
            Self::Single { .. } => 1,
            Self::Bulk { batch, .. } => batch,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Self::Single { .. } => "single `publish`",
            Self::Bulk { .. } => "bulk `publish_bulk`",
        }
    }
}

/// One topic the subscriber listens on, how daprd delivers it, and what it saw there.
struct Phase {
    topic: String,
    delivery: Delivery,
    deliveries: Arc<pipe::Phase>,
}

impl Phase {
    fn new(prefix: &str, delivery: Delivery) -> anyhow::Result<Self> {
        Ok(Self {
            topic: unique(prefix),
            delivery,
            deliveries: pipe::Phase::new()?,
        })
    }
}

/// A phase's name in the reports: how it publishes, and how it is delivered when in bulk.
fn label(mode: Mode, delivery: Delivery) -> String {
    match delivery {
        Delivery::Single => mode.name().to_owned(),
        Delivery::Bulk { .. } => format!("{} + {}", mode.name(), delivery.describe()),
    }
}

/// The figures of one measured phase.
struct Figures {
    mode: Mode,
    /// [`label`] of the phase.
    label: String,
    events: usize,
    /// First publish → last delivery.
    elapsed: Duration,
    /// First publish → last publish acknowledged.
    publish_elapsed: Duration,
    latency_us: Histogram<u64>,
    duplicates: u64,
    /// CPU and memory of each process, first publish → last delivery.
    usage: PhaseUsage,
}

/// An update of task number `seq`, of user `seq % users`, stamped with its publish time.
fn stamped_event(topic: &str, seq: usize, users: usize) -> OutgoingEvent {
    let task = Task {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: format!("bench-user-{}", seq % users),
        title: format!("benchmark task {seq}"),
        description: "a task event of realistic size, published by bench_pipe".to_owned(),
        tags: vec!["bench".to_owned(), "pipe".to_owned()],
        ..Task::default()
    };
    let changed = vec!["title".to_owned()];
    pipe::stamped_event(
        topic,
        TaskEventKind::Updated,
        event_types::TASK_UPDATED,
        changed,
        task,
    )
}

/// Publishes `events` events to the phase's topic and waits until all are delivered.
async fn run_phase(
    publisher: &Publisher,
    phase: &Phase,
    mode: Mode,
    events: usize,
    cfg: &Config,
    procs: &ProcessSet,
) -> anyhow::Result<Figures> {
    let deadline = Instant::now() + cfg.timeout;
    let meter = procs.start();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..mode.concurrency() {
        let (publisher, next, topic, users) = (
            publisher.clone(),
            next.clone(),
            phase.topic.clone(),
            cfg.users,
        );
        workers.spawn(async move {
            let mut last_ack = None;
            loop {
                let first = next.fetch_add(mode.batch(), Ordering::Relaxed);
                if first >= events {
                    return anyhow::Ok(last_ack);
                }
                let last = (first + mode.batch()).min(events);
                match mode {
                    Mode::Single { .. } => {
                        publisher
                            .publish(&stamped_event(&topic, first, users))
                            .await
                            .with_context(|| format!("publishing event {first}"))?;
                    }
                    Mode::Bulk { .. } => {
                        let batch: Vec<_> = (first..last)
                            .map(|seq| stamped_event(&topic, seq, users))
                            .collect();
                        let outcome = publisher
                            .publish_bulk(&batch)
                            .await
                            .with_context(|| format!("bulk-publishing events {first}..{last}"))?;
                        if let Some((id, err)) = outcome.failed.first() {
                            bail!(
                                "{} of {} entries of a batch failed, e.g. {id}: {err}",
                                outcome.failed.len(),
                                batch.len()
                            );
                        }
                    }
                }
                last_ack = Some(Instant::now());
            }
        });
    }
    let mut last_ack = started;
    loop {
        match tokio::time::timeout_at(deadline, workers.join_next()).await {
            Err(_) => bail!(
                "publishing {events} events to {} did not finish within {:?}",
                phase.topic,
                cfg.timeout
            ),
            Ok(None) => break,
            Ok(Some(joined)) => {
                if let Some(at) = joined.context("a publisher task failed")?? {
                    last_ack = last_ack.max(at);
                }
            }
        }
    }

    let what = format!(
        "delivery incomplete on {} within {:?} of the first publish",
        phase.topic, cfg.timeout
    );
    phase.deliveries.wait_for(events, deadline, &what).await?;
    let usage = meter.stop();
    let (_, duplicates, unreadable, latency_us, last_delivery) = phase.deliveries.snapshot();
    ensure!(
        unreadable == 0,
        "{unreadable} events on {} had no readable occurred_at or were no TaskEvent",
        phase.topic
    );
    let last_delivery = last_delivery.unwrap_or(started);
    Ok(Figures {
        mode,
        label: label(mode, phase.delivery),
        events,
        elapsed: last_delivery.duration_since(started),
        publish_elapsed: last_ack.duration_since(started),
        latency_us,
        duplicates,
        usage,
    })
}

fn table(figures: &[Figures]) -> String {
    let mut out = String::from(
        "| mode | events | in flight | batch | delivered events/s | published events/s | \
         p50 ms | p90 ms | p99 ms | max ms | duplicates |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for f in figures {
        let h = &f.latency_us;
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {} |\n",
            f.label,
            f.events,
            f.mode.concurrency(),
            f.mode.batch(),
            f.events as f64 / f.elapsed.as_secs_f64(),
            f.events as f64 / f.publish_elapsed.as_secs_f64(),
            ms(h.value_at_quantile(0.50)),
            ms(h.value_at_quantile(0.90)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max()),
            f.duplicates,
        ));
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::from_env()?;
    ensure_kafka().await?;

    // One subscriber app, listening on a fresh topic per phase (all known at start, so
    // daprd subscribes once), in the phase's delivery mode.
    let bulk_sub = cfg.bulk_delivery;
    let phases = [
        Phase::new("bench-warmup-single", Delivery::Single)?,
        Phase::new("bench-single", Delivery::Single)?,
        Phase::new("bench-warmup-bulk", Delivery::Single)?,
        Phase::new("bench-bulk", Delivery::Single)?,
        Phase::new("bench-warmup-bulk-sub", bulk_sub)?,
        Phase::new("bench-bulk-sub", bulk_sub)?,
    ];
    let mut subs = Subscriptions::builder();
    for phase in &phases {
        subs = phase
            .deliveries
            .subscribe(subs, &phase.topic, phase.delivery);
    }
    let port = pipe::serve(subs.build(), cfg.nodelay).await?;
    let sub = Daprd::start(DaprdOptions::new(unique("bench-sub"), Some(port)))
        .await
        .context("starting the subscriber's daprd")?;
    let (publ, publisher) = todo_harness::recorder::publisher("bench-pub").await?;
    let procs = ProcessSet::new()
        .this_process("bench")
        .process("daprd pub", publ.pid())
        .process("daprd sub", sub.pid())
        .process("Kafka", kafka_pid());

    let single = Mode::Single {
        concurrency: cfg.concurrency,
    };
    let bulk = Mode::Bulk {
        batch: cfg.batch,
        concurrency: cfg.bulk_concurrency,
    };
    let [
        warm_single,
        m_single,
        warm_bulk,
        m_bulk,
        warm_bulk_sub,
        m_bulk_sub,
    ] = &phases;
    let mut figures = Vec::new();
    for (warm, measured, mode) in [
        (warm_single, m_single, single),
        (warm_bulk, m_bulk, bulk),
        (warm_bulk_sub, m_bulk_sub, bulk),
    ] {
        let name = label(mode, measured.delivery);
        eprintln!(
            "bench_pipe: {name} warm-up, {} events on {}",
            cfg.warmup, warm.topic
        );
        run_phase(&publisher, warm, mode, cfg.warmup, &cfg, &procs).await?;
        eprintln!(
            "bench_pipe: {name} measured, {} events on {}",
            cfg.events, measured.topic
        );
        let f = run_phase(&publisher, measured, mode, cfg.events, &cfg, &procs).await?;
        eprintln!(
            "bench_pipe: done in {:.2} s ({:.0} events/s delivered)",
            f.elapsed.as_secs_f64(),
            f.events as f64 / f.elapsed.as_secs_f64()
        );
        figures.push(f);
    }

    let event_bytes = stamped_event("t", 0, cfg.users).data.len();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("## Raw pipe: app → daprd → Kafka → daprd → app\n");
    println!("{}", table(&figures));
    let rows: Vec<UsageRow<'_>> = figures
        .iter()
        .map(|f| UsageRow {
            phase: &f.label,
            ops: f.events as u64,
            usage: &f.usage,
        })
        .collect();
    println!(
        "{}",
        usage_block(
            "Raw pipe (first publish → last delivery)",
            &procs,
            "event",
            &rows
        )
    );
    println!("- command: {}", command("bench_pipe", &[]));
    println!(
        "- machine: nproc {cpus}, {}, {} RAM; daprd {}; Kafka {} (single KRaft node, {}, \
         3 partitions per topic, acks=all)",
        cpu_model(),
        mem_total(),
        daprd_version().await?,
        kafka_version(),
        kafka_brokers()
    );
    println!(
        "- workload: {} events per phase after {} warm-up events on separate topics; \
         `TaskEvent` of {event_bytes} bytes, {} partition keys; subscriber answers SUCCESS \
         at once, one event per `OnTopicEvent` call, or with {} (`OnBulkTopicEvent`, \
         rawPayload); TCP_NODELAY on the app's connections: {}",
        cfg.events,
        cfg.warmup,
        cfg.users,
        cfg.bulk_delivery.describe(),
        if cfg.nodelay { "on" } else { "off" }
    );
    println!(
        "- delivered events/s = events / (first publish → last delivery); published events/s = \
         events / (first publish → last acknowledgement); latency = delivery − publish instant \
         carried in `occurred_at`"
    );
    for d in [&sub, &publ] {
        let complaints = log_complaints(&d.log_path, &[]);
        println!(
            "- daprd {} log: {} ({} warning/error lines)",
            d.options.app_id,
            std::fs::canonicalize(&d.log_path)
                .unwrap_or_else(|_| d.log_path.clone())
                .display(),
            complaints.len()
        );
        for line in complaints.iter().take(5) {
            println!("  - `{line}`");
        }
    }
    Ok(())
}
