//! One way to build a service of the Todo system.
//!
//! A service hands [`ServiceBuilder`] its own gRPC services and its AppCallback routes; it
//! gets back a [`Running`] server with the same behaviour as every other service: the same
//! tower stack (request tracing that tells a caller's mistake from a fault, a concurrency
//! limit, a timeout, the `dapr-api-token` check on Dapr's callbacks, per-RPC Prometheus
//! metrics), TCP_NODELAY, HTTP/2 keepalives, `grpc.health.v1` and server reflection (v1 and
//! v1alpha) limited to what this binary serves, and a graceful shutdown that reports
//! NOT_SERVING, stops accepting and drains in-flight requests and event handlers.
//!
//! Errors are mapped to gRPC statuses once, here: [`internal`] gives an unexpected error an
//! id that is logged and returned, and (feature `db`) [`db::status`] maps a database error
//! by kind.

mod classify;
pub mod cli;
#[cfg(feature = "db")]
pub mod db;
mod errors;
mod rpc_metrics;
mod server;

pub use classify::callers_mistakes_are_answers;
pub use errors::internal;
pub use rpc_metrics::RpcMetricsLayer;
pub use server::{Running, ServeConfig, ServiceBuilder};
pub use todo_env::shutdown_signal;
