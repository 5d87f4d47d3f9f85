//! The binary's command line: `--help` lists every variable of the README's configuration
//! table, and a bad value stops the service at start, naming the variable.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use todo_service::cli::ServiceConfig;

#[test]
fn help_agrees_with_the_readme_and_bad_values_are_named() {
    let listed: BTreeSet<String> = dead_letter_service::Config::vars()
        .iter()
        .map(|v| v.name.to_owned())
        .collect();
    todo_harness::check_cli_contract(
        env!("CARGO_BIN_EXE_dead-letter-service"),
        &todo_harness::repo_root().join("README.md"),
        "## Configuration (dead-letter-service)",
        &listed,
        "127.0.0.1:50056",
        ("DLQ_PUBLISH_TIMEOUT_MS", "soon"),
    );
}
