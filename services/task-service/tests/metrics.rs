//! The scaffold's per-RPC metrics on a live task-service: calls counted by method and code,
//! latencies as Prometheus histograms (buckets, so they aggregate across replicas).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use todo_proto::todo::v1::{CreateTaskRequest, GetTaskRequest, Task};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_counted_by_method_and_code_with_a_latency_histogram() {
    let dir = tempfile::tempdir().unwrap();
    let url = common::fresh_database(common::Backend::Sqlite, &dir).await;
    let metrics_addr: std::net::SocketAddr =
        format!("127.0.0.1:{}", todo_harness::free_port().unwrap())
            .parse()
            .unwrap();
    let mut config = common::config(&url, common::jwt_mode());
    config.common.metrics_addr = Some(metrics_addr);
    let app = task_service::build(config).await.unwrap();
    let mut client = todo_proto::todo::v1::task_service_client::TaskServiceClient::connect(
        format!("http://{}", app.addr),
    )
    .await
    .unwrap();

    let created = client
        .create_task(common::as_user(
            "alice",
            CreateTaskRequest {
                task: Some(Task {
                    title: "count me".into(),
                    ..Task::default()
                }),
                ..CreateTaskRequest::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..2 {
        let missing = client
            .get_task(common::as_user(
                "bob",
                GetTaskRequest {
                    id: created.id.clone(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
    }

    let body = scrape(metrics_addr).await;
    let line = |m: &str| {
        body.lines()
            .find(|l| l.starts_with(m))
            .unwrap_or_else(|| panic!("no {m} in\n{body}"))
            .to_owned()
    };
    let service = "grpc_service=\"todo.v1.TaskService\"";
    for (method, code, n) in [("CreateTask", "OK", 1), ("GetTask", "NOT_FOUND", 2)] {
        let found = body
            .lines()
            .find(|l| {
                l.starts_with("grpc_server_handled_total{")
                    && l.contains(service)
                    && l.contains(&format!("grpc_method=\"{method}\""))
                    && l.contains(&format!("grpc_code=\"{code}\""))
            })
            .unwrap_or_else(|| panic!("no {method} {code} in\n{body}"));
        assert!(found.ends_with(&format!(" {n}")), "{found}");
    }
    let bucket = line("grpc_server_handling_seconds_bucket{");
    assert!(bucket.contains("le=\""), "{bucket}");
    app.shutdown().await.unwrap();
}
