//! The binary's command line: `--help` lists every variable of the README's configuration
//! table, and a bad value stops the service at start, naming the variable.

#![allow(clippy::unwrap_used)]

use std::{collections::BTreeSet, process::Command};

fn readme_variables() -> BTreeSet<String> {
    let readme = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    todo_harness::readme_variables(readme.as_ref(), "## Configuration (task-service)").unwrap()
}

fn help() -> String {
    todo_harness::help_of(env!("CARGO_BIN_EXE_task-service")).unwrap()
}

#[test]
fn help_lists_every_variable_of_the_readme_table_and_no_other() {
    let readme = readme_variables();
    assert!(readme.len() > 10, "{readme:?}");
    let listed: BTreeSet<String> =
        <task_service::Config as todo_service::cli::ServiceConfig>::vars()
            .iter()
            .map(|v| v.name.to_owned())
            .collect();
    assert_eq!(readme, listed, "README table vs task-service --help");
    let help = help();
    for var in &readme {
        assert!(
            help.contains(var.as_str()),
            "--help does not mention {var}:\n{help}"
        );
    }
    assert!(help.contains("[default: 127.0.0.1:50051]"), "{help}");
}

#[test]
fn secrets_stay_out_of_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_task-service"))
        .arg("--help")
        .env("JWT_SECRET", "a-secret-that-must-not-be-printed-0123456789")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        !help.contains("a-secret-that-must-not-be-printed"),
        "{help}"
    );
}

#[test]
fn a_bad_value_stops_the_service_naming_the_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_task-service"))
        .env("AUTH_MODE", "dev")
        .env("REQUEST_TIMEOUT_MS", "soon")
        .env("METRICS_ADDR", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("REQUEST_TIMEOUT_MS"), "{log}");
}
