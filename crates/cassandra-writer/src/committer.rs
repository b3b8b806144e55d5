//! Exactly-once dead letters (`WRITER_DELIVERY=exactly-once`): the writer's own outputs, its
//! dead letters, are produced in a Kafka transaction together with the input offsets they
//! belong to, so a `read_committed` consumer of the DLQ sees each of them exactly once.
//!
//! A record's dead letter waits here until the record's partition has been written
//! contiguously past it; then, every `WRITER_TRANSACTION_INTERVAL_MS`, one transaction sends
//! the waiting dead letters below the written frontier and commits that frontier as the
//! group's offsets. A dead letter is never committed without its offset, nor an offset
//! without the dead letters below it. Rows need no transaction: they are idempotent upserts.
//!
//! Revocations come from [`PartitionChanges`] (taken before every commit): a revoked
//! partition's frontier and dead letters are dropped, and completions of that partition's
//! writes started before its revocation are ignored ([`Committer::epoch`],
//! [`Committer::is_current`]), so nothing is committed for a partition this instance no longer
//! owns. A partition that stays assigned keeps its writes in flight: a revocation of another
//! partition (cooperative-sticky, KIP-848) does not void them.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, atomic::Ordering::Relaxed},
};

use log_schema::ErrorKind;
use pipeline_runtime::{
    kafka::{PartitionChange, PartitionChanges, complete_and_store},
    transaction::{Transaction, TxnError},
};
use rdkafka::{
    consumer::{Consumer, ConsumerContext},
    producer::FutureRecord,
};

use crate::{
    metrics::DEAD_LETTERS,
    shared::{Deferred, Outcome, Shared},
};

/// The writer's transactional bookkeeping.
#[derive(Debug)]
pub(crate) struct Committer {
    transaction: Transaction,
    changes: PartitionChanges,
    owned: HashSet<(Arc<str>, i32)>,
    /// Incremented on every revocation and reset; a write is tagged with it when it starts.
    epoch: u64,
    /// Per partition, the epoch of its last revocation: its writes tagged before it no longer
    /// count.
    revoked_at: BTreeMap<(Arc<str>, i32), u64>,
    /// The epoch of the last reset (an abort): every write tagged before it no longer counts.
    reset_at: u64,
    /// Next offset to commit per partition (contiguously written up to it).
    frontier: BTreeMap<(Arc<str>, i32), i64>,
    /// Dead letters by (topic, partition, offset) of the record they replace.
    dead_letters: BTreeMap<(Arc<str>, i32, i64), Deferred>,
}

impl Committer {
    pub fn new(transaction: Transaction, changes: PartitionChanges) -> Self {
        Self {
            transaction,
            changes,
            owned: HashSet::new(),
            epoch: 0,
            revoked_at: BTreeMap::new(),
            reset_at: 0,
            frontier: BTreeMap::new(),
            dead_letters: BTreeMap::new(),
        }
    }

    /// The current epoch, to tag a write with when it starts.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether a write of `partition` tagged `epoch` still counts: neither the partition was
    /// revoked nor the transaction reset since it started.
    pub fn is_current(&self, topic: &Arc<str>, partition: i32, epoch: u64) -> bool {
        epoch >= self.reset_at
            && self
                .revoked_at
                .get(&(topic.clone(), partition))
                .is_none_or(|at| epoch >= *at)
    }

    /// Applies the assignment changes since the last call.
    pub fn take_changes(&mut self) {
        for change in self.changes.take() {
            match change {
                PartitionChange::Assigned(topic, p) => {
                    self.owned.insert((Arc::from(topic.as_str()), p));
                }
                PartitionChange::Revoked(topic, p) => {
                    self.epoch += 1;
                    let key = (Arc::from(topic.as_str()), p);
                    self.revoked_at.insert(key.clone(), self.epoch);
                    self.owned.remove(&key);
                    self.frontier.remove(&key);
                    self.dead_letters
                        .retain(|(t, q, _), _| !(**t == *topic && *q == p));
                }
            }
        }
    }

    /// A write started in `epoch` finished: `next` is the partition's new contiguous frontier
    /// (if it advanced), `dead_letter` the record's dead letter (if any).
    pub fn completed(
        &mut self,
        epoch: u64,
        (topic, partition, offset): (Arc<str>, i32, i64),
        next: Option<i64>,
        dead_letter: Option<Deferred>,
    ) {
        if !self.is_current(&topic, partition, epoch)
            || !self.owned.contains(&(topic.clone(), partition))
        {
            return;
        }
        if let Some(next) = next {
            self.frontier.insert((topic.clone(), partition), next);
        }
        if let Some(d) = dead_letter {
            self.dead_letters.insert((topic, partition, offset), d);
        }
    }

    /// Commits the frontier with the dead letters below it in one transaction; returns the
    /// dead letters' kinds. Nothing to do when the frontier did not move.
    pub fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &impl Consumer<C>,
        dlq_topic: &str,
    ) -> Result<Vec<ErrorKind>, TxnError> {
        self.take_changes();
        if self.frontier.is_empty() {
            return Ok(Vec::new());
        }
        self.transaction.begin()?;
        let due: Vec<(Arc<str>, i32, i64)> = self
            .dead_letters
            .keys()
            .filter(|(t, p, o)| {
                self.frontier
                    .get(&(t.clone(), *p))
                    .is_some_and(|next| o < next)
            })
            .cloned()
            .collect();
        let mut kinds = Vec::with_capacity(due.len());
        for key in &due {
            let d = &self.dead_letters[key];
            let mut record = FutureRecord::<[u8], [u8]>::to(dlq_topic).payload(&d.envelope);
            if let Some(k) = &d.key {
                record = record.key(k);
            }
            // The delivery is part of the transaction: commit fails (and aborts) if it fails.
            if let Err((error, _)) = self.transaction.producer().send_result(record) {
                self.transaction.abort()?;
                return Err(TxnError::Aborted(error.into()));
            }
            kinds.push(d.kind);
        }
        let offsets: Vec<(String, i32, i64, String)> = self
            .frontier
            .iter()
            .map(|((t, p), o)| (t.to_string(), *p, *o, String::new()))
            .collect();
        self.transaction.commit(consumer, &offsets)?;
        for key in due {
            self.dead_letters.remove(&key);
        }
        self.frontier.clear();
        Ok(kinds)
    }

    /// After an abort: forgets everything not committed; writes in flight no longer count.
    pub fn reset(&mut self) {
        self.epoch += 1;
        self.reset_at = self.epoch;
        self.frontier.clear();
        self.dead_letters.clear();
    }

    /// The open transaction, if any, is aborted (shutdown after a failure).
    pub fn abort(&self) -> Result<(), TxnError> {
        self.transaction.abort()
    }
}

/// A record's write finished: its offset is stored (at-least-once) or handed with its dead
/// letter to the committer (exactly-once; ignored when it started before a revocation).
pub(crate) fn completed<C: rdkafka::consumer::ConsumerContext>(
    tracker: &pipeline_runtime::kafka::SharedTracker,
    consumer: &rdkafka::consumer::StreamConsumer<C>,
    committer: Option<&mut Committer>,
    (topic, partition, offset): (Arc<str>, i32, i64),
    epoch: u64,
    outcome: Outcome,
) {
    match committer {
        None => complete_and_store(tracker, consumer, &topic, partition, offset),
        Some(c) if c.is_current(&topic, partition, epoch) => {
            let next = tracker.lock().complete(&topic, partition, offset);
            let deferred = match outcome {
                Outcome::DeadLettered(d) => d,
                Outcome::Written => None,
            };
            c.completed(epoch, (topic, partition, offset), next, deferred);
        }
        Some(_) => {}
    }
}

/// One exactly-once commit; counts the dead letters it committed.
pub(crate) fn commit<C: rdkafka::consumer::ConsumerContext>(
    committer: &mut Committer,
    consumer: &rdkafka::consumer::StreamConsumer<C>,
    shared: &Shared,
) -> Result<(), TxnError> {
    for kind in committer.commit(consumer, &shared.args.dlq_topic)? {
        shared.stats.dead_lettered.fetch_add(1, Relaxed);
        metrics::counter!(DEAD_LETTERS.name, "kind" => kind.as_str()).increment(1);
    }
    Ok(())
}
