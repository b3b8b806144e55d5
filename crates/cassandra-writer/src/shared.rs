//! What every write shares: the session, statements, producer and settings ([`Shared`]), and
//! what becomes of a record ([`Outcome`], [`Written`]). The bottom of the writer's module
//! graph: consume ([`crate::writer`]) → group ([`crate::group`]) → one record
//! ([`crate::write`]) → execute ([`crate::execute`]), and commit ([`crate::committer`]), all
//! import it; it imports none of them.

use std::sync::Arc;

use log_schema::ErrorKind;
use pipeline_runtime::{failure::Stalls, telemetry::LogLimiter, transaction::OutputProducer};
use scylla::client::session::Session;

use crate::{config::WriterArgs, metrics::WriterStats, rows::Statements};

/// A dead letter waiting for its transaction (exactly-once mode).
#[derive(Debug)]
pub(crate) struct Deferred {
    pub envelope: Vec<u8>,
    pub key: Option<Vec<u8>>,
    pub kind: ErrorKind,
}

/// What became of one record.
pub(crate) enum Outcome {
    Written,
    /// Dead-lettered: produced already, or (exactly-once) waiting for its transaction.
    DeadLettered(Option<Deferred>),
}

/// A record's coordinates, the epoch its write started in, and what became of it.
pub(crate) type Written = (Arc<str>, i32, i64, u64, anyhow::Result<Outcome>);

/// A consumed record waiting for its write.
#[derive(Debug)]
pub(crate) struct Pending {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// The exactly-once epoch it was consumed in.
    pub epoch: u64,
    pub payload: Vec<u8>,
    pub key: Option<Vec<u8>>,
}

pub(crate) struct Shared {
    pub(crate) session: Session,
    pub(crate) statements: Statements,
    pub(crate) producer: OutputProducer,
    pub(crate) args: WriterArgs,
    pub(crate) stats: Arc<WriterStats>,
    pub(crate) logs: LogLimiter,
    /// Partitions whose writes keep failing (`/readyz`).
    pub(crate) stalls: std::sync::Mutex<Stalls>,
    /// Largest dead letter the DLQ topic takes (its `max.message.bytes` less the record
    /// overhead): a larger one is sent without its payload.
    pub(crate) dlq_max_envelope: usize,
}

impl Shared {
    pub(crate) fn stalls(&self) -> std::sync::MutexGuard<'_, Stalls> {
        self.stalls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
