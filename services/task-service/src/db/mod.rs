//! The tasks database: connection (SQLite by default, PostgreSQL by URL) and migrations.

pub mod entities;
pub mod migration;

use sea_orm::{DatabaseConnection, DbErr};

pub use todo_service::db::writer;

/// Opens the tasks database at `url` and applies pending migrations (see
/// [`todo_service::db::connect`]).
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    todo_service::db::connect::<migration::Migrator>(url, max_connections).await
}
