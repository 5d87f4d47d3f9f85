//! Test support: the real pipe around recurring-task-service, under a unique topic prefix.
//!
//! ```text
//! test --publish--> daprd(pub) --> Kafka <prefix>.task-events --> daprd(app) --> recurring-task-service
//! recurring-task-service --publish--> daprd(app) --> Kafka <prefix>.task-occurrences --> daprd(rec) --> recorder
//!                                   Kafka <prefix>.task-events-dlq (DROPs, by daprd(app)) --> daprd(rec) --> recorder
//! ```
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use todo_service::cli::ServiceConfig as _;

use chrono::{DateTime, Utc};
use dapr_publisher::{OutgoingEvent, Publisher};
use prost::Message;
use recurring_task_service::{App, Config, completions::StatsSnapshot, config::Topics};
use todo_harness::{
    Daprd, DaprdOptions, ensure_kafka, lookup,
    recorder::{Recorder, publisher},
    unique,
};
use todo_proto::{
    to_timestamp,
    todo::{
        events::v1::{OccurrenceRequested, TaskEvent, TaskEventKind},
        v1::{Frequency, Priority, Recurrence, Task, TaskStatus},
    },
};
use todo_topology::{event_types, topics};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// How many probes ready the dead-letter topic (keys spread over its partitions: with 3
/// partitions, the chance that one gets none of 24 keys is 3 · (2/3)^24 ≈ 2e-5).
const PROBES: usize = 24;
/// The CloudEvent type of those probes.
const PROBE_TYPE: &str = "test.probe";

pub use todo_harness::{
    Tokens,
    recorder::{Received, WAIT},
};

/// A TCP forwarder on a port known now, to a port known later.
///
/// The service needs its sidecar's gRPC address in its configuration, but the harness picks
/// daprd's ports when it starts it, and daprd starts only once the app serves. The app is
/// configured with the forwarder's port; the forwarder learns daprd's port when daprd is up.
/// It only relays bytes (the publisher dials lazily, so no call crosses it before then).
async fn forwarder() -> (u16, watch::Sender<Option<u16>>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = watch::channel(None);
    let h = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let mut rx = rx.clone();
            tokio::spawn(async move {
                let Ok(target) = rx.wait_for(Option::is_some).await.map(|t| t.unwrap()) else {
                    return;
                };
                let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    (port, tx, h)
}

/// The service's configuration as a test gives it: through the same parser as `main`.
pub fn config(vars: &[(&str, &str)]) -> Config {
    // One exporter per process, on a fixed port: off unless a test asks for it.
    let defaults = [("APP_ADDR", "127.0.0.1:0"), ("METRICS_ADDR", "off")];
    Config::from_lookup(lookup(vars, &defaults)).unwrap()
}

/// Everything one test needs, under its own topic prefix and app ids.
pub struct Stack {
    pub topics: Topics,
    pub app: Option<App>,
    /// Records `<prefix>.task-occurrences` and `<prefix>.task-events-dlq`, undecoded.
    pub recorder: Recorder,
    publisher: Publisher,
    // Kept alive for the test; killed when dropped.
    _sidecars: Vec<Daprd>,
    _tasks: Vec<JoinHandle<()>>,
}

impl Stack {
    pub async fn start(tokens: Tokens) -> Self {
        todo_telemetry::init("info");
        ensure_kafka().await.unwrap();
        let prefix = unique("rts");
        let (fwd_port, fwd_target, fwd_task) = forwarder().await;
        let endpoint = format!("http://127.0.0.1:{fwd_port}");
        let (app_token, dapr_token) = tokens.pair();
        let mut vars = vec![
            (topics::PREFIX_VAR, prefix.as_str()),
            ("DAPR_GRPC_ENDPOINT", endpoint.as_str()),
        ];
        if let (Some(a), Some(d)) = (&app_token, &dapr_token) {
            vars.push(("APP_API_TOKEN", a));
            vars.push(("DAPR_API_TOKEN", d));
        }
        let config = config(&vars);
        let topics = config.common.topics();
        let recorded = [
            topics.task_occurrences.clone(),
            topics.task_events_dead_letter.clone(),
        ];

        // The three sidecars start in parallel: each takes a second or two.
        let service = async {
            let app = recurring_task_service::build(config).await.unwrap();
            let mut opts = DaprdOptions::new(unique("rts-app"), Some(app.addr.port()));
            opts.app_api_token = app_token.clone();
            opts.dapr_api_token = dapr_token.clone();
            let sidecar = Daprd::start(opts).await.unwrap();
            fwd_target.send_replace(Some(sidecar.grpc_port));
            (app, sidecar)
        };
        let ((app, app_sidecar), publisher, recorder) = tokio::join!(
            service,
            publisher("rts-pub"),
            Recorder::start("rts-rec", &recorded, None)
        );
        let (pub_sidecar, publisher) = publisher.unwrap();
        let stack = Self {
            topics,
            app: Some(app),
            recorder: recorder.unwrap(),
            publisher,
            _sidecars: vec![app_sidecar, pub_sidecar],
            _tasks: vec![fwd_task],
        };
        stack.ready_dead_letter_topic().await;
        stack
    }

    /// Publishes [`PROBES`] probes on the dead-letter topic, each tried until Kafka takes it,
    /// so that every partition of the new topic has its leader before the service's sidecar
    /// sends its first dead letter. daprd sends a dead letter once (the producer does not
    /// retry, `producerRetryMax: 0`), and one sent while a new topic's leader is still being
    /// elected is lost ("Tried to send a message to a replica that is not the leader": CI at
    /// 83c25ea). The probes are recorded like any dead letter; [`Stack::dead_letters`]
    /// leaves them out.
    async fn ready_dead_letter_topic(&self) {
        for k in 0..PROBES {
            let probe = OutgoingEvent {
                id: uuid::Uuid::now_v7().to_string(),
                topic: self.topics.task_events_dead_letter.clone(),
                event_type: PROBE_TYPE.to_owned(),
                key: format!("probe-{k}"),
                data: b"probe".to_vec(),
            };
            let deadline = tokio::time::Instant::now() + WAIT;
            while let Err(e) = self.publisher.publish(&probe).await {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the dead-letter topic took no probe in {WAIT:?}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    pub fn app(&self) -> &App {
        self.app.as_ref().unwrap()
    }

    /// Publishes bytes on `<prefix>.task-events` as task-service does (type, key = user id).
    pub async fn publish_bytes(&self, event_type: &str, key: &str, data: Vec<u8>) {
        self.publisher
            .publish(&OutgoingEvent {
                id: uuid::Uuid::now_v7().to_string(),
                topic: self.topics.task_events.clone(),
                event_type: event_type.to_owned(),
                key: key.to_owned(),
                data,
            })
            .await
            .unwrap();
    }

    /// Publishes a task event under its kind's CloudEvent type.
    pub async fn publish(&self, e: &TaskEvent) {
        let event_type = match TaskEventKind::try_from(e.kind).unwrap() {
            TaskEventKind::Created => event_types::TASK_CREATED,
            TaskEventKind::Updated => event_types::TASK_UPDATED,
            TaskEventKind::Completed => event_types::TASK_COMPLETED,
            TaskEventKind::Reopened => event_types::TASK_REOPENED,
            TaskEventKind::Deleted => event_types::TASK_DELETED,
            TaskEventKind::Unspecified => panic!("no type for an unspecified kind"),
        };
        self.publish_bytes(event_type, &e.user_id, e.encode_to_vec())
            .await;
    }

    /// The first `n` occurrence requests, decoded, after checking their CloudEvent type.
    pub async fn occurrences(&self, n: usize) -> Vec<OccurrenceRequested> {
        self.recorder
            .inbox
            .wait_for(&self.topics.task_occurrences, n)
            .await
            .into_iter()
            .map(|(ty, bytes)| {
                assert_eq!(ty, event_types::OCCURRENCE_REQUESTED);
                OccurrenceRequested::decode(bytes.as_slice()).unwrap()
            })
            .collect()
    }

    /// The first `n` dead letters: (CloudEvent type, bytes).
    pub async fn dead_letters(&self, n: usize) -> Vec<Received> {
        self.recorder
            .inbox
            .wait_for(&self.topics.task_events_dead_letter, n + PROBES)
            .await
            .into_iter()
            .filter(|(ty, _)| ty != PROBE_TYPE)
            .collect()
    }

    /// Waits until the service has answered `n` deliveries.
    pub async fn handled(&self, n: u64) -> StatsSnapshot {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let s = self.app().stats();
            if s.handled() >= n {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited {WAIT:?} for {n} answers, got {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the service gracefully; fails if that takes long.
    pub async fn shutdown(&mut self) {
        let app = self.app.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), app.shutdown())
            .await
            .expect("graceful shutdown within 10 s")
            .unwrap();
    }
}

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

pub fn daily() -> Recurrence {
    Recurrence {
        frequency: Frequency::Daily as i32,
        ..Recurrence::default()
    }
}

/// The first task of a series, as task-service stores it (series id = its own id).
pub fn task(user: &str, recurrence: Option<Recurrence>) -> Task {
    let id = uuid::Uuid::now_v7().to_string();
    Task {
        series_id: if recurrence.is_some() {
            id.clone()
        } else {
            String::new()
        },
        id,
        user_id: user.to_owned(),
        title: "Water the plants 🌱".to_owned(),
        description: "and the garden".to_owned(),
        status: TaskStatus::Open as i32,
        priority: Priority::High as i32,
        tags: vec!["home".to_owned()],
        due_time: Some(to_timestamp(at("2030-01-01T08:00:00Z"))),
        time_zone: "Europe/Berlin".to_owned(),
        recurrence,
        create_time: Some(to_timestamp(Utc::now())),
        update_time: Some(to_timestamp(Utc::now())),
        etag: "\"1\"".to_owned(),
        ..Task::default()
    }
}

/// The event task-service publishes when `task` is completed.
pub fn completed(mut task: Task) -> TaskEvent {
    let now = Utc::now();
    task.status = TaskStatus::Completed as i32;
    task.complete_time = Some(to_timestamp(now));
    task.update_time = Some(to_timestamp(now));
    task.etag = "\"2\"".to_owned();
    TaskEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: Some(to_timestamp(now)),
        user_id: task.user_id.clone(),
        kind: TaskEventKind::Completed as i32,
        task: Some(task),
        changed_fields: vec!["status".to_owned()],
        actor: "user:test".into(),
    }
}
