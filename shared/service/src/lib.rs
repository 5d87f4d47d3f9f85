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

mod batch;
mod classify;
pub mod cli;
mod counters;
#[cfg(feature = "db")]
pub mod db;
mod errors;
pub mod paging;
mod rpc_metrics;
mod server;

/// Every service, and every benchmark that hosts one, allocates with mimalloc: in
/// `just bench-api` glibc's malloc and free were ~15 % of task-service's CPU per request
/// (`perf record`), most of it in many small, short-lived allocations (protobuf
/// messages, SQL values, rows). Defined once here, so no binary can forget it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use batch::{
    BulkCounters, PerKey, another_type_of_family, one_of_family_bulk, one_of_family_per_user,
    per_user,
};
pub use classify::callers_mistakes_are_answers;
pub use counters::{Counter, FamilyCounters, one_of_family};
pub use errors::internal;
pub use rpc_metrics::RpcMetricsLayer;
pub use server::{Counters, Running, Served, ServiceBuilder};

/// The service's one sidecar client (publisher and state store share its channel), from
/// `DAPR_GRPC_ENDPOINT`/`DAPR_GRPC_PORT` and `DAPR_API_TOKEN`, each call bounded by
/// `call_timeout`. Connects lazily, so the app can start before its sidecar.
pub fn sidecar(
    common: &todo_env::Common,
    call_timeout: std::time::Duration,
) -> Result<dapr_sidecar::Sidecar, dapr_sidecar::SidecarError> {
    dapr_sidecar::Sidecar::lazy(
        &dapr_sidecar::SidecarConfig::new(common.dapr_grpc_endpoint.clone())
            .api_token(common.dapr_api_token.clone())
            .call_timeout(call_timeout),
    )
}
pub use todo_env::shutdown_signal;
