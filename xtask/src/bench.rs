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
    time::{Duration, Instant},
};

use anyhow::bail;
use clap::Args;
use log_schema::ValidatedRecord;
use pipeline_runtime::{cassandra::CassandraArgs, kafka::KafkaArgs};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};

use crate::stack::{self, Stack};

mod ceilings;
mod e2e;

use ceilings::{python_produce, raw_inserts, raw_passthrough, raw_produce};
pub(crate) use e2e::{EndToEnd, Load, end_to_end, wait_rows};
use e2e::{WRITER_METRICS_ADDR, WRITER_METRICS_PORT};

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
