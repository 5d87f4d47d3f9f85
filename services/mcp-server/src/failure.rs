//! A failed call to task-service as a tool error the model can act on: the argument named
//! (from google.rpc BadRequest field violations), never a protocol error.

use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use crate::words::BadArgument;

/// Why a tool could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolFailure {
    #[error("invalid argument {0}")]
    Bad(#[from] BadArgument),
    #[error("{0}")]
    Refused(String),
}

/// The tool argument a Task field is given as (`due_time` is `due`, `recurrence` is
/// `repeat`); others keep their name.
fn argument_of(task_field: &str) -> &str {
    let field = task_field.strip_prefix("task.").unwrap_or(task_field);
    match field {
        "due_time" => "due",
        "recurrence" => "repeat",
        f if f.starts_with("recurrence.") => "repeat",
        f => f,
    }
}

/// `status` from task-service as said to a model; `at` is the argument path of the item the
/// call was for (`tasks[2]`, or empty for a single-item tool).
pub fn from_status(status: &Status, at: &str) -> ToolFailure {
    from_service_status(status, at, "task-service")
}

/// [`from_status`] for an answer of `service` (audit-service, notification-service): an
/// outage or a refusal names the service that answered.
pub fn from_service_status(status: &Status, at: &str, service: &str) -> ToolFailure {
    let path = |field: &str| {
        if at.is_empty() {
            field.to_owned()
        } else {
            format!("{at}.{field}")
        }
    };
    match status.code() {
        Code::InvalidArgument => {
            let violations = status
                .get_error_details()
                .bad_request()
                .map(|b| b.field_violations.clone())
                .unwrap_or_default();
            match violations.first() {
                Some(v) => {
                    let others: Vec<String> = violations[1..]
                        .iter()
                        .map(|v| format!("{}: {}", path(argument_of(&v.field)), v.description))
                        .collect();
                    let mut reason = v.description.clone();
                    if !others.is_empty() {
                        reason.push_str(&format!(" (also {})", others.join("; ")));
                    }
                    BadArgument::new(path(argument_of(&v.field)), reason).into()
                }
                None => ToolFailure::Refused(format!("invalid argument: {}", status.message())),
            }
        }
        Code::NotFound => ToolFailure::Refused(format!(
            "not found: {} (no such task of yours; list_tasks shows your task ids)",
            if at.is_empty() { "id" } else { at }
        )),
        Code::Aborted | Code::FailedPrecondition => ToolFailure::Refused(format!(
            "the task changed meanwhile ({}); get_task and try again",
            status.message()
        )),
        Code::Unauthenticated | Code::PermissionDenied => ToolFailure::Refused(format!(
            "{service} refused the caller's identity: {}",
            status.message()
        )),
        Code::Unavailable | Code::DeadlineExceeded => ToolFailure::Refused(format!(
            "{service} is unavailable right now ({}); retrying later is safe",
            status.message()
        )),
        _ => ToolFailure::Refused(format!(
            "{service} failed: {:?} {}",
            status.code(),
            status.message()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::ErrorDetails;

    /// Regression: the history and notification tools said "task-service is unavailable"
    /// when audit-service or notification-service was.
    #[test]
    fn an_outage_names_the_service_that_answered() {
        let down = Status::unavailable("connection refused");
        let said = from_service_status(&down, "", "notification-service").to_string();
        assert!(
            said.starts_with("notification-service is unavailable"),
            "{said}"
        );
        let refused = Status::unauthenticated("token expired");
        let said = from_service_status(&refused, "id", "audit-service").to_string();
        assert!(said.starts_with("audit-service refused"), "{said}");
        assert!(
            from_status(&down, "")
                .to_string()
                .starts_with("task-service")
        );
    }

    #[test]
    fn field_violations_name_the_tool_argument() {
        let status = Status::with_error_details(
            Code::InvalidArgument,
            "invalid task",
            ErrorDetails::with_bad_request_violation("due_time", "not a valid timestamp"),
        );
        assert_eq!(
            from_status(&status, "tasks[1]"),
            ToolFailure::Bad(BadArgument::new("tasks[1].due", "not a valid timestamp"))
        );
        let status = Status::with_error_details(
            Code::InvalidArgument,
            "invalid task",
            ErrorDetails::with_bad_request_violation("title", "must not be empty"),
        );
        assert_eq!(
            from_status(&status, "").to_string(),
            "invalid argument title: must not be empty"
        );
    }

    #[test]
    fn not_found_says_so() {
        let f = from_status(&Status::not_found("task"), "ids[0]");
        assert!(f.to_string().starts_with("not found: ids[0]"), "{f}");
    }
}
