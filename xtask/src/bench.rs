//! `cargo xtask bench`: every stage against the ceiling it runs under, side by side in one run,
//! on a stack of its own (Apache Kafka and Apache Cassandra on 127.0.0.1:39092 / :39042).
//! Writes `target/bench/summary.json`. `--tuning` measures the client settings instead
//! ([`crate::tuning`]).
//!
//! 1. producer (release binary, `--rate 0`) vs a raw rdkafka producer sending the same
//!    pre-serialised bytes vs a Python confluent-kafka producer generating the same records;
//! 2. stream-reader vs a raw rdkafka consume → produce pass-through of the same topic;
//! 3. cassandra-writer vs a raw scylla concurrent prepared-insert loop of the same rows;
//! 4. end to end at a fixed rate: event time → row written (from the rows' own columns);
//! 5. peak RSS (VmHWM) of each service.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use clap::Args;
use futures::StreamExt;
use log_schema::ValidatedRecord;
use pipeline_runtime::{cassandra::CassandraArgs, kafka::KafkaArgs};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    producer::{BaseRecord, Producer, ThreadedProducer},
};

use crate::stack::{self, Server, Stack};

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Finish in about 3 minutes (fewer records, 20 s end-to-end phase).
    #[arg(long)]
    pub quick: bool,
    /// Instead of the stages: each Kafka client setting we chose against its alternative
    /// (`target/bench/tuning.json`).
    #[arg(long)]
    pub tuning: bool,
    /// Instead of the stages: the stream-reader's exactly-once transaction settings
    /// (interval, size) against alternatives and against at-least-once
    /// (`target/bench/transactions.json`).
    #[arg(long, conflicts_with = "tuning")]
    pub transactions: bool,
    /// Instead of the stages: our stream-reader + cassandra-writer against another system on
    /// the same records (`spark`: the seed's Spark Structured Streaming job), side by side.
    #[arg(long, value_enum, conflicts_with_all = ["tuning", "transactions"])]
    pub baseline: Option<crate::baseline::Baseline>,
}

pub(crate) struct Metric {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    pub ceiling: Option<f64>,
}

impl Metric {
    pub(crate) fn json(&self) -> String {
        let ratio = self.ceiling.filter(|c| *c > 0.0).map(|c| self.value / c);
        format!(
            "{{\"name\": \"{}\", \"value\": {:.3}, \"unit\": \"{}\", \"ceiling\": {}, \"ratio\": {}}}",
            self.name,
            self.value,
            self.unit,
            self.ceiling
                .map_or("null".to_owned(), |c| format!("{c:.3}")),
            ratio.map_or("null".to_owned(), |r| format!("{r:.3}")),
        )
    }
}

pub(crate) fn bin(name: &str) -> PathBuf {
    crate::bin_path(name, true)
}

pub(crate) fn service(
    name: &str,
    args: &[&str],
    env: &[(String, String)],
    log: &Path,
) -> anyhow::Result<Child> {
    crate::spawn_logged(&bin(name), args, env, log)
}

/// Peak resident set (VmHWM) of a running process, in MB.
pub(crate) fn peak_rss_mb(pid: u32) -> f64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU time (user + system) a running process has used so far, in seconds.
pub(crate) fn process_cpu_secs(pid: i32) -> f64 {
    // /proc/<pid>/stat: fields 14 and 15 (utime, stime) in clock ticks, after the `(comm)`.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            #[allow(unsafe_code)] // reason: sysconf(3) has no std wrapper; it reads a constant
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
            Some(ticks / hz.max(1.0))
        })
        .unwrap_or(0.0)
}

/// CPU time (user + system) of this process's waited-for children so far, in seconds.
pub(crate) fn children_cpu_secs() -> f64 {
    #[allow(unsafe_code)] // reason: getrusage(2) has no std wrapper; it only fills the struct
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

pub(crate) fn stop(child: &mut Child) {
    stack::terminate(child.id() as i32, Duration::from_secs(40));
    let _ = child.wait();
}

pub(crate) fn topic_size(kafka: &KafkaArgs, topic: &str) -> anyhow::Result<i64> {
    let c: BaseConsumer = kafka.config(&[])?.create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut total = 0;
    for t in md.topics() {
        for p in t.partitions() {
            total += c
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))?
                .1;
        }
    }
    Ok(total)
}

/// (key, payload) records.
type Records = Vec<(Option<Vec<u8>>, Vec<u8>)>;

/// Every committed record of `topic` (`read_committed`, up to each partition's end: with
/// transactions the high watermark also counts markers and aborted records).
pub(crate) fn read_all(kafka: &KafkaArgs, topic: &str) -> anyhow::Result<Records> {
    let c: BaseConsumer = kafka
        .config(&[
            ("group.id", "bench-read"),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
            ("enable.partition.eof", "true"),
        ])?
        .create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    let mut open = BTreeSet::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            open.insert(p.id());
        }
    }
    c.assign(&tpl)?;
    let mut out = Vec::with_capacity(topic_size(kafka, topic)?.max(0) as usize);
    let deadline = Instant::now() + Duration::from_secs(300);
    while !open.is_empty() && Instant::now() < deadline {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push((
                m.key().map(<[u8]>::to_vec),
                m.payload().unwrap_or_default().to_vec(),
            )),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    Ok(out)
}

/// The bench writers' /metrics (one at a time), to follow their progress. Below the kernel's
/// ephemeral port range (32768–60999 here): in it, an outgoing connection of the bench could
/// hold the port when a service binds it (seen once: "cannot bind the metrics address").
const WRITER_METRICS_ADDR: &str = "127.0.0.1:31103";
const WRITER_METRICS_PORT: u16 = 31103;
const READER_METRICS_ADDR: &str = "127.0.0.1:31102";
const READER_METRICS_PORT: u16 = 31102;

/// Rows the writer behind `port` has written to `access_logs`.
async fn rows_written(port: u16) -> Option<i64> {
    let body = crate::up::get_metrics(port).await?;
    body.lines()
        .find(|l| {
            l.starts_with("writer_rows_written_total{") && l.contains("table=\"access_logs\"")
        })
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse::<f64>().ok())
        .map(|v| v as i64)
}

/// Waits until the writer behind `port` has written `n` access_logs rows; returns how long it
/// took from the call.
pub(crate) async fn wait_rows(port: u16, n: i64, limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let written = rows_written(port).await.unwrap_or(0);
        if written >= n {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!("the writer wrote {written} of {n} rows in {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sum of `group`'s committed offsets on `topic`.
fn committed_sum(kafka: &KafkaArgs, group: &str, topic: &str) -> anyhow::Result<i64> {
    let c: BaseConsumer = kafka.config(&[("group.id", group)])?.create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition(topic, p.id());
        }
    }
    Ok(c.committed_offsets(tpl, Duration::from_secs(10))?
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum())
}

/// Waits until `group` committed `n` offsets of `topic`; returns how long it took.
pub(crate) async fn wait_committed(
    kafka: &KafkaArgs,
    group: &str,
    topic: &str,
    n: i64,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let committed = committed_sum(kafka, group, topic).unwrap_or(0);
        if committed >= n {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!("{group} committed {committed} of {n} offsets of {topic} in {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn wait_size(
    kafka: &KafkaArgs,
    topics: &[&str],
    n: i64,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let mut total = 0;
        for t in topics {
            total += topic_size(kafka, t)?;
        }
        if total >= n {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!("only {total} of {n} records on {topics:?} after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Raw rdkafka producer: the same bytes and keys, same settings, no generation.
fn raw_produce(
    kafka: &KafkaArgs,
    topic: &str,
    records: &[(Option<Vec<u8>>, Vec<u8>)],
    count: usize,
) -> anyhow::Result<f64> {
    let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> = kafka
        .producer_config(KafkaArgs::SOURCE_PRODUCER)?
        .create()?;
    let start = Instant::now();
    for (key, payload) in records.iter().cycle().take(count) {
        let mut r = BaseRecord::<[u8], [u8]>::to(topic).payload(payload);
        if let Some(k) = key {
            r = r.key(k);
        }
        let mut r = Some(r);
        while let Some(rec) = r.take() {
            if let Err((_, rec)) = producer.send(rec) {
                r = Some(rec);
                producer.poll(Duration::from_millis(1));
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

const PYTHON_PRODUCER: &str = r#"
import json, random, sys, time, ipaddress
from datetime import datetime
from confluent_kafka import Producer
broker, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
conf = {"bootstrap.servers": broker, "enable.idempotence": True, "acks": "all",
        "compression.type": "lz4", "linger.ms": 50, "batch.num.messages": 10000,
        "queue.buffering.max.messages": 500000}
if len(sys.argv) > 4 and sys.argv[4] == "mock":
    conf["test.mock.num.brokers"] = 1
p = Producer(conf)
rng = random.Random(42)
hosts = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(2000)]
ports = [443, 80, 22, 53, 8080, 3306, 5432, 6379]
start = time.time()
for i in range(n):
    rec = {"timestamp": datetime.utcnow().isoformat(), "source_ip": rng.choice(hosts),
           "destination_ip": rng.choice(hosts), "port": rng.choice(ports),
           "protocol": rng.choice(["TCP", "UDP", "ICMP"]), "bytes_sent": int(rng.lognormvariate(7, 1.5)),
           "bytes_received": int(rng.lognormvariate(8, 1.8)),
           "action": "DENY" if rng.random() < 0.05 else "ALLOW"}
    while True:
        try:
            p.produce(topic, key=rec["source_ip"], value=json.dumps(rec))
            break
        except BufferError:
            p.poll(0.001)
    p.poll(0)
p.flush(120)
print(n / (time.time() - start))
"#;

fn python_produce(kafka: &KafkaArgs, topic: &str, n: u64, mock: bool) -> anyhow::Result<f64> {
    let python = crate::python_tool("confluent-kafka", "python")?;
    let out = Command::new(python)
        .args(["-c", PYTHON_PRODUCER, &kafka.brokers, topic, &n.to_string()])
        .args(mock.then_some("mock"))
        .output()
        .context("run the Python producer")?;
    if !out.status.success() {
        bail!(
            "Python producer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// Raw consume → produce pass-through: the reader's ceiling.
fn raw_passthrough(kafka: &KafkaArgs, from: &str, to: &str, n: i64) -> anyhow::Result<f64> {
    // The stream-reader's consumer settings.
    let own: &[(&str, &str)] = &[
        ("group.id", "bench-passthrough"),
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "true"),
        ("fetch.wait.max.ms", "100"),
    ];
    let settings = [own, KafkaArgs::CONSUMER_MEMORY].concat();
    let consumer: BaseConsumer = kafka.config(&settings)?.create()?;
    consumer.subscribe(&[from])?;
    // The stream-reader's producer settings.
    let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
        kafka.producer_config(&[])?.create()?;
    let mut seen = 0;
    let mut start = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while seen < n && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            start.get_or_insert_with(Instant::now);
            let mut r =
                Some(BaseRecord::<[u8], [u8]>::to(to).payload(m.payload().unwrap_or_default()));
            if let Some(k) = m.key() {
                r = r.map(|r| r.key(k));
            }
            while let Some(rec) = r.take() {
                if let Err((_, rec)) = producer.send(rec) {
                    r = Some(rec);
                    producer.poll(Duration::from_millis(1));
                }
            }
            seen += 1;
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let start = start.context("the pass-through consumed nothing")?;
    Ok(seen as f64 / start.elapsed().as_secs_f64())
}

/// Raw concurrent prepared inserts of the same rows: the writer's ceiling.
async fn raw_inserts(
    cql: &CassandraArgs,
    records: &[ValidatedRecord],
    concurrency: usize,
) -> anyhow::Result<f64> {
    let session = Arc::new(cql.connect().await?);
    let stmt = session
        .prepare(cassandra_writer::writer::insert_cql(&cql.keyspace))
        .await?;
    let start = Instant::now();
    let results: Vec<_> = futures::stream::iter(records.iter().map(|r| {
        let session = session.clone();
        let stmt = stmt.clone();
        async move {
            let v = cassandra_writer::writer::access_log_row(r);
            session.execute_unpaged(&stmt, v).await
        }
    }))
    .buffer_unordered(concurrency)
    .collect()
    .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if failed > 0 {
        bail!("{failed} raw inserts failed");
    }
    Ok(records.len() as f64 / start.elapsed().as_secs_f64())
}

pub(crate) fn migrate(env: &[(String, String)]) -> anyhow::Result<()> {
    let ok = Command::new(bin("cassandra-writer"))
        .arg("migrate")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "warn,scylla=error")
        .status()?
        .success();
    if !ok {
        bail!("migrate failed");
    }
    Ok(())
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    crate::cargo(
        &[
            "build",
            "--quiet",
            "-p",
            "producer",
            "-p",
            "stream-reader",
            "-p",
            "cassandra-writer",
        ],
        true,
    )?;
    let stack = Stack::named("bench", 39092, 39042, 3);
    stack.start(true).await?;
    let result = if args.tuning {
        crate::tuning::run(&stack, args.quick).await
    } else if args.transactions {
        crate::tuning::transactions(&stack, args.quick).await
    } else if let Some(crate::baseline::Baseline::Spark) = args.baseline {
        crate::baseline::run(&stack, args.quick).await
    } else {
        phases(&stack, &args).await
    };
    stack.stop()?;
    result
}

async fn phases(stack: &Stack, args: &BenchArgs) -> anyhow::Result<()> {
    let n: u64 = if args.quick { 50_000 } else { 200_000 };
    let e2e_secs: u64 = if args.quick { 20 } else { 60 };
    let kafka = KafkaArgs::new(stack.kafka_addr());
    let out_dir = crate::target_dir().join("bench");
    fs::create_dir_all(&out_dir)?;
    let log = out_dir.join("services.log");
    let _ = fs::remove_file(&log);
    let topics = [
        "b_raw",
        "b_raw_ceiling",
        "b_raw_py",
        "b_valid",
        "b_dlq",
        "b_stats",
        "b_alerts",
        "b_pass",
        "b_valid_eos",
        "b_dlq_eos",
        "b_stats_eos",
        "b_alerts_eos",
    ];
    kafka.ensure_topics(&topics, 3, 1).await?;
    let mut env: Vec<(String, String)> = stack.env_with(&[]);
    env.extend([
        ("CASSANDRA_KEYSPACE".to_owned(), "bench".to_owned()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ]);
    migrate(&env)?;
    let mut metrics: Vec<Metric> = Vec::new();
    let mut rss: Vec<(&str, f64)> = Vec::new();

    // 1. producer
    println!("bench: producer, {n} records");
    let cpu_before = children_cpu_secs();
    let start = Instant::now();
    let mut p = service(
        "producer",
        &[
            "--topic",
            "b_raw",
            "--count",
            &n.to_string(),
            "--rate",
            "0",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &env,
        &log,
    )?;
    let mut peak = 0.0f64;
    while p.try_wait()?.is_none() {
        peak = peak.max(peak_rss_mb(p.id()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ours = n as f64 / start.elapsed().as_secs_f64();
    let ours_cpu_us = (children_cpu_secs() - cpu_before) * 1e6 / n as f64;
    rss.push(("producer", peak));
    let records = read_all(&kafka, "b_raw")?;
    let ceiling = raw_produce(&kafka, "b_raw_ceiling", &records, records.len())?;
    let python_n = n.min(100_000);
    let cpu_before = children_cpu_secs();
    let python = python_produce(&kafka, "b_raw_py", python_n, false)?;
    let python_cpu_us = (children_cpu_secs() - cpu_before) * 1e6 / python_n as f64;
    println!(
        "  ours {ours:.0}/s ({ours_cpu_us:.1} µs CPU per log), raw rdkafka {ceiling:.0}/s, python {python:.0}/s ({python_cpu_us:.1} µs CPU per log)"
    );
    metrics.push(Metric {
        name: "producer_logs_per_s".into(),
        value: ours,
        unit: "logs/s",
        ceiling: Some(ceiling),
    });
    metrics.push(Metric {
        name: "producer_vs_python".into(),
        value: ours / python,
        unit: "x",
        ceiling: None,
    });
    metrics.push(Metric {
        name: "python_producer_logs_per_s".into(),
        value: python,
        unit: "logs/s",
        ceiling: None,
    });
    // Both producers are capped by the broker, so throughput says little about the clients;
    // the CPU each spends per record does (same machine, same broker, same run).
    metrics.push(Metric {
        name: "producer_cpu_us_per_log".into(),
        value: ours_cpu_us,
        unit: "us",
        ceiling: None,
    });
    metrics.push(Metric {
        name: "python_producer_cpu_us_per_log".into(),
        value: python_cpu_us,
        unit: "us",
        ceiling: None,
    });
    metrics.push(Metric {
        name: "producer_vs_python_cpu".into(),
        value: python_cpu_us / ours_cpu_us.max(1e-9),
        unit: "x",
        ceiling: None,
    });

    // 1b. The same three without the broker's cap: librdkafka's in-process mock cluster
    //     (`test.mock.num.brokers`), which both clients embed; only the clients differ.
    let mock_n: u64 = if args.quick { 300_000 } else { 2_000_000 };
    println!("bench: producer against librdkafka's mock cluster, {mock_n} records");
    let mock_env: Vec<(String, String)> = env
        .iter()
        .cloned()
        .chain([(
            "KAFKA_OPTIONS".to_owned(),
            "test.mock.num.brokers=1".to_owned(),
        )])
        .collect();
    let start = Instant::now();
    let status = service(
        "producer",
        &[
            "--topic",
            "b_mock",
            "--count",
            &mock_n.to_string(),
            "--rate",
            "0",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &mock_env,
        &log,
    )?
    .wait()?;
    if !status.success() {
        bail!("the producer failed against the mock cluster: {status}");
    }
    let ours_mock = mock_n as f64 / start.elapsed().as_secs_f64();
    let mut mock_kafka = kafka.clone();
    mock_kafka.options.push(
        "test.mock.num.brokers=1"
            .parse()
            .map_err(anyhow::Error::msg)?,
    );
    let ceiling_mock = raw_produce(&mock_kafka, "b_mock", &records, mock_n as usize)?;
    let python_mock_n = mock_n / 2;
    let python_mock = python_produce(&kafka, "b_mock", python_mock_n, true)?;
    println!("  ours {ours_mock:.0}/s, raw rdkafka {ceiling_mock:.0}/s, python {python_mock:.0}/s");
    metrics.push(Metric {
        name: "producer_mock_logs_per_s".into(),
        value: ours_mock,
        unit: "logs/s",
        ceiling: Some(ceiling_mock),
    });
    metrics.push(Metric {
        name: "python_producer_mock_logs_per_s".into(),
        value: python_mock,
        unit: "logs/s",
        ceiling: None,
    });
    metrics.push(Metric {
        name: "producer_vs_python_mock".into(),
        value: ours_mock / python_mock,
        unit: "x",
        ceiling: None,
    });

    // 2. stream-reader on the topic the producer filled
    println!("bench: stream-reader");
    let reader_env: Vec<(String, String)> = env
        .iter()
        .cloned()
        .chain(
            [
                ("READER_INPUT_TOPIC", "b_raw"),
                ("READER_VALIDATED_TOPIC", "b_valid"),
                ("READER_DLQ_TOPIC", "b_dlq"),
                ("READER_STATS_TOPIC", "b_stats"),
                ("READER_ALERTS_TOPIC", "b_alerts"),
                ("READER_GROUP_ID", "bench-reader"),
                ("READER_ANALYTICS_GROUP_ID", "bench-analytics"),
                ("METRICS_ADDR", "127.0.0.1:0"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .collect();
    let mut r = service("stream-reader", &[], &reader_env, &log)?;
    // The clock starts at the first output, as the pass-through's starts at its first record:
    // neither counts process start-up and the consumer group join.
    wait_size(&kafka, &["b_valid", "b_dlq"], 1, Duration::from_secs(120)).await?;
    let took = wait_size(
        &kafka,
        &["b_valid", "b_dlq"],
        n as i64,
        Duration::from_secs(600),
    )
    .await?;
    rss.push(("stream-reader", peak_rss_mb(r.id())));
    stop(&mut r);
    let reader = n as f64 / took.as_secs_f64();
    let pass = raw_passthrough(&kafka, "b_raw", "b_pass", n as i64)?;
    println!("  ours {reader:.0}/s, raw pass-through {pass:.0}/s");
    metrics.push(Metric {
        name: "reader_records_per_s".into(),
        value: reader,
        unit: "records/s",
        ceiling: Some(pass),
    });

    // 2b. the same in exactly-once mode: timed from its first committed transaction to the
    //     one that commits the last input offset (outputs are invisible before).
    println!("bench: stream-reader, exactly-once");
    let eos_env: Vec<(String, String)> = reader_env
        .iter()
        .cloned()
        .chain(
            [
                ("READER_VALIDATED_TOPIC", "b_valid_eos"),
                ("READER_DLQ_TOPIC", "b_dlq_eos"),
                ("READER_STATS_TOPIC", "b_stats_eos"),
                ("READER_ALERTS_TOPIC", "b_alerts_eos"),
                ("READER_GROUP_ID", "bench-reader-eos"),
                ("READER_ANALYTICS_GROUP_ID", "bench-analytics-eos"),
                ("READER_DELIVERY", "exactly-once"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .collect();
    let mut r = service("stream-reader", &[], &eos_env, &log)?;
    wait_committed(
        &kafka,
        "bench-reader-eos",
        "b_raw",
        1,
        Duration::from_secs(120),
    )
    .await?;
    let took = wait_committed(
        &kafka,
        "bench-reader-eos",
        "b_raw",
        n as i64,
        Duration::from_secs(600),
    )
    .await?;
    rss.push(("stream-reader-eos", peak_rss_mb(r.id())));
    stop(&mut r);
    let reader_eos = n as f64 / took.as_secs_f64();
    println!("  exactly-once {reader_eos:.0}/s, at-least-once {reader:.0}/s");
    metrics.push(Metric {
        name: "reader_eos_records_per_s".into(),
        value: reader_eos,
        unit: "records/s",
        ceiling: Some(reader),
    });

    // 3. cassandra-writer on the validated topic
    println!("bench: cassandra-writer");
    let valid = topic_size(&kafka, "b_valid")?;
    let writer_env: Vec<(String, String)> = env
        .iter()
        .cloned()
        .chain(
            [
                ("WRITER_INPUT_TOPIC", "b_valid"),
                ("WRITER_DLQ_TOPIC", "b_dlq"),
                ("WRITER_STATS_TOPIC", "b_stats"),
                ("WRITER_ALERTS_TOPIC", "b_alerts"),
                ("WRITER_GROUP_ID", "bench-writer"),
                ("METRICS_ADDR", WRITER_METRICS_ADDR),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .collect();
    let mut w = service("cassandra-writer", &[], &writer_env, &log)?;
    // From the first access_logs row written to the last, as the raw loop is timed from its
    // first insert: neither counts start-up, connecting and the consumer group join.
    wait_rows(WRITER_METRICS_PORT, 1, Duration::from_secs(120)).await?;
    let took = wait_rows(WRITER_METRICS_PORT, valid, Duration::from_secs(900)).await?;
    let writer = valid as f64 / took.as_secs_f64();
    rss.push(("cassandra-writer", peak_rss_mb(w.id())));
    stop(&mut w);
    let rows: Vec<ValidatedRecord> = read_all(&kafka, "b_valid")?
        .iter()
        .filter_map(|(_, p)| ValidatedRecord::from_json(p).ok())
        .collect();
    let cql = CassandraArgs::new(stack.cql_addr(), "bench");
    let mut best = 0.0f64;
    let concurrencies: &[usize] = if args.quick {
        &[256, 1024]
    } else {
        &[64, 256, 1024]
    };
    for &concurrency in concurrencies {
        best = best.max(raw_inserts(&cql, &rows, concurrency).await?);
    }
    println!(
        "  ours {writer:.0} rows/s, raw scylla inserts {best:.0} rows/s (best of {concurrencies:?} in flight)"
    );
    metrics.push(Metric {
        name: "writer_rows_per_s".into(),
        value: writer,
        unit: "rows/s",
        ceiling: Some(best),
    });

    // 4. end to end at the fixed 10K logs/s, then at a rate this machine sustains, to tell
    //    pipeline latency from queueing.
    let rate = 10_000u64;
    println!("bench: end to end at {rate} logs/s for {e2e_secs} s");
    let full = end_to_end(stack, &env, &log, "e2e", Load::rate(rate, e2e_secs)).await?;
    for (i, name) in ["producer", "stream-reader", "cassandra-writer"]
        .iter()
        .enumerate()
    {
        if let Some(e) = rss.iter_mut().find(|(n, _)| n == name) {
            e.1 = e.1.max(full.peaks[i]);
        }
    }
    metrics.extend(full.metrics("e2e", rate));
    for (i, name) in ["producer", "stream_reader", "cassandra_writer"]
        .iter()
        .enumerate()
    {
        metrics.push(Metric {
            name: format!("e2e_rss_mb_{name}"),
            value: full.peaks[i],
            unit: "MB",
            ceiling: None,
        });
    }
    let low_rate = 2_000u64;
    let low_secs = if args.quick { 8 } else { 30 };
    println!("bench: end to end at {low_rate} logs/s for {low_secs} s");
    let low = end_to_end(stack, &env, &log, "e2e_low", Load::rate(low_rate, low_secs)).await?;
    metrics.extend(low.metrics("e2e_2k", low_rate));

    // 4b. the same two rates with exactly-once delivery in the stream-reader and the writer.
    let eos: Vec<(String, String)> = env
        .iter()
        .cloned()
        .chain(
            [
                ("READER_DELIVERY", "exactly-once"),
                ("WRITER_DELIVERY", "exactly-once"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .collect();
    println!("bench: end to end, exactly-once, at {rate} logs/s for {e2e_secs} s");
    let full_eos = end_to_end(stack, &eos, &log, "e2e_eos", Load::rate(rate, e2e_secs)).await?;
    metrics.extend(full_eos.metrics("e2e_eos", rate));
    println!("bench: end to end, exactly-once, at {low_rate} logs/s for {low_secs} s");
    let low_eos = end_to_end(
        stack,
        &eos,
        &log,
        "e2e_eos_low",
        Load::rate(low_rate, low_secs),
    )
    .await?;
    metrics.extend(low_eos.metrics("e2e_eos_2k", low_rate));
    for (name, mb) in &rss {
        metrics.push(Metric {
            name: format!("rss_mb_{}", name.replace('-', "_")),
            value: *mb,
            unit: "MB",
            ceiling: None,
        });
    }

    println!(
        "\n{:<28} {:>14} {:>10} {:>14} {:>8}",
        "name", "value", "unit", "ceiling", "ratio"
    );
    for m in &metrics {
        println!(
            "{:<28} {:>14.1} {:>10} {:>14} {:>8}",
            m.name,
            m.value,
            m.unit,
            m.ceiling.map_or("-".to_owned(), |c| format!("{c:.1}")),
            m.ceiling
                .filter(|c| *c > 0.0)
                .map_or("-".to_owned(), |c| format!("{:.2}", m.value / c))
        );
    }
    let json = format!(
        "[\n  {}\n]\n",
        metrics
            .iter()
            .map(Metric::json)
            .collect::<Vec<_>>()
            .join(",\n  ")
    );
    fs::write(out_dir.join("summary.json"), json)?;
    println!("\nwrote {}", out_dir.join("summary.json").display());
    Ok(())
}

/// What an end-to-end run feeds the pipeline.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Load {
    /// The producer at `rate` logs/s for `secs`, with the pipeline running.
    Rate { rate: u64, secs: u64 },
    /// `n` records produced as fast as possible before the pipeline starts: a backlog to drain.
    Backlog(u64),
}

impl Load {
    pub(crate) fn rate(rate: u64, secs: u64) -> Self {
        Self::Rate { rate, secs }
    }

    fn count(self) -> u64 {
        match self {
            Load::Rate { rate, secs } => rate * secs,
            Load::Backlog(n) => n,
        }
    }
}

/// What one end-to-end run measured.
pub(crate) struct EndToEnd {
    /// Event time → row written (the row's `writetime(action)`), per row, sorted, in ms.
    pub latencies: Vec<f64>,
    /// Seconds from the first row written to the last.
    pub span_secs: f64,
    /// Records produced.
    pub count: u64,
    /// Seconds the producer took for them.
    produce_secs: f64,
    /// Peak RSS of producer, stream-reader and cassandra-writer, in MB.
    pub peaks: [f64; 3],
    /// CPU µs per record of the broker, the CQL server, producer, stream-reader and
    /// cassandra-writer while the pipeline ran: what the machine's cores went to.
    pub cpu_us: [(&'static str, f64); 5],
}

impl EndToEnd {
    pub(crate) fn quantile(&self, p: f64) -> f64 {
        self.latencies
            .get(((self.latencies.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    }

    fn metrics(&self, prefix: &str, rate: u64) -> Vec<Metric> {
        let m = |name: &str, value: f64, unit: &'static str, ceiling: Option<f64>| Metric {
            name: format!("{prefix}_{name}"),
            value,
            unit,
            ceiling,
        };
        let mut out = vec![
            m("p50_ms", self.quantile(0.5), "ms", None),
            m("p99_ms", self.quantile(0.99), "ms", None),
            m("max_ms", self.quantile(1.0), "ms", None),
            m(
                "rows",
                self.latencies.len() as f64,
                "rows",
                Some(self.count as f64),
            ),
            m(
                "achieved_logs_per_s",
                self.count as f64 / self.produce_secs,
                "logs/s",
                Some(rate as f64),
            ),
        ];
        for (process, us) in self.cpu_us {
            out.push(m(&format!("cpu_us_per_log_{process}"), us, "us", None));
        }
        out
    }
}

/// A stream-reader and a cassandra-writer on topics and a keyspace named after `name`, fed by
/// the producer as `load` says; latency per row from its event time and write time.
pub(crate) async fn end_to_end(
    stack: &Stack,
    env: &[(String, String)],
    log: &Path,
    name: &str,
    load: Load,
) -> anyhow::Result<EndToEnd> {
    let kafka = KafkaArgs::new(stack.kafka_addr());
    let topic = |suffix: &str| format!("b_{name}_{suffix}");
    let (raw, valid, dlq, stats, alerts) = (
        topic("raw"),
        topic("valid"),
        topic("dlq"),
        topic("stats"),
        topic("alerts"),
    );
    kafka
        .ensure_topics(&[&raw, &valid, &dlq, &stats, &alerts], 3, 1)
        .await?;
    let keyspace = format!("bench_{name}");
    let env: Vec<(String, String)> = env
        .iter()
        .cloned()
        .chain(
            [
                ("READER_INPUT_TOPIC", raw.as_str()),
                ("READER_VALIDATED_TOPIC", &valid),
                ("READER_DLQ_TOPIC", &dlq),
                ("READER_STATS_TOPIC", &stats),
                ("READER_ALERTS_TOPIC", &alerts),
                ("READER_GROUP_ID", &format!("bench-{name}-reader")),
                (
                    "READER_ANALYTICS_GROUP_ID",
                    &format!("bench-{name}-analytics"),
                ),
                ("WRITER_INPUT_TOPIC", &valid),
                ("WRITER_DLQ_TOPIC", &dlq),
                ("WRITER_STATS_TOPIC", &stats),
                ("WRITER_ALERTS_TOPIC", &alerts),
                ("WRITER_GROUP_ID", &format!("bench-{name}-writer")),
                ("CASSANDRA_KEYSPACE", &keyspace),
                ("METRICS_ADDR", "127.0.0.1:0"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .collect();
    migrate(&env)?;
    let with_metrics = |addr: &str| -> Vec<(String, String)> {
        env.iter()
            .cloned()
            .chain([("METRICS_ADDR".to_owned(), addr.to_owned())])
            .collect()
    };
    let count = load.count();
    let rate = match load {
        Load::Rate { rate, .. } => rate,
        Load::Backlog(_) => 0,
    };
    let producer_args = [
        "--topic",
        &raw,
        "--count",
        &count.to_string(),
        "--rate",
        &rate.to_string(),
        "--timestamp-style",
        "rfc3339",
        "--metrics-addr",
        "127.0.0.1:0",
    ];
    let produce = async |env: &[(String, String)]| -> anyhow::Result<(f64, f64)> {
        let mut p = service("producer", &producer_args, env, log)?;
        let start = Instant::now();
        let mut peak = 0.0f64;
        while p.try_wait()?.is_none() {
            peak = peak.max(peak_rss_mb(p.id()));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok((start.elapsed().as_secs_f64(), peak))
    };
    let mut peaks = [0.0f64; 3];
    let mut produce_secs = 0.0;
    if let Load::Backlog(_) = load {
        (produce_secs, peaks[0]) = produce(&env).await?;
    }
    let mut r = service(
        "stream-reader",
        &[],
        &with_metrics(READER_METRICS_ADDR),
        log,
    )?;
    let mut w = service(
        "cassandra-writer",
        &[],
        &with_metrics(WRITER_METRICS_ADDR),
        log,
    )?;
    // Both ready (connected, partitions assigned) before the first record.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(crate::up::is_ready(READER_METRICS_PORT).await
        && crate::up::is_ready(WRITER_METRICS_PORT).await)
    {
        if Instant::now() > deadline {
            stop(&mut r);
            stop(&mut w);
            bail!(
                "stream-reader and cassandra-writer not ready within 60 s (see {})",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stack_pids =
        [stack.pid(Server::Kafka), stack.pid(Server::Cassandra)].map(|p| p.unwrap_or(0));
    let stack_cpu_before = stack_pids.map(process_cpu_secs);
    let services_cpu_before = [r.id(), w.id()].map(|p| process_cpu_secs(p as i32));
    let children_before = children_cpu_secs();
    if let Load::Rate { .. } = load {
        (produce_secs, peaks[0]) = produce(&env).await?;
    }
    // Let the tail drain: every row written, or give up after a while (then the latencies
    // cover the rows written so far, and `<name>_rows` says how many).
    let drain_limit = Duration::from_secs(180).max(Duration::from_secs(count / 2_000));
    if let Err(error) = wait_rows(WRITER_METRICS_PORT, count as i64, drain_limit).await {
        println!("  {error:#}");
    }
    peaks[1] = peak_rss_mb(r.id());
    peaks[2] = peak_rss_mb(w.id());
    let per_log = |secs: f64| secs * 1e6 / count as f64;
    let stack_cpu = [0, 1].map(|i| per_log(process_cpu_secs(stack_pids[i]) - stack_cpu_before[i]));
    let services_cpu = [r.id(), w.id()].map(|p| process_cpu_secs(p as i32));
    let cpu_us = [
        ("broker", stack_cpu[0]),
        ("cql", stack_cpu[1]),
        ("producer", per_log(children_cpu_secs() - children_before)),
        (
            "stream_reader",
            per_log(services_cpu[0] - services_cpu_before[0]),
        ),
        (
            "cassandra_writer",
            per_log(services_cpu[1] - services_cpu_before[1]),
        ),
    ];
    stop(&mut r);
    stop(&mut w);
    let rows = e2e_rows(stack, &valid, &keyspace).await?;
    let first = rows.iter().map(|r| r.1).min().unwrap_or(0);
    let last = rows.iter().map(|r| r.1).max().unwrap_or(0);
    let mut latencies: Vec<f64> = rows
        .iter()
        .map(|(event, written)| *written as f64 / 1000.0 - *event as f64)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let run = EndToEnd {
        latencies,
        span_secs: (last - first) as f64 / 1e6,
        count,
        produce_secs,
        peaks,
        cpu_us,
    };
    println!(
        "  {} rows in {:.0} s of production ({:.0} logs/s achieved): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        run.latencies.len(),
        produce_secs,
        count as f64 / produce_secs,
        run.quantile(0.5),
        run.quantile(0.99),
        run.quantile(1.0)
    );
    println!(
        "  CPU µs per log: {}",
        cpu_us
            .iter()
            .map(|(p, us)| format!("{p} {us:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(run)
}

/// Every row of the source IPs keyed on `topic`: event time (ms) and write time
/// (`writetime(action)`, µs).
async fn e2e_rows(stack: &Stack, topic: &str, keyspace: &str) -> anyhow::Result<Vec<(i64, i64)>> {
    let kafka = KafkaArgs::new(stack.kafka_addr());
    let ips: BTreeSet<String> = read_all(&kafka, topic)?
        .iter()
        .filter_map(|(k, _)| k.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()))
        .collect();
    let cql = CassandraArgs::new(stack.cql_addr(), keyspace);
    let session = cql.connect().await?;
    let stmt = session
        .prepare(format!(
            "SELECT timestamp, writetime(action) FROM {keyspace}.access_logs WHERE source_ip = ?"
        ))
        .await?;
    let mut out = Vec::new();
    for ip in ips {
        let mut pages = session
            .execute_iter(stmt.clone(), (ip,))
            .await?
            .rows_stream::<(DateTime<Utc>, i64)>()?;
        while let Some(row) = pages.next().await {
            let (event, written) = row?;
            out.push((event.timestamp_millis(), written));
        }
    }
    Ok(out)
}
