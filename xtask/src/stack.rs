//! The local stack: Apache Kafka (combined KRaft broker + controller nodes) and Apache
//! Cassandra, each node a detached JVM process with a pid file under
//! `target/local-stack/<name>/`, configured by [`crate::servers`] and listening on loopback
//! only: one node of each, or (`--cluster`) three of each on 127.0.0.1–3 with the same ports,
//! optionally (`--secure`) with TLS, authentication and authorization ([`crate::secure`]).

use std::{
    fs,
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use pipeline_runtime::{cassandra::CassandraArgs, kafka::KafkaArgs};

use crate::secure::{self, Security};
pub use crate::servers::Server;
use crate::servers::{self, Classpath, Layout, host};

/// How long a server gets to answer real requests after it was started (a first Cassandra
/// boot on a busy 2-core machine takes ~10-30 s).
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// How long a server gets to shut down cleanly on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(45);

/// The data centre of a cluster's nodes (SimpleSnitch's) and the replication of its keyspaces.
pub const CLUSTER_DC: &str = "datacenter1";
pub const CLUSTER_REPLICATION: &str = "{'class': 'NetworkTopologyStrategy', 'datacenter1': 3}";

/// One node of a stack: a server and its number (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    pub server: Server,
    pub index: u8,
}

/// One stack: its state directory, ports, size and security.
#[derive(Debug, Clone)]
pub struct Stack {
    pub name: String,
    pub dir: PathBuf,
    pub kafka_port: u16,
    pub cql_port: u16,
    pub partitions: i32,
    /// Nodes of each server: 1, or 3 for a cluster.
    pub nodes: u8,
    /// TLS, SASL/SCRAM and ACLs on Kafka; TLS, passwords and roles on Cassandra.
    pub security: Option<Security>,
    /// Cassandra's tunable settings (written into cassandra.yaml when a node starts).
    pub cassandra: servers::CassandraTuning,
}

/// The shape of a stack: `--cluster` and `--secure`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::Args)]
pub struct Shape {
    /// Three Kafka nodes and three Cassandra nodes (127.0.0.1–3, same ports), topics with 3
    /// replicas and min.insync.replicas=2, keyspaces with NetworkTopologyStrategy RF 3.
    #[arg(long)]
    pub cluster: bool,
    /// Kafka on SASL_SSL (SCRAM-SHA-512) with ACLs, Cassandra with TLS, passwords and a role
    /// per service; certificates and passwords generated under the stack's directory.
    #[arg(long)]
    pub secure: bool,
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
    pub fn named(name: &str, kafka_port: u16, cql_port: u16, partitions: i32) -> Self {
        let dir = crate::target_dir().join("local-stack").join(name);
        Self {
            name: name.to_owned(),
            dir,
            kafka_port,
            cql_port,
            partitions,
            nodes: 1,
            security: None,
            cassandra: servers::CassandraTuning::default(),
        }
    }

    /// This stack in `shape`: same ports, state of its own (`<name>-cluster-secure`, …).
    pub fn shaped(self, shape: Shape) -> Self {
        let mut name = self.name.clone();
        if shape.cluster {
            name.push_str("-cluster");
        }
        if shape.secure {
            name.push_str("-secure");
        }
        let mut s = Self::named(&name, self.kafka_port, self.cql_port, self.partitions);
        s.nodes = if shape.cluster { 3 } else { 1 };
        s.security = shape.secure.then(|| Security::at(&s.dir));
        s
    }

    /// Every node of `server`.
    pub fn nodes_of(&self, server: Server) -> impl Iterator<Item = Node> + use<> {
        (1..=self.nodes).map(move |index| Node { server, index })
    }

    /// Every node, Kafka's first.
    fn all_nodes(&self) -> Vec<Node> {
        Server::ALL
            .into_iter()
            .flat_map(|s| self.nodes_of(s))
            .collect()
    }

    /// Node 1 of `server` (the only one of a single-node stack).
    pub fn first(server: Server) -> Node {
        Node { server, index: 1 }
    }

    /// Every broker's address, comma-separated.
    pub fn kafka_addr(&self) -> String {
        (1..=self.nodes)
            .map(|n| format!("{}:{}", host(n), self.kafka_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every Cassandra node's CQL address, comma-separated.
    pub fn cql_addr(&self) -> String {
        (1..=self.nodes)
            .map(|n| format!("{}:{}", host(n), self.cql_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn layout(&self, node: u8) -> Layout {
        Layout {
            dir: self.dir.clone(),
            cassandra: self.cassandra.clone(),
            cluster_name: format!("ip-log-pipeline-{}", self.name),
            node,
            nodes: self.nodes,
            kafka_port: self.kafka_port,
            controller_port: self.kafka_port + 1,
            cql_port: self.cql_port,
            storage_port: self.cql_port - 2042,
            security: self.security.clone(),
        }
    }

    /// Environment that points the services (and tests) at this stack, without an identity
    /// (see [`Stack::identity`]).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("KAFKA_BROKER", self.kafka_addr()),
            ("CASSANDRA_NODES", self.cql_addr()),
        ];
        if self.nodes > 1 {
            env.push(("CASSANDRA_LOCAL_DC", CLUSTER_DC.to_owned()));
            env.push(("CASSANDRA_REPLICATION", CLUSTER_REPLICATION.to_owned()));
        }
        if let Some(sec) = &self.security {
            env.extend([
                ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL".to_owned()),
                ("KAFKA_SASL_MECHANISM", secure::SASL_MECHANISM.to_owned()),
                ("KAFKA_SSL_CA_LOCATION", sec.ca().display().to_string()),
                ("CASSANDRA_TLS", "true".to_owned()),
                ("CASSANDRA_TLS_CA_FILE", sec.ca().display().to_string()),
            ]);
        }
        env
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

    /// The credentials `who` runs with on a secured stack (nothing otherwise): `producer`,
    /// `stream-reader`, `cassandra-writer`, `migrate` (which also grants the writer and the
    /// analysts the keyspace), `operator` (`producer dlq|replay`), `analyst` (cqlsh).
    pub fn identity(&self, who: &str) -> Vec<(String, String)> {
        let Some(sec) = &self.security else {
            return Vec::new();
        };
        match who {
            "cassandra-writer" => {
                let mut env = sec.kafka_env(who);
                env.extend(sec.cql_env(secure::CQL_WRITER));
                env
            }
            "migrate" => {
                let mut env = sec.cql_env(secure::CQL_MIGRATOR);
                env.push(("CASSANDRA_GRANT_WRITE_TO".into(), secure::CQL_WRITER.into()));
                env.push(("CASSANDRA_GRANT_READ_TO".into(), secure::CQL_ANALYST.into()));
                env
            }
            "analyst" => sec.cql_env(secure::CQL_ANALYST),
            user => sec.kafka_env(user),
        }
    }

    /// The environment of `who` (see [`Stack::identity`]) on this stack, plus `extra`.
    pub fn env_of(&self, who: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = self.env_with(extra);
        env.extend(self.identity(who));
        env
    }

    /// Kafka settings of xtask's own clients (the super user on a secured stack).
    pub fn kafka_admin(&self) -> KafkaArgs {
        match &self.security {
            Some(sec) => sec.kafka_args(&self.kafka_addr(), secure::KAFKA_ADMIN),
            None => KafkaArgs::new(self.kafka_addr()),
        }
    }

    /// Runs `nodetool <args>` against the single Cassandra node over its loopback JMX port;
    /// returns standard output.
    pub fn nodetool(&self, args: &[&str]) -> anyhow::Result<String> {
        let port = self
            .layout(1)
            .jmx_port()
            .context("nodetool needs a single-node stack (a cluster's nodes have no JMX port)")?;
        let out = std::process::Command::new(servers::java()?)
            .arg("-Xmx256m")
            .args(servers::CASSANDRA_JVM17)
            .arg("-cp")
            .arg(servers::classpath(Server::Cassandra)?.joined())
            .args([
                "org.apache.cassandra.tools.NodeTool",
                "-h",
                "127.0.0.1",
                "-p",
            ])
            .arg(port.to_string())
            .args(args)
            .output()
            .context("run nodetool")?;
        anyhow::ensure!(
            out.status.success(),
            "nodetool {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// CQL settings of xtask's own sessions (the admin role on a secured stack).
    pub fn cql_admin(&self, keyspace: &str) -> CassandraArgs {
        self.cql_admin_at(&self.cql_addr(), keyspace)
    }

    fn cql_admin_at(&self, nodes: &str, keyspace: &str) -> CassandraArgs {
        match &self.security {
            Some(sec) => {
                let role = sec.roles_ready().then_some(secure::CQL_ADMIN);
                sec.cql_args(nodes, keyspace, role)
            }
            None => CassandraArgs::new(nodes, keyspace),
        }
    }

    /// Creates the ACLs of a pipeline using `names` (nothing on an unsecured stack).
    pub fn authorize(&self, names: &secure::PipelineNames) -> anyhow::Result<()> {
        if self.security.is_none() {
            return Ok(());
        }
        let admin = self.kafka_admin().admin()?;
        secure::acl::create(&admin, &secure::pipeline_acls(names))
    }

    fn node_file(&self, node: Node, ext: &str) -> PathBuf {
        self.dir.join(format!(
            "{}.{ext}",
            self.layout(node.index).node_name(node.server)
        ))
    }

    fn pid_file(&self, node: Node) -> PathBuf {
        self.node_file(node, "pid")
    }

    pub fn log_file(&self, node: Node) -> PathBuf {
        self.node_file(node, "log")
    }

    /// Every (address, port) a node listens on (client port first).
    fn ports(&self, node: Node) -> [(String, u16); 2] {
        let l = self.layout(node.index);
        let h = l.host();
        match node.server {
            Server::Kafka => [(h.clone(), l.kafka_port), (h, l.controller_port)],
            Server::Cassandra => [(h.clone(), l.cql_port), (h, l.storage_port)],
        }
    }

    fn label(&self, node: Node) -> String {
        self.layout(node.index).node_name(node.server)
    }

    /// Pid of node 1 of `s`, if it still runs.
    pub fn pid(&self, s: Server) -> Option<i32> {
        self.pid_of(Self::first(s))
    }

    /// Pid of a node we started, if it still runs.
    pub fn pid_of(&self, node: Node) -> Option<i32> {
        let pid: i32 = fs::read_to_string(self.pid_file(node))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        // Guard against a recycled pid: the process must still be our server's JVM.
        String::from_utf8_lossy(&cmdline)
            .contains(node.server.main_class())
            .then_some(pid)
    }

    /// Starts every node (if not running), waits until they answer real requests, sets up
    /// roles and ACLs on a secured stack, creates the topics and applies the migrations.
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
        if let Some(sec) = &self.security {
            sec.ensure(self.nodes)?;
        }
        let started = Instant::now();
        // Kafka's quorum forms only once a majority of its controllers runs: start them all.
        // Cassandra's nodes join one after another, the seed (node 1) first.
        for node in self.nodes_of(Server::Kafka) {
            self.start_node(node, &java, &classpaths[0], false).await?;
        }
        for node in self.nodes_of(Server::Cassandra) {
            self.start_node(node, &java, &classpaths[1], true).await?;
        }
        for node in self.nodes_of(Server::Kafka) {
            self.wait_ready(node).await?;
        }
        if self.nodes > 1 {
            self.wait_cassandra_ring().await?;
        }
        println!(
            "servers ready after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        if let Some(sec) = &self.security {
            let replication = if self.nodes > 1 {
                CLUSTER_REPLICATION
            } else {
                "{'class': 'SimpleStrategy', 'replication_factor': 1}"
            };
            secure::setup_roles(sec, &self.cql_addr(), replication)
                .await
                .context("create the Cassandra roles")?;
        }
        self.kafka_admin()
            .ensure_topics(&log_schema_topics(), self.partitions, i32::from(self.nodes))
            .await
            .context("create the pipeline topics")?;
        self.authorize(&secure::PipelineNames::defaults())
            .context("create the pipeline's ACLs")?;
        println!(
            "topics    {} ({} partitions, {} replicas each)",
            log_schema_topics().join(", "),
            self.partitions,
            self.nodes
        );
        crate::procs::migrate(false, &self.env_of("migrate", &[]), None)?;
        println!("schema    ip_logs keyspace migrated");
        if self.security.is_some() {
            println!(
                "security  SASL_SSL (SCRAM-SHA-512) + ACLs on Kafka, TLS + roles on Cassandra; \
                 CA {}, passwords under {}",
                self.dir.join("tls/ca.pem").display(),
                self.dir.join("secrets").display()
            );
        }
        Ok(())
    }

    /// Starts `node` unless it runs; with `wait`, waits until it answers.
    async fn start_node(
        &self,
        node: Node,
        java: &std::path::Path,
        cp: &Classpath,
        wait: bool,
    ) -> anyhow::Result<()> {
        if let Some(pid) = self.pid_of(node) {
            println!(
                "{:<10} already running (pid {pid}, stack {})",
                self.label(node),
                self.name
            );
        } else {
            let pid = self.spawn(node, java, cp)?;
            let (h, p) = &self.ports(node)[0];
            println!(
                "{:<10} {} started (pid {pid}) on {h}:{p}",
                self.label(node),
                cp.version(node.server),
            );
        }
        if wait {
            self.wait_ready(node).await?;
        }
        Ok(())
    }

    /// The KRaft cluster id all of this stack's Kafka nodes are formatted with.
    fn kafka_cluster_id(&self) -> anyhow::Result<String> {
        let path = self.dir.join("kafka-cluster-id");
        if let Ok(id) = fs::read_to_string(&path) {
            return Ok(id.trim().to_owned());
        }
        let id = servers::kafka_cluster_id();
        fs::write(&path, &id)?;
        Ok(id)
    }

    /// Writes a node's configuration (formatting Kafka's storage on first start), starts it
    /// detached, writes its pid file, returns its pid.
    fn spawn(&self, node: Node, java: &std::path::Path, cp: &Classpath) -> anyhow::Result<u32> {
        for (h, port) in self.ports(node) {
            if port_open_at(&h, port) {
                bail!(
                    "port {h}:{port} (for {}) is taken by a process this stack did not start; \
                     stop it first",
                    self.label(node)
                );
            }
        }
        let layout = self.layout(node.index);
        let mut cmd = Command::new(java);
        match node.server {
            Server::Kafka => {
                let properties = servers::kafka_config(&layout)?;
                let data = layout.data_dir(node.server);
                if !data.join("meta.properties").exists() {
                    let mut format = Command::new(java);
                    format
                        .args(servers::kafka_jvm_args(&layout))
                        .arg("-cp")
                        .arg(cp.joined())
                        .args(["kafka.tools.StorageTool", "format"]);
                    if self.nodes == 1 {
                        format.arg("--standalone");
                    }
                    format
                        .arg("-t")
                        .arg(self.kafka_cluster_id()?)
                        .arg("-c")
                        .arg(&properties);
                    if let Some(sec) = &self.security {
                        format.args(sec.scram_format_args()?);
                    }
                    let out = format
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
                    .arg(node.server.main_class())
                    .arg(&properties);
            }
            Server::Cassandra => {
                servers::cassandra_config(&layout)?;
                cmd.args(servers::cassandra_jvm_args(&layout))
                    .arg("-cp")
                    .arg(cp.joined())
                    .arg(node.server.main_class());
            }
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file(node))?;
        let child = detached(&mut cmd)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", self.label(node)))?;
        fs::write(self.pid_file(node), child.id().to_string())?;
        Ok(child.id())
    }

    /// Stops node 1 of `s` (SIGTERM, or SIGKILL when `kill`) and starts it again on the same
    /// data; waits until it answers real requests.
    pub async fn restart(&self, s: Server, kill: bool) -> anyhow::Result<()> {
        self.restart_node(Self::first(s), kill).await
    }

    /// Stops `node` (SIGTERM, or SIGKILL when `kill`) and starts it again on the same data;
    /// waits until it answers real requests.
    pub async fn restart_node(&self, node: Node, kill: bool) -> anyhow::Result<()> {
        self.stop_node(node, kill)?;
        self.resume_node(node).await
    }

    /// Stops `node` (SIGTERM, or SIGKILL when `kill`) and waits until its ports are free.
    pub fn stop_node(&self, node: Node, kill: bool) -> anyhow::Result<()> {
        if let Some(pid) = self.pid_of(node) {
            if kill {
                signal(pid, libc::SIGKILL);
            }
            terminate(pid, STOP_GRACE);
        }
        self.wait_ports_free(node)
    }

    /// Starts a stopped `node` on its data; waits until it answers real requests.
    pub async fn resume_node(&self, node: Node) -> anyhow::Result<()> {
        let java = servers::java()?;
        let cp = servers::classpath(node.server)?;
        self.spawn(node, &java, &cp)?;
        self.wait_ready(node).await
    }

    /// Waits until a node answers real requests: Kafka metadata naming every broker, a CQL
    /// query.
    async fn wait_ready(&self, node: Node) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let log = self.log_file(node);
        let label = self.label(node);
        let check_alive = || -> anyhow::Result<()> {
            // Liveness by pid only: right after exec, /proc/<pid>/cmdline can briefly be empty,
            // so the main-class guard of `pid` would misfire here.
            let pid = fs::read_to_string(self.pid_file(node))
                .ok()
                .and_then(|p| p.trim().parse().ok());
            if !pid.is_some_and(alive) {
                bail!("{label} exited; see {}", log.display());
            }
            if Instant::now() > deadline {
                bail!(
                    "{label} did not answer within {READY_TIMEOUT:?}; see {}",
                    log.display()
                );
            }
            Ok(())
        };
        let (h, port) = self.ports(node)[0].clone();
        while !port_open_at(&h, port) {
            check_alive()?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let addr = format!("{h}:{port}");
        match node.server {
            Server::Kafka => {
                let mut args = self.kafka_admin();
                args.brokers = addr;
                let admin = args.admin()?;
                loop {
                    match admin.inner().fetch_metadata(None, Duration::from_secs(5)) {
                        Ok(m) if m.brokers().len() == usize::from(self.nodes) => return Ok(()),
                        _ => check_alive().context("Kafka does not answer metadata requests")?,
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Server::Cassandra => loop {
                if self.cassandra_release(&addr).await.is_ok() {
                    return Ok(());
                }
                check_alive().context("Cassandra does not answer CQL queries")?;
                tokio::time::sleep(Duration::from_millis(500)).await;
            },
        }
    }

    /// Waits until node 1 sees every other node as a peer.
    async fn wait_cassandra_ring(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let first = format!("{}:{}", host(1), self.cql_port);
        loop {
            let peers = async {
                let session = self.cql_admin_at(&first, "system").connect().await?;
                let rows = session
                    .query_unpaged("SELECT peer FROM system.peers", &[])
                    .await?
                    .into_rows_result()?
                    .rows_num();
                anyhow::Ok(rows)
            }
            .await;
            match peers {
                Ok(n) if n + 1 == usize::from(self.nodes) => return Ok(()),
                _ if Instant::now() > deadline => {
                    bail!(
                        "the Cassandra nodes did not see each other within {READY_TIMEOUT:?} ({peers:?})"
                    )
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// `release_version` of the Cassandra node at `addr` (a real CQL query).
    async fn cassandra_release(&self, addr: &str) -> anyhow::Result<String> {
        let session = self.cql_admin_at(addr, "system").connect().await?;
        let row = session
            .query_unpaged("SELECT release_version FROM system.local", &[])
            .await?
            .into_rows_result()?
            .single_row::<(String,)>()?;
        Ok(row.0)
    }

    fn wait_ports_free(&self, node: Node) -> anyhow::Result<()> {
        for (h, port) in self.ports(node) {
            let deadline = Instant::now() + Duration::from_secs(15);
            while port_open_at(&h, port) {
                if Instant::now() > deadline {
                    bail!(
                        "port {h}:{port} is still open after stopping {}",
                        self.label(node)
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Stops exactly the processes `start` began; waits until their ports are free.
    pub fn stop(&self) -> anyhow::Result<()> {
        // SIGTERM to every node first: a cluster's last broker cannot shut down cleanly once
        // the other controllers are gone.
        let running: Vec<(Node, i32)> = self
            .all_nodes()
            .into_iter()
            .filter_map(|node| Some((node, self.pid_of(node)?)))
            .collect();
        for (_, pid) in &running {
            signal(*pid, libc::SIGTERM);
        }
        for (node, pid) in running {
            terminate(pid, STOP_GRACE);
            println!("{:<10} stopped (pid {pid})", self.label(node));
        }
        for node in self.all_nodes() {
            let _ = fs::remove_file(self.pid_file(node));
        }
        for node in self.all_nodes() {
            self.wait_ports_free(node)?;
        }
        Ok(())
    }

    /// Prints version, pid, ports, heap, RSS and log of each node; true when all run.
    pub async fn status(&self) -> bool {
        let mut all = true;
        for node in self.all_nodes() {
            let s = node.server;
            let version = servers::classpath(s)
                .map(|cp| cp.version(s))
                .unwrap_or_else(|e| format!("unresolved ({e:#})"));
            let ports = self.ports(node);
            match self.pid_of(node) {
                Some(pid) => {
                    let listening = ports.iter().all(|(h, p)| port_open_at(h, *p));
                    println!(
                        "{:<10} {version:<7} running  pid {pid:<8} {}:{} + :{} ({})  \
                         heap {} MiB  rss {} MiB  log {}",
                        self.label(node),
                        ports[0].0,
                        ports[0].1,
                        ports[1].1,
                        if listening {
                            "listening"
                        } else {
                            "not listening"
                        },
                        s.heap_mib(self.nodes),
                        rss_mib(pid).map_or("?".into(), |r| r.to_string()),
                        self.log_file(node).display()
                    );
                }
                None => {
                    all = false;
                    println!("{:<10} {version:<7} stopped", self.label(node));
                }
            }
        }
        if all && let Ok(release) = self.cassandra_release(&self.cql_addr()).await {
            println!("cassandra answers CQL: release_version {release}");
        }
        if let Some(sec) = &self.security {
            println!(
                "secured: CA {}, passwords under {}",
                sec.ca().display(),
                self.dir.join("secrets").display()
            );
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
    log_schema::topics::ALL.to_vec()
}

/// Puts the child in its own process group, so a Ctrl-C at the terminal does not reach it and
/// `stop` can signal the whole group.
pub fn detached(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0)
}

/// Whether something accepts TCP connections on `host:port`.
pub fn port_open_at(host: &str, port: u16) -> bool {
    let Ok(ip) = host.parse::<std::net::IpAddr>() else {
        return false;
    };
    TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_millis(200)).is_ok()
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
