//! The one mapping of an unexpected error to a gRPC status.

use std::fmt::Display;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// INTERNAL for an error the caller can do nothing about, with an error id that is logged
/// together with the error and returned to the caller (in the message and as
/// `google.rpc.RequestInfo`), so a caller can quote it and an operator can find it.
pub fn internal(error: &dyn Display, what: &str) -> Status {
    let id = uuid::Uuid::now_v7().to_string();
    tracing::error!(error_id = %id, error = %error, "{what}");
    Status::with_error_details(
        Code::Internal,
        format!("{what}; error id {id}"),
        ErrorDetails::with_request_info(id, ""),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_internal_error_carries_the_id_it_logged() {
        let status = internal(&"disk on fire", "the task database failed");
        assert_eq!(status.code(), Code::Internal);
        let info = status.get_details_request_info().unwrap();
        assert!(status.message().ends_with(&info.request_id), "{status:?}");
        assert!(
            !status.message().contains("disk on fire"),
            "no internals leak"
        );
    }
}
