//! Task events through the outbox, read back by a real subscriber through daprd and Kafka.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/events.rs"]
mod recorder;

use std::{collections::HashMap, path::PathBuf, time::Duration};

use common::{Backend, as_user, fresh_database, jwt_mode};
use prost::Message;
use prost_types::FieldMask;
use recorder::Recorder;
use sea_orm::{EntityTrait, PaginatorTrait, TransactionTrait};
use task_service::{App, db::entities::outbox, events::Topics};
use todo_harness::{Daprd, DaprdOptions, DedicatedKafka, free_port, resources_for, unique};
use todo_proto::todo::{
    events::v1::{TaskChanged, TaskEvent},
    v1::{
        CompleteTaskRequest, CreateTaskRequest, DeleteTaskRequest, GetTaskRequest,
        ReopenTaskRequest, Task, UpdateTaskRequest, task_service_client::TaskServiceClient,
    },
};
use todo_topology::event_types;

struct Stack {
    app: Option<App>,
    sidecar: Daprd,
    recorder: Recorder,
    topics: Topics,
    url: String,
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn start(backend: Backend, resources: Option<PathBuf>) -> Self {
        todo_harness::ensure_kafka().await.unwrap();
        let topics = Topics::new(&unique("ev"));
        let recorder = Recorder::start(
            &[
                topics.task_events.clone(),
                topics.task_updates.clone(),
                topics.reminders.clone(),
            ],
            resources.clone(),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let url = fresh_database(backend, &dir).await;
        let grpc_port = free_port().unwrap();
        let config = stack_config(&url, grpc_port, &topics);
        let app = task_service::build(config).await.unwrap();
        let mut opts = DaprdOptions::new(unique("task-service"), Some(app.addr.port()));
        opts.grpc_port = Some(grpc_port);
        if let Some(r) = resources {
            opts.resources_path = r;
        }
        let sidecar = Daprd::start(opts).await.unwrap();
        Self {
            app: Some(app),
            sidecar,
            recorder,
            topics,
            url,
            _dir: dir,
        }
    }

    async fn client(&self) -> TaskServiceClient<tonic::transport::Channel> {
        TaskServiceClient::connect(format!("http://{}", self.app.as_ref().unwrap().addr))
            .await
            .unwrap()
    }

    /// Every TaskEvent received so far, first delivery of each event id only (the dedup view),
    /// and how many deliveries there were in all.
    fn task_events(&self) -> (Vec<(String, TaskEvent)>, usize) {
        let all = self.recorder.inbox.on(&self.topics.task_events);
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (ty, bytes) in &all {
            let e = TaskEvent::decode(bytes.as_slice()).unwrap();
            if seen.insert(e.event_id.clone()) {
                out.push((ty.clone(), e));
            }
        }
        (out, all.len())
    }

    async fn wait_for_events(
        &self,
        user_prefix: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<(String, TaskEvent)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (events, _) = self.task_events();
            let mine: Vec<_> = events
                .into_iter()
                .filter(|(_, e)| e.user_id.starts_with(user_prefix))
                .collect();
            if mine.len() >= n {
                return mine;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited {timeout:?} for {n} events, have {}",
                mine.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn stack_config(url: &str, dapr_grpc_port: u16, topics: &Topics) -> task_service::Config {
    let mut c = common::config(url, jwt_mode());
    c.common.dapr_grpc_endpoint = format!("http://127.0.0.1:{dapr_grpc_port}");
    c.common.topic_prefix = topics
        .task_events
        .trim_end_matches(".task-events")
        .to_owned();
    c
}

fn new_task(title: &str) -> CreateTaskRequest {
    CreateTaskRequest {
        task: Some(Task {
            title: title.into(),
            ..Task::default()
        }),
        ..Default::default()
    }
}

async fn each_rpc_produces_exactly_its_events(backend: Backend) {
    let stack = Stack::start(backend, None).await;
    let mut c = stack.client().await;
    let user = unique("u");
    let get = |id: String| GetTaskRequest { id };
    let mut snapshots = Vec::new();
    let t = c
        .create_task(as_user(&user, new_task("first")))
        .await
        .unwrap()
        .into_inner();
    snapshots.push(
        c.get_task(as_user(&user, get(t.id.clone())))
            .await
            .unwrap()
            .into_inner(),
    );
    c.update_task(as_user(
        &user,
        UpdateTaskRequest {
            task: Some(Task {
                id: t.id.clone(),
                title: "second".into(),
                ..Task::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["title".into()],
            }),
        },
    ))
    .await
    .unwrap();
    snapshots.push(
        c.get_task(as_user(&user, get(t.id.clone())))
            .await
            .unwrap()
            .into_inner(),
    );
    c.complete_task(as_user(
        &user,
        CompleteTaskRequest {
            id: t.id.clone(),
            etag: String::new(),
        },
    ))
    .await
    .unwrap();
    snapshots.push(
        c.get_task(as_user(&user, get(t.id.clone())))
            .await
            .unwrap()
            .into_inner(),
    );
    c.reopen_task(as_user(
        &user,
        ReopenTaskRequest {
            id: t.id.clone(),
            etag: String::new(),
        },
    ))
    .await
    .unwrap();
    snapshots.push(
        c.get_task(as_user(&user, get(t.id.clone())))
            .await
            .unwrap()
            .into_inner(),
    );
    let before_delete = snapshots.last().unwrap().clone();
    c.delete_task(as_user(
        &user,
        DeleteTaskRequest {
            id: t.id.clone(),
            etag: String::new(),
        },
    ))
    .await
    .unwrap();
    snapshots.push(before_delete);

    let events = stack
        .wait_for_events(&user, 5, Duration::from_secs(60))
        .await;
    let types: Vec<&str> = events.iter().map(|(ty, _)| ty.as_str()).collect();
    assert_eq!(
        types,
        [
            event_types::TASK_CREATED,
            event_types::TASK_UPDATED,
            event_types::TASK_COMPLETED,
            event_types::TASK_REOPENED,
            event_types::TASK_DELETED
        ]
    );
    for ((_, e), snap) in events.iter().zip(&snapshots) {
        assert_eq!(
            e.task.as_ref().unwrap(),
            snap,
            "the event carries what GetTask returned"
        );
        assert_eq!(e.user_id, user);
        assert!(uuid::Uuid::parse_str(&e.event_id).is_ok());
        assert!(e.occurred_at.is_some());
    }
    assert_eq!(events[1].1.changed_fields, ["title"]);

    // The change notices on task-updates, one per change, in order.
    let notices = stack
        .recorder
        .inbox
        .wait_until(&stack.topics.task_updates, Duration::from_secs(30), |n| {
            n.len() >= 5
        })
        .await;
    let kinds: Vec<i32> = notices
        .iter()
        .map(|(_, b)| TaskChanged::decode(b.as_slice()).unwrap().kind)
        .collect();
    assert_eq!(kinds, [1, 2, 3, 4, 5]);

    // Exactly these: nothing else arrives, and an idempotent no-op emits nothing.
    c.complete_task(as_user(
        &user,
        CompleteTaskRequest {
            id: t.id.clone(),
            etag: String::new(),
        },
    ))
    .await
    .unwrap_err();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (all, deliveries) = stack.task_events();
    assert_eq!(all.len(), 5);
    assert_eq!(deliveries, 5);
}

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
    let recorder = Recorder::start(std::slice::from_ref(&topics.task_events), None).await;
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

async fn a_rolled_back_transaction_leaves_no_event(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(backend, &dir).await;
    let db = task_service::db::connect(&url, 2).await.unwrap();
    let topics = Topics::new("rb");
    let fields = task_service::tasks::validate::task_fields(
        &Task {
            title: "x".into(),
            ..Task::default()
        },
        "",
    )
    .unwrap();
    let row = task_service::tasks::new_row("u", uuid::Uuid::now_v7(), &fields, chrono::Utc::now());
    {
        let txn = db.begin().await.unwrap();
        task_service::tasks::insert(&txn, &row).await.unwrap();
        let evs = task_service::events::task_changed(
            &topics,
            todo_proto::todo::events::v1::TaskEventKind::Created,
            &task_service::tasks::to_proto(&row),
            vec![],
            chrono::Utc::now(),
        );
        task_service::outbox::write(&txn, evs).await.unwrap();
        txn.rollback().await.unwrap();
    }
    assert_eq!(outbox::Entity::find().count(&db).await.unwrap(), 0);
    assert!(
        task_service::tasks::find(&db, "u", row.id)
            .await
            .unwrap()
            .is_none()
    );
    // And through the API: a rejected request writes no event.
    let app = task_service::build(common::config(&url, jwt_mode()))
        .await
        .unwrap();
    let mut c = TaskServiceClient::connect(format!("http://{}", app.addr))
        .await
        .unwrap();
    c.create_task(as_user("u", new_task("  ")))
        .await
        .unwrap_err();
    assert_eq!(outbox::Entity::find().count(&db).await.unwrap(), 0);
    app.shutdown().await.unwrap();
}

macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name(super::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name(super::Backend::Postgres).await })*
        }
    };
}

on_both_databases!(
    each_rpc_produces_exactly_its_events,
    with_kafka_stopped_every_rpc_succeeds_and_all_events_arrive_later,
    a_rolled_back_transaction_leaves_no_event,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_occurrence_request_creates_the_next_task_once_even_when_delivered_twice() {
    use dapr_publisher::{OutgoingEvent, Publisher, PublisherConfig};
    use todo_proto::todo::events::v1::OccurrenceRequested;
    let stack = Stack::start(Backend::Sqlite, None).await;
    let mut c = stack.client().await;
    let user = unique("occ");
    let parent = c
        .create_task(as_user(&user, new_task("water the plants")))
        .await
        .unwrap()
        .into_inner();
    let next_id = uuid::Uuid::new_v4().to_string();
    let request = OccurrenceRequested {
        event_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: Some(todo_proto::to_timestamp(chrono::Utc::now())),
        user_id: user.clone(),
        task_id: next_id.clone(),
        series_id: parent.id.clone(),
        parent_task_id: parent.id.clone(),
        occurrence_index: 1,
        due_time: Some(prost_types::Timestamp {
            seconds: 2_000_000_000,
            nanos: 0,
        }),
        template: Some(Task {
            title: "water the plants".into(),
            tags: vec!["home".into()],
            recurrence: Some(todo_proto::todo::v1::Recurrence {
                frequency: todo_proto::todo::v1::Frequency::Monthly as i32,
                ..Default::default()
            }),
            series_start_time: Some(prost_types::Timestamp {
                seconds: 1_990_000_000,
                nanos: 0,
            }),
            ..Task::default()
        }),
    };
    let publisher_sidecar = Daprd::start(DaprdOptions::new(unique("occ-pub"), None))
        .await
        .unwrap();
    let publisher = Publisher::connect(&PublisherConfig::new(
        publisher_sidecar.grpc_address(),
        todo_topology::components::PUBSUB,
    ))
    .await
    .unwrap();
    // The same request twice (a redelivery), then a bad one that must be dropped.
    for _ in 0..2 {
        publisher
            .publish(&OutgoingEvent {
                id: uuid::Uuid::now_v7().to_string(),
                topic: stack.topics.task_occurrences.clone(),
                event_type: event_types::OCCURRENCE_REQUESTED.to_owned(),
                key: user.clone(),
                data: request.encode_to_vec(),
            })
            .await
            .unwrap();
    }
    let created = stack
        .wait_for_events(&user, 2, Duration::from_secs(60))
        .await;
    let task = created[1].1.task.clone().unwrap();
    assert_eq!(task.id, next_id);
    assert_eq!(task.series_id, parent.id);
    assert_eq!(task.parent_task_id, parent.id);
    assert_eq!(task.occurrence_index, 1);
    assert_eq!(task.due_time.unwrap().seconds, 2_000_000_000);
    assert_eq!(
        task.series_start_time.unwrap().seconds,
        1_990_000_000,
        "the series keeps counting from its start"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (all, _) = stack.task_events();
    assert_eq!(
        all.iter().filter(|(_, e)| e.user_id == user).count(),
        2,
        "created once"
    );
    let got = c
        .get_task(as_user(&user, GetTaskRequest { id: next_id }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, task);
}

// ---------------------------------------------------------------- reminders

use todo_proto::todo::events::v1::ReminderEvent;
use todo_proto::todo::v1::{Reminder, reminder::When};

/// Reminder events of `user` received so far: (CloudEvent type, event), first delivery each.
fn reminder_events(stack: &Stack, user: &str) -> Vec<(String, ReminderEvent)> {
    let mut seen = std::collections::HashSet::new();
    stack
        .recorder
        .inbox
        .on(&stack.topics.reminders)
        .into_iter()
        .map(|(ty, b)| (ty, ReminderEvent::decode(b.as_slice()).unwrap()))
        .filter(|(_, e)| e.user_id == user && seen.insert(e.event_id.clone()))
        .collect()
}

async fn wait_reminders(
    stack: &Stack,
    user: &str,
    pred: impl Fn(&[(String, ReminderEvent)]) -> bool,
) -> Vec<(String, ReminderEvent)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = reminder_events(stack, user);
        if pred(&got) {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reminder events so far: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn count(events: &[(String, ReminderEvent)], ty: &str) -> usize {
    events.iter().filter(|(t, _)| t == ty).count()
}

fn due_in(secs: i64) -> prost_types::Timestamp {
    todo_proto::to_timestamp(chrono::Utc::now() + chrono::Duration::seconds(secs))
}

fn before_due(secs: i64) -> Reminder {
    Reminder {
        when: Some(When::BeforeDue(prost_types::Duration {
            seconds: secs,
            nanos: 0,
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reminder_fires_once_near_its_moment_moves_with_the_due_time_and_completion_cancels() {
    let stack = Stack::start(Backend::Sqlite, None).await;
    let mut c = stack.client().await;
    let user = unique("rem");

    // Due in 4 s, reminded 2 s before: scheduled, then due once, with its lateness.
    let t = c
        .create_task(as_user(
            &user,
            CreateTaskRequest {
                task: Some(Task {
                    title: "call mum".into(),
                    due_time: Some(due_in(4)),
                    reminders: vec![before_due(2)],
                    ..Task::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let got = wait_reminders(&stack, &user, |e| count(e, event_types::REMINDER_DUE) >= 1).await;
    assert_eq!(count(&got, event_types::REMINDER_SCHEDULED), 1);
    let (_, due) = got
        .iter()
        .find(|(t, _)| t == event_types::REMINDER_DUE)
        .unwrap();
    assert_eq!(due.task_id, t.id);
    assert_eq!(due.task_title, "call mum");
    let lateness = due.lateness.unwrap();
    assert!(
        lateness.seconds < 5,
        "fired close to its moment: {lateness:?}"
    );

    // Move the due time: the old reminder is cancelled, the new one fires at the new time.
    let t2 = c
        .create_task(as_user(
            &user,
            CreateTaskRequest {
                task: Some(Task {
                    title: "move me".into(),
                    due_time: Some(due_in(60)),
                    reminders: vec![before_due(1)],
                    ..Task::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    c.update_task(as_user(
        &user,
        UpdateTaskRequest {
            task: Some(Task {
                id: t2.id.clone(),
                due_time: Some(due_in(3)),
                ..Task::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["due_time".into()],
            }),
        },
    ))
    .await
    .unwrap();
    let got = wait_reminders(&stack, &user, |e| count(e, event_types::REMINDER_DUE) >= 2).await;
    let for_t2: Vec<&(String, ReminderEvent)> =
        got.iter().filter(|(_, e)| e.task_id == t2.id).collect();
    let types: Vec<&str> = for_t2.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            event_types::REMINDER_SCHEDULED,
            event_types::REMINDER_CANCELLED,
            event_types::REMINDER_SCHEDULED,
            event_types::REMINDER_DUE
        ]
    );
    assert_eq!(for_t2[1].1.reason, "rescheduled");
    assert_eq!(for_t2[1].1.reminder_id, for_t2[0].1.reminder_id);
    assert_eq!(for_t2[3].1.reminder_id, for_t2[2].1.reminder_id);

    // Renamed after its reminder was scheduled: the reminder is kept (same moment) and
    // fires under the new name.
    let t4 = c
        .create_task(as_user(
            &user,
            CreateTaskRequest {
                task: Some(Task {
                    title: "old name".into(),
                    due_time: Some(due_in(4)),
                    reminders: vec![before_due(2)],
                    ..Task::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    c.update_task(as_user(
        &user,
        UpdateTaskRequest {
            task: Some(Task {
                id: t4.id.clone(),
                title: "new name".into(),
                ..Task::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["title".into()],
            }),
        },
    ))
    .await
    .unwrap();

    // Completed before its moment: cancelled, never due.
    let t3 = c
        .create_task(as_user(
            &user,
            CreateTaskRequest {
                task: Some(Task {
                    title: "done early".into(),
                    due_time: Some(due_in(4)),
                    reminders: vec![before_due(1)],
                    ..Task::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    c.complete_task(as_user(
        &user,
        CompleteTaskRequest {
            id: t3.id.clone(),
            etag: String::new(),
        },
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let got = wait_reminders(&stack, &user, |e| count(e, event_types::REMINDER_DUE) >= 3).await;
    let for_t3: Vec<&str> = got
        .iter()
        .filter(|(_, e)| e.task_id == t3.id)
        .map(|(t, _)| t.as_str())
        .collect();
    assert_eq!(
        for_t3,
        [
            event_types::REMINDER_SCHEDULED,
            event_types::REMINDER_CANCELLED
        ]
    );
    let for_t4: Vec<&(String, ReminderEvent)> =
        got.iter().filter(|(_, e)| e.task_id == t4.id).collect();
    let types: Vec<&str> = for_t4.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [event_types::REMINDER_SCHEDULED, event_types::REMINDER_DUE],
        "a rename keeps the reminder"
    );
    assert_eq!(for_t4[0].1.task_title, "old name");
    assert_eq!(
        for_t4[1].1.task_title, "new name",
        "fires under the new name"
    );
    assert_eq!(
        count(&got, event_types::REMINDER_DUE),
        3,
        "no other reminder fired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_postgres_publish_each_of_500_reminders_once() {
    let stack = Stack::start(Backend::Postgres, None).await;
    // A second replica on the same database, publishing through the same sidecar.
    let second = task_service::build(stack_config(
        &stack.url,
        stack.sidecar.grpc_port,
        &stack.topics,
    ))
    .await
    .unwrap();
    let user = unique("rep");
    let at = todo_proto::to_timestamp(chrono::Utc::now() + chrono::Duration::seconds(8));
    let mut handles = Vec::new();
    for (k, addr) in [stack.app.as_ref().unwrap().addr, second.addr]
        .into_iter()
        .enumerate()
    {
        let user = user.clone();
        handles.push(tokio::spawn(async move {
            let mut c = TaskServiceClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            for i in 0..250 {
                c.create_task(as_user(
                    &user,
                    CreateTaskRequest {
                        task: Some(Task {
                            title: format!("{k}-{i}"),
                            reminders: vec![Reminder {
                                when: Some(When::At(at)),
                            }],
                            ..Task::default()
                        }),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let got = wait_reminders(&stack, &user, |e| {
        count(e, event_types::REMINDER_DUE) >= 500
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all_due: Vec<ReminderEvent> = stack
        .recorder
        .inbox
        .on(&stack.topics.reminders)
        .into_iter()
        .filter(|(t, _)| t == event_types::REMINDER_DUE)
        .map(|(_, b)| ReminderEvent::decode(b.as_slice()).unwrap())
        .filter(|e| e.user_id == user)
        .collect();
    let distinct: std::collections::HashSet<&str> =
        all_due.iter().map(|e| e.reminder_id.as_str()).collect();
    assert_eq!(distinct.len(), 500, "every reminder fired");
    assert_eq!(
        all_due.len(),
        500,
        "and each exactly once, though both replicas ran a scheduler"
    );
    assert_eq!(count(&got, event_types::REMINDER_SCHEDULED), 500);
    second.shutdown().await.unwrap();
}
