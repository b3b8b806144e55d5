//! The analytics stage's state: windows per partition, the outbox of closed windows and
//! their outputs in flight.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use backon::{BlockingRetryable as _, ExponentialBuilder};
use log_schema::ValidatedRecord;
use pipeline_runtime::{
    failure::{ProduceFailure, ReportedAt, classify_produce},
    kafka::{
        Backpressure, Checkpoints, Lags, PartitionChange, PartitionChanges, PipelineContext,
        committed_with_metadata,
    },
    stage::SharedConsumer,
    telemetry::LogLimiter,
};
use rdkafka::consumer::Consumer as _;
use tracing::{info, warn};

/// How a partition's restore asks again while the group coordinator or a broker is moving or
/// restarting (a leader's failover takes a broker session, 9 s by default): about a minute.
const RESTORE_BACKOFF: ExponentialBuilder = ExponentialBuilder::new()
    .with_max_delay(Duration::from_secs(5))
    .with_max_times(12);

use super::{
    ALERTS, CAPPED, CHECKPOINT_ERRORS, DUPLICATES, LATE_EVENTS, SKIPPED, UNCOUNTED, WINDOWS_CLOSED,
    WINDOWS_OPEN,
};
use crate::{
    ReaderArgs, ReaderStats, TRANSACTIONAL_CONSUMER,
    batch::Batch,
    outputs::{Landed, Out, Outputs},
    windows::{
        Closed, Emission, IdleStep, Observed, RestoreError, Side, Thresholds, WindowConfig, Windows,
    },
};
/// A closed window whose outputs are in flight.
pub(super) struct Waiting {
    left: usize,
    partition: i32,
    emission: Emission,
    alerts: Vec<&'static str>,
}

/// What tells the two analytics stages apart: the side their windows are keyed by, and its
/// topics, group and settings.
pub(crate) struct Keyed {
    pub(crate) side: Side,
    /// The side's name in logs and metric labels (`source`, `destination`).
    pub(crate) label: &'static str,
    pub(crate) input: String,
    pub(crate) group: String,
    pub(crate) stats_topic: String,
    /// The setting of `stats_topic`, for error messages.
    pub(crate) stats_setting: &'static str,
    /// Appended to the transactional id in exactly-once mode.
    pub(crate) stage: &'static str,
    pub(crate) allowlist: crate::allowlist::Allowlist,
}

impl Keyed {
    /// Per source, over the validated topic.
    pub(crate) fn sources(args: &ReaderArgs) -> Self {
        Self {
            side: Side::Source,
            label: "source",
            input: args.validated_topic.clone(),
            group: args.analytics_group_id.clone(),
            stats_topic: args.stats_topic.clone(),
            stats_setting: "READER_STATS_TOPIC",
            stage: "analytics",
            allowlist: args.alert_allowlist.clone(),
        }
    }

    /// Per destination, over the topic the validation stage keys by destination.
    pub(crate) fn destinations(args: &ReaderArgs) -> Self {
        Self {
            side: Side::Destination,
            label: "destination",
            input: args.destination_topic.clone(),
            group: args.targets_group_id.clone(),
            stats_topic: args.target_stats_topic.clone(),
            stats_setting: "READER_TARGET_STATS_TOPIC",
            stage: "targets",
            allowlist: args.alert_target_allowlist.clone(),
        }
    }
}

pub(super) struct Analytics {
    /// Which address the windows are keyed by (`source`, `destination`).
    pub(super) side: Side,
    pub(super) label: &'static str,
    pub(super) stats_setting: &'static str,
    pub(super) input: Arc<str>,
    pub(super) stats_topic: Arc<str>,
    pub(super) alerts_topic: Arc<str>,
    pub(super) windows: Windows,
    pub(super) consumer: SharedConsumer,
    pub(super) changes: PartitionChanges,
    pub(super) checkpoints: Checkpoints,
    pub(super) lags: Lags,
    /// What was last committed per partition.
    pub(super) committed: HashMap<i32, (i64, String)>,
    pub(super) outputs: Outputs<u64>,
    /// Closed windows not sent yet.
    pub(super) outbox: VecDeque<Closed>,
    pub(super) waiting: HashMap<u64, Waiting>,
    pub(super) next_id: u64,
    pub(super) max_in_flight: usize,
    pub(super) flow: Backpressure,
    pub(super) stats: Arc<ReaderStats>,
    pub(super) log: LogLimiter,
    pub(super) fatal: Option<anyhow::Error>,
    /// The open transaction in exactly-once mode.
    pub(super) batch: Option<Batch>,
    /// When quiet partitions were last checked for idle steps.
    pub(super) last_window_tick: Instant,
    /// When checkpoints were last committed (at-least-once mode).
    pub(super) last_commit: Instant,
    /// Idle steps taken whose checkpoints are not committed yet.
    pub(super) pending_steps: Vec<IdleStep>,
}

impl Analytics {
    pub(super) fn new(
        args: &ReaderArgs,
        keyed: Keyed,
        context: PipelineContext,
        stats: Arc<ReaderStats>,
    ) -> anyhow::Result<Self> {
        let windows = Windows::new(WindowConfig {
            lateness: chrono::TimeDelta::seconds(args.allowed_lateness_secs as i64),
            idle: match args.idle_flush_ms {
                0 => Duration::MAX,
                ms => Duration::from_millis(ms),
            },
            thresholds: Thresholds {
                port_scan: args.alert_port_scan_ports,
                flood: args.alert_flood_events,
                deny_burst: args.alert_deny_burst_denied,
                host_sweep: args.alert_host_sweep_destinations,
                target_flood_sources: args.alert_target_flood_sources,
                target_flood_events: args.alert_target_flood_events,
                threat_match_events: args.alert_threat_match_events,
            },
            max_windows_per_minute: args.max_windows_per_minute,
            max_distinct_per_minute: args.max_distinct_per_minute,
            side: keyed.side,
            sweep_port: args.alert_host_sweep_port,
        })
        .with_allowlist(keyed.allowlist);
        let (changes, checkpoints, lags) = (
            context
                .changes
                .clone()
                .context("the analytics context must record partition changes")?,
            context.checkpoints.clone(),
            context.lags.clone(),
        );
        let (producer, batch, context) = crate::batch::producer_for(args, keyed.stage, context)?;
        // Offsets are committed explicitly (with their checkpoints, or by the transaction);
        // read_committed so that a transactional validation stage's aborted records are never
        // counted.
        let consumer = Arc::new(args.kafka.consumer(
            &keyed.group,
            context,
            TRANSACTIONAL_CONSUMER,
        )?);
        Ok(Self {
            side: keyed.side,
            label: keyed.label,
            stats_setting: keyed.stats_setting,
            input: Arc::from(keyed.input.as_str()),
            stats_topic: Arc::from(keyed.stats_topic.as_str()),
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
            last_window_tick: Instant::now(),
            last_commit: Instant::now(),
            pending_steps: Vec::new(),
        })
    }

    /// Takes the assignment changes since the last call: revoked partitions lose their state,
    /// assigned ones are restored from their committed checkpoints. Returns true when a
    /// revoke aborted the transaction and every partition went back to its checkpoint: a
    /// record fetched before that is read again and must not be taken now.
    pub(super) fn take_changes(&mut self) -> bool {
        if self
            .batch
            .as_ref()
            .is_some_and(|b| b.transaction.take_rolled_back())
        {
            // A revoke aborted the transaction: every partition returns to its committed
            // checkpoint (the queued changes are reflected in the current assignment).
            self.changes.take();
            self.rollback("partitions revoked");
            return true;
        }
        let mut assigned = Vec::new();
        for change in self.changes.take() {
            match change {
                PartitionChange::Revoked(topic, p) if *topic == *self.input => {
                    self.windows.revoke(p);
                    self.pending_steps.retain(|s| s.partition != p);
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
            return false;
        }
        // A coordinator that is moving or loading answers with a retriable error: ask again.
        // The stage cannot go on before its partitions are restored, so this blocks.
        let read = || {
            committed_with_metadata(
                &*self.consumer,
                &self.input,
                &assigned,
                Duration::from_secs(10),
            )
        };
        let committed = pipeline_runtime::run_blocking(|| {
            read.retry(RESTORE_BACKOFF)
            .notify(|error, delay| {
                warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot read the committed checkpoints yet");
            })
            .call()
        });
        let committed = match committed {
            Ok(c) => c,
            Err(error) => {
                // Without its checkpoint a partition cannot be restored exactly: stop, and let
                // the restart (or the next owner) take it over.
                self.fatal = Some(anyhow::anyhow!(
                    "cannot read the committed checkpoints of `{}`: {error}",
                    self.input
                ));
                return false;
            }
        };
        self.restore(committed);
        false
    }

    /// Restores partitions from their committed offsets and checkpoints.
    pub(super) fn restore(&mut self, committed: Vec<(i32, Option<i64>, String)>) {
        match self.topic_partitions() {
            Ok(count) => self.windows.set_topic_partitions(count),
            Err(error) => {
                self.fatal = Some(error);
                return;
            }
        }
        for (p, offset, metadata) in committed {
            match self.windows.assign(p, offset, &metadata) {
                Ok(closed) => self.queue(closed),
                Err(error @ RestoreError::PartitionsChanged { .. }) => {
                    metrics::counter!(CHECKPOINT_ERRORS.name, "side" => self.label).increment(1);
                    self.fatal = Some(anyhow::anyhow!(
                        "cannot restore partition {p} of `{}`: {error}",
                        self.input
                    ));
                    return;
                }
                Err(RestoreError::NotACheckpoint(reason)) => {
                    metrics::counter!(CHECKPOINT_ERRORS.name, "side" => self.label).increment(1);
                    warn!(
                        partition = p,
                        reason, "partition starts without window state"
                    );
                }
            }
            if let Some(offset) = offset {
                self.committed.insert(p, (offset, metadata));
            }
            info!(
                side = self.label,
                partition = p,
                offset,
                "analytics partition restored"
            );
        }
    }

    /// The validated topic's partition count, from the broker's metadata.
    /// The partition count of the validated topic. A broker that is down or restarting (its
    /// request times out, or it answers without the topic yet) is asked again, as the
    /// committed checkpoints are: a wrong count would stop the stage.
    fn topic_partitions(&self) -> anyhow::Result<usize> {
        let read = || -> anyhow::Result<usize> {
            let metadata = self
                .consumer
                .fetch_metadata(Some(&self.input), Duration::from_secs(10))?;
            let topic = metadata
                .topics()
                .iter()
                .find(|t| t.name() == &*self.input)
                .context("the brokers returned no metadata for it")?;
            if let Some(error) = topic.error() {
                anyhow::bail!("the brokers answered {error:?}");
            }
            match topic.partitions().len() {
                0 => anyhow::bail!("the brokers listed no partition"),
                n => Ok(n),
            }
        };
        pipeline_runtime::run_blocking(|| {
            read.retry(RESTORE_BACKOFF)
                .notify(|error, delay| {
                    warn!(
                        error = format!("{error:#}"),
                        retry_in_ms = delay.as_millis() as u64,
                        topic = %self.input,
                        "cannot read the partitions of the analytics input yet"
                    );
                })
                .call()
        })
        .with_context(|| format!("read the partitions of `{}`", self.input))
    }

    pub(super) fn on_message(&mut self, partition: i32, offset: i64, payload: &[u8]) {
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
                    Observed::Late => {
                        metrics::counter!(LATE_EVENTS.name, "side" => self.label).increment(1)
                    }
                    Observed::Duplicate => {
                        metrics::counter!(DUPLICATES.name, "side" => self.label).increment(1)
                    }
                    Observed::Uncounted => {
                        metrics::counter!(UNCOUNTED.name, "side" => self.label).increment(1)
                    }
                    Observed::Evicted { events } => {
                        metrics::counter!(UNCOUNTED.name, "side" => self.label)
                            .increment(events.unsigned_abs());
                    }
                    Observed::Counted | Observed::Final => {}
                }
                closed
            }
            Err(error) => {
                metrics::counter!(SKIPPED.name, "side" => self.label).increment(1);
                if let Some(suppressed) = self.log.allow() {
                    warn!(%error, partition, offset, suppressed, "not a validated record; not counted");
                }
                self.windows.skip(partition, offset)
            }
        };
        self.queue(closed);
    }

    /// Queues closed windows; their outputs count as in flight from now on.
    pub(super) fn queue(&mut self, closed: Vec<Closed>) {
        for c in closed {
            for _ in 0..=c.alerts.len() {
                self.flow.started(&self.consumer);
            }
            self.outbox.push_back(c);
        }
        metrics::gauge!(WINDOWS_OPEN.name, "side" => self.label)
            .set(self.windows.open_windows() as f64);
    }

    /// Sends queued windows while fewer than `max_in_flight` outputs are in flight; in
    /// exactly-once mode inside the open transaction (opened here when windows closed without
    /// a record: an idle step, or a restore at a step's position).
    pub(super) fn pump(&mut self) {
        if self.batch.is_none() && !self.pending_steps.is_empty() {
            // At-least-once: an idle step's windows go out once the step is committed, so a
            // crash before that cannot emit windows its replay would not close the same way.
            return;
        }
        if !self.outbox.is_empty()
            && let Some(batch) = &mut self.batch
            && let Err(error) = batch.begin()
        {
            return self.transaction_failed(error);
        }
        while self.outputs.in_flight() < self.max_in_flight
            && let Some(c) = self.outbox.pop_front()
        {
            let key = c.stats.source_ip.to_string().into_bytes();
            let payload = match self.side {
                Side::Source => c.stats.to_json(),
                Side::Destination => c.target().to_json(),
            };
            let mut outs = vec![Out {
                topic: self.stats_topic.clone(),
                key: Some(key.clone()),
                payload,
            }];
            outs.extend(c.alerts.iter().map(|a| Out {
                topic: self.alerts_topic.clone(),
                key: Some(key.clone()),
                payload: a.to_json(),
            }));
            if c.stats.sources_capped {
                metrics::counter!(CAPPED.name, "cap" => "sources", "side" => self.label)
                    .increment(1);
            }
            if c.stats.distinct_capped {
                metrics::counter!(CAPPED.name, "cap" => "distinct", "side" => self.label)
                    .increment(1);
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

    pub(super) fn send(&mut self, out: Out, id: u64, attempt: u32) {
        if let Err((error, out, id)) = self.outputs.send(out, id, attempt) {
            self.on_failed(&error, out, id, attempt, ReportedAt::Send);
        }
    }

    pub(super) fn on_failed(
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
                        self.stats_setting
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

    pub(super) fn on_landed(&mut self, landed: Landed<u64>) {
        match landed.report {
            Ok(Ok(_)) => {
                self.flow.finished(&self.consumer);
                let done = self.waiting.get_mut(&landed.owner).is_some_and(|w| {
                    w.left -= 1;
                    w.left == 0
                });
                if done && let Some(w) = self.waiting.remove(&landed.owner) {
                    self.windows.emitted(w.partition, w.emission);
                    metrics::counter!(WINDOWS_CLOSED.name, "side" => self.label).increment(1);
                    match self.side {
                        Side::Source => &self.stats.windows_closed,
                        Side::Destination => &self.stats.target_windows_closed,
                    }
                    .fetch_add(1, Relaxed);
                    for rule in w.alerts {
                        metrics::counter!(ALERTS.name, "rule" => rule).increment(1);
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
    /// checkpoint committed before the windows the step closed are sent.
    pub(super) fn tick(&mut self) {
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
        // Their windows are sent once the steps are committed (`pump`).
        let partitions: Vec<i32> = stepped.iter().map(|s| s.partition).collect();
        self.pending_steps.extend(stepped);
        match &mut self.batch {
            Some(batch) => batch.commit_now(),
            None => self.commit(&partitions),
        }
    }

    /// The checkpoints of `partitions` are committed: their idle steps are final. Each is
    /// logged once (`idle step committed`), for operators and for the tests and drills that
    /// compare the outputs with the reference model.
    pub(super) fn steps_committed(&mut self, partitions: &[i32]) {
        let (done, pending): (Vec<IdleStep>, Vec<IdleStep>) =
            std::mem::take(&mut self.pending_steps)
                .into_iter()
                .partition(|s| partitions.contains(&s.partition));
        self.pending_steps = pending;
        for s in done {
            info!(
                topic = %self.input,
                partition = s.partition,
                position = s.position,
                horizon = %s.horizon.to_rfc3339(),
                "idle step committed"
            );
        }
    }
}
