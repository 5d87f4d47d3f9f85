//! task-service: the Task API over gRPC, persisted with sea-orm on SQLite or PostgreSQL.

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod occurrences;
pub mod outbox;
pub mod reminders;
pub mod tasks;

pub use app::{App, build};
pub use config::Config;
