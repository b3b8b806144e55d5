//! Returning a stage to its committed offsets after an abort.

use std::time::Duration;

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{Consumer, ConsumerContext},
    error::{KafkaError, KafkaResult, RDKafkaErrorCode},
};
use tracing::info;

/// A stage's plan to return to its committed offsets after an abort: per assigned partition
/// of `topic`, the committed offset (or the beginning when nothing was committed) to seek to.
#[derive(Debug, Default)]
pub struct Rollback {
    /// `(partition, committed offset or None, metadata)`.
    pub partitions: Vec<(i32, Option<i64>, String)>,
}

impl Rollback {
    /// Reads the committed offsets of `consumer`'s assigned partitions of `topic` and seeks
    /// each back to it (librdkafka drops what it prefetched past it).
    pub fn rewind<C: ConsumerContext>(
        consumer: &impl Consumer<C>,
        topic: &str,
        timeout: Duration,
    ) -> KafkaResult<Self> {
        let assignment = consumer.assignment()?;
        let partitions: Vec<i32> = assignment
            .elements()
            .iter()
            .filter(|e| e.topic() == topic)
            .map(|e| e.partition())
            .collect();
        if partitions.is_empty() {
            return Ok(Self::default());
        }
        let committed =
            crate::kafka::committed_with_metadata(consumer, topic, &partitions, timeout)?;
        let mut tpl = TopicPartitionList::with_capacity(committed.len());
        for (p, offset, _) in &committed {
            let to = offset.map_or(Offset::Beginning, Offset::Offset);
            tpl.add_partition_offset(topic, *p, to)?;
        }
        let sought = crate::run_blocking(|| consumer.seek_partitions(tpl, timeout))?;
        for e in sought.elements() {
            match e.error() {
                // Assigned but not fetching yet (a rebalance in this poll): its fetch starts
                // at the committed offset anyway. Being stopped: no longer ours.
                Err(KafkaError::OffsetFetch(
                    RDKafkaErrorCode::State | RDKafkaErrorCode::PreviousInProgress,
                )) => info!(
                    topic,
                    partition = e.partition(),
                    "partition not fetching; it starts from its committed offset"
                ),
                other => other?,
            }
        }
        Ok(Self {
            partitions: committed,
        })
    }
}
