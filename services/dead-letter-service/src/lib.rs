//! dead-letter-service: the dead letters an operator can see, replay and discard.
//!
//! It subscribes, through Dapr, to every `<topic>-dlq` topic (where daprd puts what a
//! consumer answered DROP to, or gave up retrying), records each message once (its
//! original topic, CloudEvent id, type and source, when it arrived, the payload as
//! published and, when it decodes through the descriptor set, as JSON), and serves
//! `todo.deadletters.v1.DeadLetterService` to admins: list, show, replay (the original
//! bytes republished through Dapr to the original topic with the original CloudEvent id,
//! type and partition key) and discard.

pub mod api;
pub mod app;
pub mod config;
pub mod db;
pub mod intake;
pub mod payload;

pub use app::{App, build};
pub use config::Config;
pub use todo_env::shutdown_signal;
