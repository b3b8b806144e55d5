//! The local stack: a Kafka-API broker (tansu, sqlite storage) and the development CQL server,
//! started as detached processes with pid files under `target/local-stack/<name>/`.

use std::{
    fs,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use pipeline_runtime::{cassandra::CassandraArgs, kafka::KafkaArgs};

use crate::{cargo, project_root};

/// Version of the Kafka-API broker we install.
pub const TANSU_VERSION: &str = "0.6.0";

/// One stack: its state directory and ports.
#[derive(Debug, Clone)]
pub struct Stack {
    pub name: &'static str,
    pub dir: PathBuf,
    pub kafka_port: u16,
    pub cql_port: u16,
    pub partitions: i32,
}

impl Stack {
    /// The stack of `cargo xtask services` and `cargo xtask up` (the services' default ports).
    pub fn dev(partitions: i32) -> Self {
        Self::named("dev", 9092, 9042, partitions)
    }

    /// The stack of `cargo xtask test`: other ports and state, so it never disturbs `dev`.
    pub fn test() -> Self {
        Self::named("test", 19092, 19042, 3)
    }

    pub fn named(name: &'static str, kafka_port: u16, cql_port: u16, partitions: i32) -> Self {
        let dir = project_root().join("target").join("local-stack").join(name);
        Self {
            name,
            dir,
            kafka_port,
            cql_port,
            partitions,
        }
    }

    pub fn kafka_addr(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }

    pub fn cql_addr(&self) -> String {
        format!("127.0.0.1:{}", self.cql_port)
    }

    /// Environment that points the services (and tests) at this stack.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KAFKA_BROKER", self.kafka_addr()),
            ("CASSANDRA_NODES", self.cql_addr()),
            // The development CQL server has no schema versions and a single replica.
            ("CASSANDRA_AWAIT_SCHEMA_AGREEMENT", "false".into()),
            ("CASSANDRA_CONSISTENCY", "one".into()),
        ]
    }

    fn components(&self) -> [Component; 2] {
        [Component::Broker, Component::Cql]
    }

    fn pid_file(&self, c: Component) -> PathBuf {
        self.dir.join(format!("{}.pid", c.name()))
    }

    fn log_file(&self, c: Component) -> PathBuf {
        self.dir.join(format!("{}.log", c.name()))
    }

    fn port(&self, c: Component) -> u16 {
        match c {
            Component::Broker => self.kafka_port,
            Component::Cql => self.cql_port,
        }
    }

    /// Pid of a component we started, if it still runs.
    fn running_pid(&self, c: Component) -> Option<i32> {
        let pid: i32 = fs::read_to_string(self.pid_file(c))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        // Guard against a recycled pid: the process must still be our binary.
        String::from_utf8_lossy(&cmdline)
            .contains(c.binary_name())
            .then_some(pid)
    }

    /// Starts both servers (if not running), waits until they answer real requests, creates the
    /// topics and applies the migrations.
    pub async fn start(&self, clean: bool) -> anyhow::Result<()> {
        let tansu = ensure_tansu()?;
        cargo(
            &[
                "build",
                "--quiet",
                "-p",
                "cql-dev-server",
                "-p",
                "cassandra-writer",
            ],
            false,
        )?;
        if clean {
            self.stop()?;
            if self.dir.exists() {
                fs::remove_dir_all(&self.dir)
                    .with_context(|| format!("remove {}", self.dir.display()))?;
            }
        }
        fs::create_dir_all(&self.dir)?;
        for c in self.components() {
            if let Some(pid) = self.running_pid(c) {
                println!(
                    "{:<7} already running (pid {pid}, stack {})",
                    c.name(),
                    self.name
                );
                continue;
            }
            if port_open(self.port(c)) {
                bail!(
                    "port {} is taken by a process this stack did not start; stop it first",
                    self.port(c)
                );
            }
            let pid = self.spawn(c, &tansu)?.id();
            println!("{:<7} started (pid {pid}) on {}", c.name(), self.port(c));
        }
        self.wait_ready().await?;
        KafkaArgs::new(self.kafka_addr())
            .ensure_topics(&log_schema_topics(), self.partitions, 1)
            .await
            .context("create the pipeline topics")?;
        println!(
            "topics  {} ({} partitions each)",
            log_schema_topics().join(", "),
            self.partitions
        );
        let status = Command::new(crate::bin_path("cassandra-writer", false))
            .arg("migrate")
            .envs(self.env())
            .env("RUST_LOG", "warn,scylla=error")
            .status()
            .context("run cassandra-writer migrate")?;
        if !status.success() {
            bail!("cassandra-writer migrate failed ({status})");
        }
        println!("schema  ip_logs keyspace migrated");
        Ok(())
    }

    /// Starts one component detached, writes its pid file, returns its pid.
    fn spawn(&self, c: Component, tansu: &Path) -> anyhow::Result<std::process::Child> {
        let mut cmd = match c {
            Component::Broker => {
                let url = format!("tcp://{}", self.kafka_addr());
                let mut cmd = Command::new(tansu);
                cmd.args([
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                    "--storage-engine",
                    "sqlite://tansu.db",
                ]);
                cmd
            }
            Component::Cql => {
                let mut cmd = Command::new(crate::bin_path("cql-dev-server", false));
                cmd.args(["--listen", &self.cql_addr()]);
                cmd
            }
        };
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file(c))?;
        let child = detached(&mut cmd)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", c.name()))?;
        fs::write(self.pid_file(c), child.id().to_string())?;
        Ok(child)
    }

    /// Pid of a running component (`broker` or `cql`) that this stack started.
    pub fn pid(&self, name: &str) -> Option<i32> {
        self.components()
            .into_iter()
            .find(|c| c.name() == name)
            .and_then(|c| self.running_pid(c))
    }

    /// Stops the broker and starts it again on the same storage; waits until it answers.
    pub async fn restart_broker(&self) -> anyhow::Result<()> {
        let tansu = ensure_tansu()?;
        if let Some(pid) = self.running_pid(Component::Broker) {
            terminate(pid, Duration::from_secs(10));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while port_open(self.kafka_port) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut child = self.spawn(Component::Broker, &tansu)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !port_open(self.kafka_port) {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the restarted broker exited ({status}); see {}",
                    self.log_file(Component::Broker).display()
                );
            }
            if Instant::now() > deadline {
                bail!("the restarted broker does not listen after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.wait_ready().await
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        for c in self.components() {
            while !port_open(self.port(c)) {
                // Check liveness by pid only: right after exec, /proc/<pid>/cmdline can briefly
                // be empty, so the binary-name guard of `running_pid` would misfire here.
                let pid = fs::read_to_string(self.pid_file(c))
                    .ok()
                    .and_then(|p| p.trim().parse().ok());
                if !pid.is_some_and(alive) {
                    bail!("{} exited; see {}", c.name(), self.log_file(c).display());
                }
                if Instant::now() > deadline {
                    bail!(
                        "{} did not listen within 60 s; see {}",
                        c.name(),
                        self.log_file(c).display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Real requests: broker metadata and a CQL session (the driver queries system tables).
        let admin = KafkaArgs::new(self.kafka_addr()).admin()?;
        loop {
            match admin.inner().fetch_metadata(None, Duration::from_secs(5)) {
                Ok(m) if !m.brokers().is_empty() => break,
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Ok(_) => bail!("broker reports no brokers"),
                Err(e) => return Err(e).context("broker does not answer metadata requests"),
            }
        }
        let mut cql = CassandraArgs::new(self.cql_addr(), "ip_logs");
        cql.await_schema_agreement = false;
        loop {
            match cql.connect().await {
                Ok(_) => break,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(e) => return Err(e).context("CQL server does not answer"),
            }
        }
        Ok(())
    }

    /// Stops exactly the processes `start` began; waits until their ports are free.
    pub fn stop(&self) -> anyhow::Result<()> {
        for c in self.components() {
            let Some(pid) = self.running_pid(c) else {
                let _ = fs::remove_file(self.pid_file(c));
                continue;
            };
            terminate(pid, Duration::from_secs(10));
            let _ = fs::remove_file(self.pid_file(c));
            println!("{:<7} stopped (pid {pid})", c.name());
        }
        for c in self.components() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while port_open(self.port(c)) {
                if Instant::now() > deadline {
                    bail!(
                        "port {} is still open after stopping {}",
                        self.port(c),
                        c.name()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    pub fn status(&self) -> bool {
        let mut all = true;
        for c in self.components() {
            match self.running_pid(c) {
                Some(pid) => println!(
                    "{:<7} running  pid {pid:<8} 127.0.0.1:{} ({})  log {}",
                    c.name(),
                    self.port(c),
                    if port_open(self.port(c)) {
                        "listening"
                    } else {
                        "not listening"
                    },
                    self.log_file(c).display()
                ),
                None => {
                    all = false;
                    println!("{:<7} stopped", c.name())
                }
            }
        }
        all
    }
}

fn log_schema_topics() -> Vec<&'static str> {
    // The same names the services use by default (log-schema is the single source).
    vec![
        "ip_logs",
        "ip_logs_validated",
        "ip_logs_dlq",
        "ip_stats",
        "ip_alerts",
    ]
}

#[derive(Debug, Clone, Copy)]
enum Component {
    Broker,
    Cql,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Component::Broker => "broker",
            Component::Cql => "cql",
        }
    }

    fn binary_name(self) -> &'static str {
        match self {
            Component::Broker => "tansu",
            Component::Cql => "cql-dev-server",
        }
    }
}

/// Puts the child in its own process group, so a Ctrl-C at the terminal does not reach it and
/// `stop` can signal the whole group.
pub fn detached(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0)
}

pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// SIGTERM, then SIGKILL after `grace`.
pub fn terminate(pid: i32, grace: Duration) {
    signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        signal(pid, libc::SIGKILL);
        while alive(pid) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn signal(pid: i32, sig: i32) {
    #[allow(unsafe_code)] // reason: kill(2) has no safe std wrapper; pid and signal are plain ints
    unsafe {
        libc::kill(pid, sig);
    }
}

pub fn alive(pid: i32) -> bool {
    // A zombie (exited, not yet reaped by its parent) counts as gone.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The tansu binary: found on PATH or in cargo's bin dir, else installed (once per machine).
pub fn ensure_tansu() -> anyhow::Result<PathBuf> {
    if let Some(p) = find_tansu() {
        return Ok(p);
    }
    println!(
        "Installing the local Kafka-API broker: cargo install tansu {TANSU_VERSION} \
         --features dynostore,libsql (once per machine, ~15 min on 2 cores)..."
    );
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "install",
            "tansu",
            "--locked",
            "--version",
            TANSU_VERSION,
            "--features",
            "dynostore,libsql",
        ])
        .status()
        .context("run cargo install tansu")?;
    if !status.success() {
        bail!("cargo install tansu failed ({status})");
    }
    find_tansu().context("tansu was installed but is not found in $CARGO_HOME/bin or PATH")
}

fn find_tansu() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(home) = std::env::var("CARGO_HOME") {
        candidates.push(Path::new(&home).join("bin/tansu"));
    }
    if let Ok(home) = std::env::var("HOME") {
        candidates.push(Path::new(&home).join(".cargo/bin/tansu"));
    }
    if let Ok(path) = std::env::var("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|p| p.join("tansu")));
    }
    candidates.into_iter().find(|p| {
        p.is_file()
            && Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(TANSU_VERSION))
    })
}
