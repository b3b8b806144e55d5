//! The validation stage's metrics and status line.

use std::{sync::atomic::Ordering::Relaxed, time::Instant};

use log_schema::ErrorKind;
use tracing::info;

use crate::ReaderStats;

// Metric names, each defined once; help texts and labels are registered below.
/// `reader_in_flight`.
pub const IN_FLIGHT: &str = "reader_in_flight";
/// `reader_invalid_records_total`.
pub const INVALID_RECORDS: &str = "reader_invalid_records_total";
/// `reader_outputs_rejected_total`.
pub const OUTPUTS_REJECTED: &str = "reader_outputs_rejected_total";
/// `reader_produce_latency_seconds`.
pub const PRODUCE_LATENCY_SECONDS: &str = "reader_produce_latency_seconds";
/// `reader_produce_retries_total`.
pub const PRODUCE_RETRIES: &str = "reader_produce_retries_total";
/// `reader_records_consumed_total`.
pub const RECORDS_CONSUMED: &str = "reader_records_consumed_total";
/// `reader_records_out_total`.
pub const RECORDS_OUT: &str = "reader_records_out_total";

/// Registers every metric of the validation stage with its help text and zero values, so
/// dashboards show all series from the start.
pub(crate) fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(RECORDS_CONSUMED, "Records consumed from the input topic");
    describe_counter!(
        RECORDS_OUT,
        "Records acknowledged on an output topic, by output"
    );
    describe_counter!(INVALID_RECORDS, "Dead letters by error kind");
    describe_counter!(
        PRODUCE_RETRIES,
        "Output produce attempts that failed and were retried"
    );
    describe_histogram!(
        PRODUCE_LATENCY_SECONDS,
        metrics::Unit::Seconds,
        "Output produce latency until acknowledged, retries included"
    );
    describe_gauge!(
        IN_FLIGHT,
        "Records consumed whose output is not acknowledged yet"
    );
    describe_counter!(
        OUTPUTS_REJECTED,
        "Outputs Kafka refused for good, dead-lettered instead"
    );
    metrics::counter!(OUTPUTS_REJECTED).absolute(0);
    metrics::counter!(RECORDS_CONSUMED).absolute(0);
    for output in ["validated", "dlq"] {
        metrics::counter!(RECORDS_OUT, "output" => output).absolute(0);
    }
    metrics::counter!(PRODUCE_RETRIES).absolute(0);
    for kind in ErrorKind::ALL {
        if kind != ErrorKind::WriteRejected {
            metrics::counter!(INVALID_RECORDS, "kind" => kind.as_str()).absolute(0);
        }
    }
    crate::analytics::describe_metrics();
    pipeline_runtime::transaction::describe_metrics();
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
