//! The consume → write loop.
//!
//! **Delivery guarantee: effectively exactly-once.** Every record of `ip_logs_validated` becomes
//! exactly one row of `access_logs`: the row key contains the record's deterministic `event_id`,
//! so a redelivered record rewrites its own row instead of adding one. An input offset is stored
//! (and later committed) only when that record and every earlier record of its partition are
//! written — contiguous progress per partition, tracked by [`OffsetTracker`] — so no crash, kill
//! or outage can commit past an unwritten row. The committed consumer offsets are the only
//! checkpoint; there is no local state to lose.
//!
//! Retryable write failures (timeouts, unavailable, overload, lost connections) are retried with
//! exponential backoff and jitter, without limit by default; while writes are stuck, at most
//! `max_in_flight` records are outstanding and the assigned partitions are paused
//! (backpressure); a partition whose writes keep failing is reported by `/readyz`. A row the
//! database rejects as invalid and a record that is not a validated record at all go to the
//! dead-letter topic (`write_rejected` / the decode error kind), and the writer continues. A bad
//! record never stops the service; a failure no record can get past does, with an error naming
//! what to fix and nothing committed past it: Cassandra refusing this user (`Unauthorized`,
//! authentication), or a dead-letter produce that can never succeed
//! ([`pipeline_runtime::failure`]: missing topic, no permission, invalid configuration).
//!
//! The writer reads only committed records (`isolation.level=read_committed`): outputs of an
//! aborted stream-reader transaction never reach Cassandra. With `WRITER_DELIVERY=exactly-once`
//! its own dead letters are committed with its offsets in Kafka transactions
//! ([`crate::committer`]), so they too appear exactly once.
//!
//! [`OffsetTracker`]: pipeline_runtime::kafka::OffsetTracker

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use backon::Retryable;
use chrono::{DateTime, Utc};
use futures::{FutureExt as _, StreamExt as _, future::BoxFuture, stream::FuturesUnordered};
use log_schema::{
    Alert, DEFAULT_MAX_RAW_BYTES, DeadLetter, Origin, ValidatedRecord, ValidationError, WindowStats,
};
use pipeline_runtime::{
    failure::{ProduceFailure, ReportedAt, Stalls, classify_produce},
    kafka::{Backpressure, OffsetTracker, PipelineContext, complete_and_store, final_commit},
    observe, shutdown,
    telemetry::LogLimiter,
    transaction::{Delivery, Rollback, Transaction, TxnError},
};
use rdkafka::{
    Message,
    consumer::Consumer,
    producer::{FutureProducer, FutureRecord, Producer},
};
use scylla::{
    client::session::Session,
    errors::{DbError, ExecutionError, RequestAttemptError},
    serialize::row::SerializeRow,
    statement::prepared::PreparedStatement,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::{
    DEAD_LETTERS, E2E_LATENCY_SECONDS, IN_FLIGHT, RECORDS_CONSUMED, ROWS_WRITTEN, WRITE_ERRORS,
    WRITE_LATENCY_SECONDS, WRITE_RETRIES,
};
use crate::{
    batch::{self, Pending},
    committer::{Committer, Deferred},
    metrics::{describe_metrics, error_kind},
    rows::Statements,
};
pub use crate::{
    config::WriterArgs,
    rows::{AccessLogRow, access_log_row, insert_cql},
};

/// Most records taken from the consumer's buffer at once, to be grouped into batches.
const GATHER_MAX: usize = 256;

/// Running totals, shared by the write tasks and the status line.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Records consumed.
    pub consumed: AtomicU64,
    /// Rows written.
    pub written: AtomicU64,
    /// Of those, rows written in single-partition batches of more than one row.
    pub batched: AtomicU64,
    /// Write attempts that failed and were retried.
    pub retries: AtomicU64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Partitions currently assigned to this instance.
    pub assigned_partitions: Arc<std::sync::atomic::AtomicUsize>,
    latencies: std::sync::Mutex<Option<hdrhistogram::Histogram<u64>>>,
}

impl WriterStats {
    pub(crate) fn record_latency(&self, d: Duration) {
        let mut h = self
            .latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let h = h.get_or_insert_with(|| {
            hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid bounds")
        });
        let _ = h.record(d.as_micros().clamp(1, 60_000_000) as u64);
    }

    /// p50 and p99 write latency in ms since the last call, and resets.
    fn take_percentiles(&self) -> (f64, f64) {
        let mut h = self
            .latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match h.as_mut() {
            Some(h) if !h.is_empty() => {
                let r = (
                    h.value_at_quantile(0.5) as f64 / 1000.0,
                    h.value_at_quantile(0.99) as f64 / 1000.0,
                );
                h.reset();
                r
            }
            _ => (0.0, 0.0),
        }
    }
}

/// What became of one record.
pub(crate) enum Outcome {
    Written,
    /// Dead-lettered: produced already, or (exactly-once) waiting for its transaction.
    DeadLettered(Option<Deferred>),
}

pub(crate) struct Shared {
    pub(crate) session: Session,
    pub(crate) statements: Statements,
    producer: FutureProducer,
    args: WriterArgs,
    pub(crate) stats: Arc<WriterStats>,
    logs: LogLimiter,
    /// Partitions whose writes keep failing (`/readyz`).
    stalls: std::sync::Mutex<Stalls>,
}

impl Shared {
    fn stalls(&self) -> std::sync::MutexGuard<'_, Stalls> {
        self.stalls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Readiness of Cassandra, independent of traffic: a cheap read every 2 s.
async fn probe_cassandra(
    shared: Arc<Shared>,
    probe: PreparedStatement,
    readiness: observe::Readiness,
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {
                let state = match tokio::time::timeout(Duration::from_secs(2), shared.session.execute_unpaged(&probe, &[])).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("probe failed: {e}")),
                    Err(_) => Err("probe timed out".to_owned()),
                };
                readiness.set("cassandra", state);
            }
        }
    }
}

/// Runs the writer until SIGINT/SIGTERM.
pub async fn run(args: WriterArgs) -> anyhow::Result<()> {
    run_until(args, shutdown::on_signals(), Arc::default()).await
}

/// Runs the writer until `shutdown` is cancelled, counting into `stats` (for tests and tools).
pub async fn run_until(
    args: WriterArgs,
    shutdown: CancellationToken,
    stats: Arc<WriterStats>,
) -> anyhow::Result<()> {
    let readiness = observe::Readiness::default();
    let context = PipelineContext::new(readiness.clone(), stats.assigned_partitions.clone());
    readiness.declare("cassandra", "not connected yet");
    readiness.declare("schema", "not verified yet");
    let server_stop = shutdown.child_token();
    let server = observe::serve(args.metrics_addr, readiness.clone(), server_stop.clone()).await?;
    describe_metrics();
    let session = args.cassandra.connect().await?;
    readiness.set("cassandra", Ok(()));
    // Unavailable replicas or an overloaded node say nothing about the schema: wait for them
    // as writes do (readiness names the reason meanwhile); a missing schema fails at once.
    (|| crate::migrate::verify(&session, &args.cassandra.keyspace))
        .retry(args.backoff())
        .when(crate::migrate::is_transient)
        .notify(|error, delay| {
            readiness.set("schema", Err(format!("{error:#}")));
            warn!(
                error = format!("{error:#}"),
                ?delay,
                "cannot verify the schema yet, retrying"
            );
        })
        .await?;
    readiness.set("schema", Ok(()));
    let statements = Statements::prepare(&session, &args.cassandra.keyspace).await?;
    let (producer, mut committer, context, extra) = match args.delivery {
        Delivery::AtLeastOnce => (args.kafka.producer(&[])?, None, context, READ_COMMITTED),
        Delivery::ExactlyOnce => {
            let transaction = Transaction::create(
                &args.kafka,
                &pipeline_runtime::transaction::transactional_id(
                    &args.transactional_id,
                    &args.group_id,
                    "writer",
                ),
                Duration::from_millis(args.transaction_timeout_ms),
            )?;
            let context = context
                .with_partition_changes()
                .with_transaction(transaction.clone());
            let changes = context.changes.clone().unwrap_or_default();
            (
                transaction.producer().clone(),
                Some(Committer::new(transaction, changes)),
                context,
                TRANSACTIONAL,
            )
        }
    };
    let tracker = context.tracker.clone();
    let consumer = args.kafka.consumer(&args.group_id, context, extra)?;
    consumer
        .subscribe(&[&args.input_topic, &args.stats_topic, &args.alerts_topic])
        .context("subscribe")?;
    info!(
        topics = ?[&args.input_topic, &args.stats_topic, &args.alerts_topic],
        group = %args.group_id,
        "cassandra-writer started"
    );

    let mut flow = Backpressure::new(args.max_in_flight);
    let status_every = Duration::from_secs(args.status_interval_secs.max(1));
    let probe = session
        .prepare(format!(
            "SELECT version FROM {}.schema_migrations LIMIT 1",
            args.cassandra.keyspace
        ))
        .await
        .context("prepare the health probe")?;
    let shared = Arc::new(Shared {
        session,
        statements,
        producer,
        args,
        stats: stats.clone(),
        logs: LogLimiter::per_second(5),
        stalls: std::sync::Mutex::new(Stalls::new(readiness.clone())),
    });
    tokio::spawn(probe_cassandra(
        shared.clone(),
        probe,
        readiness,
        server_stop.clone(),
    ));
    // Records being written, polled by this loop (no task per record: fewer wake-ups).
    let mut writes: FuturesUnordered<BoxFuture<'static, Vec<Written>>> = FuturesUnordered::new();
    let mut topics: std::collections::HashMap<String, Arc<str>> = Default::default();
    let mut status = tokio::time::interval(status_every);
    let mut pause_tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = (Instant::now(), 0u64);
    let mut fatal: Option<anyhow::Error> = None;
    let mut commit_tick = tokio::time::interval(Duration::from_millis(
        shared.args.transaction_interval_ms.max(1),
    ));
    let input_topics = [
        shared.args.input_topic.clone(),
        shared.args.stats_topic.clone(),
        shared.args.alerts_topic.clone(),
    ];

    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(group) = writes.next(), if !writes.is_empty() => {
                for (topic, partition, offset, epoch, outcome) in group {
                    flow.finished(&consumer);
                    match outcome {
                        Err(error) if fatal.is_none() => {
                            fatal = Some(error.context(format!("record {topic}/{partition}/{offset}")));
                        }
                        Err(_) => {}
                        Ok(outcome) => completed(&tracker, &consumer, committer.as_mut(), (topic, partition, offset), epoch, outcome),
                    }
                }
                metrics::gauge!(IN_FLIGHT).set(flow.in_flight() as f64);
                if fatal.is_some() {
                    break;
                }
            }
            _ = commit_tick.tick(), if committer.is_some() => {
                if let Some(c) = &mut committer
                    && let Err(error) = commit(c, &consumer, &shared)
                {
                    match error {
                        TxnError::Aborted(error) => {
                            warn!(%error, "transaction aborted; rolling back to the committed offsets");
                            writes = FuturesUnordered::new();
                            *tracker.lock() = OffsetTracker::default();
                            flow.reset(&consumer);
                            c.reset();
                            for topic in &input_topics {
                                if let Err(error) = Rollback::rewind(&consumer, topic, Duration::from_secs(30)) {
                                    fatal = Some(anyhow::anyhow!("cannot return to the committed offsets of `{topic}`: {error}"));
                                }
                            }
                        }
                        TxnError::Fenced(error) => {
                            fatal = Some(anyhow::anyhow!("transactional producer fenced (another instance with the same WRITER_TRANSACTIONAL_ID, or the transaction outlived WRITER_TRANSACTION_TIMEOUT_MS): {error}"));
                        }
                    }
                    if fatal.is_some() {
                        break;
                    }
                }
            }
            message = consumer.recv(), if flow.accepting() => {
                let mut message = match message {
                    Ok(m) => Some(m),
                    Err(error) => {
                        warn!(%error, "consume error");
                        continue;
                    }
                };
                let epoch = committer.as_mut().map_or(0, |c| {
                    c.take_changes();
                    c.epoch()
                });
                // This record and those the consumer already has buffered (no waiting).
                let mut ready = Vec::new();
                while let Some(m) = message.take() {
                    let topic = match topics.get(m.topic()) {
                        Some(t) => t.clone(),
                        None => {
                            let t: Arc<str> = Arc::from(m.topic());
                            topics.insert(m.topic().to_owned(), t.clone());
                            t
                        }
                    };
                    tracker.lock().begin(&topic, m.partition(), m.offset());
                    flow.started(&consumer);
                    ready.push(Pending {
                        topic,
                        partition: m.partition(),
                        offset: m.offset(),
                        epoch,
                        payload: m.payload().unwrap_or_default().to_vec(),
                        key: m.key().map(<[u8]>::to_vec),
                    });
                    if ready.len() < GATHER_MAX && flow.accepting() {
                        message = match consumer.recv().now_or_never() {
                            Some(Ok(m)) => Some(m),
                            Some(Err(error)) => {
                                warn!(%error, "consume error");
                                None
                            }
                            None => None,
                        };
                    }
                }
                stats.consumed.fetch_add(ready.len() as u64, Relaxed);
                metrics::counter!(RECORDS_CONSUMED).increment(ready.len() as u64);
                metrics::gauge!(IN_FLIGHT).set(flow.in_flight() as f64);
                for group in batch::group(ready, &shared.args.input_topic, shared.args.batch_max_rows) {
                    let shared = shared.clone();
                    writes.push(Box::pin(async move { batch::write(&shared, group).await }));
                }
            }
            _ = pause_tick.tick() => flow.tick(&consumer),
            _ = status.tick() => {
                let written = stats.written.load(Relaxed);
                let elapsed = last.0.elapsed().as_secs_f64().max(1e-3);
                let rate = (written - last.1) as f64 / elapsed;
                last = (Instant::now(), written);
                let (p50, p99) = stats.take_percentiles();
                info!(
                    consumed = stats.consumed.load(Relaxed),
                    written,
                    retries = stats.retries.load(Relaxed),
                    dead_lettered = stats.dead_lettered.load(Relaxed),
                    in_flight = flow.in_flight(),
                    rows_per_s = format!("{rate:.0}"),
                    write_p50_ms = format!("{p50:.2}"),
                    write_p99_ms = format!("{p99:.2}"),
                    "status"
                );
            }
        }
    }

    // Drain what is in flight (bounded by the retry policy), then commit what is written.
    let drain_deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(drain_deadline);
    while flow.in_flight() > 0 && fatal.is_none() {
        tokio::select! {
            Some(group) = writes.next(), if !writes.is_empty() => {
                for (topic, partition, offset, epoch, outcome) in group {
                    flow.finished(&consumer);
                    if let Ok(outcome) = outcome {
                        completed(&tracker, &consumer, committer.as_mut(), (topic, partition, offset), epoch, outcome);
                    }
                }
            }
            _ = &mut drain_deadline => {
                warn!(in_flight = flow.in_flight(), "drain timed out; uncommitted records will be redelivered");
                break;
            }
        }
    }
    match &mut committer {
        Some(c) if fatal.is_none() => {
            if let Err(error) = commit(c, &consumer, &shared) {
                warn!(%error, "final transaction failed; uncommitted records will be redelivered");
            }
        }
        Some(c) => {
            if let Err(error) = c.abort() {
                warn!(%error, "abort on shutdown failed");
            }
        }
        None => final_commit(&consumer),
    }
    let _ = pipeline_runtime::run_blocking(|| shared.producer.flush(Duration::from_secs(10)));
    info!(
        written = stats.written.load(Relaxed),
        dead_lettered = stats.dead_lettered.load(Relaxed),
        "cassandra-writer stopped"
    );
    server_stop.cancel();
    let _ = server.await;
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A record's coordinates, the epoch its write started in, and what became of it.
pub(crate) type Written = (Arc<str>, i32, i64, u64, anyhow::Result<Outcome>);

/// Consumer settings: only committed records are read, so an aborted stream-reader
/// transaction never reaches Cassandra.
const READ_COMMITTED: &[(&str, &str)] = &[("isolation.level", "read_committed")];

/// Consumer settings in exactly-once mode: offsets are committed by the transactions only.
const TRANSACTIONAL: &[(&str, &str)] = &[
    ("isolation.level", "read_committed"),
    ("enable.auto.commit", "false"),
];

/// A record's write finished: its offset is stored (at-least-once) or handed with its dead
/// letter to the committer (exactly-once; ignored when it started before a revocation).
fn completed<C: rdkafka::consumer::ConsumerContext>(
    tracker: &pipeline_runtime::kafka::SharedTracker,
    consumer: &rdkafka::consumer::StreamConsumer<C>,
    committer: Option<&mut Committer>,
    (topic, partition, offset): (Arc<str>, i32, i64),
    epoch: u64,
    outcome: Outcome,
) {
    match committer {
        None => complete_and_store(tracker, consumer, &topic, partition, offset),
        Some(c) if c.epoch() == epoch => {
            let next = tracker.lock().complete(&topic, partition, offset);
            let deferred = match outcome {
                Outcome::DeadLettered(d) => d,
                Outcome::Written => None,
            };
            c.completed(epoch, (topic, partition, offset), next, deferred);
        }
        Some(_) => {}
    }
}

/// One exactly-once commit; counts the dead letters it committed.
fn commit<C: rdkafka::consumer::ConsumerContext>(
    committer: &mut Committer,
    consumer: &rdkafka::consumer::StreamConsumer<C>,
    shared: &Shared,
) -> Result<(), TxnError> {
    for kind in committer.commit(consumer, &shared.args.dlq_topic)? {
        shared.stats.dead_lettered.fetch_add(1, Relaxed);
        metrics::counter!(DEAD_LETTERS, "kind" => kind.as_str()).increment(1);
    }
    Ok(())
}

/// A decoded record of one of the writer's input topics.
enum Input {
    Log(Box<ValidatedRecord>),
    Stats(Box<WindowStats>),
    Alert(Box<Alert>),
}

fn decode(args: &WriterArgs, topic: &str, payload: &[u8]) -> Result<Input, ValidationError> {
    if topic == args.stats_topic {
        WindowStats::from_json(payload).map(|s| Input::Stats(Box::new(s)))
    } else if topic == args.alerts_topic {
        Alert::from_json(payload).map(|a| Input::Alert(Box::new(a)))
    } else {
        ValidatedRecord::from_json(payload).map(|r| Input::Log(Box::new(r)))
    }
}

pub(crate) async fn handle(
    shared: &Shared,
    payload: &[u8],
    key: Option<&[u8]>,
    origin: &Origin<'_>,
) -> anyhow::Result<Outcome> {
    let input = match decode(&shared.args, origin.topic, payload) {
        Ok(input) => input,
        Err(error) => {
            if let Some(suppressed) = shared.logs.allow() {
                warn!(%error, topic = origin.topic, partition = origin.partition, offset = origin.offset, suppressed, "cannot decode record");
            }
            let deferred = dead_letter(shared, &error, payload, key, origin).await?;
            return Ok(Outcome::DeadLettered(deferred));
        }
    };
    // Named (`topic/partition`) only when its writes stall: no allocation per record.
    let source = (origin.topic, origin.partition);
    let result = match &input {
        Input::Log(r) => write_log(shared, r, source).await,
        Input::Stats(w) => {
            let day = w.window_start.date_naive();
            let by_ip = (
                w.source_ip.to_string(),
                day,
                w.window_start,
                w.window_end,
                w.events,
                w.bytes_sent,
                w.bytes_received,
                w.distinct_ports,
                w.distinct_destinations,
                w.denied,
                w.first_seen,
                w.last_seen,
                w.distinct_capped,
                w.sources_capped,
            );
            let total = w.bytes_sent.saturating_add(w.bytes_received);
            let top = (
                w.window_start,
                w.events,
                w.source_ip.to_string(),
                total,
                w.denied,
                w.distinct_ports,
                w.sources_capped,
            );
            let geo = w.source_geo.clone().unwrap_or_default();
            let asn = geo.asn.map(i64::from);
            let by_country = geo.country.as_deref().map(|country| {
                (
                    w.window_start,
                    country,
                    w.events,
                    w.source_ip.to_string(),
                    total,
                    w.denied,
                    asn,
                    geo.as_org.as_deref(),
                )
            });
            let by_asn = asn.map(|asn| {
                (
                    w.window_start,
                    asn,
                    w.events,
                    w.source_ip.to_string(),
                    total,
                    w.denied,
                    geo.as_org.as_deref(),
                    geo.country.as_deref(),
                )
            });
            let (a, b, c, d) = tokio::join!(
                execute(
                    shared,
                    &shared.statements.stats_by_ip,
                    &by_ip,
                    ("ip_stats_by_ip", source)
                ),
                execute(
                    shared,
                    &shared.statements.top_talkers,
                    &top,
                    ("top_talkers_by_minute", source)
                ),
                async {
                    match &by_country {
                        Some(row) => {
                            execute(
                                shared,
                                &shared.statements.top_by_country,
                                row,
                                ("top_talkers_by_country_minute", source),
                            )
                            .await
                        }
                        None => Ok(()),
                    }
                },
                async {
                    match &by_asn {
                        Some(row) => {
                            execute(
                                shared,
                                &shared.statements.top_by_asn,
                                row,
                                ("top_talkers_by_asn_minute", source),
                            )
                            .await
                        }
                        None => Ok(()),
                    }
                },
            );
            a.and(b).and(c).and(d)
        }
        Input::Alert(a) => {
            let by_day = (
                a.window_start.date_naive(),
                a.window_start,
                a.alert_id,
                a.rule.as_str(),
                a.source_ip.to_string(),
                a.window_end,
                a.value,
                a.threshold,
                a.summary.as_str(),
            );
            let by_ip = (
                a.source_ip.to_string(),
                a.window_start,
                a.alert_id,
                a.rule.as_str(),
                a.window_end,
                a.value,
                a.threshold,
                a.summary.as_str(),
            );
            let (x, y) = tokio::join!(
                execute(
                    shared,
                    &shared.statements.alerts_by_day,
                    &by_day,
                    ("alerts_by_day", source)
                ),
                execute(
                    shared,
                    &shared.statements.alerts_by_ip,
                    &by_ip,
                    ("alerts_by_ip", source)
                ),
            );
            x.and(y)
        }
    };
    match result {
        Ok(()) => Ok(Outcome::Written),
        Err(WriteError::Rejected(message)) => {
            let error = ValidationError::write_rejected(message);
            if let Some(suppressed) = shared.logs.allow() {
                warn!(%error, topic = origin.topic, partition = origin.partition, offset = origin.offset, suppressed, "row rejected by Cassandra");
            }
            let deferred = dead_letter(shared, &error, payload, key, origin).await?;
            Ok(Outcome::DeadLettered(deferred))
        }
        Err(WriteError::GaveUp(e)) => {
            Err(anyhow::Error::new(*e).context("write failed after all retries"))
        }
        Err(WriteError::Refused(table, e)) => Err(anyhow::Error::new(*e).context(format!(
            "Cassandra refuses this user's writes to `{}.{table}`: grant MODIFY on the keyspace \
             or fix CASSANDRA_USERNAME / CASSANDRA_PASSWORD",
            shared.args.cassandra.keyspace
        ))),
    }
}

enum WriteError {
    Rejected(String),
    GaveUp(Box<ExecutionError>),
    /// No write of this user can succeed (authorization): the service stops.
    Refused(&'static str, Box<ExecutionError>),
}

/// True for errors that concern the writer's identity, not the row: no retry helps.
pub(crate) fn is_refusal(e: &ExecutionError) -> bool {
    matches!(
        e,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::Unauthorized | DbError::AuthenticationError,
            _
        ))
    )
}

/// True for errors that concern the row itself and will never succeed on retry.
pub(crate) fn is_rejection(e: &ExecutionError) -> bool {
    match e {
        ExecutionError::BadQuery(_) => true,
        ExecutionError::LastAttemptError(RequestAttemptError::SerializationError(_)) => true,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => matches!(
            db,
            DbError::Invalid
                | DbError::SyntaxError
                | DbError::FunctionFailure { .. }
                | DbError::AlreadyExists { .. }
                | DbError::ConfigError
        ),
        _ => false,
    }
}

/// Executes one prepared write into `table` for a record of `source` (topic, partition),
/// retrying retryable failures per the backoff policy; from the third failed attempt on, the
/// source partition is reported as stalled until a write of it succeeds.
async fn execute<V: SerializeRow + Sync>(
    shared: &Shared,
    statement: &PreparedStatement,
    values: &V,
    (table, (topic, partition)): (&'static str, (&str, i32)),
) -> Result<(), WriteError> {
    let started = Instant::now();
    let attempt = || async { shared.session.execute_unpaged(statement, values).await };
    let mut failures = 0u32;
    let result = attempt
        .retry(shared.args.backoff())
        .when(|e| !is_rejection(e) && !is_refusal(e))
        .notify(|error, delay| {
            shared.stats.retries.fetch_add(1, Relaxed);
            metrics::counter!(WRITE_RETRIES).increment(1);
            metrics::counter!(WRITE_ERRORS, "kind" => error_kind(error)).increment(1);
            failures += 1;
            if failures >= 3 {
                shared.stalls().failing(
                    format!("{topic}/{partition}"),
                    format!("writes to `{table}` failing ({failures} attempts): {error}"),
                );
            }
            if let Some(suppressed) = shared.logs.allow() {
                warn!(%error, table, retry_in_ms = delay.as_millis() as u64, suppressed, "write failed, retrying");
            }
        })
        .await;
    if failures >= 3 {
        shared.stalls().recovered(&format!("{topic}/{partition}"));
    }
    match result {
        Ok(_) => {
            metrics::counter!(ROWS_WRITTEN, "table" => table).increment(1);
            metrics::histogram!(WRITE_LATENCY_SECONDS).record(started.elapsed().as_secs_f64());
            shared.stats.record_latency(started.elapsed());
            Ok(())
        }
        Err(e) if is_rejection(&e) => {
            metrics::counter!(WRITE_ERRORS, "kind" => "rejected").increment(1);
            Err(WriteError::Rejected(e.to_string()))
        }
        Err(e) if is_refusal(&e) => {
            metrics::counter!(WRITE_ERRORS, "kind" => "unauthorized").increment(1);
            Err(WriteError::Refused(table, Box::new(e)))
        }
        Err(e) => Err(WriteError::GaveUp(Box::new(e))),
    }
}

async fn write_log(
    shared: &Shared,
    r: &ValidatedRecord,
    source: (&str, i32),
) -> Result<(), WriteError> {
    let values = access_log_row(r);
    execute(
        shared,
        &shared.statements.access_logs,
        &values,
        ("access_logs", source),
    )
    .await?;
    shared.stats.written.fetch_add(1, Relaxed);
    let e2e = (Utc::now() - r.timestamp).to_std().unwrap_or_default();
    metrics::histogram!(E2E_LATENCY_SECONDS).record(e2e.as_secs_f64());
    Ok(())
}

async fn dead_letter(
    shared: &Shared,
    error: &ValidationError,
    payload: &[u8],
    key: Option<&[u8]>,
    origin: &Origin<'_>,
) -> anyhow::Result<Option<Deferred>> {
    let envelope =
        DeadLetter::new(error, payload, origin, failed_at(), DEFAULT_MAX_RAW_BYTES).to_json();
    if shared.args.delivery == Delivery::ExactlyOnce {
        return Ok(Some(Deferred {
            envelope,
            key: key.map(<[u8]>::to_vec),
            kind: error.kind,
        }));
    }
    let send = || async {
        let mut record = FutureRecord::<[u8], [u8]>::to(&shared.args.dlq_topic).payload(&envelope);
        if let Some(k) = key {
            record = record.key(k);
        }
        shared
            .producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
    };
    let topic = &shared.args.dlq_topic;
    let retriable = |e: &rdkafka::error::KafkaError| {
        classify_produce(e, topic, ReportedAt::Delivery) == ProduceFailure::Retriable
    };
    send.retry(shared.args.backoff())
        .when(retriable)
        .notify(|error, _| {
            if let Some(suppressed) = shared.logs.allow() {
                warn!(%error, suppressed, "dead-letter produce failed, retrying");
            }
        })
        .await
        .map_err(
            |e| match classify_produce(&e, topic, ReportedAt::Delivery) {
                ProduceFailure::Record(reason) | ProduceFailure::Environment(reason) => {
                    anyhow::anyhow!("cannot produce to `{topic}` (WRITER_DLQ_TOPIC): {reason}")
                }
                ProduceFailure::Retriable => anyhow::Error::new(e)
                    .context(format!("cannot produce to `{topic}` (WRITER_DLQ_TOPIC)")),
            },
        )?;
    shared.stats.dead_lettered.fetch_add(1, Relaxed);
    metrics::counter!(DEAD_LETTERS, "kind" => error.kind.as_str()).increment(1);
    Ok(None)
}

fn failed_at() -> DateTime<Utc> {
    Utc::now()
}
