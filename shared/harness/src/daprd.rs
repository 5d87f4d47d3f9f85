//! A real daprd sidecar per app under test, on free ports, logging under target/test-logs.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::{Child, Command},
};

use crate::{cache_dir, free_port, log_dir, repo_root};

/// How to start a sidecar.
#[derive(Debug, Clone)]
pub struct DaprdOptions {
    pub app_id: String,
    /// The app's gRPC port; `None` for a sidecar used only to publish.
    pub app_port: Option<u16>,
    /// `APP_API_TOKEN`: daprd sends it to the app as `dapr-api-token`.
    pub app_api_token: Option<String>,
    /// `DAPR_API_TOKEN`: daprd requires it from the app.
    pub dapr_api_token: Option<String>,
    /// The resources folder (default: the repository's dapr-components/).
    pub resources_path: PathBuf,
    /// The Configuration file (default: dapr-components/configuration.yaml).
    pub config: PathBuf,
    /// The sidecar's gRPC port, when the app must know it before daprd starts.
    pub grpc_port: Option<u16>,
}

impl DaprdOptions {
    pub fn new(app_id: impl Into<String>, app_port: Option<u16>) -> Self {
        let components = repo_root().join("dapr-components");
        Self {
            app_id: app_id.into(),
            app_port,
            app_api_token: None,
            dapr_api_token: None,
            config: components.join("configuration.yaml"),
            resources_path: components,
            grpc_port: None,
        }
    }
}

/// A running daprd. Killed when dropped (also when the test fails).
#[derive(Debug)]
pub struct Daprd {
    child: Option<Child>,
    pub options: DaprdOptions,
    pub grpc_port: u16,
    pub http_port: u16,
    pub log_path: PathBuf,
    ports: [u16; 3],
}

/// How often [`Daprd::start`] tries when daprd loses one of its ports to another process.
pub const PORT_RACE_ATTEMPTS: u32 = 3;

/// The daprd binary `just bootstrap` built.
pub fn daprd_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var("DAPRD")
        .map(PathBuf::from)
        .unwrap_or_else(|_| cache_dir().join("bin/daprd"));
    if !path.exists() {
        bail!(
            "daprd not found at {}: run `just bootstrap` (builds daprd from Dapr's Go module)",
            path.display()
        );
    }
    Ok(path)
}

impl Daprd {
    /// Starts daprd and waits until it reports healthy (its app, if any, must be serving).
    ///
    /// Its ports are ones that were free a moment ago; tests running in parallel can take
    /// one in between. A daprd that exits because it could not listen is started again on
    /// fresh ports (at most [`PORT_RACE_ATTEMPTS`] times); any other failure is returned.
    pub async fn start(options: DaprdOptions) -> anyhow::Result<Self> {
        let mut attempt = 1;
        loop {
            let mut d = Self {
                child: None,
                grpc_port: match options.grpc_port {
                    Some(p) => p,
                    None => free_port()?,
                },
                http_port: free_port()?,
                log_path: log_dir().join(format!("daprd-{}.log", options.app_id)),
                options: options.clone(),
                ports: [free_port()?, free_port()?, free_port()?],
            };
            match d.spawn().await {
                Ok(()) => return Ok(d),
                Err(e) if attempt < PORT_RACE_ATTEMPTS && d.lost_a_port_race() => {
                    tracing::warn!(error = %e, attempt, "daprd lost a port to another process: starting it on fresh ports");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether daprd's log says it could not listen on a port it was given.
    fn lost_a_port_race(&self) -> bool {
        std::fs::read_to_string(&self.log_path).is_ok_and(|log| {
            log.contains("could not listen") || log.contains("address already in use")
        })
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let bin = daprd_binary()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        let o = &self.options;
        let mut cmd = Command::new(bin);
        cmd.args(["--app-id", &o.app_id, "--mode", "standalone"])
            .args(["--dapr-grpc-port", &self.grpc_port.to_string()])
            .args(["--dapr-http-port", &self.http_port.to_string()])
            .args(["--dapr-internal-grpc-port", &self.ports[0].to_string()])
            .args(["--metrics-port", &self.ports[1].to_string()])
            .args(["--profile-port", &self.ports[2].to_string()])
            .args(["--dapr-listen-addresses", "127.0.0.1"])
            .args(["--metrics-listen-address", "127.0.0.1"])
            .arg("--resources-path")
            .arg(&o.resources_path)
            .arg("--config")
            .arg(&o.config)
            // Pub/sub alone needs neither placement nor scheduler: do not wait for them.
            .args([
                "--placement-host-address",
                "",
                "--scheduler-host-address",
                "",
            ])
            .args([
                "--log-level",
                "info",
                "--dapr-graceful-shutdown-seconds",
                "3",
            ])
            .env_remove("APP_API_TOKEN")
            .env_remove("DAPR_API_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if let Some(port) = o.app_port {
            cmd.args(["--app-port", &port.to_string(), "--app-protocol", "grpc"])
                .args(["--app-channel-address", "127.0.0.1"]);
        }
        if let Some(t) = &o.app_api_token {
            cmd.env("APP_API_TOKEN", t);
        }
        if let Some(t) = &o.dapr_api_token {
            cmd.env("DAPR_API_TOKEN", t);
        }
        self.child = Some(cmd.spawn().context("spawning daprd")?);
        self.wait_healthy(Duration::from_secs(60)).await
    }

    /// The running daprd's process id (a new one after [`Daprd::restart`]), for a benchmark
    /// that measures its CPU and memory.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// `http://127.0.0.1:<grpc port>`: what the publisher connects to.
    pub fn grpc_address(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "daprd exited during start ({status}); log: {}",
                    self.log_path.display()
                );
            }
            if http_status(self.http_port, "/v1.0/healthz").await == Some(204) {
                return Ok(());
            }
            if started.elapsed() > timeout {
                bail!(
                    "daprd {} not healthy after {timeout:?}; log: {}",
                    self.options.app_id,
                    self.log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops daprd gracefully (SIGTERM), killing it if it does not exit in 10 s.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts it again on the same ports with the same options.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.spawn().await
    }
}

impl Drop for Daprd {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// The status code of `GET path` on 127.0.0.1:port, or `None` when nothing answers.
async fn http_status(port: u16, path: &str) -> Option<u16> {
    let fut = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.ok()?;
        let head = std::str::from_utf8(&buf[..n]).ok()?;
        head.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .ok()
        .flatten()
}
