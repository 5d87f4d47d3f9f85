//! The test harness: the real Kafka broker and a real daprd per app under test, and the kit
//! the tests and benchmarks share (a recording subscriber, fresh PostgreSQL databases,
//! machine facts for reports, CPU and memory of the processes a benchmark runs).
//!
//! Nothing here is a double. A component that cannot be found is an error that says how
//! to get it (`just bootstrap`), so a test fails instead of skipping.

pub mod bench;
mod daprd;
mod kafka;
pub mod machine;
pub mod pg;
pub mod processes;
pub mod recorder;

use std::{
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
};

pub use daprd::{Daprd, DaprdOptions};
pub use kafka::{DedicatedKafka, ensure_kafka, kafka_brokers, kafka_pid, resources_for};

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where bootstrap keeps daprd, Kafka and the other tools (outside the clone).
pub fn cache_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TODO_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned());
    PathBuf::from(home).join(".cache/todo-dapr")
}

/// Where tests keep logs of the processes they start (daprd, apps).
pub fn log_dir() -> PathBuf {
    let dir = repo_root().join("target/test-logs");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A name nobody else in this test run uses: `<prefix>-<8 hex digits>`.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..8])
}

/// Whether a service under test and its sidecar guard their APIs with tokens
/// (`APP_API_TOKEN`, `DAPR_API_TOKEN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokens {
    None,
    Both,
}

impl Tokens {
    /// Fresh (app API token, Dapr API token), or none.
    pub fn pair(self) -> (Option<String>, Option<String>) {
        match self {
            Self::None => (None, None),
            Self::Both => (
                Some(uuid::Uuid::new_v4().to_string()),
                Some(uuid::Uuid::new_v4().to_string()),
            ),
        }
    }
}

/// A service's configuration lookup as a test gives it: `vars` first, then `defaults`,
/// else unset. Tests pass it to the service's own `Config::from_lookup`, the parser `main`
/// uses.
pub fn lookup(
    vars: &[(&str, &str)],
    defaults: &[(&str, &str)],
) -> impl Fn(&str) -> Option<String> + use<> {
    let mut all: std::collections::HashMap<String, String> = defaults
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    all.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    move |k| all.get(k).cloned()
}

/// What the `grpc.health.v1` service at `addr` answers for `service` ("" for the server).
pub async fn health(
    addr: std::net::SocketAddr,
    service: &str,
) -> anyhow::Result<tonic_health::pb::health_check_response::ServingStatus> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(answer.into_inner().status())
}

/// The variables named in the first column of the Markdown table that follows `heading` in
/// the file at `path` (a README's configuration table), for tests that keep it and a
/// binary's `--help` in step.
pub fn readme_variables(
    path: &Path,
    heading: &str,
) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let text = std::fs::read_to_string(path)?;
    let Some(after) = text.split(heading).nth(1) else {
        anyhow::bail!("{} has no {heading:?}", path.display());
    };
    Ok(after
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|row| row.split('|').nth(1))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2).map(str::to_owned))
        .filter(|name| name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect())
}

/// What `<binary> --help` prints.
pub fn help_of(binary: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new(binary).arg("--help").output()?;
    anyhow::ensure!(out.status.success(), "{binary} --help: {out:?}");
    Ok(String::from_utf8(out.stdout)?)
}

/// The command-line contract every service binary keeps, checked the same way for each:
/// `--help` names exactly the variables of the README's configuration table under
/// `heading` (`listed` is what the binary's `ServiceConfig::vars()` says) and shows the
/// default listen address and no secret of the environment; a bad value stops the binary
/// at start with exit code 2, naming the variable. Panics (it is a test) with what differs.
pub fn check_cli_contract(
    binary: &str,
    readme: &Path,
    heading: &str,
    listed: &std::collections::BTreeSet<String>,
    default_listen: &str,
    bad: (&str, &str),
) {
    let documented = readme_variables(readme, heading).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        &documented, listed,
        "README table {heading:?} vs {binary} --help"
    );
    let help = help_of(binary).unwrap_or_else(|e| panic!("{e:#}"));
    for var in listed {
        assert!(
            help.contains(var.as_str()),
            "--help does not mention {var}:\n{help}"
        );
    }
    assert!(
        help.contains(&format!("[default: {default_listen}]")),
        "{help}"
    );
    // A secret in the environment is never echoed as a default.
    let secret = "a-secret-that-must-not-be-printed-0123456789";
    let out = std::process::Command::new(binary)
        .arg("--help")
        .env("JWT_SECRET", secret)
        .output()
        .unwrap_or_else(|e| panic!("running {binary}: {e}"));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(secret),
        "{binary} --help prints JWT_SECRET"
    );
    let (var, value) = bad;
    let out = std::process::Command::new(binary)
        .env("AUTH_MODE", "dev")
        .env("METRICS_ADDR", "off")
        .env(var, value)
        .output()
        .unwrap_or_else(|e| panic!("running {binary}: {e}"));
    assert_eq!(out.status.code(), Some(2), "{var}={value}: {out:?}");
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(log.contains(var), "{var}={value}: {log}");
}

/// The databases a service's tests run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh database URL for one test: a SQLite file `file` in `dir`, or a new database on
/// the PostgreSQL server at `DATABASE_URL_PG` (`just test` starts it; the test fails,
/// saying so, when it is not set).
pub async fn fresh_database(backend: Backend, dir: &tempfile::TempDir, file: &str) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}?mode=rwc", dir.path().join(file).display()),
        Backend::Postgres => {
            let admin = std::env::var(pg::ADMIN_URL_VAR).unwrap_or_else(|_| {
                panic!(
                    "{} is not set: run the tests through `just test` (it starts PostgreSQL \
                     with `just pg-up`) or point it at a server where the user may CREATE DATABASE",
                    pg::ADMIN_URL_VAR
                )
            });
            let (_, url) = pg::create_database(&admin, "t")
                .await
                .unwrap_or_else(|e| panic!("{e:#}"));
            url
        }
    }
}

/// Runs each named `async fn(Backend)` as a test on SQLite and on PostgreSQL, on a runtime
/// of `$workers` threads: `on_both_databases!(2; a, b)` makes `sqlite::a`, `postgres::a`, ...
#[macro_export]
macro_rules! on_both_databases {
    ($workers:literal; $($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = $workers)]
            async fn $name() { super::$name($crate::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = $workers)]
            async fn $name() { super::$name($crate::Backend::Postgres).await })*
        }
    };
}
