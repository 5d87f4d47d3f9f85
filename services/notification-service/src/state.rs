//! The state store client lives in `dapr-sidecar`, on the shared sidecar channel.

pub use dapr_sidecar::state::*;
