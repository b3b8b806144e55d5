//! `cargo xtask bench --baseline spark`: the seed's own design — Spark Structured Streaming
//! reading the raw topic, validating with the seed's rules and appending to Cassandra with the
//! Spark Cassandra Connector (`xtask/baseline/seed_pipeline.py`, `spark-submit --master
//! local[2]`) — against our stream-reader + cassandra-writer, side by side in one run on the
//! bench stack, on the same records:
//!
//! 1. draining a backlog: records/s from the first row written to the last (the rows' own
//!    write times), CPU seconds per 1,000,000 records of every process (servers included) and
//!    peak RSS;
//! 2. end to end at fixed producer rates: event time → row written, every row accounted for.
//!
//! "Row written" is the cell's write time (`writetime(action)`) for both systems: Spark's
//! `created_at = current_timestamp()` is the micro-batch's start, earlier than its write.
//! Rows are counted against an independent reading of the input topic: ours has one row per
//! record (`event_id` is in the key); the seed's table keys rows by (source_ip, timestamp), so
//! records sharing both collapse into one row, as they would for the seed's users.
//!
//! pyspark comes from PyPI into `target/venv-pyspark==<version>`; the connectors from Maven
//! Central (`xtask/baseline/pom.xml`), both once per machine.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use log_schema::ValidatedRecord;
use pipeline_runtime::{cassandra::CassandraArgs, kafka::KafkaArgs};
use scylla::client::session::Session;

use crate::{
    bench::{self, EndToEnd, Load, Metric, end_to_end, process_cpu_secs, service, stop},
    stack::{Server, Stack},
};

mod cql_cost;
mod report;
mod spark;

use cql_cost::*;
use report::*;

pub(crate) use report::merge_summary;
use spark::*;

/// The pyspark release from PyPI; `xtask/baseline/pom.xml` pins the connectors built for it.
pub const SPARK_VERSION: &str = "3.5.7";

/// Which system to compare with.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Baseline {
    /// The seed's Spark Structured Streaming job.
    Spark,
}

/// Creates `keyspace` with the seed's `access_logs` table, verbatim from its README.
async fn seed_table(stack: &Stack, keyspace: &str) -> anyhow::Result<()> {
    let session = CassandraArgs::new(stack.cql_addr(), keyspace)
        .connect()
        .await?;
    session
        .query_unpaged(
            format!(
                "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
                 {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
            ),
            (),
        )
        .await?;
    session
        .query_unpaged(
            format!(
                "CREATE TABLE IF NOT EXISTS {keyspace}.access_logs (timestamp TIMESTAMP, \
                 source_ip TEXT, destination_ip TEXT, port INT, protocol TEXT, \
                 bytes_sent BIGINT, bytes_received BIGINT, action TEXT, created_at TIMESTAMP, \
                 PRIMARY KEY (source_ip, timestamp)) WITH CLUSTERING ORDER BY (timestamp DESC)"
            ),
            (),
        )
        .await?;
    Ok(())
}

/// Every row of `keyspace.access_logs`: (event time in ms, write time in µs).
async fn rows(session: &Session, keyspace: &str) -> anyhow::Result<Vec<(i64, i64)>> {
    let mut pages = session
        .query_iter(
            format!("SELECT timestamp, writetime(action) FROM {keyspace}.access_logs"),
            (),
        )
        .await?
        .rows_stream::<(DateTime<Utc>, i64)>()?;
    let mut out = Vec::new();
    while let Some(row) = pages.next().await {
        let (event, written) = row?;
        out.push((event.timestamp_millis(), written));
    }
    Ok(out)
}

/// The rows the seed's table must hold for `topic`: its records' distinct
/// (source_ip, timestamp in ms), read from the topic with serde_json and chrono, not with our
/// validator.
fn seed_keys(kafka: &KafkaArgs, topic: &str) -> anyhow::Result<usize> {
    let mut keys = BTreeSet::new();
    for (_, payload) in bench::read_all(kafka, topic)? {
        let v: serde_json::Value = serde_json::from_slice(&payload)?;
        let ip = v["source_ip"].as_str().context("source_ip")?.to_owned();
        let ts = DateTime::parse_from_rfc3339(v["timestamp"].as_str().context("timestamp")?)?;
        keys.insert((ip, ts.timestamp_millis()));
    }
    Ok(keys.len())
}

/// What one system did with one input.
struct Run {
    /// Rows written; and rows the input must give.
    rows: usize,
    expected: usize,
    /// Input records per second from the first row written to the last.
    records_per_s: f64,
    /// Event time → row written, sorted, ms.
    latencies: Vec<f64>,
    /// CPU seconds per 1,000,000 records: the system's processes; the broker; the CQL server.
    cpu: [f64; 3],
    peak_rss_mb: f64,
}

impl Run {
    fn new(rows: &[(i64, i64)], expected: usize, records: i64, cpu: [f64; 3], rss: f64) -> Self {
        let first = rows.iter().map(|r| r.1).min().unwrap_or(0);
        let last = rows.iter().map(|r| r.1).max().unwrap_or(0);
        let mut latencies: Vec<f64> = rows
            .iter()
            .map(|(event, written)| (*written as f64 / 1000.0) - *event as f64)
            .collect();
        latencies.sort_by(f64::total_cmp);
        Self {
            rows: rows.len(),
            expected,
            records_per_s: records as f64 / ((last - first).max(1) as f64 / 1e6),
            latencies,
            cpu: cpu.map(|secs| secs * 1e6 / records as f64),
            peak_rss_mb: rss,
        }
    }

    fn quantile(&self, p: f64) -> f64 {
        self.latencies
            .get(((self.latencies.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    }

    fn print(&self, system: &str) {
        println!(
            "  {system}: {} of {} rows, {:.0} records/s first→last row, p50 {:.0} / p99 {:.0} / max {:.0} ms, \
             CPU s per 1M records {:.1} (broker {:.1}, CQL {:.1}), peak RSS {:.0} MB",
            self.rows,
            self.expected,
            self.records_per_s,
            self.quantile(0.5),
            self.quantile(0.99),
            self.quantile(1.0),
            self.cpu[0],
            self.cpu[1],
            self.cpu[2],
            self.peak_rss_mb
        );
    }
}

impl From<&EndToEnd> for Run {
    fn from(e: &EndToEnd) -> Self {
        // µs per record = s per 1,000,000 records.
        let cpu = |name: &str| {
            e.cpu_us
                .iter()
                .filter(|(p, _)| *p == name)
                .map(|(_, us)| us)
                .sum::<f64>()
        };
        Self {
            rows: e.latencies.len(),
            expected: e.count as usize,
            records_per_s: e.count as f64 / e.span_secs.max(1e-6),
            latencies: e.latencies.clone(),
            cpu: [
                cpu("stream_reader") + cpu("cassandra_writer"),
                cpu("broker"),
                cpu("cql"),
            ],
            peak_rss_mb: e.peaks[1] + e.peaks[2],
        }
    }
}

/// The Spark job on `topic` (already filled for a backlog; filled by the producer at the
/// load's rate otherwise) into a fresh `keyspace` with the seed's table.
async fn spark_run(
    stack: &Stack,
    spark: &Spark,
    env: &[(String, String)],
    (topic, keyspace): (&str, &str),
    load: Load,
    logs: (&Path, &Path),
) -> anyhow::Result<Run> {
    let kafka = KafkaArgs::new(stack.kafka_addr());
    kafka.ensure_topics(&[topic], 3, 1).await?;
    seed_table(stack, keyspace).await?;
    let mut job = spark.start(stack, topic, keyspace, logs.1).await?;
    let servers = [Server::Kafka, Server::Cassandra].map(|s| stack.pid(s).unwrap_or(0));
    let before = (job.cpu_secs(), servers.map(process_cpu_secs));
    if let Load::Rate { rate, secs } = load {
        let count = (rate * secs).to_string();
        let rate = rate.to_string();
        let args = [
            "--topic",
            topic,
            "--count",
            &count,
            "--rate",
            &rate,
            "--timestamp-style",
            "rfc3339",
            "--metrics-addr",
            "127.0.0.1:0",
        ];
        let status = service("producer", &args, env, logs.0)?.wait()?;
        if !status.success() {
            bail!("producer failed ({status}); see {}", logs.0.display());
        }
    }
    let n = bench::topic_size(&kafka, topic)?;
    let waited = job
        .wait_committed(
            n,
            Duration::from_secs(180).max(Duration::from_secs(n as u64 / 1_000)),
        )
        .await;
    let cpu = [
        job.cpu_secs() - before.0,
        process_cpu_secs(servers[0]) - before.1[0],
        process_cpu_secs(servers[1]) - before.1[1],
    ];
    let rss = job.peak_rss_mb();
    stop(&mut job.child);
    waited?;
    let session = CassandraArgs::new(stack.cql_addr(), keyspace)
        .connect()
        .await?;
    let rows = rows(&session, keyspace).await?;
    Ok(Run::new(&rows, seed_keys(&kafka, topic)?, n, cpu, rss))
}

/// Runs the comparison on the (started) bench stack; summary rows into
/// `target/bench/summary.json`, a latency plot into `target/bench/baseline_latency.png`.
pub async fn run(stack: &Stack, quick: bool) -> anyhow::Result<()> {
    let spark = Spark::install()?;
    let backlog: u64 = if quick { 200_000 } else { 1_000_000 };
    let secs: u64 = if quick { 20 } else { 60 };
    let out_dir = crate::target_dir().join("bench");
    fs::create_dir_all(&out_dir)?;
    let log = out_dir.join("baseline.log");
    let spark_log = out_dir.join("spark.log");
    let _ = fs::remove_file(&log);
    let env = stack.env_with(&[("RUST_LOG", "warn")]);

    println!("baseline: ours draining a backlog of {backlog} records");
    let ours_drain =
        Run::from(&end_to_end(stack, &env, &log, "bl_drain", Load::Backlog(backlog)).await?);
    ours_drain.print("ours ");
    println!("baseline: Spark draining the same {backlog} records");
    let spark_drain = spark_run(
        stack,
        &spark,
        &env,
        ("b_bl_drain_raw", "bench_spark_drain"),
        Load::Backlog(backlog),
        (&log, &spark_log),
    )
    .await?;
    spark_drain.print("Spark");
    let mut latency = Vec::new();
    for rate in [2_000u64, 5_000, 10_000] {
        let k = rate / 1_000;
        println!("baseline: ours at {rate} logs/s for {secs} s");
        let ours = Run::from(
            &end_to_end(
                stack,
                &env,
                &log,
                &format!("bl_{k}k"),
                Load::rate(rate, secs),
            )
            .await?,
        );
        ours.print("ours ");
        println!("baseline: Spark at {rate} logs/s for {secs} s");
        let topic = format!("b_sl_{k}k_raw");
        let keyspace = format!("bench_spark_{k}k");
        let spark = spark_run(
            stack,
            &spark,
            &env,
            (&topic, &keyspace),
            Load::rate(rate, secs),
            (&log, &spark_log),
        )
        .await?;
        spark.print("Spark");
        latency.push((k, ours, spark));
    }
    println!("baseline: Cassandra's cost per row, by how rows are sent");
    let n = if quick { 50_000 } else { 200_000 };
    let rows: Vec<ValidatedRecord> =
        bench::read_all(&KafkaArgs::new(stack.kafka_addr()), "b_bl_drain_valid")?
            .iter()
            .take(n)
            .filter_map(|(_, p)| ValidatedRecord::from_json(p).ok())
            .collect();
    let cost = cql_cost(stack, &rows).await?;
    let mut metrics = summary(&ours_drain, &spark_drain, &latency);
    for (send, rows_per_s, us) in cost {
        let name = format!("{send:?}").to_lowercase();
        metrics.push(Metric {
            name: format!("baseline_cql_{name}_rows_per_s"),
            value: rows_per_s,
            unit: "rows/s",
            ceiling: None,
        });
        metrics.push(Metric {
            name: format!("baseline_cql_{name}_cpu_us_per_row"),
            value: us,
            unit: "us",
            ceiling: None,
        });
    }
    merge_summary(&out_dir.join("summary.json"), &metrics)?;
    plot(&out_dir, &latency)?;
    Ok(())
}
