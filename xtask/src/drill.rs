//! `cargo xtask drill`: crash, outage and rebalance drills with exact reconciliation.
//!
//! Each drill runs the real service binaries against a local stack, pushes a known stream
//! (~1 % invalid), injects its fault, waits until everything is processed and committed, then
//! reconciles: produced = valid + invalid; the DLQ holds exactly the invalid records; Cassandra
//! holds every valid `event_id` exactly once; and the analytics are exact: every window the
//! reference model ([`stream_reader::reference`]) closes over the validated topic was emitted to
//! the stats topic with exactly its statistics (every emission of a window identical), and
//! `ip_stats_by_ip` and `top_talkers_by_minute` hold exactly one row per window with its count.
//! The stream-readers run with their default idle flush: the reference applies the idle steps
//! they committed, read from their `idle step committed` log lines (a step follows wall-clock
//! quiet, which the reference cannot compute); closing records two minutes ahead end the run.
//!
//! Every topic is read as a `read_committed` consumer would, and each drill counts the
//! duplicates per output topic: the validated topic and the DLQ by source offset, the stats
//! topic by window, the alerts topic by alert id. With `--delivery exactly-once` (the
//! stream-reader's `READER_DELIVERY`) a drill passes only when all of them are zero.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use chrono::Utc;
use clap::{Args, ValueEnum};
use futures::StreamExt;
use log_schema::{DeadLetter, Limits, Origin, ValidatedRecord, WindowStats, validate};
use pipeline_runtime::{kafka::KafkaArgs, transaction::Delivery};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};
use uuid::Uuid;

use crate::procs::Proc;
use crate::stack::{self, Server, Stack};

mod cluster;
mod outcome;
mod progress;
mod reconcile;

pub use outcome::{Outcome, TopicDuplicates};

use progress::*;
use reconcile::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Drill {
    /// SIGKILL the writer repeatedly, restarting it each time.
    WriterKill,
    /// SIGKILL the reader repeatedly, restarting it each time.
    ReaderKill,
    /// Freeze Cassandra (SIGSTOP) for a while, then resume it.
    CqlOutage,
    /// SIGKILL Cassandra mid-run and start it again (it replays its commit log).
    CassandraRestart,
    /// Restart the Kafka broker mid-run (SIGTERM, same log directory).
    BrokerRestart,
    /// A second reader and a second writer join the groups and leave again.
    Rebalance,
    /// Freeze the Kafka broker (SIGSTOP) for 10 s between the two halves of a 150-port scan;
    /// the stream-reader runs with `message.timeout.ms=3000`, so its outputs in flight time
    /// out and are retried, out of order. The scan must give exactly one `port_scan` alert.
    BrokerOutage,
    /// Cluster: SIGKILL the broker leading partition 0 of the input topic, start it again
    /// after the outage; every replica must be back in sync.
    LeaderKill,
    /// Cluster: restart every broker in turn (SIGTERM), the next once every replica is back
    /// in sync.
    RollingRestart,
    /// Cluster: SIGKILL the broker coordinating the stream-reader's transactions (its group
    /// with at-least-once), start it again after the outage.
    CoordinatorKill,
    /// Cluster: SIGKILL one Cassandra node, start it again after the outage: writes go on at
    /// LOCAL_QUORUM, the other nodes replay their hints to it.
    CassandraNodeKill,
    /// Cluster: SIGKILL two of the three Cassandra nodes for the outage: writes stall (no
    /// dead letters) and resume once they are back.
    CassandraQuorumLoss,
}

impl Drill {
    /// The drills of a single-node stack.
    pub const SINGLE_NODE: [Drill; 7] = [
        Drill::WriterKill,
        Drill::ReaderKill,
        Drill::CqlOutage,
        Drill::CassandraRestart,
        Drill::BrokerRestart,
        Drill::Rebalance,
        Drill::BrokerOutage,
    ];

    /// The drills of a cluster (`--cluster`).
    pub const CLUSTER: [Drill; 5] = [
        Drill::LeaderKill,
        Drill::RollingRestart,
        Drill::CoordinatorKill,
        Drill::CassandraNodeKill,
        Drill::CassandraQuorumLoss,
    ];
}

#[derive(Debug, Clone, Args)]
pub struct DrillArgs {
    /// Drills to run (default: all).
    #[arg(long = "drill", value_enum)]
    pub drills: Vec<Drill>,
    /// A small, fast variant (what `cargo xtask test` runs).
    #[arg(long)]
    pub quick: bool,
    /// Records per drill (default 50,000; 4,000 with --quick).
    #[arg(long)]
    pub records: Option<u64>,
    /// The delivery guarantee of the stream-reader and the writer (`READER_DELIVERY`,
    /// `WRITER_DELIVERY`); with `exactly-once` a drill also requires zero duplicates on every
    /// output topic.
    #[arg(long, value_enum, default_value_t = Delivery::AtLeastOnce)]
    pub delivery: Delivery,
    /// The stack the drills run on.
    #[command(flatten)]
    pub shape: crate::stack::Shape,
}

struct Settings {
    delivery: Delivery,
    records: u64,
    rate: u64,
    faults: usize,
    outage: Duration,
}

/// Runs the drills against `stack` (which must be up). Returns the outcomes.
pub async fn run(stack: &Stack, args: &DrillArgs) -> anyhow::Result<Vec<Outcome>> {
    let settings = if args.quick {
        Settings {
            delivery: args.delivery,
            records: args.records.unwrap_or(4_000),
            rate: 400,
            faults: 2,
            outage: Duration::from_secs(10),
        }
    } else {
        Settings {
            delivery: args.delivery,
            records: args.records.unwrap_or(50_000),
            rate: 1_000,
            faults: 5,
            outage: Duration::from_secs(20),
        }
    };
    let drills = if args.drills.is_empty() {
        if stack.nodes > 1 {
            Drill::CLUSTER.to_vec()
        } else {
            Drill::SINGLE_NODE.to_vec()
        }
    } else {
        args.drills.clone()
    };
    let mut out = Vec::new();
    for drill in drills {
        let outcome = run_one(stack, drill, &settings)
            .await
            .with_context(|| format!("drill {drill:?}"))?;
        println!("{}", outcome.line());
        out.push(outcome);
    }
    Ok(out)
}

/// Topics, group ids and keyspace of one drill run.
struct Names {
    tag: String,
    raw: String,
    valid: String,
    dlq: String,
    stats: String,
    alerts: String,
    by_destination: String,
    target_stats: String,
    keyspace: String,
}

impl Names {
    /// What the services of this drill may do on a secured stack (literal topic and group
    /// names; transactional ids by prefix, the rebalance drill's second instances included).
    fn acl_names(&self) -> crate::secure::PipelineNames {
        crate::secure::PipelineNames {
            raw: self.raw.clone(),
            valid: self.valid.clone(),
            dlq: self.dlq.clone(),
            stats: self.stats.clone(),
            alerts: self.alerts.clone(),
            by_destination: self.by_destination.clone(),
            target_stats: self.target_stats.clone(),
            reader_groups: vec![
                format!("{}_reader", self.tag),
                format!("{}_analytics", self.tag),
                format!("{}_targets", self.tag),
            ],
            writer_group: format!("{}_writer", self.tag),
            reader_transactional_id: format!("{}_reader", self.tag),
            writer_transactional_id: format!("{}_writer", self.tag),
            pattern: crate::secure::acl::Pattern::Literal,
        }
    }

    fn new(drill: Drill) -> Self {
        let tag = format!(
            "drill_{}_{}",
            format!("{drill:?}").to_lowercase(),
            Utc::now().timestamp_millis()
        );
        Self {
            raw: format!("{tag}_raw"),
            valid: format!("{tag}_valid"),
            dlq: format!("{tag}_dlq"),
            stats: format!("{tag}_stats"),
            alerts: format!("{tag}_alerts"),
            by_destination: format!("{tag}_bydest"),
            target_stats: format!("{tag}_targets"),
            keyspace: tag.clone(),
            tag,
        }
    }

    fn env(&self, stack: &Stack, delivery: Delivery) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = stack.env_with(&[]);
        for (k, v) in [
            ("PRODUCER_TOPIC", &self.raw),
            ("READER_INPUT_TOPIC", &self.raw),
            ("READER_VALIDATED_TOPIC", &self.valid),
            ("READER_DLQ_TOPIC", &self.dlq),
            ("READER_STATS_TOPIC", &self.stats),
            ("READER_ALERTS_TOPIC", &self.alerts),
            ("WRITER_INPUT_TOPIC", &self.valid),
            ("WRITER_DLQ_TOPIC", &self.dlq),
            ("WRITER_STATS_TOPIC", &self.stats),
            ("WRITER_ALERTS_TOPIC", &self.alerts),
            ("READER_DESTINATION_TOPIC", &self.by_destination),
            ("READER_TARGET_STATS_TOPIC", &self.target_stats),
            ("WRITER_TARGET_STATS_TOPIC", &self.target_stats),
            ("CASSANDRA_KEYSPACE", &self.keyspace),
        ] {
            env.push((k.to_owned(), v.clone()));
        }
        env.push(("READER_GROUP_ID".into(), format!("{}_reader", self.tag)));
        env.push((
            "READER_ANALYTICS_GROUP_ID".into(),
            format!("{}_analytics", self.tag),
        ));
        env.push((
            "READER_TARGETS_GROUP_ID".into(),
            format!("{}_targets", self.tag),
        ));
        // Every drill checks the destination windows too.
        env.push(("READER_DESTINATION_WINDOWS".into(), "true".into()));
        env.push(("WRITER_GROUP_ID".into(), format!("{}_writer", self.tag)));
        // A restarted service keeps its transactional id, as a container restarting in place
        // does: its start fences the killed instance and aborts its open transaction at once.
        // (A new id would leave that transaction open until the broker times it out, and
        // `read_committed` readers, the reconciliation among them, would stop at it.)
        env.push((
            "READER_TRANSACTIONAL_ID".into(),
            format!("{}_reader_a", self.tag),
        ));
        env.push((
            "WRITER_TRANSACTIONAL_ID".into(),
            format!("{}_writer_a", self.tag),
        ));
        if let Some(v) = delivery.to_possible_value() {
            env.push(("READER_DELIVERY".into(), v.get_name().to_owned()));
            env.push(("WRITER_DELIVERY".into(), v.get_name().to_owned()));
        }
        env.push(("METRICS_ADDR".into(), "127.0.0.1:0".into()));
        // A killed member's partitions move on after its session expires (the broker's
        // minimum, 6 s, instead of the 45 s default).
        env.push(("KAFKA_OPTIONS".into(), "session.timeout.ms=6000".into()));
        env.push(("RUST_LOG".into(), "info".into()));
        env
    }
}

fn spawn(
    stack: &Stack,
    name: &'static str,
    args: &[String],
    env: &[(String, String)],
    log: &std::path::Path,
) -> anyhow::Result<Proc> {
    // On a secured stack each service runs as its own user and role.
    let mut env = env.to_vec();
    env.extend(stack.identity(name));
    Proc::spawn(name, false, args, &env, log)
}

async fn run_one(stack: &Stack, drill: Drill, s: &Settings) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let names = Names::new(drill);
    let kafka = stack.kafka_admin();
    kafka
        .ensure_topics(
            &[
                &names.raw,
                &names.valid,
                &names.dlq,
                &names.stats,
                &names.alerts,
                &names.by_destination,
                &names.target_stats,
            ],
            stack.partitions,
            i32::from(stack.nodes),
        )
        .await?;
    let env = names.env(stack, s.delivery);
    let logs = stack.dir.join("drills");
    fs::create_dir_all(&logs)?;
    let log = logs.join(format!("{}.log", names.tag));
    stack.authorize(&names.acl_names())?;
    let mut migrate_env = env.clone();
    migrate_env.extend(stack.identity("migrate"));
    crate::procs::migrate(false, &migrate_env, Some(&log))?;

    let reader_group = format!("{}_reader", names.tag);
    let writer_group = format!("{}_writer", names.tag);
    let mut reader = if drill == Drill::BrokerOutage {
        // Outputs in flight during the outage fail after 3 s and are retried.
        let mut env = env.clone();
        env.retain(|(k, _)| k != "KAFKA_OPTIONS");
        env.push((
            "KAFKA_OPTIONS".into(),
            "session.timeout.ms=6000;message.timeout.ms=3000".into(),
        ));
        spawn(stack, "stream-reader", &[], &env, &log)?
    } else {
        spawn(stack, "stream-reader", &[], &env, &log)?
    };
    let mut writer = spawn(stack, "cassandra-writer", &[], &env, &log)?;
    let producer_args: Vec<String> = [
        "--count",
        &s.records.to_string(),
        "--rate",
        &s.rate.to_string(),
        "--invalid-ratio",
        "0.01",
        "--seed",
        "1234",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let mut producer = spawn(stack, "producer", &producer_args, &env, &log)?;
    let production = Duration::from_secs_f64(s.records as f64 / s.rate as f64);

    let mut faults = 0;
    let mut recover_max = Duration::ZERO;
    let mut notes = Vec::new();
    // Time to recover: from the fault's end until the affected stage commits progress again.
    // (Caught up: past the last committed record; with transactions the high watermark also
    // counts markers, so it is never reached.)
    let recovered = |group: &str, topic: &str, before: i64| -> anyhow::Result<bool> {
        let (_, committed) = progress(&kafka, group, topic)?;
        Ok(committed > before || caught_up(&kafka, group, topic)?)
    };
    match drill {
        Drill::WriterKill | Drill::ReaderKill => {
            let gap = production / (s.faults as u32 + 1);
            for _ in 0..s.faults {
                tokio::time::sleep(gap).await;
                let (proc_, group, topic) = if drill == Drill::WriterKill {
                    (&mut writer, &writer_group, &names.valid)
                } else {
                    (&mut reader, &reader_group, &names.raw)
                };
                proc_.sigkill();
                faults += 1;
                let (high, committed) = progress_retrying(&kafka, group, topic).await?;
                // The reader's commits wait for its open windows to close (up to a minute and
                // its allowed lateness of event time), so its recovery is its first new output.
                let outputs = progress_retrying(&kafka, group, &names.valid).await?.0;
                *proc_ = spawn(stack, proc_.name, &[], &env, &log)?;
                let t = Instant::now();
                wait_for("progress after restart", Duration::from_secs(120), || {
                    if drill == Drill::ReaderKill {
                        Ok(progress(&kafka, group, &names.valid)?.0 > outputs
                            || progress(&kafka, group, topic)?.1 == high)
                    } else {
                        recovered(group, topic, committed)
                    }
                })
                .await?;
                recover_max = recover_max.max(t.elapsed());
            }
        }
        Drill::CqlOutage | Drill::CassandraRestart | Drill::BrokerRestart => {
            tokio::time::sleep(production / 3).await;
            match drill {
                Drill::CqlOutage => {
                    let pid = stack
                        .pid(Server::Cassandra)
                        .context("Cassandra is not running")?;
                    stack::signal(pid, libc::SIGSTOP);
                    tokio::time::sleep(s.outage).await;
                    stack::signal(pid, libc::SIGCONT);
                }
                Drill::CassandraRestart => stack.restart(Server::Cassandra, true).await?,
                _ => stack.restart(Server::Kafka, false).await?,
            }
            faults += 1;
            // Recovery: from the fault's end until the writer commits progress again.
            let before = progress_retrying(&kafka, &writer_group, &names.valid)
                .await?
                .1;
            let t = Instant::now();
            wait_for("writes after the fault", Duration::from_secs(180), || {
                recovered(&writer_group, &names.valid, before)
            })
            .await?;
            recover_max = t.elapsed();
        }
        Drill::BrokerOutage => {
            tokio::time::sleep(production / 3).await;
            let pid = stack.pid(Server::Kafka).context("Kafka is not running")?;
            let at = Utc::now();
            produce_scan(&kafka, &names.raw, at, 0..SCAN_PORTS / 2).await?;
            stack::signal(pid, libc::SIGSTOP);
            tokio::time::sleep(OUTAGE).await;
            stack::signal(pid, libc::SIGCONT);
            faults += 1;
            let t = Instant::now();
            produce_scan(&kafka, &names.raw, at, SCAN_PORTS / 2..SCAN_PORTS).await?;
            let before = progress_retrying(&kafka, &reader_group, &names.raw)
                .await?
                .1;
            wait_for("reads after the outage", Duration::from_secs(180), || {
                recovered(&reader_group, &names.raw, before)
            })
            .await?;
            recover_max = t.elapsed();
        }
        Drill::LeaderKill
        | Drill::RollingRestart
        | Drill::CoordinatorKill
        | Drill::CassandraNodeKill
        | Drill::CassandraQuorumLoss => {
            let fault = cluster::inject(stack, drill, &kafka, &names, s, production, &log).await?;
            faults += fault.faults;
            recover_max = fault.recover;
            notes = fault.notes;
        }
        Drill::Rebalance => {
            tokio::time::sleep(production / 4).await;
            // The second instances have transactional ids of their own.
            let env2: Vec<(String, String)> = env
                .iter()
                .map(|(k, v)| match k.as_str() {
                    "READER_TRANSACTIONAL_ID" | "WRITER_TRANSACTIONAL_ID" => {
                        let own = v.strip_suffix("_a").unwrap_or(v);
                        (k.clone(), format!("{own}_b"))
                    }
                    _ => (k.clone(), v.clone()),
                })
                .collect();
            let mut reader2 = spawn(stack, "stream-reader", &[], &env2, &log)?;
            let mut writer2 = spawn(stack, "cassandra-writer", &[], &env2, &log)?;
            faults += 1;
            tokio::time::sleep(production / 3).await;
            reader2.sigterm()?;
            writer2.sigterm()?;
            faults += 1;
        }
    }

    // The producer delivers every record or reports each failure (and exits non-zero); the
    // outcome fails on any reported failure.
    let status = producer.child.wait()?;
    let (sent, delivered, failed) = producer_summary(&log)?;
    if sent != s.records || delivered + failed != sent {
        bail!(
            "the producer lost track of records: sent {sent}, delivered {delivered}, failed {failed}"
        );
    }
    if !status.success() && failed == 0 {
        bail!("the producer failed ({status}); see {}", log.display());
    }
    produce_closers(&kafka, &names.raw).await?;
    let produced = progress_retrying(&kafka, &reader_group, &names.raw)
        .await?
        .0;
    let scan = if drill == Drill::BrokerOutage {
        i64::from(SCAN_PORTS)
    } else {
        0
    };
    let generated = produced - CLOSERS as i64 - scan;
    if generated < delivered as i64 || generated > sent as i64 {
        bail!(
            "{generated} generated records on the input topic, but {delivered} delivered of {sent} sent"
        );
    }
    wait_for(
        "the reader to commit everything",
        Duration::from_secs(300),
        || {
            reader.running(&log)?;
            Ok(progress(&kafka, &reader_group, &names.raw)?.1 == produced)
        },
    )
    .await?;
    wait_for(
        "the writer to commit everything",
        Duration::from_secs(300),
        || {
            writer.running(&log)?;
            caught_up(&kafka, &writer_group, &names.valid)
        },
    )
    .await?;
    wait_for_analytics(&kafka, &names, &log).await?;
    producer.sigterm().ok();
    // The stream-reader stops first: its idle steps are final, and the writer then stores
    // every window they closed.
    reader.sigterm()?;
    let analytics = reference_now(&kafka, &names, &log)?;
    wait_for(
        "the writer to commit the statistics",
        Duration::from_secs(300),
        || {
            Ok(caught_up(&kafka, &writer_group, &names.stats)?
                && caught_up(&kafka, &writer_group, &names.target_stats)?)
        },
    )
    .await?;
    writer.sigterm()?;

    let mut outcome = reconcile(
        stack,
        &names,
        drill,
        produced as u64,
        faults,
        recover_max,
        started,
    )
    .await?;
    outcome.producer_failed = failed;
    outcome.reader_failures = reader_failures(&log)?;
    outcome.delivery = s.delivery;
    outcome.notes = notes;
    reconcile_analytics(stack, &names, &analytics, &mut outcome).await?;
    Ok(outcome)
}

/// (sent, delivered, failed) from the producer's final summary line in the drill log.
fn producer_summary(log: &PathBuf) -> anyhow::Result<(u64, u64, u64)> {
    let text = fs::read_to_string(log)?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("producer stopped"))
        .context("the producer printed no summary")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let rest = line
            .split(&format!("{name}: "))
            .nth(1)
            .with_context(|| format!("no {name} in {line}"))?;
        Ok(rest
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap_or("")
            .parse()?)
    };
    Ok((field("sent")?, field("delivered")?, field("failed")?))
}

/// Closing records at the end of a drill.
const CLOSERS: usize = 64;

/// The allowed lateness of the drills' stream-reader (its default).
const LATENESS: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// Produces [`CLOSERS`] records two minutes ahead in event time and with a Kafka timestamp two
/// minutes ahead (a stream that has moved on: a record moves event time no further than its
/// Kafka timestamp), from 64 sources so that every validated partition gets one: they close
/// every window of the drill's data by event time; their own windows stay open.
/// The broker-outage drill's scanner (TEST-NET-3, outside the generator's attackers).
const SCANNER: &str = "203.0.113.250";
/// Distinct ports of its scan, all in one minute.
const SCAN_PORTS: u16 = 150;
/// How long the broker-outage drill freezes the broker.
const OUTAGE: Duration = Duration::from_secs(10);

/// The scan's records for `ports` (ports 1 + i), dated and timestamped `at`.
async fn produce_scan(
    kafka: &KafkaArgs,
    topic: &str,
    at: chrono::DateTime<Utc>,
    ports: std::ops::Range<u16>,
) -> anyhow::Result<()> {
    let records = ports.map(|i| (SCANNER.to_owned(), i + 1, 60, 0, "10.9.0.2"));
    produce_logs(kafka, topic, at, records)
        .await
        .context("produce the scan")
}

/// Allowed logs (source, port, bytes sent, bytes received, destination), each dated `at` and
/// with `at` as its Kafka timestamp.
async fn produce_logs(
    kafka: &KafkaArgs,
    topic: &str,
    at: chrono::DateTime<Utc>,
    records: impl Iterator<Item = (String, u16, u64, u64, &'static str)>,
) -> anyhow::Result<()> {
    let producer = kafka.producer(&[])?;
    let stamp = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    for (source, port, sent, received, destination) in records {
        let json = format!(
            r#"{{"timestamp":"{stamp}","source_ip":"{source}","destination_ip":"{destination}","port":{port},"protocol":"TCP","bytes_sent":{sent},"bytes_received":{received},"action":"ALLOW"}}"#
        );
        producer
            .send(
                rdkafka::producer::FutureRecord::<[u8], [u8]>::to(topic)
                    .payload(json.as_bytes())
                    .timestamp(at.timestamp_millis()),
                Duration::from_secs(60),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// The stream-reader's output failures in the drill log: the retried produce attempts of its
/// last status line plus its aborted transactions.
fn reader_failures(log: &Path) -> anyhow::Result<u64> {
    let text = pipeline_runtime::telemetry::without_colours(&fs::read_to_string(log)?);
    let retries = text
        .lines()
        .filter(|l| l.contains("stream_reader::metrics") && l.contains(" status "))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("retries="))?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    let aborted = text
        .lines()
        .filter(|l| l.contains("stream_reader") && l.contains("transaction aborted"))
        .count() as u64;
    Ok(retries + aborted)
}

async fn produce_closers(kafka: &KafkaArgs, topic: &str) -> anyhow::Result<()> {
    let ahead = Utc::now() + chrono::TimeDelta::minutes(2);
    let records = (0..CLOSERS).map(|i| (format!("198.51.100.{i}"), 9, 1, 1, "10.9.0.1"));
    produce_logs(kafka, topic, ahead, records)
        .await
        .context("produce the closing records")
}
