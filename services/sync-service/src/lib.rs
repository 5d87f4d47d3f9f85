//! sync-service: live sync of each user's tasks to all their connected clients.
//!
//! Every replica consumes `task-updates` (`todo.task.changed.v1`, message
//! `todo.events.v1.TaskChanged`: the change with the full task and its number in the owner's
//! sequence of changes) through the broadcast pub/sub component, in a consumer group of its
//! own, so a client connected to any replica sees every change written through any
//! task-service replica. [`hub::Hub`] keeps, in memory, a bounded window of each user's
//! recent changes and fans each change out to that user's open streams;
//! `todo.sync.v1.SyncService/WatchTasks` ([`api`]) streams them, resumes from a cursor
//! without gap or duplicate while the window holds what the client missed, and says RESYNC
//! when it does not. The protocol is in docs/events.md.
//!
//! Answers to Dapr: SUCCESS for a change applied, held (waiting for an earlier one) or
//! already seen; the other task types acknowledged untouched; DROP for an event that can
//! never be placed (undecodable, no user, no sequence number).

pub mod api;
pub mod app;
pub mod config;
pub mod hub;
pub mod updates;

pub use app::{App, build, shutdown_signal};
pub use config::Config;
