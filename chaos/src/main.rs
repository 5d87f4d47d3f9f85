//! `just chaos`: a seeded fault soak. Starts the whole system as separate processes, drives
//! task changes for many users while a nemesis kills, restarts and pauses its parts, heals
//! everything, waits for quiescence and checks what the clients were told against what the
//! system did. Exits 1 on any violation.

mod checker;
mod load;
mod nemesis;
mod stack;
mod watch;

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;
use prost::Message;
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use todo_proto::todo::{
    audit::v1::{ListActivityRequest, audit_service_client::AuditServiceClient},
    deadletters::v1::{
        ListDeadLettersRequest, dead_letter_service_client::DeadLetterServiceClient,
    },
    events::v1::{OccurrenceRequested, ReminderEvent, TaskChanged, TaskEvent},
    notifications::v1::{
        ListNotificationsRequest, notification_service_client::NotificationServiceClient,
    },
};
use todo_topology::Topics;

use crate::{
    checker::{DbReminder, DbTask, DeadLetterSeen, Observed},
    stack::{APPS, AUDIT, DEAD_LETTERS, NOTIFICATION, SYNC, SYNC_HEARTBEAT, Stack, StackConfig},
    watch::Watchers,
};

/// The CloudEvent type of the canary: one message no consumer takes, published once to
/// `task-occurrences` so that task-service dead-letters it. dead-letter-service must record
/// it (the dead-letter check is not vacuous); the recorder's copy is not judged.
const CANARY_TYPE: &str = "todo.chaos.canary.v1";

/// The user id dead-letter-service takes as an admin in `AUTH_MODE=dev` (its `DLQ_ADMINS`
/// default).
const DEAD_LETTER_ADMIN: &str = "admin";

/// A seeded fault soak of the Todo system with a checker.
#[derive(Debug, Parser)]
#[command(name = "chaos")]
struct Args {
    /// The seed of the fault schedule and the load (random when unset; printed either way).
    #[arg(long, env = "CHAOS_SEED")]
    seed: Option<u64>,
    /// How long the load runs, in seconds (faults fall in its first 85 %).
    #[arg(long, env = "CHAOS_DURATION_SECS", default_value_t = 150)]
    duration: u64,
    /// Simulated users.
    #[arg(long, env = "CHAOS_USERS", default_value_t = 20)]
    users: usize,
    /// Task API requests per second, all users together.
    #[arg(long, env = "CHAOS_RATE", default_value_t = 40.0)]
    rate: f64,
    /// Faults the nemesis injects.
    #[arg(long, env = "CHAOS_FAULTS", default_value_t = 12)]
    faults: usize,
    /// How long to wait for quiescence after healing, in seconds.
    #[arg(long, env = "CHAOS_QUIESCE_SECS", default_value_t = 180)]
    quiesce: u64,
    /// The cargo profile whose service binaries run (`cargo build --bins [--release]`).
    #[arg(long, env = "CHAOS_PROFILE", default_value = "debug")]
    profile: String,
    /// The port of the run's own PostgreSQL server (scripts/pg.sh with PG_PORT).
    #[arg(long, env = "CHAOS_PG_PORT", default_value_t = 15433)]
    pg_port: u16,
    /// Keep the run's databases (and its PostgreSQL server running) for a post-mortem.
    #[arg(long, env = "CHAOS_KEEP")]
    keep: bool,
}

fn elapsed(start: Instant) -> String {
    format!("t+{:.1}s", start.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => std::process::exit(0),
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("chaos: {e:#}");
            std::process::exit(2);
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let run_id = todo_harness::unique("chaos");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| todo_harness::repo_root().join("target"));
    let target = target.canonicalize().unwrap_or(target);
    let bin_dir = target.join(&args.profile);
    for app in APPS {
        anyhow::ensure!(
            bin_dir.join(app.binary).exists(),
            "{} is missing: run `cargo build --bins{}`",
            bin_dir.join(app.binary).display(),
            if args.profile == "release" {
                " --release"
            } else {
                ""
            }
        );
    }
    let run_dir = target.join("chaos").join(&run_id);
    let duration = Duration::from_secs(args.duration);
    let window = duration.mul_f64(0.85);
    let schedule = nemesis::schedule(seed, args.faults, window, APPS.len());
    println!(
        "chaos: seed {seed} (CHAOS_SEED={seed} reproduces the schedule); run {run_id}; {} users at {} requests/s for {} s; {} faults",
        args.users, args.rate, args.duration, args.faults
    );
    println!("chaos: files under {}", run_dir.display());

    let started = Instant::now();
    let mut stack = Stack::infrastructure(StackConfig {
        run_dir: run_dir.clone(),
        bin_dir,
        prefix: run_id.clone(),
        pg_port: args.pg_port,
    })
    .await?;
    let outcome = soak(&args, seed, &run_id, &schedule, &mut stack, started).await;
    stack.teardown(args.keep).await;
    let ok = outcome?;
    println!(
        "chaos: {} in {:.0} s (seed {seed})",
        if ok { "PASSED" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    Ok(ok)
}

async fn soak(
    args: &Args,
    seed: u64,
    run_id: &str,
    schedule: &[nemesis::Fault],
    stack: &mut Stack,
    started: Instant,
) -> anyhow::Result<bool> {
    let topics = Topics::new(run_id);
    let recorded = [
        topics.task_events.clone(),
        topics.task_updates.clone(),
        topics.reminders.clone(),
        topics.task_occurrences.clone(),
    ];
    // The recording subscriber: a consumer of every topic that the nemesis leaves alone,
    // to count what was published and how often it was delivered.
    let recorder = todo_harness::recorder::Recorder::start(
        &format!("{run_id}-recorder"),
        &recorded,
        Some(stack.resources.clone()),
    )
    .await
    .context("starting the recording subscriber")?;
    stack.services().await?;
    println!(
        "chaos: {} stack up: kafka 127.0.0.1:{}, postgresql 127.0.0.1:{}, {} services with their sidecars",
        elapsed(started),
        stack.kafka_port,
        args.pg_port,
        APPS.len()
    );

    let clients = vec![load::client(&stack.url(0))?, load::client(&stack.url(1))?];
    let load_cfg = load::LoadConfig {
        seed,
        users: args.users,
        rate: args.rate,
        duration: Duration::from_secs(args.duration),
        run_id: run_id.to_owned(),
    };
    let users: Vec<String> = (0..args.users)
        .map(|i| load::user_name(run_id, i))
        .collect();
    // A live client per user, watching through every fault until the check.
    let watchers = Watchers::start(
        &users,
        clients.clone(),
        &stack.url(SYNC),
        SYNC_HEARTBEAT * 4,
    )?;
    publish_canary(recorder.daprd.http_port, &topics.task_occurrences)
        .await
        .context("publishing the canary dead letter")?;
    let load_start = Instant::now();
    let driver = tokio::spawn(load::run(load_cfg, clients, Duration::from_secs(60)));

    // The nemesis, one fault after another.
    let mut unexpected = Vec::new();
    for (n, f) in schedule.iter().enumerate() {
        if let Some(wait) = f.at.checked_sub(load_start.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let name = stack.name(f.target);
        println!(
            "chaos: {} fault {}/{} (scheduled t+{:.1}s of the load): {} {name} for {} s",
            elapsed(started),
            n + 1,
            schedule.len(),
            f.at.as_secs_f64(),
            f.kind,
            f.down.as_secs()
        );
        stack
            .apply(f)
            .await
            .with_context(|| format!("fault {}: {} {name}", n + 1, f.kind))?;
        println!("chaos: {} healed {name}", elapsed(started));
        for (p, status) in stack.crashed() {
            println!(
                "chaos: {} UNEXPECTED: {p} exited on its own ({status})",
                elapsed(started)
            );
            unexpected.push(format!("{p}: {status}"));
        }
        stack.revive().await?;
    }
    let ledger = driver.await.context("the load driver")?;
    println!(
        "chaos: {} load done: {} requests; every fault healed; waiting for quiescence (at most {} s)",
        elapsed(started),
        ledger.len(),
        args.quiesce
    );

    // Quiescence: poll the checker until it passes or the time is up.
    let quiesce_start = Instant::now();
    let report = loop {
        let observed = observe(stack, &recorder, &recorded, &users, &watchers).await?;
        let report = checker::check(&ledger, &observed, &users);
        if report.ok() || quiesce_start.elapsed() > Duration::from_secs(args.quiesce) {
            break report;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    for (p, status) in stack.crashed() {
        unexpected.push(format!("{p}: {status}"));
    }
    println!(
        "chaos: {} checked after {:.0} s of quiescence wait",
        elapsed(started),
        quiesce_start.elapsed().as_secs_f64()
    );
    println!("chaos: faults injected: {}", schedule.len());
    for (k, v) in &report.counts {
        println!("  {k:<100} {v}");
    }
    for u in &unexpected {
        println!("chaos: VIOLATION: a process exited on its own: {u}");
    }
    println!(
        "chaos: {} violations ({} rules broken)",
        report.violation_count() + unexpected.len(),
        report.violations.len()
    );
    for (rule, examples) in &report.violations {
        println!("chaos: VIOLATION ({}): {rule}", examples.len());
        for e in examples.iter().take(10) {
            println!("    {e}");
        }
    }
    Ok(report.ok() && unexpected.is_empty())
}

/// Reads what the system did: the recorder's deliveries, the task database, audit-service
/// and notification-service (their APIs and the notification log).
async fn observe(
    stack: &Stack,
    recorder: &todo_harness::recorder::Recorder,
    topics: &[String; 4],
    users: &[String],
    watchers: &Watchers,
) -> anyhow::Result<Observed> {
    let mut o = Observed {
        now_ms: chrono::Utc::now().timestamp_millis(),
        canary_type: Some(CANARY_TYPE.to_owned()),
        ..Observed::default()
    };
    // The watchers first: a view taken before the database read can only be behind it.
    (o.views, o.connections, o.watch_counts) = watchers.snapshot();
    let [events, updates, reminders, occurrences] = topics;
    for (ty, bytes) in recorder.inbox.on(events) {
        match TaskEvent::decode(bytes.as_slice()) {
            Ok(e) => o.task_events.push(e),
            Err(_) => o.undecodable.push((events.clone(), ty)),
        }
    }
    for (ty, bytes) in recorder.inbox.on(updates) {
        match TaskChanged::decode(bytes.as_slice()) {
            Ok(e) => o.task_updates.push(e),
            Err(_) => o.undecodable.push((updates.clone(), ty)),
        }
    }
    for (ty, bytes) in recorder.inbox.on(reminders) {
        match ReminderEvent::decode(bytes.as_slice()) {
            Ok(e) => o.reminders.push((ty, e)),
            Err(_) => o.undecodable.push((reminders.clone(), ty)),
        }
    }
    for (ty, bytes) in recorder.inbox.on(occurrences) {
        if ty == CANARY_TYPE {
            continue;
        }
        match OccurrenceRequested::decode(bytes.as_slice()) {
            Ok(e) => o.occurrences.push(e),
            Err(_) => o.undecodable.push((occurrences.clone(), ty)),
        }
    }

    // The task database (read only).
    let db = Database::connect(&stack.tasks_db.1)
        .await
        .context("connecting to the task database")?;
    let q = |sql: &str| Statement::from_string(DbBackend::Postgres, sql.to_owned());
    for row in db
        .query_all_raw(q(
            "SELECT id::text AS id, user_id, version, status, title FROM tasks",
        ))
        .await?
    {
        o.db_tasks.insert(
            row.try_get("", "id")?,
            DbTask {
                user_id: row.try_get("", "user_id")?,
                version: row.try_get("", "version")?,
                status: i32::from(row.try_get::<i16>("", "status")?),
                title: row.try_get("", "title")?,
            },
        );
    }
    for row in db
        .query_all_raw(q("SELECT task_id::text AS id FROM task_tombstones"))
        .await?
    {
        o.tombstones.insert(row.try_get("", "id")?);
    }
    for row in db
        .query_all_raw(q(
            "SELECT reminder_id::text AS id, user_id, remind_at, state FROM reminders",
        ))
        .await?
    {
        o.db_reminders.push(DbReminder {
            reminder_id: row.try_get("", "id")?,
            user_id: row.try_get("", "user_id")?,
            remind_at_ms: row.try_get("", "remind_at")?,
            state: row.try_get("", "state")?,
        });
    }
    for row in db
        .query_all_raw(q("SELECT user_id, seq FROM user_changes"))
        .await?
    {
        let seq: i64 = row.try_get("", "seq")?;
        o.user_changes
            .insert(row.try_get("", "user_id")?, u64::try_from(seq).unwrap_or(0));
    }
    o.outbox = db
        .query_one_raw(q("SELECT count(*) AS n FROM outbox"))
        .await?
        .map(|r| r.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0);
    db.close().await?;

    // audit-service and notification-service, as each user.
    let mut audit = AuditServiceClient::connect(stack.url(AUDIT)).await?;
    let mut notes = NotificationServiceClient::connect(stack.url(NOTIFICATION)).await?;
    for user in users {
        let mut entries = Vec::new();
        let mut token = String::new();
        loop {
            let mut req = tonic::Request::new(ListActivityRequest {
                page_size: 500,
                page_token: token.clone(),
                ..ListActivityRequest::default()
            });
            req.metadata_mut().insert("x-user-id", user.parse()?);
            let page = audit.list_activity(req).await?.into_inner();
            entries.extend(page.entries);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        o.audit.insert(user.clone(), entries);
        let mut listed = Vec::new();
        let mut token = String::new();
        loop {
            let mut req = tonic::Request::new(ListNotificationsRequest {
                page_size: 500,
                page_token: token.clone(),
            });
            req.metadata_mut().insert("x-user-id", user.parse()?);
            let page = notes.list_notifications(req).await?.into_inner();
            listed.extend(page.notifications.into_iter().map(|n| n.reminder_id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        o.listed.insert(user.clone(), listed);
    }

    // Every delivery notification-service made, from its log (all its lives).
    let log = std::fs::read_to_string(stack.app_log(NOTIFICATION)).unwrap_or_default();
    let mut lines: HashMap<String, usize> = HashMap::new();
    for line in log.lines().filter(|l| l.contains("reminder delivered")) {
        let Some(start) = line.find('{') else {
            continue;
        };
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line[start..])
            && let Some(id) = v.get("reminder_id").and_then(|v| v.as_str())
        {
            *lines.entry(id.to_owned()).or_default() += 1;
        }
    }
    o.delivered_lines = lines;
    o.dead_letters = dead_letters(stack).await?;
    Ok(o)
}

/// Every record of dead-letter-service, each with the first service log line that names
/// its CloudEvent id next to a dead letter (why it was dropped).
async fn dead_letters(stack: &Stack) -> anyhow::Result<Vec<DeadLetterSeen>> {
    let mut client = DeadLetterServiceClient::connect(stack.url(DEAD_LETTERS))
        .await
        .context("connecting to dead-letter-service")?;
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let mut req = tonic::Request::new(ListDeadLettersRequest {
            page_size: 500,
            page_token: token.clone(),
            ..ListDeadLettersRequest::default()
        });
        req.metadata_mut()
            .insert("x-user-id", DEAD_LETTER_ADMIN.parse()?);
        let page = client
            .list_dead_letters(req)
            .await
            .context("ListDeadLetters")?
            .into_inner();
        out.extend(page.dead_letters.into_iter().map(|d| {
            DeadLetterSeen {
                dead_letter_topic: d.dead_letter_topic,
                cloud_event_id: d.cloud_event_id,
                event_type: d.r#type,
                source: d.source,
                partition_key: d.partition_key,
                times: d.times_dead_lettered,
                first_at: d
                    .first_dead_lettered_at
                    .as_ref()
                    .and_then(todo_proto::from_timestamp)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                    .unwrap_or_default(),
                decode_error: d.decode_error,
                logged: String::new(),
            }
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    if out.iter().any(|d| d.event_type != CANARY_TYPE) {
        let logs: Vec<String> = (0..APPS.len())
            .map(|i| std::fs::read_to_string(stack.app_log(i)).unwrap_or_default())
            .collect();
        for d in out.iter_mut().filter(|d| !d.cloud_event_id.is_empty()) {
            d.logged = logs
                .iter()
                .flat_map(|l| l.lines())
                .find(|l| l.contains(d.cloud_event_id.as_str()) && l.contains("dead-letter"))
                .map(|l| l.chars().take(400).collect())
                .unwrap_or_default();
        }
    }
    Ok(out)
}

/// Publishes the canary (see [`CANARY_TYPE`]) to `topic` through the recorder's sidecar
/// (Dapr's HTTP publish API: binary data, the CloudEvent type from metadata).
async fn publish_canary(daprd_http_port: u16, topic: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = b"chaos canary: not an event any consumer takes";
    let request = format!(
        "POST /v1.0/publish/{}/{topic}?metadata.cloudevent.type={CANARY_TYPE} HTTP/1.0\r\n\
         Host: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        todo_topology::components::PUBSUB,
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", daprd_http_port)).await?;
    s.write_all(request.as_bytes()).await?;
    s.write_all(body).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .context("no answer from the recorder's daprd")??;
    let answer = String::from_utf8_lossy(&answer);
    anyhow::ensure!(
        answer.starts_with("HTTP/1.0 204") || answer.starts_with("HTTP/1.1 204"),
        "daprd answered: {}",
        answer.lines().next().unwrap_or_default()
    );
    Ok(())
}
