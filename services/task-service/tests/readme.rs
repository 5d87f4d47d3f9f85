//! Runs the README's grpcurl walkthrough, verbatim, against a live task-service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use task_service::auth::AuthMode;

fn walkthrough() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme
        .find("<!-- walkthrough:start -->")
        .expect("walkthrough start marker");
    let end = readme
        .find("<!-- walkthrough:end -->")
        .expect("walkthrough end marker");
    let block = &readme[start..end];
    let body_start = block.find("```bash\n").expect("a bash block") + "```bash\n".len();
    let body_end = block.rfind("```").unwrap();
    block[body_start..body_end].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_works_as_written() {
    let grpcurl = todo_harness::cache_dir().join("bin/grpcurl");
    assert!(
        grpcurl.exists(),
        "grpcurl not found at {}: run `just bootstrap`",
        grpcurl.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let url = common::fresh_database(common::Backend::Sqlite, &dir).await;
    let app = task_service::build(common::config(&url, AuthMode::Dev))
        .await
        .unwrap();
    let script = walkthrough().replace("127.0.0.1:50051", &app.addr.to_string());
    let path = format!(
        "{}:{}",
        grpcurl.parent().unwrap().display(),
        std::env::var("PATH").unwrap()
    );
    let out = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("PATH", path)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "walkthrough failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("created "), "{stdout}");
    assert!(stdout.contains("Water the plants 🌱"), "{stdout}");
    assert!(
        stdout.contains("Water the plants and the garden"),
        "{stdout}"
    );
    assert!(stdout.contains("TASK_STATUS_COMPLETED"), "{stdout}");
    assert!(stdout.contains("bob: not found, as expected"), "{stdout}");
    assert!(stderr.contains("NotFound"), "{stderr}");
    assert!(stdout.contains("rejected, as expected"), "{stdout}");
    // grpcurl renders the google.rpc.BadRequest details (reflection serves their
    // descriptors): the field and the reason, not a base64 blob.
    assert!(
        stderr.contains("type.googleapis.com/google.rpc.BadRequest"),
        "{stderr}"
    );
    assert!(
        stderr.contains("\"field\": \"task.title\""),
        "the rejection names the field: {stderr}"
    );
    assert!(!stderr.contains("is not recognized"), "{stderr}");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_and_reflection_answer() {
    let dir = tempfile::tempdir().unwrap();
    let url = common::fresh_database(common::Backend::Sqlite, &dir).await;
    let app = task_service::build(common::config(&url, AuthMode::Dev))
        .await
        .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "todo.v1.TaskService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let grpcurl = todo_harness::cache_dir().join("bin/grpcurl");
    let out = tokio::process::Command::new(&grpcurl)
        .args(["-plaintext", &app.addr.to_string(), "list"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {} ({e}): run `just bootstrap`", grpcurl.display()));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("todo.v1.TaskService"), "{listed}");
    assert!(listed.contains("grpc.health.v1.Health"), "{listed}");
    // Only what this binary serves: not notification-service's API.
    assert!(!listed.contains("NotificationService"), "{listed}");

    // Older clients (ghz) speak only grpc.reflection.v1alpha.
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut alpha = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(services)) = answer.message_response else {
        panic!("{answer:?}")
    };
    let names: Vec<String> = services.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"todo.v1.TaskService".to_owned()),
        "{names:?}"
    );
    app.shutdown().await.unwrap();
}
