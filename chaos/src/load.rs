//! The load driver: many users changing tasks through the Task API of both task-service
//! replicas, each request written to the ledger with what the API answered.

use std::{collections::HashMap, time::Duration};

use chrono::Utc;
use rand::{Rng, SeedableRng, rngs::StdRng};
use todo_proto::{
    prost_types::FieldMask,
    to_timestamp,
    todo::v1::{
        CompleteTaskRequest, CreateTaskRequest, DeleteTaskRequest, Frequency, GetTaskRequest,
        ListTasksRequest, Priority, Recurrence, Reminder, ReopenTaskRequest, Task, TaskStatus,
        UpdateTaskRequest, reminder::When, task_service_client::TaskServiceClient,
    },
};
use tonic::{Code, transport::Channel};

/// What a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Create,
    Update,
    Complete,
    Reopen,
    Delete,
}

/// What the API told the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// OK: the change must be there, with its events.
    Acked,
    /// A definite refusal (INVALID_ARGUMENT, NOT_FOUND, ABORTED, FAILED_PRECONDITION, …):
    /// nothing may have been written.
    Rejected(Code),
    /// No answer, or one that does not say (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, …):
    /// the change may or may not have happened.
    Unknown(Code),
}

/// One request of the ledger.
#[derive(Debug, Clone)]
pub struct Mutation {
    pub user: String,
    pub op: Op,
    /// The task (for a create: the id the API answered, empty while unknown).
    pub task_id: String,
    /// The etag the API answered (empty for a delete or without an answer).
    pub etag: String,
    /// The answered task is recurring (a completion must produce one next occurrence).
    pub recurring: bool,
    pub outcome: Outcome,
}

/// Whether an error code says the request was refused before anything was written.
fn definite(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::Aborted
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::OutOfRange
    )
}

fn outcome_of<T>(r: &Result<T, tonic::Status>) -> Outcome {
    match r {
        Ok(_) => Outcome::Acked,
        Err(s) if definite(s.code()) => Outcome::Rejected(s.code()),
        Err(s) => Outcome::Unknown(s.code()),
    }
}

/// What a user believes about one of their tasks.
#[derive(Debug, Clone)]
struct Local {
    etag: String,
    open: bool,
    /// An unanswered request touched it: read it again before using it.
    dirty: bool,
}

/// A create that got no answer: sent again with the same `request_id` (idempotent).
#[derive(Debug, Clone)]
struct PendingCreate {
    request: CreateTaskRequest,
}

/// One simulated user.
struct User {
    name: String,
    rng: StdRng,
    tasks: HashMap<String, Local>,
    pending: Vec<PendingCreate>,
    ledger: Vec<Mutation>,
    clients: Vec<TaskServiceClient<Channel>>,
    counter: u64,
}

/// How long the API may take to answer one request before the driver gives up on it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A Task API client of `url` that connects lazily and reconnects after a replica restart.
pub fn client(url: &str) -> anyhow::Result<TaskServiceClient<Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(1))
        .timeout(REQUEST_TIMEOUT)
        .connect_lazy();
    Ok(TaskServiceClient::new(channel))
}

fn as_user<T>(user: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = user.parse() {
        r.metadata_mut().insert("x-user-id", v);
    }
    r
}

impl User {
    fn api(&mut self) -> TaskServiceClient<Channel> {
        let i = self.rng.random_range(0..self.clients.len());
        self.clients[i].clone()
    }

    fn record(&mut self, op: Op, task_id: &str, etag: &str, recurring: bool, outcome: Outcome) {
        self.ledger.push(Mutation {
            user: self.name.clone(),
            op,
            task_id: task_id.to_owned(),
            etag: etag.to_owned(),
            recurring,
            outcome,
        });
    }

    fn new_create(&mut self) -> CreateTaskRequest {
        self.counter += 1;
        let now = Utc::now();
        let roll = self.rng.random_range(0..100u32);
        let mut task = Task {
            title: format!("{} task {}", self.name, self.counter),
            priority: self.rng.random_range(1..5),
            tags: vec!["chaos".into()],
            ..Task::default()
        };
        let mut no_defaults = false;
        match roll {
            // A reminder (or two) due during the run.
            0..25 => {
                task.due_time = Some(to_timestamp(now + chrono::Duration::hours(2)));
                let n = self.rng.random_range(1..3);
                task.reminders = (0..n)
                    .map(|_| Reminder {
                        when: Some(When::At(to_timestamp(
                            now + chrono::Duration::milliseconds(
                                self.rng.random_range(3_000..30_000),
                            ),
                        ))),
                    })
                    .collect();
            }
            // A recurring task: every completion must give exactly one next occurrence.
            25..45 => {
                task.due_time = Some(to_timestamp(now + chrono::Duration::hours(1)));
                task.recurrence = Some(Recurrence {
                    frequency: Frequency::Daily as i32,
                    interval: 1,
                    ..Recurrence::default()
                });
                no_defaults = true;
            }
            // Due soon, on the default reminders: the soon-due rule fires one now.
            45..55 => {
                task.due_time = Some(to_timestamp(
                    now + chrono::Duration::minutes(self.rng.random_range(10..50)),
                ));
            }
            // Due tomorrow on the defaults (planned, not due during the run).
            55..70 => {
                task.due_time = Some(to_timestamp(now + chrono::Duration::days(2)));
            }
            _ => {}
        }
        CreateTaskRequest {
            task: Some(task),
            request_id: uuid::Uuid::new_v4().to_string(),
            no_default_reminders: no_defaults,
        }
    }

    async fn create(&mut self, req: CreateTaskRequest) {
        let r = self
            .api()
            .create_task(as_user(&self.name, req.clone()))
            .await;
        let outcome = outcome_of(&r);
        match r {
            Ok(t) => {
                let t = t.into_inner();
                self.record(Op::Create, &t.id, &t.etag, t.recurrence.is_some(), outcome);
                self.remember(&t);
            }
            Err(_) => {
                self.record(Op::Create, "", "", false, outcome);
                if matches!(outcome, Outcome::Unknown(_)) {
                    self.pending.push(PendingCreate { request: req });
                }
            }
        }
    }

    fn remember(&mut self, t: &Task) {
        self.tasks.insert(
            t.id.clone(),
            Local {
                etag: t.etag.clone(),
                open: t.status() != TaskStatus::Completed,
                dirty: false,
            },
        );
    }

    /// A task of the user's to act on (open or completed as asked), read again first if an
    /// unanswered request touched it.
    async fn pick(&mut self, open: Option<bool>) -> Option<String> {
        let ids: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, l)| open.is_none_or(|o| l.open == o || l.dirty))
            .map(|(id, _)| id.clone())
            .collect();
        if ids.is_empty() {
            return None;
        }
        let id = ids[self.rng.random_range(0..ids.len())].clone();
        if self.tasks.get(&id).is_some_and(|l| l.dirty) {
            match self
                .api()
                .get_task(as_user(&self.name, GetTaskRequest { id: id.clone() }))
                .await
            {
                Ok(t) => self.remember(&t.into_inner()),
                Err(s) if s.code() == Code::NotFound => {
                    self.tasks.remove(&id);
                    return None;
                }
                Err(_) => return None,
            }
        }
        let l = self.tasks.get(&id)?;
        open.is_none_or(|o| l.open == o).then_some(id)
    }

    /// After an answer: keep the model right.
    fn after(&mut self, id: &str, r: Result<Task, tonic::Status>, op: Op) {
        let outcome = outcome_of(&r);
        match r {
            Ok(t) => {
                self.record(op, id, &t.etag, t.recurrence.is_some(), outcome);
                self.remember(&t);
            }
            Err(s) => {
                self.record(op, id, "", false, outcome);
                if s.code() == Code::NotFound {
                    self.tasks.remove(id);
                } else if let Some(l) = self.tasks.get_mut(id) {
                    l.dirty = true;
                }
            }
        }
    }

    async fn step(&mut self) {
        if let Some(p) = self.pending.pop() {
            return self.create(p.request).await;
        }
        let roll = self.rng.random_range(0..100u32);
        if self.tasks.len() < 3 || roll < 25 {
            let req = self.new_create();
            return self.create(req).await;
        }
        if self.counter.is_multiple_of(25) {
            self.refresh().await;
        }
        match roll {
            25..58 => {
                let Some(id) = self.pick(Some(true)).await else {
                    return;
                };
                self.counter += 1;
                let etag = self.tasks.get(&id).map(|l| l.etag.clone());
                let mut paths = vec!["title".to_owned()];
                let mut task = Task {
                    id: id.clone(),
                    etag: etag.unwrap_or_default(),
                    title: format!("{} edit {}", self.name, self.counter),
                    ..Task::default()
                };
                if self.rng.random_bool(0.3) {
                    task.priority = Priority::Urgent as i32;
                    paths.push("priority".into());
                }
                let req = UpdateTaskRequest {
                    task: Some(task),
                    update_mask: Some(FieldMask { paths }),
                };
                let r = self.api().update_task(as_user(&self.name, req)).await;
                self.after(&id, r.map(tonic::Response::into_inner), Op::Update);
            }
            58..80 => {
                let Some(id) = self.pick(Some(true)).await else {
                    return;
                };
                let etag = self
                    .tasks
                    .get(&id)
                    .map(|l| l.etag.clone())
                    .unwrap_or_default();
                let req = CompleteTaskRequest {
                    id: id.clone(),
                    etag,
                };
                let r = self.api().complete_task(as_user(&self.name, req)).await;
                self.after(&id, r.map(tonic::Response::into_inner), Op::Complete);
            }
            80..88 => {
                let Some(id) = self.pick(Some(false)).await else {
                    return;
                };
                let req = ReopenTaskRequest {
                    id: id.clone(),
                    etag: String::new(),
                };
                let r = self.api().reopen_task(as_user(&self.name, req)).await;
                self.after(&id, r.map(tonic::Response::into_inner), Op::Reopen);
            }
            _ => {
                let Some(id) = self.pick(None).await else {
                    return;
                };
                let req = DeleteTaskRequest {
                    id: id.clone(),
                    etag: String::new(),
                };
                let r = self.api().delete_task(as_user(&self.name, req)).await;
                let outcome = outcome_of(&r);
                self.record(Op::Delete, &id, "", false, outcome);
                match outcome {
                    Outcome::Acked => {
                        self.tasks.remove(&id);
                    }
                    Outcome::Rejected(Code::NotFound) => {
                        self.tasks.remove(&id);
                    }
                    _ => {
                        if let Some(l) = self.tasks.get_mut(&id) {
                            l.dirty = true;
                        }
                    }
                }
            }
        }
    }

    /// Lists the user's tasks (next occurrences included) into the model.
    async fn refresh(&mut self) {
        let req = ListTasksRequest {
            page_size: 200,
            ..ListTasksRequest::default()
        };
        if let Ok(list) = self.api().list_tasks(as_user(&self.name, req)).await {
            for t in list.into_inner().tasks {
                if !self.tasks.contains_key(&t.id) {
                    self.remember(&t);
                }
            }
        }
    }
}

/// The driver's knobs.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub seed: u64,
    pub users: usize,
    /// Requests per second for all users together.
    pub rate: f64,
    pub duration: Duration,
    pub run_id: String,
}

/// The name of user `i` of run `run_id`.
pub fn user_name(run_id: &str, i: usize) -> String {
    format!("{run_id}-u{i:03}")
}

/// Runs the users until `duration` is over; then sends again every create that got no
/// answer (same request id) until it is answered or `settle` runs out. Answers the ledger.
pub async fn run(
    cfg: LoadConfig,
    clients: Vec<TaskServiceClient<Channel>>,
    settle: Duration,
) -> Vec<Mutation> {
    let per_user = Duration::from_secs_f64(cfg.users as f64 / cfg.rate.max(0.1));
    let deadline = tokio::time::Instant::now() + cfg.duration;
    let handles: Vec<_> = (0..cfg.users)
        .map(|i| {
            let mut u = User {
                name: user_name(&cfg.run_id, i),
                rng: StdRng::seed_from_u64(cfg.seed ^ ((i as u64 + 1) << 32)),
                tasks: HashMap::new(),
                pending: Vec::new(),
                ledger: Vec::new(),
                clients: clients.clone(),
                counter: 0,
            };
            tokio::spawn(async move {
                // Spread the users over the first interval.
                let offset = u.rng.random_range(0.0..1.0) * per_user.as_secs_f64();
                tokio::time::sleep(Duration::from_secs_f64(offset)).await;
                let mut tick = tokio::time::interval(per_user);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while tokio::time::Instant::now() < deadline {
                    tick.tick().await;
                    u.step().await;
                }
                let settle_until = tokio::time::Instant::now() + settle;
                while let Some(p) = u.pending.pop() {
                    u.create(p.request).await;
                    if tokio::time::Instant::now() > settle_until {
                        break;
                    }
                    if !u.pending.is_empty() {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
                u.ledger
            })
        })
        .collect();
    let mut ledger = Vec::new();
    for h in handles {
        match h.await {
            Ok(l) => ledger.extend(l),
            Err(e) => eprintln!("chaos: a user's task failed: {e}"),
        }
    }
    ledger
}
