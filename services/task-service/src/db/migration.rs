//! Schema migrations, applied at start and by `task-service migrate`.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(M0001CreateTasks),
            Box::new(M0002CreateOutbox),
            Box::new(M0003CreateReminders),
            Box::new(M0004_ADD_SERIES_START),
            Box::new(M0005_ADD_DEFAULT_REMINDERS),
            Box::new(M0006CreateTombstones),
            Box::new(M0007CreateUserChanges),
        ]
    }
}

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

#[derive(DeriveIden)]
enum TaskTags {
    Table,
    TaskId,
    Tag,
    UserId,
}

struct M0001CreateTasks;

impl MigrationName for M0001CreateTasks {
    fn name(&self) -> &str {
        "m0001_create_tasks"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0001CreateTasks {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Tasks::Table)
                .if_not_exists()
                .col(uuid(Tasks::Id).primary_key())
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
                .to_owned(),
        )
        .await?;
        // Every query is scoped to one user and pages in one of three orders.
        for (name, col) in [
            ("ix_tasks_user_create", Tasks::CreateTime),
            ("ix_tasks_user_due", Tasks::DueSort),
            ("ix_tasks_user_priority", Tasks::Priority),
        ] {
            m.create_index(
                Index::create()
                    .if_not_exists()
                    .name(name)
                    .table(Tasks::Table)
                    .col(Tasks::UserId)
                    .col(col)
                    .col(Tasks::Id)
                    .to_owned(),
            )
            .await?;
        }
        // A retried CreateTask finds the task its first attempt made.
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("ux_tasks_user_request")
                .table(Tasks::Table)
                .col(Tasks::UserId)
                .col(Tasks::RequestId)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(TaskTags::Table)
                .if_not_exists()
                .col(uuid(TaskTags::TaskId))
                .col(string(TaskTags::Tag))
                .col(string(TaskTags::UserId))
                .primary_key(Index::create().col(TaskTags::TaskId).col(TaskTags::Tag))
                .foreign_key(
                    ForeignKey::create()
                        .from(TaskTags::Table, TaskTags::TaskId)
                        .to(Tasks::Table, Tasks::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("ix_task_tags_user_tag")
                .table(TaskTags::Table)
                .col(TaskTags::UserId)
                .col(TaskTags::Tag)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(TaskTags::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(Tasks::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Seq,
    EventId,
    Topic,
    EventType,
    PartitionKey,
    Payload,
    CreatedAt,
}

/// The transactional outbox: events written in the same transaction as the change.
struct M0002CreateOutbox;

impl MigrationName for M0002CreateOutbox {
    fn name(&self) -> &str {
        "m0002_create_outbox"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0002CreateOutbox {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Outbox::Table)
                .if_not_exists()
                .col(big_pk_auto(Outbox::Seq))
                .col(uuid(Outbox::EventId))
                .col(string(Outbox::Topic))
                .col(string(Outbox::EventType))
                .col(string(Outbox::PartitionKey))
                .col(blob(Outbox::Payload))
                .col(big_integer(Outbox::CreatedAt))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Outbox::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Reminders {
    Table,
    ReminderId,
    TaskId,
    UserId,
    TaskTitle,
    DueTime,
    RemindAt,
    State,
}

/// The durable reminder schedule.
struct M0003CreateReminders;

impl MigrationName for M0003CreateReminders {
    fn name(&self) -> &str {
        "m0003_create_reminders"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0003CreateReminders {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Reminders::Table)
                .if_not_exists()
                .col(uuid(Reminders::ReminderId).primary_key())
                .col(uuid(Reminders::TaskId))
                .col(string(Reminders::UserId))
                .col(text(Reminders::TaskTitle))
                .col(big_integer_null(Reminders::DueTime))
                .col(big_integer(Reminders::RemindAt))
                .col(small_integer(Reminders::State))
                .to_owned(),
        )
        .await?;
        // The scheduler's query: the earliest pending reminders.
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("ix_reminders_state_at")
                .table(Reminders::Table)
                .col(Reminders::State)
                .col(Reminders::RemindAt)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("ix_reminders_task")
                .table(Reminders::Table)
                .col(Reminders::TaskId)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Reminders::Table).to_owned())
            .await
    }
}

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

#[derive(DeriveIden)]
enum TaskTombstones {
    Table,
    TaskId,
    UserId,
    DeletedAt,
}

/// The ids of deleted tasks, so a deleted occurrence is never created again.
struct M0006CreateTombstones;

impl MigrationName for M0006CreateTombstones {
    fn name(&self) -> &str {
        "m0006_create_tombstones"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0006CreateTombstones {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(TaskTombstones::Table)
                .if_not_exists()
                .col(uuid(TaskTombstones::TaskId).primary_key())
                .col(string(TaskTombstones::UserId))
                .col(big_integer(TaskTombstones::DeletedAt))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(TaskTombstones::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum UserChanges {
    Table,
    UserId,
    Seq,
}

/// Each user's change counter: the `user_seq` of their last change (watch cursors).
struct M0007CreateUserChanges;

impl MigrationName for M0007CreateUserChanges {
    fn name(&self) -> &str {
        "m0007_create_user_changes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0007CreateUserChanges {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(UserChanges::Table)
                .if_not_exists()
                .col(string(UserChanges::UserId).primary_key())
                .col(big_integer(UserChanges::Seq))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(UserChanges::Table).to_owned())
            .await
    }
}
