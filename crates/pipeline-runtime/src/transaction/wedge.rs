//! Transactional calls that librdkafka does not bound: run on a thread of their own, and a
//! producer whose call outlives the bound replaced (librdkafka #5456).

use std::{
    sync::{PoisonError, atomic::Ordering},
    time::{Duration, Instant},
};

use rdkafka::{
    TopicPartitionList,
    consumer::ConsumerGroupMetadata,
    error::{KafkaError, KafkaResult},
    producer::{FutureProducer, Producer as _},
};
use tracing::{info, warn};

use super::{Cause, PRODUCERS_REPLACED, Transaction, TxnError};

impl Transaction {
    /// Runs a blocking transactional call of the current producer on a thread of its own and
    /// waits for it at most [`Transaction::wedge_after`]. librdkafka bounds its transactional
    /// calls by their timeouts, except where it does not: `send_offsets_to_transaction` can
    /// wait forever for a group coordinator that went away during the call (librdkafka
    /// #5456, #5511, open; seen here once when the single broker restarted). A call past the
    /// bound has wedged its producer: it is replaced by a new one with the same
    /// `transactional.id`, whose initialisation fences the old one and aborts the open
    /// transaction, and the call is reported as aborted (the stage rolls back).
    pub(super) fn guarded(
        &self,
        what: &'static str,
        call: impl FnOnce(&FutureProducer) -> Result<(), TxnError> + Send + 'static,
    ) -> Result<(), TxnError> {
        let producer = self.producer();
        let (done, result) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("kafka-txn".to_owned())
            .spawn(move || {
                let _ = done.send(call(&producer));
            })
            .map_err(|e| TxnError::Aborted(Cause::Replacement(format!("no thread: {e}"))))?;
        let bound = self.wedge_after();
        match crate::run_blocking(|| result.recv_timeout(bound)) {
            Ok(result) => result,
            Err(_) => {
                warn!(
                    transactional_id = self.id(),
                    call = what,
                    bound_s = bound.as_secs(),
                    "transactional call did not return in time (librdkafka #5456); replacing the producer"
                );
                self.replace()?;
                Err(TxnError::Aborted(Cause::Wedged(what, bound)))
            }
        }
    }

    /// How long a transactional call may take before its producer counts as wedged: longer
    /// than any call librdkafka bounds (`retrying` stops after `RETRY_FOR` (3) timeouts, and
    /// the call under way then takes at most one more).
    pub fn wedge_after(&self) -> Duration {
        self.0.timeout * (RETRY_FOR + 2) + Duration::from_secs(5)
    }

    /// A producer that failed fatally is replaced, and the failure becomes an abort (the stage
    /// rolls back and continues), at most [`REPLACEMENTS`] times within
    /// [`REPLACEMENTS_WITHIN`]. librdkafka reports a transaction the coordinator timed out
    /// (outputs stuck behind a broker restart longer than the transaction timeout) as "fenced
    /// by a newer instance": the coordinator bumped the epoch, and only a new producer can go
    /// on. A producer fenced again and again is fenced by another instance with the same
    /// `transactional.id`: that stays fatal.
    pub(super) fn recover(&self, error: TxnError) -> TxnError {
        let TxnError::Fenced(Cause::Kafka(error)) = error else {
            return error;
        };
        {
            let mut replaced = self
                .0
                .replaced
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            replaced.retain(|at| at.elapsed() < REPLACEMENTS_WITHIN);
            if replaced.len() >= REPLACEMENTS {
                warn!(
                    transactional_id = self.id(),
                    %error,
                    "transactional producer failed again; not replacing it (another instance with the same transactional id?)"
                );
                return TxnError::Fenced(Cause::Kafka(error));
            }
        }
        warn!(transactional_id = self.id(), %error, "transactional producer failed; replacing it");
        match self.replace() {
            Ok(()) => TxnError::Aborted(Cause::Recovered(error)),
            Err(failed) => failed,
        }
    }

    /// Replaces the producer by a new one with the same `transactional.id`: its
    /// initialisation fences the old producer and aborts the transaction it left open.
    pub fn replace(&self) -> Result<(), TxnError> {
        let fenced = |reason: String| TxnError::Fenced(Cause::Replacement(reason));
        let (args, settings) = &self.0.factory;
        let producer = build(args, settings).map_err(|e| fenced(format!("{e:#}")))?;
        crate::run_blocking(|| producer.init_transactions(self.0.timeout.max(INIT_TIMEOUT)))
            .map_err(|e| fenced(e.to_string()))?;
        *self
            .0
            .producer
            .write()
            .unwrap_or_else(PoisonError::into_inner) = producer;
        self.0.open.store(false, Ordering::Release);
        self.0
            .replaced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(Instant::now());
        metrics::counter!(PRODUCERS_REPLACED.name).increment(1);
        info!(
            transactional_id = self.id(),
            "producer replaced; the old one is fenced"
        );
        Ok(())
    }
}

/// Sends the offsets to the open transaction and commits it (which first delivers every
/// output sent in it).
pub(super) fn send_offsets_and_commit(
    producer: &FutureProducer,
    offsets: Option<(TopicPartitionList, ConsumerGroupMetadata)>,
    timeout: Duration,
) -> Result<(), TxnError> {
    if let Some((tpl, metadata)) = offsets {
        retrying(timeout, || {
            producer.send_offsets_to_transaction(&tpl, &metadata, timeout)
        })?;
    }
    retrying(timeout, || producer.commit_transaction(timeout))
}

/// Most producer replacements within [`REPLACEMENTS_WITHIN`] before a failure stays fatal.
pub(super) const REPLACEMENTS: usize = 3;
/// The window of [`REPLACEMENTS`].
pub(super) const REPLACEMENTS_WITHIN: Duration = Duration::from_secs(600);

/// How many timeouts a transactional call is retried for while librdkafka says it may
/// succeed (e.g. a timeout while the coordinator moves).
pub(super) const RETRY_FOR: u32 = 3;
/// Least time given to `init_transactions` (it may wait for the coordinator to load).
pub(super) const INIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a transactional call again while librdkafka says the same call may succeed, for at
/// most [`RETRY_FOR`] × `timeout`.
pub(super) fn retrying(
    timeout: Duration,
    mut call: impl FnMut() -> KafkaResult<()>,
) -> Result<(), TxnError> {
    let deadline = Instant::now() + timeout * RETRY_FOR;
    loop {
        match call() {
            Ok(()) => return Ok(()),
            Err(KafkaError::Transaction(e)) if e.is_retriable() && Instant::now() < deadline => {
                warn!(error = %e, "transactional call failed, retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(error) => return Err(classify(error)),
        }
    }
}

/// A producer with `args`' settings and `settings`.
pub(super) fn build(
    args: &crate::kafka::KafkaArgs,
    settings: &[(String, String)],
) -> anyhow::Result<FutureProducer> {
    let settings: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    args.producer(&settings)
}

pub(super) fn classify(error: KafkaError) -> TxnError {
    match &error {
        KafkaError::Transaction(e) if e.is_fatal() => TxnError::Fenced(error.into()),
        _ => TxnError::Aborted(error.into()),
    }
}
