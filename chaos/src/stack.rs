//! The system under test as separate OS processes: a Kafka broker and a PostgreSQL server
//! of the run's own, each service binary with its own daprd, and the nemesis's hands on
//! them (SIGKILL and start again, immediate shutdown, SIGSTOP/SIGCONT).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{
    net::TcpStream,
    process::{Child, Command},
};

use crate::nemesis::{Fault, Kind, Target};

/// One service process of the stack: its binary and the variables of its own.
#[derive(Debug, Clone, Copy)]
pub struct App {
    /// The process's name in the report (and the replica's label).
    pub name: &'static str,
    /// The binary under target/<profile>/.
    pub binary: &'static str,
    /// Its Dapr app id (both task-service replicas share one, as in a cluster).
    pub app_id: &'static str,
    /// Which database it gets: task-service's, audit-service's, or none.
    pub database: Db,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    None,
    Tasks,
    Audit,
    DeadLetters,
}

/// The service processes, in the order the nemesis indexes them.
pub const APPS: [App; 7] = [
    App {
        name: "task-service-a",
        binary: "task-service",
        app_id: "task-service",
        database: Db::Tasks,
    },
    App {
        name: "task-service-b",
        binary: "task-service",
        app_id: "task-service",
        database: Db::Tasks,
    },
    App {
        name: "recurring-task-service",
        binary: "recurring-task-service",
        app_id: "recurring-task-service",
        database: Db::None,
    },
    App {
        name: "notification-service",
        binary: "notification-service",
        app_id: "notification-service",
        database: Db::None,
    },
    App {
        name: "audit-service",
        binary: "audit-service",
        app_id: "audit-service",
        database: Db::Audit,
    },
    App {
        name: "sync-service",
        binary: "sync-service",
        app_id: "sync-service",
        database: Db::None,
    },
    App {
        name: "dead-letter-service",
        binary: "dead-letter-service",
        app_id: "dead-letter-service",
        database: Db::DeadLetters,
    },
];

/// Index of the notification-service in [`APPS`].
pub const NOTIFICATION: usize = 3;
/// Index of the audit-service in [`APPS`].
pub const AUDIT: usize = 4;
/// Index of the sync-service in [`APPS`].
pub const SYNC: usize = 5;
/// Index of the dead-letter-service in [`APPS`].
pub const DEAD_LETTERS: usize = 6;

/// sync-service's heartbeat in the run (`SYNC_HEARTBEAT_MS`): short, so a watcher tells a
/// frozen stream (sync-service paused) from a quiet one within a few seconds.
pub const SYNC_HEARTBEAT: Duration = Duration::from_secs(2);

/// How long a process may take to answer after it was (re)started.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A child process the stack can kill, pause and start again with the same command.
struct Proc {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("APP_API_TOKEN")
            .env_remove("DAPR_API_TOKEN")
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        self.child = Some(
            cmd.spawn()
                .with_context(|| format!("spawning {} ({})", self.name, self.program.display()))?,
        );
        Ok(())
    }

    fn pid(&self) -> Option<Pid> {
        self.child
            .as_ref()
            .and_then(Child::id)
            .and_then(|p| i32::try_from(p).ok())
            .map(Pid::from_raw)
    }

    fn signal(&self, s: Signal) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running", self.name))?;
        nix::sys::signal::kill(pid, s).with_context(|| format!("{s} to {}", self.name))
    }

    async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill().ok();
            child.wait().await?;
        }
        Ok(())
    }

    /// Whether it exited on its own (a crash the nemesis did not cause).
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

/// Ports of one service and its sidecar.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub app: u16,
    pub dapr_grpc: u16,
    pub dapr_http: u16,
    extra: [u16; 3],
}

impl Ports {
    fn fresh() -> anyhow::Result<Self> {
        use todo_harness::free_port;
        Ok(Self {
            app: free_port()?,
            dapr_grpc: free_port()?,
            dapr_http: free_port()?,
            extra: [free_port()?, free_port()?, free_port()?],
        })
    }
}

/// Where the run keeps its files, and what it was started with.
pub struct StackConfig {
    pub run_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub prefix: String,
    pub pg_port: u16,
}

/// The running system.
pub struct Stack {
    pub cfg: StackConfig,
    pub kafka_port: u16,
    kafka_controller_port: u16,
    pub resources: PathBuf,
    pub ports: Vec<Ports>,
    apps: Vec<Proc>,
    sidecars: Vec<Proc>,
    pub pg_admin_url: String,
    pub tasks_db: (String, String),
    pub audit_db: (String, String),
    pub dead_letters_db: (String, String),
}

fn repo() -> PathBuf {
    todo_harness::repo_root()
}

async fn script(name: &str, action: &str, env: &[(&str, String)]) -> anyhow::Result<()> {
    let path = repo().join("scripts").join(name);
    let out = Command::new("bash")
        .arg(&path)
        .arg(action)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", path.display()))?;
    if !out.status.success() {
        bail!(
            "{name} {action} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Waits until something accepts TCP connections on 127.0.0.1:port.
async fn wait_port(port: u16, what: &str, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if let Ok(Ok(_)) = tokio::time::timeout(
            Duration::from_secs(1),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("{what} does not answer on 127.0.0.1:{port} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until daprd's /v1.0/healthz answers 204.
async fn wait_daprd(port: u16, what: &str, timeout: Duration) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let start = Instant::now();
    loop {
        let probe = async {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            s.write_all(b"GET /v1.0/healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                .await
                .ok()?;
            let mut buf = [0u8; 32];
            let n = s.read(&mut buf).await.ok()?;
            Some(String::from_utf8_lossy(&buf[..n]).contains(" 204"))
        };
        if let Ok(Some(true)) = tokio::time::timeout(Duration::from_secs(2), probe).await {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("{what} not healthy after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Stack {
    fn kafka_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KAFKA_PORT", self.kafka_port.to_string()),
            (
                "KAFKA_CONTROLLER_PORT",
                self.kafka_controller_port.to_string(),
            ),
            (
                "KAFKA_DATA_DIR",
                self.cfg.run_dir.join("kafka").display().to_string(),
            ),
        ]
    }

    fn pg_env(&self) -> Vec<(&'static str, String)> {
        vec![("PG_PORT", self.cfg.pg_port.to_string())]
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }

    /// Starts Kafka and PostgreSQL of the run, makes the databases; no service yet.
    pub async fn infrastructure(cfg: StackConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(cfg.run_dir.join(".data"))?;
        std::fs::create_dir_all(cfg.run_dir.join("logs"))?;
        let mut s = Self {
            kafka_port: todo_harness::free_port()?,
            kafka_controller_port: todo_harness::free_port()?,
            resources: PathBuf::new(),
            ports: Vec::new(),
            apps: Vec::new(),
            sidecars: Vec::new(),
            pg_admin_url: format!("postgres://todo:todo@127.0.0.1:{}/todo", cfg.pg_port),
            tasks_db: Default::default(),
            audit_db: Default::default(),
            dead_letters_db: Default::default(),
            cfg,
        };
        script("kafka.sh", "up", &s.kafka_env()).await?;
        script("pg.sh", "up", &s.pg_env()).await?;
        s.tasks_db = todo_harness::pg::create_database(&s.pg_admin_url, "chaos_tasks").await?;
        s.audit_db = todo_harness::pg::create_database(&s.pg_admin_url, "chaos_audit").await?;
        s.dead_letters_db =
            todo_harness::pg::create_database(&s.pg_admin_url, "chaos_dead_letters").await?;
        // The components, pointing at this run's broker; the notification state store's
        // relative path lands in the run's folder (daprd runs there).
        let resources = s.cfg.run_dir.join("components");
        std::fs::create_dir_all(&resources)?;
        let src = todo_harness::resources_for(&s.brokers())?;
        for entry in std::fs::read_dir(src.path())? {
            let path = entry?.path();
            if let Some(name) = path.file_name() {
                std::fs::copy(&path, resources.join(name))?;
            }
        }
        s.resources = resources;
        Ok(s)
    }

    /// Starts every service and its sidecar.
    pub async fn services(&mut self) -> anyhow::Result<()> {
        for (i, app) in APPS.iter().enumerate() {
            let ports = Ports::fresh()?;
            self.ports.push(ports);
            let mut env: Vec<(String, String)> = vec![
                ("APP_ADDR".into(), format!("127.0.0.1:{}", ports.app)),
                ("DAPR_GRPC_PORT".into(), ports.dapr_grpc.to_string()),
                ("METRICS_ADDR".into(), "off".into()),
                ("AUTH_MODE".into(), "dev".into()),
                ("TOPIC_PREFIX".into(), self.cfg.prefix.clone()),
                (
                    "RUST_LOG".into(),
                    "info,sqlx=warn,sea_orm=warn,h2=warn,tower=warn".into(),
                ),
            ];
            match app.database {
                Db::Tasks => env.push(("DATABASE_URL".into(), self.tasks_db.1.clone())),
                Db::Audit => env.push(("DATABASE_URL".into(), self.audit_db.1.clone())),
                Db::DeadLetters => {
                    env.push(("DATABASE_URL".into(), self.dead_letters_db.1.clone()));
                    env.push(("DATABASE_MAX_CONNECTIONS".into(), "4".into()));
                }
                Db::None => {}
            }
            if i == SYNC {
                env.push((
                    "SYNC_HEARTBEAT_MS".into(),
                    SYNC_HEARTBEAT.as_millis().to_string(),
                ));
            }
            let logs = self.cfg.run_dir.join("logs");
            self.apps.push(Proc {
                name: app.name.to_owned(),
                program: self.cfg.bin_dir.join(app.binary),
                args: Vec::new(),
                env,
                cwd: self.cfg.run_dir.clone(),
                log: logs.join(format!("{}.log", app.name)),
                child: None,
            });
            let daprd = todo_harness::cache_dir().join("bin/daprd");
            if !daprd.exists() {
                bail!("{} is missing: run `just bootstrap`", daprd.display());
            }
            let p = |n: u16| n.to_string();
            let args = vec![
                "--app-id".into(),
                app.app_id.to_owned(),
                "--mode".into(),
                "standalone".into(),
                "--app-port".into(),
                p(ports.app),
                "--app-protocol".into(),
                "grpc".into(),
                "--app-channel-address".into(),
                "127.0.0.1".into(),
                "--dapr-grpc-port".into(),
                p(ports.dapr_grpc),
                "--dapr-http-port".into(),
                p(ports.dapr_http),
                "--dapr-internal-grpc-port".into(),
                p(ports.extra[0]),
                "--metrics-port".into(),
                p(ports.extra[1]),
                "--profile-port".into(),
                p(ports.extra[2]),
                "--dapr-listen-addresses".into(),
                "127.0.0.1".into(),
                "--metrics-listen-address".into(),
                "127.0.0.1".into(),
                "--resources-path".into(),
                self.resources.display().to_string(),
                "--config".into(),
                self.resources
                    .join("configuration.yaml")
                    .display()
                    .to_string(),
                "--placement-host-address".into(),
                String::new(),
                "--scheduler-host-address".into(),
                String::new(),
                "--log-level".into(),
                "warn".into(),
                "--dapr-graceful-shutdown-seconds".into(),
                "3".into(),
            ];
            self.sidecars.push(Proc {
                name: format!("{}-daprd", app.name),
                program: daprd,
                args,
                env: Vec::new(),
                cwd: self.cfg.run_dir.clone(),
                log: logs.join(format!("{}-daprd.log", app.name)),
                child: None,
            });
            self.start_app(i).await?;
            self.start_sidecar(i).await?;
        }
        Ok(())
    }

    async fn start_app(&mut self, i: usize) -> anyhow::Result<()> {
        self.apps[i].spawn()?;
        let name = self.apps[i].name.clone();
        wait_port(self.ports[i].app, &name, START_TIMEOUT).await
    }

    async fn start_sidecar(&mut self, i: usize) -> anyhow::Result<()> {
        self.sidecars[i].spawn()?;
        let name = self.sidecars[i].name.clone();
        wait_daprd(self.ports[i].dapr_http, &name, START_TIMEOUT).await
    }

    /// The gRPC address of service `i`.
    pub fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[i].app)
    }

    /// The report's name of a target.
    pub fn name(&self, t: Target) -> String {
        match t {
            Target::Kafka => "kafka".into(),
            Target::Postgres => "postgresql".into(),
            Target::App(i) => APPS[i].name.into(),
            Target::Sidecar(i) => format!("{}-daprd", APPS[i].name),
        }
    }

    fn kafka_pid(&self) -> anyhow::Result<Pid> {
        let file = self.cfg.run_dir.join("kafka/kafka.pid");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        Ok(Pid::from_raw(text.trim().parse().context("kafka.pid")?))
    }

    fn postmaster_pid(&self) -> anyhow::Result<Pid> {
        let home = Path::new("/var/lib/postgresql");
        let file = home.join(format!("todo-dapr-{}/postmaster.pid", self.cfg.pg_port));
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let first = text.lines().next().unwrap_or_default();
        Ok(Pid::from_raw(
            first.trim().parse().context("postmaster.pid")?,
        ))
    }

    /// Applies one fault and heals it: answers when the target serves again.
    pub async fn apply(&mut self, f: &Fault) -> anyhow::Result<()> {
        use nix::sys::signal::kill;
        match (f.kind, f.target) {
            (Kind::Kill, Target::Kafka) => {
                let pid = self.kafka_pid()?;
                kill(pid, Signal::SIGKILL)?;
                // A killed JVM takes a moment to go (its heap is unmapped): `kafka.sh up`
                // must not find it still there and wait on it as a broker starting (seed
                // 20261202 failed so after a 1 s fault).
                wait_gone(pid).await?;
                tokio::time::sleep(f.down).await;
                script("kafka.sh", "up", &self.kafka_env()).await?;
            }
            (Kind::Pause, Target::Kafka) => {
                let pid = self.kafka_pid()?;
                kill(pid, Signal::SIGSTOP)?;
                tokio::time::sleep(f.down).await;
                kill(pid, Signal::SIGCONT)?;
            }
            (_, Target::Postgres) => {
                // SIGQUIT is PostgreSQL's immediate shutdown: no checkpoint, crash recovery
                // at the next start, every connection cut.
                kill(self.postmaster_pid()?, Signal::SIGQUIT)?;
                tokio::time::sleep(f.down).await;
                let start = Instant::now();
                // pg_ctl may still see the old postmaster for a moment.
                loop {
                    match script("pg.sh", "up", &self.pg_env()).await {
                        Ok(()) => break,
                        Err(e) if start.elapsed() < START_TIMEOUT => {
                            tracing::debug!(error = %e, "postgresql not back yet");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            (Kind::Kill | Kind::Restart, Target::App(i)) => {
                self.apps[i].kill().await?;
                tokio::time::sleep(f.down).await;
                self.start_app(i).await?;
            }
            (Kind::Kill | Kind::Restart, Target::Sidecar(i)) => {
                self.sidecars[i].kill().await?;
                tokio::time::sleep(f.down).await;
                self.start_sidecar(i).await?;
            }
            (Kind::Pause, Target::App(i)) => {
                self.apps[i].signal(Signal::SIGSTOP)?;
                tokio::time::sleep(f.down).await;
                self.apps[i].signal(Signal::SIGCONT)?;
            }
            (Kind::Pause, Target::Sidecar(i)) => {
                self.sidecars[i].signal(Signal::SIGSTOP)?;
                tokio::time::sleep(f.down).await;
                self.sidecars[i].signal(Signal::SIGCONT)?;
            }
            (Kind::Restart, Target::Kafka) => bail!("no such fault: restart kafka"),
        }
        Ok(())
    }

    /// Processes that died without the nemesis: (name, status).
    pub fn crashed(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for p in self.apps.iter_mut().chain(self.sidecars.iter_mut()) {
            if let Some(status) = p.exited() {
                out.push((p.name.clone(), status.to_string()));
            }
        }
        out
    }

    /// Starts again whatever died on its own (after reporting it).
    pub async fn revive(&mut self) -> anyhow::Result<()> {
        for i in 0..self.apps.len() {
            if self.apps[i].exited().is_some() {
                self.start_app(i).await?;
            }
            if self.sidecars[i].exited().is_some() {
                self.start_sidecar(i).await?;
            }
        }
        Ok(())
    }

    /// A service's log (all its lives appended).
    pub fn app_log(&self, i: usize) -> PathBuf {
        self.apps[i].log.clone()
    }

    /// Stops everything this run started and drops its databases and the broker's log
    /// (both kept with `keep`, e.g. to read the topics with `kafka.tools.DumpLogSegments`).
    pub async fn teardown(&mut self, keep_databases: bool) {
        for p in self.sidecars.iter_mut().chain(self.apps.iter_mut()) {
            if p.signal(Signal::SIGCONT).is_ok() {
                let _ = p.kill().await;
            }
        }
        if let Err(e) = script("kafka.sh", "down", &self.kafka_env()).await {
            eprintln!("chaos: stopping the run's Kafka: {e:#}");
        }
        if !keep_databases {
            for (name, _) in [&self.tasks_db, &self.audit_db, &self.dead_letters_db] {
                if !name.is_empty()
                    && let Err(e) = todo_harness::pg::drop_database(&self.pg_admin_url, name).await
                {
                    eprintln!("chaos: dropping {name}: {e:#}");
                }
            }
        }
        if let Err(e) = script("pg.sh", "down", &self.pg_env()).await {
            eprintln!("chaos: stopping the run's PostgreSQL: {e:#}");
        }
        if !keep_databases {
            let _ = std::fs::remove_dir_all(self.cfg.run_dir.join("kafka/logs"));
        }
    }
}

/// Waits until process `pid` is gone (or a zombie: it runs no more), at most
/// `START_TIMEOUT`.
async fn wait_gone(pid: Pid) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let gone = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                // The state follows the command name, which is in parentheses.
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if gone {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < START_TIMEOUT,
            "process {pid} still runs {START_TIMEOUT:?} after SIGKILL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
