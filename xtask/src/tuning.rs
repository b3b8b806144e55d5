//! `cargo xtask bench --tuning`: the Kafka client settings we chose, each measured against its
//! alternative side by side in one run on the bench stack, alternating A/B/A/B so that drift
//! of the machine shows as spread instead of as a difference. Writes `target/bench/tuning.json`.
//!
//! * the stream-reader's idempotent output producer vs `enable.idempotence=false` (the choice
//!   made on tansu): reader records/s and CPU µs per record draining a backlog;
//! * `CONSUMER_MEMORY` (2 MiB fetches, bounded prefetch, 10 ms queue backoff) vs librdkafka's
//!   defaults and vs the same prefetch with librdkafka's 1 s backoff: the same, plus peak RSS;
//! * `SOURCE_PRODUCER` (the producer service's 50 ms linger) vs librdkafka's 5 ms: CPU µs per
//!   log at a fixed 10,000 logs/s, and logs/s unthrottled.
//!
//! `--transactions` ([`transactions`]): the stream-reader draining a backlog in exactly-once
//! mode with its default transaction interval and size against shorter and longer ones, and
//! against at-least-once; timed until the group committed the last input offset (in
//! exactly-once mode nothing is visible before). Writes `target/bench/transactions.json`.

use std::{fs, path::Path, time::Instant};

use anyhow::bail;
use pipeline_runtime::kafka::KafkaArgs;

use crate::{
    bench::{
        children_cpu_secs, migrate, peak_rss_mb, process_cpu_secs, service, stop, wait_committed,
        wait_size,
    },
    stack::Stack,
};

/// librdkafka's own consumer defaults for the settings `CONSUMER_MEMORY` changes.
const LIBRDKAFKA_CONSUMER_DEFAULTS: &str = "queued.min.messages=100000;\
     queued.max.messages.kbytes=65536;fetch.max.bytes=52428800;fetch.queue.backoff.ms=1000";

/// The consumer settings chosen on tansu: a bounded prefetch with librdkafka's 1 s backoff once
/// the prefetch queue is full.
const BOUNDED_PREFETCH_1S: &str = "queued.min.messages=5000;\
     queued.max.messages.kbytes=16384;fetch.max.bytes=2097152;fetch.queue.backoff.ms=1000";

/// One measured run of a variant.
#[derive(Debug, Clone, Copy)]
struct Run {
    per_s: f64,
    cpu_us: f64,
    rss_mb: f64,
}

pub async fn run(stack: &Stack, quick: bool) -> anyhow::Result<()> {
    // Long enough that a reader at 100K+ records/s runs for several seconds.
    let n: u64 = if quick { 300_000 } else { 1_000_000 };
    let rounds = if quick { 2 } else { 3 };
    let kafka = KafkaArgs::new(stack.kafka_addr());
    let out_dir = crate::target_dir().join("bench");
    fs::create_dir_all(&out_dir)?;
    let log = out_dir.join("tuning.log");
    let _ = fs::remove_file(&log);
    let mut env: Vec<(String, String)> = stack.env_with(&[]);
    env.extend([
        ("CASSANDRA_KEYSPACE".to_owned(), "tuning".to_owned()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
        ("METRICS_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
    ]);
    migrate(&env)?;

    // The backlog every reader variant drains: the same records for each.
    kafka.ensure_topics(&["t_raw"], 3, 1).await?;
    println!("tuning: filling t_raw with {n} records");
    producer(&env, &log, "t_raw", n, 0, None)?;

    let mut results: Vec<(String, Vec<Run>)> = Vec::new();
    let mut push = |name: &str, run: Run| match results.iter_mut().find(|(n, _)| n == name) {
        Some((_, runs)) => runs.push(run),
        None => results.push((name.to_owned(), vec![run])),
    };
    let mut k = 0;
    for round in 0..rounds {
        for (name, options) in [
            ("reader: service defaults", None::<String>),
            (
                "reader: prefetch 5000 msgs/16 MiB, 2 MiB fetches, 1 s queue backoff",
                Some(BOUNDED_PREFETCH_1S.to_owned()),
            ),
            (
                "reader: librdkafka consumer defaults",
                Some(LIBRDKAFKA_CONSUMER_DEFAULTS.to_owned()),
            ),
            (
                "reader: service defaults + non-idempotent relay",
                Some("enable.idempotence=false".to_owned()),
            ),
        ] {
            k += 1;
            let r = reader(stack, &kafka, &env, &log, n, options.as_deref(), k).await?;
            println!(
                "  round {round} {name}: {:.0} records/s, {:.1} µs CPU/record, {:.0} MB",
                r.per_s, r.cpu_us, r.rss_mb
            );
            push(name, r);
        }
        for (name, options) in [
            ("producer at 10K/s: linger 50 ms (service default)", None),
            ("producer at 10K/s: linger 5 ms", Some("linger.ms=5")),
        ] {
            k += 1;
            let topic = format!("t_p{k}");
            kafka.ensure_topics(&[&topic], 3, 1).await?;
            let count = if quick { 50_000 } else { 150_000 };
            let r = producer(&env, &log, &topic, count, 10_000, options)?;
            println!(
                "  round {round} {name}: {:.0} logs/s, {:.1} µs CPU/log",
                r.per_s, r.cpu_us
            );
            push(name, r);
        }
        for (name, options) in [
            ("producer unthrottled: linger 50 ms (service default)", None),
            ("producer unthrottled: linger 5 ms", Some("linger.ms=5")),
        ] {
            k += 1;
            let topic = format!("t_p{k}");
            kafka.ensure_topics(&[&topic], 3, 1).await?;
            let r = producer(&env, &log, &topic, n, 0, options)?;
            println!(
                "  round {round} {name}: {:.0} logs/s, {:.1} µs CPU/log",
                r.per_s, r.cpu_us
            );
            push(name, r);
        }
    }

    write_results(&results, &out_dir.join("tuning.json"))
}

/// Prints the variants' runs as a table and writes them as JSON to `path`.
fn write_results(results: &[(String, Vec<Run>)], path: &Path) -> anyhow::Result<()> {
    println!(
        "\n{:<72} {:>26} {:>18} {:>14}",
        "variant (runs)", "per s", "CPU µs/record", "peak RSS MB"
    );
    let fmt = |runs: &[Run], f: fn(&Run) -> f64, digits: usize| {
        runs.iter()
            .map(|r| format!("{:.*}", digits, f(r)))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let mut json = Vec::new();
    for (name, runs) in results {
        println!(
            "{name:<72} {:>26} {:>18} {:>14}",
            fmt(runs, |r| r.per_s, 0),
            fmt(runs, |r| r.cpu_us, 1),
            fmt(runs, |r| r.rss_mb, 0)
        );
        let list = |f: fn(&Run) -> f64| {
            runs.iter()
                .map(|r| format!("{:.3}", f(r)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        json.push(format!(
            "{{\"variant\": \"{name}\", \"per_s\": [{}], \"cpu_us\": [{}], \"rss_mb\": [{}]}}",
            list(|r| r.per_s),
            list(|r| r.cpu_us),
            list(|r| r.rss_mb)
        ));
    }
    fs::write(path, format!("[\n  {}\n]\n", json.join(",\n  ")))?;
    println!("\nwrote {}", path.display());
    Ok(())
}

/// `cargo xtask bench --transactions`: see the module documentation.
pub async fn transactions(stack: &Stack, quick: bool) -> anyhow::Result<()> {
    let n: u64 = if quick { 200_000 } else { 1_000_000 };
    let rounds = if quick { 2 } else { 3 };
    let kafka = KafkaArgs::new(stack.kafka_addr());
    let out_dir = crate::target_dir().join("bench");
    fs::create_dir_all(&out_dir)?;
    let log = out_dir.join("transactions.log");
    let _ = fs::remove_file(&log);
    let mut env: Vec<(String, String)> = stack.env_with(&[]);
    env.extend([
        ("RUST_LOG".to_owned(), "warn".to_owned()),
        ("METRICS_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
    ]);
    kafka.ensure_topics(&["x_raw"], 3, 1).await?;
    println!("transactions: filling x_raw with {n} records");
    producer(&env, &log, "x_raw", n, 0, None)?;
    let mut results: Vec<(String, Vec<Run>)> = Vec::new();
    let mut k = 0;
    for round in 0..rounds {
        for (name, delivery, interval, size) in [
            ("at-least-once", "at-least-once", 100, 50_000),
            (
                "exactly-once: 100 ms / 5,000 records",
                "exactly-once",
                100,
                5_000,
            ),
            (
                "exactly-once: 100 ms / 50,000 records (defaults)",
                "exactly-once",
                100,
                50_000,
            ),
            (
                "exactly-once: 250 ms / 50,000 records",
                "exactly-once",
                250,
                50_000,
            ),
            (
                "exactly-once: 1,000 ms / 50,000 records",
                "exactly-once",
                1_000,
                50_000,
            ),
        ] {
            k += 1;
            let mut env = env.clone();
            for (var, value) in [
                ("READER_DELIVERY", delivery.to_owned()),
                ("READER_TRANSACTION_INTERVAL_MS", interval.to_string()),
                ("READER_TRANSACTION_MAX_RECORDS", size.to_string()),
                ("READER_INPUT_TOPIC", "x_raw".to_owned()),
                ("READER_GROUP_ID", format!("x-reader-{k}")),
                ("READER_ANALYTICS_GROUP_ID", format!("x-analytics-{k}")),
            ] {
                env.push((var.to_owned(), value));
            }
            let out: Vec<String> = ["valid", "dlq", "stats", "alerts"]
                .iter()
                .map(|t| format!("x_r{k}_{t}"))
                .collect();
            let refs: Vec<&str> = out.iter().map(String::as_str).collect();
            kafka.ensure_topics(&refs, stack.partitions, 1).await?;
            for (var, topic) in [
                "READER_VALIDATED_TOPIC",
                "READER_DLQ_TOPIC",
                "READER_STATS_TOPIC",
                "READER_ALERTS_TOPIC",
            ]
            .iter()
            .zip(&out)
            {
                env.push(((*var).to_owned(), topic.clone()));
            }
            let group = format!("x-reader-{k}");
            let mut child = service("stream-reader", &[], &env, &log)?;
            let limit = std::time::Duration::from_secs(900);
            wait_committed(&kafka, &group, "x_raw", 1, limit).await?;
            let cpu_at_first = process_cpu_secs(child.id() as i32);
            let took = wait_committed(&kafka, &group, "x_raw", n as i64, limit).await?;
            let r = Run {
                per_s: n as f64 / took.as_secs_f64(),
                cpu_us: (process_cpu_secs(child.id() as i32) - cpu_at_first) * 1e6 / n as f64,
                rss_mb: peak_rss_mb(child.id()),
            };
            stop(&mut child);
            println!(
                "  round {round} {name}: {:.0} records/s, {:.1} µs CPU/record, {:.0} MB",
                r.per_s, r.cpu_us, r.rss_mb
            );
            match results.iter_mut().find(|(n, _)| n == name) {
                Some((_, runs)) => runs.push(r),
                None => results.push((name.to_owned(), vec![r])),
            }
        }
    }
    write_results(&results, &out_dir.join("transactions.json"))
}

/// The producer service sending `count` records at `rate` (0 = unthrottled) with extra
/// `KAFKA_OPTIONS`; logs/s and CPU µs per log of the process.
fn producer(
    env: &[(String, String)],
    log: &Path,
    topic: &str,
    count: u64,
    rate: u64,
    options: Option<&str>,
) -> anyhow::Result<Run> {
    let env = with_options(env, options);
    let cpu_before = children_cpu_secs();
    let start = Instant::now();
    let mut child = service(
        "producer",
        &[
            "--topic",
            topic,
            "--count",
            &count.to_string(),
            "--rate",
            &rate.to_string(),
        ],
        &env,
        log,
    )?;
    let mut rss = 0.0f64;
    while child.try_wait()?.is_none() {
        rss = rss.max(peak_rss_mb(child.id()));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("the producer failed ({status}); see {}", log.display());
    }
    Ok(Run {
        per_s: count as f64 / start.elapsed().as_secs_f64(),
        cpu_us: (children_cpu_secs() - cpu_before) * 1e6 / count as f64,
        rss_mb: rss,
    })
}

/// A stream-reader draining `t_raw` into fresh topics with its own group; records/s from the
/// first output to the last, CPU µs per record of the process, peak RSS.
async fn reader(
    stack: &Stack,
    kafka: &KafkaArgs,
    env: &[(String, String)],
    log: &Path,
    n: u64,
    options: Option<&str>,
    k: usize,
) -> anyhow::Result<Run> {
    let out: Vec<String> = ["valid", "dlq", "stats", "alerts"]
        .iter()
        .map(|t| format!("t_r{k}_{t}"))
        .collect();
    let refs: Vec<&str> = out.iter().map(String::as_str).collect();
    kafka.ensure_topics(&refs, stack.partitions, 1).await?;
    let mut env = with_options(env, options);
    for (var, value) in [
        ("READER_INPUT_TOPIC", "t_raw".to_owned()),
        ("READER_VALIDATED_TOPIC", out[0].clone()),
        ("READER_DLQ_TOPIC", out[1].clone()),
        ("READER_STATS_TOPIC", out[2].clone()),
        ("READER_ALERTS_TOPIC", out[3].clone()),
        ("READER_GROUP_ID", format!("tuning-reader-{k}")),
        ("READER_ANALYTICS_GROUP_ID", format!("tuning-analytics-{k}")),
    ] {
        env.push((var.to_owned(), value));
    }
    let mut child = service("stream-reader", &[], &env, log)?;
    let outputs = [refs[0], refs[1]];
    wait_size(kafka, &outputs, 1, std::time::Duration::from_secs(120)).await?;
    let cpu_at_first = process_cpu_secs(child.id() as i32);
    let took = wait_size(
        kafka,
        &outputs,
        n as i64,
        std::time::Duration::from_secs(900),
    )
    .await?;
    let cpu = process_cpu_secs(child.id() as i32) - cpu_at_first;
    let rss_mb = peak_rss_mb(child.id());
    stop(&mut child);
    Ok(Run {
        per_s: n as f64 / took.as_secs_f64(),
        cpu_us: cpu * 1e6 / n as f64,
        rss_mb,
    })
}

/// `env` with `options` appended to KAFKA_OPTIONS.
fn with_options(env: &[(String, String)], options: Option<&str>) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    if let Some(options) = options {
        env.push(("KAFKA_OPTIONS".to_owned(), options.to_owned()));
    }
    env
}
