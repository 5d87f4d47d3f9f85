//! The Kafka broker for tests: reuse the one that answers, or start it with the project's
//! own recipe (scripts/kafka.sh), once per test process.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::{net::TcpStream, sync::OnceCell};

use crate::repo_root;

/// `127.0.0.1:<port>` of the test broker (`KAFKA_PORT`, default 19092, as in dapr-components/).
pub fn kafka_brokers() -> String {
    let port = std::env::var("KAFKA_PORT").unwrap_or_else(|_| "19092".to_owned());
    format!("127.0.0.1:{port}")
}

/// The process id of the broker `scripts/kafka.sh up` started (its JVM): the pid file in
/// its data folder (`KAFKA_DATA_DIR`, default `<cache>/kafka-data`), when that process is a
/// Kafka broker; otherwise the first `kafka.Kafka` JVM found in /proc.
pub fn kafka_pid() -> Option<u32> {
    let is_kafka = |pid: u32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == b"kafka.Kafka"))
    };
    let data = std::env::var("KAFKA_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| crate::cache_dir().join("kafka-data"));
    let from_file = std::fs::read_to_string(data.join("kafka.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .filter(|p| is_kafka(*p));
    from_file.or_else(|| {
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|p| is_kafka(*p))
    })
}

static KAFKA: OnceCell<String> = OnceCell::const_new();

/// Makes sure the broker answers; returns its address.
pub async fn ensure_kafka() -> anyhow::Result<String> {
    KAFKA
        .get_or_try_init(|| async {
            let brokers = kafka_brokers();
            if answers(&brokers).await {
                return Ok(brokers);
            }
            let script = repo_root().join("scripts/kafka.sh");
            let status = tokio::process::Command::new("bash")
                .arg(&script)
                .arg("up")
                .status()
                .await
                .with_context(|| format!("running {}", script.display()))?;
            if !status.success() || !answers(&brokers).await {
                bail!(
                    "Kafka is not running on {brokers} and `scripts/kafka.sh up` could not start it \
                     ({status}); run `just bootstrap` (needs Java 17+ and Maven) and see its log"
                );
            }
            Ok(brokers)
        })
        .await
        .cloned()
}

async fn answers(addr: &str) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// A Kafka broker of one test's own (its own ports and data folder), for tests that stop
/// and start the broker without disturbing the others. Stopped when dropped.
#[derive(Debug)]
pub struct DedicatedKafka {
    pub port: u16,
    controller_port: u16,
    data: tempfile::TempDir,
    running: bool,
}

impl DedicatedKafka {
    /// A free port is only free until someone else binds it (another test's broker or
    /// sidecar may take it between the pick and Kafka's bind): a start that fails is tried
    /// again, twice at most, on new ports and new storage.
    pub async fn start() -> anyhow::Result<Self> {
        let mut attempt = 1;
        loop {
            let mut k = Self {
                port: crate::free_port()?,
                controller_port: crate::free_port()?,
                data: tempfile::Builder::new().prefix("kafka-").tempdir()?,
                running: false,
            };
            match k.up().await {
                Ok(()) => return Ok(k),
                Err(e) if attempt < 3 => {
                    eprintln!("dedicated Kafka, attempt {attempt}: {e:#}; trying new ports");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn script(&self, action: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("bash");
        c.arg(repo_root().join("scripts/kafka.sh"))
            .arg(action)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", self.controller_port.to_string())
            .env("KAFKA_DATA_DIR", self.data.path());
        c
    }

    /// Starts (or restarts) the broker and waits until it answers.
    pub async fn up(&mut self) -> anyhow::Result<()> {
        let status = self.script("up").status().await?;
        if !status.success() {
            bail!(
                "starting a dedicated Kafka failed ({status}); log: {}/kafka.log",
                self.data.path().display()
            );
        }
        self.running = true;
        Ok(())
    }

    /// Stops the broker cleanly.
    pub async fn down(&mut self) -> anyhow::Result<()> {
        let status = self.script("down").status().await?;
        if !status.success() {
            bail!("stopping the dedicated Kafka failed ({status})");
        }
        self.running = false;
        Ok(())
    }
}

impl Drop for DedicatedKafka {
    fn drop(&mut self) {
        if self.running {
            let _ = std::process::Command::new("bash")
                .arg(repo_root().join("scripts/kafka.sh"))
                .arg("down")
                .env("KAFKA_PORT", self.port.to_string())
                .env("KAFKA_DATA_DIR", self.data.path())
                .status();
        }
    }
}

/// A copy of dapr-components/ whose Kafka component points at `brokers`.
pub fn resources_for(brokers: &str) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("components-").tempdir()?;
    let src = repo_root().join("dapr-components");
    for entry in std::fs::read_dir(&src)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path)?.replace(
                &format!("\"{}\"", kafka_brokers()),
                &format!("\"{brokers}\""),
            );
            let name = path.file_name().context("a file name")?;
            std::fs::write(dir.path().join(name), text)?;
        }
    }
    Ok(dir)
}
