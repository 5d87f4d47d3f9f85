//! The binary's command line: `--help` lists every variable of the README's configuration
//! table (and no secret), and a bad value stops the service at start, naming the variable.

use std::collections::BTreeSet;

use todo_service::cli::ServiceConfig;

#[test]
fn help_agrees_with_the_readme_and_bad_values_are_named() {
    let listed: BTreeSet<String> = recurring_task_service::Config::vars()
        .iter()
        .map(|v| v.name.to_owned())
        .collect();
    todo_harness::check_cli_contract(
        env!("CARGO_BIN_EXE_recurring-task-service"),
        &todo_harness::repo_root().join("README.md"),
        "## Configuration (recurring-task-service)",
        &listed,
        "127.0.0.1:50052",
        ("PUBLISH_TIMEOUT_MS", "0"),
    );
}
