//! recurring-task-service: a completed recurring task becomes a request for its next occurrence.
//!
//! Stateless. It subscribes to `task-events` (CloudEvent type `todo.task.completed.v1`; the
//! other task event types are acknowledged untouched) and publishes `OccurrenceRequested`
//! (`todo.occurrence.requested.v1`) on `task-occurrences`, keyed by the user id. The next
//! task's id is derived from its series and index ([`occurrence::occurrence_task_id`]), so a
//! redelivered completion requests the same task again and task-service creates it once.
//!
//! Answers: SUCCESS when published or when there is nothing to publish (one-off task, ended
//! series); DROP, with a log line saying why, for an event that can never succeed (it lands
//! on `task-events-dlq`); RETRY when publishing failed transiently.

pub mod app;
pub mod completions;
pub mod config;
pub mod occurrence;

pub use app::{App, build, shutdown_signal};
pub use config::Config;
