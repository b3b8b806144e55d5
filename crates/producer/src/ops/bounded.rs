//! A bounded, `read_committed` read of some partitions of a topic: per partition from a start
//! offset up to an end offset fixed when the read opens (the time window's by
//! offsets-for-times, else the partition's end then), so a read always terminates however
//! fast the topic grows. Progress can be saved in a consumer group and resumed.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use pipeline_runtime::kafka::KafkaArgs;
use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    error::KafkaError,
    message::{BorrowedMessage, Message as _},
};

/// How long a read may go without a record or an end-of-partition before it fails.
const STALL: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(30);

/// Which records of a topic to read.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// Partitions (all when empty).
    pub partitions: Vec<i32>,
    /// From the first record with a Kafka timestamp at or after this (else the beginning).
    pub since: Option<DateTime<Utc>>,
    /// Up to the first record with a Kafka timestamp at or after this (else the end).
    pub until: Option<DateTime<Utc>>,
}

/// Offsets `[start, end)` of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First offset to read.
    pub start: i64,
    /// First offset not to read.
    pub end: i64,
}

/// An open bounded read.
pub struct Bounded {
    consumer: StreamConsumer,
    topic: String,
    /// Partitions still being read: their span (start as opened, end fixed).
    open: BTreeMap<i32, Span>,
    spans: BTreeMap<i32, Span>,
}

impl std::fmt::Debug for Bounded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bounded")
            .field("topic", &self.topic)
            .field("spans", &self.spans)
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl Bounded {
    /// Opens a read of `window` of `topic`. With `resume`, a partition starts at the offset
    /// its consumer `group` committed, when that lies inside the window.
    pub fn open(
        kafka: &KafkaArgs,
        group: &str,
        topic: &str,
        window: &Window,
        resume: bool,
    ) -> anyhow::Result<Self> {
        let mut defaults = vec![
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", "true"),
            ("isolation.level", "read_committed"),
            ("auto.offset.reset", "earliest"),
        ];
        defaults.extend_from_slice(KafkaArgs::CONSUMER_MEMORY);
        let consumer: StreamConsumer = kafka
            .config(&defaults)?
            .create()
            .context("cannot create the Kafka consumer")?;
        let metadata = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .with_context(|| format!("cannot read the metadata of `{topic}`"))?;
        let existing: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if existing.is_empty() {
            bail!("topic `{topic}` does not exist or has no partitions");
        }
        let partitions = if window.partitions.is_empty() {
            existing
        } else {
            for p in &window.partitions {
                if !existing.contains(p) {
                    bail!(
                        "topic `{topic}` has no partition {p} (it has {})",
                        existing.len()
                    );
                }
            }
            window.partitions.clone()
        };
        let starts = offsets_at(&consumer, topic, &partitions, window.since)?;
        let ends = offsets_at(&consumer, topic, &partitions, window.until)?;
        let committed = if resume {
            committed(&consumer, topic, &partitions)?
        } else {
            BTreeMap::new()
        };
        let mut spans = BTreeMap::new();
        let mut assignment = TopicPartitionList::new();
        for p in partitions {
            let end = ends[&p].1;
            let start = match window.since {
                Some(_) => starts[&p].1,
                None => starts[&p].0,
            }
            .min(end);
            let from = committed
                .get(&p)
                .copied()
                .filter(|c| (start..=end).contains(c))
                .unwrap_or(start);
            spans.insert(p, Span { start, end });
            if from < end {
                assignment.add_partition_offset(topic, p, Offset::Offset(from))?;
            }
        }
        let open = assignment
            .elements()
            .iter()
            .map(|e| (e.partition(), spans[&e.partition()]))
            .collect();
        consumer
            .assign(&assignment)
            .with_context(|| format!("cannot assign the partitions of `{topic}`"))?;
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
            open,
            spans,
        })
    }

    /// Records in the spans (an upper bound: aborted records and transaction markers take
    /// offsets too).
    pub fn len(&self) -> u64 {
        self.spans
            .values()
            .map(|s| (s.end - s.start).max(0) as u64)
            .sum()
    }

    /// True when the window holds no offsets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next record of the window, or `None` once every partition reached its end.
    pub async fn next(&mut self) -> anyhow::Result<Option<BorrowedMessage<'_>>> {
        let consumer = &self.consumer;
        let open = &mut self.open;
        loop {
            if open.is_empty() {
                return Ok(None);
            }
            let received = tokio::time::timeout(STALL, consumer.recv())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "no record from `{}` for {STALL:?} (partitions {:?} not at their end)",
                        self.topic,
                        open.keys().collect::<Vec<_>>()
                    )
                })?;
            let message = match received {
                Ok(m) => m,
                Err(KafkaError::PartitionEOF(p)) => {
                    // Past the last committed record: what is left of the span is aborted
                    // records and transaction markers.
                    close(consumer, &self.topic, open, p);
                    continue;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot read `{}`", self.topic));
                }
            };
            let p = message.partition();
            let Some(span) = open.get(&p).copied() else {
                continue;
            };
            if message.offset() + 1 >= span.end {
                close(consumer, &self.topic, open, p);
            }
            if message.offset() < span.end {
                return Ok(Some(message));
            }
        }
    }

    /// Saves `next` (the next offset to read, per partition) as the group's committed
    /// offsets, for a later resume.
    pub fn save(&self, next: &BTreeMap<i32, i64>) -> anyhow::Result<()> {
        if next.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in next {
            tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*o))?;
        }
        pipeline_runtime::run_blocking(|| self.consumer.commit(&tpl, CommitMode::Sync))
            .context("cannot save the progress (offset commit)")
    }
}

fn close(consumer: &StreamConsumer, topic: &str, open: &mut BTreeMap<i32, Span>, p: i32) {
    if open.remove(&p).is_some() {
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition(topic, p)
            .set_offset(Offset::Invalid)
            .is_ok()
        {
            let _ = consumer.pause(&tpl);
        }
    }
}

/// Per partition: (low watermark, first offset with a timestamp at or after `at`, else the
/// high watermark); without `at`, (low, high).
fn offsets_at(
    consumer: &StreamConsumer,
    topic: &str,
    partitions: &[i32],
    at: Option<DateTime<Utc>>,
) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    let mut out = BTreeMap::new();
    let mut query = TopicPartitionList::new();
    for &p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, TIMEOUT)
            .with_context(|| format!("cannot read the offsets of `{topic}` [{p}]"))?;
        out.insert(p, (low, high));
        if let Some(at) = at {
            query.add_partition_offset(topic, p, Offset::Offset(at.timestamp_millis()))?;
        }
    }
    if at.is_none() {
        return Ok(out);
    }
    let found = consumer
        .offsets_for_times(query, TIMEOUT)
        .with_context(|| format!("cannot look up offsets by time in `{topic}`"))?;
    for e in found.elements() {
        e.error()
            .with_context(|| format!("offsets by time of `{topic}` [{}]", e.partition()))?;
        if let (Some(entry), Offset::Offset(o)) = (out.get_mut(&e.partition()), e.offset()) {
            entry.1 = o;
        }
    }
    Ok(out)
}

fn committed(
    consumer: &StreamConsumer,
    topic: &str,
    partitions: &[i32],
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, TIMEOUT)
        .context("cannot read the saved progress (committed offsets)")?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}
