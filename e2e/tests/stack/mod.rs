//! What the end-to-end tests share: a service built by the function its `main` calls, from
//! the run's variables, with a sidecar of its own.
#![allow(dead_code, clippy::unwrap_used)]

use std::{fmt::Debug, future::Future, net::SocketAddr};

use todo_harness::{Daprd, DaprdOptions, free_port, unique};
use todo_service::cli::ServiceConfig;
use todo_topology::topics;

/// The variables of a service in a run: any free port, no metrics listener, its sidecar's
/// gRPC port, the run's topic prefix; `own` adds to them or overrides them.
pub fn vars(
    sidecar_port: u16,
    prefix: &str,
    own: &[(&str, &str)],
) -> impl Fn(&str) -> Option<String> + use<> {
    let mut all: Vec<(String, String)> = vec![
        ("APP_ADDR".into(), "127.0.0.1:0".into()),
        ("METRICS_ADDR".into(), "off".into()),
        ("DAPR_GRPC_PORT".into(), sidecar_port.to_string()),
        (topics::PREFIX_VAR.into(), prefix.to_owned()),
    ];
    all.extend(own.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    move |k| {
        all.iter()
            .rev()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
    }
}

/// Reads `C` from [`vars`], builds the service with `build`, then starts its sidecar (app
/// id `<app_id_prefix>-<hex>`) for the app at `addr(&app)`.
pub async fn start<C, A, E, Fut>(
    app_id_prefix: &str,
    prefix: &str,
    own: &[(&str, &str)],
    build: impl FnOnce(C) -> Fut,
    addr: impl Fn(&A) -> SocketAddr,
) -> (A, Daprd)
where
    C: ServiceConfig,
    E: Debug,
    Fut: Future<Output = Result<A, E>>,
{
    start_as(unique(app_id_prefix), prefix, own, build, addr).await
}

/// [`start`] with the sidecar's app id exactly `app_id` (for a component scoped to it).
pub async fn start_as<C, A, E, Fut>(
    app_id: String,
    prefix: &str,
    own: &[(&str, &str)],
    build: impl FnOnce(C) -> Fut,
    addr: impl Fn(&A) -> SocketAddr,
) -> (A, Daprd)
where
    C: ServiceConfig,
    E: Debug,
    Fut: Future<Output = Result<A, E>>,
{
    let port = free_port().unwrap();
    let config = C::from_lookup(vars(port, prefix, own)).unwrap();
    let app = build(config).await.unwrap();
    let mut opts = DaprdOptions::new(app_id, Some(addr(&app).port()));
    opts.grpc_port = Some(port);
    (app, Daprd::start(opts).await.unwrap())
}

/// The README's walkthrough through the Task API as `user`: create "buy milk" (low, tagged
/// home), retitle it "buy oat milk" at high priority, complete, reopen, delete. Returns the
/// task as each of the first four calls answered (the delete answers nothing).
pub async fn walkthrough(
    api: &mut todo_proto::todo::v1::task_service_client::TaskServiceClient<
        tonic::transport::Channel,
    >,
    user: &str,
) -> [todo_proto::todo::v1::Task; 4] {
    use todo_proto::todo::v1::{
        CompleteTaskRequest, CreateTaskRequest, DeleteTaskRequest, Priority, ReopenTaskRequest,
        Task, UpdateTaskRequest,
    };
    fn as_user<T>(user: &str, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert("x-user-id", user.parse().unwrap());
        r
    }
    let created = api
        .create_task(as_user(
            user,
            CreateTaskRequest {
                task: Some(Task {
                    title: "buy milk".into(),
                    priority: Priority::Low as i32,
                    tags: vec!["home".into()],
                    ..Task::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let updated = api
        .update_task(as_user(
            user,
            UpdateTaskRequest {
                task: Some(Task {
                    id: created.id.clone(),
                    etag: created.etag.clone(),
                    title: "buy oat milk".into(),
                    priority: Priority::High as i32,
                    ..Task::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["title".into(), "priority".into()],
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let completed = api
        .complete_task(as_user(
            user,
            CompleteTaskRequest {
                id: created.id.clone(),
                etag: updated.etag.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let reopened = api
        .reopen_task(as_user(
            user,
            ReopenTaskRequest {
                id: created.id.clone(),
                etag: completed.etag.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    api.delete_task(as_user(
        user,
        DeleteTaskRequest {
            id: created.id.clone(),
            etag: reopened.etag.clone(),
        },
    ))
    .await
    .unwrap();
    [created, updated, completed, reopened]
}
