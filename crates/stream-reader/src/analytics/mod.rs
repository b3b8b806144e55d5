//! The analytics stage: `ip_logs_validated` → per-source one-minute windows → `ip_stats` and
//! `ip_alerts`; and, with `READER_DESTINATION_WINDOWS`, a second instance of it over
//! `ip_logs_by_destination` → per-destination windows → `ip_target_stats` and `ip_alerts`
//! (`target_flood`), in its own group (`READER_TARGETS_GROUP_ID`). Everything below holds for
//! both ([`Keyed`]).
//!
//! It reads the validated topic in its own consumer group, so its windows see a stream keyed
//! by canonical source IP that the validation stage guarantees, whatever keys (or none) the
//! producers of `ip_logs` used. Each assigned partition is one deterministic state machine
//! ([`crate::windows`]).
//!
//! **Guarantee: every closed window is final.** Offsets are committed explicitly, with the
//! partition's window checkpoint as offset metadata ([`Windows::checkpoint`]): every second,
//! synchronously for a partition that took an idle step (before the windows it closed are
//! sent), for each revoked partition in the revoke callback, and on shutdown. On
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
//! another partition's state): checkpoints record it, and a restore that finds another count
//! stops the stage with an error.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context as _;
use pipeline_runtime::telemetry::{Metric, MetricKind};
use pipeline_runtime::{
    kafka::PipelineContext,
    observe,
    stage::{self, Loop, SharedConsumer, Stage},
};
use rdkafka::{Message as _, consumer::Consumer as _, message::BorrowedMessage};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{ReaderArgs, ReaderStats, batch::Batch, outputs::Event};
use state::Analytics;
pub(crate) use state::Keyed;

mod commit;
mod state;

/// Windows closed, emitted and acknowledged.
pub const WINDOWS_CLOSED: Metric = Metric {
    name: "reader_windows_closed_total",
    kind: MetricKind::Counter,
    labels: &["side"],
    help: "Per-IP windows closed and emitted (ip_stats, ip_target_stats), by side",
};
/// Alerts emitted and acknowledged, by rule.
pub const ALERTS: Metric = Metric {
    name: "reader_alerts_total",
    kind: MetricKind::Counter,
    labels: &["rule"],
    help: "Alerts emitted to ip_alerts, by rule",
};
/// Windows open.
pub const WINDOWS_OPEN: Metric = Metric {
    name: "reader_windows_open",
    kind: MetricKind::Gauge,
    labels: &["side"],
    help: "Per-IP windows currently open, by side",
};
/// Valid events not counted because their window had closed.
pub const LATE_EVENTS: Metric = Metric {
    name: "late_events_total",
    kind: MetricKind::Counter,
    labels: &["side"],
    help: "Valid events whose window had already closed (not counted)",
};
/// Validated records the validation stage emitted more than once, counted once.
pub const DUPLICATES: Metric = Metric {
    name: "reader_window_duplicates_total",
    kind: MetricKind::Counter,
    labels: &["side"],
    help: "Validated records seen again after a validation-stage restart (counted once)",
};
/// Events no longer counted because their window was evicted from a full minute.
pub const UNCOUNTED: Metric = Metric {
    name: "reader_window_uncounted_events_total",
    kind: MetricKind::Counter,
    labels: &["side"],
    help: "Events not counted: their window was evicted from a minute at the per-partition window cap",
};
/// Windows emitted with a cap flag, by cap (`sources`, `distinct`).
pub const CAPPED: Metric = Metric {
    name: "reader_windows_capped_total",
    kind: MetricKind::Counter,
    labels: &["cap", "side"],
    help: "Windows emitted with a cap flag, by cap",
};
/// Records of the validated topic that are not validated records (not counted).
pub const SKIPPED: Metric = Metric {
    name: "reader_analytics_skipped_total",
    kind: MetricKind::Counter,
    labels: &["side"],
    help: "Records of the validated topic that are not validated records",
};
/// Committed offset metadata that was not a window checkpoint (the partition started empty).
pub const CHECKPOINT_ERRORS: Metric = Metric {
    name: "reader_checkpoint_errors_total",
    kind: MetricKind::Counter,
    labels: &["side"],
    help: "Committed offset metadata that was not a window checkpoint",
};

/// Registers the stage's metrics with help texts and zero values.
/// Every metric of the analytics stage.
pub const METRICS: &[Metric] = &[
    WINDOWS_CLOSED,
    ALERTS,
    WINDOWS_OPEN,
    LATE_EVENTS,
    DUPLICATES,
    UNCOUNTED,
    CAPPED,
    SKIPPED,
    CHECKPOINT_ERRORS,
];

/// Zero values of the labelled series (help texts: [`crate::metrics::describe_metrics`]) of
/// the sides that run (`source`, and `destination` with `READER_DESTINATION_WINDOWS`).
pub(crate) fn describe_metrics(sides: &[&'static str]) {
    for rule in log_schema::AlertRule::ALL {
        metrics::counter!(ALERTS.name, "rule" => rule.as_str()).absolute(0);
    }
    for side in sides {
        for cap in ["sources", "distinct"] {
            metrics::counter!(CAPPED.name, "cap" => cap, "side" => *side).absolute(0);
        }
        for counter in [
            WINDOWS_CLOSED,
            LATE_EVENTS,
            DUPLICATES,
            UNCOUNTED,
            SKIPPED,
            CHECKPOINT_ERRORS,
        ] {
            metrics::counter!(counter.name, "side" => *side).absolute(0);
        }
        metrics::gauge!(WINDOWS_OPEN.name, "side" => *side).set(0.0);
    }
}

/// Runs the analytics stage of `keyed`'s side until `shutdown` is cancelled.
pub(crate) async fn run_until(
    args: ReaderArgs,
    keyed: Keyed,
    shutdown: CancellationToken,
    stats: Arc<ReaderStats>,
    readiness: observe::Readiness,
) -> anyhow::Result<()> {
    let (partitions, check) = match keyed.side {
        crate::windows::Side::Source => (stats.analytics_partitions.clone(), "analytics-group"),
        crate::windows::Side::Destination => (stats.target_partitions.clone(), "targets-group"),
    };
    let context = PipelineContext::new(readiness, partitions)
        .with_group_check(check)
        .with_partition_changes();
    let (input, group, side) = (keyed.input.clone(), keyed.group.clone(), keyed.label);
    let mut stage = Analytics::new(&args, keyed, context, stats)?;
    stage
        .consumer
        .subscribe(&[&input])
        .with_context(|| format!("subscribe to `{input}`"))?;
    info!(topic = %input, group = %group, side, "analytics stage started");
    let timers = Loop {
        tick: if stage.batch.is_some() {
            Batch::check_period(args.transaction_interval_ms).min(WINDOW_TICK)
        } else {
            WINDOW_TICK
        },
        status: Duration::from_secs(args.status_interval_secs.max(1)),
        drain: Duration::from_secs(30),
    };
    stage::run(&mut stage, timers, &shutdown).await
}

/// How often quiet partitions are checked for idle steps.
const WINDOW_TICK: Duration = Duration::from_millis(200);
/// How often checkpoints are committed in at-least-once mode.
const COMMIT_EVERY: Duration = Duration::from_secs(1);

impl Stage for Analytics {
    type Event = Event<u64>;

    fn consumer(&self) -> SharedConsumer {
        self.consumer.clone()
    }

    fn next_event(&mut self) -> impl Future<Output = Event<u64>> + Send {
        self.outputs.next()
    }

    fn on_event(&mut self, event: Event<u64>) {
        match event {
            Event::Landed(landed) => self.on_landed(landed),
            Event::Retry {
                owner,
                attempt,
                out,
            } => self.send(out, owner, attempt),
        }
    }

    fn accepting(&self) -> bool {
        self.flow.accepting() && !self.committing()
    }

    fn on_record(&mut self, message: &BorrowedMessage<'_>) {
        // Revocations and assignments of this recv come first; after a rollback the record
        // is read again from the committed checkpoint.
        if !self.take_changes() && self.fatal.is_none() {
            self.on_message(
                message.partition(),
                message.offset(),
                message.payload().unwrap_or_default(),
            );
        }
    }

    fn on_tick(&mut self) {
        self.take_changes();
        self.flow.tick(&self.consumer);
        if self.last_window_tick.elapsed() >= WINDOW_TICK {
            self.last_window_tick = std::time::Instant::now();
            self.tick();
        }
        self.save_steps();
        match &mut self.batch {
            Some(batch) => batch.tick(),
            None if self.last_commit.elapsed() >= COMMIT_EVERY => {
                self.last_commit = std::time::Instant::now();
                self.commit_all();
            }
            None => {}
        }
    }

    /// Revocations and assignments first (a consume error's `recv` may have brought some),
    /// then the queued windows, then a due commit.
    fn settle(&mut self) {
        self.take_changes();
        self.pump();
        self.settle_transaction();
    }

    /// The validation stage's status line covers both stages.
    fn log_status(&mut self) {}

    fn failed(&self) -> bool {
        self.fatal.is_some()
    }

    /// Closed windows are sent and their acknowledgements awaited; open windows are rebuilt
    /// by the next run from the committed offsets.
    fn draining(&self) -> bool {
        self.fatal.is_none() && (!self.outbox.is_empty() || self.outputs.in_flight() > 0)
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.take_changes();
        let drained = self.outbox.is_empty() && self.outputs.in_flight() == 0;
        match &mut self.batch {
            Some(batch) if self.fatal.is_none() && drained => {
                batch.commit_now();
                self.settle_transaction();
            }
            Some(batch) => {
                if let Err(error) = batch.transaction.abort() {
                    warn!(%error, "abort on shutdown failed");
                }
            }
            None => self.commit_all(),
        }
        self.outputs.flush(Duration::from_secs(10));
        info!("analytics stage stopped");
        self.fatal.take().map_or(Ok(()), Err)
    }
}
