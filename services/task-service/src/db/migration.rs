//! Schema migrations, applied at start and by `task-service migrate`.

use sea_orm_migration::{prelude::*, schema::*};
use todo_service::db::{CreateTables, EntityTable, NewTable};

use super::entities::{outbox, reminder, tombstone, user_change};

todo_service::migrator!(pub Migrator: [
    M0001_CREATE_TASKS,
    M0002_CREATE_OUTBOX,
    M0003_CREATE_REMINDERS,
    M0004_ADD_SERIES_START,
    M0005_ADD_DEFAULT_REMINDERS,
    M0006_CREATE_TOMBSTONES,
    M0007_CREATE_USER_CHANGES,
    M0008_INDEX_REMINDERS_BY_TASK_AND_STATE,
]);

#[derive(DeriveIden, Clone, Copy)]
enum Tasks {
    Table,
    Id,
    UserId,
    Title,
    Description,
    Status,
    Priority,
    Tags,
    DueTime,
    DueSort,
    TimeZone,
    Recurrence,
    Reminders,
    SeriesId,
    ParentTaskId,
    OccurrenceIndex,
    CreateTime,
    UpdateTime,
    CompleteTime,
    Version,
    RequestId,
    SeriesStart,
    DefaultReminders,
}

#[derive(DeriveIden, Clone, Copy)]
enum TaskTags {
    Table,
    TaskId,
    Tag,
    UserId,
}

/// Every query is scoped to one user and pages in one of three orders; a retried
/// CreateTask finds the task its first attempt made.
const TASKS: NewTable<Tasks> = NewTable {
    table: Tasks::Table,
    define: |t| {
        t.col(uuid(Tasks::Id).primary_key())
            .col(string(Tasks::UserId))
            .col(text(Tasks::Title))
            .col(text(Tasks::Description))
            .col(small_integer(Tasks::Status))
            .col(small_integer(Tasks::Priority))
            .col(text(Tasks::Tags))
            .col(big_integer_null(Tasks::DueTime))
            .col(big_integer(Tasks::DueSort))
            .col(string(Tasks::TimeZone))
            .col(blob_null(Tasks::Recurrence))
            .col(blob(Tasks::Reminders))
            .col(uuid_null(Tasks::SeriesId))
            .col(uuid_null(Tasks::ParentTaskId))
            .col(integer(Tasks::OccurrenceIndex))
            .col(big_integer(Tasks::CreateTime))
            .col(big_integer(Tasks::UpdateTime))
            .col(big_integer_null(Tasks::CompleteTime))
            .col(big_integer(Tasks::Version))
            .col(string_null(Tasks::RequestId))
    },
    indexes: &[
        (
            "ix_tasks_user_create",
            false,
            &[Tasks::UserId, Tasks::CreateTime, Tasks::Id],
        ),
        (
            "ix_tasks_user_due",
            false,
            &[Tasks::UserId, Tasks::DueSort, Tasks::Id],
        ),
        (
            "ix_tasks_user_priority",
            false,
            &[Tasks::UserId, Tasks::Priority, Tasks::Id],
        ),
        (
            "ux_tasks_user_request",
            true,
            &[Tasks::UserId, Tasks::RequestId],
        ),
    ],
};

const TASK_TAGS: NewTable<TaskTags> = NewTable {
    table: TaskTags::Table,
    define: |t| {
        t.col(uuid(TaskTags::TaskId))
            .col(string(TaskTags::Tag))
            .col(string(TaskTags::UserId))
            .primary_key(Index::create().col(TaskTags::TaskId).col(TaskTags::Tag))
            .foreign_key(
                ForeignKey::create()
                    .from(TaskTags::Table, TaskTags::TaskId)
                    .to(Tasks::Table, Tasks::Id)
                    .on_delete(ForeignKeyAction::Cascade),
            )
    },
    indexes: &[(
        "ix_task_tags_user_tag",
        false,
        &[TaskTags::UserId, TaskTags::Tag],
    )],
};

const M0001_CREATE_TASKS: CreateTables = CreateTables {
    name: "m0001_create_tasks",
    tables: &[&TASKS, &TASK_TAGS],
};

/// The transactional outbox: events written in the same transaction as the change.
const M0002_CREATE_OUTBOX: CreateTables = CreateTables {
    name: "m0002_create_outbox",
    tables: &[&EntityTable::new(outbox::Entity)],
};

/// The durable reminder schedule; the scheduler's query takes the earliest pending
/// reminders.
const M0003_CREATE_REMINDERS: CreateTables = CreateTables {
    name: "m0003_create_reminders",
    tables: &[&EntityTable {
        entity: reminder::Entity,
        indexes: &[
            (
                "ix_reminders_state_at",
                false,
                &[reminder::Column::State, reminder::Column::RemindAt],
            ),
            ("ix_reminders_task", false, &[reminder::Column::TaskId]),
        ],
    }],
};

/// A migration that adds one column to `tasks` (and drops it on the way down).
struct AddTaskColumn {
    /// The name recorded in `seaql_migrations`: never changed once released.
    name: &'static str,
    column: Tasks,
    def: fn() -> ColumnDef,
}

impl MigrationName for AddTaskColumn {
    fn name(&self) -> &str {
        self.name
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddTaskColumn {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let mut column = (self.def)();
        m.alter_table(
            Table::alter()
                .table(Tasks::Table)
                .add_column(&mut column)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Tasks::Table)
                .drop_column(self.column)
                .to_owned(),
        )
        .await
    }
}

/// The due time a recurring series counts from (`Task.series_start_time`). Existing rows
/// keep NULL: their next occurrence counts from their own due time, as before.
const M0004_ADD_SERIES_START: AddTaskColumn = AddTaskColumn {
    name: "m0004_add_series_start",
    column: Tasks::SeriesStart,
    def: || big_integer_null(Tasks::SeriesStart),
};

/// Whether a task's reminders are the service's defaults (`tasks.default_reminders`).
/// Existing rows get false: their reminders stay what is stored, as before (a task created
/// before this migration without a due time does not gain defaults with one).
const M0005_ADD_DEFAULT_REMINDERS: AddTaskColumn = AddTaskColumn {
    name: "m0005_add_default_reminders",
    column: Tasks::DefaultReminders,
    def: || boolean(Tasks::DefaultReminders).default(false).to_owned(),
};

/// The ids of deleted tasks, so a deleted occurrence is never created again.
const M0006_CREATE_TOMBSTONES: CreateTables = CreateTables {
    name: "m0006_create_tombstones",
    tables: &[&EntityTable::new(tombstone::Entity)],
};

/// Each user's change counter: the `user_seq` of their last change (watch cursors).
const M0007_CREATE_USER_CHANGES: CreateTables = CreateTables {
    name: "m0007_create_user_changes",
    tables: &[&EntityTable::new(user_change::Entity)],
};

/// A task's pending reminders (`task_id = ? AND state = ?`, on every change of a task with a
/// due time) by an index on both columns. With `ix_reminders_task` on `task_id` alone,
/// SQLite's planner, without statistics, took `ix_reminders_state_at` for `state = ?` and
/// walked every pending reminder of every user for each change (~1 ms per change with
/// 4,000 pending, growing with them).
struct M0008IndexRemindersByTaskAndState;

const M0008_INDEX_REMINDERS_BY_TASK_AND_STATE: M0008IndexRemindersByTaskAndState =
    M0008IndexRemindersByTaskAndState;

impl MigrationName for M0008IndexRemindersByTaskAndState {
    fn name(&self) -> &str {
        "m0008_index_reminders_by_task_and_state"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0008IndexRemindersByTaskAndState {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name("ix_reminders_task_state")
                .table(reminder::Entity)
                .col(reminder::Column::TaskId)
                .col(reminder::Column::State)
                .to_owned(),
        )
        .await?;
        m.drop_index(
            Index::drop()
                .name("ix_reminders_task")
                .table(reminder::Entity)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name("ix_reminders_task")
                .table(reminder::Entity)
                .col(reminder::Column::TaskId)
                .to_owned(),
        )
        .await?;
        m.drop_index(
            Index::drop()
                .name("ix_reminders_task_state")
                .table(reminder::Entity)
                .to_owned(),
        )
        .await
    }
}
