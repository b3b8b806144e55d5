//! End to end at a fixed rate or draining a backlog: event time → row written, CPU and memory
//! per process, rows checked against the input.

use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::bail;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use pipeline_runtime::{cassandra::CassandraArgs, kafka::KafkaArgs};

use crate::stack::{Server, Stack};

use super::*;

/// The bench writers' /metrics (one at a time), to follow their progress. Below the kernel's
/// ephemeral port range (32768–60999 here): in it, an outgoing connection of the bench could
/// hold the port when a service binds it (seen once: "cannot bind the metrics address").
pub(super) const WRITER_METRICS_ADDR: &str = "127.0.0.1:31103";
pub(super) const WRITER_METRICS_PORT: u16 = 31103;
pub(super) const READER_METRICS_ADDR: &str = "127.0.0.1:31102";
pub(super) const READER_METRICS_PORT: u16 = 31102;

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

    pub(crate) fn metrics(&self, prefix: &str, rate: u64) -> Vec<Metric> {
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
