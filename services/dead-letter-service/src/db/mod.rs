//! The dead letters' own database: connection (SQLite by default, PostgreSQL by URL),
//! migrations and the table.

pub mod migration;

use sea_orm::{DatabaseConnection, DbErr};

pub use todo_service::db::writer;

/// Opens the database at `url` and applies pending migrations.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    todo_service::db::connect::<migration::Migrator>(url, max_connections).await
}

/// Where a dead letter stands (stored as text).
pub mod status {
    pub const PENDING: &str = "pending";
    pub const REPLAYED: &str = "replayed";
    pub const DISCARDED: &str = "discarded";
}

/// One dead-lettered message: one row per (dead-letter topic, CloudEvent id).
pub mod dead_letter {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "dead_letters")]
    pub struct Model {
        /// UUIDv7, given when it first arrived.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// The original topic (with the deployment's prefix).
        pub topic: String,
        pub dead_letter_topic: String,
        pub cloud_event_id: String,
        pub event_type: String,
        pub source: String,
        /// W3C traceparent, or empty.
        pub traceparent: String,
        /// The partition key a replay uses (the user id of the decoded payload), or empty.
        pub partition_key: String,
        /// The payload as published.
        #[sea_orm(column_type = "Blob")]
        pub payload: Vec<u8>,
        /// Proto3 JSON of the payload, or empty when it did not decode.
        #[sea_orm(column_type = "Text")]
        pub payload_json: String,
        /// Why it did not decode, or empty.
        #[sea_orm(column_type = "Text")]
        pub decode_error: String,
        /// Microseconds since the epoch.
        pub first_seen_at: i64,
        pub last_seen_at: i64,
        pub times_dead_lettered: i32,
        /// `pending`, `replayed` or `discarded` (see [`super::status`]).
        pub status: String,
        pub replay_count: i32,
        pub last_replayed_at: Option<i64>,
        pub replayed_by: String,
        pub discarded_at: Option<i64>,
        pub discarded_by: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
