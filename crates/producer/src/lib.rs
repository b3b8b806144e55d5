//! producer: generates realistic IP access logs (see [`generate`]) or replays real ones
//! (`--input FILE|-`, one record per line, bytes unchanged, gzip read as is, `--follow` for a
//! growing and rotating file: see [`input`]) into Kafka.
//!
//! A line of a file carries its identity (the file's fingerprint and the line's byte offset)
//! in the `x-origin` header, and the file's read position is saved once Kafka acknowledged
//! the lines before it ([`checkpoint`]): a restart continues there, and a line sent twice
//! rewrites the same row.
//!
//! Records are keyed by source IP (so every event of an IP lands in one partition), sent by an
//! idempotent `acks=all` producer with lz4 batches, at `--rate` logs/s through a smooth
//! token-bucket limiter (governor). Every delivery report is counted; on shutdown the producer
//! flushes with a timeout and the run fails if any record was not delivered.

pub mod checkpoint;
mod config;
pub mod formats;
pub mod generate;
pub mod input;
mod metrics_names;

pub use metrics_names::METRICS;
pub mod ops;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use chrono::Utc;
use governor::{Quota, RateLimiter};
use pipeline_runtime::{
    failure::{ProduceFailure, ReportedAt, classify_produce},
    kafka::KafkaArgs,
    observe, shutdown,
};
use rdkafka::{
    ClientContext,
    error::{KafkaError, RDKafkaErrorCode},
    message::{DeliveryResult, Message},
    producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer},
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::{Cli, Command, GeneratorArgs, ProducerArgs, TimestampArg};
pub use generate::{Generator, GeneratorConfig, Kind, Scenario};

/// Counters of one run.
#[derive(Debug, Default)]
pub struct ProducerStats {
    /// Records handed to the client.
    pub sent: AtomicU64,
    /// Records the broker acknowledged.
    pub delivered: AtomicU64,
    /// Records that failed (after the client's own retries).
    pub failed: AtomicU64,
    /// Input lines read (replay).
    pub lines_read: AtomicU64,
    /// Input lines longer than the bound, sent truncated (replay).
    pub lines_truncated: AtomicU64,
    /// Input lines by what `--format` made of them (replay).
    pub lines: formats::LineCounts,
}

/// How often a followed file is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Counts delivery reports. The opaque is the send time in µs since `epoch`, or, for the lines
/// of a file (`acks` set), the line's sequence number in `acks`.
#[derive(Debug, Clone)]
struct Deliveries {
    stats: Arc<ProducerStats>,
    acks: Option<Arc<checkpoint::Acks>>,
    readiness: observe::Readiness,
    epoch: Instant,
    /// Set by the first failure no record can get past (missing topic, no permission, …): the
    /// run stops with it instead of failing every record that follows.
    fatal: Arc<std::sync::Mutex<Option<String>>>,
}

impl Deliveries {
    /// Classifies a failed record: an environment failure stops the run.
    fn failed(&self, error: &KafkaError, topic: &str, at: ReportedAt) {
        if let ProduceFailure::Environment(reason) = classify_produce(error, topic, at) {
            let mut fatal = self
                .fatal
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            fatal.get_or_insert(reason);
        }
    }

    /// The failure that stops the run, if one happened.
    fn fatal(&self) -> Option<String> {
        self.fatal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl ClientContext for Deliveries {
    fn stats(&self, stats: rdkafka::Statistics) {
        let up = pipeline_runtime::kafka::brokers_up(&stats);
        self.readiness.set_kafka(up);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let sent_at_us = match &self.acks {
            None => Some(opaque as u64),
            Some(acks) => match result {
                Ok(_) => acks.delivered(opaque as u64),
                Err((error, message)) => {
                    match classify_produce(error, message.topic(), ReportedAt::Delivery) {
                        // Never acceptable: counted as failed, and no longer holds the position.
                        ProduceFailure::Record(_) => acks.delivered(opaque as u64),
                        _ => acks.failed(opaque as u64, error.to_string()),
                    }
                }
            },
        };
        if let Some(sent_at_us) = sent_at_us {
            let latency = self.epoch.elapsed().as_micros() as f64 - sent_at_us as f64;
            metrics::histogram!(metrics_names::PRODUCE_LATENCY_SECONDS.name)
                .record(latency.max(0.0) / 1e6);
        }
        match result {
            Ok(_) => {
                self.stats.delivered.fetch_add(1, Relaxed);
                metrics::counter!(metrics_names::RECORDS_DELIVERED.name).increment(1);
            }
            Err((error, message)) => {
                self.failed(error, message.topic(), ReportedAt::Delivery);
                metrics::counter!(metrics_names::DELIVERY_FAILURES.name).increment(1);
                let failed = self.stats.failed.fetch_add(1, Relaxed);
                // One line per failure would flood the log during an outage: log the first
                // ones, then every 10,000th; the count is exact in the status line.
                if failed < 10 || failed.is_multiple_of(10_000) {
                    warn!(%error, topic = message.topic(), partition = message.partition(), failed = failed + 1, "delivery failed");
                }
            }
        }
    }
}

/// Summary of a finished run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Records sent.
    pub sent: u64,
    /// Records acknowledged.
    pub delivered: u64,
    /// Records failed.
    pub failed: u64,
    /// Lines read (replay).
    pub lines_read: u64,
    /// Lines sent truncated (replay).
    pub lines_truncated: u64,
    /// Lines `--format` skipped: headers, NODATA, non-flow events (replay).
    pub lines_skipped: u64,
    /// Lines `--format` could not parse, sent as they are (replay).
    pub lines_unparsed: u64,
}

/// Runs until the count, duration or input is exhausted, or SIGINT/SIGTERM. Fails if any record
/// was not delivered.
pub async fn run(args: ProducerArgs) -> anyhow::Result<()> {
    let summary = run_until(args, shutdown::on_signals(), Arc::default()).await?;
    if summary.failed > 0 || summary.delivered < summary.sent {
        bail!(
            "{} of {} records were not delivered ({} failed)",
            summary.sent - summary.delivered,
            summary.sent,
            summary.failed
        );
    }
    Ok(())
}

enum Source {
    Generate(Box<Generator>),
    Replay(Box<input::Lines>),
}

/// Runs until done or `shutdown`, counting into `stats`; returns the summary (does not fail on
/// undelivered records: the caller decides).
pub async fn run_until(
    args: ProducerArgs,
    shutdown: CancellationToken,
    stats: Arc<ProducerStats>,
) -> anyhow::Result<Summary> {
    let readiness = observe::Readiness::default();
    readiness.declare("kafka", "no broker connection yet");
    let server_stop = shutdown.child_token();
    let server = observe::serve(args.metrics_addr, readiness.clone(), server_stop.clone()).await?;
    metrics_names::describe_metrics();
    // TLS, credentials and the ACL of the topic, before anything is sent.
    pipeline_runtime::run_blocking(|| {
        pipeline_runtime::kafka::access::check(&args.kafka, &[&args.topic], &[])
    })?;
    // A file's saved read position, and the lines in flight that move it.
    let mut store = match args.input.as_deref() {
        Some(path) if path != "-" => Some(checkpoint::Store::new(&args.checkpoint_dir, path)?),
        _ => None,
    };
    let resume = match &mut store {
        Some(store) if !args.from_start => store.load()?,
        _ => None,
    };
    let acks = store
        .as_ref()
        .map(|_| Arc::new(checkpoint::Acks::starting_at(resume)));
    let epoch = Instant::now();
    let producer: ThreadedProducer<Deliveries> = args
        .kafka
        .producer_config(
            &[
                KafkaArgs::SOURCE_PRODUCER,
                &[("statistics.interval.ms", "5000")],
            ]
            .concat(),
        )?
        .create_with_context(Deliveries {
            stats: stats.clone(),
            acks: acks.clone(),
            readiness,
            epoch,
            fatal: Arc::default(),
        })
        .context("cannot create the Kafka producer")?;
    if args.input.is_none() && args.format != formats::InputFormat::SeedJson {
        bail!("--format needs --input (the generator writes seed records)");
    }
    let mut decoder = formats::Decoder::new(args.format, &args.netfilter_deny_pattern)?;
    let mut source = match args.input.as_deref() {
        None => Source::Generate(Box::new(Generator::new(args.generator.config()))),
        Some(path) => Source::Replay(Box::new(input::Lines::open(
            path,
            args.follow,
            args.max_line_bytes,
            resume,
            Duration::from_millis(args.fingerprint_wait_ms),
        )?)),
    };
    // Bursts of at most ~10 ms of traffic: smooth, not "everything at the top of the second".
    // Tokens are taken ~1 ms of traffic at a time: one timer wake-up per record costs more CPU
    // than generating it (measured: 10K records/s used 0.4 core).
    let limiter = std::num::NonZeroU32::new(args.rate.min(u32::MAX as u64) as u32).map(|rate| {
        let burst = std::num::NonZeroU32::new((rate.get() / 100).max(1)).expect("non-zero");
        let chunk = std::num::NonZeroU32::new((rate.get() / 1000).max(1)).expect("non-zero");
        (
            RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            chunk,
        )
    });
    let mut tokens = 0u32;
    let started = Instant::now();
    let deadline = args.duration_secs.map(|s| started + Duration::from_secs(s));
    let status_every = Duration::from_secs(args.status_interval_secs.max(1));
    let mut next_status = started + status_every;
    let mut last = (Instant::now(), 0u64);
    let mut buf = Vec::with_capacity(512);
    let save_every = Duration::from_millis(args.checkpoint_interval_ms.max(1));
    let mut next_save = started + save_every;
    info!(topic = %args.topic, rate = args.rate, replay = args.input.is_some(), checkpoint = ?store.as_ref().map(checkpoint::Store::path), "producer started");

    let mut fatal = None;
    let mut stuck = None;
    loop {
        if let Some(reason) = producer.context().fatal() {
            fatal = Some(reason);
            break;
        }
        if let (Some(store), Some(acks)) = (&mut store, &acks) {
            if let Some(reason) = acks.stuck() {
                stuck = Some(reason);
                break;
            }
            if Instant::now() >= next_save {
                next_save = Instant::now() + save_every;
                // A write and two fsyncs: off the runtime's workers.
                pipeline_runtime::run_blocking(|| store.save(acks.acked()))?;
            }
        }
        if shutdown.is_cancelled()
            || args.count.is_some_and(|c| stats.sent.load(Relaxed) >= c)
            || deadline.is_some_and(|d| Instant::now() >= d)
        {
            break;
        }
        if let Some((limiter, chunk)) = &limiter {
            if tokens == 0 {
                tokio::select! {
                    ready = limiter.until_n_ready(*chunk) => {
                        // The chunk never exceeds the burst, so this cannot fail.
                        ready.context("rate limiter chunk larger than its burst")?;
                        tokens = chunk.get();
                    }
                    _ = shutdown.cancelled() => break,
                }
            }
            tokens -= 1;
        }
        let mut line_at = None;
        let key: Option<String> = match &mut source {
            Source::Generate(g) => Some(g.next_into(Utc::now(), &mut buf).0.to_owned()),
            Source::Replay(lines) => {
                let next = pipeline_runtime::run_blocking(|| lines.next_line(&mut buf))
                    .context("read input")?;
                match next {
                    input::Next::End => break,
                    input::Next::Pending => {
                        // Following a file at its end: the token taken stays for the next line.
                        tokens += u32::from(limiter.is_some());
                        tokio::select! {
                            _ = tokio::time::sleep(FOLLOW_POLL) => continue,
                            _ = shutdown.cancelled() => break,
                        }
                    }
                    input::Next::Line { truncated, at } => {
                        line_at = at;
                        stats.lines_read.fetch_add(1, Relaxed);
                        if truncated {
                            let n = stats.lines_truncated.fetch_add(1, Relaxed);
                            metrics::counter!(metrics_names::LINES_TRUNCATED.name).increment(1);
                            if n < 10 || n.is_multiple_of(10_000) {
                                warn!(
                                    max_line_bytes = args.max_line_bytes,
                                    truncated = n + 1,
                                    "input line longer than the bound; sending its first max_line_bytes bytes"
                                );
                            }
                        }
                    }
                }
                if decoder.decode(&mut buf, &stats.lines)? == formats::Decoded::Skip {
                    // No record: the token taken stays for the next line.
                    tokens += u32::from(limiter.is_some());
                    if let (Some(acks), Some(at)) = (&acks, line_at) {
                        acks.skipped(at);
                    }
                    continue;
                }
                source_ip_of(&buf)
            }
        };
        let sent_at_us = epoch.elapsed().as_micros() as u64;
        let (opaque, headers) = match (&acks, line_at) {
            (Some(acks), Some(at)) => (
                acks.sent(at, sent_at_us) as usize,
                Some(ops::identity_headers(
                    &log_schema::SourceRef::file_line(at.file, at.start),
                    None,
                )),
            ),
            _ => (sent_at_us as usize, None),
        };
        send(
            &producer,
            &args.topic,
            key.as_deref(),
            &buf,
            headers,
            opaque,
        )
        .await;
        stats.sent.fetch_add(1, Relaxed);
        metrics::counter!(metrics_names::RECORDS_SENT.name).increment(1);

        if Instant::now() >= next_status {
            next_status += status_every;
            log_status(&stats, started, &mut last);
        }
    }

    let sent = stats.sent.load(Relaxed);
    info!(sent, "flushing outstanding deliveries");
    let flushed = pipeline_runtime::run_blocking(|| {
        producer.flush(Duration::from_secs(args.flush_timeout_secs))
    });
    if let Err(error) = flushed {
        warn!(%error, "flush did not complete");
    }
    if let (Some(store), Some(acks)) = (&mut store, &acks) {
        pipeline_runtime::run_blocking(|| store.save(acks.acked()))?;
        if let Some(at) = acks.acked() {
            info!(file = %at.file, offset = at.offset, checkpoint = %store.path().display(), "read position saved");
        }
    }
    log_status(&stats, started, &mut last);
    let summary = Summary {
        sent,
        delivered: stats.delivered.load(Relaxed),
        failed: stats.failed.load(Relaxed),
        lines_read: stats.lines_read.load(Relaxed),
        lines_truncated: stats.lines_truncated.load(Relaxed),
        lines_skipped: stats.lines.skipped.load(Relaxed),
        lines_unparsed: stats.lines.unparsed.load(Relaxed),
    };
    info!(?summary, "producer stopped");
    server_stop.cancel();
    let _ = server.await;
    if let Some(reason) = fatal.or_else(|| producer.context().fatal()) {
        bail!(
            "cannot produce to `{}` (PRODUCER_TOPIC): {reason}",
            args.topic
        );
    }
    if let Some(reason) = stuck {
        bail!(
            "a line was not delivered ({reason}); the read position is saved before it: run \
             the same command to send it again"
        );
    }
    Ok(summary)
}

/// Hands one record to the client, waiting while its queue is full.
async fn send(
    producer: &ThreadedProducer<Deliveries>,
    topic: &str,
    key: Option<&str>,
    payload: &[u8],
    headers: Option<rdkafka::message::OwnedHeaders>,
    opaque: usize,
) {
    let mut record = BaseRecord::with_opaque_to(topic, opaque).payload(payload);
    if let Some(k) = key {
        record = record.key(k);
    }
    if let Some(h) = headers {
        record = record.headers(h);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                // Backpressure: the broker is slower than we generate. Even on shutdown the
                // record is kept (it is counted as sent and must be delivered or failed).
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err((error, _)) => {
                // Not retriable by us (e.g. message too large): report it as a failure; a
                // failure of the environment also stops the run.
                producer.context().failed(&error, topic, ReportedAt::Send);
                if let Some(acks) = &producer.context().acks {
                    // No delivery report follows: settle the line here, as `delivery` would.
                    match classify_produce(&error, topic, ReportedAt::Send) {
                        ProduceFailure::Record(_) => acks.delivered(opaque as u64),
                        _ => acks.failed(opaque as u64, error.to_string()),
                    };
                }
                warn!(%error, "record rejected by the client");
                producer.context().stats.failed.fetch_add(1, Relaxed);
                metrics::counter!(metrics_names::DELIVERY_FAILURES.name).increment(1);
                return;
            }
        }
    }
}

fn log_status(stats: &ProducerStats, started: Instant, last: &mut (Instant, u64)) {
    let sent = stats.sent.load(Relaxed);
    let rate = (sent - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-3);
    let avg = sent as f64 / started.elapsed().as_secs_f64().max(1e-3);
    *last = (Instant::now(), sent);
    info!(
        sent,
        delivered = stats.delivered.load(Relaxed),
        failed = stats.failed.load(Relaxed),
        lines_skipped = stats.lines.skipped.load(Relaxed),
        lines_unparsed = stats.lines.unparsed.load(Relaxed),
        rate_per_s = format!("{rate:.0}"),
        avg_per_s = format!("{avg:.0}"),
        "status"
    );
}

/// The `source_ip` of a replayed line, used as its key (None when the line has none).
fn source_ip_of(line: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Key<'a> {
        #[serde(borrow)]
        source_ip: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_slice::<Key<'_>>(line)
        .ok()?
        .source_ip
        .map(|c| c.into_owned())
}
