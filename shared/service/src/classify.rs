//! What the request log calls a failure.

use tower_http::classify::{GrpcCode, GrpcErrorsAsFailures};

/// The service's faults (INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED, …) are failures, logged
/// at ERROR. An answer about the caller's request (a task that does not exist, a field that
/// is invalid, a stale etag, missing credentials) is the service working: a client polling
/// for a task not created yet must not flood the log.
pub fn callers_mistakes_are_answers() -> GrpcErrorsAsFailures {
    [
        GrpcCode::Cancelled,
        GrpcCode::InvalidArgument,
        GrpcCode::NotFound,
        GrpcCode::AlreadyExists,
        GrpcCode::PermissionDenied,
        GrpcCode::FailedPrecondition,
        GrpcCode::Aborted,
        GrpcCode::OutOfRange,
        GrpcCode::Unauthenticated,
    ]
    .into_iter()
    .fold(
        GrpcErrorsAsFailures::new(),
        GrpcErrorsAsFailures::with_success,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tower_http::classify::{ClassifiedResponse, ClassifyResponse};

    use super::callers_mistakes_are_answers;

    /// Whether the request log calls an answer with this `grpc-status` a success.
    fn is_success(code: u16) -> bool {
        let response = http::Response::builder()
            .header("grpc-status", code.to_string())
            .body(())
            .unwrap();
        match callers_mistakes_are_answers().classify_response(&response) {
            ClassifiedResponse::Ready(result) => result.is_ok(),
            ClassifiedResponse::RequiresEos(_) => panic!("a trailers-only answer is final"),
        }
    }

    #[test]
    fn a_callers_mistake_is_an_answer_and_a_fault_is_a_failure() {
        // OK, INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ABORTED, UNAUTHENTICATED
        for code in [0, 3, 5, 9, 10, 16] {
            assert!(is_success(code), "{code}");
        }
        // UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE, DATA_LOSS
        for code in [2, 4, 8, 13, 14, 15] {
            assert!(!is_success(code), "{code}");
        }
    }
}
