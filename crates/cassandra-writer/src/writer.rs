//! The consume → write stage ([`pipeline_runtime::stage`] drives it).
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
    collections::HashMap,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use backon::Retryable as _;
use futures::{FutureExt as _, StreamExt as _, future::BoxFuture, stream::FuturesUnordered};
use pipeline_runtime::{
    failure::Stalls,
    kafka::{Backpressure, OffsetTracker, PipelineContext, SharedTracker, access, final_commit},
    observe, shutdown,
    stage::{self, Loop, SharedConsumer, Stage},
    telemetry::LogLimiter,
    transaction::{Delivery, OutputProducer, Rollback, Transaction, TxnError},
};
use rdkafka::{
    Message as _, consumer::Consumer as _, message::BorrowedMessage, producer::Producer as _,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    committer::{Committer, commit, completed},
    group::{self, Groups, Limits},
    metrics::{IN_FLIGHT, RECORDS_CONSUMED, REQUESTS_IN_FLIGHT, describe_metrics},
    rows::Statements,
    shared::{Pending, Shared, Written},
    write::probe_cassandra,
};
pub use crate::{
    config::WriterArgs,
    metrics::WriterStats,
    rows::{AccessLogRow, access_log_row, insert_cql},
};

/// Most records taken from the consumer's buffer at once, to be grouped into batches.
const GATHER_MAX: usize = 256;

/// What the writer waits for between records.
enum Event {
    /// A request finished: one outcome per record.
    Written(Vec<Written>),
    /// The oldest open group's linger ended.
    Linger,
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
    crate::migrate::check_write_permission(&session, &args.cassandra.keyspace).await?;
    pipeline_runtime::run_blocking(|| {
        let mut groups = vec![access::Group {
            id: &args.group_id,
            setting: "WRITER_GROUP_ID",
        }];
        if args.webhook.enabled() {
            groups.push(access::Group {
                id: &args.webhook.group_id,
                setting: "WRITER_WEBHOOK_GROUP_ID",
            });
        }
        access::check(
            &args.kafka,
            &[
                &args.input_topic,
                &args.stats_topic,
                &args.target_stats_topic,
                &args.alerts_topic,
                &args.dlq_topic,
            ],
            &groups,
        )
    })?;
    // The alert hand-off: its own stage and consumer group; either stage failing stops both.
    let stop = shutdown.child_token();
    let handoff = args.webhook.enabled().then(|| {
        let (args, stop, stats, readiness) =
            (args.clone(), stop.clone(), stats.clone(), readiness.clone());
        readiness.declare(crate::webhook::READINESS, "not started yet");
        tokio::spawn(async move {
            let result = crate::webhook::run_until(args, stop.clone(), stats, readiness).await;
            stop.cancel();
            result
        })
    });
    let statements = Statements::prepare(&session, &args.cassandra.keyspace).await?;
    let (producer, committer, context, extra) = match args.delivery {
        Delivery::AtLeastOnce => (
            OutputProducer::Plain(args.kafka.producer(&[])?),
            None,
            context,
            READ_COMMITTED,
        ),
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
                OutputProducer::Transactional(transaction.clone()),
                Some(Committer::new(transaction, changes)),
                context,
                TRANSACTIONAL,
            )
        }
    };
    let tracker = context.tracker.clone();
    let consumer = args.kafka.consumer(&args.group_id, context, extra)?;
    let subscribed = [
        args.input_topic.as_str(),
        &args.stats_topic,
        &args.target_stats_topic,
        &args.alerts_topic,
    ];
    consumer.subscribe(&subscribed).context("subscribe")?;
    info!(
        topics = ?subscribed,
        group = %args.group_id,
        "cassandra-writer started"
    );

    let probe = session
        .prepare(format!(
            "SELECT version FROM {}.schema_migrations LIMIT 1",
            args.cassandra.keyspace
        ))
        .await
        .context("prepare the health probe")?;
    let timers = Loop {
        tick: match args.delivery {
            Delivery::ExactlyOnce => Duration::from_millis(args.transaction_interval_ms.max(1)),
            Delivery::AtLeastOnce => Duration::from_secs(1),
        },
        status: Duration::from_secs(args.status_interval_secs.max(1)),
        drain: Duration::from_secs(30),
    };
    let max_in_flight = args.max_in_flight;
    let max_requests = args.max_in_flight_requests.max(1);
    let groups = Groups::new(Limits {
        max_rows: args.batch_max_rows,
        max_bytes: args.batch_max_bytes,
        max_open: args.batch_max_open_groups,
        linger: Duration::from_millis(args.batch_linger_ms),
    });
    let input_topics = [
        args.input_topic.clone(),
        args.stats_topic.clone(),
        args.target_stats_topic.clone(),
        args.alerts_topic.clone(),
    ];
    let dlq_max_envelope = dlq_max_envelope(&args).await;
    let shared = Arc::new(Shared {
        dlq_max_envelope,
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
    let mut writer = Writer {
        consumer: Arc::new(consumer),
        tracker,
        committer,
        flow: Backpressure::new(max_in_flight),
        shared,
        writes: FuturesUnordered::new(),
        groups,
        max_requests,
        behind: false,
        topics: HashMap::new(),
        input_topics,
        fatal: None,
        last_status: (Instant::now(), 0),
    };
    let result = stage::run(&mut writer, timers, &stop).await;
    stop.cancel();
    let handed = match handoff {
        Some(task) => task.await.context("the alert hand-off panicked")?,
        None => Ok(()),
    };
    server_stop.cancel();
    let _ = server.await;
    result.and(handed)
}

/// The writer's state between records.
struct Writer {
    consumer: SharedConsumer,
    tracker: SharedTracker,
    /// The transactional bookkeeping in exactly-once mode.
    committer: Option<Committer>,
    flow: Backpressure,
    shared: Arc<Shared>,
    /// Requests in flight, polled by the loop (no task per request: fewer wake-ups).
    writes: FuturesUnordered<BoxFuture<'static, Vec<Written>>>,
    /// Records waiting for their request: open groups, closed ones.
    groups: Groups,
    /// Most requests in flight.
    max_requests: usize,
    /// Whether the last read left records in the consumer's buffer: partial groups may
    /// linger.
    behind: bool,
    /// Interned topic names.
    topics: HashMap<String, Arc<str>>,
    input_topics: [String; 4],
    fatal: Option<anyhow::Error>,
    /// When the status line was last logged, and the rows written then.
    last_status: (Instant, u64),
}

impl Writer {
    fn topic(&mut self, name: &str) -> Arc<str> {
        if let Some(t) = self.topics.get(name) {
            return t.clone();
        }
        let t: Arc<str> = Arc::from(name);
        self.topics.insert(name.to_owned(), t.clone());
        t
    }

    /// Starts tracking one consumed record and adds it to its group.
    fn take(&mut self, m: &BorrowedMessage<'_>, epoch: u64, now: Instant) {
        let topic = self.topic(m.topic());
        self.tracker.lock().begin(&topic, m.partition(), m.offset());
        self.flow.started(&self.consumer);
        let pending = Pending {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            epoch,
            payload: m.payload().unwrap_or_default().to_vec(),
            key: m.key().map(<[u8]>::to_vec),
        };
        self.groups.add(pending, &self.shared.args.input_topic, now);
    }

    /// One exactly-once commit; after an abort, returns to the committed offsets.
    fn commit(&mut self) {
        let Some(c) = &mut self.committer else { return };
        match commit(c, &*self.consumer, &self.shared) {
            Ok(()) => {}
            Err(TxnError::Aborted(error)) => {
                warn!(%error, "transaction aborted; rolling back to the committed offsets");
                self.writes = FuturesUnordered::new();
                self.groups.clear();
                *self.tracker.lock() = OffsetTracker::default();
                self.flow.reset(&self.consumer);
                c.reset();
                for topic in &self.input_topics {
                    if let Err(error) =
                        Rollback::rewind(&*self.consumer, topic, Duration::from_secs(30))
                    {
                        self.fatal = Some(anyhow::anyhow!(
                            "cannot return to the committed offsets of `{topic}`: {error}"
                        ));
                    }
                }
            }
            Err(TxnError::Fenced(error)) => {
                self.fatal = Some(anyhow::anyhow!(
                    "transactional producer fenced (another instance with the same WRITER_TRANSACTIONAL_ID, or the transaction outlived WRITER_TRANSACTION_TIMEOUT_MS): {error}"
                ));
            }
        }
    }
}

impl Writer {
    /// Sends requests while a request slot is free: closed groups first, then partial ones
    /// (at once unless the writer is behind, else after their linger).
    fn dispatch(&mut self) {
        let now = Instant::now();
        while self.writes.len() < self.max_requests {
            let Some(request) = self.groups.next(now, self.behind) else {
                break;
            };
            let shared = self.shared.clone();
            self.writes.push(Box::pin(
                async move { group::write(&shared, request).await },
            ));
        }
        metrics::gauge!(REQUESTS_IN_FLIGHT.name).set(self.writes.len() as f64);
    }
}

impl Stage for Writer {
    type Event = Event;

    fn consumer(&self) -> SharedConsumer {
        self.consumer.clone()
    }

    async fn next_event(&mut self) -> Event {
        // A linger matters only while a request slot is free to send the group in.
        let linger = (self.writes.len() < self.max_requests)
            .then(|| self.groups.deadline())
            .flatten();
        tokio::select! {
            Some(written) = self.writes.next(), if !self.writes.is_empty() => Event::Written(written),
            () = sleep_until(linger), if linger.is_some() => Event::Linger,
            else => std::future::pending().await,
        }
    }

    fn on_event(&mut self, event: Event) {
        let Event::Written(written) = event else {
            return;
        };
        for (topic, partition, offset, epoch, outcome) in written {
            self.flow.finished(&self.consumer);
            match outcome {
                Err(error) if self.fatal.is_none() => {
                    self.fatal =
                        Some(error.context(format!("record {topic}/{partition}/{offset}")));
                }
                Err(_) => {}
                Ok(outcome) => completed(
                    &self.tracker,
                    &self.consumer,
                    self.committer.as_mut(),
                    (topic, partition, offset),
                    epoch,
                    outcome,
                ),
            }
        }
        metrics::gauge!(IN_FLIGHT.name).set(self.flow.in_flight() as f64);
    }

    fn accepting(&self) -> bool {
        self.flow.accepting()
    }

    /// Takes this record and those the consumer already has buffered (no waiting) into the
    /// open groups; the writer is behind when records were left in the buffer.
    fn on_record(&mut self, first: &BorrowedMessage<'_>) {
        let epoch = self.committer.as_mut().map_or(0, |c| {
            c.take_changes();
            c.epoch()
        });
        let consumer = self.consumer.clone();
        let now = Instant::now();
        let mut taken = 1;
        self.take(first, epoch, now);
        self.behind = loop {
            if taken >= GATHER_MAX || !self.flow.accepting() {
                break true;
            }
            match consumer.recv().now_or_never() {
                Some(Ok(m)) => {
                    self.take(&m, epoch, now);
                    taken += 1;
                }
                Some(Err(error)) => {
                    warn!(%error, "consume error");
                    break false;
                }
                None => break false,
            }
        };
        let stats = &self.shared.stats;
        stats.consumed.fetch_add(taken as u64, Relaxed);
        metrics::counter!(RECORDS_CONSUMED.name).increment(taken as u64);
        metrics::gauge!(IN_FLIGHT.name).set(self.flow.in_flight() as f64);
    }

    fn on_tick(&mut self) {
        self.flow.tick(&self.consumer);
        self.commit();
    }

    /// Sends what a free request slot can take.
    fn settle(&mut self) {
        self.dispatch();
    }

    fn log_status(&mut self) {
        let stats = &self.shared.stats;
        let written = stats.written.load(Relaxed);
        let elapsed = self.last_status.0.elapsed().as_secs_f64().max(1e-3);
        let rate = (written - self.last_status.1) as f64 / elapsed;
        self.last_status = (Instant::now(), written);
        let (p50, p99) = stats.take_percentiles();
        info!(
            consumed = stats.consumed.load(Relaxed),
            written,
            retries = stats.retries.load(Relaxed),
            dead_lettered = stats.dead_lettered.load(Relaxed),
            in_flight = self.flow.in_flight(),
            requests = self.writes.len(),
            rows_per_s = format!("{rate:.0}"),
            write_p50_ms = format!("{p50:.2}"),
            write_p99_ms = format!("{p99:.2}"),
            "status"
        );
    }

    fn failed(&self) -> bool {
        self.fatal.is_some()
    }

    /// Writes in flight finish (bounded by the retry policy) unless the writer failed.
    fn draining(&self) -> bool {
        self.flow.in_flight() > 0 && self.fatal.is_none()
    }

    /// Commits what is written; after a failure, aborts the open transaction.
    fn finish(&mut self) -> anyhow::Result<()> {
        match &mut self.committer {
            Some(_) if self.fatal.is_none() => {
                self.commit();
            }
            Some(c) => {
                if let Err(error) = c.abort() {
                    warn!(%error, "abort on shutdown failed");
                }
            }
            None => final_commit(&self.consumer),
        }
        let _ = pipeline_runtime::run_blocking(|| {
            self.shared.producer.get().flush(Duration::from_secs(10))
        });
        let stats = &self.shared.stats;
        info!(
            written = stats.written.load(Relaxed),
            dead_lettered = stats.dead_lettered.load(Relaxed),
            "cassandra-writer stopped"
        );
        self.fatal.take().map_or(Ok(()), Err)
    }
}

/// Sleeps until `at` (pending forever when `None`).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Consumer settings: only committed records are read, so an aborted stream-reader
/// transaction never reaches Cassandra.
const READ_COMMITTED: &[(&str, &str)] = &[("isolation.level", "read_committed")];

/// Consumer settings in exactly-once mode: offsets are committed by the transactions only.
const TRANSACTIONAL: &[(&str, &str)] = &[
    ("isolation.level", "read_committed"),
    ("enable.auto.commit", "false"),
];

/// Bytes a record batch adds around one record's value (headers, key, batch framing), kept
/// free below the DLQ topic's `max.message.bytes`.
const RECORD_OVERHEAD: usize = 1024;

/// The largest dead letter the DLQ topic takes whole, from its `max.message.bytes`; when the
/// broker does not say (no DescribeConfigs permission), the dead-letter budget stands.
async fn dlq_max_envelope(args: &WriterArgs) -> usize {
    match args.kafka.topic_max_message_bytes(&args.dlq_topic).await {
        Ok(max) => max.saturating_sub(RECORD_OVERHEAD),
        Err(error) => {
            warn!(
                error = format!("{error:#}"),
                topic = %args.dlq_topic,
                "cannot read the DLQ topic's max.message.bytes; dead letters keep up to \
                 WRITER_DLQ_MAX_RAW_BYTES of their payload"
            );
            usize::MAX
        }
    }
}
