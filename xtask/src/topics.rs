//! Reading a topic back, as the drills and the benchmarks do.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use anyhow::bail;
use pipeline_runtime::kafka::KafkaArgs;
use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    message::BorrowedMessage,
};

/// Every committed record of `topic` as a `read_committed` consumer sees it (aborted
/// transactions skipped), up to each partition's end (with transactions the high watermark
/// also counts markers and aborted records), each mapped by `f`. Fails when a partition is not
/// read to its end within `deadline`.
pub fn read_committed<T>(
    kafka: &KafkaArgs,
    topic: &str,
    deadline: Duration,
    f: impl Fn(&BorrowedMessage<'_>) -> T,
) -> anyhow::Result<Vec<T>> {
    let group = format!("xtask-read-{}", uuid::Uuid::new_v4());
    let c: BaseConsumer = kafka
        .config(&[
            ("group.id", group.as_str()),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
            ("enable.partition.eof", "true"),
        ])?
        .create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    let mut open = BTreeSet::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        open.insert(p.id());
    }
    c.assign(&tpl)?;
    let end = Instant::now() + deadline;
    let mut out = Vec::new();
    while !open.is_empty() {
        if Instant::now() > end {
            bail!(
                "{topic}: partitions {open:?} not read to their end ({} records read)",
                out.len()
            );
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(f(&m)),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    Ok(out)
}
