//! The open transaction of a stage in exactly-once mode: which input offsets it covers, when
//! it is due, and whether it must abort.
//!
//! A stage sends the outputs of each input record with the transactional producer while the
//! transaction is open. When the transaction is due (`READER_TRANSACTION_INTERVAL_MS` after it
//! opened, or `READER_TRANSACTION_MAX_RECORDS` records), the stage stops reading, waits until
//! every output of the transaction is acknowledged, then commits the outputs with the input
//! offsets ([`Transaction::commit`]). Any failed output dooms the transaction: it is aborted
//! and the stage rolls back to its committed offsets, which replays exactly the records whose
//! outputs were discarded.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use pipeline_runtime::{
    kafka::PipelineContext,
    transaction::{Delivery, OutputProducer, Transaction, TxnError},
};

use crate::ReaderArgs;

/// A stage's output producer and, in exactly-once mode, its transaction (the context then
/// aborts it on revoke).
pub(crate) fn producer_for(
    args: &ReaderArgs,
    stage: &str,
    context: PipelineContext,
) -> anyhow::Result<(OutputProducer, Option<Batch>, PipelineContext)> {
    if args.delivery == Delivery::AtLeastOnce {
        return Ok((
            OutputProducer::Plain(args.kafka.producer(&[])?),
            None,
            context,
        ));
    }
    let transaction = Transaction::create(
        &args.kafka,
        &args.transactional_id_of(stage),
        Duration::from_millis(args.transaction_timeout_ms),
    )?;
    let batch = Batch::new(
        transaction.clone(),
        Duration::from_millis(args.transaction_interval_ms),
        args.transaction_max_records,
    );
    Ok((
        OutputProducer::Transactional(transaction.clone()),
        Some(batch),
        context.with_transaction(transaction),
    ))
}

/// The open transaction's bookkeeping.
#[derive(Debug)]
pub(crate) struct Batch {
    pub transaction: Transaction,
    /// Next offset per input partition processed in the open transaction.
    next: BTreeMap<i32, i64>,
    records: usize,
    max_records: usize,
    interval: Duration,
    opened_at: Option<Instant>,
    /// Why the open transaction must abort (an output failed).
    doomed: Option<String>,
    /// The commit is due: stop reading until the outputs are acknowledged.
    committing: bool,
    /// Input records whose output Kafka refused for good in an aborted transaction, with the
    /// reason and how many outputs of the record were refused (counted across replays until a
    /// transaction covering the record commits): on replay the record's output
    /// is dead-lettered that many times (as the at-least-once mode does in one go).
    /// Keyed by partition, offset and whether it was the destination copy.
    pub refused: HashMap<(i32, i64, bool), (String, u32)>,
}

impl Batch {
    pub fn new(transaction: Transaction, interval: Duration, max_records: usize) -> Self {
        Self {
            transaction,
            next: BTreeMap::new(),
            records: 0,
            max_records: max_records.max(1),
            interval,
            opened_at: None,
            doomed: None,
            committing: false,
            refused: HashMap::new(),
        }
    }

    /// How often a loop asks [`Batch::tick`] whether its transaction is due: a quarter of the
    /// interval (1 to 100 ms), so a transaction commits within 1.25 intervals of opening.
    pub fn check_period(interval_ms: u64) -> Duration {
        Duration::from_millis((interval_ms / 4).clamp(1, 100))
    }

    /// Opens the transaction if none is open.
    pub fn begin(&mut self) -> Result<(), TxnError> {
        if !self.transaction.is_open() {
            self.transaction.begin()?;
            self.opened_at = Some(Instant::now());
        }
        Ok(())
    }

    /// One input record's outputs were sent in the open transaction.
    pub fn record(&mut self, partition: i32, offset: i64) {
        self.next.insert(partition, offset + 1);
        self.records += 1;
        if self.records >= self.max_records {
            self.committing = true;
        }
    }

    /// Marks the commit due when the transaction has been open for the interval.
    pub fn tick(&mut self) {
        if self
            .opened_at
            .is_some_and(|at| at.elapsed() >= self.interval)
        {
            self.committing = true;
        }
    }

    /// Marks the commit due now (an idle step, shutdown).
    pub fn commit_now(&mut self) {
        self.committing = true;
    }

    /// True while the stage must not read: a commit is due.
    pub fn committing(&self) -> bool {
        self.committing
    }

    /// An output failed: the transaction must abort.
    pub fn doom(&mut self, reason: String) {
        self.doomed.get_or_insert(reason);
    }

    /// Why the stage must roll back now, if it must: a revocation aborted the transaction, or
    /// an output failed.
    pub fn must_roll_back(&self) -> Option<String> {
        if self.transaction.take_rolled_back() {
            return Some("partitions revoked".to_owned());
        }
        self.doomed.clone()
    }

    /// The error that stops a stage whose producer was fenced.
    pub fn fenced(&self, error: &dyn std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!(
            "transactional producer `{}` fenced (another instance with the same \
             READER_TRANSACTIONAL_ID, or the transaction outlived READER_TRANSACTION_TIMEOUT_MS): \
             {error}",
            self.transaction.id()
        )
    }

    /// The offsets the transaction commits for `topic` (no metadata).
    pub fn offsets(&self, topic: &str) -> Vec<(String, i32, i64, String)> {
        self.next
            .iter()
            .map(|(p, o)| (topic.to_owned(), *p, *o, String::new()))
            .collect()
    }

    /// The transaction committed: the refusals of the records it covered are settled (a
    /// refusal of a record after them stays for its replay), and it starts afresh.
    pub fn committed(&mut self) {
        let next = &self.next;
        self.refused
            .retain(|(p, o, _), _| next.get(p).is_none_or(|n| o >= n));
        self.reset();
    }

    /// The transaction ended (committed or aborted): start afresh.
    pub fn reset(&mut self) {
        self.next.clear();
        self.records = 0;
        self.opened_at = None;
        self.doomed = None;
        self.committing = false;
    }
}
