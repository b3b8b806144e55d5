//! `cargo xtask drill`: crash, outage and rebalance drills with exact reconciliation.
//!
//! Each drill runs the real service binaries against a local stack, pushes a known stream
//! (~1 % invalid), injects its fault, waits until everything is processed and committed, then
//! reconciles: produced = valid + invalid; the DLQ holds exactly the invalid records; Cassandra
//! holds every valid `event_id` exactly once; and the analytics are exact: every window the
//! reference model ([`stream_reader::reference`]) closes over the validated topic was emitted to
//! the stats topic with exactly its statistics (every emission of a window identical), and
//! `ip_stats_by_ip` and `top_talkers_by_minute` hold exactly one row per window with its count.
//! (Only event time closes windows in a drill: idle steps follow wall-clock pauses that the
//! reference cannot see; closing records two minutes ahead end the run.)
//!
//! Every topic is read as a `read_committed` consumer would, and each drill counts the
//! duplicates per output topic: the validated topic and the DLQ by source offset, the stats
//! topic by window, the alerts topic by alert id. With `--delivery exactly-once` (the
//! stream-reader's `READER_DELIVERY`) a drill passes only when all of them are zero.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use chrono::Utc;
use clap::{Args, ValueEnum};
use futures::StreamExt;
use log_schema::{DeadLetter, Limits, Origin, ValidatedRecord, WindowStats, validate};
use pipeline_runtime::{cassandra::CassandraArgs, kafka::KafkaArgs, transaction::Delivery};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};
use uuid::Uuid;

use crate::stack::{self, Server, Stack};

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
}

struct Settings {
    delivery: Delivery,
    records: u64,
    rate: u64,
    faults: usize,
    outage: Duration,
}

/// Result of one drill.
#[derive(Debug)]
pub struct Outcome {
    pub drill: Drill,
    pub records: u64,
    pub valid: usize,
    pub invalid: usize,
    pub faults: usize,
    /// Records the producer reported as not delivered (counted, never silent).
    pub producer_failed: u64,
    /// Records on the input topic whose payload is already there (a producer retry that the
    /// idempotent producer failed to deduplicate).
    pub input_duplicates: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub dlq_exact: bool,
    /// Windows the reference model closes.
    pub windows: usize,
    /// Reference windows not emitted with exactly their statistics, emitted windows the
    /// reference does not close, and windows emitted twice with different statistics.
    pub windows_wrong: usize,
    /// Windows whose rows in `ip_stats_by_ip` / `top_talkers_by_minute` are not exactly one
    /// with the reference's count.
    pub window_rows_wrong: usize,
    pub recover_max: Duration,
    pub elapsed: Duration,
    pub delivery: Delivery,
    /// Outputs seen more than once by a `read_committed` consumer: validated and DLQ records
    /// per source offset, window stats per window, alerts per id.
    pub topic_duplicates: TopicDuplicates,
}

/// Duplicates per output topic.
#[derive(Debug, Default, Clone, Copy)]
pub struct TopicDuplicates {
    pub validated: usize,
    pub dlq: usize,
    pub stats: usize,
    pub alerts: usize,
}

impl TopicDuplicates {
    fn total(self) -> usize {
        self.validated + self.dlq + self.stats + self.alerts
    }
}

/// How many items occur more than once (each extra occurrence counted).
fn repeats<T: Ord + Clone>(items: impl IntoIterator<Item = T>) -> usize {
    let mut seen = BTreeSet::new();
    items
        .into_iter()
        .filter(|i| !seen.insert(i.clone()))
        .count()
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.producer_failed == 0
            && self.input_duplicates == 0
            && self.dlq_exact
            && self.windows > 0
            && self.windows_wrong == 0
            && self.window_rows_wrong == 0
            && self.valid + self.invalid == self.records as usize
            && (self.delivery == Delivery::AtLeastOnce || self.topic_duplicates.total() == 0)
    }

    pub fn line(&self) -> String {
        format!(
            "drill {:<15} {} delivery={} records={} valid={} invalid={} faults={} producer_failed={} input_duplicates={} lost={} duplicated={} dlq_exact={} windows={} windows_wrong={} window_rows_wrong={} topic_duplicates=validated:{},dlq:{},stats:{},alerts:{} recover_max={:.1}s elapsed={:.0}s",
            format!("{:?}", self.drill).to_lowercase(),
            if self.ok() { "PASS" } else { "FAIL" },
            self.delivery
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_owned()),
            self.records,
            self.valid,
            self.invalid,
            self.faults,
            self.producer_failed,
            self.input_duplicates,
            self.lost,
            self.duplicated,
            self.dlq_exact,
            self.windows,
            self.windows_wrong,
            self.window_rows_wrong,
            self.topic_duplicates.validated,
            self.topic_duplicates.dlq,
            self.topic_duplicates.stats,
            self.topic_duplicates.alerts,
            self.recover_max.as_secs_f64(),
            self.elapsed.as_secs_f64(),
        )
    }
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
        vec![
            Drill::WriterKill,
            Drill::ReaderKill,
            Drill::CqlOutage,
            Drill::CassandraRestart,
            Drill::BrokerRestart,
            Drill::Rebalance,
        ]
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
    keyspace: String,
}

impl Names {
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
            ("CASSANDRA_KEYSPACE", &self.keyspace),
        ] {
            env.push((k.to_owned(), v.clone()));
        }
        env.push(("READER_GROUP_ID".into(), format!("{}_reader", self.tag)));
        env.push((
            "READER_ANALYTICS_GROUP_ID".into(),
            format!("{}_analytics", self.tag),
        ));
        env.push(("WRITER_GROUP_ID".into(), format!("{}_writer", self.tag)));
        env.push(("READER_IDLE_FLUSH_MS".into(), "3600000".into()));
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

/// A service process started by a drill; killed if still running when dropped.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    name: &'static str,
    args: &[String],
    env: &[(String, String)],
    log: &std::path::Path,
) -> anyhow::Result<Proc> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = crate::spawn_logged(&crate::bin_path(name, false), &args, env, log)?;
    Ok(Proc { name, child })
}

fn sigterm(p: &mut Proc) -> anyhow::Result<()> {
    stack::terminate(p.child.id() as i32, Duration::from_secs(40));
    let status = p.child.wait()?;
    if !status.success() {
        bail!("{} exited with {status} on SIGTERM", p.name);
    }
    Ok(())
}

/// A service the drill waits on has exited: [`wait_for`] fails at once instead of timing out.
#[derive(Debug, thiserror::Error)]
#[error("the {name} exited ({status}); see {log}")]
struct Exited {
    name: &'static str,
    status: std::process::ExitStatus,
    log: String,
}

/// Fails with [`Exited`] when `p` has exited.
fn running(p: &mut Proc, log: &std::path::Path) -> anyhow::Result<()> {
    match p.child.try_wait()? {
        None => Ok(()),
        Some(status) => Err(Exited {
            name: p.name,
            status,
            log: log.display().to_string(),
        }
        .into()),
    }
}

fn sigkill(p: &mut Proc) {
    let _ = p.child.kill();
    let _ = p.child.wait();
}

fn consumer(kafka: &KafkaArgs, group: &str) -> anyhow::Result<BaseConsumer> {
    Ok(kafka
        .config(&[("group.id", group), ("enable.auto.commit", "false")])?
        .create()?)
}

fn partitions(c: &BaseConsumer, topic: &str) -> anyhow::Result<Vec<i32>> {
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// [`progress`], retried through transient errors for up to a minute.
async fn progress_retrying(
    kafka: &KafkaArgs,
    group: &str,
    topic: &str,
) -> anyhow::Result<(i64, i64)> {
    let mut result = None;
    wait_for("broker metadata", Duration::from_secs(60), || {
        result = Some(progress(kafka, group, topic)?);
        Ok(true)
    })
    .await?;
    result.context("no progress read")
}

/// (sum of high watermarks, sum of the group's committed offsets) of a topic.
fn progress(kafka: &KafkaArgs, group: &str, topic: &str) -> anyhow::Result<(i64, i64)> {
    let c = consumer(kafka, group)?;
    let parts = partitions(&c, topic)?;
    let mut tpl = TopicPartitionList::new();
    let mut high = 0;
    for p in &parts {
        tpl.add_partition(topic, *p);
        high += c.fetch_watermarks(topic, *p, Duration::from_secs(10))?.1;
    }
    let committed = c
        .committed_offsets(tpl, Duration::from_secs(10))?
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum();
    Ok((high, committed))
}

/// Every committed record of a topic, as a `read_committed` consumer sees it (aborted
/// transactions skipped), up to each partition's end: (partition, offset, payload).
fn read_all(kafka: &KafkaArgs, topic: &str) -> anyhow::Result<Vec<(i32, i64, Vec<u8>)>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", format!("drill-read-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()?;
    let mut open: BTreeSet<i32> = partitions(&c, topic)?.into_iter().collect();
    let mut tpl = TopicPartitionList::new();
    for p in &open {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut out = Vec::new();
    while !open.is_empty() {
        if Instant::now() > deadline {
            bail!(
                "{topic}: partitions {open:?} not read to their end ({} records read)",
                out.len()
            );
        }
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push((
                m.partition(),
                m.offset(),
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

/// True when `group` committed past the last committed record of every partition of `topic`
/// (transaction markers and aborted records may follow it, so this is not the high watermark).
fn caught_up(kafka: &KafkaArgs, group: &str, topic: &str) -> anyhow::Result<bool> {
    let mut end: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o, _) in read_all(kafka, topic)? {
        let e = end.entry(p).or_default();
        *e = (*e).max(o + 1);
    }
    let c = consumer(kafka, group)?;
    let mut tpl = TopicPartitionList::new();
    for p in end.keys() {
        tpl.add_partition(topic, *p);
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(!end.is_empty()
        && end.iter().all(|(p, e)| {
            committed
                .find_partition(topic, *p)
                .is_some_and(|c| matches!(c.offset(), Offset::Offset(o) if o >= *e))
        }))
}

async fn wait_for(
    what: &str,
    deadline: Duration,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let end = Instant::now() + deadline;
    let mut last_error = None;
    loop {
        // Transient client errors (a broker that just restarted) mean "not yet".
        match done() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) if e.is::<Exited>() => return Err(e),
            Err(e) => last_error = Some(e),
        }
        if Instant::now() > end {
            bail!("timed out after {deadline:?} waiting for {what} (last error: {last_error:?})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn run_one(stack: &Stack, drill: Drill, s: &Settings) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let names = Names::new(drill);
    let kafka = KafkaArgs::new(stack.kafka_addr());
    kafka
        .ensure_topics(
            &[
                &names.raw,
                &names.valid,
                &names.dlq,
                &names.stats,
                &names.alerts,
            ],
            stack.partitions,
            1,
        )
        .await?;
    let env = names.env(stack, s.delivery);
    let logs = stack.dir.join("drills");
    fs::create_dir_all(&logs)?;
    let log = logs.join(format!("{}.log", names.tag));
    let migrate = Command::new(crate::bin_path("cassandra-writer", false))
        .arg("migrate")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)?,
        )
        .status()?;
    if !migrate.success() {
        bail!("migrate failed; see {}", log.display());
    }

    let reader_group = format!("{}_reader", names.tag);
    let writer_group = format!("{}_writer", names.tag);
    let mut reader = spawn("stream-reader", &[], &env, &log)?;
    let mut writer = spawn("cassandra-writer", &[], &env, &log)?;
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
    let mut producer = spawn("producer", &producer_args, &env, &log)?;
    let production = Duration::from_secs_f64(s.records as f64 / s.rate as f64);

    let mut faults = 0;
    let mut recover_max = Duration::ZERO;
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
                sigkill(proc_);
                faults += 1;
                let (high, committed) = progress_retrying(&kafka, group, topic).await?;
                // The reader's commits wait for its open windows to close (up to a minute and
                // its allowed lateness of event time), so its recovery is its first new output.
                let outputs = progress_retrying(&kafka, group, &names.valid).await?.0;
                *proc_ = spawn(proc_.name, &[], &env, &log)?;
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
        Drill::Rebalance => {
            tokio::time::sleep(production / 4).await;
            let mut reader2 = spawn("stream-reader", &[], &env, &log)?;
            let mut writer2 = spawn("cassandra-writer", &[], &env, &log)?;
            faults += 1;
            tokio::time::sleep(production / 3).await;
            sigterm(&mut reader2)?;
            sigterm(&mut writer2)?;
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
    let generated = produced - CLOSERS as i64;
    if generated < delivered as i64 || generated > sent as i64 {
        bail!(
            "{generated} generated records on the input topic, but {delivered} delivered of {sent} sent"
        );
    }
    wait_for(
        "the reader to commit everything",
        Duration::from_secs(300),
        || {
            running(&mut reader, &log)?;
            Ok(progress(&kafka, &reader_group, &names.raw)?.1 == produced)
        },
    )
    .await?;
    wait_for(
        "the writer to commit everything",
        Duration::from_secs(300),
        || {
            running(&mut writer, &log)?;
            caught_up(&kafka, &writer_group, &names.valid)
        },
    )
    .await?;
    let analytics = wait_for_analytics(&kafka, &names, &writer_group).await?;
    sigterm(&mut producer).ok();
    sigterm(&mut reader)?;
    sigterm(&mut writer)?;

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
    outcome.delivery = s.delivery;
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

async fn reconcile(
    stack: &Stack,
    names: &Names,
    drill: Drill,
    records: u64,
    faults: usize,
    recover_max: Duration,
    started: Instant,
) -> anyhow::Result<Outcome> {
    let kafka = KafkaArgs::new(stack.kafka_addr());
    let input = read_all(&kafka, &names.raw)?;
    if input.len() as u64 != records {
        bail!(
            "{} records on {} but {records} produced",
            input.len(),
            names.raw
        );
    }
    // Generated payloads carry microsecond timestamps and random addresses: a repeated payload
    // is a duplicate the producer wrote.
    let distinct_payloads: BTreeSet<&[u8]> = input.iter().map(|(_, _, p)| p.as_slice()).collect();
    // What the contract says each input must become.
    let mut want_valid: BTreeMap<Uuid, String> = BTreeMap::new();
    let mut want_invalid: BTreeSet<(i32, i64)> = BTreeSet::new();
    for (p, o, payload) in &input {
        let origin = Origin {
            topic: &names.raw,
            partition: *p,
            offset: *o,
        };
        match validate(payload, &origin, Utc::now(), &Limits::default()) {
            Ok(r) => {
                want_valid.insert(r.event_id, r.source_ip.to_string());
            }
            Err(_) => {
                want_invalid.insert((*p, *o));
            }
        }
    }
    // Every dead letter, the writer's (`write_rejected`, sourced from the validated topic) too.
    let dead_letters: Vec<DeadLetter> = read_all(&kafka, &names.dlq)?
        .iter()
        .filter_map(|(_, _, payload)| DeadLetter::from_json(payload).ok())
        .collect();
    let validated_records: Vec<ValidatedRecord> = read_all(&kafka, &names.valid)?
        .iter()
        .filter_map(|(_, _, payload)| ValidatedRecord::from_json(payload).ok())
        .collect();
    let topic_duplicates = TopicDuplicates {
        validated: repeats(
            validated_records
                .iter()
                .map(|r| r.source.map(|s| (s.partition, s.offset))),
        ),
        dlq: repeats(
            dead_letters
                .iter()
                .map(|d| (d.source.topic.as_str(), d.source.partition, d.source.offset)),
        ),
        ..TopicDuplicates::default()
    };
    let dlq: BTreeSet<(i32, i64)> = dead_letters
        .iter()
        .filter(|d| d.source.topic == names.raw)
        .map(|d| (d.source.partition, d.source.offset))
        .collect();
    let validated: BTreeSet<Uuid> = validated_records.iter().map(|r| r.event_id).collect();

    // Cassandra: every row of every source IP.
    let cql = CassandraArgs::new(stack.cql_addr(), &names.keyspace);
    let session = cql.connect().await?;
    let stmt = session
        .prepare(format!(
            "SELECT event_id FROM {}.access_logs WHERE source_ip = ?",
            names.keyspace
        ))
        .await?;
    let ips: BTreeSet<&String> = want_valid.values().collect();
    let mut rows: Vec<Uuid> = Vec::new();
    for ip in ips {
        let mut pages = session
            .execute_iter(stmt.clone(), (ip,))
            .await?
            .rows_stream::<(Uuid,)>()?;
        while let Some(row) = pages.next().await {
            rows.push(row?.0);
        }
    }
    let distinct: BTreeSet<Uuid> = rows.iter().copied().collect();
    let want_ids: BTreeSet<Uuid> = want_valid.keys().copied().collect();
    let lost = want_ids.difference(&distinct).count();
    Ok(Outcome {
        drill,
        records,
        valid: want_valid.len(),
        invalid: want_invalid.len(),
        faults,
        producer_failed: 0,
        input_duplicates: input.len() - distinct_payloads.len(),
        lost,
        duplicated: rows.len() - distinct.len() + distinct.difference(&want_ids).count(),
        dlq_exact: dlq == want_invalid && validated == want_ids,
        windows: 0,
        windows_wrong: 0,
        window_rows_wrong: 0,
        recover_max,
        elapsed: started.elapsed(),
        delivery: Delivery::AtLeastOnce,
        topic_duplicates,
    })
}

/// Closing records at the end of a drill.
const CLOSERS: usize = 64;

/// The allowed lateness of the drills' stream-reader (its default).
const LATENESS: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// Produces [`CLOSERS`] records two minutes ahead in event time (within the reader's future
/// skew), from 64 sources so that every validated partition gets one: they close every window
/// of the drill's data by event time; their own windows stay open.
async fn produce_closers(kafka: &KafkaArgs, topic: &str) -> anyhow::Result<()> {
    let producer = kafka.producer(&[])?;
    let at = (Utc::now() + chrono::TimeDelta::minutes(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    for i in 0..CLOSERS {
        let json = format!(
            r#"{{"timestamp":"{at}","source_ip":"198.51.100.{i}","destination_ip":"10.9.0.1","port":9,"protocol":"TCP","bytes_sent":1,"bytes_received":1,"action":"ALLOW"}}"#
        );
        producer
            .send(
                rdkafka::producer::FutureRecord::<[u8], [u8]>::to(topic).payload(json.as_bytes()),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .context("produce the closing records")?;
    }
    Ok(())
}

/// Waits until the analytics stage emitted every window the reference model closes over the
/// (complete) validated topic and the writer committed the statistics; returns the reference.
async fn wait_for_analytics(
    kafka: &KafkaArgs,
    names: &Names,
    writer_group: &str,
) -> anyhow::Result<stream_reader::reference::Reference> {
    let validated = read_all(kafka, &names.valid)?;
    let reference = stream_reader::reference::reference(
        validated
            .into_iter()
            .filter_map(|(p, o, payload)| Some((p, o, ValidatedRecord::from_json(&payload).ok()?))),
        LATENESS,
    );
    wait_for(
        "the analytics stage to emit every window",
        Duration::from_secs(300),
        || {
            let emitted: BTreeSet<_> = read_all(kafka, &names.stats)?
                .iter()
                .filter_map(|(_, _, p)| WindowStats::from_json(p).ok())
                .map(|s| (s.source_ip, s.window_start))
                .collect();
            Ok(reference.windows.keys().all(|k| emitted.contains(k)))
        },
    )
    .await?;
    wait_for(
        "the writer to commit the statistics",
        Duration::from_secs(300),
        || caught_up(kafka, writer_group, &names.stats),
    )
    .await?;
    Ok(reference)
}

/// Compares the stats topic and the two statistics tables with the reference.
async fn reconcile_analytics(
    stack: &Stack,
    names: &Names,
    reference: &stream_reader::reference::Reference,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let kafka = KafkaArgs::new(stack.kafka_addr());
    let horizon = reference.windows.keys().map(|k| k.1).max();
    let mut emitted: BTreeMap<(std::net::IpAddr, chrono::DateTime<Utc>), WindowStats> =
        BTreeMap::new();
    let mut wrong = 0;
    let mut windows = Vec::new();
    for (_, _, payload) in read_all(&kafka, &names.stats)? {
        let s = WindowStats::from_json(&payload)?;
        windows.push((s.source_ip, s.window_start));
        if Some(s.window_start) > horizon {
            continue; // the closing records' own minute
        }
        if let Some(previous) = emitted.insert((s.source_ip, s.window_start), s.clone())
            && previous != s
        {
            wrong += 1;
        }
    }
    wrong += reference.differences(&emitted).len();
    outcome.topic_duplicates.stats = repeats(windows);
    let mut alert_ids = Vec::new();
    for (_, _, payload) in read_all(&kafka, &names.alerts)? {
        alert_ids.push(log_schema::Alert::from_json(&payload)?.alert_id);
    }
    outcome.topic_duplicates.alerts = repeats(alert_ids);

    let session = CassandraArgs::new(stack.cql_addr(), &names.keyspace)
        .connect()
        .await?;
    let ks = &names.keyspace;
    let by_ip = session
        .prepare(format!(
            "SELECT window_start, events FROM {ks}.ip_stats_by_ip WHERE source_ip = ? AND day = ?"
        ))
        .await?;
    let talkers = session
        .prepare(format!(
            "SELECT source_ip, events FROM {ks}.top_talkers_by_minute WHERE window_start = ?"
        ))
        .await?;
    let mut stored: BTreeMap<(String, chrono::DateTime<Utc>), Vec<i64>> = BTreeMap::new();
    let ip_days: BTreeSet<(String, chrono::NaiveDate)> = reference
        .windows
        .keys()
        .map(|(ip, m)| (ip.to_string(), m.date_naive()))
        .collect();
    for (ip, day) in ip_days {
        let mut pages = session
            .execute_iter(by_ip.clone(), (&ip, day))
            .await?
            .rows_stream::<(chrono::DateTime<Utc>, i64)>()?;
        while let Some(row) = pages.next().await {
            let (m, events) = row?;
            stored.entry((ip.clone(), m)).or_default().push(events);
        }
    }
    let minutes: BTreeSet<chrono::DateTime<Utc>> = reference.windows.keys().map(|k| k.1).collect();
    let mut top: BTreeMap<(String, chrono::DateTime<Utc>), Vec<i64>> = BTreeMap::new();
    for m in minutes {
        let mut pages = session
            .execute_iter(talkers.clone(), (m,))
            .await?
            .rows_stream::<(String, i64)>()?;
        while let Some(row) = pages.next().await {
            let (ip, events) = row?;
            top.entry((ip, m)).or_default().push(events);
        }
    }
    let want: BTreeMap<(String, chrono::DateTime<Utc>), Vec<i64>> = reference
        .windows
        .iter()
        .map(|((ip, m), w)| ((ip.to_string(), *m), vec![w.events]))
        .collect();
    let differs = |got: &BTreeMap<(String, chrono::DateTime<Utc>), Vec<i64>>| {
        want.iter().filter(|(k, v)| got.get(*k) != Some(*v)).count()
            + got.keys().filter(|k| !want.contains_key(*k)).count()
    };
    outcome.windows = reference.windows.len();
    outcome.windows_wrong = wrong;
    outcome.window_rows_wrong = differs(&stored) + differs(&top);
    Ok(())
}
