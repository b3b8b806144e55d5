//! The writer's metrics: registration with help texts, and the low-cardinality kind of a
//! failed write.

use scylla::errors::{DbError, ExecutionError, RequestAttemptError};

use crate::writer::{is_refusal, is_rejection};

/// Registers every metric with help text and zero values.
pub(crate) fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "writer_records_consumed_total",
        "Records consumed from the validated, stats and alerts topics"
    );
    describe_counter!("writer_rows_written_total", "Rows written, by table");
    describe_counter!(
        "writer_batches_total",
        "Single-partition unlogged batches of access_logs rows applied"
    );
    describe_counter!(
        "writer_batch_fallbacks_total",
        "Batches that failed and were written row by row instead"
    );
    describe_counter!(
        "writer_write_retries_total",
        "Write attempts that failed and were retried"
    );
    describe_counter!("writer_write_errors_total", "Failed write attempts by kind");
    describe_counter!(
        "writer_dead_letters_total",
        "Records sent to the dead-letter topic by kind"
    );
    describe_histogram!(
        "writer_write_latency_seconds",
        metrics::Unit::Seconds,
        "Write latency per row (a batch's time for each of its rows), retries included"
    );
    describe_histogram!(
        "writer_e2e_latency_seconds",
        metrics::Unit::Seconds,
        "Event timestamp to row written"
    );
    describe_gauge!(
        "writer_in_flight",
        "Records consumed whose row is not written yet"
    );
    for table in [
        "access_logs",
        "ip_stats_by_ip",
        "top_talkers_by_minute",
        "top_talkers_by_country_minute",
        "top_talkers_by_asn_minute",
        "alerts_by_day",
        "alerts_by_ip",
    ] {
        metrics::counter!("writer_rows_written_total", "table" => table).absolute(0);
    }
    for name in [
        "writer_records_consumed_total",
        "writer_batches_total",
        "writer_batch_fallbacks_total",
        "writer_write_retries_total",
    ] {
        metrics::counter!(name).absolute(0);
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
        metrics::counter!("writer_write_errors_total", "kind" => kind).absolute(0);
    }
    for kind in ["write_rejected", "malformed_json", "invalid_type"] {
        metrics::counter!("writer_dead_letters_total", "kind" => kind).absolute(0);
    }
}

/// Low-cardinality kind of a failed write attempt.
pub(crate) fn error_kind(e: &ExecutionError) -> &'static str {
    if is_rejection(e) {
        return "rejected";
    }
    if is_refusal(e) {
        return "unauthorized";
    }
    match e {
        ExecutionError::RequestTimeout(_) => "timeout",
        ExecutionError::ConnectionPoolError(_) | ExecutionError::EmptyPlan => "connection",
        ExecutionError::LastAttemptError(RequestAttemptError::BrokenConnectionError(_)) => {
            "connection"
        }
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => match db {
            DbError::Unavailable { .. } => "unavailable",
            DbError::Overloaded | DbError::RateLimitReached { .. } => "overloaded",
            DbError::ReadTimeout { .. } | DbError::WriteTimeout { .. } => "timeout",
            _ => "other",
        },
        _ => "other",
    }
}
