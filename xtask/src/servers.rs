//! Apache Kafka and Apache Cassandra as plain JVM processes: the Maven projects under
//! `xtask/servers/` pin the versions, [`classpath`] resolves each server's runtime classpath
//! (once per machine into `~/.m2`, offline afterwards) and caches it under `target/servers/`,
//! and the `*_config` functions write each server's configuration into a stack's state
//! directory. Kafka and Cassandra never share a JVM: their logging bindings clash.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

use crate::{project_root, secure::Security, target_dir};

/// The two servers of a stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Kafka,
    Cassandra,
}

impl Server {
    pub const ALL: [Server; 2] = [Server::Kafka, Server::Cassandra];

    /// Short name: pid and log file names, `status` rows.
    pub fn name(self) -> &'static str {
        match self {
            Server::Kafka => "kafka",
            Server::Cassandra => "cassandra",
        }
    }

    /// The JVM main class (also how `stop` recognises the process behind a pid file).
    pub fn main_class(self) -> &'static str {
        match self {
            Server::Kafka => "kafka.Kafka",
            Server::Cassandra => "org.apache.cassandra.service.CassandraDaemon",
        }
    }

    /// The artifact whose version `status` reports.
    fn artifact(self) -> &'static str {
        match self {
            Server::Kafka => "kafka_2.13",
            Server::Cassandra => "cassandra-all",
        }
    }

    /// Heap (-Xms = -Xmx) sized for a 2-core / 24 GiB machine that also runs the three services
    /// and the tests: Kafka keeps its data in the page cache, not the heap; Cassandra's memtables
    /// take a quarter of its heap. A cluster's nodes get half as much each.
    pub fn heap_mib(self, nodes: u8) -> u32 {
        let single = match self {
            Server::Kafka => 1024,
            Server::Cassandra => 2048,
        };
        if nodes == 1 { single } else { single / 2 }
    }

    fn pom(self) -> PathBuf {
        project_root()
            .join("xtask/servers")
            .join(self.name())
            .join("pom.xml")
    }
}

/// The resolved runtime classpath of a server.
#[derive(Debug, Clone)]
pub struct Classpath {
    pub jars: Vec<PathBuf>,
}

impl Classpath {
    pub fn joined(&self) -> String {
        std::env::join_paths(&self.jars)
            .expect("jar paths contain no separator")
            .to_string_lossy()
            .into_owned()
    }

    /// Version of the server's main artifact, read from its jar name (what actually runs).
    pub fn version(&self, server: Server) -> String {
        let prefix = format!("{}-", server.artifact());
        self.jars
            .iter()
            .filter_map(|j| j.file_stem()?.to_str())
            .find_map(|stem| stem.strip_prefix(&prefix).map(str::to_owned))
            .unwrap_or_else(|| "unknown".into())
    }
}

/// The server's runtime classpath: from the cache when its pom is unchanged and every jar is
/// present, else resolved with Maven (offline first, then from Maven Central with progress).
pub fn classpath(server: Server) -> anyhow::Result<Classpath> {
    resolve(server.name(), &server.pom())
}

/// The runtime classpath of the Maven project `pom`, cached as `target/servers/<name>-<hash>`
/// (offline first, then from Maven Central with progress).
pub fn resolve(name: &str, pom: &Path) -> anyhow::Result<Classpath> {
    let pom_text = fs::read(pom).with_context(|| format!("read {}", pom.display()))?;
    let digest = Sha256::digest(&pom_text);
    let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    let cache_dir = target_dir().join("servers");
    let cache = cache_dir.join(format!("{name}-{hash}.classpath"));
    if let Some(cp) = read_cached(&cache) {
        return Ok(cp);
    }
    fs::create_dir_all(&cache_dir)?;
    let mvn = |offline: bool| -> anyhow::Result<bool> {
        let mut cmd = Command::new("mvn");
        cmd.args(["-B", "-Dstyle.color=never", "-f"])
            .arg(pom)
            .arg("dependency:build-classpath")
            .arg(format!("-Dmdep.outputFile={}", cache.display()))
            .arg("-Dmdep.includeScope=runtime");
        if offline {
            cmd.args(["-o", "-q"]);
        } else {
            cmd.arg("-Dorg.slf4j.simpleLogger.log.org.apache.maven.cli.transfer=info");
        }
        let status = cmd.status().context(
            "run mvn (Maven 3.8+ is needed to resolve the servers: apt-get install maven)",
        )?;
        Ok(status.success())
    };
    if !mvn(true)? {
        println!(
            "resolving the {name} runtime classpath from Maven Central ({}; once per machine)...",
            pom.display()
        );
        if !mvn(false)? {
            bail!(
                "mvn could not resolve {} (see the output above)",
                pom.display()
            );
        }
    }
    read_cached(&cache).with_context(|| {
        format!(
            "mvn wrote no usable classpath to {} (a jar is missing)",
            cache.display()
        )
    })
}

fn read_cached(cache: &Path) -> Option<Classpath> {
    let text = fs::read_to_string(cache).ok()?;
    let jars: Vec<PathBuf> = std::env::split_paths(text.trim()).collect();
    (!jars.is_empty() && jars.iter().all(|j| j.is_file())).then_some(Classpath { jars })
}

/// The `java` of a Java 17 runtime: `XTASK_JAVA_HOME`, else `JAVA_HOME`, else Debian's
/// OpenJDK 17, else `java` on PATH. Cassandra 5.0 runs on Java 11 or 17 (Java 24 removed the
/// security manager it installs); Kafka 4 brokers need Java 17 or newer.
pub fn java() -> anyhow::Result<PathBuf> {
    let candidates = ["XTASK_JAVA_HOME", "JAVA_HOME"]
        .iter()
        .filter_map(std::env::var_os)
        .map(|home| PathBuf::from(home).join("bin/java"))
        .chain([
            PathBuf::from("/usr/lib/jvm/java-17-openjdk-amd64/bin/java"),
            PathBuf::from("java"),
        ]);
    let mut seen = Vec::new();
    for java in candidates {
        let Ok(out) = Command::new(&java).arg("-version").output() else {
            continue;
        };
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        if java_major(&text) == Some(17) {
            return Ok(java);
        }
        seen.push(format!(
            "{}: {}",
            java.display(),
            text.lines().next().unwrap_or("")
        ));
    }
    bail!(
        "no Java 17 runtime found (Cassandra 5.0 needs Java 17; tried {}); \
         install openjdk-17-jre-headless or set XTASK_JAVA_HOME",
        if seen.is_empty() {
            "nothing runnable".to_owned()
        } else {
            seen.join("; ")
        }
    )
}

/// The major version in `java -version` output (`openjdk version "17.0.15" ...`).
fn java_major(version_output: &str) -> Option<u32> {
    let quoted = version_output.split('"').nth(1)?;
    quoted.split(['.', '-', '+']).next()?.parse().ok()
}

/// The loopback address of node `node` (1-based): a cluster's nodes share ports, each on its
/// own address, as ccm does.
pub fn host(node: u8) -> String {
    format!("127.0.0.{node}")
}

/// Ports, directories and security of one node of a stack.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
    /// Cassandra's tunable settings.
    pub cassandra: CassandraTuning,
    pub cluster_name: String,
    /// This node, 1..=nodes: it listens on [`host`]`(node)`.
    pub node: u8,
    /// Nodes of each server in the stack: 1, or 3 for a cluster.
    pub nodes: u8,
    pub kafka_port: u16,
    pub controller_port: u16,
    pub cql_port: u16,
    pub storage_port: u16,
    /// TLS, SASL, authorization and roles (`--secure`).
    pub security: Option<Security>,
}

impl Layout {
    pub fn host(&self) -> String {
        host(self.node)
    }

    /// `kafka` for a single node, `kafka2` for node 2 of a cluster.
    pub fn node_name(&self, server: Server) -> String {
        if self.nodes == 1 {
            server.name().to_owned()
        } else {
            format!("{}{}", server.name(), self.node)
        }
    }

    pub fn data_dir(&self, server: Server) -> PathBuf {
        self.dir.join(format!("{}-data", self.node_name(server)))
    }

    pub fn config_dir(&self, server: Server) -> PathBuf {
        self.dir.join(format!("{}-conf", self.node_name(server)))
    }

    /// The loopback-only JMX port of a single Cassandra node (`nodetool -p`), 1843 below the
    /// CQL port (9042 → 7199); a cluster's nodes share their ports, so they have none.
    pub fn jmx_port(&self) -> Option<u16> {
        (self.nodes == 1).then(|| self.cql_port - 1843)
    }

    /// Replicas of every topic and of Kafka's internal topics; 2 of 3 must be in sync to
    /// accept an `acks=all` write.
    pub fn replication(&self) -> (u8, u8) {
        if self.nodes == 1 {
            (1, 1)
        } else {
            (self.nodes, 2)
        }
    }
}

/// Writes `server.properties` and `log4j2.xml` for a combined KRaft broker + controller: a
/// single node, or node `layout.node` of a 3-node quorum (static voters) with every topic on 3
/// replicas and `min.insync.replicas=2`.
pub fn kafka_config(layout: &Layout) -> anyhow::Result<PathBuf> {
    let conf = layout.config_dir(Server::Kafka);
    fs::create_dir_all(&conf)?;
    let data = layout.data_dir(Server::Kafka);
    let (port, controller) = (layout.kafka_port, layout.controller_port);
    let h = layout.host();
    let quorum = if layout.nodes == 1 {
        format!("controller.quorum.bootstrap.servers={h}:{controller}")
    } else {
        let voters: Vec<String> = (1..=layout.nodes)
            .map(|n| format!("{n}@{}:{controller}", host(n)))
            .collect();
        format!("controller.quorum.voters={}", voters.join(","))
    };
    let (listener, control) = match layout.security {
        Some(_) => ("SASL_SSL", "SSL"),
        None => ("PLAINTEXT", "PLAINTEXT"),
    };
    let (rf, min_isr) = layout.replication();
    let mut properties = format!(
        "# Written by cargo xtask: a combined KRaft broker + controller on loopback, node {node} of {nodes}.\n\
         process.roles=broker,controller\n\
         node.id={node}\n\
         {quorum}\n\
         listeners={listener}://{h}:{port},CONTROLLER://{h}:{controller}\n\
         advertised.listeners={listener}://{h}:{port}\n\
         controller.listener.names=CONTROLLER\n\
         inter.broker.listener.name={listener}\n\
         listener.security.protocol.map={listener}:{listener},CONTROLLER:{control}\n\
         log.dirs={data}\n\
         # Replicas of the internal topics and of topics created without a count; an acks=all\n\
         # write needs min.insync.replicas of them.\n\
         offsets.topic.replication.factor={rf}\n\
         transaction.state.log.replication.factor={rf}\n\
         transaction.state.log.min.isr={min_isr}\n\
         share.coordinator.state.topic.replication.factor={rf}\n\
         share.coordinator.state.topic.min.isr={min_isr}\n\
         default.replication.factor={rf}\n\
         min.insync.replicas={min_isr}\n\
         # Groups of one machine form at once instead of waiting 3 s for more members.\n\
         group.initial.rebalance.delay.ms=0\n",
        node = layout.node,
        nodes = layout.nodes,
        data = data.display()
    );
    if let Some(security) = &layout.security {
        properties.push_str(&security.kafka_properties(layout.node)?);
    }
    let path = conf.join("server.properties");
    // It holds the inter-broker password on a secured stack: only its owner reads it.
    crate::secure::tls::write_private(&path, properties.as_bytes())?;
    fs::write(
        conf.join("log4j2.xml"),
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by cargo xtask: everything to stdout, which the stack appends to kafka.log. -->
<Configuration status="warn">
  <Appenders>
    <Console name="stdout" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="warn"/>
    <Logger name="state.change.logger" level="warn"/>
    <Root level="info"><AppenderRef ref="stdout"/></Root>
  </Loggers>
</Configuration>
"#,
    )?;
    Ok(path)
}

/// A new KRaft cluster id: 16 random bytes, URL-safe base64 without padding (what
/// `kafka-storage.sh random-uuid` prints). Like Kafka's `Uuid.randomUuid`, never one that
/// starts with `-`: `kafka-storage format --cluster-id -…` reads it as an option (1 id in 64;
/// a drill failed on it).
pub fn kafka_cluster_id() -> String {
    use base64::Engine as _;
    loop {
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(uuid::Uuid::new_v4().as_bytes());
        if !id.starts_with('-') {
            return id;
        }
    }
}

/// JVM arguments (before the main class) of the Kafka broker.
pub fn kafka_jvm_args(layout: &Layout) -> Vec<String> {
    let heap = Server::Kafka.heap_mib(layout.nodes);
    let mut args = vec![
        format!("-Xms{heap}m"),
        format!("-Xmx{heap}m"),
        // kafka-run-class.sh's defaults.
        "-XX:+UseG1GC".into(),
        "-XX:MaxGCPauseMillis=20".into(),
        "-XX:InitiatingHeapOccupancyPercent=35".into(),
        "-XX:+ExplicitGCInvokesConcurrent".into(),
        "-Djava.awt.headless=true".into(),
        "-XX:+ExitOnOutOfMemoryError".into(),
    ];
    args.push(format!(
        "-Dlog4j2.configurationFile={}",
        layout
            .config_dir(Server::Kafka)
            .join("log4j2.xml")
            .display()
    ));
    args.push(format!("-Dkafka.logs.dir={}", layout.dir.display()));
    args
}

/// The Cassandra settings `cargo xtask bench --writes --cassandra-settings` compares; the
/// defaults are what every stack runs, kept on that bench's alternating A/B runs
/// (BENCHMARKS.md).
#[derive(Debug, Clone, PartialEq)]
pub struct CassandraTuning {
    /// The memtable implementation: `skiplist` (5.0's default) or `trie` (5.0's
    /// `cassandra_latest.yaml`).
    pub memtable: &'static str,
    /// `memtable_allocation_type`: `heap_buffers` (5.0's default) or `offheap_objects`.
    pub allocation: &'static str,
    /// `concurrent_writes`.
    pub concurrent_writes: u32,
    /// `commitlog_sync_group_window` in ms (`commitlog_sync: group`).
    pub group_window_ms: u32,
}

impl Default for CassandraTuning {
    fn default() -> Self {
        Self {
            // 5.0's defaults: the trie memtable with off-heap objects drained 1.17× faster in
            // `--writes --cassandra-settings` (2026-12-07) but cost ~9 % more CPU per
            // single-row write, which is what the writer sends at low rates (BENCHMARKS.md).
            memtable: "skiplist",
            allocation: "heap_buffers",
            concurrent_writes: 128,
            group_window_ms: 5,
        }
    }
}

impl std::fmt::Display for CassandraTuning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}+{} cw{} w{}ms",
            self.memtable, self.allocation, self.concurrent_writes, self.group_window_ms
        )
    }
}

/// Writes `cassandra.yaml` and `logback.xml` for a node on loopback (node 1 is the seed).
pub fn cassandra_config(layout: &Layout) -> anyhow::Result<PathBuf> {
    let conf = layout.config_dir(Server::Cassandra);
    fs::create_dir_all(&conf)?;
    let data = layout.data_dir(Server::Cassandra);
    let dir = |sub: &str| data.join(sub).display().to_string();
    let mut yaml = format!(
        "# Written by cargo xtask: Cassandra node {node} of {nodes} on loopback.\n\
         cluster_name: {cluster}\n\
         num_tokens: 16\n\
         partitioner: org.apache.cassandra.dht.Murmur3Partitioner\n\
         endpoint_snitch: SimpleSnitch\n\
         seed_provider:\n  \
           - class_name: org.apache.cassandra.locator.SimpleSeedProvider\n    \
             parameters:\n      \
               - seeds: \"127.0.0.1:{storage}\"\n\
         listen_address: {h}\n\
         rpc_address: {h}\n\
         storage_port: {storage}\n\
         native_transport_port: {cql}\n\
         start_native_transport: true\n\
         # A write is acknowledged only once its commit log segment is synced (grouped over\n\
         # 5 ms). With the default `periodic` sync a SIGKILL of this only replica loses the\n\
         # acknowledged writes since the last sync (the replay stops at the last sync marker):\n\
         # the cassandra-restart drill lost 23 of 3,956 rows that way.\n\
         commitlog_sync: group\n\
         commitlog_sync_group_window: {window}ms\n\
         # Each mutation thread waits for the sync of its write, so a node takes at most\n\
         # concurrent_writes writes per window: with the default 32 and a 15 ms window that\n\
         # capped every writer at 2,100 rows/s (cargo xtask bench, BENCHMARKS.md).\n\
         concurrent_writes: {concurrent_writes}\n\
         memtable:\n  \
           configurations:\n    \
             skiplist:\n      \
               class_name: SkipListMemtable\n    \
             trie:\n      \
               class_name: TrieMemtable\n    \
             default:\n      \
               inherits: {memtable}\n\
         memtable_allocation_type: {allocation}\n\
         data_file_directories: [{data_files}]\n\
         commitlog_directory: {commitlog}\n\
         saved_caches_directory: {saved_caches}\n\
         hints_directory: {hints}\n\
         cdc_raw_directory: {cdc_raw}\n\
         # Tests drop a keyspace each: no snapshot of what they drop.\n\
         auto_snapshot: false\n\
         concurrent_compactors: 1\n\
         # Heap the SAI indexes' segment builders may hold while flushing and compacting. The\n\
         # 1 GiB default assumes a large heap: next to 512 MiB of memtables it ran a 2 GiB heap\n\
         # out of memory under 1 M indexed rows (cargo xtask bench --data-model). 1/16 of the heap.\n\
         sai_options:\n  \
           segment_write_buffer_size: {sai_buffer}MiB\n\
         # A new cluster on 5.0 only: the 5.0 sstable and messaging formats.\n\
         storage_compatibility_mode: NONE\n",
        sai_buffer = Server::Cassandra.heap_mib(layout.nodes) / 16,
        window = layout.cassandra.group_window_ms,
        concurrent_writes = layout.cassandra.concurrent_writes,
        memtable = layout.cassandra.memtable,
        allocation = layout.cassandra.allocation,
        cluster = layout.cluster_name,
        node = layout.node,
        nodes = layout.nodes,
        h = layout.host(),
        storage = layout.storage_port,
        cql = layout.cql_port,
        data_files = dir("data"),
        commitlog = dir("commitlog"),
        saved_caches = dir("saved_caches"),
        hints = dir("hints"),
        cdc_raw = dir("cdc_raw"),
    );
    if layout.nodes > 1 {
        // A new cluster: its nodes own no data yet, so they join without streaming.
        yaml.push_str("auto_bootstrap: false\n");
    }
    if let Some(security) = &layout.security {
        yaml.push_str(&security.cassandra_yaml(layout.node));
    }
    let path = conf.join("cassandra.yaml");
    fs::write(&path, yaml)?;
    fs::write(
        conf.join("logback.xml"),
        r#"<!-- Written by cargo xtask: everything to stdout, which the stack appends to cassandra.log. -->
<configuration>
  <appender name="stdout" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="stdout"/></root>
</configuration>
"#,
    )?;
    Ok(path)
}

/// `conf/jvm17-server.options` of Cassandra 5.0 (nodetool needs them too): the module exports and opens it needs on
/// Java 17, and its Netty settings.
pub const CASSANDRA_JVM17: &[&str] = &[
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports=java.sql/java.sql=ALL-UNNAMED",
    "--add-exports=java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
];

/// JVM arguments (before the main class) of the Cassandra node.
pub fn cassandra_jvm_args(layout: &Layout) -> Vec<String> {
    let heap = Server::Cassandra.heap_mib(layout.nodes);
    let conf = layout.config_dir(Server::Cassandra);
    let mut args = vec![
        format!("-Xms{heap}m"),
        format!("-Xmx{heap}m"),
        // jvm17-server.options' G1 settings.
        "-XX:+UseG1GC".into(),
        "-XX:+ParallelRefProcEnabled".into(),
        "-XX:MaxTenuringThreshold=1".into(),
        "-XX:G1HeapRegionSize=16m".into(),
        "-XX:MaxGCPauseMillis=300".into(),
        "-XX:+CrashOnOutOfMemoryError".into(),
        "-Xss256k".into(),
    ];
    args.extend(CASSANDRA_JVM17.iter().map(|s| (*s).to_owned()));
    args.extend([
        "-Dcassandra-foreground=yes".to_owned(),
        format!(
            "-Dcassandra.config=file://{}",
            conf.join("cassandra.yaml").display()
        ),
        format!(
            "-Dcassandra.storagedir={}",
            layout.data_dir(Server::Cassandra).display()
        ),
        format!("-Dcassandra.logdir={}", layout.dir.display()),
        format!(
            "-Dlogback.configurationFile={}",
            conf.join("logback.xml").display()
        ),
        // Loopback gossip settles at once: skip the wait for it.
        "-Dcassandra.skip_wait_for_gossip_to_settle=0".to_owned(),
        // Create the default superuser at once when authentication is on (default: after 10 s).
        "-Dcassandra.superuser_setup_delay_ms=0".to_owned(),
    ]);
    if let Some(port) = layout.jmx_port() {
        args.push(format!("-Dcassandra.jmx.local.port={port}"));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_major_reads_openjdk_and_temurin_output() {
        assert_eq!(
            java_major("openjdk version \"17.0.15\" 2025-04-15\nOpenJDK Runtime"),
            Some(17)
        );
        assert_eq!(java_major("openjdk version \"25\" 2025-09-16"), Some(25));
        assert_eq!(java_major("java version \"1.8.0_401\""), Some(1));
        assert_eq!(java_major("garbage"), None);
    }

    #[test]
    fn cluster_id_is_22_chars_of_url_safe_base64_never_starting_with_a_dash() {
        // 1 id in 64 would start with `-` without the check: 2,000 ids miss it with p ≈ 1e-14.
        for _ in 0..2_000 {
            let id = kafka_cluster_id();
            assert_eq!(id.len(), 22);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert!(!id.starts_with('-'), "{id}");
        }
    }
}
