//! The binary's command line: `--help` lists every variable of the service README's
//! configuration table, and a bad value stops the service at start, naming the variable.

#![allow(clippy::unwrap_used)]

use std::{collections::BTreeSet, process::Command};

const BIN: &str = env!("CARGO_BIN_EXE_notification-service");

#[test]
fn help_lists_every_variable_of_the_readme_table_and_no_other() {
    let readme = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let documented = todo_harness::readme_variables(readme.as_ref(), "## Configuration").unwrap();
    let listed: BTreeSet<String> =
        <notification_service::Config as todo_service::cli::ServiceConfig>::vars()
            .iter()
            .map(|v| v.name.to_owned())
            .collect();
    assert_eq!(
        documented, listed,
        "README table vs notification-service --help"
    );
    let help = todo_harness::help_of(BIN).unwrap();
    for var in &listed {
        assert!(
            help.contains(var.as_str()),
            "--help does not mention {var}:\n{help}"
        );
    }
    assert!(help.contains("[default: 127.0.0.1:50053]"), "{help}");
}

#[test]
fn a_bad_value_stops_the_service_naming_the_variable() {
    let out = Command::new(BIN)
        .env("AUTH_MODE", "dev")
        .env("NOTIFICATION_CLAIM_LEASE_MS", "5")
        .env("METRICS_ADDR", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("NOTIFICATION_CLAIM_LEASE_MS"), "{log}");
}
