//! stream-reader: validates, enriches and routes `ip_logs`, and computes per-IP window
//! statistics and alerts from the result.
//!
//! Two stages run in one process, each with its own consumer group:
//!
//! * **Validation** (this module, group `READER_GROUP_ID`): every input record ends in exactly
//!   one of two outputs: the validated, enriched record on `ip_logs_validated` (keyed by the
//!   canonical text of its source IP), or a dead letter on `ip_logs_dlq` with the reason and
//!   the original bytes (UTF-8 as is, otherwise base64; truncated and flagged only if it would
//!   not fit). A record that cannot be parsed at all is a dead letter, never an error of the
//!   service.
//! * **Analytics** ([`analytics`], group `READER_ANALYTICS_GROUP_ID`): reads
//!   `ip_logs_validated`, which the validation stage keys by source IP whatever the producers
//!   of `ip_logs` did, and emits each closed one-minute window to `ip_stats` and its alerts to
//!   `ip_alerts`, exactly as an uninterrupted run would ([`windows`]).
//! * **Targets** (with `READER_DESTINATION_WINDOWS`; the same stage, group
//!   `READER_TARGETS_GROUP_ID`): the validation stage also sends every validated record to
//!   `ip_logs_by_destination`, keyed by destination IP, and acknowledges its input only once
//!   both copies landed; the targets stage computes per-destination windows from it into
//!   `ip_target_stats` and `target_flood` alerts into `ip_alerts`, under the same rule.
//!
//! **Delivery guarantee: `READER_DELIVERY`.** With `exactly-once` each stage produces its
//! outputs (validated records and dead letters; window stats and alerts) with a transactional
//! producer and commits them together with its input offsets (the analytics stage's with their
//! window checkpoints) in one Kafka transaction per `READER_TRANSACTION_INTERVAL_MS` or
//! `READER_TRANSACTION_MAX_RECORDS` ([`batch`], [`pipeline_runtime::transaction`]): a
//! `read_committed` consumer sees each input record's outputs exactly once. A failed output or
//! commit aborts the transaction and the stage rolls back to its committed offsets (and
//! checkpoints); a revocation aborts the open transaction inside the rebalance callback; a
//! producer that fails for good or wedges is replaced and the stage rolls back, and one fenced
//! again and again (by another instance with the same transactional id) stops the service
//! ([`pipeline_runtime::transaction`]). What follows describes the default, `at-least-once`.
//!
//! **Delivery guarantee of the validation stage: at-least-once.** An input offset is stored
//! only after the broker acknowledged that record's output, and only over contiguous progress
//! per partition ([`OffsetTracker`]); stored offsets are committed every second, on partition
//! revoke (per partition: the tracker forgets only the revoked ones), and on graceful shutdown.
//! After a crash, records past the last commit are processed again; their `event_id` is
//! derived from their Kafka coordinates (or their own UUID), so a reprocessed record carries
//! the same id and the writer's upsert keeps Cassandra free of duplicates, and the analytics
//! stage counts it once (by its `source` coordinates).
//!
//! Produces are pipelined ([`outputs`]), at most `max_in_flight` input records at a time; past
//! that the loop stops taking records. A failed produce is retried with exponential backoff
//! and jitter, without limit: the record is neither skipped nor is the service crash-looped; a
//! partition whose output keeps failing is reported by `/readyz`. A produce that can never
//! succeed is not retried ([`pipeline_runtime::failure`]): an output Kafka refuses for this
//! record alone becomes an `output_rejected` dead letter (a dead letter too large for the
//! producer is sent again without its payload, flagged); a failure no record can get past
//! (missing topic, no permission, invalid configuration) stops the service with an error
//! naming the topic and its setting, after committing what was finished. A lost delivery
//! report is a failed delivery: the output is sent again. The output producer is idempotent
//! (`KafkaArgs::producer_config`): a librdkafka retry never duplicates an output; a
//! reprocessed record after a crash still does, with the same deterministic id.
//!
//! [`OffsetTracker`]: pipeline_runtime::kafka::OffsetTracker

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use anyhow::Context as _;
use log_schema::ErrorKind;
use pipeline_runtime::{observe, shutdown};
use tokio_util::sync::CancellationToken;
use tracing::info;

pub mod allowlist;
pub mod analytics;
mod batch;
mod config;
pub mod geoip;
mod metrics;
mod outputs;
pub mod reference;
pub mod threats;
mod validation;
mod watched;
pub mod windows;

pub use config::ReaderArgs;
pub use metrics::METRICS;

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
    /// Partitions currently assigned to the validation stage.
    pub assigned_partitions: Arc<AtomicUsize>,
    /// Partitions of the validated topic currently assigned to the analytics stage.
    pub analytics_partitions: Arc<AtomicUsize>,
    /// Partitions of the by-destination topic currently assigned to the targets stage.
    pub target_partitions: Arc<AtomicUsize>,
    /// Source windows closed and emitted (acknowledged).
    pub windows_closed: AtomicU64,
    /// Destination windows closed and emitted (acknowledged).
    pub target_windows_closed: AtomicU64,
    /// Alerts emitted (acknowledged).
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

/// Settings renamed on 2026-12-07 to carry the service's prefix: the reader refuses to start
/// while an old name is set.
pub const RENAMED: &pipeline_runtime::renamed::Renamed = &[
    ("MAX_RECORD_BYTES", "READER_MAX_RECORD_BYTES"),
    ("MAX_FUTURE_SKEW_SECS", "READER_MAX_FUTURE_SKEW_SECS"),
    ("ALERT_PORT_SCAN_PORTS", "READER_ALERT_PORT_SCAN_PORTS"),
    ("ALERT_FLOOD_EVENTS", "READER_ALERT_FLOOD_EVENTS"),
    ("ALERT_DENY_BURST_DENIED", "READER_ALERT_DENY_BURST_DENIED"),
    ("GEOIP_CITY_DB", "READER_GEOIP_CITY_DB"),
    ("GEOIP_ASN_DB", "READER_GEOIP_ASN_DB"),
    (
        "GEOIP_RELOAD_INTERVAL_MS",
        "READER_GEOIP_RELOAD_INTERVAL_MS",
    ),
];

/// Runs until SIGINT/SIGTERM.
pub async fn run(args: ReaderArgs) -> anyhow::Result<()> {
    pipeline_runtime::renamed::refuse_in_env(RENAMED)?;
    run_until(args, shutdown::on_signals(), Arc::default()).await
}

/// Consumer settings of a transactional stage: offsets are committed only by the transaction,
/// and only committed records are read (offsets fetched with KIP-447's `require_stable`).
pub(crate) const TRANSACTIONAL_CONSUMER: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("isolation.level", "read_committed"),
];

/// The start-up check of the brokers' TLS, the credentials and the ACLs of every topic and
/// group the enabled stages use: a failure ends the service before it consumes anything.
fn check_kafka_access(args: &ReaderArgs) -> anyhow::Result<()> {
    use pipeline_runtime::kafka::access::{Group, check};
    let mut topics = vec![
        args.input_topic.as_str(),
        args.validated_topic.as_str(),
        args.dlq_topic.as_str(),
    ];
    let mut groups = vec![Group {
        id: &args.group_id,
        setting: "READER_GROUP_ID",
    }];
    if args.analytics {
        topics.extend([args.stats_topic.as_str(), args.alerts_topic.as_str()]);
        groups.push(Group {
            id: &args.analytics_group_id,
            setting: "READER_ANALYTICS_GROUP_ID",
        });
    }
    if args.destination_windows() {
        topics.extend([
            args.destination_topic.as_str(),
            args.target_stats_topic.as_str(),
        ]);
        groups.push(Group {
            id: &args.targets_group_id,
            setting: "READER_TARGETS_GROUP_ID",
        });
    }
    pipeline_runtime::run_blocking(|| check(&args.kafka, &topics, &groups))
}

/// Runs both stages until `shutdown` is cancelled, counting into `stats`. A stage that fails
/// stops the other.
pub async fn run_until(
    args: ReaderArgs,
    shutdown: CancellationToken,
    stats: Arc<ReaderStats>,
) -> anyhow::Result<()> {
    let readiness = observe::Readiness::default();
    let server_stop = shutdown.child_token();
    let server = observe::serve(args.metrics_addr, readiness.clone(), server_stop.clone()).await?;
    metrics::describe_metrics(args.destination_windows());
    check_kafka_access(&args)?;
    let stop = shutdown.child_token();
    // Reading the databases (tens of MB) is file I/O: off the runtime's workers.
    let geo = pipeline_runtime::run_blocking(|| {
        geoip::GeoIp::open(args.geoip_city_db.clone(), args.geoip_asn_db.clone())
    });
    geo.watch(
        Duration::from_millis(args.geoip_reload_interval_ms),
        stop.clone(),
    );
    let threats = pipeline_runtime::run_blocking(|| threats::ThreatLists::open(&args.threat_lists));
    threats.watch(
        Duration::from_millis(args.threat_reload_interval_ms),
        stop.clone(),
    );
    let mut sides = Vec::new();
    if args.analytics {
        sides.push(analytics::Keyed::sources(&args));
    }
    if args.destination_windows() {
        sides.push(analytics::Keyed::destinations(&args));
    }
    let analytics: Vec<_> = sides
        .into_iter()
        .map(|keyed| {
            let (args, stop, stats, readiness) =
                (args.clone(), stop.clone(), stats.clone(), readiness.clone());
            tokio::spawn(async move {
                let result =
                    analytics::run_until(args, keyed, stop.clone(), stats, readiness).await;
                stop.cancel();
                result
            })
        })
        .collect();
    let validated =
        validation::validate_until(args, stop.clone(), stats, readiness, geo, threats).await;
    stop.cancel();
    let mut analysed = Ok(());
    for task in analytics {
        let result = task.await.context("analytics stage panicked")?;
        analysed = analysed.and(result);
    }
    server_stop.cancel();
    let _ = server.await;
    info!("stream-reader stopped");
    validated.and(analysed)
}
