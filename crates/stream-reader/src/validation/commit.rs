//! The open transaction of the validation stage: committing it when due, rolling back.

use std::time::Duration;

use pipeline_runtime::transaction::{Rollback, TxnError};
use tracing::warn;

use crate::batch::Batch;

use super::Reader;

impl Reader {
    /// True when the loop must not read now: a transaction commit is due.
    pub(super) fn committing(&self) -> bool {
        self.batch.as_ref().is_some_and(Batch::committing)
    }

    /// Commits the open transaction once it is due and its outputs are acknowledged (or
    /// aborts it when an output failed); after an abort, rolls back.
    pub(super) fn settle_transaction(&mut self) {
        let Some(batch) = &mut self.batch else { return };
        if let Some(reason) = batch.must_roll_back() {
            return self.rollback(&reason);
        }
        if !batch.committing() || self.outputs.in_flight() > 0 {
            return;
        }
        let offsets = batch.offsets(&self.topics.input);
        match batch.transaction.commit(&*self.consumer, &offsets) {
            Ok(()) => {
                batch.committed();
                for kind in std::mem::take(&mut self.uncommitted) {
                    self.count_output(kind);
                }
            }
            Err(error) => self.transaction_failed(error),
        }
    }

    /// A transaction operation failed: roll back after an abort, stop when fenced.
    pub(super) fn transaction_failed(&mut self, error: TxnError) {
        match error {
            TxnError::Aborted(error) => self.rollback(&error.to_string()),
            TxnError::Fenced(error) => self.fenced(&error),
        }
    }

    pub(super) fn fenced(&mut self, error: &dyn std::fmt::Display) {
        if self.fatal.is_none() {
            self.fatal = self.batch.as_ref().map(|b| b.fenced(error));
        }
    }

    /// Aborts the open transaction and returns to the committed offsets: its outputs are
    /// discarded and its records processed again.
    pub(super) fn rollback(&mut self, reason: &str) {
        let Some(batch) = &mut self.batch else { return };
        warn!(
            reason,
            "transaction aborted; rolling back to the committed offsets"
        );
        if let Err(error) = batch.transaction.abort() {
            return self.fenced(&error);
        }
        batch.reset();
        self.outputs.clear();
        self.flow.reset(&self.consumer);
        self.uncommitted.clear();
        self.halves.clear();
        if let Err(error) =
            Rollback::rewind(&*self.consumer, &self.topics.input, Duration::from_secs(30))
        {
            self.fatal = Some(anyhow::anyhow!(
                "cannot return to the committed offsets of `{}`: {error}",
                self.topics.input
            ));
        }
    }
}
