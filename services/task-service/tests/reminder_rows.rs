//! The reminder rows a task keeps through its changes, on SQLite and on PostgreSQL: a change
//! of a task that cannot have pending reminders (completed, or with neither a due time nor
//! reminders of its own) does not look them up (`reminders::replan_from`). These tests walk
//! tasks through every kind of change and check, after each, that the rows pending are the
//! ones its reminders plan and that no task pends reminders that `may_have_pending` denies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use todo_harness::on_both_databases;

use prost_types::{Duration, FieldMask};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use task_service::{
    db::entities::{reminder, task},
    reminders::{PENDING, may_have_pending},
};
use todo_proto::todo::v1::{
    CompleteTaskRequest, DeleteTaskRequest, Reminder, ReopenTaskRequest, Task, UpdateTaskRequest,
    reminder::When, task_service_client::TaskServiceClient,
};
use tonic::transport::Channel;
use uuid::Uuid;

use common::{Backend, TestApp, api::*, as_user};

/// Seconds from now, as a timestamp.
fn in_secs(secs: i64) -> prost_types::Timestamp {
    todo_proto::to_timestamp(chrono::Utc::now() + chrono::Duration::seconds(secs))
}

fn before_due(secs: i64) -> Reminder {
    Reminder {
        when: Some(When::BeforeDue(Duration {
            seconds: secs,
            nanos: 0,
        })),
    }
}

/// A task due in two days with a reminder an hour before: one reminder pending.
fn due_in_two_days(title: &str) -> Task {
    Task {
        title: title.into(),
        due_time: Some(in_secs(2 * 86_400)),
        reminders: vec![before_due(3600)],
        ..Task::default()
    }
}

/// One user's calls to the Task API, each expected to succeed.
struct Caller {
    c: TaskServiceClient<Channel>,
    user: &'static str,
}

impl Caller {
    async fn create(&mut self, task: Task) -> Task {
        let req = as_user(self.user, create(task));
        self.c.create_task(req).await.unwrap().into_inner()
    }

    /// Sets the fields `paths` of task `id` to those of `patch`.
    async fn update(&mut self, id: &str, paths: &[&str], patch: Task) {
        let req = UpdateTaskRequest {
            task: Some(Task {
                id: id.to_owned(),
                ..patch
            }),
            update_mask: Some(FieldMask {
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            }),
        };
        self.c.update_task(as_user(self.user, req)).await.unwrap();
    }

    async fn complete(&mut self, id: &str) {
        let req = CompleteTaskRequest {
            id: id.to_owned(),
            etag: String::new(),
        };
        self.c.complete_task(as_user(self.user, req)).await.unwrap();
    }

    async fn reopen(&mut self, id: &str) {
        let req = ReopenTaskRequest {
            id: id.to_owned(),
            etag: String::new(),
        };
        self.c.reopen_task(as_user(self.user, req)).await.unwrap();
    }

    async fn delete(&mut self, id: &str) {
        let req = DeleteTaskRequest {
            id: id.to_owned(),
            etag: String::new(),
        };
        self.c.delete_task(as_user(self.user, req)).await.unwrap();
    }
}

async fn caller(app: &TestApp, user: &'static str) -> Caller {
    Caller {
        c: app.client().await,
        user,
    }
}

/// The task's stored row and its pending reminders, after checking that pending reminders
/// exist only where `may_have_pending` says they may.
async fn rows(app: &TestApp, id: &str) -> (Option<task::Model>, Vec<reminder::Model>) {
    let db = &app.app.as_ref().unwrap().db;
    let id = Uuid::parse_str(id).unwrap();
    let row = task::Entity::find_by_id(id).one(db).await.unwrap();
    let pending = reminder::Entity::find()
        .filter(reminder::Column::TaskId.eq(id))
        .filter(reminder::Column::State.eq(PENDING))
        .all(db)
        .await
        .unwrap();
    if !pending.is_empty() {
        let row = row.as_ref().expect("pending reminders of a deleted task");
        assert!(
            may_have_pending(row),
            "{} pending reminders of a task that may have none: {row:?}",
            pending.len()
        );
    }
    (row, pending)
}

async fn pending_follow_every_change(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut alice = caller(&app, "rows-alice").await;

    // Due in two days with a reminder an hour before: one pending.
    let t = alice.create(due_in_two_days("pay rent")).await;
    let (_, pending) = rows(&app, &t.id).await;
    assert_eq!(pending.len(), 1);

    // Renamed: the pending reminder carries the new title.
    let patch = Task {
        title: "pay the rent".into(),
        ..Task::default()
    };
    alice.update(&t.id, &["title"], patch).await;
    let (_, pending) = rows(&app, &t.id).await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].task_title, "pay the rent");

    // Due time and reminders removed: nothing pending, and none may be.
    alice
        .update(&t.id, &["due_time", "reminders"], Task::default())
        .await;
    let (row, pending) = rows(&app, &t.id).await;
    assert!(pending.is_empty(), "{pending:?}");
    assert!(!may_have_pending(&row.unwrap()));

    // Renamed and completed without a due time: still nothing (these changes skip the lookup).
    let patch = Task {
        title: "rent, someday".into(),
        ..Task::default()
    };
    alice.update(&t.id, &["title"], patch).await;
    assert!(rows(&app, &t.id).await.1.is_empty());

    // A due time and a reminder again: pending again.
    let patch = due_in_two_days("");
    alice.update(&t.id, &["due_time", "reminders"], patch).await;
    assert_eq!(rows(&app, &t.id).await.1.len(), 1);

    // Completed: nothing pending, none may be. Reopened (a change from a completed task,
    // which skips the lookup): the reminder cancelled by the completion is planned again.
    alice.complete(&t.id).await;
    let (row, pending) = rows(&app, &t.id).await;
    assert!(pending.is_empty(), "{pending:?}");
    assert!(!may_have_pending(&row.unwrap()));
    alice.reopen(&t.id).await;
    assert_eq!(rows(&app, &t.id).await.1.len(), 1);

    // Deleted: nothing pending.
    alice.delete(&t.id).await;
    let (row, pending) = rows(&app, &t.id).await;
    assert!(row.is_none());
    assert!(pending.is_empty(), "{pending:?}");
}

async fn absolute_reminders_without_a_due_time_are_kept_current(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut bob = caller(&app, "rows-bob").await;
    let at = Reminder {
        when: Some(When::At(in_secs(86_400))),
    };
    let t = bob
        .create(Task {
            title: "call mum".into(),
            reminders: vec![at],
            ..Task::default()
        })
        .await;
    let (row, pending) = rows(&app, &t.id).await;
    assert_eq!(pending.len(), 1);
    assert!(row.unwrap().due_time.is_none());

    // No due time, but a reminder of its own: a rename is looked up and reaches the row.
    let patch = Task {
        title: "call mum back".into(),
        ..Task::default()
    };
    bob.update(&t.id, &["title"], patch).await;
    let (_, pending) = rows(&app, &t.id).await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].task_title, "call mum back");

    // Completing cancels it.
    bob.complete(&t.id).await;
    assert!(rows(&app, &t.id).await.1.is_empty());
}

/// Regression (PostgreSQL): CompleteTask read a task's pending reminders without locking
/// them while the scheduler was firing one (claimed `FOR UPDATE SKIP LOCKED`, marked fired,
/// not yet committed). Its cancel then updated nothing once the scheduler committed, but
/// its `reminder.cancelled` event was written anyway: the reminder was both due and
/// cancelled. The scheduler's part is played here by a transaction of the test's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_fired_while_its_task_completes_is_not_also_cancelled() {
    use prost::Message;
    use sea_orm::{QuerySelect, TransactionTrait, sea_query::LockType};
    use task_service::{db::entities::outbox, reminders::FIRED};
    use todo_proto::todo::events::v1::ReminderEvent;

    let app = TestApp::start(Backend::Postgres).await;
    let mut carol = caller(&app, "rows-carol").await;
    let t = carol.create(due_in_two_days("renew passport")).await;
    let (_, pending) = rows(&app, &t.id).await;
    assert_eq!(pending.len(), 1);
    let fired = pending[0].reminder_id;

    let db = app.app.as_ref().unwrap().db.clone();
    let scheduler = db.begin().await.unwrap();
    reminder::Entity::find_by_id(fired)
        .lock(LockType::Update)
        .one(&scheduler)
        .await
        .unwrap()
        .unwrap();
    reminder::Entity::update_many()
        .col_expr(
            reminder::Column::State,
            sea_orm::sea_query::Expr::value(FIRED),
        )
        .filter(reminder::Column::ReminderId.eq(fired))
        .exec(&scheduler)
        .await
        .unwrap();
    let id = t.id.clone();
    let completing = tokio::spawn(async move { carol.complete(&id).await });
    // Long enough for CompleteTask to reach the reminder's row lock.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    scheduler.commit().await.unwrap();
    completing.await.unwrap();

    let cancelled: Vec<Uuid> = outbox::Entity::find()
        .filter(outbox::Column::EventType.eq(todo_topology::event_types::REMINDER_CANCELLED))
        .all(&db)
        .await
        .unwrap()
        .iter()
        .map(|row| {
            Uuid::parse_str(&ReminderEvent::decode(&row.payload[..]).unwrap().reminder_id).unwrap()
        })
        .collect();
    assert!(
        !cancelled.contains(&fired),
        "cancelled as well: {cancelled:?}"
    );
    let state = reminder::Entity::find_by_id(fired)
        .one(&db)
        .await
        .unwrap()
        .unwrap()
        .state;
    assert_eq!(state, FIRED);
}

on_both_databases!(2;
    pending_follow_every_change,
    absolute_reminders_without_a_due_time_are_kept_current,
);
