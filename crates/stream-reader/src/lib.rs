//! stream-reader: validates, enriches and routes `ip_logs`.
//!
//! Every input record ends in exactly one of two outputs: the validated, enriched record on
//! `ip_logs_validated` (keyed by source IP), or a dead letter on `ip_logs_dlq` with the reason
//! and the original bytes (UTF-8 as is, otherwise base64; truncated and flagged only if it would
//! not fit). A record that cannot be parsed at all is a dead letter, never an error of the
//! service.
//!
//! **Delivery guarantee: at-least-once.** An input offset is stored only after the broker
//! acknowledged that record's output, and only over contiguous progress per partition
//! ([`OffsetTracker`]); stored offsets are committed every second, on partition revoke, and on
//! graceful shutdown. After a crash, records past the last commit are processed again; their
//! `event_id` is derived from their Kafka coordinates (or their own UUID), so a reprocessed
//! record carries the same id and the writer's upsert keeps Cassandra free of duplicates.
//!
//! Produces are pipelined (many deliveries awaited concurrently, at most `max_in_flight`; past
//! that the partitions are paused). A failed produce is retried with exponential backoff and
//! jitter, without limit: the record is neither skipped nor is the service crash-looped.
//!
//! [`OffsetTracker`]: pipeline_runtime::kafka::OffsetTracker

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use clap::Parser;
use log_schema::{DeadLetter, ErrorKind, Limits, Origin, validate};
use pipeline_runtime::{
    kafka::{Backpressure, KafkaArgs, PipelineContext, complete_and_store, final_commit},
    observe, shutdown,
    telemetry::{LogLimiter, TelemetryArgs},
};
use rdkafka::{
    Message,
    consumer::Consumer,
    producer::{FutureProducer, FutureRecord, Producer},
    util::Timeout,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Command line of the `stream-reader` binary.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct ReaderArgs {
    /// Kafka connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Logging.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    /// Consumer group id.
    #[arg(long, env = "READER_GROUP_ID", default_value = "stream-reader")]
    pub group_id: String,

    /// Topic of raw records.
    #[arg(long, env = "READER_INPUT_TOPIC", default_value = log_schema::topics::RAW)]
    pub input_topic: String,

    /// Topic of validated, enriched records.
    #[arg(long, env = "READER_VALIDATED_TOPIC", default_value = log_schema::topics::VALIDATED)]
    pub validated_topic: String,

    /// Dead-letter topic.
    #[arg(long, env = "READER_DLQ_TOPIC", default_value = log_schema::topics::DLQ)]
    pub dlq_topic: String,

    /// Largest accepted record, in bytes.
    #[arg(long, env = "MAX_RECORD_BYTES", default_value_t = 64 * 1024)]
    pub max_record_bytes: usize,

    /// How far an event timestamp may lie ahead of processing time, in seconds.
    #[arg(long, env = "MAX_FUTURE_SKEW_SECS", default_value_t = 300)]
    pub max_future_skew_secs: u64,

    /// Budget of the raw payload inside a dead letter, in bytes (encoded); larger payloads are
    /// kept as a flagged prefix. Keep it below the DLQ topic's max.message.bytes.
    #[arg(long, env = "READER_DLQ_MAX_RAW_BYTES", default_value_t = log_schema::DEFAULT_MAX_RAW_BYTES)]
    pub dlq_max_raw_bytes: usize,

    /// Most records in flight (consumed, output not yet acknowledged).
    #[arg(long, env = "READER_MAX_IN_FLIGHT", default_value_t = 20_000)]
    pub max_in_flight: usize,

    /// First retry delay of a failed produce, in milliseconds.
    #[arg(long, env = "READER_RETRY_MIN_DELAY_MS", default_value_t = 100)]
    pub retry_min_delay_ms: u64,

    /// Largest retry delay, in milliseconds.
    #[arg(long, env = "READER_RETRY_MAX_DELAY_MS", default_value_t = 10_000)]
    pub retry_max_delay_ms: u64,

    /// Seconds between status lines.
    #[arg(long, env = "READER_STATUS_INTERVAL_SECS", default_value_t = 5)]
    pub status_interval_secs: u64,

    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9102")]
    pub metrics_addr: std::net::SocketAddr,
}

/// Running totals.
#[derive(Debug, Default)]
pub struct ReaderStats {
    /// Records consumed.
    pub consumed: AtomicU64,
    /// Records routed to the validated topic (acknowledged).
    pub valid: AtomicU64,
    /// Records routed to the dead-letter topic (acknowledged).
    pub invalid: AtomicU64,
    /// Produce attempts that failed and were retried.
    pub retries: AtomicU64,
    /// Partitions currently assigned to this instance.
    pub assigned_partitions: Arc<AtomicUsize>,
    invalid_by_kind: [AtomicU64; ErrorKind::ALL.len()],
}

impl ReaderStats {
    /// Dead letters of one kind.
    pub fn invalid_of(&self, kind: ErrorKind) -> u64 {
        ErrorKind::ALL
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.invalid_by_kind[i].load(Relaxed))
    }

    fn count_invalid(&self, kind: ErrorKind) {
        if let Some(i) = ErrorKind::ALL.iter().position(|k| *k == kind) {
            self.invalid_by_kind[i].fetch_add(1, Relaxed);
        }
    }

    fn by_kind_summary(&self) -> String {
        ErrorKind::ALL
            .iter()
            .filter_map(|k| {
                let n = self.invalid_of(*k);
                (n > 0).then(|| format!("{k}={n}"))
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One routed output.
struct Output {
    topic_is_dlq: bool,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    kind: Option<ErrorKind>,
}

/// Runs until SIGINT/SIGTERM.
pub async fn run(args: ReaderArgs) -> anyhow::Result<()> {
    run_until(args, shutdown::on_signals(), Arc::default()).await
}

/// Routes one payload: validate → validated record or dead letter.
fn route(
    args: &ReaderArgs,
    limits: &Limits,
    payload: &[u8],
    key: Option<&[u8]>,
    origin: &Origin<'_>,
) -> Output {
    let now = Utc::now();
    match validate(payload, origin, now, limits) {
        Ok(record) => Output {
            topic_is_dlq: false,
            key: Some(record.source_ip.to_string().into_bytes()),
            payload: record.to_json(),
            kind: None,
        },
        Err(error) => Output {
            topic_is_dlq: true,
            key: key.map(<[u8]>::to_vec),
            payload: DeadLetter::new(&error, payload, origin, now, args.dlq_max_raw_bytes)
                .to_json(),
            kind: Some(error.kind),
        },
    }
}

/// Runs until `shutdown` is cancelled, counting into `stats`.
pub async fn run_until(
    args: ReaderArgs,
    shutdown: CancellationToken,
    stats: Arc<ReaderStats>,
) -> anyhow::Result<()> {
    let limits = Limits {
        max_record_bytes: args.max_record_bytes,
        max_future_skew: Duration::from_secs(args.max_future_skew_secs),
    };
    let producer: FutureProducer = args.kafka.producer(&[])?;
    let readiness = observe::Readiness::default();
    let context = PipelineContext::new(readiness.clone(), stats.assigned_partitions.clone());
    let server_stop = shutdown.child_token();
    let server = observe::serve(args.metrics_addr, readiness, server_stop.clone()).await?;
    describe_metrics();
    let tracker = context.tracker.clone();
    let consumer = args.kafka.consumer(
        &args.group_id,
        context,
        // Large records must reach us to be dead-lettered, not stall the fetcher.
        &[
            ("fetch.max.bytes", "52428800"),
            ("max.partition.fetch.bytes", "16777216"),
        ],
    )?;
    consumer
        .subscribe(&[&args.input_topic])
        .context("subscribe")?;
    info!(topic = %args.input_topic, group = %args.group_id, "stream-reader started");

    let topic = args.input_topic.clone();
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(args.retry_min_delay_ms))
        .with_max_delay(Duration::from_millis(args.retry_max_delay_ms))
        .with_jitter()
        .without_max_times();
    let mut flow = Backpressure::new(args.max_in_flight);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(i32, i64)>();
    let mut status = tokio::time::interval(Duration::from_secs(args.status_interval_secs.max(1)));
    let mut last = (Instant::now(), 0u64);
    let retry_log = Arc::new(LogLimiter::per_second(5));

    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some((partition, offset)) = done_rx.recv() => {
                flow.finished(&consumer);
                metrics::gauge!("reader_in_flight").set(flow.in_flight() as f64);
                complete_and_store(&tracker, &consumer, &topic, partition, offset);
            }
            message = consumer.recv() => {
                let message = match message {
                    Ok(m) => m,
                    Err(error) => {
                        warn!(%error, "consume error");
                        continue;
                    }
                };
                let (partition, offset) = (message.partition(), message.offset());
                let origin = Origin { topic: &topic, partition, offset };
                let output = route(&args, &limits, message.payload().unwrap_or_default(), message.key(), &origin);
                drop(message);
                stats.consumed.fetch_add(1, Relaxed);
                tracker.lock().begin(&topic, partition, offset);
                flow.started(&consumer);
                let out_topic = if output.topic_is_dlq { args.dlq_topic.clone() } else { args.validated_topic.clone() };
                let producer = producer.clone();
                let stats = stats.clone();
                let done = done_tx.clone();
                let retry_log = retry_log.clone();
                metrics::counter!("reader_records_consumed_total").increment(1);
                metrics::gauge!("reader_in_flight").set(flow.in_flight() as f64);
                tokio::spawn(async move {
                    let sent_at = Instant::now();
                    let send = || async {
                        let mut record = FutureRecord::<[u8], [u8]>::to(&out_topic).payload(&output.payload);
                        if let Some(k) = &output.key {
                            record = record.key(k);
                        }
                        producer.send(record, Timeout::Never).await.map_err(|(e, _)| e)
                    };
                    let _ = send
                        .retry(backoff)
                        .notify(|error, delay| {
                            stats.retries.fetch_add(1, Relaxed);
                            metrics::counter!("reader_produce_retries_total").increment(1);
                            if let Some(suppressed) = retry_log.allow() {
                                warn!(%error, topic = %out_topic, retry_in_ms = delay.as_millis() as u64, suppressed, "produce failed, retrying");
                            }
                        })
                        .await;
                    metrics::histogram!("reader_produce_latency_seconds").record(sent_at.elapsed().as_secs_f64());
                    match output.kind {
                        None => {
                            metrics::counter!("reader_records_out_total", "output" => "validated").increment(1);
                            stats.valid.fetch_add(1, Relaxed)
                        }
                        Some(kind) => {
                            metrics::counter!("reader_records_out_total", "output" => "dlq").increment(1);
                            metrics::counter!("reader_invalid_records_total", "kind" => kind.as_str()).increment(1);
                            stats.count_invalid(kind);
                            stats.invalid.fetch_add(1, Relaxed)
                        }
                    };
                    let _ = done.send((partition, offset));
                });
            }
            _ = status.tick() => log_status(&stats, flow.in_flight(), &mut last),
        }
    }

    // Drain: wait for the outstanding deliveries (bounded), then commit what is acknowledged.
    let drain_deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(drain_deadline);
    while flow.in_flight() > 0 {
        tokio::select! {
            Some((partition, offset)) = done_rx.recv() => {
                flow.finished(&consumer);
                complete_and_store(&tracker, &consumer, &topic, partition, offset);
            }
            _ = &mut drain_deadline => {
                warn!(in_flight = flow.in_flight(), "drain timed out; unacknowledged records will be reprocessed");
                break;
            }
        }
    }
    final_commit(&consumer);
    let _ = producer.flush(Duration::from_secs(10));
    log_status(&stats, 0, &mut last);
    info!("stream-reader stopped");
    server_stop.cancel();
    let _ = server.await;
    Ok(())
}

/// Registers every metric with its help text and zero values, so dashboards show all series
/// from the start.
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "reader_records_consumed_total",
        "Records consumed from the input topic"
    );
    describe_counter!(
        "reader_records_out_total",
        "Records acknowledged on an output topic, by output"
    );
    describe_counter!("reader_invalid_records_total", "Dead letters by error kind");
    describe_counter!(
        "reader_produce_retries_total",
        "Output produce attempts that failed and were retried"
    );
    describe_histogram!(
        "reader_produce_latency_seconds",
        metrics::Unit::Seconds,
        "Output produce latency until acknowledged, retries included"
    );
    describe_gauge!(
        "reader_in_flight",
        "Records consumed whose output is not acknowledged yet"
    );
    describe_gauge!(
        "kafka_consumer_lag",
        "High watermark minus consumer position, per partition"
    );
    describe_gauge!(
        "kafka_assigned_partitions",
        "Partitions assigned to this consumer"
    );
    metrics::counter!("reader_records_consumed_total").absolute(0);
    for output in ["validated", "dlq"] {
        metrics::counter!("reader_records_out_total", "output" => output).absolute(0);
    }
    metrics::counter!("reader_produce_retries_total").absolute(0);
    for kind in ErrorKind::ALL {
        if kind != ErrorKind::WriteRejected {
            metrics::counter!("reader_invalid_records_total", "kind" => kind.as_str()).absolute(0);
        }
    }
}

fn log_status(stats: &ReaderStats, in_flight: usize, last: &mut (Instant, u64)) {
    let consumed = stats.consumed.load(Relaxed);
    let rate = (consumed - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-3);
    *last = (Instant::now(), consumed);
    info!(
        consumed,
        valid = stats.valid.load(Relaxed),
        invalid = stats.invalid.load(Relaxed),
        invalid_by_kind = %stats.by_kind_summary(),
        retries = stats.retries.load(Relaxed),
        in_flight,
        records_per_s = format!("{rate:.0}"),
        "status"
    );
}
