//! The analytics stage: `ip_logs_validated` → per-IP one-minute windows → `ip_stats` and
//! `ip_alerts`.
//!
//! It reads the validated topic in its own consumer group, so its windows see a stream keyed
//! by canonical source IP that the validation stage guarantees, whatever keys (or none) the
//! producers of `ip_logs` used. Each assigned partition is one deterministic state machine
//! ([`crate::windows`]).
//!
//! **Guarantee: every closed window is final.** Offsets are committed explicitly, with the
//! partition's window checkpoint as offset metadata ([`Windows::checkpoint`]): every second,
//! synchronously for a partition that took an idle step (before its next record is
//! processed), for each revoked partition in the revoke callback, and on shutdown. On
//! assignment a partition is restored from its committed checkpoint and replayed from its
//! offset, so each (source IP, minute) is emitted with the statistics of exactly the events an
//! uninterrupted run counts; a window emitted twice (its output not acknowledged before a
//! crash) carries the same statistics and alert ids both times. Revocation is per partition:
//! only revoked partitions lose their state, which is what eager, cooperative-sticky and
//! KIP-848 (`group.protocol=consumer`) assignment need.
//!
//! In exactly-once mode the checkpoints are committed by the stage's transactions instead
//! ([`crate::batch`]), together with the window outputs that the records below them closed;
//! an aborted transaction restores every partition from its committed checkpoint and replays.
//!
//! Window outputs count against backpressure: closed windows wait in an outbox, at most
//! `analytics_max_in_flight` outputs are in flight, and the stage stops reading while the
//! outbox and the flights are full (pausing its partitions if that lasts, so it stays in the
//! group).
//!
//! Limits: a validated record without `source` coordinates (written by another producer) is
//! never treated as a duplicate; the partition count of the validated topic must not change
//! while windows are open (as for Kafka Streams' repartition topics, a key would move to
//! another partition's state); checkpoints must fit the broker's `offset.metadata.max.bytes`
//! (4,096 bytes by default: about 150 raw partitions).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use backon::{ExponentialBuilder, Retryable as _};
use log_schema::ValidatedRecord;
use pipeline_runtime::{
    failure::{ProduceFailure, ReportedAt, classify_produce},
    kafka::{
        Backpressure, Checkpoints, Lags, PartitionChange, PartitionChanges, PipelineContext,
        commit_checkpoints, committed_with_metadata,
    },
    observe,
    telemetry::LogLimiter,
    transaction::{Rollback, TxnError},
};
use rdkafka::{
    Message,
    consumer::{CommitMode, Consumer, StreamConsumer},
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    ReaderArgs, ReaderStats, TRANSACTIONAL_CONSUMER,
    batch::Batch,
    outputs::{Event, Landed, Out, Outputs},
    windows::{Closed, Emission, Observed, Thresholds, WindowConfig, Windows},
};

/// Windows closed, emitted and acknowledged.
pub const WINDOWS_CLOSED: &str = "reader_windows_closed_total";
/// Alerts emitted and acknowledged, by rule.
pub const ALERTS: &str = "reader_alerts_total";
/// Windows open.
pub const WINDOWS_OPEN: &str = "reader_windows_open";
/// Valid events not counted because their window had closed.
pub const LATE_EVENTS: &str = "late_events_total";
/// Validated records the validation stage emitted more than once, counted once.
pub const DUPLICATES: &str = "reader_window_duplicates_total";
/// Events not counted because their minute reached the window cap.
pub const UNCOUNTED: &str = "reader_window_uncounted_events_total";
/// Windows emitted with a cap flag, by cap (`sources`, `distinct`).
pub const CAPPED: &str = "reader_windows_capped_total";
/// Records of the validated topic that are not validated records (not counted).
pub const SKIPPED: &str = "reader_analytics_skipped_total";
/// Committed offset metadata that was not a window checkpoint (the partition started empty).
pub const CHECKPOINT_ERRORS: &str = "reader_checkpoint_errors_total";

/// Registers the stage's metrics with help texts and zero values.
pub(crate) fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        WINDOWS_CLOSED,
        "Per-IP windows closed and emitted to ip_stats"
    );
    describe_counter!(ALERTS, "Alerts emitted to ip_alerts, by rule");
    describe_gauge!(WINDOWS_OPEN, "Per-IP windows currently open");
    describe_counter!(
        LATE_EVENTS,
        "Valid events whose window had already closed (not counted)"
    );
    describe_counter!(
        DUPLICATES,
        "Validated records seen again after a validation-stage restart (counted once)"
    );
    describe_counter!(
        UNCOUNTED,
        "Events not counted: their minute reached the per-partition window cap"
    );
    describe_counter!(CAPPED, "Windows emitted with a cap flag, by cap");
    describe_counter!(
        SKIPPED,
        "Records of the validated topic that are not validated records"
    );
    describe_counter!(
        CHECKPOINT_ERRORS,
        "Committed offset metadata that was not a window checkpoint"
    );
    for name in [
        WINDOWS_CLOSED,
        LATE_EVENTS,
        DUPLICATES,
        UNCOUNTED,
        SKIPPED,
        CHECKPOINT_ERRORS,
    ] {
        metrics::counter!(name).absolute(0);
    }
    for cap in ["sources", "distinct"] {
        metrics::counter!(CAPPED, "cap" => cap).absolute(0);
    }
    for rule in log_schema::AlertRule::ALL {
        metrics::counter!(ALERTS, "rule" => rule.as_str()).absolute(0);
    }
    metrics::gauge!(WINDOWS_OPEN).set(0.0);
}

/// A closed window whose outputs are in flight.
struct Waiting {
    left: usize,
    partition: i32,
    emission: Emission,
    alerts: Vec<&'static str>,
}

struct Stage {
    /// GeoIP / ASN enrichment of the window statistics' source address.
    geo: Arc<crate::geoip::GeoIp>,
    input: Arc<str>,
    stats_topic: Arc<str>,
    alerts_topic: Arc<str>,
    windows: Windows,
    consumer: StreamConsumer<PipelineContext>,
    changes: PartitionChanges,
    checkpoints: Checkpoints,
    lags: Lags,
    /// What was last committed per partition.
    committed: HashMap<i32, (i64, String)>,
    outputs: Outputs<u64>,
    /// Closed windows not sent yet.
    outbox: VecDeque<Closed>,
    waiting: HashMap<u64, Waiting>,
    next_id: u64,
    max_in_flight: usize,
    flow: Backpressure,
    stats: Arc<ReaderStats>,
    log: LogLimiter,
    fatal: Option<anyhow::Error>,
    /// The open transaction in exactly-once mode.
    batch: Option<Batch>,
}

impl Stage {
    fn new(
        args: &ReaderArgs,
        context: PipelineContext,
        stats: Arc<ReaderStats>,
        geo: Arc<crate::geoip::GeoIp>,
    ) -> anyhow::Result<Self> {
        let windows = Windows::new(WindowConfig {
            lateness: chrono::TimeDelta::seconds(args.allowed_lateness_secs as i64),
            idle: Duration::from_millis(args.idle_flush_ms),
            thresholds: Thresholds {
                port_scan: args.alert_port_scan_ports,
                flood: args.alert_flood_events,
                deny_burst: args.alert_deny_burst_denied,
            },
            max_windows_per_minute: args.max_windows_per_minute,
            max_distinct_per_minute: args.max_distinct_per_minute,
        });
        let (changes, checkpoints, lags) = (
            context
                .changes
                .clone()
                .context("the analytics context must record partition changes")?,
            context.checkpoints.clone(),
            context.lags.clone(),
        );
        let (producer, batch, context) = crate::batch::producer_for(args, "analytics", context)?;
        // Offsets are committed explicitly (with their checkpoints, or by the transaction);
        // read_committed so that a transactional validation stage's aborted records are never
        // counted.
        let consumer =
            args.kafka
                .consumer(&args.analytics_group_id, context, TRANSACTIONAL_CONSUMER)?;
        Ok(Self {
            geo,
            input: Arc::from(args.validated_topic.as_str()),
            stats_topic: Arc::from(args.stats_topic.as_str()),
            alerts_topic: Arc::from(args.alerts_topic.as_str()),
            windows,
            consumer,
            changes,
            checkpoints,
            lags,
            committed: HashMap::new(),
            outputs: Outputs::new(
                producer,
                Duration::from_millis(args.retry_min_delay_ms),
                Duration::from_millis(args.retry_max_delay_ms),
            ),
            outbox: VecDeque::new(),
            waiting: HashMap::new(),
            next_id: 0,
            max_in_flight: args.analytics_max_in_flight.max(1),
            flow: Backpressure::new(args.analytics_max_in_flight),
            stats,
            log: LogLimiter::per_second(5),
            fatal: None,
            batch,
        })
    }

    /// Takes the assignment changes since the last call: revoked partitions lose their state,
    /// assigned ones are restored from their committed checkpoints.
    async fn take_changes(&mut self) {
        if self
            .batch
            .as_ref()
            .is_some_and(|b| b.transaction.take_rolled_back())
        {
            // A revoke aborted the transaction: every partition returns to its committed
            // checkpoint (the queued changes are reflected in the current assignment).
            self.changes.take();
            return self.rollback("partitions revoked");
        }
        let mut assigned = Vec::new();
        for change in self.changes.take() {
            match change {
                PartitionChange::Revoked(topic, p) if *topic == *self.input => {
                    self.windows.revoke(p);
                    self.committed.remove(&p);
                    assigned.retain(|a| *a != p);
                    // Its queued windows are the next owner's to emit (identically).
                    let (dropped, kept): (VecDeque<Closed>, VecDeque<Closed>) =
                        std::mem::take(&mut self.outbox)
                            .into_iter()
                            .partition(|c| c.partition == p);
                    self.outbox = kept;
                    for c in dropped {
                        for _ in 0..=c.alerts.len() {
                            self.flow.finished(&self.consumer);
                        }
                    }
                }
                PartitionChange::Assigned(topic, p) if *topic == *self.input => assigned.push(p),
                _ => {}
            }
        }
        if assigned.is_empty() {
            return;
        }
        // A coordinator that is moving or loading answers with a retriable error: ask again.
        let read = || async {
            committed_with_metadata(
                &self.consumer,
                &self.input,
                &assigned,
                Duration::from_secs(10),
            )
        };
        let committed = read
            .retry(
                ExponentialBuilder::default()
                    .with_max_delay(Duration::from_secs(5))
                    .with_max_times(12),
            )
            .notify(|error, delay| {
                warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot read the committed checkpoints yet");
            })
            .await;
        let committed = match committed {
            Ok(c) => c,
            Err(error) => {
                // Without its checkpoint a partition cannot be restored exactly: stop, and let
                // the restart (or the next owner) take it over.
                self.fatal = Some(anyhow::anyhow!(
                    "cannot read the committed checkpoints of `{}`: {error}",
                    self.input
                ));
                return;
            }
        };
        self.restore(committed);
    }

    /// Restores partitions from their committed offsets and checkpoints.
    fn restore(&mut self, committed: Vec<(i32, Option<i64>, String)>) {
        for (p, offset, metadata) in committed {
            match self.windows.assign(p, offset, &metadata) {
                Ok(closed) => self.queue(closed),
                Err(reason) => {
                    metrics::counter!(CHECKPOINT_ERRORS).increment(1);
                    warn!(
                        partition = p,
                        reason, "partition starts without window state"
                    );
                }
            }
            if let Some(offset) = offset {
                self.committed.insert(p, (offset, metadata));
            }
            info!(partition = p, offset, "analytics partition restored");
        }
    }

    fn on_message(&mut self, partition: i32, offset: i64, payload: &[u8]) {
        if let Some(batch) = &mut self.batch {
            if let Err(error) = batch.begin() {
                return self.transaction_failed(error);
            }
            batch.record(partition, offset);
        }
        let closed = match ValidatedRecord::from_json(payload) {
            Ok(record) => {
                let (observed, closed) = self.windows.observe(partition, offset, &record);
                match observed {
                    Observed::Late => metrics::counter!(LATE_EVENTS).increment(1),
                    Observed::Duplicate => metrics::counter!(DUPLICATES).increment(1),
                    Observed::Uncounted => metrics::counter!(UNCOUNTED).increment(1),
                    Observed::Counted | Observed::Final => {}
                }
                closed
            }
            Err(error) => {
                metrics::counter!(SKIPPED).increment(1);
                if let Some(suppressed) = self.log.allow() {
                    warn!(%error, partition, offset, suppressed, "not a validated record; not counted");
                }
                self.windows.skip(partition, offset)
            }
        };
        self.queue(closed);
    }

    /// Queues closed windows; their outputs count as in flight from now on.
    fn queue(&mut self, closed: Vec<Closed>) {
        for mut c in closed {
            c.stats.source_geo = self.geo.lookup(c.stats.source_ip);
            for _ in 0..=c.alerts.len() {
                self.flow.started(&self.consumer);
            }
            self.outbox.push_back(c);
        }
        metrics::gauge!(WINDOWS_OPEN).set(self.windows.open_windows() as f64);
    }

    /// Sends queued windows while fewer than `max_in_flight` outputs are in flight.
    fn pump(&mut self) {
        while self.outputs.in_flight() < self.max_in_flight
            && let Some(c) = self.outbox.pop_front()
        {
            let key = c.stats.source_ip.to_string().into_bytes();
            let mut outs = vec![Out {
                topic: self.stats_topic.clone(),
                key: Some(key.clone()),
                payload: c.stats.to_json(),
            }];
            outs.extend(c.alerts.iter().map(|a| Out {
                topic: self.alerts_topic.clone(),
                key: Some(key.clone()),
                payload: a.to_json(),
            }));
            if c.stats.sources_capped {
                metrics::counter!(CAPPED, "cap" => "sources").increment(1);
            }
            if c.stats.distinct_capped {
                metrics::counter!(CAPPED, "cap" => "distinct").increment(1);
            }
            let id = self.next_id;
            self.next_id += 1;
            self.waiting.insert(
                id,
                Waiting {
                    left: outs.len(),
                    partition: c.partition,
                    emission: c.emission,
                    alerts: c.alerts.iter().map(|a| a.rule.as_str()).collect(),
                },
            );
            for out in outs {
                self.send(out, id, 0);
            }
        }
    }

    fn send(&mut self, out: Out, id: u64, attempt: u32) {
        if let Err((error, out, id)) = self.outputs.send(out, id, attempt) {
            self.on_failed(&error, out, id, attempt, ReportedAt::Send);
        }
    }

    fn on_failed(
        &mut self,
        error: &rdkafka::error::KafkaError,
        out: Out,
        id: u64,
        attempt: u32,
        at: ReportedAt,
    ) {
        match classify_produce(error, &out.topic, at) {
            ProduceFailure::Retriable if self.batch.is_some() => {
                // Not sent again in a transaction: it aborts and the windows close again.
                self.flow.finished(&self.consumer);
                if let Some(batch) = &mut self.batch {
                    batch.doom(error.to_string());
                }
            }
            ProduceFailure::Retriable => {
                let delay = self.outputs.retry_later(out, id, attempt);
                if let Some(suppressed) = self.log.allow() {
                    warn!(%error, attempt, retry_in_ms = delay.as_millis() as u64, suppressed, "window output failed, retrying");
                }
            }
            // A window output refused for good (or no output possible at all): the window
            // cannot be final, so the stage stops rather than skip it.
            ProduceFailure::Record(reason) | ProduceFailure::Environment(reason) => {
                if self.fatal.is_none() {
                    let setting = if *out.topic == *self.stats_topic {
                        "READER_STATS_TOPIC"
                    } else {
                        "READER_ALERTS_TOPIC"
                    };
                    self.fatal = Some(anyhow::anyhow!(
                        "cannot produce to `{}` ({setting}): {reason}",
                        out.topic
                    ));
                }
            }
        }
    }

    fn on_landed(&mut self, landed: Landed<u64>) {
        match landed.report {
            Ok(Ok(_)) => {
                self.flow.finished(&self.consumer);
                let done = self.waiting.get_mut(&landed.owner).is_some_and(|w| {
                    w.left -= 1;
                    w.left == 0
                });
                if done && let Some(w) = self.waiting.remove(&landed.owner) {
                    self.windows.emitted(w.partition, w.emission);
                    metrics::counter!(WINDOWS_CLOSED).increment(1);
                    self.stats.windows_closed.fetch_add(1, Relaxed);
                    for rule in w.alerts {
                        metrics::counter!(ALERTS, "rule" => rule).increment(1);
                        self.stats.alerts.fetch_add(1, Relaxed);
                    }
                }
            }
            Ok(Err((error, _))) => self.on_failed(
                &error,
                landed.out,
                landed.owner,
                landed.attempt,
                ReportedAt::Delivery,
            ),
            Err(canceled) if self.batch.is_some() => {
                self.flow.finished(&self.consumer);
                if let Some(batch) = &mut self.batch {
                    batch.doom(format!("delivery report lost ({canceled})"));
                }
            }
            Err(canceled) => {
                // A lost report: the outcome is unknown, so the output is sent again.
                warn!(%canceled, "window output's delivery report lost; sending it again");
                self.outputs
                    .retry_later(landed.out, landed.owner, landed.attempt);
            }
        }
    }

    /// Idle steps for quiet, caught-up partitions; a partition that took one has its
    /// checkpoint committed before its next record.
    fn tick(&mut self) {
        let lags = self
            .lags
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let input = self.input.to_string();
        let caught_up = |p: i32, last: Instant| {
            lags.get(&(input.clone(), p))
                .is_some_and(|(lag, at)| *lag == 0 && *at > last)
        };
        let (closed, stepped) = self.windows.tick(caught_up);
        self.queue(closed);
        if stepped.is_empty() {
            return;
        }
        match &mut self.batch {
            Some(batch) => batch.commit_now(),
            None => self.commit(&stepped),
        }
    }

    /// True when the stage must not read now: a transaction commit is due.
    fn committing(&self) -> bool {
        self.batch.as_ref().is_some_and(Batch::committing)
    }

    /// In exactly-once mode: once a commit is due and every closed window is sent and
    /// acknowledged, commits the transaction with each changed partition's checkpoint (an
    /// idle step's checkpoint too, in a transaction of its own); aborts and rolls back when
    /// an output failed.
    fn settle_transaction(&mut self) {
        let Some(batch) = &mut self.batch else { return };
        if let Some(reason) = batch.must_roll_back() {
            return self.rollback(&reason);
        }
        if !batch.committing() || !self.outbox.is_empty() || self.outputs.in_flight() > 0 {
            return;
        }
        let partitions: Vec<i32> = self.windows.partitions().collect();
        let mut changed = Vec::new();
        for p in partitions {
            if let Some((offset, metadata)) = self.windows.checkpoint(p)
                && self.committed.get(&p) != Some(&(offset, metadata.clone()))
            {
                changed.push((self.input.to_string(), p, offset, metadata));
            }
        }
        if changed.is_empty() && !batch.transaction.is_open() {
            batch.reset();
            return;
        }
        let result = batch
            .begin()
            .and_then(|()| batch.transaction.commit(&self.consumer, &changed));
        match result {
            Ok(()) => {
                batch.reset();
                for (_, p, offset, metadata) in changed {
                    self.committed.insert(p, (offset, metadata));
                }
            }
            Err(error) => self.transaction_failed(error),
        }
    }

    fn transaction_failed(&mut self, error: TxnError) {
        match error {
            TxnError::Aborted(error) => self.rollback(&error.to_string()),
            TxnError::Fenced(error) => {
                if self.fatal.is_none() {
                    self.fatal = self.batch.as_ref().map(|b| b.fenced(&error));
                }
            }
        }
    }

    /// Aborts the open transaction and returns every partition to its committed checkpoint:
    /// the windows closed in the transaction are discarded and close again on replay.
    fn rollback(&mut self, reason: &str) {
        let Some(batch) = &mut self.batch else { return };
        warn!(
            reason,
            "analytics transaction aborted; rolling back to the committed checkpoints"
        );
        if let Err(error) = batch.transaction.abort() {
            return self.transaction_failed(TxnError::Fenced(match error {
                TxnError::Aborted(e) | TxnError::Fenced(e) => e,
            }));
        }
        batch.reset();
        self.outputs.clear();
        self.outbox.clear();
        self.waiting.clear();
        self.flow.reset(&self.consumer);
        let partitions: Vec<i32> = self.windows.partitions().collect();
        for p in partitions {
            self.windows.revoke(p);
        }
        self.committed.clear();
        match Rollback::rewind(&self.consumer, &self.input, Duration::from_secs(30)) {
            Ok(rollback) => self.restore(rollback.partitions),
            Err(error) => {
                self.fatal = Some(anyhow::anyhow!(
                    "cannot return to the committed checkpoints of `{}`: {error}",
                    self.input
                ));
            }
        }
    }

    /// Commits the current checkpoints of `partitions` that changed (synchronously: at most
    /// one broker round trip a second, and before the next record after an idle step).
    fn commit(&mut self, partitions: &[i32]) {
        let mut changed = Vec::new();
        for &p in partitions {
            let Some((offset, metadata)) = self.windows.checkpoint(p) else {
                continue;
            };
            self.checkpoints
                .set(&self.input, p, offset, metadata.clone());
            if self.committed.get(&p) != Some(&(offset, metadata.clone())) {
                changed.push((self.input.to_string(), p, offset, metadata));
            }
        }
        match commit_checkpoints(&self.consumer, &changed, CommitMode::Sync) {
            Ok(()) => {
                for (_, p, offset, metadata) in changed {
                    self.committed.insert(p, (offset, metadata));
                }
            }
            Err(error) => warn!(%error, "checkpoint commit failed; retried in a second"),
        }
    }

    fn commit_all(&mut self) {
        let partitions: Vec<i32> = self.windows.partitions().collect();
        self.commit(&partitions);
    }
}

/// Runs the analytics stage until `shutdown` is cancelled.
pub(crate) async fn run_until(
    args: ReaderArgs,
    shutdown: CancellationToken,
    stats: Arc<ReaderStats>,
    readiness: observe::Readiness,
    geo: Arc<crate::geoip::GeoIp>,
) -> anyhow::Result<()> {
    let context = PipelineContext::new(readiness, stats.analytics_partitions.clone())
        .with_group_check("analytics-group")
        .with_partition_changes();
    let mut stage = Stage::new(&args, context, stats, geo)?;
    stage
        .consumer
        .subscribe(&[&args.validated_topic])
        .context("subscribe to the validated topic")?;
    info!(topic = %args.validated_topic, group = %args.analytics_group_id, "analytics stage started");
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut commit = tokio::time::interval(Duration::from_secs(1));
    let mut due = tokio::time::interval(Batch::check_period(args.transaction_interval_ms));
    while stage.fatal.is_none() {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            event = stage.outputs.next() => match event {
                Event::Landed(landed) => stage.on_landed(landed),
                Event::Retry { owner, attempt, out } => stage.send(out, owner, attempt),
            },
            message = stage.consumer.recv(), if stage.flow.accepting() && !stage.committing() => {
                let message = message.map(|m| {
                    (m.partition(), m.offset(), m.payload().unwrap_or_default().to_vec())
                });
                stage.take_changes().await;
                match message {
                    Ok((partition, offset, payload)) if stage.fatal.is_none() => {
                        stage.on_message(partition, offset, &payload);
                    }
                    Ok(_) => {}
                    Err(error) => warn!(%error, "consume error"),
                }
            }
            _ = tick.tick() => {
                stage.take_changes().await;
                stage.flow.tick(&stage.consumer);
                stage.tick();
            }
            _ = commit.tick(), if stage.batch.is_none() => {
                stage.take_changes().await;
                stage.commit_all();
            }
            _ = due.tick(), if stage.batch.is_some() => {
                stage.take_changes().await;
                if let Some(batch) = &mut stage.batch {
                    batch.tick();
                }
            }
        }
        stage.pump();
        stage.settle_transaction();
    }

    // Drain: send what closed and wait for the acknowledgements (bounded), then commit the
    // checkpoints. Open windows are rebuilt by the next run from the committed offsets.
    let drain_deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(drain_deadline);
    while stage.fatal.is_none() && (!stage.outbox.is_empty() || stage.outputs.in_flight() > 0) {
        tokio::select! {
            event = stage.outputs.next() => match event {
                Event::Landed(landed) => stage.on_landed(landed),
                Event::Retry { owner, attempt, out } => stage.send(out, owner, attempt),
            },
            _ = &mut drain_deadline => {
                warn!(outputs = stage.outputs.in_flight(), "analytics drain timed out; the next run emits those windows again");
                break;
            }
        }
        stage.pump();
    }
    stage.take_changes().await;
    if let Some(batch) = &mut stage.batch {
        if stage.fatal.is_none() && stage.outbox.is_empty() && stage.outputs.in_flight() == 0 {
            batch.commit_now();
            stage.settle_transaction();
        } else if let Some(batch) = &stage.batch
            && let Err(error) = batch.transaction.abort()
        {
            warn!(%error, "abort on shutdown failed");
        }
    } else {
        stage.commit_all();
    }
    stage.outputs.flush(Duration::from_secs(10));
    info!("analytics stage stopped");
    match stage.fatal {
        Some(error) => Err(error),
        None => Ok(()),
    }
}
