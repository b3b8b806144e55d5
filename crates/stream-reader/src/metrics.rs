//! The validation stage's metrics and status line.

use std::{sync::atomic::Ordering::Relaxed, time::Instant};

use log_schema::ErrorKind;
use pipeline_runtime::telemetry::{self, Metric, MetricKind};
use tracing::info;

use crate::ReaderStats;

// Metric names, each defined once; help texts and labels are registered below.
/// `reader_in_flight`.
pub const IN_FLIGHT: Metric = Metric {
    name: "reader_in_flight",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "Outputs sent and not acknowledged yet (a validated record has two with destination windows)",
};
/// `reader_invalid_records_total`.
pub const INVALID_RECORDS: Metric = Metric {
    name: "reader_invalid_records_total",
    kind: MetricKind::Counter,
    labels: &["kind"],
    help: "Dead letters by error kind",
};
/// `reader_outputs_rejected_total`.
pub const OUTPUTS_REJECTED: Metric = Metric {
    name: "reader_outputs_rejected_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Outputs Kafka refused for good, dead-lettered instead",
};
/// `reader_produce_latency_seconds`.
pub const PRODUCE_LATENCY_SECONDS: Metric = Metric {
    name: "reader_produce_latency_seconds",
    kind: MetricKind::Histogram,
    labels: &[],
    help: "Output produce latency until acknowledged, retries included",
};
/// `reader_produce_retries_total`.
pub const PRODUCE_RETRIES: Metric = Metric {
    name: "reader_produce_retries_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Output produce attempts that failed and were retried",
};
/// `reader_records_consumed_total`.
pub const RECORDS_CONSUMED: Metric = Metric {
    name: "reader_records_consumed_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Records consumed from the input topic",
};
/// `reader_records_out_total`.
pub const RECORDS_OUT: Metric = Metric {
    name: "reader_records_out_total",
    kind: MetricKind::Counter,
    labels: &["output"],
    help: "Records acknowledged on an output topic, by output",
};

/// Registers every metric of the validation stage with its help text and zero values, so
/// dashboards show all series from the start.
/// Every metric of the stream-reader (both stages and their transactions).
pub const METRICS: &[&[Metric]] = &[
    &[
        RECORDS_CONSUMED,
        RECORDS_OUT,
        INVALID_RECORDS,
        PRODUCE_RETRIES,
        PRODUCE_LATENCY_SECONDS,
        IN_FLIGHT,
        OUTPUTS_REJECTED,
    ],
    crate::analytics::METRICS,
    pipeline_runtime::transaction::METRICS,
    pipeline_runtime::kafka::context::METRICS,
    pipeline_runtime::failure::METRICS,
];

pub(crate) fn describe_metrics(destination_windows: bool) {
    for defined in METRICS {
        telemetry::describe(defined);
    }
    for output in ["validated", "dlq"] {
        metrics::counter!(RECORDS_OUT.name, "output" => output).absolute(0);
    }
    for kind in ErrorKind::ALL {
        if kind != ErrorKind::WriteRejected {
            metrics::counter!(INVALID_RECORDS.name, "kind" => kind.as_str()).absolute(0);
        }
    }
    crate::analytics::describe_metrics(if destination_windows {
        &["source", "destination"]
    } else {
        &["source"]
    });
}

pub(crate) fn log_status(stats: &ReaderStats, in_flight: usize, last: &mut (Instant, u64)) {
    let consumed = stats.consumed.load(Relaxed);
    let rate = (consumed - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-3);
    *last = (Instant::now(), consumed);
    info!(
        consumed,
        valid = stats.valid.load(Relaxed),
        invalid = stats.invalid.load(Relaxed),
        invalid_by_kind = %stats.by_kind_summary(),
        retries = stats.retries.load(Relaxed),
        windows_closed = stats.windows_closed.load(Relaxed),
        alerts = stats.alerts.load(Relaxed),
        in_flight,
        records_per_s = format!("{rate:.0}"),
        "status"
    );
}
