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

/// The pyspark release from PyPI; `xtask/baseline/pom.xml` pins the connectors built for it.
pub const SPARK_VERSION: &str = "3.5.7";

/// Which system to compare with.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Baseline {
    /// The seed's Spark Structured Streaming job.
    Spark,
}

/// A Spark installation: pyspark's `spark-submit` and the connector jars it lacks.
struct Spark {
    submit: PathBuf,
    home: PathBuf,
    python: PathBuf,
    jars: String,
}

impl Spark {
    fn install() -> anyhow::Result<Self> {
        let submit = crate::python_tool(&format!("pyspark=={SPARK_VERSION}"), "spark-submit")?;
        let python = submit.with_file_name("python");
        let out = Command::new(&python)
            .args([
                "-c",
                "import os, pyspark; print(os.path.dirname(pyspark.__file__))",
            ])
            .output()
            .context("find pyspark's home")?;
        let home = PathBuf::from(String::from_utf8(out.stdout)?.trim());
        let shipped: BTreeSet<String> = fs::read_dir(home.join("jars"))
            .with_context(|| format!("list {}/jars", home.display()))?
            .filter_map(|e| artifact(&e.ok()?.file_name().to_string_lossy()))
            .collect();
        let pom = crate::project_root().join("xtask/baseline/pom.xml");
        let classpath = crate::servers::resolve("spark-connectors", &pom)?;
        // Like `spark-submit --packages`, which leaves Spark's own modules out: every artifact
        // pyspark already ships keeps pyspark's version.
        let jars: Vec<String> = classpath
            .jars
            .iter()
            .filter(|j| {
                j.file_name()
                    .and_then(|n| artifact(&n.to_string_lossy()))
                    .is_none_or(|a| !shipped.contains(&a))
            })
            .map(|j| j.display().to_string())
            .collect();
        Ok(Self {
            submit,
            home,
            python,
            jars: jars.join(","),
        })
    }

    /// Starts the job on `topic` into `keyspace` and waits until its query runs.
    async fn start(
        &self,
        stack: &Stack,
        topic: &str,
        keyspace: &str,
        log: &Path,
    ) -> anyhow::Result<Job> {
        let checkpoint = crate::target_dir()
            .join("bench/spark-checkpoint")
            .join(topic);
        let _ = fs::remove_dir_all(&checkpoint);
        let (cql_host, cql_port) = stack
            .cql_addr()
            .rsplit_once(':')
            .map(|(h, p)| (h.to_owned(), p.to_owned()))
            .context("CQL address")?;
        let mut env: Vec<(String, String)> = [
            ("SPARK_HOME", self.home.display().to_string()),
            ("PYSPARK_PYTHON", self.python.display().to_string()),
            ("PYSPARK_DRIVER_PYTHON", self.python.display().to_string()),
            ("SPARK_KAFKA_BROKER", stack.kafka_addr()),
            ("SPARK_INPUT_TOPIC", topic.to_owned()),
            ("SPARK_CASSANDRA_HOST", cql_host),
            ("SPARK_CASSANDRA_PORT", cql_port),
            ("SPARK_KEYSPACE", keyspace.to_owned()),
            ("SPARK_CHECKPOINT_DIR", checkpoint.display().to_string()),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .into();
        let java = crate::servers::java()?;
        if let Some(home) = java.parent().and_then(Path::parent) {
            env.push(("JAVA_HOME".to_owned(), home.display().to_string()));
        }
        let _ = fs::remove_file(log);
        let script = crate::project_root().join("xtask/baseline/seed_pipeline.py");
        let mut child = crate::spawn_logged(
            &self.submit,
            &[
                "--master",
                "local[2]",
                "--jars",
                &self.jars,
                &script.display().to_string(),
            ],
            &env,
            log,
        )?;
        let deadline = Instant::now() + Duration::from_secs(180);
        while !fs::read_to_string(log)
            .unwrap_or_default()
            .contains("query started")
        {
            if let Some(status) = child.try_wait()? {
                bail!("the Spark job exited ({status}); see {}", log.display());
            }
            if Instant::now() > deadline {
                stop(&mut child);
                bail!(
                    "the Spark job did not start within 180 s; see {}",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(Job { child, checkpoint })
    }
}

/// `name-1.2.3.jar` → `name`.
fn artifact(file: &str) -> Option<String> {
    let stem = file.strip_suffix(".jar")?;
    let cut = stem
        .match_indices('-')
        .find(|(i, _)| stem[i + 1..].starts_with(|c: char| c.is_ascii_digit()))?
        .0;
    Some(stem[..cut].to_owned())
}

/// A running Spark job.
struct Job {
    child: Child,
    checkpoint: PathBuf,
}

impl Job {
    /// The JVM (spark-submit execs it) and its Python driver.
    fn pids(&self) -> Vec<i32> {
        let jvm = self.child.id() as i32;
        let mut pids = vec![jvm];
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let parent = fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse()
                        .ok()
                });
            if parent == Some(jvm) {
                pids.push(pid);
            }
        }
        pids
    }

    fn cpu_secs(&self) -> f64 {
        self.pids().into_iter().map(process_cpu_secs).sum()
    }

    fn peak_rss_mb(&self) -> f64 {
        self.pids()
            .into_iter()
            .map(|p| bench::peak_rss_mb(p as u32))
            .sum()
    }

    /// Input offsets of the last committed micro-batch (its checkpoint), summed.
    fn committed(&self) -> i64 {
        let last = fs::read_dir(self.checkpoint.join("commits"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<u64>().ok())
            .max();
        let Some(batch) = last else { return 0 };
        let text = fs::read_to_string(self.checkpoint.join(format!("offsets/{batch}")))
            .unwrap_or_default();
        // Last line: {"<topic>":{"<partition>":<next offset>,...}}
        serde_json::from_str::<serde_json::Value>(text.lines().last().unwrap_or("{}"))
            .ok()
            .and_then(|v| {
                let topics = v.as_object()?.values().next()?.as_object()?.clone();
                Some(topics.values().filter_map(serde_json::Value::as_i64).sum())
            })
            .unwrap_or(0)
    }

    /// Waits until the job committed a micro-batch up to `n` input offsets.
    async fn wait_committed(&mut self, n: i64, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let done = self.committed();
            if done >= n {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the Spark job exited ({status}) after {done} of {n} records");
            }
            if start.elapsed() > limit {
                bail!("the Spark job committed {done} of {n} records in {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
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

/// The summary rows: each figure for both systems, and `vs_spark_*` = ours / Spark.
fn summary(ours: &Run, spark: &Run, latency: &[(u64, Run, Run)]) -> Vec<Metric> {
    let m = |name: String, value: f64, unit: &'static str, ceiling: Option<f64>| Metric {
        name,
        value,
        unit,
        ceiling,
    };
    let mut out = Vec::new();
    let mut both = |name: &str, unit: &'static str, f: &dyn Fn(&Run) -> f64, o: &Run, s: &Run| {
        out.push(m(format!("baseline_{name}_ours"), f(o), unit, None));
        out.push(m(format!("baseline_{name}_spark"), f(s), unit, None));
    };
    both(
        "drain_records_per_s",
        "records/s",
        &|r| r.records_per_s,
        ours,
        spark,
    );
    both("drain_rows", "rows", &|r| r.rows as f64, ours, spark);
    both(
        "drain_expected_rows",
        "rows",
        &|r| r.expected as f64,
        ours,
        spark,
    );
    both("cpu_s_per_1m", "s", &|r| r.cpu[0], ours, spark);
    both("broker_cpu_s_per_1m", "s", &|r| r.cpu[1], ours, spark);
    both("cql_cpu_s_per_1m", "s", &|r| r.cpu[2], ours, spark);
    both("peak_rss_mb", "MB", &|r| r.peak_rss_mb, ours, spark);
    for (k, o, s) in latency {
        for (q, p) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
            both(&format!("{k}k_{q}_ms"), "ms", &|r| r.quantile(p), o, s);
        }
        both(&format!("{k}k_rows"), "rows", &|r| r.rows as f64, o, s);
        both(
            &format!("{k}k_expected_rows"),
            "rows",
            &|r| r.expected as f64,
            o,
            s,
        );
    }
    let ratio = |name: &str, a: f64, b: f64| m(format!("vs_spark_{name}"), a / b, "x", None);
    out.push(ratio("throughput", ours.records_per_s, spark.records_per_s));
    out.push(ratio("cpu", ours.cpu[0], spark.cpu[0]));
    out.push(ratio("memory", ours.peak_rss_mb, spark.peak_rss_mb));
    for (k, o, s) in latency {
        out.push(ratio(
            &format!("p99_{k}k"),
            o.quantile(0.99),
            s.quantile(0.99),
        ));
    }
    for r in &out {
        println!("  {:<40} {:>14.3} {}", r.name, r.value, r.unit);
    }
    out
}

/// Replaces the baseline rows of `summary.json` (written by `cargo xtask bench`) with `metrics`.
fn merge_summary(path: &Path, metrics: &[Metric]) -> anyhow::Result<()> {
    let mut rows: Vec<serde_json::Value> = fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    rows.retain(|r| {
        let name = r["name"].as_str().unwrap_or_default();
        !(name.starts_with("baseline_") || name.starts_with("vs_spark_"))
    });
    for m in metrics {
        rows.push(serde_json::from_str(&m.json())?);
    }
    fs::write(path, serde_json::to_string_pretty(&rows)? + "\n")?;
    println!("\nwrote {}", path.display());
    Ok(())
}

/// Latency percentiles against rate for both systems (matplotlib, from PyPI into a venv).
fn plot(out_dir: &Path, latency: &[(u64, Run, Run)]) -> anyhow::Result<()> {
    let data: Vec<serde_json::Value> = latency
        .iter()
        .map(|(k, o, s)| {
            let q = |r: &Run| [0.5, 0.99, 1.0].map(|p| r.quantile(p));
            serde_json::json!({"rate": k * 1_000, "ours": q(o), "spark": q(s)})
        })
        .collect();
    let python = crate::python_tool("matplotlib", "python")?;
    let png = out_dir.join("baseline_latency.png");
    let status = Command::new(python)
        .arg(crate::project_root().join("xtask/baseline/plot.py"))
        .arg(serde_json::to_string(&data)?)
        .arg(&png)
        .status()?;
    if !status.success() {
        bail!("plot.py failed ({status})");
    }
    println!("wrote {}", png.display());
    Ok(())
}

/// How a [`cql_cost`] variant sends its rows.
#[derive(Debug, Clone, Copy)]
enum Send {
    /// One prepared insert per row into our `access_logs`.
    OursSingle,
    /// Our `access_logs`, rows of one source IP within each 1,000 rows in unlogged batches of
    /// up to 8 (what the Spark Cassandra Connector does by default: grouping by partition key
    /// within a 1,000-row buffer, batches of ~1 KB).
    OursPartitionBatches,
    /// One prepared insert per row into the seed's 9-column `access_logs`.
    SeedSingle,
}

/// Cassandra's CPU µs per row for the same rows sent each way (256 requests in flight): what
/// caps the drain, and what batching by partition would change.
async fn cql_cost(
    stack: &Stack,
    rows: &[ValidatedRecord],
) -> anyhow::Result<Vec<(Send, f64, f64)>> {
    use scylla::statement::batch::{Batch, BatchType};
    let cassandra = stack.pid(Server::Cassandra).unwrap_or(0);
    let mut out = Vec::new();
    for send in [
        Send::OursSingle,
        Send::OursPartitionBatches,
        Send::SeedSingle,
    ] {
        let keyspace = format!("bench_cql_{}", out.len());
        let env = stack.env_with(&[("CASSANDRA_KEYSPACE", &keyspace)]);
        let seed = matches!(send, Send::SeedSingle);
        if seed {
            seed_table(stack, &keyspace).await?;
        } else {
            bench::migrate(&env)?;
        }
        let session = CassandraArgs::new(stack.cql_addr(), &keyspace)
            .connect()
            .await?;
        let stmt = session
            .prepare(if seed {
                format!(
                    "INSERT INTO {keyspace}.access_logs (timestamp, source_ip, destination_ip, \
                     port, protocol, bytes_sent, bytes_received, action, created_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                )
            } else {
                cassandra_writer::writer::insert_cql(&keyspace)
            })
            .await?;
        // Requests: groups of row indexes.
        let groups: Vec<Vec<&ValidatedRecord>> = match send {
            Send::OursPartitionBatches => rows
                .chunks(1_000)
                .flat_map(|chunk| {
                    let mut by_ip: std::collections::BTreeMap<_, Vec<&ValidatedRecord>> =
                        Default::default();
                    for r in chunk {
                        by_ip.entry(r.source_ip).or_default().push(r);
                    }
                    by_ip
                        .into_values()
                        .flat_map(|v| v.chunks(8).map(<[_]>::to_vec).collect::<Vec<_>>())
                })
                .collect(),
            _ => rows.iter().map(|r| vec![r]).collect(),
        };
        let before = process_cpu_secs(cassandra);
        let start = Instant::now();
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(groups.iter().map(|group| {
            let (session, stmt) = (&session, &stmt);
            async move {
                if seed {
                    let r = group[0];
                    let v = (
                        r.timestamp,
                        r.source_ip.to_string(),
                        r.destination_ip.to_string(),
                        i32::from(r.port),
                        r.protocol.as_str(),
                        r.bytes_sent,
                        r.bytes_received,
                        r.action.as_str(),
                        Utc::now(),
                    );
                    session.execute_unpaged(stmt, v).await?;
                } else if group.len() == 1 {
                    let v = cassandra_writer::writer::access_log_row(group[0]);
                    session.execute_unpaged(stmt, v).await?;
                } else {
                    let mut batch = Batch::new(BatchType::Unlogged);
                    for _ in group {
                        batch.append_statement(stmt.clone());
                    }
                    let values: Vec<_> = group
                        .iter()
                        .map(|r| cassandra_writer::writer::access_log_row(r))
                        .collect();
                    session.batch(&batch, values).await?;
                }
                Ok(())
            }
        }))
        .buffer_unordered(256)
        .collect()
        .await;
        results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        let rows_per_s = rows.len() as f64 / start.elapsed().as_secs_f64();
        let us = (process_cpu_secs(cassandra) - before) * 1e6 / rows.len() as f64;
        println!(
            "  {send:?}: {} requests, {rows_per_s:.0} rows/s, Cassandra {us:.1} µs CPU per row",
            groups.len()
        );
        out.push((send, rows_per_s, us));
    }
    Ok(out)
}
