//! The start of every service binary: `--help` from its variable list, logging, and its
//! configuration read and checked, or the process stopped with the variable named.

use clap::{ArgMatches, Command};
use todo_env::{ConfigError, cli::Var};

/// Parses the command line (`--help` lists `vars`), sets up logging with `default_log`,
/// and reads the configuration with `read` from flags and environment. A bad value stops
/// the process with exit code 2 and a log line that names the variable.
pub fn start<C>(
    name: &'static str,
    about: &'static str,
    vars: &[Var],
    extend: impl FnOnce(Command) -> Command,
    default_log: &str,
    read: impl FnOnce(&dyn Fn(&str) -> Option<String>) -> Result<C, ConfigError>,
) -> (C, ArgMatches) {
    let matches = extend(todo_env::cli::command(name, about, vars)).get_matches();
    todo_telemetry::init(default_log);
    let config = read(&todo_env::cli::lookup(&matches, vars));
    match config {
        Ok(config) => (config, matches),
        Err(e) => {
            tracing::error!("invalid configuration: {e}");
            std::process::exit(2);
        }
    }
}

/// The warning every service with a caller-facing API logs in `AUTH_MODE=dev`.
pub fn warn_dev_auth() {
    tracing::warn!(
        "AUTH_MODE=dev: the x-user-id header is trusted as the caller; never use this in production"
    );
}
