//! Committing the analytics stage's checkpoints (explicitly, or in its transactions) and
//! rolling back to them.

use std::time::Duration;

use pipeline_runtime::{
    kafka::commit_checkpoints,
    transaction::{Rollback, TxnError},
};
use rdkafka::consumer::CommitMode;
use tracing::warn;

use super::state::Analytics;
use crate::batch::Batch;

impl Analytics {
    /// True when the stage must not read now: a transaction commit is due. (An idle step whose
    /// checkpoint is not committed yet holds back only the windows it closed: reading goes on,
    /// so that a consumer that lost its group membership rejoins, and a revocation drops the
    /// step with its windows.)
    pub(super) fn committing(&self) -> bool {
        self.batch.as_ref().is_some_and(Batch::committing)
    }

    /// Commits the checkpoints of idle steps whose commit failed (at-least-once mode); the
    /// windows they closed are sent once they are committed.
    pub(super) fn save_steps(&mut self) {
        if self.batch.is_some() || self.pending_steps.is_empty() {
            return;
        }
        let partitions: Vec<i32> = self.pending_steps.iter().map(|s| s.partition).collect();
        self.commit(&partitions);
    }

    /// In exactly-once mode: once a commit is due and every closed window is sent and
    /// acknowledged, commits the transaction with each changed partition's checkpoint (an
    /// idle step's checkpoint too, in a transaction of its own); aborts and rolls back when
    /// an output failed.
    pub(super) fn settle_transaction(&mut self) {
        let Some(batch) = &mut self.batch else { return };
        if let Some(reason) = batch.must_roll_back() {
            return self.rollback(&reason);
        }
        if !batch.committing() || !self.outbox.is_empty() || self.outputs.in_flight() > 0 {
            return;
        }
        let partitions: Vec<i32> = self.windows.partitions().collect();
        let mut changed = Vec::new();
        for p in partitions {
            if let Some((offset, metadata)) = self.windows.checkpoint(p)
                && self.committed.get(&p) != Some(&(offset, metadata.clone()))
            {
                changed.push((self.input.to_string(), p, offset, metadata));
            }
        }
        let everything: Vec<i32> = self.windows.partitions().collect();
        if changed.is_empty() && !batch.transaction.is_open() {
            batch.reset();
            self.steps_committed(&everything);
            return;
        }
        let result = batch
            .begin()
            .and_then(|()| batch.transaction.commit(&*self.consumer, &changed));
        match result {
            Ok(()) => {
                batch.reset();
                for (_, p, offset, metadata) in changed {
                    self.committed.insert(p, (offset, metadata));
                }
                self.steps_committed(&everything);
            }
            Err(error) => self.transaction_failed(error),
        }
    }

    pub(super) fn transaction_failed(&mut self, error: TxnError) {
        match error {
            TxnError::Aborted(error) => self.rollback(&error.to_string()),
            TxnError::Fenced(error) => {
                if self.fatal.is_none() {
                    self.fatal = self.batch.as_ref().map(|b| b.fenced(&error));
                }
            }
        }
    }

    /// Aborts the open transaction and returns every partition to its committed checkpoint:
    /// the windows closed in the transaction are discarded and close again on replay.
    pub(super) fn rollback(&mut self, reason: &str) {
        let Some(batch) = &mut self.batch else { return };
        warn!(
            reason,
            "analytics transaction aborted; rolling back to the committed checkpoints"
        );
        if let Err(error) = batch.transaction.abort() {
            return self.transaction_failed(TxnError::Fenced(match error {
                TxnError::Aborted(e) | TxnError::Fenced(e) => e,
            }));
        }
        batch.reset();
        self.outputs.clear();
        self.outbox.clear();
        self.pending_steps.clear();
        self.waiting.clear();
        self.flow.reset(&self.consumer);
        let partitions: Vec<i32> = self.windows.partitions().collect();
        for p in partitions {
            self.windows.revoke(p);
        }
        self.committed.clear();
        match Rollback::rewind(&*self.consumer, &self.input, Duration::from_secs(30)) {
            Ok(rollback) => self.restore(rollback.partitions),
            Err(error) => {
                self.fatal = Some(anyhow::anyhow!(
                    "cannot return to the committed checkpoints of `{}`: {error}",
                    self.input
                ));
            }
        }
    }

    /// Commits the current checkpoints of `partitions` that changed (synchronously: once a
    /// second, and at once after an idle step, whose windows wait for it).
    /// A failed commit is logged and retried by the next call.
    pub(super) fn commit(&mut self, partitions: &[i32]) {
        let mut changed = Vec::new();
        for &p in partitions {
            let Some((offset, metadata)) = self.windows.checkpoint(p) else {
                continue;
            };
            self.checkpoints
                .set(&self.input, p, offset, metadata.clone());
            if self.committed.get(&p) != Some(&(offset, metadata.clone())) {
                changed.push((self.input.to_string(), p, offset, metadata));
            }
        }
        if changed.is_empty() {
            return self.steps_committed(partitions);
        }
        match commit_checkpoints(&*self.consumer, &changed, CommitMode::Sync) {
            Ok(()) => {
                for (_, p, offset, metadata) in changed {
                    self.committed.insert(p, (offset, metadata));
                }
                self.steps_committed(partitions);
            }
            Err(error) => {
                if let Some(suppressed) = self.log.allow() {
                    warn!(%error, suppressed, "checkpoint commit failed; retried");
                }
            }
        }
    }

    pub(super) fn commit_all(&mut self) {
        let partitions: Vec<i32> = self.windows.partitions().collect();
        self.commit(&partitions);
    }
}
