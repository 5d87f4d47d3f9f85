//! The `todo-mcp` binary as an MCP client spawns it (stdio, rmcp's child-process client):
//! it lists its tools with their schemas, logs nothing on stdout, and a call it cannot
//! complete (task-service is not there) is a tool error, not a protocol error or a crash.
//! The flows against a real task-service are in e2e/tests/mcp.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rmcp::{
    ServiceExt as _,
    model::CallToolRequestParams,
    transport::{ConfigureCommandExt as _, TokioChildProcess},
};

#[tokio::test]
async fn the_binary_speaks_mcp_on_stdio() {
    // A port nothing listens on: every call to task-service fails as unavailable.
    let dead = todo_harness::free_port().unwrap();
    let transport = TokioChildProcess::new(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_todo-mcp")).configure(|c| {
            c.env("MCP_TRANSPORT", "stdio")
                .env("MCP_DEV_USER", "alice")
                .env("TASK_SERVICE_URL", format!("http://127.0.0.1:{dead}"))
                .env("REQUEST_TIMEOUT_MS", "2000")
                .env("RUST_LOG", "debug");
        }),
    )
    .unwrap();
    let client = ().serve(transport).await.unwrap();
    let server = client.peer_info().expect("initialized");
    assert_eq!(
        server.server_info.as_ref().map(|i| i.name.as_str()),
        Some("todo-mcp")
    );
    let tools = client.list_all_tools().await.unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "add_task",
            "complete_task",
            "delete_task",
            "get_task",
            "list_notifications",
            "list_tasks",
            "reopen_task",
            "task_history",
            "update_task"
        ]
    );
    let add = tools.iter().find(|t| t.name == "add_task").unwrap();
    let schema = serde_json::to_value(add.input_schema.as_ref()).unwrap();
    assert_eq!(schema["required"], serde_json::json!(["tasks"]), "{schema}");

    // A wrongly typed argument is a tool error naming it, not a protocol error.
    let typed = client
        .call_tool(
            CallToolRequestParams::new("add_task").with_arguments(
                serde_json::json!({ "tasks": [{ "title": 5 }] })
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(typed.is_error, Some(true), "{typed:?}");
    assert_eq!(
        typed.structured_content.as_ref().unwrap()["field"],
        "tasks[0].title",
        "{typed:?}"
    );

    let result = client
        .call_tool(
            CallToolRequestParams::new("get_task").with_arguments(
                serde_json::json!({ "id": "0193e0f0-0000-7000-8000-000000000000" })
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .expect("a tool error, not a protocol error");
    assert_eq!(result.is_error, Some(true), "{result:?}");
    let text = format!("{:?}", result.content);
    assert!(text.contains("unavailable"), "{text}");
    client.cancel().await.unwrap();
}
