//! The validation stage: `ip_logs` → validate → `ip_logs_validated` or `ip_logs_dlq`, and its
//! delivery guarantee as the crate documentation states it.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use log_schema::{ErrorKind, Limits, Redrive, headers};
use pipeline_runtime::{
    failure::Stalls,
    kafka::{Backpressure, PipelineContext, SharedTracker, final_commit},
    observe,
    stage::{self, Loop, SharedConsumer, Stage},
    telemetry::LogLimiter,
};
use rdkafka::{
    Message,
    consumer::Consumer,
    message::{BorrowedMessage, Headers as _},
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    ReaderArgs, ReaderStats, TRANSACTIONAL_CONSUMER,
    batch::{self, Batch},
    geoip,
    metrics::log_status,
    outputs::{Event, Outputs},
    threats::ThreatLists,
};

/// The input record an output belongs to. Its single output finishes it, or, for a validated
/// record with destination windows on, its two outputs (validated, and the copy keyed by
/// destination) together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    partition: i32,
    offset: i64,
    /// The dead letter's kind, `None` for a validated record.
    kind: Option<ErrorKind>,
    /// One of two outputs of its record.
    paired: bool,
    /// The copy keyed by destination (or what replaced it).
    copy: bool,
}

/// Topic names, shared by the outputs without copying.
struct TopicNames {
    input: Arc<str>,
    validated: Arc<str>,
    dlq: Arc<str>,
    /// The copies keyed by destination, when destination windows are on.
    by_destination: Option<Arc<str>>,
}

/// The validation stage's state.
struct Reader {
    topics: TopicNames,
    args: ReaderArgs,
    limits: Limits,
    consumer: SharedConsumer,
    tracker: SharedTracker,
    flow: Backpressure,
    stats: Arc<ReaderStats>,
    outputs: Outputs<Owner>,
    retry_log: LogLimiter,
    /// Partitions whose outputs keep failing (`/readyz`).
    stalls: Stalls,
    /// Set when a produce can never succeed: the loop stops and the service fails with it.
    fatal: Option<anyhow::Error>,
    /// The open transaction in exactly-once mode.
    batch: Option<Batch>,
    /// Outputs acknowledged in the open transaction (their kinds), counted once it commits.
    uncommitted: Vec<Option<ErrorKind>>,
    /// Paired outputs acknowledged while the other one of their record is not yet: per input
    /// record, [validated output, copy].
    halves: std::collections::HashMap<(i32, i64), [Option<Owner>; 2]>,
    /// GeoIP / ASN enrichment.
    geo: Arc<geoip::GeoIp>,
    /// Threat-list enrichment.
    threats: Arc<ThreatLists>,
    /// When the status line was last logged, and the records finished then.
    last_status: (Instant, u64),
}

impl Reader {
    /// The stage's state with its clients (created, not connected yet).
    fn new(
        args: ReaderArgs,
        context: PipelineContext,
        readiness: observe::Readiness,
        stats: Arc<ReaderStats>,
        geo: Arc<geoip::GeoIp>,
        threats: Arc<ThreatLists>,
    ) -> anyhow::Result<Self> {
        let limits = Limits {
            max_record_bytes: args.max_record_bytes,
            max_future_skew: Duration::from_secs(args.max_future_skew_secs),
        };
        let (producer, batch, context) = batch::producer_for(&args, "validation", context)?;
        // Offsets go with the transaction, and only committed records are read.
        let extra = if batch.is_some() {
            TRANSACTIONAL_CONSUMER
        } else {
            &[]
        };
        let tracker = context.tracker.clone();
        let consumer = Arc::new(args.kafka.consumer(&args.group_id, context, extra)?);
        let topics = TopicNames {
            input: Arc::from(args.input_topic.as_str()),
            validated: Arc::from(args.validated_topic.as_str()),
            dlq: Arc::from(args.dlq_topic.as_str()),
            by_destination: args
                .destination_windows()
                .then(|| Arc::from(args.destination_topic.as_str())),
        };
        let outputs = Outputs::new(
            producer,
            Duration::from_millis(args.retry_min_delay_ms),
            Duration::from_millis(args.retry_max_delay_ms),
        );
        Ok(Reader {
            topics,
            flow: Backpressure::new(args.max_in_flight),
            args,
            limits,
            consumer,
            tracker,
            stats,
            outputs,
            retry_log: LogLimiter::per_second(5),
            stalls: Stalls::new(readiness),
            fatal: None,
            batch,
            uncommitted: Vec::new(),
            halves: std::collections::HashMap::new(),
            geo,
            threats,
            last_status: (Instant::now(), 0),
        })
    }
}

/// The validation stage.
pub(crate) async fn validate_until(
    args: ReaderArgs,
    shutdown: CancellationToken,
    stats: Arc<ReaderStats>,
    readiness: observe::Readiness,
    geo: Arc<geoip::GeoIp>,
    threats: Arc<ThreatLists>,
) -> anyhow::Result<()> {
    let context = PipelineContext::new(readiness.clone(), stats.assigned_partitions.clone());
    let mut reader = Reader::new(args, context, readiness, stats, geo, threats)?;
    reader
        .consumer
        .subscribe(&[&reader.args.input_topic])
        .context("subscribe")?;
    info!(topic = %reader.args.input_topic, group = %reader.args.group_id, analytics = reader.args.analytics, "stream-reader started");
    let timers = Loop {
        tick: if reader.batch.is_some() {
            Batch::check_period(reader.args.transaction_interval_ms)
        } else {
            Duration::from_millis(500)
        },
        status: Duration::from_secs(reader.args.status_interval_secs.max(1)),
        drain: Duration::from_secs(30),
    };
    stage::run(&mut reader, timers, &shutdown).await
}

impl Stage for Reader {
    type Event = Event<Owner>;

    fn consumer(&self) -> SharedConsumer {
        self.consumer.clone()
    }

    fn next_event(&mut self) -> impl Future<Output = Event<Owner>> + Send {
        self.outputs.next()
    }

    fn on_event(&mut self, event: Event<Owner>) {
        match event {
            Event::Landed(landed) => self.on_landed(landed),
            // After a fatal failure only the deliveries already under way are awaited.
            Event::Retry {
                owner,
                attempt,
                out,
            } if self.fatal.is_none() => {
                self.send(out, owner, attempt);
            }
            Event::Retry { .. } => {}
        }
    }

    fn accepting(&self) -> bool {
        self.flow.accepting() && !self.committing()
    }

    fn on_record(&mut self, message: &BorrowedMessage<'_>) {
        if self
            .batch
            .as_ref()
            .is_some_and(|b| b.transaction.take_rolled_back())
        {
            // A revoke aborted the transaction inside this recv: the record is read again
            // after the rollback.
            return self.rollback("partitions revoked");
        }
        let identity = identity_of(message);
        self.on_message(
            message.partition(),
            message.offset(),
            message.payload().unwrap_or_default(),
            message.key(),
            identity,
            arrival_time(message),
        );
    }

    fn on_tick(&mut self) {
        self.flow.tick(&self.consumer);
        if let Some(batch) = &mut self.batch {
            batch.tick();
        }
    }

    fn settle(&mut self) {
        self.settle_transaction();
    }

    fn log_status(&mut self) {
        log_status(&self.stats, self.flow.in_flight(), &mut self.last_status);
    }

    fn failed(&self) -> bool {
        self.fatal.is_some()
    }

    /// Outstanding deliveries are awaited; after a fatal failure only those already under
    /// way: the refused record never finishes, so nothing past it is stored.
    fn draining(&self) -> bool {
        self.flow.in_flight() > 0 && (self.fatal.is_none() || self.outputs.in_flight() > 0)
    }

    /// Commits what is acknowledged; after a fatal failure or a drain timeout, aborts the
    /// open transaction.
    fn finish(&mut self) -> anyhow::Result<()> {
        match &mut self.batch {
            Some(batch) if self.fatal.is_none() && self.outputs.in_flight() == 0 => {
                batch.commit_now();
                self.settle_transaction();
            }
            Some(batch) => {
                if let Err(error) = batch.transaction.abort() {
                    warn!(%error, "abort on shutdown failed");
                }
            }
            None => final_commit(&self.consumer),
        }
        self.outputs.flush(Duration::from_secs(10));
        log_status(&self.stats, 0, &mut self.last_status);
        info!("validation stage stopped");
        self.fatal.take().map_or(Ok(()), Err)
    }
}

/// When a record reached Kafka: its timestamp (the producer's `CreateTime`, or the broker's
/// `LogAppendTime` on a topic configured for it). Only a record without one (a message format
/// older than Kafka 0.10) falls back to the wall clock.
fn arrival_time(message: &impl Message) -> DateTime<Utc> {
    message
        .timestamp()
        .to_millis()
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or_else(Utc::now)
}

/// The original identity a re-submitted record carries in its headers
/// ([`log_schema::headers`]); malformed identity headers are reported and ignored (the record
/// is then an ordinary one).
fn identity_of(message: &impl Message) -> Option<Redrive> {
    let headers = message.headers()?;
    let value = |name: &str| headers.iter().find(|h| h.key == name).and_then(|h| h.value);
    match headers::resubmitted(value(headers::ORIGIN), value(headers::REDRIVE_ATTEMPT)) {
        Ok(identity) => identity,
        Err(error) => {
            static LOG: std::sync::LazyLock<LogLimiter> =
                std::sync::LazyLock::new(|| LogLimiter::per_second(1));
            if let Some(suppressed) = LOG.allow() {
                warn!(%error, suppressed, "identity headers ignored");
            }
            None
        }
    }
}

mod commit;
mod route;
#[cfg(test)]
mod tests;
