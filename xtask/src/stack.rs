//! The local stack: Apache Kafka (one combined KRaft broker + controller) and Apache Cassandra
//! (one node), each a detached JVM process with a pid file under `target/local-stack/<name>/`,
//! configured by [`crate::servers`] and listening on loopback only.

use std::{
    fs,
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use pipeline_runtime::{cassandra::CassandraArgs, kafka::KafkaArgs};

pub use crate::servers::Server;
use crate::servers::{self, Classpath, Layout};

/// How long a server gets to answer real requests after it was started (a first Cassandra
/// boot on a busy 2-core machine takes ~10-30 s).
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// How long a server gets to shut down cleanly on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(45);

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

    /// A stack with Kafka on `kafka_port` (its controller on the next port) and CQL on
    /// `cql_port` (Cassandra's internode port 2042 below it: 9042 → 7000).
    pub fn named(name: &'static str, kafka_port: u16, cql_port: u16, partitions: i32) -> Self {
        let dir = crate::target_dir().join("local-stack").join(name);
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

    fn layout(&self) -> Layout {
        Layout {
            dir: self.dir.clone(),
            cluster_name: format!("ip-log-pipeline-{}", self.name),
            kafka_port: self.kafka_port,
            controller_port: self.kafka_port + 1,
            cql_port: self.cql_port,
            storage_port: self.cql_port - 2042,
        }
    }

    /// Environment that points the services (and tests) at this stack.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KAFKA_BROKER", self.kafka_addr()),
            ("CASSANDRA_NODES", self.cql_addr()),
        ]
    }

    /// [`Stack::env`] with owned names, plus `extra`: a child process's environment.
    pub fn env_with(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        self.env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain(
                extra
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            )
            .collect()
    }

    fn pid_file(&self, s: Server) -> PathBuf {
        self.dir.join(format!("{}.pid", s.name()))
    }

    pub fn log_file(&self, s: Server) -> PathBuf {
        self.dir.join(format!("{}.log", s.name()))
    }

    /// Every port a server listens on (client port first).
    fn ports(&self, s: Server) -> [u16; 2] {
        let l = self.layout();
        match s {
            Server::Kafka => [l.kafka_port, l.controller_port],
            Server::Cassandra => [l.cql_port, l.storage_port],
        }
    }

    /// Pid of a server we started, if it still runs.
    pub fn pid(&self, s: Server) -> Option<i32> {
        let pid: i32 = fs::read_to_string(self.pid_file(s))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        // Guard against a recycled pid: the process must still be our server's JVM.
        String::from_utf8_lossy(&cmdline)
            .contains(s.main_class())
            .then_some(pid)
    }

    /// Starts both servers (if not running), waits until they answer real requests, creates the
    /// topics and applies the migrations.
    pub async fn start(&self, clean: bool) -> anyhow::Result<()> {
        let java = servers::java()?;
        let classpaths = [
            servers::classpath(Server::Kafka)?,
            servers::classpath(Server::Cassandra)?,
        ];
        crate::cargo(&["build", "--quiet", "-p", "cassandra-writer"], false)?;
        if clean {
            self.stop()?;
            if self.dir.exists() {
                fs::remove_dir_all(&self.dir)
                    .with_context(|| format!("remove {}", self.dir.display()))?;
            }
        }
        fs::create_dir_all(&self.dir)?;
        let started = Instant::now();
        for (s, cp) in Server::ALL.into_iter().zip(&classpaths) {
            if let Some(pid) = self.pid(s) {
                println!(
                    "{:<9} already running (pid {pid}, stack {})",
                    s.name(),
                    self.name
                );
                continue;
            }
            let pid = self.spawn(s, &java, cp)?;
            println!(
                "{:<9} {} started (pid {pid}) on 127.0.0.1:{}",
                s.name(),
                cp.version(s),
                self.ports(s)[0]
            );
        }
        for s in Server::ALL {
            self.wait_ready(s).await?;
        }
        println!(
            "servers ready after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        KafkaArgs::new(self.kafka_addr())
            .ensure_topics(&log_schema_topics(), self.partitions, 1)
            .await
            .context("create the pipeline topics")?;
        println!(
            "topics    {} ({} partitions each)",
            log_schema_topics().join(", "),
            self.partitions
        );
        crate::procs::migrate(false, &self.env_with(&[]), None)?;
        println!("schema    ip_logs keyspace migrated");
        Ok(())
    }

    /// Writes a server's configuration (formatting Kafka's storage on first start), starts it
    /// detached, writes its pid file, returns its pid.
    fn spawn(&self, s: Server, java: &std::path::Path, cp: &Classpath) -> anyhow::Result<u32> {
        for port in self.ports(s) {
            if port_open(port) {
                bail!(
                    "port {port} (for {}) is taken by a process this stack did not start; \
                     stop it first",
                    s.name()
                );
            }
        }
        let layout = self.layout();
        let mut cmd = Command::new(java);
        match s {
            Server::Kafka => {
                let properties = servers::kafka_config(&layout)?;
                let data = layout.data_dir(s);
                if !data.join("meta.properties").exists() {
                    let out = Command::new(java)
                        .args(servers::kafka_jvm_args(&layout))
                        .arg("-cp")
                        .arg(cp.joined())
                        .args(["kafka.tools.StorageTool", "format", "--standalone", "-t"])
                        .arg(servers::kafka_cluster_id())
                        .arg("-c")
                        .arg(&properties)
                        .output()
                        .context("run kafka.tools.StorageTool format")?;
                    if !out.status.success() {
                        bail!(
                            "formatting Kafka's KRaft storage failed ({}): {}",
                            out.status,
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                }
                cmd.args(servers::kafka_jvm_args(&layout))
                    .arg("-cp")
                    .arg(cp.joined())
                    .arg(s.main_class())
                    .arg(&properties);
            }
            Server::Cassandra => {
                servers::cassandra_config(&layout)?;
                cmd.args(servers::cassandra_jvm_args(&layout))
                    .arg("-cp")
                    .arg(cp.joined())
                    .arg(s.main_class());
            }
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file(s))?;
        let child = detached(&mut cmd)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", s.name()))?;
        fs::write(self.pid_file(s), child.id().to_string())?;
        Ok(child.id())
    }

    /// Stops a server (SIGTERM, or SIGKILL when `kill`) and starts it again on the same data;
    /// waits until it answers real requests.
    pub async fn restart(&self, s: Server, kill: bool) -> anyhow::Result<()> {
        if let Some(pid) = self.pid(s) {
            if kill {
                signal(pid, libc::SIGKILL);
            }
            terminate(pid, STOP_GRACE);
        }
        self.wait_ports_free(s)?;
        let java = servers::java()?;
        let cp = servers::classpath(s)?;
        self.spawn(s, &java, &cp)?;
        self.wait_ready(s).await
    }

    /// Waits until a server answers real requests: Kafka metadata naming a broker, a CQL query.
    async fn wait_ready(&self, s: Server) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let log = self.log_file(s);
        let check_alive = || -> anyhow::Result<()> {
            // Liveness by pid only: right after exec, /proc/<pid>/cmdline can briefly be empty,
            // so the main-class guard of `pid` would misfire here.
            let pid = fs::read_to_string(self.pid_file(s))
                .ok()
                .and_then(|p| p.trim().parse().ok());
            if !pid.is_some_and(alive) {
                bail!("{} exited; see {}", s.name(), log.display());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer within {READY_TIMEOUT:?}; see {}",
                    s.name(),
                    log.display()
                );
            }
            Ok(())
        };
        while !port_open(self.ports(s)[0]) {
            check_alive()?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        match s {
            Server::Kafka => {
                let admin = KafkaArgs::new(self.kafka_addr()).admin()?;
                loop {
                    match admin.inner().fetch_metadata(None, Duration::from_secs(5)) {
                        Ok(m) if !m.brokers().is_empty() => return Ok(()),
                        _ => check_alive().context("Kafka does not answer metadata requests")?,
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Server::Cassandra => loop {
                if self.cassandra_release().await.is_ok() {
                    return Ok(());
                }
                check_alive().context("Cassandra does not answer CQL queries")?;
                tokio::time::sleep(Duration::from_millis(500)).await;
            },
        }
    }

    /// `release_version` of the running Cassandra node (a real CQL query).
    async fn cassandra_release(&self) -> anyhow::Result<String> {
        let session = CassandraArgs::new(self.cql_addr(), "system")
            .connect()
            .await?;
        let row = session
            .query_unpaged("SELECT release_version FROM system.local", &[])
            .await?
            .into_rows_result()?
            .single_row::<(String,)>()?;
        Ok(row.0)
    }

    fn wait_ports_free(&self, s: Server) -> anyhow::Result<()> {
        for port in self.ports(s) {
            let deadline = Instant::now() + Duration::from_secs(15);
            while port_open(port) {
                if Instant::now() > deadline {
                    bail!("port {port} is still open after stopping {}", s.name());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Stops exactly the processes `start` began; waits until their ports are free.
    pub fn stop(&self) -> anyhow::Result<()> {
        for s in Server::ALL {
            if let Some(pid) = self.pid(s) {
                terminate(pid, STOP_GRACE);
                println!("{:<9} stopped (pid {pid})", s.name());
            }
            let _ = fs::remove_file(self.pid_file(s));
        }
        for s in Server::ALL {
            self.wait_ports_free(s)?;
        }
        Ok(())
    }

    /// Prints version, pid, ports, heap, RSS and log of each server; true when both run.
    pub async fn status(&self) -> bool {
        let mut all = true;
        for s in Server::ALL {
            let version = servers::classpath(s)
                .map(|cp| cp.version(s))
                .unwrap_or_else(|e| format!("unresolved ({e:#})"));
            let ports = self.ports(s);
            match self.pid(s) {
                Some(pid) => {
                    let listening = ports.iter().all(|p| port_open(*p));
                    println!(
                        "{:<9} {version:<7} running  pid {pid:<8} 127.0.0.1:{} + :{} ({})  \
                         heap {} MiB  rss {} MiB  log {}",
                        s.name(),
                        ports[0],
                        ports[1],
                        if listening {
                            "listening"
                        } else {
                            "not listening"
                        },
                        s.heap_mib(),
                        rss_mib(pid).map_or("?".into(), |r| r.to_string()),
                        self.log_file(s).display()
                    );
                }
                None => {
                    all = false;
                    println!("{:<9} {version:<7} stopped", s.name());
                }
            }
        }
        if all && let Ok(release) = self.cassandra_release().await {
            println!("cassandra answers CQL: release_version {release}");
        }
        all
    }
}

/// Resident set size of a process in MiB, from `/proc/<pid>/status`.
pub fn rss_mib(pid: i32) -> Option<u64> {
    rss_kib(pid).map(|kib| kib / 1024)
}

/// Resident set size of a process in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: i32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
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
