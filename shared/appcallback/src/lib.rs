//! Dapr's `AppCallback` protocol for topic subscriptions, with typed handlers.
//!
//! A service builds [`Subscriptions`] from typed routes (topic, CloudEvent type, protobuf
//! message, dead-letter topic) and serves [`AppCallbackService`]'s tonic servers on its app
//! port. The runtime knows nothing of the messages it routes.

mod auth;
mod envelope;
mod routes;
mod service;

pub use auth::ApiTokenLayer;
pub use routes::{Event, Outcome, RAW_PAYLOAD, Route, Subscriptions, SubscriptionsBuilder};
pub use service::AppCallbackService;

/// Dapr's generated AppCallback protocol types, re-exported for callers and tests.
pub use dapr::dapr::proto::runtime::v1 as proto;

/// The gRPC services [`AppCallbackService`] serves (its three servers).
pub const SERVICE_NAMES: [&str; 3] = [
    <proto::app_callback_server::AppCallbackServer<AppCallbackService> as tonic::server::NamedService>::NAME,
    <proto::app_callback_health_check_server::AppCallbackHealthCheckServer<AppCallbackService> as tonic::server::NamedService>::NAME,
    <proto::app_callback_alpha_server::AppCallbackAlphaServer<AppCallbackService> as tonic::server::NamedService>::NAME,
];

/// The header daprd sends on every call to the app when `APP_API_TOKEN` is set.
pub const APP_API_TOKEN_HEADER: &str = "dapr-api-token";
