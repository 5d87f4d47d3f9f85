//! The whole reminder chain with nothing in between faked: a task created through
//! task-service's API (its own sidecar, SQLite, reminder scheduler and outbox relay) →
//! `todo.reminder.due.v1` through Kafka → notification-service (its own sidecar and state
//! store) → one notification, listed for its owner.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// notification-service's own test kit (its stack, a recording channel, its components),
// shared with its tests rather than copied here.
#[path = "../../services/notification-service/tests/common/mod.rs"]
mod common;

use std::{sync::Arc, time::Duration};
use todo_service::cli::ServiceConfig as _;

use chrono::Utc;
use common::{Instance, Recorder, Tokens, instant, resources};
use todo_harness::{Daprd, DaprdOptions, ensure_kafka, free_port, unique};
use todo_proto::todo::v1::{
    CreateTaskRequest, Reminder, Task, reminder::When, task_service_client::TaskServiceClient,
};
use todo_topology::topics;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_created_through_the_api_is_reminded_once_by_notification_service() {
    todo_telemetry::init("info");
    ensure_kafka().await.unwrap();
    let prefix = unique("chain");
    let notification_app = unique("ns-app");
    let res = resources(&[&notification_app], false);
    let channel = Arc::new(Recorder::default());
    // This test binary is the one process that serves notification-service's metrics.
    let metrics = format!("127.0.0.1:{}", free_port().unwrap());
    let notifications = Instance::start_with(
        &prefix,
        notification_app,
        res.components.path(),
        channel.clone(),
        Tokens::None,
        &[("METRICS_ADDR", metrics.as_str())],
    )
    .await;

    // task-service as `main` runs it, on a SQLite file of its own, with its sidecar.
    let data = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}/tasks.db?mode=rwc", data.path().display());
    let sidecar_port = free_port().unwrap().to_string();
    let config = task_service::Config::from_lookup(|k| {
        Some(match k {
            "APP_ADDR" => "127.0.0.1:0".to_owned(),
            "AUTH_MODE" => "dev".to_owned(),
            "DATABASE_URL" => database_url.clone(),
            "DAPR_GRPC_PORT" => sidecar_port.clone(),
            "METRICS_ADDR" => "off".to_owned(),
            topics::PREFIX_VAR => prefix.clone(),
            _ => return None,
        })
    })
    .unwrap();
    let tasks = task_service::build(config).await.unwrap();
    let mut options = DaprdOptions::new(unique("ts-app"), Some(tasks.addr.port()));
    options.resources_path = res.components.path().to_owned();
    options.grpc_port = Some(sidecar_port.parse().unwrap());
    let _task_sidecar = Daprd::start(options).await.unwrap();

    // Due in 4 s, reminded 2 s before.
    let due = Utc::now() + chrono::Duration::seconds(4);
    let mut client = TaskServiceClient::connect(format!("http://{}", tasks.addr))
        .await
        .unwrap();
    let mut request = tonic::Request::new(CreateTaskRequest {
        task: Some(Task {
            title: "call the plumber".into(),
            due_time: Some(todo_proto::to_timestamp(due)),
            reminders: vec![Reminder {
                when: Some(When::BeforeDue(prost_types::Duration {
                    seconds: 2,
                    nanos: 0,
                })),
            }],
            ..Task::default()
        }),
        ..CreateTaskRequest::default()
    });
    request
        .metadata_mut()
        .insert("x-user-id", "zoe".parse().unwrap());
    let created = client.create_task(request).await.unwrap().into_inner();

    let got = channel.wait_for(1).await;
    let n = &got[0];
    assert_eq!(
        (
            n.user_id.as_str(),
            n.task_id.as_str(),
            n.task_title.as_str()
        ),
        ("zoe", created.id.as_str(), "call the plumber")
    );
    let remind_at = due - chrono::Duration::seconds(2);
    assert_eq!(
        n.remind_at.timestamp_micros(),
        remind_at.timestamp_micros(),
        "the planned moment"
    );
    assert_eq!(
        n.due_time.map(|d| d.timestamp_micros()),
        Some(due.timestamp_micros())
    );
    assert!(n.delivered_at >= n.remind_at, "not before its moment");
    assert!(
        n.fire_lateness_ms.is_some(),
        "the scheduler's lateness is carried"
    );

    // The scheduled event is task-service's bookkeeping (acknowledged untouched); the due
    // one is delivered once and listed for its owner only.
    let stats = notifications
        .stats_until(|s| s.delivered >= 1 && s.not_ours >= 1)
        .await;
    assert_eq!(
        (
            stats.delivered,
            stats.duplicates,
            stats.dropped,
            stats.retried
        ),
        (1, 0, 0, 0),
        "{stats:?}"
    );
    let listed = notifications.list_all("zoe", 10).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].task_id, created.id);
    assert_eq!(
        instant(listed[0].delivered_at.as_ref().unwrap()),
        n.delivered_at
    );
    assert!(notifications.list_all("someone-else", 10).await.is_empty());

    // The same list through the MCP tool an assistant would use (mcp-server's stdio
    // transport over an in-process pipe, dev user zoe).
    let ns_url = format!("http://{}", notifications.app.as_ref().unwrap().addr);
    let mcp = todo_service::cli::read_pairs::<mcp_server::Config>(&[
        ("MCP_DEV_USER", "zoe"),
        ("NOTIFICATION_SERVICE_URL", ns_url.as_str()),
    ])
    .unwrap();
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let (r, w) = tokio::io::split(server_end);
        mcp_server::serve_io(&mcp, (r, w)).await.unwrap();
    });
    let assistant = rmcp::ServiceExt::serve((), tokio::io::split(client_end))
        .await
        .unwrap();
    let listed = assistant
        .call_tool(rmcp::model::CallToolRequestParams::new(
            "list_notifications",
        ))
        .await
        .unwrap();
    assert_ne!(listed.is_error, Some(true), "{listed:?}");
    let content = listed.structured_content.unwrap();
    assert_eq!(content["notifications"][0]["task_id"], created.id.as_str());
    assert_eq!(
        content["notifications"][0]["task_title"],
        "call the plumber"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(channel.all().len(), 1, "delivered again");

    // What an operator's Prometheus sees.
    let scraped = scrape(&metrics).await;
    for line in [
        "reminders_handled_total{result=\"delivered\"} 1",
        "reminders_handled_total{result=\"not_ours\"} 1",
    ] {
        assert!(
            scraped.lines().any(|l| l == line),
            "{line} not in:\n{scraped}"
        );
    }
    assert!(
        scraped.contains("events_consumed_total{"),
        "the AppCallback runtime's counter:\n{scraped}"
    );
}

/// The body of `GET /metrics` (plain HTTP/1.1, as a scraper asks).
async fn scrape(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}
