//! The writer's metrics: registration with help texts, and the low-cardinality kind of a
//! failed write.

use std::{
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use pipeline_runtime::telemetry::{self, Metric, MetricKind};

// Metric names, each defined once; help texts and labels are registered below.
/// `writer_batch_fallbacks_total`.
pub const BATCH_FALLBACKS: Metric = Metric {
    name: "writer_batch_fallbacks_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Batches that failed and were written row by row instead",
};
/// `writer_batched_rows_total`.
pub const BATCHED_ROWS: Metric = Metric {
    name: "writer_batched_rows_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "access_logs rows written in single-partition unlogged batches (per writer_batches_total: rows per batch)",
};
/// `writer_batches_total`.
pub const BATCHES: Metric = Metric {
    name: "writer_batches_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Single-partition unlogged batches of access_logs rows applied",
};
/// `writer_dead_letters_total`.
pub const DEAD_LETTERS: Metric = Metric {
    name: "writer_dead_letters_total",
    kind: MetricKind::Counter,
    labels: &["kind"],
    help: "Records sent to the dead-letter topic by kind",
};
/// `writer_e2e_latency_seconds`.
pub const E2E_LATENCY_SECONDS: Metric = Metric {
    name: "writer_e2e_latency_seconds",
    kind: MetricKind::Histogram,
    labels: &[],
    help: "Event timestamp to row written",
};
/// `writer_in_flight`.
pub const IN_FLIGHT: Metric = Metric {
    name: "writer_in_flight",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "Records consumed whose row is not written yet",
};
/// `writer_requests_in_flight`.
pub const REQUESTS_IN_FLIGHT: Metric = Metric {
    name: "writer_requests_in_flight",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "Cassandra requests (batches and single writes) in flight",
};
/// `writer_records_consumed_total`.
pub const RECORDS_CONSUMED: Metric = Metric {
    name: "writer_records_consumed_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Records consumed from the validated, stats and alerts topics",
};
/// `writer_rows_written_total`.
pub const ROWS_WRITTEN: Metric = Metric {
    name: "writer_rows_written_total",
    kind: MetricKind::Counter,
    labels: &["table"],
    help: "Rows written, by table",
};
/// `writer_write_errors_total`.
pub const WRITE_ERRORS: Metric = Metric {
    name: "writer_write_errors_total",
    kind: MetricKind::Counter,
    labels: &["kind"],
    help: "Failed write attempts by kind",
};
/// `writer_write_latency_seconds`.
pub const WRITE_LATENCY_SECONDS: Metric = Metric {
    name: "writer_write_latency_seconds",
    kind: MetricKind::Histogram,
    labels: &[],
    help: "Write latency per row (a batch's time for each of its rows), retries included",
};
/// `writer_write_retries_total`.
pub const WRITE_RETRIES: Metric = Metric {
    name: "writer_write_retries_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Write attempts that failed and were retried",
};

/// `writer_webhook_calls_total`.
pub const WEBHOOK_CALLS: Metric = Metric {
    name: "writer_webhook_calls_total",
    kind: MetricKind::Counter,
    labels: &["result"],
    help: "Calls of the alert webhook by result: accepted, failed (retried or given up), refused (the alert itself, dead-lettered at once)",
};
/// `writer_webhook_alerts_total`.
pub const WEBHOOK_ALERTS: Metric = Metric {
    name: "writer_webhook_alerts_total",
    kind: MetricKind::Counter,
    labels: &["outcome"],
    help: "Records of the alerts topic the hand-off finished, by outcome: delivered, dead_lettered (alert_undelivered), skipped (not an alert; the row stage dead-letters it)",
};
/// `writer_webhook_in_flight`.
pub const WEBHOOK_IN_FLIGHT: Metric = Metric {
    name: "writer_webhook_in_flight",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "Alerts taken by the hand-off and not yet delivered or dead-lettered",
};

/// Every metric of the writer (with its consumer's and transactions').
pub const METRICS: &[&[Metric]] = &[
    WRITER,
    pipeline_runtime::transaction::METRICS,
    pipeline_runtime::kafka::context::METRICS,
    pipeline_runtime::failure::METRICS,
];

/// The writer's own metrics.
const WRITER: &[Metric] = &[
    RECORDS_CONSUMED,
    ROWS_WRITTEN,
    BATCHES,
    BATCHED_ROWS,
    BATCH_FALLBACKS,
    WRITE_RETRIES,
    WRITE_ERRORS,
    DEAD_LETTERS,
    WRITE_LATENCY_SECONDS,
    E2E_LATENCY_SECONDS,
    IN_FLIGHT,
    REQUESTS_IN_FLIGHT,
    WEBHOOK_CALLS,
    WEBHOOK_ALERTS,
    WEBHOOK_IN_FLIGHT,
];

/// Registers every metric with help text and zero values.
pub(crate) fn describe_metrics() {
    for defined in METRICS {
        telemetry::describe(defined);
    }
    for table in [
        "access_logs",
        "ip_stats_by_ip",
        "top_talkers_by_minute",
        "top_talkers_by_country_minute",
        "top_talkers_by_asn_minute",
        "alerts",
    ] {
        metrics::counter!(ROWS_WRITTEN.name, "table" => table).absolute(0);
    }
    for kind in [
        "timeout",
        "unavailable",
        "overloaded",
        "connection",
        "rejected",
        "unauthorized",
        "other",
    ] {
        metrics::counter!(WRITE_ERRORS.name, "kind" => kind).absolute(0);
    }
    for kind in [
        "write_rejected",
        "malformed_json",
        "invalid_type",
        "alert_undelivered",
    ] {
        metrics::counter!(DEAD_LETTERS.name, "kind" => kind).absolute(0);
    }
    for result in ["accepted", "failed", "refused"] {
        metrics::counter!(WEBHOOK_CALLS.name, "result" => result).absolute(0);
    }
    for outcome in ["delivered", "dead_lettered", "skipped"] {
        metrics::counter!(WEBHOOK_ALERTS.name, "outcome" => outcome).absolute(0);
    }
    metrics::gauge!(WEBHOOK_IN_FLIGHT.name).set(0.0);
}

/// Running totals, shared by the write tasks and the status line.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Records consumed.
    pub consumed: AtomicU64,
    /// Rows written.
    pub written: AtomicU64,
    /// Of those, rows written in batches (by source) of more than one row.
    pub batched: AtomicU64,
    /// Batches (requests of more than one row) those rows went out in.
    pub batches: AtomicU64,
    /// Write attempts that failed and were retried.
    pub retries: AtomicU64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Alerts the hand-off delivered to the webhook.
    pub alerts_delivered: AtomicU64,
    /// Alerts the hand-off dead-lettered (`alert_undelivered`).
    pub alerts_undelivered: AtomicU64,
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
    pub(crate) fn take_percentiles(&self) -> (f64, f64) {
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
