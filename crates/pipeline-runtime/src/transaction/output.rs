//! The producer a stage sends its outputs with.

use std::{fmt, sync::PoisonError};

use rdkafka::producer::FutureProducer;

use super::Transaction;

/// The producer a stage sends its outputs with: a plain one, or its transaction's current one
/// (which a wedged call replaces, [`Transaction::commit`]).
#[derive(Clone)]
pub enum OutputProducer {
    /// Outputs acknowledged one by one (at-least-once).
    Plain(FutureProducer),
    /// Outputs in the open transaction (exactly-once).
    Transactional(Transaction),
}

impl fmt::Debug for OutputProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plain(_) => f.write_str("OutputProducer::Plain"),
            Self::Transactional(t) => f
                .debug_tuple("OutputProducer::Transactional")
                .field(t)
                .finish(),
        }
    }
}

impl OutputProducer {
    /// Runs `f` with the current producer.
    pub fn with<R>(&self, f: impl FnOnce(&FutureProducer) -> R) -> R {
        match self {
            Self::Plain(p) => f(p),
            Self::Transactional(t) => {
                f(&t.0.producer.read().unwrap_or_else(PoisonError::into_inner))
            }
        }
    }

    /// The current producer.
    pub fn get(&self) -> FutureProducer {
        self.with(FutureProducer::clone)
    }
}
