//! Domain errors of the Task API, and their one mapping to gRPC status codes.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::tasks::validate::FieldViolation;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    #[error("task {0} not found")]
    NotFound(String),
    #[error("the task changed since etag {given:?} (now {current:?})")]
    StaleEtag { given: String, current: String },
    #[error("the task was changed concurrently; retry")]
    Conflict,
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
}

impl From<Vec<FieldViolation>> for TaskError {
    fn from(v: Vec<FieldViolation>) -> Self {
        Self::Invalid(v)
    }
}

impl From<TaskError> for Status {
    fn from(e: TaskError) -> Self {
        match e {
            TaskError::Invalid(violations) => {
                let summary = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                let mut details = ErrorDetails::new();
                for v in violations {
                    details.add_bad_request_violation(v.field, v.description);
                }
                Status::with_error_details(Code::InvalidArgument, summary, details)
            }
            TaskError::NotFound(id) => Status::not_found(format!("task {id} not found")),
            e @ TaskError::StaleEtag { .. } => Status::aborted(e.to_string()),
            e @ TaskError::Conflict => Status::aborted(e.to_string()),
            TaskError::Database(db) => todo_service::db::status(&db, "the task database failed"),
        }
    }
}
