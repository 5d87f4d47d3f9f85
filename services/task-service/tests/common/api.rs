//! What the Task API tests share: request builders and readers of answers.

use prost_types::Timestamp;
use todo_proto::todo::v1::{CreateTaskRequest, ListTasksRequest, Task};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::{TestApp, as_user};

pub fn new_task(title: &str) -> Task {
    Task {
        title: title.into(),
        ..Task::default()
    }
}

pub fn create(task: Task) -> CreateTaskRequest {
    CreateTaskRequest {
        task: Some(task),
        ..CreateTaskRequest::default()
    }
}

pub fn ts(seconds: i64) -> Timestamp {
    Timestamp { seconds, nanos: 0 }
}

/// The fields named by an INVALID_ARGUMENT's BadRequest details.
pub fn violated_fields(s: &Status) -> Vec<String> {
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    s.get_details_bad_request()
        .expect("BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

pub async fn count(app: &TestApp, user: &str) -> usize {
    count_with(&app.client().await, user).await
}

/// How many tasks `user` has (one page: tests make fewer than 1,000), through `client`.
pub async fn count_with(
    client: &todo_proto::todo::v1::task_service_client::TaskServiceClient<
        tonic::transport::Channel,
    >,
    user: &str,
) -> usize {
    let r = client
        .clone()
        .list_tasks(as_user(
            user,
            ListTasksRequest {
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    r.tasks.len()
}
