//! The test harness: the real Kafka broker and a real daprd per app under test, and the kit
//! the tests and benchmarks share (a recording subscriber, fresh PostgreSQL databases,
//! machine facts for reports).
//!
//! Nothing here is a double. A component that cannot be found is an error that says how
//! to get it (`just bootstrap`), so a test fails instead of skipping.

pub mod bench;
mod daprd;
mod kafka;
pub mod machine;
pub mod pg;
pub mod recorder;

use std::{
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
};

pub use daprd::{Daprd, DaprdOptions};
pub use kafka::{DedicatedKafka, ensure_kafka, kafka_brokers, resources_for};

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
