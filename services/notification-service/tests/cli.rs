//! The binary's command line: `--help` lists every variable of the service README's
//! configuration table (and no secret), and a bad value stops the service at start, naming
//! the variable.

use std::collections::BTreeSet;

use todo_service::cli::ServiceConfig;

#[test]
fn help_agrees_with_the_readme_and_bad_values_are_named() {
    let listed: BTreeSet<String> = notification_service::Config::vars()
        .iter()
        .map(|v| v.name.to_owned())
        .collect();
    todo_harness::check_cli_contract(
        env!("CARGO_BIN_EXE_notification-service"),
        concat!(env!("CARGO_MANIFEST_DIR"), "/README.md").as_ref(),
        "## Configuration",
        &listed,
        "127.0.0.1:50053",
        ("NOTIFICATION_CLAIM_LEASE_MS", "5"),
    );
}
