//! Shared helpers: server addresses, fresh topics and keyspaces, reading topics back.

use std::{
    collections::BTreeSet,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use cassandra_writer::MigrateArgs;
use pipeline_runtime::{cassandra::CassandraArgs, kafka::KafkaArgs, telemetry::TelemetryArgs};
use rdkafka::{
    ClientConfig, Message,
    consumer::{BaseConsumer, Consumer},
};
use scylla::client::session::Session;

/// Generous deadline for anything asynchronous to show up.
pub const DEADLINE: Duration = Duration::from_secs(60);

fn required_env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn kafka_broker() -> String {
    required_env("IT_KAFKA_BROKER", "127.0.0.1:9092")
}

pub fn cassandra_nodes() -> String {
    required_env("IT_CASSANDRA_NODES", "127.0.0.1:9042")
}

pub fn kafka() -> KafkaArgs {
    KafkaArgs::new(kafka_broker())
}

/// Cassandra args for a keyspace (the services' defaults: LOCAL_QUORUM, schema agreement).
pub fn cassandra(keyspace: &str) -> CassandraArgs {
    CassandraArgs::new(cassandra_nodes(), keyspace)
}

/// The writer's settings as a user gets them (every default), to override per test.
pub fn writer_defaults() -> cassandra_writer::WriterArgs {
    use clap::Parser as _;
    cassandra_writer::Cli::parse_from(["cassandra-writer"]).writer
}

/// A name unique to this test run: `<prefix>_<pid>_<counter>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates fresh topics (3 partitions); fails loudly when no broker answers.
pub async fn fresh_topics(names: &[&str]) {
    kafka()
        .ensure_topics(names, 3, 1)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot create topics on Kafka at {} ({e:#}); \
             run the integration tests with `cargo xtask test`",
                kafka_broker()
            )
        });
}

/// Sets a topic-level config (e.g. `max.message.bytes`) on a fresh topic.
pub async fn set_topic_config(topic: &str, key: &str, value: &str) {
    use rdkafka::admin::{AdminOptions, AlterConfig, ResourceSpecifier};
    let admin = kafka().admin().expect("admin client");
    let config = AlterConfig::new(ResourceSpecifier::Topic(topic)).set(key, value);
    let results = admin
        .alter_configs(&[config], &AdminOptions::new())
        .await
        .expect("alter topic config");
    for r in results {
        r.unwrap_or_else(|(resource, code)| {
            panic!("cannot set {key}={value} on {resource:?}: {code}")
        });
    }
}

/// `cassandra-writer migrate` with the defaults users get (the documented retention: 30, 90
/// and 365 days; no roles granted, no table allowed to be dropped) for `cassandra`.
pub fn migrate_args(cassandra: CassandraArgs) -> MigrateArgs {
    MigrateArgs {
        cassandra,
        telemetry: TelemetryArgs {
            log_format: pipeline_runtime::telemetry::LogFormat::Text,
        },
        replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".into(),
        grant_write_to: Vec::new(),
        grant_read_to: Vec::new(),
        allow_drop: Vec::new(),
        access_logs_ttl_days: 30,
        stats_ttl_days: 90,
        alerts_ttl_days: 365,
    }
}

/// A fresh keyspace with every migration applied; returns its name.
pub async fn fresh_keyspace() -> String {
    let keyspace = unique("it");
    let args = migrate_args(cassandra(&keyspace));
    cassandra_writer::migrate(&args).await.unwrap_or_else(|e| {
        panic!(
            "cannot migrate a keyspace on Cassandra at {} ({e:#}); \
             run the integration tests with `cargo xtask test`",
            cassandra_nodes()
        )
    });
    keyspace
}

pub async fn session(keyspace: &str) -> Session {
    cassandra(keyspace).connect().await.expect("CQL session")
}

/// The `x-origin` header of a re-submitted record (`producer dlq redrive`, `producer replay`).
fn origin_header(m: &impl rdkafka::Message) -> Option<String> {
    use rdkafka::message::Headers as _;
    m.headers()?
        .iter()
        .find(|h| h.key == log_schema::headers::ORIGIN)
        .and_then(|h| Some(String::from_utf8_lossy(h.value?).into_owned()))
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// Its `x-origin` header, if any.
    pub origin: Option<String>,
    pub payload: Vec<u8>,
}

/// Reads every partition of `topic` from the beginning until `expected` records arrived (or
/// the deadline passes, then returns what it has). Uses assign(), not a group.
pub fn read_topic(topic: &str, expected: usize, deadline: Duration) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_broker())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
                .expect("tpl");
        }
    }
    consumer.assign(&tpl).expect("assign");
    let end = Instant::now() + deadline;
    let mut out = Vec::new();
    while out.len() < expected && Instant::now() < end {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(Read {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
                origin: origin_header(&m),
            }),
            Some(Err(e)) => panic!("consume error on {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// Reads every committed record of `topic` (`read_committed`: aborted transactions and their
/// markers are skipped) until each partition reported its end; panics after `deadline`. Run it
/// when no transaction is open on the topic.
pub fn read_to_end(topic: &str, deadline: Duration) -> Vec<Read> {
    read_to_end_as(topic, "read_committed", deadline)
}

/// Every record of `topic` including those of aborted transactions (`read_uncommitted`),
/// without transaction markers.
pub fn read_uncommitted(topic: &str, deadline: Duration) -> Vec<Read> {
    read_to_end_as(topic, "read_uncommitted", deadline)
}

fn read_to_end_as(topic: &str, isolation: &str, deadline: Duration) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_broker())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut open = BTreeSet::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
                .expect("tpl");
            open.insert(p.id());
        }
    }
    consumer.assign(&tpl).expect("assign");
    let end = Instant::now() + deadline;
    let mut out = Vec::new();
    while !open.is_empty() {
        assert!(
            Instant::now() < end,
            "{topic}: partitions {open:?} not read to their end after {deadline:?}"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(Read {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
                origin: origin_header(&m),
            }),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => panic!("consume error on {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// Sum of the high watermarks of a topic.
pub fn topic_size(topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_broker())
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    md.topics()
        .iter()
        .flat_map(|t| t.partitions())
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .expect("wm")
                .1
        })
        .sum()
}

/// Produces `records` (key, payload) to `topic` and waits for every acknowledgement.
pub async fn produce(topic: &str, records: &[(Option<Vec<u8>>, Vec<u8>)]) {
    let producer = kafka().producer(&[]).expect("producer");
    let sends = records.iter().map(|(key, payload)| {
        let mut r = rdkafka::producer::FutureRecord::<[u8], [u8]>::to(topic).payload(payload);
        if let Some(k) = key {
            r = r.key(k);
        }
        producer.send(r, Duration::from_secs(60))
    });
    for result in futures::future::join_all(sends).await {
        result.expect("record delivered");
    }
}

/// A fresh empty directory under the system's temporary directory.
pub fn scratch_dir(prefix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Polls `condition` every 100 ms until it holds; panics with `what` after `deadline`.
pub async fn wait_until<F: FnMut() -> bool>(deadline: Duration, what: &str, mut condition: F) {
    let end = Instant::now() + deadline;
    while !condition() {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Path of a service binary built by `cargo xtask test` (`PIPELINE_BIN_DIR`), else the
/// workspace's debug dir.
pub fn bin(name: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("PIPELINE_BIN_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug")
        });
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing; run the tests with `cargo xtask test`",
        path.display()
    );
    path
}

/// A service process that is killed when the test ends, even when it panics.
#[derive(Debug)]
pub struct Service(std::process::Child);

impl Service {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().expect("wait for the service")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `target/it-logs/<log_name>.log`, opened for appending.
fn log_file(log_name: &str) -> std::fs::File {
    let logs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/it-logs");
    std::fs::create_dir_all(&logs).expect("log dir");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(format!("{log_name}.log")))
        .expect("log file")
}

/// The log of the services a test runs in its own process ([`log_in_process`]).
pub const IN_PROCESS_LOG: &str = "in-process";

/// Sends the logs of services run inside the test process to
/// `target/it-logs/in-process.log` (once per test binary).
pub fn log_in_process() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let file = std::sync::Mutex::new(log_file(IN_PROCESS_LOG));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,librdkafka=off"))
            .with_ansi(false)
            .with_writer(file)
            .try_init();
    });
}

/// The idle steps the stream-readers logging to `logs` committed on `topic` (the validated
/// topic).
pub fn idle_steps(logs: &[&str], topic: &str) -> Vec<stream_reader::reference::IdleStep> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/it-logs");
    logs.iter()
        .flat_map(|name| {
            let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
            stream_reader::reference::idle_steps_in_log(&text, topic)
        })
        .collect()
}

/// Starts a service binary against the test stack with `env` on top; its output goes to
/// `target/it-logs/<log_name>.log`.
pub fn spawn_service(name: &str, log_name: &str, env: &[(&str, String)]) -> Service {
    let log = log_file(log_name);
    std::process::Command::new(bin(name))
        .env("KAFKA_BROKER", kafka_broker())
        .env("CASSANDRA_NODES", cassandra_nodes())
        .env("RUST_LOG", "info,librdkafka=off")
        .env("METRICS_ADDR", "127.0.0.1:0")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .map(Service)
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
}

/// Sizes of the partition assignments a service logged to `target/it-logs/<log_name>.log`, in
/// order (its `partitions assigned` lines).
pub fn assignments(log_name: &str) -> Vec<usize> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/it-logs")
        .join(format!("{log_name}.log"));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(pipeline_runtime::telemetry::without_colours)
        .filter(|l| l.contains("partitions assigned"))
        .filter_map(|l| {
            let list = l.split("partitions=[").nth(1)?.split(']').next()?;
            Some(list.matches('"').count() / 2)
        })
        .collect()
}

/// SIGKILL, no goodbye.
pub fn kill9(service: &mut Service) {
    service.0.kill().expect("SIGKILL");
    service.0.wait().expect("reaped");
}

/// SIGTERM and wait for a clean exit.
pub fn terminate(service: &mut Service) -> std::process::ExitStatus {
    #[allow(unsafe_code)] // reason: kill(2) to send SIGTERM; std only offers SIGKILL
    unsafe {
        libc::kill(service.0.id() as i32, libc::SIGTERM);
    }
    service.0.wait().expect("exit status")
}

/// Event ids of every row of `access_logs` for the given source IPs.
pub async fn event_ids(session: &Session, keyspace: &str, ips: &[String]) -> Vec<uuid::Uuid> {
    let stmt = session
        .prepare(format!(
            "SELECT event_id FROM {keyspace}.access_logs WHERE source_ip = ?"
        ))
        .await
        .expect("prepare");
    let mut out = Vec::new();
    for ip in ips {
        let mut pages = session
            .execute_iter(stmt.clone(), (ip,))
            .await
            .expect("select")
            .rows_stream::<(uuid::Uuid,)>()
            .expect("typed");
        while let Some(row) = futures::StreamExt::next(&mut pages).await {
            out.push(row.expect("decode").0);
        }
    }
    out
}

/// A consumer of `group` (not subscribed) and the partitions of `topic`.
fn group_consumer(group: &str, topic: &str) -> (BaseConsumer, Vec<i32>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_broker())
        .set("group.id", group)
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions())
        .map(|p| p.id())
        .collect();
    (consumer, partitions)
}

/// Commits `group`'s offsets at the end of `topic` (what a consumer that read everything did).
pub fn commit_at_end(group: &str, topic: &str) {
    let (consumer, partitions) = group_consumer(group, topic);
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(high))
            .expect("offset");
    }
    consumer
        .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .expect("commit at the end");
}

/// Committed offsets of a group on a topic, per partition (absent = nothing committed).
pub fn committed(group: &str, topic: &str) -> std::collections::BTreeMap<i32, i64> {
    let (consumer, partitions) = group_consumer(group, topic);
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, p);
    }
    // The group coordinator may be moving or still loading `__consumer_offsets` (NotCoordinator,
    // CoordinatorLoadInProgress): transient on a real broker, so ask again until a deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    let c = loop {
        match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("committed({group}, {topic}): {e}; asking again");
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => panic!("committed({group}, {topic}) for 30 s: {e}"),
        }
    };
    c.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// A TCP proxy in front of a server that a test can cut (close every connection and refuse new
/// ones) and restore: a network outage without touching the server other tests share.
#[derive(Debug, Clone)]
pub struct CutProxy {
    pub addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl CutProxy {
    pub async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let proxy = Self {
            addr: listener.local_addr().expect("addr"),
            cut: Default::default(),
            conns: Default::default(),
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if p.cut.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                p.conns.lock().expect("lock").push(task.abort_handle());
            }
        });
        proxy
    }

    /// Closes every connection and refuses new ones until [`CutProxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().expect("lock").drain(..) {
            c.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// A free loopback port (bound, then released) for a service's METRICS_ADDR.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Minimal HTTP/1.1 GET: (status code, body). `None` when nothing answers.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    // HTTP/1.0: the server closes the connection after a body sent whole (no chunked encoding,
    // which Prometheus' API uses for larger HTTP/1.1 answers).
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Sum of the samples of `name` in a Prometheus exposition whose labels include `labels`.
pub fn metric(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric_name, label_text) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (metric_name == name
                && labels
                    .iter()
                    .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

/// Every metric name in an exposition.
pub fn metric_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_owned))
        .collect()
}

/// Like [`wait_until`] for an async condition.
pub async fn wait_until_async<F, Fut>(deadline: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    while !condition().await {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for a service that stops by itself (e.g. a producer with a count).
pub fn terminate_or_wait(service: &mut Service) -> std::process::ExitStatus {
    service.0.wait().expect("exit status")
}

/// Produces `records` (key, payload) with `extra` producer settings on top of the service
/// defaults, and returns every record's delivery: its (partition, offset), or the producer's
/// error for that record (nothing panics, so a test can assert on a rejection).
pub async fn produce_each(
    topic: &str,
    records: &[(Option<Vec<u8>>, Vec<u8>)],
    extra: &[(&str, &str)],
) -> Vec<Result<(i32, i64), rdkafka::error::KafkaError>> {
    let producer = kafka().producer(extra).expect("producer");
    let sends = records.iter().map(|(key, payload)| {
        let mut r = rdkafka::producer::FutureRecord::<[u8], [u8]>::to(topic).payload(payload);
        if let Some(k) = key {
            r = r.key(k);
        }
        producer.send(r, Duration::from_secs(60))
    });
    futures::future::join_all(sends)
        .await
        .into_iter()
        .map(|r| r.map(|d| (d.partition, d.offset)).map_err(|(e, _)| e))
        .collect()
}

/// Producer options for tests: as fast as possible, generated traffic of `hosts` hosts from
/// `seed`, nothing invalid, no scenario, an ephemeral metrics port.
pub fn producer_args(topic: &str, seed: u64, hosts: usize) -> producer::ProducerArgs {
    producer::ProducerArgs {
        kafka: KafkaArgs::new(kafka_broker()),
        telemetry: TelemetryArgs {
            log_format: pipeline_runtime::telemetry::LogFormat::Text,
        },
        topic: topic.to_owned(),
        rate: 0,
        count: None,
        duration_secs: None,
        input: None,
        follow: false,
        checkpoint_dir: scratch_dir("checkpoints"),
        checkpoint_interval_ms: 1000,
        fingerprint_wait_ms: 5000,
        from_start: false,
        format: producer::formats::InputFormat::SeedJson,
        netfilter_deny_pattern: log_formats::DEFAULT_DENY_PREFIX.into(),
        max_line_bytes: 1024 * 1024,
        generator: producer::GeneratorArgs {
            seed,
            hosts,
            deny_ratio: 0.05,
            invalid_ratio: 0.0,
            scenarios: vec![],
            scenario_interval_secs: 60,
            timestamp_style: producer::TimestampArg::Seed,
        },
        status_interval_secs: 5,
        flush_timeout_secs: 60,
        metrics_addr: "127.0.0.1:0".parse().expect("addr"),
    }
}
