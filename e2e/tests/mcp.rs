//! MCP tools against the real stack: task-service (SQLite, outbox, its sidecar) and
//! recurring-task-service (its sidecar) on Kafka, mcp-server built by the functions its
//! `main` calls, and real MCP clients: rmcp's over streamable HTTP (each user's own bearer
//! JWT passed through), rmcp's over the stdio code path (`serve_io` on an in-process pipe:
//! the same transport as stdin/stdout, minus the process; services/mcp-server/tests/stdio.rs
//! spawns the binary itself), and the MCP Inspector's CLI from the npm registry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod stack;

use std::time::{Duration, Instant};

use rmcp::{
    RoleClient, ServiceExt as _,
    model::{CallToolRequestParams, CallToolResult},
    service::RunningService,
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};
use todo_harness::{Daprd, unique};
use todo_proto::todo::v1::{CreateTaskRequest, Task, task_service_client::TaskServiceClient};

const SECRET: &str = "mcp-e2e-secret-of-at-least-32-bytes!!";

/// A bearer JWT task-service accepts for `user`.
fn jwt(user: &str) -> String {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        exp: i64,
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &Claims {
            sub: user,
            exp: chrono::Utc::now().timestamp() + 3600,
        },
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// task-service (JWT identity), recurring-task-service and audit-service (JWT identity),
/// each with its sidecar, under one topic prefix.
struct Stack {
    task_service: std::net::SocketAddr,
    audit_service: std::net::SocketAddr,
    _apps: (
        task_service::App,
        recurring_task_service::App,
        audit_service::App,
    ),
    _dir: tempfile::TempDir,
    _sidecars: Vec<Daprd>,
}

impl Stack {
    async fn start() -> Self {
        todo_telemetry::init("info");
        todo_harness::ensure_kafka().await.unwrap();
        let prefix = unique("e2emcp");
        let dir = tempfile::tempdir().unwrap();
        let database_url = format!("sqlite://{}/tasks.db?mode=rwc", dir.path().display());

        let (rts, rts_sidecar) = stack::start(
            "rts",
            &prefix,
            &[],
            recurring_task_service::build,
            |a: &recurring_task_service::App| a.addr,
        )
        .await;
        let jwt = [("AUTH_MODE", "jwt"), ("JWT_SECRET", SECRET)];
        let audit_url = format!("sqlite://{}/audit.db?mode=rwc", dir.path().display());
        let (audit, audit_sidecar) = stack::start(
            "audit",
            &prefix,
            &[jwt[0], jwt[1], ("DATABASE_URL", &audit_url)],
            audit_service::build,
            |a: &audit_service::App| a.addr,
        )
        .await;
        let (tasks, ts_sidecar) = stack::start(
            "ts",
            &prefix,
            &[jwt[0], jwt[1], ("DATABASE_URL", &database_url)],
            task_service::build,
            |a: &task_service::App| a.addr,
        )
        .await;
        Self {
            task_service: tasks.addr,
            audit_service: audit.addr,
            _apps: (tasks, rts, audit),
            _dir: dir,
            _sidecars: vec![rts_sidecar, ts_sidecar, audit_sidecar],
        }
    }

    /// mcp-server's configuration for this stack, through the same parser as `main`.
    fn mcp_config(&self, vars: &[(&str, &str)]) -> mcp_server::Config {
        let url = format!("http://{}", self.task_service);
        let audit = format!("http://{}", self.audit_service);
        let mut all = vec![
            ("TASK_SERVICE_URL", url.as_str()),
            ("AUDIT_SERVICE_URL", audit.as_str()),
            ("MCP_ADDR", "127.0.0.1:0"),
        ];
        all.extend_from_slice(vars);
        todo_service::cli::read_pairs::<mcp_server::Config>(&all).unwrap()
    }
}

type Client = RunningService<RoleClient, ()>;

/// An rmcp client over streamable HTTP carrying `user`'s JWT.
async fn http_client(url: &str, user: &str) -> Client {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url).auth_header(jwt(user)),
    );
    ().serve(transport).await.unwrap()
}

/// An rmcp client of `serve_io` (the stdio transport) over an in-process pipe.
async fn stdio_client(config: mcp_server::Config) -> Client {
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let (r, w) = tokio::io::split(server_end);
        mcp_server::serve_io(&config, (r, w)).await.unwrap();
    });
    ().serve(tokio::io::split(client_end)).await.unwrap()
}

/// Calls `tool`: a protocol error fails the test; a tool result (error or not) is returned.
async fn call(client: &Client, tool: &'static str, args: Value) -> CallToolResult {
    client
        .call_tool(
            CallToolRequestParams::new(tool).with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("{tool}: a protocol error: {e}"))
}

fn ok(r: &CallToolResult) -> &Value {
    assert_ne!(r.is_error, Some(true), "{r:?}");
    r.structured_content.as_ref().expect("structured content")
}

fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The ids `list_tasks` returns for `args`.
async fn listed(client: &Client, args: Value) -> Vec<Value> {
    ok(&call(client, "list_tasks", args).await)["tasks"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_assistant_manages_tasks_over_http_and_stdio() {
    let stack = Stack::start().await;
    let http = mcp_server::serve_http(&stack.mcp_config(&[("MCP_TRANSPORT", "http")]))
        .await
        .unwrap();
    let alice = unique("alice");
    let client = http_client(&http.url, &alice).await;

    // The tools, with schemas generated from their typed arguments.
    let tools = client.list_all_tools().await.unwrap();
    let required = |name: &str| {
        let t = tools.iter().find(|t| t.name == name).unwrap();
        serde_json::to_value(t.input_schema.as_ref()).unwrap()["required"].clone()
    };
    assert_eq!(required("add_task"), json!(["tasks"]));
    assert_eq!(required("complete_task"), json!(["ids"]));
    assert_eq!(required("update_task"), json!(["id"]));
    assert_eq!(required("list_tasks"), Value::Null);

    // add → list → update.
    let due = (chrono::Utc::now() + chrono::Duration::hours(2))
        .with_timezone(&chrono_tz::Europe::Berlin)
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let added = call(
        &client,
        "add_task",
        json!({ "tasks": [
            { "title": "water the plants", "due": due, "time_zone": "Europe/Berlin",
              "repeat": "daily", "priority": "high", "tags": ["home"] },
            { "title": "call mum" },
        ]}),
    )
    .await;
    let created = ok(&added)["created"].as_array().unwrap().clone();
    assert_eq!(created.len(), 2, "{added:?}");
    assert!(
        text(&added).starts_with("Created 2 tasks"),
        "{}",
        text(&added)
    );
    let plants = created[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(created[0]["repeat"], "daily");
    assert_eq!(created[0]["priority"], "high");
    assert!(
        created[0]["due"].as_str().unwrap().starts_with(&due),
        "shown in its own zone: {}",
        created[0]["due"]
    );

    let high = listed(&client, json!({ "priority": "high", "status": "open" })).await;
    assert_eq!(high.len(), 1);
    assert_eq!(high[0]["id"], plants.as_str());
    assert_eq!(listed(&client, json!({ "tag": "home" })).await.len(), 1);
    assert_eq!(
        listed(
            &client,
            json!({ "page_size": 1, "order_by": "create_time desc" })
        )
        .await
        .len(),
        1
    );

    let updated = call(
        &client,
        "update_task",
        json!({ "id": plants, "title": "water the plants and the herbs" }),
    )
    .await;
    let task = &ok(&updated)["task"];
    assert_eq!(task["title"], "water the plants and the herbs");
    assert_eq!(task["priority"], "high", "fields not given are kept");
    assert_eq!(task["repeat"], "daily");

    // complete the daily task → the next occurrence appears in list_tasks.
    let completed = call(&client, "complete_task", json!({ "ids": [plants] })).await;
    assert_eq!(ok(&completed)["completed"][0]["status"], "completed");
    let deadline = Instant::now() + Duration::from_secs(60);
    let next = loop {
        let open = listed(&client, json!({ "status": "open", "order_by": "due_time" })).await;
        if let Some(t) = open.iter().find(|t| t["series_id"] == plants.as_str()) {
            break t.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no next occurrence of {plants} within 60 s: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(next["occurrence_index"], 1);
    assert_eq!(next["title"], "water the plants and the herbs");
    assert_ne!(next["id"], plants.as_str());

    // The completed task's history from audit-service: created, updated (title before and
    // after), completed, in that order.
    let deadline = Instant::now() + Duration::from_secs(60);
    let history = loop {
        let h = call(&client, "task_history", json!({ "id": plants })).await;
        if h.is_error != Some(true) {
            let entries = ok(&h)["entries"].as_array().cloned().unwrap_or_default();
            if entries
                .iter()
                .any(|e| e["event"] == "todo.task.completed.v1")
            {
                break entries;
            }
        }
        assert!(Instant::now() < deadline, "no history of {plants}: {h:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let events: Vec<&str> = history
        .iter()
        .filter(|e| {
            e["event"]
                .as_str()
                .is_some_and(|t| t.starts_with("todo.task."))
        })
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert_eq!(
        events,
        [
            "todo.task.created.v1",
            "todo.task.updated.v1",
            "todo.task.completed.v1"
        ]
    );
    let update = history
        .iter()
        .find(|e| e["event"] == "todo.task.updated.v1")
        .unwrap();
    assert_eq!(
        update["changes"]["title"]["after"],
        "\"water the plants and the herbs\""
    );

    // Another user (over stdio, with its own token) does not see alice's task.
    let bob = unique("bob");
    let bob_token = jwt(&bob);
    let stdio = stdio_client(stack.mcp_config(&[("TASK_SERVICE_TOKEN", bob_token.as_str())])).await;
    let theirs = call(&stdio, "get_task", json!({ "id": plants })).await;
    assert_eq!(theirs.is_error, Some(true), "{theirs:?}");
    assert!(
        text(&theirs).starts_with("not found: id"),
        "{}",
        text(&theirs)
    );
    let theirs = call(&stdio, "complete_task", json!({ "ids": [next["id"]] })).await;
    assert_eq!(theirs.is_error, Some(true), "{theirs:?}");
    let theirs = call(&stdio, "task_history", json!({ "id": plants })).await;
    assert_eq!(theirs.is_error, Some(true), "{theirs:?}");
    assert!(text(&theirs).starts_with("not found"), "{}", text(&theirs));
    assert!(listed(&stdio, json!({})).await.is_empty());

    // A bad due time is a tool error naming the field, and creates nothing.
    let bad = call(
        &stdio,
        "add_task",
        json!({ "tasks": [{ "title": "ok" }, { "title": "x", "due": "next tuesday-ish" }] }),
    )
    .await;
    assert_eq!(bad.is_error, Some(true), "{bad:?}");
    assert!(text(&bad).contains("tasks[1].due"), "{}", text(&bad));
    assert_eq!(
        bad.structured_content.as_ref().unwrap()["field"],
        "tasks[1].due"
    );
    // …and one that task-service refuses names it too (the title is too long).
    let long = call(
        &stdio,
        "add_task",
        json!({ "tasks": [{ "title": "x".repeat(501) }] }),
    )
    .await;
    assert_eq!(long.is_error, Some(true), "{long:?}");
    assert!(text(&long).contains("tasks[0].title"), "{}", text(&long));
    let late = call(
        &stdio,
        "update_task",
        json!({ "id": plants, "due": "soonish" }),
    )
    .await;
    assert!(text(&late).contains("due"), "{}", text(&late));
    assert!(listed(&stdio, json!({})).await.is_empty());

    // A retried add_task (same request id) creates one task.
    let request_id = uuid::Uuid::new_v4().to_string();
    let args = json!({ "tasks": [{ "title": "pay rent", "request_id": request_id }] });
    let first = call(&stdio, "add_task", args.clone()).await;
    let again = call(&stdio, "add_task", args).await;
    assert_eq!(
        ok(&first)["created"][0]["id"],
        ok(&again)["created"][0]["id"]
    );
    let bobs = listed(&stdio, json!({})).await;
    assert_eq!(bobs.len(), 1, "{bobs:?}");

    // Over HTTP, a request without a bearer token is refused before any tool runs.
    let refused = StreamableHttpClientTransport::from_uri(http.url.clone());
    assert!(
        ().serve(refused).await.is_err(),
        "anonymous session accepted"
    );

    // The latency of one add_task through MCP next to a direct CreateTask (same user, same
    // task-service), median of 20 each.
    let mut direct = TaskServiceClient::connect(format!("http://{}", stack.task_service))
        .await
        .unwrap();
    let (mut via_mcp, mut via_grpc) = (Vec::new(), Vec::new());
    for i in 0..20 {
        let t = Instant::now();
        ok(&call(
            &client,
            "add_task",
            json!({ "tasks": [{ "title": format!("m{i}") }] }),
        )
        .await);
        via_mcp.push(t.elapsed());
        let mut r = tonic::Request::new(CreateTaskRequest {
            task: Some(Task {
                title: format!("g{i}"),
                ..Task::default()
            }),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..CreateTaskRequest::default()
        });
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", jwt(&alice)).parse().unwrap(),
        );
        let t = Instant::now();
        direct.create_task(r).await.unwrap();
        via_grpc.push(t.elapsed());
    }
    via_mcp.sort();
    via_grpc.sort();
    println!(
        "add_task via MCP (streamable HTTP): p50 {:?}, max {:?}; CreateTask direct: p50 {:?}, max {:?}",
        via_mcp[10], via_mcp[19], via_grpc[10], via_grpc[19]
    );

    stdio.cancel().await.unwrap();
    client.cancel().await.unwrap();
    http.shutdown().await.unwrap();
}

/// The MCP Inspector's CLI (`npx @modelcontextprotocol/inspector`, from the npm registry)
/// lists the tools and calls add_task against the HTTP server with a user's JWT. The npm
/// cache lives under the harness's cache, outside the clone. Fails if npx is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_mcp_inspector_cli_lists_the_tools_and_adds_a_task() {
    let stack = Stack::start().await;
    let http = mcp_server::serve_http(&stack.mcp_config(&[("MCP_TRANSPORT", "http")]))
        .await
        .unwrap();
    let user = unique("carol");
    let header = format!("Authorization: Bearer {}", jwt(&user));
    let inspector = |extra: &[&str]| {
        let url = http.url.clone();
        let header = header.clone();
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        async move {
            tokio::process::Command::new("npx")
                .args([
                    "-y",
                    "@modelcontextprotocol/inspector@2.12.0",
                    "--cli",
                    &url,
                ])
                .args(["--transport", "http", "--header", &header])
                .args(&extra)
                .env("npm_config_cache", todo_harness::cache_dir().join("npm"))
                .env("npm_config_update_notifier", "false")
                .kill_on_drop(true)
                .output()
                .await
                .expect("npx (Node.js) is needed for this test")
        }
    };
    let out = inspector(&["--method", "tools/list"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{out:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"add_task") && names.contains(&"list_tasks"),
        "{names:?}"
    );

    let out = inspector(&[
        "--method",
        "tools/call",
        "--tool-name",
        "add_task",
        "--tool-arg",
        r#"tasks=[{"title":"from the inspector","priority":"urgent"}]"#,
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{out:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_ne!(result["isError"], true, "{result}");
    assert_eq!(
        result["structuredContent"]["created"][0]["title"], "from the inspector",
        "{result}"
    );

    // It is there for that user, through the API.
    let client = http_client(&http.url, &user).await;
    let tasks = listed_titles(&client).await;
    assert_eq!(tasks, ["from the inspector"]);
    client.cancel().await.unwrap();
    http.shutdown().await.unwrap();
}

async fn listed_titles(client: &Client) -> Vec<String> {
    listed(client, json!({}))
        .await
        .iter()
        .map(|t| t["title"].as_str().unwrap().to_owned())
        .collect()
}
