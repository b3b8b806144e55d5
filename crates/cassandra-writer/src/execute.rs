//! One prepared write with the writer's retry policy, and what a write error means.

use std::{sync::atomic::Ordering::Relaxed, time::Instant};

use backon::Retryable as _;
use scylla::{
    errors::{DbError, ExecutionError, RequestAttemptError},
    serialize::row::SerializeRow,
    statement::prepared::PreparedStatement,
};
use tracing::warn;

use crate::{
    metrics::{ROWS_WRITTEN, WRITE_ERRORS, WRITE_LATENCY_SECONDS, WRITE_RETRIES},
    shared::Shared,
};

pub(crate) enum WriteError {
    Rejected(String),
    GaveUp(Box<ExecutionError>),
    /// No write of this user can succeed (authorization): the service stops.
    Refused(&'static str, Box<ExecutionError>),
}

/// True for errors that concern the writer's identity, not the row: no retry helps.
pub(crate) fn is_refusal(e: &ExecutionError) -> bool {
    matches!(
        e,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::Unauthorized | DbError::AuthenticationError,
            _
        ))
    )
}

/// True for errors that concern the row itself and will never succeed on retry.
pub(crate) fn is_rejection(e: &ExecutionError) -> bool {
    match e {
        ExecutionError::BadQuery(_) => true,
        ExecutionError::LastAttemptError(RequestAttemptError::SerializationError(_)) => true,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => matches!(
            db,
            DbError::Invalid
                | DbError::SyntaxError
                | DbError::FunctionFailure { .. }
                | DbError::AlreadyExists { .. }
                | DbError::ConfigError
        ),
        _ => false,
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

/// Executes one prepared write into `table` for a record of `source` (topic, partition),
/// retrying retryable failures per the backoff policy; from the third failed attempt on, the
/// source partition is reported as stalled until a write of it succeeds.
pub(crate) async fn execute<V: SerializeRow + Sync>(
    shared: &Shared,
    statement: &PreparedStatement,
    values: &V,
    (table, (topic, partition)): (&'static str, (&str, i32)),
) -> Result<(), WriteError> {
    let started = Instant::now();
    let attempt = || async { shared.session.execute_unpaged(statement, values).await };
    let mut failures = 0u32;
    let result = attempt
        .retry(shared.args.backoff())
        .when(|e| !is_rejection(e) && !is_refusal(e))
        .notify(|error, delay| {
            shared.stats.retries.fetch_add(1, Relaxed);
            metrics::counter!(WRITE_RETRIES.name).increment(1);
            metrics::counter!(WRITE_ERRORS.name, "kind" => error_kind(error)).increment(1);
            failures += 1;
            if failures >= 3 {
                shared.stalls().failing(
                    format!("{topic}/{partition}"),
                    format!("writes to `{table}` failing ({failures} attempts): {error}"),
                );
            }
            if let Some(suppressed) = shared.logs.allow() {
                warn!(%error, table, retry_in_ms = delay.as_millis() as u64, suppressed, "write failed, retrying");
            }
        })
        .await;
    if failures >= 3 {
        shared.stalls().recovered(&format!("{topic}/{partition}"));
    }
    match result {
        Ok(_) => {
            metrics::counter!(ROWS_WRITTEN.name, "table" => table).increment(1);
            metrics::histogram!(WRITE_LATENCY_SECONDS.name).record(started.elapsed().as_secs_f64());
            shared.stats.record_latency(started.elapsed());
            Ok(())
        }
        Err(e) if is_rejection(&e) => {
            metrics::counter!(WRITE_ERRORS.name, "kind" => "rejected").increment(1);
            Err(WriteError::Rejected(e.to_string()))
        }
        Err(e) if is_refusal(&e) => {
            metrics::counter!(WRITE_ERRORS.name, "kind" => "unauthorized").increment(1);
            Err(WriteError::Refused(table, Box::new(e)))
        }
        Err(e) => Err(WriteError::GaveUp(Box::new(e))),
    }
}
