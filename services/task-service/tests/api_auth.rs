//! The Task API on SQLite and on PostgreSQL: every request is someone's (bearer tokens
//! checked, another user's task is NOT_FOUND).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use todo_harness::on_both_databases;

use prost_types::FieldMask;
use todo_proto::todo::v1::{
    CompleteTaskRequest, DeleteTaskRequest, GetTaskRequest, ListTasksRequest, ReopenTaskRequest,
    Task, UpdateTaskRequest,
};
use tonic::{Code, Request};

use common::{Backend, TestApp, api::*, as_user, token, token_with};

async fn missing_bad_or_expired_credentials_are_unauthenticated(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut c = app.client().await;
    let with_auth = |value: String| {
        let mut r = Request::new(ListTasksRequest::default());
        r.metadata_mut()
            .insert("authorization", value.parse().unwrap());
        r
    };
    let cases = vec![
        Request::new(ListTasksRequest::default()),
        with_auth("Bearer not.a.jwt".into()),
        with_auth(format!("Bearer {}", token("u", -120))),
        with_auth(format!(
            "Bearer {}",
            token_with("u", 3600, "another-secret-another-secret-0000")
        )),
        with_auth(format!("Basic {}", token("u", 3600))),
    ];
    for req in cases {
        let err = c.list_tasks(req).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }
    // A dev header is not accepted outside dev mode.
    let mut r = Request::new(ListTasksRequest::default());
    r.metadata_mut().insert("x-user-id", "u".parse().unwrap());
    assert_eq!(
        c.list_tasks(r).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

async fn another_users_task_is_not_found_on_every_rpc(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut c = app.client().await;
    let t = c
        .create_task(as_user("owner", create(new_task("mine"))))
        .await
        .unwrap()
        .into_inner();
    let id = t.id.clone();
    let codes = vec![
        c.get_task(as_user("eve", GetTaskRequest { id: id.clone() }))
            .await
            .unwrap_err()
            .code(),
        c.update_task(as_user(
            "eve",
            UpdateTaskRequest {
                task: Some(Task {
                    id: id.clone(),
                    title: "pwned".into(),
                    ..Task::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["title".into()],
                }),
            },
        ))
        .await
        .unwrap_err()
        .code(),
        c.complete_task(as_user(
            "eve",
            CompleteTaskRequest {
                id: id.clone(),
                etag: String::new(),
            },
        ))
        .await
        .unwrap_err()
        .code(),
        c.reopen_task(as_user(
            "eve",
            ReopenTaskRequest {
                id: id.clone(),
                etag: String::new(),
            },
        ))
        .await
        .unwrap_err()
        .code(),
        c.delete_task(as_user(
            "eve",
            DeleteTaskRequest {
                id: id.clone(),
                etag: String::new(),
            },
        ))
        .await
        .unwrap_err()
        .code(),
    ];
    assert!(codes.iter().all(|c| *c == Code::NotFound), "{codes:?}");
    assert_eq!(count(&app, "eve").await, 0);
    let still = c
        .get_task(as_user("owner", GetTaskRequest { id }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still, t);
}

on_both_databases!(2;
    missing_bad_or_expired_credentials_are_unauthenticated,
    another_users_task_is_not_found_on_every_rpc,
);
