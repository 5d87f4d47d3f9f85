//! sea-orm entities of the tasks database. Instants are microseconds since the Unix epoch
//! (BIGINT): exact, portable between SQLite and PostgreSQL, and cheap to order by.

/// One task, owned by one user.
pub mod task {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tasks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: String,
        pub title: String,
        pub description: String,
        pub status: i16,
        pub priority: i16,
        /// The tags as a JSON array (the task_tags table indexes them for filtering).
        pub tags: String,
        pub due_time: Option<i64>,
        /// `due_time`, or i64::MAX when there is none: a non-null key for ordering and paging.
        pub due_sort: i64,
        pub time_zone: String,
        /// The encoded `todo.v1.Recurrence`, when the task repeats.
        pub recurrence: Option<Vec<u8>>,
        /// The encoded reminders (`todo.v1.Reminder`s, length-delimited).
        pub reminders: Vec<u8>,
        pub series_id: Option<Uuid>,
        pub parent_task_id: Option<Uuid>,
        pub occurrence_index: i32,
        pub create_time: i64,
        pub update_time: i64,
        pub complete_time: Option<i64>,
        /// Incremented on every change; the etag is derived from it.
        pub version: i64,
        /// The idempotency key of the CreateTask that made it.
        pub request_id: Option<String>,
        /// The due time the series counts its rhythm from (see `Task.series_start_time`).
        pub series_start: Option<i64>,
        /// The reminders are the service's defaults (filled in whenever the task has a due
        /// time, and subject to the soon-due rule); false when the caller chose them, or
        /// none at all (`no_default_reminders`).
        pub default_reminders: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// One row per (task, tag): what the `tag` filter of ListTasks looks up.
pub mod task_tag {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "task_tags")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub task_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub tag: String,
        pub user_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// An event waiting to be published (deleted once Dapr acknowledged it).
pub mod outbox {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        /// Insertion order: the relay publishes in this order.
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub event_id: Uuid,
        pub topic: String,
        pub event_type: String,
        /// The user id: the Kafka partition key.
        pub partition_key: String,
        /// The encoded protobuf event.
        #[sea_orm(column_type = "Blob")]
        pub payload: Vec<u8>,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The id of a deleted task: it stays deleted (a redelivered occurrence request for it
/// creates nothing).
pub mod tombstone {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "task_tombstones")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub task_id: Uuid,
        pub user_id: String,
        pub deleted_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Each user's change counter: the `user_seq` of their last task change.
pub mod user_change {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "user_changes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        pub seq: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A planned reminder of a task: pending until the scheduler fires or cancels it.
pub mod reminder {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "reminders")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub reminder_id: Uuid,
        pub task_id: Uuid,
        pub user_id: String,
        #[sea_orm(column_type = "Text")]
        pub task_title: String,
        pub due_time: Option<i64>,
        pub remind_at: i64,
        /// 0 pending, 1 fired, 2 cancelled.
        pub state: i16,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
