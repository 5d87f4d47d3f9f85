//! Test support: the real pipe around notification-service, under a unique topic prefix,
//! with its own SQLite state store file.
//!
//! ```text
//! test --publish--> daprd(side) --> Kafka <prefix>.reminders --> daprd(app) --> notification-service --> Recorder
//!                                                      daprd(app) <--state API-- notification-service
//!                                   Kafka <prefix>.reminders-dlq (DROPs, by daprd(app)) --> daprd(side) --> Inbox
//! ```
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashSet,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use todo_service::cli::ServiceConfig as _;

use chrono::{DateTime, Utc};
use dapr_publisher::{OutgoingEvent, Publisher, PublisherConfig};
use notification_service::{
    App, Config,
    channel::{Channel, ChannelError},
    config::Topics,
    delivery_log::DeliveryLog,
    notification::Notification,
    reminders::StatsSnapshot,
    state::StateStore,
};
use prost::Message;
pub use todo_harness::Tokens;
use todo_harness::{
    Daprd, DaprdOptions, ensure_kafka, free_port, lookup,
    recorder::{Inbox, Recorder as SideApp},
    repo_root, unique,
};
use todo_proto::{
    to_timestamp,
    todo::{
        events::v1::ReminderEvent,
        notifications::v1::{
            ListNotificationsRequest, ListNotificationsResponse,
            notification_service_client::NotificationServiceClient,
        },
    },
};
use todo_topology::{app_ids, components::PUBSUB, event_types, topics};
use tokio::{sync::Notify, task::JoinHandle};

/// How long a test waits for something that normally takes a second or two.
pub const WAIT: Duration = Duration::from_secs(60);

/// The claim lease the services under test run with.
pub const CLAIM_LEASE_MS: &str = "3000";

/// A [`Channel`] that remembers what it delivered (and can be told to fail).
#[derive(Debug, Default)]
pub struct Recorder {
    delivered: Mutex<Vec<Notification>>,
    /// When each of `delivered` went out (wall clock).
    times: Mutex<Vec<DateTime<Utc>>>,
    changed: Notify,
    /// How many of the next deliveries fail.
    fail_next: AtomicUsize,
    /// How many failed.
    pub failed: AtomicUsize,
}

#[async_trait::async_trait]
impl Channel for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    async fn deliver(&self, n: &Notification) -> Result<(), ChannelError> {
        let fail = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |k| k.checked_sub(1))
            .is_ok();
        if fail {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(ChannelError {
                channel: "recorder".into(),
                reason: "told to fail".into(),
            });
        }
        self.delivered.lock().unwrap().push(n.clone());
        self.times.lock().unwrap().push(Utc::now());
        self.changed.notify_waiters();
        Ok(())
    }
}

impl Recorder {
    pub fn fail_next(&self, n: usize) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn all(&self) -> Vec<Notification> {
        self.delivered.lock().unwrap().clone()
    }

    /// When each delivery went out, in order.
    pub fn times(&self) -> Vec<DateTime<Utc>> {
        self.times.lock().unwrap().clone()
    }

    /// Waits until at least `n` notifications went out, failing after [`WAIT`].
    pub async fn wait_for(&self, n: usize) -> Vec<Notification> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.changed.notified();
            let got = self.all();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("waited {WAIT:?} for {n} notifications, got {}", got.len());
            }
        }
    }
}

/// Asserts that no reminder went out twice; returns the (user, reminder) pairs.
pub fn assert_unique(delivered: &[Notification]) -> HashSet<(String, String)> {
    let mut seen = HashSet::new();
    for n in delivered {
        assert!(
            seen.insert((n.user_id.clone(), n.reminder_id.clone())),
            "{}/{} delivered twice",
            n.user_id,
            n.reminder_id
        );
    }
    seen
}

/// What the side app received on the dead-letter topic: (CloudEvent type, bytes).
pub struct DeadLetters {
    inbox: Arc<Inbox>,
    topic: String,
}

impl DeadLetters {
    pub fn all(&self) -> Vec<(String, Vec<u8>)> {
        self.inbox.on(&self.topic)
    }

    pub async fn wait_for(&self, n: usize) -> Vec<(String, Vec<u8>)> {
        self.inbox.wait_for(&self.topic, n).await
    }
}

/// A copy of dapr-components/ in a temp folder, and a temp folder for its data.
pub struct Resources {
    pub components: tempfile::TempDir,
    /// Outside `components`: daprd watches that folder and reloads on every change there.
    pub data: tempfile::TempDir,
}

/// A copy of dapr-components/ whose notification state store is a SQLite file of its own,
/// loaded by the sidecars of `app_ids`. With `shared_keys`, every app id reads and writes
/// the same keys (`keyPrefix: name`), as replicas of one app id do.
pub fn resources(app_ids: &[&str], shared_keys: bool) -> Resources {
    let temp = |prefix: &str| tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let (components, data) = (temp("ns-components-"), temp("ns-data-"));
    let src = repo_root().join("dapr-components");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let mut text = std::fs::read_to_string(&path).unwrap();
        if path.file_name().unwrap() == "statestore-notifications.yaml" {
            let db = data.path().join("notifications.db");
            text = rewrite_store(&text, &db, app_ids, shared_keys);
        }
        std::fs::write(components.path().join(path.file_name().unwrap()), text).unwrap();
    }
    Resources { components, data }
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} in the component");
    text.replace(from, to)
}

fn rewrite_store(text: &str, db: &Path, app_ids: &[&str], shared_keys: bool) -> String {
    let mut text = replace_once(text, ".data/notifications.db", &db.display().to_string());
    let scopes: String = app_ids.iter().map(|a| format!("  - {a}\n")).collect();
    text = replace_once(
        &text,
        &format!("  - {}\n", app_ids::NOTIFICATION_SERVICE),
        &scopes,
    );
    if shared_keys {
        text = replace_once(
            &text,
            "    - name: busyTimeout\n",
            "    - name: keyPrefix\n      value: \"name\"\n    - name: busyTimeout\n",
        );
    }
    text
}

/// The service's configuration as a test gives it: through the same parser as `main`.
pub fn config(vars: &[(&str, &str)]) -> Config {
    // One exporter per process, on a fixed port: off unless a test asks for it.
    let defaults = [
        ("APP_ADDR", "127.0.0.1:0"),
        ("AUTH_MODE", "dev"),
        ("METRICS_ADDR", "off"),
    ];
    Config::from_lookup(lookup(vars, &defaults)).unwrap()
}

/// One notification-service with its sidecar.
pub struct Instance {
    pub app: Option<App>,
    /// `None` only while it is being replaced.
    pub sidecar: Option<Daprd>,
    pub config: Config,
    /// Answers of instances that were shut down, for [`Self::stats`].
    earlier: StatsSnapshot,
}

impl Instance {
    /// Builds the app (its sidecar's gRPC port chosen up front), then starts the sidecar.
    pub async fn start(
        prefix: &str,
        app_id: String,
        resources: &Path,
        channel: Arc<Recorder>,
        tokens: Tokens,
    ) -> Self {
        Self::start_with(prefix, app_id, resources, channel, tokens, &[]).await
    }

    /// [`Self::start`] with more configuration variables.
    pub async fn start_with(
        prefix: &str,
        app_id: String,
        resources: &Path,
        channel: Arc<Recorder>,
        tokens: Tokens,
        extra: &[(&str, &str)],
    ) -> Self {
        let grpc_port = free_port().unwrap();
        let grpc_port_s = grpc_port.to_string();
        let (app_token, dapr_token) = tokens.pair();
        let mut vars = vec![
            (topics::PREFIX_VAR, prefix),
            ("DAPR_GRPC_PORT", grpc_port_s.as_str()),
            // Short, so that a test waiting out a dead handling's claim stays short.
            ("NOTIFICATION_CLAIM_LEASE_MS", CLAIM_LEASE_MS),
        ];
        if let (Some(a), Some(d)) = (&app_token, &dapr_token) {
            vars.push(("APP_API_TOKEN", a));
            vars.push(("DAPR_API_TOKEN", d));
        }
        vars.extend_from_slice(extra);
        let config = config(&vars);
        let app = notification_service::build_with_channel(config.clone(), channel)
            .await
            .unwrap();
        let mut opts = DaprdOptions::new(app_id, Some(app.addr.port()));
        opts.resources_path = resources.to_owned();
        opts.grpc_port = Some(grpc_port);
        opts.app_api_token = app_token;
        opts.dapr_api_token = dapr_token;
        let sidecar = Daprd::start(opts).await.unwrap();
        Self {
            app: Some(app),
            sidecar: Some(sidecar),
            config,
            earlier: StatsSnapshot::default(),
        }
    }

    pub fn app(&self) -> &App {
        self.app.as_ref().unwrap()
    }

    /// The delivery log as the service sees it, through its sidecar's state API.
    pub fn delivery_log(&self) -> DeliveryLog {
        let c = &self.config;
        let store = StateStore::lazy(
            &c.common.dapr_grpc_endpoint,
            &c.state_store,
            c.common.dapr_api_token.as_deref(),
            c.state_timeout,
        )
        .unwrap();
        DeliveryLog::new(store, c.retention, c.list_max, c.claim_lease)
    }

    /// Every answer since the first start, across restarts.
    pub fn stats(&self) -> StatsSnapshot {
        add(self.earlier, self.app().stats())
    }

    /// Waits until this instance's answers satisfy `done`, failing after [`WAIT`].
    pub async fn stats_until(&self, done: impl Fn(&StatsSnapshot) -> bool) -> StatsSnapshot {
        stats_until(|| self.stats(), done).await
    }

    /// Stops the app gracefully and starts a new one on the same port (the sidecar stays,
    /// and retries what it could not deliver meanwhile).
    pub async fn restart(&mut self, channel: Arc<Recorder>) {
        let app = self.app.take().unwrap();
        let addr = app.addr;
        let stopped = tokio::time::timeout(Duration::from_secs(10), app.shutdown())
            .await
            .expect("graceful shutdown within 10 s")
            .unwrap();
        self.earlier = add(self.earlier, stopped);
        let mut config = self.config.clone();
        config.common.listen = addr;
        self.app = Some(
            notification_service::build_with_channel(config, channel)
                .await
                .unwrap(),
        );
    }

    /// Kills the sidecar (SIGKILL: no graceful shutdown, no final offset commit) and starts
    /// a new one with the same app id and ports. Kafka redelivers what was not committed.
    pub async fn kill_sidecar(&mut self) {
        let old = self.sidecar.take().unwrap();
        let options = old.options.clone();
        // Dropping a Daprd kills it.
        drop(old);
        // Until the old process is gone its ports are taken: try again shortly.
        let mut attempts = 0;
        let daprd = loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            match Daprd::start(options.clone()).await {
                Ok(d) => break d,
                Err(e) if attempts < 20 => {
                    attempts += 1;
                    tracing::info!(error = %e, "sidecar not restarted yet");
                }
                Err(e) => panic!("restarting the sidecar: {e}"),
            }
        };
        self.sidecar = Some(daprd);
    }

    /// A client of the Notification API.
    pub async fn client(&self) -> NotificationServiceClient<tonic::transport::Channel> {
        NotificationServiceClient::connect(format!("http://{}", self.app().addr))
            .await
            .unwrap()
    }

    /// One page of `user`'s notifications (dev mode: the `x-user-id` header).
    pub async fn list_page(
        &self,
        user: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<ListNotificationsResponse, tonic::Status> {
        let mut req = tonic::Request::new(ListNotificationsRequest {
            page_size,
            page_token: page_token.to_owned(),
        });
        req.metadata_mut()
            .insert("x-user-id", user.parse().unwrap());
        self.client()
            .await
            .list_notifications(req)
            .await
            .map(tonic::Response::into_inner)
    }

    /// All of `user`'s notifications, page by page; checks that the pages do not overlap.
    pub async fn list_all(
        &self,
        user: &str,
        page_size: i32,
    ) -> Vec<todo_proto::todo::notifications::v1::Notification> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let page = self.list_page(user, page_size, &token).await.unwrap();
            assert!(page.notifications.len() <= page_size as usize);
            out.extend(page.notifications);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let ids: HashSet<&str> = out.iter().map(|n| n.reminder_id.as_str()).collect();
        assert_eq!(ids.len(), out.len(), "pages overlap");
        out
    }
}

/// Polls `stats` until `done` holds of it, failing after [`WAIT`].
async fn stats_until(
    stats: impl Fn() -> StatsSnapshot,
    done: impl Fn(&StatsSnapshot) -> bool,
) -> StatsSnapshot {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = stats();
        if done(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {WAIT:?}, got {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn add(a: StatsSnapshot, b: StatsSnapshot) -> StatsSnapshot {
    StatsSnapshot {
        delivered: a.delivered + b.delivered,
        duplicates: a.duplicates + b.duplicates,
        not_ours: a.not_ours + b.not_ours,
        dropped: a.dropped + b.dropped,
        retried: a.retried + b.retried,
    }
}

/// Everything one test needs, under its own topic prefix, app ids and state store file.
pub struct Stack {
    pub topics: Topics,
    pub channel: Arc<Recorder>,
    pub dead: DeadLetters,
    /// The notification-service instances (two when testing replicas).
    pub instances: Vec<Instance>,
    publisher: Publisher,
    // Kept alive for the test; killed/removed when dropped.
    _side: SideApp,
    _resources: Resources,
}

impl Stack {
    /// One notification-service.
    pub async fn start(tokens: Tokens) -> Self {
        Self::start_many(1, tokens).await
    }

    /// `n` notification-services, each with its own app id (so each gets every event: they
    /// race on every reminder) sharing one delivery log.
    pub async fn start_many(n: usize, tokens: Tokens) -> Self {
        todo_telemetry::init("info");
        ensure_kafka().await.unwrap();
        let prefix = unique("ns");
        let topics = Topics::new(&prefix);
        let app_ids: Vec<String> = (0..n).map(|_| unique("ns-app")).collect();
        let id_refs: Vec<&str> = app_ids.iter().map(String::as_str).collect();
        let resources = resources(&id_refs, n > 1);
        let channel = Arc::new(Recorder::default());

        // A side app that publishes and records the dead-letter topic.
        let side = async {
            let dlq = [topics.reminders_dead_letter.clone()];
            let side = SideApp::start("ns-side", &dlq, None).await.unwrap();
            let publisher =
                Publisher::connect(&PublisherConfig::new(side.daprd.grpc_address(), PUBSUB))
                    .await
                    .unwrap();
            (side, publisher)
        };
        // The side app and the services start in parallel: each sidecar takes a second or two.
        let services = async {
            let mut v = Vec::new();
            for id in app_ids {
                v.push(
                    Instance::start(
                        &prefix,
                        id,
                        resources.components.path(),
                        channel.clone(),
                        tokens,
                    )
                    .await,
                );
            }
            v
        };
        let ((side, publisher), instances) = tokio::join!(side, services);
        Self {
            dead: DeadLetters {
                inbox: side.inbox.clone(),
                topic: topics.reminders_dead_letter.clone(),
            },
            topics,
            channel,
            instances,
            publisher,
            _side: side,
            _resources: resources,
        }
    }

    pub fn instance(&self) -> &Instance {
        &self.instances[0]
    }

    /// Publishes bytes on `<prefix>.reminders` as task-service does (type, key = user id).
    pub async fn publish_bytes(&self, event_type: &str, key: &str, data: Vec<u8>) {
        self.publisher
            .publish(&OutgoingEvent {
                id: uuid::Uuid::now_v7().to_string(),
                topic: self.topics.reminders.clone(),
                event_type: event_type.to_owned(),
                key: key.to_owned(),
                data,
            })
            .await
            .unwrap();
    }

    /// Publishes a due reminder.
    pub async fn publish_due(&self, e: &ReminderEvent) {
        self.publish_bytes(event_types::REMINDER_DUE, &e.user_id, e.encode_to_vec())
            .await;
    }

    /// Publishes due reminders in one bulk publish, so that they reach the service together
    /// (those of one partition in one bulk delivery).
    pub async fn publish_due_bulk(&self, events: &[ReminderEvent]) {
        let outgoing: Vec<OutgoingEvent> = events
            .iter()
            .map(|e| OutgoingEvent {
                id: uuid::Uuid::now_v7().to_string(),
                topic: self.topics.reminders.clone(),
                event_type: event_types::REMINDER_DUE.to_owned(),
                key: e.user_id.clone(),
                data: e.encode_to_vec(),
            })
            .collect();
        let outcome = self.publisher.publish_bulk(&outgoing).await.unwrap();
        assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    }

    /// Publishes `events` one after the other in a task of their own.
    pub fn publish_due_in_background(&self, events: Vec<ReminderEvent>) -> JoinHandle<()> {
        let publisher = self.publisher.clone();
        let topic = self.topics.reminders.clone();
        tokio::spawn(async move {
            for e in events {
                publisher
                    .publish(&OutgoingEvent {
                        id: uuid::Uuid::now_v7().to_string(),
                        topic: topic.clone(),
                        event_type: event_types::REMINDER_DUE.to_owned(),
                        key: e.user_id.clone(),
                        data: e.encode_to_vec(),
                    })
                    .await
                    .unwrap();
            }
        })
    }

    /// The answers of all instances together.
    pub fn stats(&self) -> StatsSnapshot {
        self.instances
            .iter()
            .map(Instance::stats)
            .fold(StatsSnapshot::default(), add)
    }

    /// Waits until the instances' answers satisfy `done`, failing after [`WAIT`].
    pub async fn stats_until(&self, done: impl Fn(&StatsSnapshot) -> bool) -> StatsSnapshot {
        stats_until(|| self.stats(), done).await
    }

    /// Waits until the instances together have answered `n` deliveries.
    pub async fn handled(&self, n: u64) -> StatsSnapshot {
        self.stats_until(|s| s.handled() >= n).await
    }
}

/// A due reminder for `user`, meant to fire `late_by` ago.
pub fn due(user: &str, late_by: Duration) -> ReminderEvent {
    let remind_at = Utc::now() - chrono::TimeDelta::from_std(late_by).unwrap();
    ReminderEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: Some(to_timestamp(Utc::now())),
        user_id: user.to_owned(),
        reminder_id: uuid::Uuid::new_v4().to_string(),
        task_id: uuid::Uuid::now_v7().to_string(),
        task_title: "Water the plants 🌱".to_owned(),
        due_time: Some(to_timestamp(remind_at + chrono::TimeDelta::hours(1))),
        remind_at: Some(to_timestamp(remind_at)),
        lateness: Some(prost_types::Duration {
            seconds: 0,
            nanos: 250_000_000,
        }),
        reason: String::new(),
        actor: "service:task-service".into(),
    }
}

pub fn instant(ts: &prost_types::Timestamp) -> DateTime<Utc> {
    todo_proto::from_timestamp(ts).unwrap()
}
