//! The consumer context of every consume loop: rebalances (revoke commits or aborts, partition
//! changes for stateful loops), statistics (lag gauges, broker readiness).

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
};

use rdkafka::{
    ClientContext, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance},
    statistics::Statistics,
    types::RDKafkaErrorCode,
};
use tracing::{info, warn};

use super::{Checkpoints, SharedTracker, commit_checkpoints};
use crate::telemetry::{Metric, MetricKind};

/// Gauge: records behind the partition's end, per topic and partition.
pub const CONSUMER_LAG: Metric = Metric {
    name: "kafka_consumer_lag",
    kind: MetricKind::Gauge,
    labels: &["topic"],
    help: "High watermark minus consumer position, per partition",
};
/// Gauge: partitions assigned, per topic.
pub const ASSIGNED_PARTITIONS: Metric = Metric {
    name: "kafka_assigned_partitions",
    kind: MetricKind::Gauge,
    labels: &["topic"],
    help: "Partitions assigned to this service's consumers, per topic",
};

/// The consumer metrics.
pub const METRICS: &[Metric] = &[CONSUMER_LAG, ASSIGNED_PARTITIONS];

/// Consumer context of the pipeline's consume loops: logs rebalances and, on revoke, forgets
/// the revoked partitions' in-flight records and synchronously commits what was stored (only
/// acknowledged work is ever stored), so the next owner resumes exactly after it.
#[derive(Debug, Clone)]
pub struct PipelineContext {
    /// The loop's tracker.
    pub tracker: SharedTracker,
    /// Number of partitions currently assigned to this consumer (for status and readiness).
    pub assigned: Arc<AtomicUsize>,
    /// Readiness checks `kafka` (a broker connection is up) and the group check (joined the
    /// consumer group: an assignment arrived, possibly empty).
    pub readiness: crate::observe::Readiness,
    /// Name of the group check: `group`, or another name for a service's second consumer.
    pub group_check: &'static str,
    /// Partitions assigned and revoked, in order, for a loop with per-partition state that
    /// asked for them ([`PipelineContext::with_partition_changes`]): the callbacks run inside
    /// the loop's own `recv`, so the loop sees a revoke before any record or tick that follows
    /// it.
    pub changes: Option<PartitionChanges>,
    /// Offsets with metadata to commit for a partition when it is revoked, for a loop that
    /// commits explicitly (checkpoints); empty for loops that store offsets.
    pub checkpoints: Checkpoints,
    /// Latest consumer lag per (topic, partition) from librdkafka's statistics (every 5 s),
    /// with the time it was reported.
    pub lags: Lags,
    /// The loop's transaction in exactly-once mode: aborted on revoke, and nothing is
    /// committed by the consumer itself ([`crate::transaction`]).
    pub transaction: Option<crate::transaction::Transaction>,
}

impl PipelineContext {
    /// A context whose readiness checks start failing until proven otherwise.
    pub fn new(readiness: crate::observe::Readiness, assigned: Arc<AtomicUsize>) -> Self {
        readiness.declare("kafka", "no broker connection yet");
        readiness.declare("group", "not in the consumer group yet");
        Self {
            tracker: SharedTracker::default(),
            assigned,
            readiness,
            group_check: "group",
            changes: None,
            checkpoints: Checkpoints::default(),
            lags: Arc::default(),
            transaction: None,
        }
    }

    /// The same context for a transactional loop: a revoke aborts `transaction` (the loop
    /// rolls back) instead of committing offsets.
    pub fn with_transaction(mut self, transaction: crate::transaction::Transaction) -> Self {
        self.transaction = Some(transaction);
        self
    }

    /// The same context with its own group check (for a service's second consumer group),
    /// failing until that consumer joins its group.
    pub fn with_group_check(mut self, name: &'static str) -> Self {
        self.readiness
            .declare(name, "not in the consumer group yet");
        self.group_check = name;
        self
    }

    /// The same context recording assignment changes in [`PipelineContext::changes`] (the loop
    /// must take them).
    pub fn with_partition_changes(mut self) -> Self {
        self.changes = Some(PartitionChanges::default());
        self
    }
}

/// A partition assignment change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionChange {
    /// Assigned (with eager assignment: every partition of the new assignment).
    Assigned(String, i32),
    /// Revoked (with eager assignment: every partition of the old assignment).
    Revoked(String, i32),
}

/// Assignment changes not yet taken by the loop.
#[derive(Debug, Clone, Default)]
pub struct PartitionChanges(Arc<Mutex<VecDeque<PartitionChange>>>);

impl PartitionChanges {
    fn push(&self, tpl: &TopicPartitionList, change: fn(String, i32) -> PartitionChange) {
        let mut q = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for e in tpl.elements() {
            q.push_back(change(e.topic().to_owned(), e.partition()));
        }
    }

    /// The changes since the last call, oldest first.
    pub fn take(&self) -> Vec<PartitionChange> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect()
    }
}

/// Consumer lag per (topic, partition) and when it was reported.
pub type Lags = Arc<Mutex<HashMap<(String, i32), (i64, std::time::Instant)>>>;

/// True when at least one real broker (not a bootstrap placeholder) is connected.
pub fn brokers_up(stats: &Statistics) -> bool {
    stats
        .brokers
        .values()
        .any(|b| b.nodeid >= 0 && b.state == "UP")
}

impl ClientContext for PipelineContext {
    fn stats(&self, stats: Statistics) {
        let up = brokers_up(&stats);
        self.readiness.set_kafka(up);
        let mut lags = self.lags.lock().unwrap_or_else(PoisonError::into_inner);
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                // Lag = high watermark − position (the next offset the application reads).
                // librdkafka's own `consumer_lag` counts from the committed offset, which the
                // stream-reader deliberately holds back behind open windows.
                let position = if p.app_offset >= 0 {
                    p.app_offset
                } else {
                    p.committed_offset
                };
                if *partition < 0 || p.fetch_state != "active" || p.hi_offset < 0 || position < 0 {
                    continue;
                }
                let lag = (p.hi_offset - position).max(0);
                lags.insert(
                    (topic.clone(), *partition),
                    (lag, std::time::Instant::now()),
                );
                metrics::gauge!(
                    CONSUMER_LAG.name,
                    "topic" => topic.clone(),
                    "partition" => partition.to_string()
                )
                .set(lag as f64);
            }
        }
    }
}

impl ConsumerContext for PipelineContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.tracker.lock().forget(tpl);
            if let Some(changes) = &self.changes {
                changes.push(tpl, PartitionChange::Revoked);
            }
            self.lags
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
            if let Some(transaction) = &self.transaction {
                // Past this callback the partitions may be another member's: nothing derived
                // from them may be committed any more.
                info!(partitions = tpl.count(), "partitions revoked");
                transaction.abort_on_revoke();
                return;
            }
            info!(
                partitions = tpl.count(),
                "partitions revoked, committing acknowledged offsets"
            );
            let checkpoints = self.checkpoints.take(tpl);
            if let Err(error) = commit_checkpoints(consumer, &checkpoints, CommitMode::Sync) {
                warn!(%error, "checkpoint commit on revoke failed");
            }
            // Librdkafka calls this from the consumer's poll, i.e. on a runtime worker: the
            // synchronous commit (one broker round trip, longer while the coordinator moves)
            // must not stall the other tasks.
            let committed =
                crate::run_blocking(|| consumer.commit_consumer_state(CommitMode::Sync));
            if let Err(error) = committed {
                // "No offset" simply means nothing new was stored since the last commit.
                if !matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::NoOffset)) {
                    warn!(%error, "commit on revoke failed");
                }
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts: Vec<String> = tpl
                    .elements()
                    .iter()
                    .map(|e| format!("{}/{}", e.topic(), e.partition()))
                    .collect();
                info!(partitions = ?parts, "partitions assigned");
                if let Some(changes) = &self.changes {
                    changes.push(tpl, PartitionChange::Assigned);
                }
                self.record_assignment(consumer, tpl);
                // In the group, even with nothing assigned: an instance beyond the partition count
                // is a ready standby, not a failure.
                self.readiness.set(self.group_check, Ok(()));
            }
            Rebalance::Error(error) => warn!(%error, "rebalance error"),
            Rebalance::Revoke(tpl) => self.record_assignment(consumer, tpl),
        }
    }
}

impl PipelineContext {
    /// Publishes the consumer's current assignment (with cooperative or KIP-848 rebalancing a
    /// callback's `changed` list is only what was added or removed), per topic, so that two
    /// consumers of one service (the stream-reader's stages) do not overwrite each other.
    fn record_assignment(&self, consumer: &BaseConsumer<Self>, changed: &TopicPartitionList) {
        let assignment = consumer.assignment().unwrap_or_default();
        self.assigned.store(assignment.count(), Ordering::Relaxed);
        let mut per_topic: HashMap<String, usize> = changed
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), 0))
            .collect();
        for e in assignment.elements() {
            *per_topic.entry(e.topic().to_owned()).or_default() += 1;
        }
        for (topic, n) in per_topic {
            metrics::gauge!(ASSIGNED_PARTITIONS.name, "topic" => topic).set(n as f64);
        }
    }
}
