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
//! service crash-looped; a partition whose output keeps failing is reported by `/readyz`. A
//! produce that can never succeed is not retried ([`pipeline_runtime::failure`]): an output
//! Kafka refuses for this record alone becomes an `output_rejected` dead letter (a dead letter
//! too large for the producer is sent again without its payload, flagged); a failure no record
//! can get past (missing topic, no permission, invalid configuration) stops the service with
//! an error naming the topic and its setting, after committing what was finished. A lost
//! delivery report is a failed delivery: the output is sent again. The output producer is idempotent (`KafkaArgs::producer_config`): a
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
use log_schema::{DeadLetter, ErrorKind, Limits, Origin, ValidationError, validate};
use pipeline_runtime::{
    failure::{ProduceFailure, ReportedAt, Stalls, classify_produce},
    kafka::{
        Backpressure, KafkaArgs, PipelineContext, SharedTracker, final_commit, store_next_offset,
    },
    observe, shutdown,
    telemetry::{LogLimiter, TelemetryArgs},
};
use rdkafka::{
    Message,
    consumer::{Consumer, StreamConsumer},
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

/// An output whose delivery report is awaited. It keeps its record (librdkafka copied it, so
/// this is no extra copy) to send it again if the delivery fails or its report is lost.
struct Flight {
    owner: Owner,
    attempt: u32,
    sent_at: Instant,
    out: Option<Out>,
    delivery: DeliveryFuture,
}

/// A settled delivery: the flight's owner, attempt, send time, record and librdkafka's report.
type Landed = (
    Owner,
    u32,
    Instant,
    Out,
    Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
);

impl Future for Flight {
    type Output = Landed;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Landed> {
        let report = std::task::ready!(Pin::new(&mut self.delivery).poll(cx));
        let out = self.out.take().expect("a flight settles once");
        Poll::Ready((self.owner, self.attempt, self.sent_at, out, report))
    }
}

/// An output to send again: its owner, the attempt it will be, the record.
type Retry = (Owner, u32, Out);

/// Where retries come back after their backoff delay.
type Retries = mpsc::UnboundedReceiver<Retry>;

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
    retry_tx: mpsc::UnboundedSender<Retry>,
    backoff: ExponentialBuilder,
    retry_log: LogLimiter,
    /// Partitions whose outputs keep failing (`/readyz`).
    stalls: Stalls,
    /// Set when a produce can never succeed: the loop stops and the service fails with it.
    fatal: Option<anyhow::Error>,
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

    /// The topic setting of an output topic, for error messages.
    fn setting_of(&self, topic: &str) -> &'static str {
        let t = &self.topics;
        [
            (&t.validated, "READER_VALIDATED_TOPIC"),
            (&t.dlq, "READER_DLQ_TOPIC"),
            (&t.stats, "READER_STATS_TOPIC"),
            (&t.alerts, "READER_ALERTS_TOPIC"),
        ]
        .into_iter()
        .find_map(|(name, setting)| (**name == *topic).then_some(setting))
        .unwrap_or("the topic settings")
    }

    /// A produce failed: retried, dead-lettered or fatal, by its class.
    fn on_failed(
        &mut self,
        error: &rdkafka::error::KafkaError,
        out: Out,
        owner: Owner,
        attempt: u32,
        at: ReportedAt,
    ) {
        match classify_produce(error, &out.topic, at) {
            ProduceFailure::Retriable => self.retry(error, out, owner, attempt),
            ProduceFailure::Record(reason) => self.reject(out, owner, reason),
            ProduceFailure::Environment(reason) => self.fail(&out.topic, &reason),
        }
    }

    /// Kafka refused `out` for good. A validated record becomes an `output_rejected` dead letter
    /// (its payload: the validated record, which can be redriven to the validated topic); a
    /// dead letter is sent again without its payload; anything else stops the service.
    fn reject(&mut self, out: Out, owner: Owner, reason: String) {
        metrics::counter!("reader_outputs_rejected_total").increment(1);
        if let Some(suppressed) = self.retry_log.allow() {
            warn!(topic = %out.topic, reason, suppressed, "output refused for good; dead-lettering it");
        }
        let Owner::Record {
            partition,
            offset,
            kind,
        } = owner
        else {
            return self.fail(&out.topic, &reason);
        };
        let dead_letter = match kind {
            None => {
                let origin = Origin {
                    topic: &self.topics.input,
                    partition,
                    offset,
                };
                let error = ValidationError::output_rejected(reason);
                DeadLetter::new(
                    &error,
                    &out.payload,
                    &origin,
                    Utc::now(),
                    self.args.dlq_max_raw_bytes,
                )
            }
            Some(_) => match DeadLetter::from_json(&out.payload) {
                Ok(dl) if !dl.raw.is_empty() => dl.without_raw(),
                _ => return self.fail(&out.topic, &reason),
            },
        };
        let kind = Some(dead_letter.error.kind);
        let out = Out {
            topic: self.topics.dlq.clone(),
            key: out.key,
            payload: dead_letter.to_json(),
        };
        self.send(
            out,
            Owner::Record {
                partition,
                offset,
                kind,
            },
            0,
        );
    }

    /// No output to `topic` can succeed: stop the loop with an error naming the setting.
    fn fail(&mut self, topic: &str, reason: &str) {
        if self.fatal.is_none() {
            let setting = self.setting_of(topic);
            self.fatal = Some(anyhow::anyhow!(
                "cannot produce to `{topic}` ({setting}): {reason}"
            ));
        }
    }

    /// The input partition an output belongs to.
    fn partition_of(&self, owner: Owner) -> Option<i32> {
        match owner {
            Owner::Record { partition, .. } => Some(partition),
            Owner::Window(id) => match self.windows_waiting.get(&id) {
                Some((_, Done::Window { partition, .. })) => Some(*partition),
                _ => None,
            },
        }
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
                out: Some(out),
                delivery,
            }),
            Err((error, _)) => self.on_failed(&error, out, owner, attempt, ReportedAt::Send),
        }
    }

    /// Schedules `out` to be sent again after the backoff delay of its `attempt`; from the
    /// third attempt on, its partition is reported as stalled.
    fn retry(&mut self, error: &dyn std::fmt::Display, out: Out, owner: Owner, attempt: u32) {
        self.stats.retries.fetch_add(1, Relaxed);
        metrics::counter!("reader_produce_retries_total").increment(1);
        if attempt >= 2
            && let Some(partition) = self.partition_of(owner)
        {
            self.stalls.failing(
                format!("{}/{partition}", self.topics.input),
                format!(
                    "produce to `{}` failing ({} attempts): {error}",
                    out.topic,
                    attempt + 1
                ),
            );
        }
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
    fn on_landed(&mut self, (owner, attempt, sent_at, out, report): Landed) {
        match report {
            Ok(Ok(_)) => {
                metrics::histogram!("reader_produce_latency_seconds")
                    .record(sent_at.elapsed().as_secs_f64());
                if !self.stalls.is_clear()
                    && let Some(partition) = self.partition_of(owner)
                {
                    self.stalls
                        .recovered(&format!("{}/{partition}", self.topics.input));
                }
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
            Ok(Err((error, _))) => {
                self.on_failed(&error, out, owner, attempt, ReportedAt::Delivery);
            }
            Err(canceled) => {
                // librdkafka dropped the report (the message was never reported on): its
                // outcome is unknown, so it is a failed delivery, sent again.
                self.retry(
                    &format!("delivery report lost ({canceled})"),
                    out,
                    owner,
                    attempt,
                );
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

impl Reader {
    /// The loop's state with its clients (created, not connected yet), and the receiving end of
    /// its retry channel.
    fn new(
        args: ReaderArgs,
        context: PipelineContext,
        readiness: observe::Readiness,
        stats: Arc<ReaderStats>,
    ) -> anyhow::Result<(Self, Retries)> {
        let limits = Limits {
            max_record_bytes: args.max_record_bytes,
            max_future_skew: Duration::from_secs(args.max_future_skew_secs),
        };
        let producer: FutureProducer = args.kafka.producer(&[])?;
        let tracker = context.tracker.clone();
        let revocations = context.revocations.clone();
        let consumer = args.kafka.consumer(&args.group_id, context, &[])?;
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
        let (retry_tx, retry_rx) = mpsc::unbounded_channel();
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
        let reader = Reader {
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
            stats,
            flights: FuturesUnordered::new(),
            windows_waiting: HashMap::new(),
            next_window_id: 0,
            retry_tx,
            backoff,
            retry_log: LogLimiter::per_second(5),
            stalls: Stalls::new(readiness),
            fatal: None,
        };
        Ok((reader, retry_rx))
    }
}

/// Runs until `shutdown` is cancelled, counting into `stats`.
pub async fn run_until(
    args: ReaderArgs,
    shutdown: CancellationToken,
    stats: Arc<ReaderStats>,
) -> anyhow::Result<()> {
    let readiness = observe::Readiness::default();
    let context = PipelineContext::new(readiness.clone(), stats.assigned_partitions.clone());
    let server_stop = shutdown.child_token();
    let server = observe::serve(args.metrics_addr, readiness.clone(), server_stop.clone()).await?;
    describe_metrics();
    let lags = context.lags.clone();
    let (mut reader, mut retry_rx) = Reader::new(args, context, readiness, stats.clone())?;
    reader
        .consumer
        .subscribe(&[&reader.args.input_topic])
        .context("subscribe")?;
    info!(topic = %reader.args.input_topic, group = %reader.args.group_id, analytics = reader.args.analytics, "stream-reader started");
    let mut status =
        tokio::time::interval(Duration::from_secs(reader.args.status_interval_secs.max(1)));
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last = (Instant::now(), 0u64);

    while reader.fatal.is_none() {
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
    // run rebuilds them. After a fatal failure only the deliveries already under way are
    // awaited: the refused record never finishes, so nothing past it is stored.
    let drain_deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(drain_deadline);
    while reader.flow.in_flight() > 0 && (reader.fatal.is_none() || !reader.flights.is_empty()) {
        tokio::select! {
            Some(landed) = reader.flights.next(), if !reader.flights.is_empty() => reader.on_landed(landed),
            Some((owner, attempt, out)) = retry_rx.recv(), if reader.fatal.is_none() => reader.send(out, owner, attempt),
            _ = &mut drain_deadline => {
                warn!(in_flight = reader.flow.in_flight(), "drain timed out; unacknowledged records will be reprocessed");
                break;
            }
        }
    }
    final_commit(&reader.consumer);
    let producer = &reader.producer;
    let _ = pipeline_runtime::run_blocking(|| producer.flush(Duration::from_secs(10)));
    log_status(&stats, 0, &mut last);
    info!("stream-reader stopped");
    server_stop.cancel();
    let _ = server.await;
    match reader.fatal {
        Some(error) => Err(error),
        None => Ok(()),
    }
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
    describe_counter!(
        "reader_outputs_rejected_total",
        "Outputs Kafka refused for good, dead-lettered instead"
    );
    metrics::counter!("reader_outputs_rejected_total").absolute(0);
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

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::{error::KafkaError, types::RDKafkaErrorCode};

    /// A reader whose clients point at a closed port: created, never connected. Nothing here
    /// needs a broker; what is sent stays in librdkafka's queue.
    fn offline_reader() -> (Reader, Retries, Arc<ReaderStats>) {
        let args = ReaderArgs::try_parse_from([
            "stream-reader",
            "--kafka-broker",
            "127.0.0.1:1",
            "--retry-min-delay-ms",
            "1",
            "--retry-max-delay-ms",
            "10",
        ])
        .expect("args");
        let readiness = observe::Readiness::default();
        let context = PipelineContext::new(readiness.clone(), Arc::default());
        let stats = Arc::new(ReaderStats::default());
        let (reader, retry_rx) =
            Reader::new(args, context, readiness, stats.clone()).expect("reader");
        (reader, retry_rx, stats)
    }

    fn validated_out(reader: &Reader) -> Out {
        Out {
            topic: reader.topics.validated.clone(),
            key: Some(b"10.0.0.1".to_vec()),
            payload: br#"{"validated":true}"#.to_vec(),
        }
    }

    const RECORD: Owner = Owner::Record {
        partition: 2,
        offset: 7,
        kind: None,
    };

    #[tokio::test]
    async fn a_lost_delivery_report_is_a_failed_delivery_sent_again() {
        let (mut reader, mut retry_rx, stats) = offline_reader();
        let (tx, mut rx) = futures::channel::oneshot::channel::<()>();
        drop(tx);
        let canceled = rx.try_recv().expect_err("a dropped sender cancels");
        let out = validated_out(&reader);
        reader.on_landed((RECORD, 0, Instant::now(), out, Err(canceled)));
        let (owner, attempt, out) = tokio::time::timeout(Duration::from_secs(5), retry_rx.recv())
            .await
            .expect("sent again after its backoff")
            .expect("retry channel open");
        assert!(matches!(
            owner,
            Owner::Record {
                partition: 2,
                offset: 7,
                kind: None
            }
        ));
        assert_eq!(attempt, 1);
        assert_eq!(out.payload, br#"{"validated":true}"#);
        assert_eq!(stats.retries.load(Relaxed), 1);
        assert!(reader.fatal.is_none());
    }

    #[tokio::test]
    async fn an_output_refused_for_good_becomes_an_output_rejected_dead_letter() {
        let (mut reader, _retry_rx, _) = offline_reader();
        let out = validated_out(&reader);
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        reader.on_failed(&too_large, out, RECORD, 0, ReportedAt::Send);
        assert!(reader.fatal.is_none());
        assert_eq!(reader.flights.len(), 1, "the dead letter is under way");
        let flight = reader.flights.iter().next().expect("flight");
        assert!(matches!(
            flight.owner,
            Owner::Record {
                partition: 2,
                offset: 7,
                kind: Some(ErrorKind::OutputRejected)
            }
        ));
        let out = flight.out.as_ref().expect("its record");
        assert_eq!(&*out.topic, &*reader.topics.dlq);
        let dl = DeadLetter::from_json(&out.payload).expect("a dead letter");
        assert_eq!(dl.error.kind, ErrorKind::OutputRejected);
        assert_eq!(dl.raw_bytes().expect("raw"), br#"{"validated":true}"#);
        assert_eq!((dl.source.partition, dl.source.offset), (2, 7));
    }

    #[tokio::test]
    async fn a_missing_output_topic_stops_the_reader_naming_the_setting() {
        let (mut reader, mut retry_rx, _) = offline_reader();
        let out = validated_out(&reader);
        let missing = KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopicOrPartition);
        reader.on_failed(&missing, out, RECORD, 0, ReportedAt::Delivery);
        let fatal = format!("{:#}", reader.fatal.as_ref().expect("fatal"));
        assert!(
            fatal.contains("`ip_logs_validated` (READER_VALIDATED_TOPIC)"),
            "{fatal}"
        );
        assert!(fatal.contains("does not exist"), "{fatal}");
        assert!(
            reader.flights.is_empty() && retry_rx.try_recv().is_err(),
            "not retried"
        );
    }
}
