//! Offsets: per-partition contiguous progress of out-of-order work, storing and committing
//! offsets (with metadata), reading committed ones.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer},
    error::KafkaResult,
    types::RDKafkaErrorCode,
};
use tracing::{info, warn};

/// Per-partition progress of out-of-order completions, so that a consumer stores an offset
/// only when that record and every earlier one of its partition are done.
///
/// Records of one partition are begun in offset order; they may complete in any order.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<(String, i32), VecDeque<(i64, bool)>>,
}

impl OffsetTracker {
    /// Registers a record as in flight.
    pub fn begin(&mut self, topic: &str, partition: i32, offset: i64) {
        let q = match self.partitions.get_mut(&(topic.to_owned(), partition)) {
            Some(q) => q,
            None => self
                .partitions
                .entry((topic.to_owned(), partition))
                .or_default(),
        };
        q.push_back((offset, false));
    }

    /// Marks a record done. Returns the next offset to commit (last contiguous done + 1) when
    /// it advanced. Unknown records (e.g. of a revoked partition) are ignored.
    pub fn complete(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let q = self.partitions.get_mut(&(topic.to_owned(), partition))?;
        let i = q.binary_search_by_key(&offset, |(o, _)| *o).ok()?;
        q[i].1 = true;
        let mut next = None;
        while let Some(&(o, true)) = q.front() {
            next = Some(o + 1);
            q.pop_front();
        }
        next
    }

    /// Records in flight across all partitions.
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(VecDeque::len).sum()
    }

    /// Forgets partitions (after a revoke): their in-flight records will be redelivered to the
    /// partition's next owner.
    pub fn forget(&mut self, tpl: &TopicPartitionList) {
        for e in tpl.elements() {
            self.partitions
                .remove(&(e.topic().to_owned(), e.partition()));
        }
    }
}

/// An [`OffsetTracker`] shared between a consume loop and its consumer's rebalance callbacks.
#[derive(Debug, Clone, Default)]
pub struct SharedTracker(Arc<Mutex<OffsetTracker>>);

impl SharedTracker {
    /// Locks the tracker (a poisoned lock is recovered: the tracker has no invariant a panic
    /// half-way could break that matters more than continuing).
    pub fn lock(&self) -> MutexGuard<'_, OffsetTracker> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Per (topic, partition): the offset to commit and its metadata, kept current by a loop that
/// commits explicitly; committed synchronously for the partitions being revoked.
#[derive(Debug, Clone, Default)]
pub struct Checkpoints(Arc<Mutex<HashMap<(String, i32), Checkpoint>>>);

/// An offset to commit and its metadata.
type Checkpoint = (i64, String);

impl Checkpoints {
    /// Sets the checkpoint of a partition.
    pub fn set(&self, topic: &str, partition: i32, offset: i64, metadata: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((topic.to_owned(), partition), (offset, metadata));
    }

    /// Removes and returns the checkpoints of `tpl`'s partitions.
    pub(super) fn take(&self, tpl: &TopicPartitionList) -> Vec<(String, i32, i64, String)> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        tpl.elements()
            .iter()
            .filter_map(|e| {
                let key = (e.topic().to_owned(), e.partition());
                map.remove(&key).map(|(o, m)| (key.0, key.1, o, m))
            })
            .collect()
    }
}

/// Commits offsets with metadata (`(topic, partition, offset, metadata)`); a synchronous
/// commit runs off the runtime's workers.
pub fn commit_checkpoints<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    checkpoints: &[(String, i32, i64, String)],
    mode: CommitMode,
) -> KafkaResult<()> {
    if checkpoints.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::with_capacity(checkpoints.len());
    for (topic, partition, offset, metadata) in checkpoints {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        if let Some(mut e) = tpl.find_partition(topic, *partition) {
            e.set_metadata(metadata);
        }
    }
    match mode {
        CommitMode::Sync => crate::run_blocking(|| consumer.commit(&tpl, mode)),
        CommitMode::Async => consumer.commit(&tpl, mode),
    }
}

/// The committed offsets and their metadata of `partitions` of `topic` (a broker round trip,
/// off the runtime's workers): `None` for a partition without a committed offset.
pub fn committed_with_metadata<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> KafkaResult<Vec<(i32, Option<i64>, String)>> {
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = crate::run_blocking(|| consumer.committed_offsets(tpl, timeout))?;
    Ok(committed
        .elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            (e.partition(), offset, e.metadata().to_owned())
        })
        .collect())
}

/// Marks a record done in the tracker and, when its partition's contiguous progress advanced,
/// stores the new offset for the next commit.
pub fn complete_and_store<C: ConsumerContext>(
    tracker: &SharedTracker,
    consumer: &StreamConsumer<C>,
    topic: &str,
    partition: i32,
    offset: i64,
) {
    let next = tracker.lock().complete(topic, partition, offset);
    if let Some(next) = next
        && let Err(error) = store_next_offset(consumer, topic, partition, next)
    {
        // Typically the partition was revoked meanwhile; its next owner redoes the record.
        warn!(%error, topic, partition, offset = next, "cannot store offset");
    }
}

/// Stores `next_offset` (the offset of the next record to read) for a partition, to be committed
/// by the next auto-commit.
pub fn store_next_offset<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    topic: &str,
    partition: i32,
    next_offset: i64,
) -> KafkaResult<()> {
    let mut tpl = TopicPartitionList::with_capacity(1);
    tpl.add_partition_offset(topic, partition, Offset::Offset(next_offset))?;
    consumer.store_offsets(&tpl)
}

/// Final synchronous commit of everything stored, for graceful shutdown (off the runtime's
/// workers, see [`crate::run_blocking`]).
pub fn final_commit<C: ConsumerContext>(consumer: &StreamConsumer<C>) {
    match crate::run_blocking(|| consumer.commit_consumer_state(CommitMode::Sync)) {
        Ok(()) => info!("final offset commit done"),
        Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => {}
        Err(error) => warn!(%error, "final offset commit failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_advances_only_over_contiguous_completions() {
        let mut t = OffsetTracker::default();
        for o in [10, 11, 12, 14] {
            t.begin("t", 0, o);
        }
        t.begin("t", 1, 5);
        assert_eq!(t.complete("t", 0, 11), None);
        assert_eq!(t.complete("t", 0, 12), None);
        assert_eq!(t.complete("t", 0, 10), Some(13));
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.complete("t", 1, 5), Some(6));
        assert_eq!(t.complete("t", 0, 99), None, "unknown offsets are ignored");
        assert_eq!(t.complete("t", 0, 14), Some(15));
        assert_eq!(t.in_flight(), 0);
    }

    proptest::proptest! {
        /// Against the rule itself: the offset to commit is one past the longest run of done
        /// records from the oldest begun, whatever the gaps between offsets and the order of
        /// completions.
        #[test]
        fn tracker_matches_the_contiguous_rule(
            gaps in proptest::collection::vec(1i64..4, 1..60),
            order in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 1..60),
        ) {
            let offsets: Vec<i64> = gaps.iter().scan(100, |o, g| { *o += g; Some(*o) }).collect();
            let mut t = OffsetTracker::default();
            for o in &offsets {
                t.begin("t", 3, *o);
            }
            let mut done = vec![false; offsets.len()];
            let mut committed = None;
            for pick in order {
                let i = pick.index(offsets.len());
                let got = t.complete("t", 3, offsets[i]);
                let advanced = !done[i];
                done[i] = true;
                let run = done.iter().take_while(|d| **d).count();
                let want = (run > 0).then(|| offsets[run - 1] + 1).filter(|w| Some(*w) != committed);
                if advanced {
                    proptest::prop_assert_eq!(got, want);
                    if want.is_some() {
                        committed = want;
                    }
                } else {
                    proptest::prop_assert_eq!(got, None, "a record completed twice");
                }
            }
            proptest::prop_assert_eq!(t.in_flight(), offsets.len() - done.iter().take_while(|d| **d).count());
        }
    }
}
