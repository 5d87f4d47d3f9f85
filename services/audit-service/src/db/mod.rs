//! The audit log's own database: connection (SQLite by default, PostgreSQL by URL),
//! migrations and the entry table.

pub mod migration;

use sea_orm::{DatabaseConnection, DbErr};

pub use todo_service::db::writer;

/// Opens the audit database at `url` and applies pending migrations.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    todo_service::db::connect::<migration::Migrator>(url, max_connections).await
}

/// One recorded event: append-only, one row per event id.
pub mod entry {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_entries")]
    pub struct Model {
        /// Arrival order (not the order of events: lists sort by `occurred_at`, `event_id`).
        #[sea_orm(primary_key)]
        pub seq: i64,
        /// The event's own id (UUIDv7): unique.
        pub event_id: String,
        /// The CloudEvent type.
        pub event_type: String,
        pub task_id: String,
        pub user_id: String,
        /// Microseconds since the epoch.
        pub occurred_at: i64,
        /// Microseconds since the epoch.
        pub recorded_at: i64,
        pub actor: String,
        /// W3C trace id of the CloudEvent (32 hex digits), or empty.
        pub trace_id: String,
        /// The CloudEvent id Dapr gave the publish that carried it.
        pub cloud_event_id: String,
        /// The event as published (protobuf): the snapshot updates are compared with.
        #[sea_orm(column_type = "Blob")]
        pub payload: Vec<u8>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
