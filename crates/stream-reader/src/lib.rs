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
//! Produces are pipelined: each output is handed to librdkafka and its delivery awaited in one
//! `FuturesUnordered` of the consume loop (no task per record), at most `max_in_flight` input
//! records at a time; past that the loop stops taking records. A failed produce is retried with
//! exponential backoff and jitter, without limit: the record is neither skipped nor is the
//! service crash-looped. The output producer is idempotent (`KafkaArgs::producer_config`): a
//! librdkafka retry never duplicates an output; a reprocessed record after a crash still does,
//! with the same deterministic id, upserted downstream.
//!
//! [`OffsetTracker`]: pipeline_runtime::kafka::OffsetTracker

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    task::Poll,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use backon::{BackoffBuilder as _, ExponentialBuilder};
use chrono::Utc;
use clap::Parser;
use futures::{StreamExt as _, stream::FuturesUnordered};
use log_schema::{DeadLetter, ErrorKind, Limits, Origin, validate};
use pipeline_runtime::{
    kafka::{
        Backpressure, KafkaArgs, PipelineContext, SharedTracker, final_commit, store_next_offset,
    },
    observe, shutdown,
    telemetry::{LogLimiter, TelemetryArgs},
};
use rdkafka::{
    Message,
    consumer::{Consumer, StreamConsumer},
    message::OwnedMessage,
    producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer},
};
use tokio::sync::mpsc;
use windows::{Closed, Observed, Thresholds, WindowConfig, Windows};

pub mod windows;
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
    #[arg(long, env = "READER_MAX_IN_FLIGHT", default_value_t = 5_000)]
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

    /// Compute per-IP one-minute window statistics and security alerts.
    #[arg(long, env = "READER_ANALYTICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub analytics: bool,

    /// Topic of per-IP window statistics.
    #[arg(long, env = "READER_STATS_TOPIC", default_value = log_schema::topics::STATS)]
    pub stats_topic: String,

    /// Topic of security alerts.
    #[arg(long, env = "READER_ALERTS_TOPIC", default_value = log_schema::topics::ALERTS)]
    pub alerts_topic: String,

    /// Allowed lateness of events, in seconds: a window closes when the largest event time seen
    /// passes its end by this much.
    #[arg(long, env = "READER_ALLOWED_LATENESS_SECS", default_value_t = 30)]
    pub allowed_lateness_secs: u64,

    /// A partition without records for this long closes its windows by wall clock, in ms.
    #[arg(long, env = "READER_IDLE_FLUSH_MS", default_value_t = 2_000)]
    pub idle_flush_ms: u64,

    /// port_scan alert: distinct destination ports of one source in a window.
    #[arg(long, env = "ALERT_PORT_SCAN_PORTS", default_value_t = 100)]
    pub alert_port_scan_ports: i64,

    /// flood alert: events of one source in a window.
    #[arg(long, env = "ALERT_FLOOD_EVENTS", default_value_t = 5_000)]
    pub alert_flood_events: i64,

    /// deny_burst alert: denied (DENY/DROP/REJECT) events of one source in a window.
    #[arg(long, env = "ALERT_DENY_BURST_DENIED", default_value_t = 100)]
    pub alert_deny_burst_denied: i64,
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
    /// Windows closed and emitted.
    pub windows_closed: AtomicU64,
    /// Alerts emitted.
    pub alerts: AtomicU64,
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

/// One record to produce.
struct Out {
    topic: Arc<str>,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
}

impl Out {
    /// The record librdkafka handed back with a failed delivery, to send again.
    fn from_failed(message: &OwnedMessage) -> Self {
        Self {
            topic: Arc::from(message.topic()),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
        }
    }
}

/// What one output belongs to.
#[derive(Debug, Clone, Copy)]
enum Owner {
    /// An input record: its single output finishes it.
    Record {
        partition: i32,
        offset: i64,
        kind: Option<ErrorKind>,
    },
    /// A closed window (key of `Reader::windows_waiting`): done when all its outputs are.
    Window(u64),
}

/// An output whose delivery report is awaited.
struct Flight {
    owner: Owner,
    attempt: u32,
    sent_at: Instant,
    delivery: DeliveryFuture,
}

/// A settled delivery: the flight's owner, attempt, send time and librdkafka's report.
type Landed = (
    Owner,
    u32,
    Instant,
    Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
);

impl Future for Flight {
    type Output = Landed;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Landed> {
        Pin::new(&mut self.delivery)
            .poll(cx)
            .map(|report| (self.owner, self.attempt, self.sent_at, report))
    }
}

/// What finished once its outputs were acknowledged.
enum Done {
    /// An input record (its validated record or dead letter).
    Record {
        partition: i32,
        offset: i64,
        kind: Option<ErrorKind>,
    },
    /// A closed window (its statistics and alerts).
    Window {
        partition: i32,
        emission: u64,
        alerts: Vec<&'static str>,
    },
}

/// Runs until SIGINT/SIGTERM.
pub async fn run(args: ReaderArgs) -> anyhow::Result<()> {
    run_until(args, shutdown::on_signals(), Arc::default()).await
}

/// Topic names, shared by the per-record tasks without copying.
struct TopicNames {
    input: Arc<str>,
    validated: Arc<str>,
    dlq: Arc<str>,
    stats: Arc<str>,
    alerts: Arc<str>,
}

/// The consume loop's state.
struct Reader {
    topics: TopicNames,
    args: ReaderArgs,
    limits: Limits,
    producer: FutureProducer,
    consumer: StreamConsumer<PipelineContext>,
    tracker: SharedTracker,
    revocations: Arc<AtomicU64>,
    seen_revocations: u64,
    windows: Option<Windows>,
    /// Per partition: next offset after the contiguous acknowledged records.
    acked: HashMap<i32, i64>,
    /// Per partition: the offset last stored for commit.
    stored: HashMap<i32, i64>,
    flow: Backpressure,
    stats: Arc<ReaderStats>,
    /// Outputs handed to librdkafka, awaiting their delivery reports.
    flights: FuturesUnordered<Flight>,
    /// Closed windows with outputs in flight: id → (outputs left, what finishes).
    windows_waiting: HashMap<u64, (usize, Done)>,
    next_window_id: u64,
    /// Failed outputs come back here after their backoff delay.
    retry_tx: mpsc::UnboundedSender<(Owner, u32, Out)>,
    backoff: ExponentialBuilder,
    retry_log: LogLimiter,
}

impl Reader {
    /// Validates one record, counts it into its window, and sends its output.
    fn on_message(&mut self, partition: i32, offset: i64, payload: &[u8], key: Option<&[u8]>) {
        let topic = self.topics.input.clone();
        let origin = Origin {
            topic: &topic,
            partition,
            offset,
        };
        let now = Utc::now();
        let (out, kind, closed) = match validate(payload, &origin, now, &self.limits) {
            Ok(record) => {
                let closed = match self.windows.as_mut() {
                    Some(w) => {
                        let (observed, closed) = w.observe(partition, offset, &record);
                        if observed == Observed::Late {
                            metrics::counter!("late_events_total").increment(1);
                        }
                        closed
                    }
                    None => Vec::new(),
                };
                let out = Out {
                    topic: self.topics.validated.clone(),
                    key: Some(record.source_ip.to_string().into_bytes()),
                    payload: record.to_json(),
                };
                (out, None, closed)
            }
            Err(error) => {
                let dl =
                    DeadLetter::new(&error, payload, &origin, now, self.args.dlq_max_raw_bytes);
                let out = Out {
                    topic: self.topics.dlq.clone(),
                    key: key.map(<[u8]>::to_vec),
                    payload: dl.to_json(),
                };
                (out, Some(error.kind), Vec::new())
            }
        };
        self.stats.consumed.fetch_add(1, Relaxed);
        metrics::counter!("reader_records_consumed_total").increment(1);
        self.tracker.lock().begin(&topic, partition, offset);
        self.flow.started(&self.consumer);
        metrics::gauge!("reader_in_flight").set(self.flow.in_flight() as f64);
        self.send(
            out,
            Owner::Record {
                partition,
                offset,
                kind,
            },
            0,
        );
        self.emit(closed);
    }

    /// Sends the statistics and alerts of closed windows.
    fn emit(&mut self, closed: Vec<Closed>) {
        for c in closed {
            let key = c.stats.source_ip.to_string().into_bytes();
            let mut outs = vec![Out {
                topic: self.topics.stats.clone(),
                key: Some(key.clone()),
                payload: c.stats.to_json(),
            }];
            outs.extend(c.alerts.iter().map(|a| Out {
                topic: self.topics.alerts.clone(),
                key: Some(key.clone()),
                payload: a.to_json(),
            }));
            let alerts = c.alerts.iter().map(|a| a.rule.as_str()).collect();
            let id = self.next_window_id;
            self.next_window_id += 1;
            let done = Done::Window {
                partition: c.partition,
                emission: c.emission,
                alerts,
            };
            self.windows_waiting.insert(id, (outs.len(), done));
            for out in outs {
                self.send(out, Owner::Window(id), 0);
            }
        }
        if let Some(w) = &self.windows {
            metrics::gauge!("reader_windows_open").set(w.open_windows() as f64);
        }
    }

    /// Hands one output to librdkafka; its delivery report arrives through `flights`. A record
    /// librdkafka cannot take now (queue full) is retried like a failed delivery.
    fn send(&mut self, out: Out, owner: Owner, attempt: u32) {
        let mut record = FutureRecord::<[u8], [u8]>::to(&out.topic).payload(&out.payload);
        if let Some(k) = &out.key {
            record = record.key(k);
        }
        match self.producer.send_result(record) {
            Ok(delivery) => self.flights.push(Flight {
                owner,
                attempt,
                sent_at: Instant::now(),
                delivery,
            }),
            Err((error, _)) => self.retry(error, out, owner, attempt),
        }
    }

    /// Schedules `out` to be sent again after the backoff delay of its `attempt`.
    fn retry(&mut self, error: rdkafka::error::KafkaError, out: Out, owner: Owner, attempt: u32) {
        self.stats.retries.fetch_add(1, Relaxed);
        metrics::counter!("reader_produce_retries_total").increment(1);
        let delay = self
            .backoff
            .build()
            .nth(attempt as usize)
            .unwrap_or(Duration::from_millis(self.args.retry_max_delay_ms));
        if let Some(suppressed) = self.retry_log.allow() {
            warn!(%error, topic = %out.topic, attempt, retry_in_ms = delay.as_millis() as u64, suppressed, "produce failed, retrying");
        }
        let tx = self.retry_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send((owner, attempt.saturating_add(1), out));
        });
    }

    /// A delivery report: finishes its owner when acknowledged, otherwise retries the record.
    fn on_landed(&mut self, (owner, attempt, sent_at, report): Landed) {
        match report {
            Ok(Ok(_)) => {
                metrics::histogram!("reader_produce_latency_seconds")
                    .record(sent_at.elapsed().as_secs_f64());
                match owner {
                    Owner::Record {
                        partition,
                        offset,
                        kind,
                    } => self.on_done(Done::Record {
                        partition,
                        offset,
                        kind,
                    }),
                    Owner::Window(id) => {
                        let finished =
                            self.windows_waiting.get_mut(&id).is_some_and(|(left, _)| {
                                *left -= 1;
                                *left == 0
                            });
                        if finished && let Some((_, done)) = self.windows_waiting.remove(&id) {
                            self.on_done(done);
                        }
                    }
                }
            }
            Ok(Err((error, message))) => {
                self.retry(error, Out::from_failed(&message), owner, attempt);
            }
            Err(_canceled) => {
                // Only when the producer is torn down; the input is not stored, so it is
                // processed again after a restart.
                warn!("delivery report lost; the record will be reprocessed after a restart");
            }
        }
    }

    /// Bookkeeping once outputs are acknowledged; stores the partition's new commit offset:
    /// contiguous acknowledged progress, held back by unfinished windows.
    fn on_done(&mut self, done: Done) {
        let partition = match done {
            Done::Record {
                partition,
                offset,
                kind,
            } => {
                self.flow.finished(&self.consumer);
                metrics::gauge!("reader_in_flight").set(self.flow.in_flight() as f64);
                match kind {
                    None => {
                        metrics::counter!("reader_records_out_total", "output" => "validated")
                            .increment(1);
                        self.stats.valid.fetch_add(1, Relaxed);
                    }
                    Some(kind) => {
                        metrics::counter!("reader_records_out_total", "output" => "dlq")
                            .increment(1);
                        metrics::counter!("reader_invalid_records_total", "kind" => kind.as_str())
                            .increment(1);
                        self.stats.count_invalid(kind);
                        self.stats.invalid.fetch_add(1, Relaxed);
                    }
                }
                let next = self
                    .tracker
                    .lock()
                    .complete(&self.args.input_topic, partition, offset);
                if let Some(next) = next {
                    self.acked.insert(partition, next);
                }
                partition
            }
            Done::Window {
                partition,
                emission,
                alerts,
            } => {
                metrics::counter!("reader_windows_closed_total").increment(1);
                for rule in alerts {
                    metrics::counter!("reader_alerts_total", "rule" => rule).increment(1);
                    self.stats.alerts.fetch_add(1, Relaxed);
                }
                self.stats.windows_closed.fetch_add(1, Relaxed);
                if let Some(w) = self.windows.as_mut() {
                    w.emitted(partition, emission);
                }
                partition
            }
        };
        let Some(&acked) = self.acked.get(&partition) else {
            return;
        };
        let hold = self
            .windows
            .as_ref()
            .and_then(|w| w.min_offset(partition))
            .unwrap_or(i64::MAX);
        let target = acked.min(hold);
        if self.stored.get(&partition).is_none_or(|s| target > *s) {
            if let Err(error) =
                store_next_offset(&self.consumer, &self.args.input_topic, partition, target)
            {
                warn!(%error, partition, offset = target, "cannot store offset");
            } else {
                self.stored.insert(partition, target);
            }
        }
    }

    /// After a revoke every partition restarts from its committed offset: window state and
    /// progress bookkeeping start over.
    fn check_revocations(&mut self) {
        let now = self.revocations.load(Relaxed);
        if now != self.seen_revocations {
            self.seen_revocations = now;
            if let Some(w) = self.windows.as_mut() {
                w.clear();
            }
            self.acked.clear();
            self.stored.clear();
        }
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
    let revocations = context.revocations.clone();
    let lags = context.lags.clone();
    let consumer = args.kafka.consumer(&args.group_id, context, &[])?;
    consumer
        .subscribe(&[&args.input_topic])
        .context("subscribe")?;
    info!(topic = %args.input_topic, group = %args.group_id, analytics = args.analytics, "stream-reader started");

    let windows = args.analytics.then(|| {
        Windows::new(WindowConfig {
            lateness: chrono::TimeDelta::seconds(args.allowed_lateness_secs as i64),
            idle: Duration::from_millis(args.idle_flush_ms),
            thresholds: Thresholds {
                port_scan: args.alert_port_scan_ports,
                flood: args.alert_flood_events,
                deny_burst: args.alert_deny_burst_denied,
            },
        })
    });
    let (retry_tx, mut retry_rx) = mpsc::unbounded_channel::<(Owner, u32, Out)>();
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(args.retry_min_delay_ms))
        .with_max_delay(Duration::from_millis(args.retry_max_delay_ms))
        .with_jitter()
        .without_max_times();
    let topics = TopicNames {
        input: Arc::from(args.input_topic.as_str()),
        validated: Arc::from(args.validated_topic.as_str()),
        dlq: Arc::from(args.dlq_topic.as_str()),
        stats: Arc::from(args.stats_topic.as_str()),
        alerts: Arc::from(args.alerts_topic.as_str()),
    };
    let mut reader = Reader {
        topics,
        flow: Backpressure::new(args.max_in_flight),
        args,
        limits,
        producer,
        consumer,
        tracker,
        revocations,
        seen_revocations: 0,
        windows,
        acked: HashMap::new(),
        stored: HashMap::new(),
        stats: stats.clone(),
        flights: FuturesUnordered::new(),
        windows_waiting: HashMap::new(),
        next_window_id: 0,
        retry_tx,
        backoff,
        retry_log: LogLimiter::per_second(5),
    };
    let mut status =
        tokio::time::interval(Duration::from_secs(reader.args.status_interval_secs.max(1)));
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last = (Instant::now(), 0u64);

    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(landed) = reader.flights.next(), if !reader.flights.is_empty() => reader.on_landed(landed),
            Some((owner, attempt, out)) = retry_rx.recv() => reader.send(out, owner, attempt),
            message = reader.consumer.recv(), if reader.flow.accepting() => {
                let message = match message {
                    Ok(m) => m,
                    Err(error) => {
                        warn!(%error, "consume error");
                        continue;
                    }
                };
                let (partition, offset) = (message.partition(), message.offset());
                let payload = message.payload().unwrap_or_default().to_vec();
                let key = message.key().map(<[u8]>::to_vec);
                drop(message);
                reader.check_revocations();
                reader.on_message(partition, offset, &payload, key.as_deref());
            }
            _ = tick.tick() => {
                reader.flow.tick(&reader.consumer);
                reader.check_revocations();
                let lags = lags.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                let input = reader.args.input_topic.clone();
                let caught_up = |p: i32, last: Instant| {
                    lags.get(&(input.clone(), p)).is_some_and(|(lag, at)| *lag == 0 && *at > last)
                };
                let closed = reader.windows.as_mut().map(|w| w.tick(Utc::now(), caught_up)).unwrap_or_default();
                reader.emit(closed);
            }
            _ = status.tick() => log_status(&stats, reader.flow.in_flight(), &mut last),
        }
    }

    // Drain: wait for outstanding deliveries (bounded), then commit what is acknowledged.
    // Windows still open are not emitted: their first offsets hold the commit, so the next
    // run rebuilds them.
    let drain_deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(drain_deadline);
    while reader.flow.in_flight() > 0 {
        tokio::select! {
            Some(landed) = reader.flights.next(), if !reader.flights.is_empty() => reader.on_landed(landed),
            Some((owner, attempt, out)) = retry_rx.recv() => reader.send(out, owner, attempt),
            _ = &mut drain_deadline => {
                warn!(in_flight = reader.flow.in_flight(), "drain timed out; unacknowledged records will be reprocessed");
                break;
            }
        }
    }
    final_commit(&reader.consumer);
    let _ = reader.producer.flush(Duration::from_secs(10));
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
    describe_counter!(
        "late_events_total",
        "Valid events whose window had already closed (not counted)"
    );
    describe_counter!(
        "reader_windows_closed_total",
        "Per-IP windows closed and emitted to ip_stats"
    );
    describe_counter!(
        "reader_alerts_total",
        "Alerts emitted to ip_alerts, by rule"
    );
    describe_gauge!("reader_windows_open", "Per-IP windows currently open");
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
    metrics::counter!("late_events_total").absolute(0);
    metrics::counter!("reader_windows_closed_total").absolute(0);
    for rule in log_schema::AlertRule::ALL {
        metrics::counter!("reader_alerts_total", "rule" => rule.as_str()).absolute(0);
    }
    metrics::gauge!("reader_windows_open").set(0.0);
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
