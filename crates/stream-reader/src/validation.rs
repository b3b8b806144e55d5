//! The validation stage: `ip_logs` → validate → `ip_logs_validated` or `ip_logs_dlq`, and its
//! delivery guarantee as the crate documentation states it.

use std::{
    future::Future,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use chrono::Utc;
use log_schema::{
    DeadLetter, ErrorKind, Limits, Origin, Redrive, SourceOffset, ValidationError, headers,
    validate,
};
use pipeline_runtime::{
    failure::{ProduceFailure, ReportedAt, Stalls, classify_produce},
    kafka::{Backpressure, PipelineContext, SharedTracker, complete_and_store, final_commit},
    observe,
    stage::{self, Loop, SharedConsumer, Stage},
    telemetry::LogLimiter,
    transaction::{Rollback, TxnError},
};
use rdkafka::{
    Message,
    consumer::Consumer,
    message::{BorrowedMessage, Headers as _},
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::{
    IN_FLIGHT, INVALID_RECORDS, OUTPUTS_REJECTED, PRODUCE_LATENCY_SECONDS, PRODUCE_RETRIES,
    RECORDS_CONSUMED, RECORDS_OUT,
};
use crate::{
    ReaderArgs, ReaderStats, TRANSACTIONAL_CONSUMER,
    batch::{self, Batch},
    geoip,
    metrics::log_status,
    outputs::{Event, Landed, Out, Outputs},
};

/// The input record an output belongs to; its single output finishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    partition: i32,
    offset: i64,
    /// The dead letter's kind, `None` for a validated record.
    kind: Option<ErrorKind>,
}

/// Topic names, shared by the outputs without copying.
struct TopicNames {
    input: Arc<str>,
    validated: Arc<str>,
    dlq: Arc<str>,
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
    /// GeoIP / ASN enrichment.
    geo: Arc<geoip::GeoIp>,
    /// When the status line was last logged, and the records finished then.
    last_status: (Instant, u64),
}

impl Reader {
    /// Validates one record and sends its output.
    fn on_message(
        &mut self,
        partition: i32,
        offset: i64,
        payload: &[u8],
        key: Option<&[u8]>,
        identity: Option<Redrive>,
    ) {
        let topic = self.topics.input.clone();
        let origin = Origin {
            topic: &topic,
            partition,
            offset,
        };
        // A re-submitted record (redrive, replay) takes the identity of its original.
        let original = identity.as_ref().map_or(origin, |r| Origin {
            topic: &r.origin.topic,
            partition: r.origin.partition,
            offset: r.origin.offset,
        });
        let now = Utc::now();
        let (out, kind) = match validate(payload, &original, now, &self.limits) {
            Ok(mut record) => {
                if original.topic != origin.topic {
                    // The windows deduplicate by offsets of this topic only.
                    record.source = Some(SourceOffset { partition, offset });
                }
                record.source_geo = self.geo.lookup(record.source_ip);
                record.destination_geo = self.geo.lookup(record.destination_ip);
                let out = Out {
                    topic: self.topics.validated.clone(),
                    key: Some(record.source_ip.to_string().into_bytes()),
                    payload: record.to_json(),
                };
                (out, None)
            }
            Err(error) => {
                let dl =
                    DeadLetter::new(&error, payload, &origin, now, self.args.dlq_max_raw_bytes)
                        .redriven(identity);
                let out = Out {
                    topic: self.topics.dlq.clone(),
                    key: key.map(<[u8]>::to_vec),
                    payload: dl.to_json(),
                };
                (out, Some(error.kind))
            }
        };
        self.stats.consumed.fetch_add(1, Relaxed);
        metrics::counter!(RECORDS_CONSUMED.name).increment(1);
        let owner = Owner {
            partition,
            offset,
            kind,
        };
        let mut refused = None;
        match &mut self.batch {
            Some(batch) => {
                if let Err(error) = batch.begin() {
                    return self.transaction_failed(error);
                }
                batch.record(partition, offset);
                refused = batch.refused.remove(&(partition, offset));
            }
            None => self.tracker.lock().begin(&topic, partition, offset),
        }
        self.flow.started(&self.consumer);
        metrics::gauge!(IN_FLIGHT.name).set(self.flow.in_flight() as f64);
        match refused {
            // Kafka refused this record's output for good in an aborted transaction: send
            // what the at-least-once mode would have sent after the refusals.
            Some((reason, times)) => {
                let mut next = Ok((out, owner));
                for _ in 0..times {
                    next = next.and_then(|(out, owner)| self.rejection(out, owner, reason.clone()));
                }
                match next {
                    Ok((out, owner)) => self.send(out, owner, 0),
                    Err(topic) => self.fail(&topic, &reason),
                }
            }
            None => self.send(out, owner, 0),
        }
    }

    /// The topic setting of an output topic, for error messages.
    fn setting_of(&self, topic: &str) -> &'static str {
        let t = &self.topics;
        [
            (&t.validated, "READER_VALIDATED_TOPIC"),
            (&t.dlq, "READER_DLQ_TOPIC"),
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
        if let Some(batch) = &mut self.batch {
            // In a transaction a failed output is not sent again: the transaction aborts and
            // the record is processed again after the rollback.
            match classify_produce(error, &out.topic, at) {
                ProduceFailure::Environment(reason) => return self.fail(&out.topic, &reason),
                ProduceFailure::Record(reason) => {
                    let refused = batch
                        .refused
                        .entry((owner.partition, owner.offset))
                        .or_insert((reason.clone(), 0));
                    refused.1 += 1;
                    batch.doom(format!("output refused for good: {reason}"));
                }
                ProduceFailure::Retriable => batch.doom(error.to_string()),
            }
            self.flow.finished(&self.consumer);
            return;
        }
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
        match self.rejection(out, owner, reason.clone()) {
            Ok((out, owner)) => self.send(out, owner, 0),
            Err(topic) => self.fail(&topic, &reason),
        }
    }

    /// The dead letter that replaces an output Kafka refused for good, or the refused topic
    /// when there is none (a dead letter already without payload).
    fn rejection(&self, out: Out, owner: Owner, reason: String) -> Result<(Out, Owner), Arc<str>> {
        metrics::counter!(OUTPUTS_REJECTED.name).increment(1);
        if let Some(suppressed) = self.retry_log.allow() {
            warn!(topic = %out.topic, reason, suppressed, "output refused for good; dead-lettering it");
        }
        let dead_letter = match owner.kind {
            None => {
                let origin = Origin {
                    topic: &self.topics.input,
                    partition: owner.partition,
                    offset: owner.offset,
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
                _ => return Err(out.topic),
            },
        };
        let owner = Owner {
            kind: Some(dead_letter.error.kind),
            ..owner
        };
        let out = Out {
            topic: self.topics.dlq.clone(),
            key: out.key,
            payload: dead_letter.to_json(),
        };
        Ok((out, owner))
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

    /// Hands one output to librdkafka; a record librdkafka cannot take now (queue full) is
    /// classified like a failed delivery.
    fn send(&mut self, out: Out, owner: Owner, attempt: u32) {
        if let Err((error, out, owner)) = self.outputs.send(out, owner, attempt) {
            self.on_failed(&error, out, owner, attempt, ReportedAt::Send);
        }
    }

    /// Schedules `out` to be sent again after the backoff delay of its `attempt`; from the
    /// third attempt on, its partition is reported as stalled.
    fn retry(&mut self, error: &dyn std::fmt::Display, out: Out, owner: Owner, attempt: u32) {
        self.stats.retries.fetch_add(1, Relaxed);
        metrics::counter!(PRODUCE_RETRIES.name).increment(1);
        if attempt >= 2 {
            self.stalls.failing(
                format!("{}/{}", self.topics.input, owner.partition),
                format!(
                    "produce to `{}` failing ({} attempts): {error}",
                    out.topic,
                    attempt + 1
                ),
            );
        }
        let topic = out.topic.clone();
        let delay = self.outputs.retry_later(out, owner, attempt);
        if let Some(suppressed) = self.retry_log.allow() {
            warn!(%error, %topic, attempt, retry_in_ms = delay.as_millis() as u64, suppressed, "produce failed, retrying");
        }
    }

    /// A delivery report: finishes its record when acknowledged, otherwise retries it.
    fn on_landed(&mut self, landed: Landed<Owner>) {
        let Landed {
            owner,
            attempt,
            sent_at,
            out,
            report,
        } = landed;
        match report {
            Ok(Ok(_)) => {
                metrics::histogram!(PRODUCE_LATENCY_SECONDS.name)
                    .record(sent_at.elapsed().as_secs_f64());
                if !self.stalls.is_clear() {
                    self.stalls
                        .recovered(&format!("{}/{}", self.topics.input, owner.partition));
                }
                self.on_done(owner);
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

    /// Bookkeeping once a record's output is acknowledged; stores the partition's new commit
    /// offset when its contiguous acknowledged progress advanced.
    fn on_done(&mut self, owner: Owner) {
        self.flow.finished(&self.consumer);
        metrics::gauge!(IN_FLIGHT.name).set(self.flow.in_flight() as f64);
        if self.batch.is_some() {
            self.uncommitted.push(owner.kind);
            return;
        }
        self.count_output(owner.kind);
        complete_and_store(
            &self.tracker,
            &self.consumer,
            &self.args.input_topic,
            owner.partition,
            owner.offset,
        );
    }

    /// Counts one output that is final (acknowledged, or committed in exactly-once mode).
    fn count_output(&self, kind: Option<ErrorKind>) {
        match kind {
            None => {
                metrics::counter!(RECORDS_OUT.name, "output" => "validated").increment(1);
                self.stats.valid.fetch_add(1, Relaxed);
            }
            Some(kind) => {
                metrics::counter!(RECORDS_OUT.name, "output" => "dlq").increment(1);
                metrics::counter!(INVALID_RECORDS.name, "kind" => kind.as_str()).increment(1);
                self.stats.count_invalid(kind);
                self.stats.invalid.fetch_add(1, Relaxed);
            }
        }
    }

    /// True when the loop must not read now: a transaction commit is due.
    fn committing(&self) -> bool {
        self.batch.as_ref().is_some_and(Batch::committing)
    }

    /// Commits the open transaction once it is due and its outputs are acknowledged (or
    /// aborts it when an output failed); after an abort, rolls back.
    fn settle_transaction(&mut self) {
        let Some(batch) = &mut self.batch else { return };
        if let Some(reason) = batch.must_roll_back() {
            return self.rollback(&reason);
        }
        if !batch.committing() || self.outputs.in_flight() > 0 {
            return;
        }
        let offsets = batch.offsets(&self.topics.input);
        match batch.transaction.commit(&*self.consumer, &offsets) {
            Ok(()) => {
                batch.reset();
                for kind in std::mem::take(&mut self.uncommitted) {
                    self.count_output(kind);
                }
            }
            Err(error) => self.transaction_failed(error),
        }
    }

    /// A transaction operation failed: roll back after an abort, stop when fenced.
    fn transaction_failed(&mut self, error: TxnError) {
        match error {
            TxnError::Aborted(error) => self.rollback(&error.to_string()),
            TxnError::Fenced(error) => self.fenced(&error),
        }
    }

    fn fenced(&mut self, error: &dyn std::fmt::Display) {
        if self.fatal.is_none() {
            self.fatal = self.batch.as_ref().map(|b| b.fenced(error));
        }
    }

    /// Aborts the open transaction and returns to the committed offsets: its outputs are
    /// discarded and its records processed again.
    fn rollback(&mut self, reason: &str) {
        let Some(batch) = &mut self.batch else { return };
        warn!(
            reason,
            "transaction aborted; rolling back to the committed offsets"
        );
        if let Err(error) = batch.transaction.abort() {
            return self.fenced(&error);
        }
        batch.reset();
        self.outputs.clear();
        self.flow.reset(&self.consumer);
        self.uncommitted.clear();
        if let Err(error) =
            Rollback::rewind(&*self.consumer, &self.topics.input, Duration::from_secs(30))
        {
            self.fatal = Some(anyhow::anyhow!(
                "cannot return to the committed offsets of `{}`: {error}",
                self.topics.input
            ));
        }
    }
}

impl Reader {
    /// The stage's state with its clients (created, not connected yet).
    fn new(
        args: ReaderArgs,
        context: PipelineContext,
        readiness: observe::Readiness,
        stats: Arc<ReaderStats>,
        geo: Arc<geoip::GeoIp>,
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
            geo,
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
) -> anyhow::Result<()> {
    let context = PipelineContext::new(readiness.clone(), stats.assigned_partitions.clone());
    let mut reader = Reader::new(args, context, readiness, stats, geo)?;
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

#[cfg(test)]
mod tests;
