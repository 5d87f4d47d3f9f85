//! audit-service: a complete, queryable audit trail of every task change.
//!
//! It takes every event on `task-events` (created, updated, completed, reopened, deleted)
//! and on `reminders` (scheduled, due, cancelled) in bulk from its sidecar, stores each
//! as one append-only entry of its own database (one transaction per bulk delivery,
//! exactly one entry per event id), and serves `todo.audit.v1.AuditService` to each
//! task's owner: the history of one task, oldest first, with the before and after values
//! of every update, and the caller's activity in a time window.

pub mod api;
pub mod app;
pub mod config;
pub mod db;
pub mod entry;
pub mod ingest;
pub mod prune;

pub use app::{App, build};
pub use config::Config;
pub use todo_env::shutdown_signal;
