//! `cargo xtask bench --writes`: what Cassandra pays per row for each way of sending the same
//! rows, and our cassandra-writer against the best of them, side by side in one run on the
//! bench stack (BENCHMARKS.md, "Writes grouped per partition").
//!
//! The rows: N records of the producer's simulated network (its defaults: 2,000 sources with
//! skewed activity), event time advancing at 10,000 logs/s, validated, keyed by source IP on a
//! 3-partition topic as the stream-reader writes them. Each variant writes all of them into a
//! fresh keyspace migrated as shipped:
//!
//! - `raw_k` (k = 1, 2, 4, 8, 16, 32): a raw scylla loop, 256 requests in flight, the rows
//!   grouped by partition `(source_ip, bucket)` in input order and sent as full unlogged
//!   batches of k rows (the last of a partition partial); k = 1 is one insert per row;
//! - `connector`: the Spark Cassandra Connector's default grouping (3.5.1 `WriteConf`,
//!   `GroupingBatchBuilder`): up to 1,000 open batches keyed by partition, a batch sent when
//!   the next row would take its bound values past 1,024 bytes, the largest batch sent when a
//!   1,001st would open, the rest at the end;
//! - `writer`: the `cassandra-writer` binary with its defaults draining the topic; and
//!   `writer_single`, the same with `WRITER_BATCH_MAX_ROWS=1`.
//!
//! Cassandra's CPU per row runs from the first request until `nodetool flush` has written the
//! SSTables and their indexes; rows/s is rows over the span of their write times
//! (`writetime(action)`), so the writer's start-up is not counted. Before each variant the node
//! must be idle (the idle CPU is printed). Rounds alternate the order of the variants.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt as _;
use log_schema::{Origin, ValidatedRecord};
use rdkafka::producer::FutureRecord;
use scylla::{
    client::session::Session,
    serialize::{
        row::{RowSerializationContext, SerializeRow as _},
        writers::RowWriter,
    },
    statement::{
        batch::{Batch, BatchType},
        prepared::PreparedStatement,
    },
};

use crate::{
    bench::{Metric, e2e::wait_rows, migrate, process_cpu_secs, service, spread, stop},
    stack::{Server, Stack},
};

/// The topic the writer variants drain.
const TOPIC: &str = "bw_valid";
/// Where the writer variants serve `/metrics`.
const WRITER_METRICS_PORT: u16 = 31103;
/// Rows per request of the raw sweep.
const SWEEP: [usize; 6] = [1, 2, 4, 8, 16, 32];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Variant {
    Raw(usize),
    Connector,
    Writer,
    WriterSingle,
}

impl Variant {
    fn name(self) -> String {
        match self {
            Variant::Raw(k) => format!("raw_{k}"),
            Variant::Connector => "connector".into(),
            Variant::Writer => "writer".into(),
            Variant::WriterSingle => "writer_single".into(),
        }
    }
}

/// `n` validated records of the producer's default simulated network.
fn records(n: usize) -> anyhow::Result<Vec<ValidatedRecord>> {
    let mut generator = producer::Generator::new(producer::GeneratorConfig::default());
    let start = Utc::now();
    let limits = log_schema::Limits::default();
    let mut buf = Vec::new();
    (0..n)
        .map(|i| {
            let at = start + TimeDelta::microseconds(100 * i as i64);
            buf.clear();
            generator.next_into(at, &mut buf);
            let origin = Origin {
                topic: "bench",
                partition: 0,
                offset: i as i64,
            };
            log_schema::validate(&buf, &origin, at, &limits)
                .map_err(|e| anyhow::anyhow!("generated record {i} is invalid: {e}"))
        })
        .collect()
}

/// The partition key of a row.
fn key(r: &ValidatedRecord) -> (IpAddr, i64) {
    (
        r.source_ip,
        cassandra_writer::rows::bucket(r.timestamp).timestamp_millis(),
    )
}

/// Full single-partition batches of `k` rows, partitions in order of their first row.
fn full_batches(rows: &[ValidatedRecord], k: usize) -> Vec<Vec<&ValidatedRecord>> {
    let mut order = Vec::new();
    let mut by_key: HashMap<(IpAddr, i64), Vec<&ValidatedRecord>> = HashMap::new();
    for r in rows {
        by_key
            .entry(key(r))
            .or_insert_with(|| {
                order.push(key(r));
                Vec::new()
            })
            .push(r);
    }
    order
        .iter()
        .flat_map(|key| by_key[key].chunks(k).map(<[_]>::to_vec).collect::<Vec<_>>())
        .collect()
}

/// The connector's default grouping, from its documented rule: batches by partition key, a
/// batch sent when the next row would take its bound values past 1,024 bytes, at most 1,000
/// open batches (the largest sent when one more would open), the rest at the end.
pub(crate) fn connector_batches<'a>(
    rows: &'a [ValidatedRecord],
    insert: &PreparedStatement,
) -> anyhow::Result<Vec<Vec<&'a ValidatedRecord>>> {
    const MAX_BYTES: usize = 1_024;
    const MAX_OPEN: usize = 1_000;
    let mut out = Vec::new();
    let mut open: BTreeMap<(IpAddr, i64), (usize, Vec<&ValidatedRecord>)> = BTreeMap::new();
    let specs = insert.get_variable_col_specs();
    let ctx = RowSerializationContext::from_specs(specs.as_slice());
    let mut buf = Vec::new();
    for r in rows {
        buf.clear();
        cassandra_writer::writer::access_log_row(r)
            .serialize(&ctx, &mut RowWriter::new(&mut buf))?;
        let size = buf.len();
        let k = key(r);
        if let Some((bytes, batch)) = open.get_mut(&k)
            && *bytes + size > MAX_BYTES
            && !batch.is_empty()
        {
            out.push(std::mem::take(batch));
            *bytes = 0;
        }
        if !open.contains_key(&k) && open.len() >= MAX_OPEN {
            let largest = open
                .iter()
                .max_by_key(|(_, (bytes, _))| *bytes)
                .map(|(k, _)| *k)
                .context("open batches")?;
            out.extend(open.remove(&largest).map(|(_, b)| b));
        }
        let (bytes, batch) = open.entry(k).or_default();
        *bytes += size;
        batch.push(r);
    }
    out.extend(open.into_values().map(|(_, b)| b).filter(|b| !b.is_empty()));
    Ok(out)
}

/// Sends `requests`, 256 in flight; a failed request (a client timeout while Cassandra
/// flushes) is retried after 200 ms, up to 10 times.
async fn send(
    session: &Session,
    insert: &PreparedStatement,
    requests: &[Vec<&ValidatedRecord>],
) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> =
        futures::stream::iter(requests.iter().map(|rows| async move {
            let mut batch = Batch::new(BatchType::Unlogged);
            for _ in rows {
                batch.append_statement(insert.clone());
            }
            let mut attempt = 0;
            loop {
                let result = if rows.len() == 1 {
                    session
                        .execute_unpaged(insert, cassandra_writer::writer::access_log_row(rows[0]))
                        .await
                        .map(drop)
                } else {
                    let values: Vec<_> = rows
                        .iter()
                        .map(|r| cassandra_writer::writer::access_log_row(r))
                        .collect();
                    session.batch(&batch, values).await.map(drop)
                };
                match result {
                    Ok(()) => return Ok(()),
                    Err(e) if attempt >= 10 => return Err(e.into()),
                    Err(_) => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }))
        .buffer_unordered(256)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Rows over the span of their write times.
async fn rows_per_s(session: &Session, keyspace: &str, n: usize) -> anyhow::Result<f64> {
    let mut pages = session
        .query_iter(
            format!("SELECT writetime(action) FROM {keyspace}.access_logs"),
            (),
        )
        .await?
        .rows_stream::<(i64,)>()?;
    let (mut first, mut last, mut count) = (i64::MAX, i64::MIN, 0);
    while let Some(row) = pages.next().await {
        let (w,) = row?;
        first = first.min(w);
        last = last.max(w);
        count += 1;
    }
    if count != n {
        anyhow::bail!("{keyspace}.access_logs holds {count} rows, not {n}");
    }
    Ok(n as f64 / ((last - first).max(1) as f64 / 1e6))
}

/// The writer's batches and the rows written in them (`writer_batches_total`,
/// `writer_batched_rows_total`).
async fn batch_rows(port: u16) -> (f64, f64) {
    let body = crate::up::get_metrics(port).await.unwrap_or_default();
    let value = |name: &str| {
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("writer_batches_total"),
        value("writer_batched_rows_total"),
    )
}

/// One variant's figures.
struct Sample {
    cassandra_us: f64,
    rows_per_s: f64,
    rows_per_request: f64,
    /// The writer's own CPU µs per row (writer variants).
    writer_us: Option<f64>,
}

/// Waits until Cassandra is idle (under 10 % of a core over half a second, at most 30 s);
/// returns its last half-second's CPU share.
async fn quiesce(pid: i32) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = process_cpu_secs(pid);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let share = (process_cpu_secs(pid) - before) / 0.5;
        if share < 0.1 || Instant::now() > deadline {
            return share;
        }
    }
}

async fn measure(
    stack: &Stack,
    variant: Variant,
    keyspace: &str,
    rows: &[ValidatedRecord],
) -> anyhow::Result<Sample> {
    let cassandra = stack.pid(Server::Cassandra).context("Cassandra pid")?;
    let env = stack.env_with(&[("CASSANDRA_KEYSPACE", keyspace), ("RUST_LOG", "warn")]);
    migrate(&env)?;
    let session = stack.cql_admin(keyspace).connect().await?;
    let insert = session
        .prepare(cassandra_writer::writer::insert_cql(keyspace))
        .await?;
    let idle = quiesce(cassandra).await;
    let n = rows.len();
    let before = process_cpu_secs(cassandra);
    let (requests, writer_us) = match variant {
        Variant::Raw(_) | Variant::Connector => {
            let requests = match variant {
                Variant::Raw(k) => full_batches(rows, k),
                _ => connector_batches(rows, &insert)?,
            };
            send(&session, &insert, &requests).await?;
            (requests.len() as f64, None)
        }
        Variant::Writer | Variant::WriterSingle => {
            let group = format!("{keyspace}_writer");
            let addr = format!("127.0.0.1:{WRITER_METRICS_PORT}");
            let mut env = env.clone();
            for (k, v) in [
                ("WRITER_GROUP_ID", group.as_str()),
                ("WRITER_INPUT_TOPIC", TOPIC),
                ("WRITER_STATS_TOPIC", "bw_stats"),
                ("WRITER_ALERTS_TOPIC", "bw_alerts"),
                ("WRITER_DLQ_TOPIC", "bw_dlq"),
                ("METRICS_ADDR", addr.as_str()),
            ] {
                env.push((k.into(), v.into()));
            }
            if variant == Variant::WriterSingle {
                env.push(("WRITER_BATCH_MAX_ROWS".into(), "1".into()));
            }
            let log = crate::target_dir().join("bench").join("writes.log");
            let mut child = service("cassandra-writer", &[], &env, &log)?;
            let pid = child.id() as i32;
            let waited = wait_rows(WRITER_METRICS_PORT, n as i64, Duration::from_secs(600)).await;
            let cpu = process_cpu_secs(pid);
            let (batches, batched) = batch_rows(WRITER_METRICS_PORT).await;
            stop(&mut child);
            waited?;
            (batches + (n as f64 - batched), Some(cpu * 1e6 / n as f64))
        }
    };
    stack.nodetool(&["flush", keyspace])?;
    let cassandra_us = (process_cpu_secs(cassandra) - before) * 1e6 / n as f64;
    let rows_per_s = rows_per_s(&session, keyspace, n).await?;
    println!(
        "  {:<14} idle {:>4.0} %  {:>6.2} rows/request  {rows_per_s:>8.0} rows/s  Cassandra {cassandra_us:>6.1} µs CPU per row{}",
        variant.name(),
        idle * 100.0,
        n as f64 / requests,
        writer_us.map_or(String::new(), |w| format!("  writer {w:.1} µs per row")),
    );
    session
        .query_unpaged(format!("DROP KEYSPACE {keyspace}"), &[])
        .await?;
    Ok(Sample {
        cassandra_us,
        rows_per_s,
        rows_per_request: n as f64 / requests,
        writer_us,
    })
}

/// Puts `rows` on [`TOPIC`] (3 partitions, keyed by source IP), once per bench stack.
async fn prepare(stack: &Stack, rows: &[ValidatedRecord]) -> anyhow::Result<()> {
    let kafka = stack.kafka_admin();
    kafka
        .ensure_topics(&[TOPIC, "bw_stats", "bw_alerts", "bw_dlq"], 3, 1)
        .await?;
    if crate::bench::topic_size(&kafka, TOPIC)? != 0 {
        anyhow::bail!(
            "{TOPIC} is not empty: stop the bench stack (`cargo xtask services stop --stack bench`) and run again"
        );
    }
    let producer = kafka.producer(&[])?;
    let sends = rows.iter().map(|r| {
        let key = r.source_ip.to_string();
        let payload = r.to_json();
        let producer = &producer;
        async move {
            producer
                .send(
                    FutureRecord::to(TOPIC).key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
        }
    });
    let sent: Vec<_> = futures::stream::iter(sends)
        .buffer_unordered(1_000)
        .collect()
        .await;
    for s in sent {
        s?;
    }
    let distinct: std::collections::HashSet<_> = rows.iter().map(key).collect();
    println!(
        "writes: {} rows on {TOPIC}, {} partitions (source IP, bucket)",
        rows.len(),
        distinct.len()
    );
    Ok(())
}

/// Runs the comparison on the (started, single-node) bench stack; `target/bench/writes.json`
/// and the `writes_*` rows of `target/bench/summary.json`.
pub(crate) async fn run(stack: &Stack, quick: bool) -> anyhow::Result<()> {
    let (n, rounds) = if quick { (50_000, 1) } else { (200_000, 3) };
    println!("writes: generating {n} validated records");
    let rows = records(n)?;
    prepare(stack, &rows).await?;
    let mut variants: Vec<Variant> = SWEEP.iter().map(|k| Variant::Raw(*k)).collect();
    variants.extend([Variant::Connector, Variant::Writer, Variant::WriterSingle]);
    // `XTASK_WRITES_VARIANTS=raw_16,writer` measures only those (trying writer settings, which
    // it takes from the environment: `WRITER_BATCH_LINGER_MS=50 cargo xtask bench --writes`).
    if let Ok(only) = std::env::var("XTASK_WRITES_VARIANTS") {
        let only: Vec<&str> = only.split(',').map(str::trim).collect();
        variants.retain(|v| only.contains(&v.name().as_str()));
    }
    // A warm-up of both request kinds (JIT, caches), not counted.
    measure(stack, Variant::Raw(1), "bw_warmup_1", &rows).await?;
    measure(stack, Variant::Raw(32), "bw_warmup_32", &rows).await?;
    if variants.is_empty() {
        anyhow::bail!("XTASK_WRITES_VARIANTS names no variant");
    }
    let mut samples: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for round in 0..rounds {
        println!("writes: round {}", round + 1);
        let order: Vec<Variant> = if round % 2 == 0 {
            variants.clone()
        } else {
            variants.iter().rev().copied().collect()
        };
        for v in order {
            let s = measure(stack, v, &format!("bw_{}_{round}", v.name()), &rows).await?;
            samples.entry(v.name()).or_default().push(s);
        }
    }
    let med = |name: &str, f: fn(&Sample) -> f64| {
        spread(&samples[name].iter().map(f).collect::<Vec<_>>())
    };
    let best = SWEEP
        .iter()
        .map(|k| format!("raw_{k}"))
        .filter(|name| samples.contains_key(name))
        .max_by(|a, b| {
            med(a, |s| s.rows_per_s)
                .0
                .total_cmp(&med(b, |s| s.rows_per_s).0)
        })
        .context("sweep")?;
    let (best_rate, _, _) = med(&best, |s| s.rows_per_s);
    let (best_us, _, _) = med(&best, |s| s.cassandra_us);
    println!(
        "\n{:<14} {:>8} {:>10} {:>18} {:>10} {:>16} {:>9} {:>10}",
        "variant", "rows/req", "rows/s", "min–max", "µs/row", "min–max", "vs best", "writer µs"
    );
    let mut metrics = Vec::new();
    for v in &variants {
        let name = v.name();
        let (rate, rate_lo, rate_hi) = med(&name, |s| s.rows_per_s);
        let (us, us_lo, us_hi) = med(&name, |s| s.cassandra_us);
        let (per_req, _, _) = med(&name, |s| s.rows_per_request);
        let writer = samples[&name]
            .iter()
            .filter_map(|s| s.writer_us)
            .collect::<Vec<_>>();
        println!(
            "{name:<14} {per_req:>8.2} {rate:>10.0} {:>18} {us:>10.1} {:>16} {:>8.2}× {:>10}",
            format!("{rate_lo:.0}–{rate_hi:.0}"),
            format!("{us_lo:.1}–{us_hi:.1}"),
            rate / best_rate,
            if writer.is_empty() {
                String::new()
            } else {
                format!("{:.1}", spread(&writer).0)
            }
        );
        metrics.push(Metric {
            name: format!("writes_{name}_rows_per_s"),
            value: rate,
            unit: "rows/s",
            ceiling: Some(best_rate),
        });
        metrics.push(Metric {
            name: format!("writes_{name}_cassandra_cpu_us_per_row"),
            value: us,
            unit: "us",
            ceiling: Some(best_us),
        });
        metrics.push(Metric {
            name: format!("writes_{name}_rows_per_request"),
            value: per_req,
            unit: "rows",
            ceiling: None,
        });
    }
    println!("best raw point: {best} ({best_rate:.0} rows/s, {best_us:.1} µs per row)");
    let out_dir = crate::target_dir().join("bench");
    let json = format!(
        "{{\"date\": \"{}\", \"rows\": {n}, \"rounds\": {rounds}, \"best_raw\": \"{best}\", \"metrics\": [\n  {}\n]}}\n",
        DateTime::<Utc>::from(std::time::SystemTime::now()).to_rfc3339(),
        metrics
            .iter()
            .map(Metric::json)
            .collect::<Vec<_>>()
            .join(",\n  ")
    );
    std::fs::write(out_dir.join("writes.json"), json)?;
    crate::baseline::merge_summary(&out_dir.join("summary.json"), &metrics)?;
    println!("writes: target/bench/writes.json");
    Ok(())
}

/// `nodetool compactionstats`' pending tasks.
fn pending_compactions(stack: &Stack) -> String {
    stack
        .nodetool(&["compactionstats"])
        .ok()
        .and_then(|out| {
            // `pending tasks: 3` (4.x) or `pending tasks   3` (5.0's table).
            out.lines()
                .find(|l| l.trim().starts_with("pending tasks"))
                .and_then(|l| l.split_whitespace().last().map(str::to_owned))
        })
        .unwrap_or_else(|| "?".into())
}

/// `--writes --cassandra-settings`: the writer (defaults) draining the same rows under each
/// Cassandra setting against what the stacks ship, Cassandra restarted on its data with the
/// setting before each phase and warmed up; rounds alternate the order. Idle CPU and pending
/// compactions are printed before each phase.
pub(crate) async fn settings(stack: &Stack, quick: bool) -> anyhow::Result<()> {
    use crate::servers::CassandraTuning;
    let (n, rounds) = if quick { (50_000, 1) } else { (100_000, 3) };
    let shipped = CassandraTuning::default();
    let configs = [
        ("shipped", shipped.clone()),
        (
            "trie_offheap",
            CassandraTuning {
                memtable: "trie",
                allocation: "offheap_objects",
                ..shipped.clone()
            },
        ),
        (
            "concurrent_writes_32",
            CassandraTuning {
                concurrent_writes: 32,
                ..shipped.clone()
            },
        ),
        (
            "window_2ms",
            CassandraTuning {
                group_window_ms: 2,
                ..shipped.clone()
            },
        ),
        (
            "window_15ms",
            CassandraTuning {
                group_window_ms: 15,
                ..shipped.clone()
            },
        ),
    ];
    println!("writes: generating {n} validated records");
    let rows = records(n)?;
    prepare(stack, &rows).await?;
    let mut samples: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    for round in 0..rounds {
        let order: Vec<_> = if round % 2 == 0 {
            configs.iter().collect()
        } else {
            configs.iter().rev().collect()
        };
        for (name, tuning) in order {
            let mut s = stack.clone();
            s.cassandra = tuning.clone();
            s.restart(Server::Cassandra, false).await?;
            for k in [1, 32] {
                measure(
                    &s,
                    Variant::Raw(k),
                    &format!("bw_warm{k}_{name}_{round}"),
                    &rows,
                )
                .await?;
            }
            println!(
                "  round {} {name} ({tuning}): pending compactions {}",
                round + 1,
                pending_compactions(&s)
            );
            let sample = measure(
                &s,
                Variant::Writer,
                &format!("bw_set_{name}_{round}"),
                &rows,
            )
            .await?;
            samples.entry(name).or_default().push(sample);
        }
    }
    stack.restart(Server::Cassandra, false).await?;
    let med = |name: &str, f: fn(&Sample) -> f64| {
        spread(&samples[name].iter().map(f).collect::<Vec<_>>())
    };
    let (base_rate, _, _) = med("shipped", |s| s.rows_per_s);
    let (base_us, _, _) = med("shipped", |s| s.cassandra_us);
    println!(
        "\n{:<22} {:>10} {:>18} {:>10} {:>16} {:>12}",
        "setting", "rows/s", "min–max", "µs/row", "min–max", "vs shipped"
    );
    let mut metrics = Vec::new();
    for (name, _) in &configs {
        let (rate, rate_lo, rate_hi) = med(name, |s| s.rows_per_s);
        let (us, us_lo, us_hi) = med(name, |s| s.cassandra_us);
        println!(
            "{name:<22} {rate:>10.0} {:>18} {us:>10.1} {:>16} {:>11.2}×",
            format!("{rate_lo:.0}–{rate_hi:.0}"),
            format!("{us_lo:.1}–{us_hi:.1}"),
            rate / base_rate
        );
        metrics.push(Metric {
            name: format!("cassandra_{name}_writer_rows_per_s"),
            value: rate,
            unit: "rows/s",
            ceiling: Some(base_rate),
        });
        metrics.push(Metric {
            name: format!("cassandra_{name}_cpu_us_per_row"),
            value: us,
            unit: "us",
            ceiling: Some(base_us),
        });
    }
    let out_dir = crate::target_dir().join("bench");
    crate::baseline::merge_summary(&out_dir.join("summary.json"), &metrics)?;
    Ok(())
}
