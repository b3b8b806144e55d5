//! Kafka transactions for an exactly-once consume → produce loop (EOS v2, KIP-447).
//!
//! A loop in [`Delivery::ExactlyOnce`] mode produces every output of a batch of input records
//! with one transactional producer and hands the batch's input offsets (with their metadata)
//! to the same transaction ([`Transaction::commit`]), with the consumer's group metadata, so the
//! group coordinator refuses the offsets of a member that lost its partitions. Outputs and
//! offsets become visible together to `read_committed` consumers, or not at all.
//!
//! A transaction that fails is aborted and the loop rolls its state back to the committed
//! offsets ([`Rollback`]). A producer that fails for good (e.g. its transaction timed out on the
//! coordinator) or whose call never returns (librdkafka #5456) is replaced by a new one with the
//! same `transactional.id`, which fences it and aborts what it left open (`wedge`); one fenced
//! again and again is fenced by another instance and cannot continue ([`TxnError::Fenced`]). On partition revocation the consumer's context
//! aborts the open transaction from the rebalance callback ([`Transaction::abort_on_revoke`]):
//! once the callback returns, the partitions may belong to another member, and no output
//! derived from them may be committed any more. The loop sees [`Transaction::take_rolled_back`]
//! and rewinds the partitions it kept.

use std::{
    fmt,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{Consumer, ConsumerContext, ConsumerGroupMetadata},
    error::{KafkaError, KafkaResult, RDKafkaErrorCode},
    producer::{FutureProducer, Producer as _},
};
use tracing::{info, warn};

use crate::telemetry::{Metric, MetricKind};

/// Delivery guarantee of a stage's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Delivery {
    /// Outputs are acknowledged before their input offsets are stored; a crash reprocesses the
    /// records after the last commit, so outputs can repeat (with the same deterministic ids).
    #[default]
    AtLeastOnce,
    /// Outputs and input offsets are committed in one Kafka transaction; `read_committed`
    /// consumers see each input's outputs exactly once.
    ExactlyOnce,
}

/// The transactional id of one stage of an instance: `explicit` if set, else
/// `<group>@<hostname>:<pid>`, then `-<stage>`.
///
/// The default is unique per running process (two instances on one host never fence each
/// other; zombies are fenced by the group generation, KIP-447) and stable where a container
/// restarts in place (same hostname, pid 1), so a restart aborts what the crashed process left
/// open at once. Otherwise a crashed process's open transaction holds back `read_committed`
/// consumers of its output partitions until the transaction timeout aborts it.
pub fn transactional_id(explicit: &str, group: &str, stage: &str) -> String {
    if explicit.is_empty() {
        format!(
            "{group}@{}:{}-{stage}",
            gethostname::gethostname().to_string_lossy(),
            std::process::id()
        )
    } else {
        format!("{explicit}-{stage}")
    }
}

/// Why a transaction did not commit.
#[derive(Debug)]
pub enum TxnError {
    /// The transaction was aborted: nothing of it is visible; the loop must roll its state
    /// back to the committed offsets and may continue.
    Aborted(Cause),
    /// The producer cannot continue: fenced by a newer instance with the same
    /// `transactional.id`, or a fatal producer error.
    Fenced(Cause),
}

/// What made a transactional operation fail.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// What librdkafka reported.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The call did not return in time; its producer was replaced ([`Transaction::commit`]).
    #[error(
        "transactional call `{0}` did not return within {1:?} (librdkafka #5456); its producer was replaced"
    )]
    Wedged(&'static str, Duration),
    /// The producer failed fatally (e.g. fenced after the coordinator timed its transaction
    /// out) and was replaced ([`Transaction::commit`]).
    #[error("{0}; the producer was replaced")]
    Recovered(KafkaError),
    /// No replacement producer could be created or initialised.
    #[error("cannot replace a wedged transactional producer: {0}")]
    Replacement(String),
}

impl fmt::Display for TxnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Aborted(e) => write!(f, "transaction aborted: {e}"),
            Self::Fenced(e) => write!(f, "transactional producer fenced: {e}"),
        }
    }
}

impl std::error::Error for TxnError {}

/// The offsets to commit: `(topic, partition, next offset, metadata)`.
pub type Offsets = [(String, i32, i64, String)];

struct Inner {
    /// The current producer: replaced when a transactional call of the old one wedged.
    producer: RwLock<FutureProducer>,
    /// How to build a replacement: the Kafka settings and the transactional ones.
    factory: (crate::kafka::KafkaArgs, Vec<(String, String)>),
    id: String,
    open: AtomicBool,
    rolled_back: AtomicBool,
    timeout: Duration,
    /// When the producer was last replaced ([`REPLACEMENTS`] at most within [`REPLACEMENTS_WITHIN`]).
    replaced: std::sync::Mutex<std::collections::VecDeque<std::time::Instant>>,
}

/// A transactional producer and whether it has a transaction open; cloned into the consumer's
/// context so the rebalance callback can abort it.
#[derive(Clone)]
pub struct Transaction(Arc<Inner>);

impl fmt::Debug for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("id", &self.0.id)
            .field("open", &self.is_open())
            .finish_non_exhaustive()
    }
}

impl Transaction {
    /// Initialises transactions of `producer` (created with a `transactional.id`): fences
    /// older producers with the same id and aborts what they left open.
    fn init(
        producer: FutureProducer,
        factory: (crate::kafka::KafkaArgs, Vec<(String, String)>),
        id: &str,
        timeout: Duration,
    ) -> KafkaResult<Self> {
        crate::run_blocking(|| producer.init_transactions(timeout.max(INIT_TIMEOUT)))?;
        info!(transactional_id = id, "transactions initialised");
        Ok(Self(Arc::new(Inner {
            producer: RwLock::new(producer),
            factory,
            id: id.to_owned(),
            open: AtomicBool::new(false),
            rolled_back: AtomicBool::new(false),
            timeout,
            replaced: std::sync::Mutex::default(),
        })))
    }

    /// A transactional producer with `args`' producer settings, `transactional.id` = `id` and
    /// the broker-side transaction timeout `timeout`, initialised (which fences older producers with the same
    /// id and aborts what they left open).
    pub fn create(
        args: &crate::kafka::KafkaArgs,
        id: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let timeout_ms = timeout.as_millis().to_string();
        let settings: Vec<(String, String)> = [
            ("transactional.id", id),
            ("transaction.timeout.ms", &timeout_ms),
            // librdkafka requires a message timeout no longer than the transaction's.
            ("message.timeout.ms", &timeout_ms),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let producer = build(args, &settings)?;
        Self::init(producer, (args.clone(), settings), id, timeout)
            .with_context(|| format!("cannot initialise transactions (transactional id `{id}`)"))
    }

    /// The transactional producer (outputs are sent with it while a transaction is open); the
    /// replacement after a wedged call ([`Transaction::commit`]) from then on.
    pub fn producer(&self) -> FutureProducer {
        self.0
            .producer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The `transactional.id`.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// True while a transaction is open.
    pub fn is_open(&self) -> bool {
        self.0.open.load(Ordering::Acquire)
    }

    /// Opens a transaction unless one is open.
    pub fn begin(&self) -> Result<(), TxnError> {
        if self.is_open() {
            return Ok(());
        }
        self.producer()
            .begin_transaction()
            .map_err(|e| self.recover(classify(e)))?;
        self.0.open.store(true, Ordering::Release);
        Ok(())
    }

    /// Adds `offsets` for `consumer`'s group to the open transaction and commits it (which
    /// first delivers every output sent in it). On an abortable failure the transaction is
    /// aborted and `Aborted` returned: roll back. Runs off the runtime's workers.
    pub fn commit<C: ConsumerContext>(
        &self,
        consumer: &impl Consumer<C>,
        offsets: &Offsets,
    ) -> Result<(), TxnError> {
        if !self.is_open() {
            return Ok(());
        }
        let result = self.offsets_for(consumer, offsets).and_then(|offsets| {
            let timeout = self.0.timeout;
            self.guarded("commit", move |producer| {
                send_offsets_and_commit(producer, offsets, timeout)
            })
        });
        match result {
            Ok(()) => {
                self.0.open.store(false, Ordering::Release);
                metrics::counter!(TRANSACTIONS_COMMITTED.name).increment(1);
                Ok(())
            }
            Err(TxnError::Aborted(error)) => {
                self.abort()?;
                Err(TxnError::Aborted(error))
            }
            Err(fenced) => Err(self.recover(fenced)),
        }
    }

    /// The offsets as a partition list with the consumer's group metadata (none if empty).
    fn offsets_for<C: ConsumerContext>(
        &self,
        consumer: &impl Consumer<C>,
        offsets: &Offsets,
    ) -> Result<Option<(TopicPartitionList, ConsumerGroupMetadata)>, TxnError> {
        if offsets.is_empty() {
            return Ok(None);
        }
        let aborted = |e: KafkaError| TxnError::Aborted(e.into());
        let metadata = consumer.group_metadata().ok_or_else(|| {
            aborted(KafkaError::ConsumerCommit(
                RDKafkaErrorCode::UnknownMemberId,
            ))
        })?;
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for (topic, partition, offset, meta) in offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(aborted)?;
            if !meta.is_empty()
                && let Some(mut e) = tpl.find_partition(topic, *partition)
            {
                e.set_metadata(meta);
            }
        }
        Ok(Some((tpl, metadata)))
    }

    /// Aborts the open transaction: its outputs are discarded (never visible to
    /// `read_committed` consumers) and its offsets not committed.
    pub fn abort(&self) -> Result<(), TxnError> {
        if !self.is_open() {
            return Ok(());
        }
        let timeout = self.0.timeout;
        let result = self.guarded("abort", move |producer| {
            // Deliver (or fail) what was sent first: an output just sent may still be adding
            // its partition to the transaction, and an abort that overtakes it reaches a
            // coordinator that holds no open transaction, answers INVALID_TXN_STATE, and
            // librdkafka makes that fatal (librdkafka #4849; reproduced by
            // `a_transaction_aborted_right_after_its_first_send_aborts_cleanly`). The abort
            // discards the delivered outputs anyway.
            if let Err(error) = producer.flush(timeout) {
                warn!(%error, "flush before abort failed");
            }
            retrying(timeout, || producer.abort_transaction(timeout))
        });
        let result = match result {
            // A replaced producer has no transaction open: its initialisation aborted it.
            Ok(()) | Err(TxnError::Aborted(Cause::Wedged(..))) => Ok(()),
            // A producer whose abort failed cannot go on: replace it (which aborts).
            Err(TxnError::Aborted(error) | TxnError::Fenced(error)) => {
                match self.recover(TxnError::Fenced(error)) {
                    TxnError::Aborted(Cause::Recovered(_)) => Ok(()),
                    failed => Err(failed),
                }
            }
        };
        self.0.open.store(false, Ordering::Release);
        if result.is_ok() {
            metrics::counter!(TRANSACTIONS_ABORTED.name).increment(1);
        }
        result
    }

    /// From a rebalance callback, before partitions are revoked: aborts the open transaction
    /// and records that the loop must roll back.
    pub fn abort_on_revoke(&self) {
        if !self.is_open() {
            return;
        }
        if let Err(error) = self.abort() {
            // The next transaction operation reports it to the loop again.
            warn!(%error, "abort on revoke failed");
        }
        info!(
            transactional_id = self.id(),
            "open transaction aborted on revoke"
        );
        self.0.rolled_back.store(true, Ordering::Release);
    }

    /// True once after the rebalance callback aborted a transaction.
    pub fn take_rolled_back(&self) -> bool {
        self.0.rolled_back.swap(false, Ordering::AcqRel)
    }
}

/// Transactions aborted (their outputs discarded, the stage rolled back).
pub const TRANSACTIONS_ABORTED: Metric = Metric {
    name: "kafka_transactions_aborted_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Kafka transactions aborted (outputs discarded, stage rolled back to its committed offsets)",
};
/// Transactions committed.
pub const TRANSACTIONS_COMMITTED: Metric = Metric {
    name: "kafka_transactions_committed_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Kafka transactions committed (outputs and input offsets together)",
};
/// Transactional producers replaced after a call wedged.
pub const PRODUCERS_REPLACED: Metric = Metric {
    name: "kafka_transactional_producers_replaced_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Transactional producers replaced: a call did not return in time, or the producer failed (e.g. its transaction timed out on the coordinator)",
};

/// The transaction metrics.
pub const METRICS: &[Metric] = &[
    TRANSACTIONS_COMMITTED,
    TRANSACTIONS_ABORTED,
    PRODUCERS_REPLACED,
];

mod output;
mod rollback;
mod wedge;

pub use output::OutputProducer;
pub use rollback::Rollback;
use wedge::{INIT_TIMEOUT, build, classify, retrying, send_offsets_and_commit};
