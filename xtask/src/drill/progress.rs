//! What the drill reads from Kafka while it waits: committed progress of a group, a topic read
//! to its end, and waiting with a deadline.

use super::*;
use crate::procs::Exited;

pub(super) fn consumer(kafka: &KafkaArgs, group: &str) -> anyhow::Result<BaseConsumer> {
    Ok(kafka
        .config(&[("group.id", group), ("enable.auto.commit", "false")])?
        .create()?)
}

pub(super) fn partitions(c: &BaseConsumer, topic: &str) -> anyhow::Result<Vec<i32>> {
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// [`progress`], retried through transient errors for up to a minute.
pub(super) async fn progress_retrying(
    kafka: &KafkaArgs,
    group: &str,
    topic: &str,
) -> anyhow::Result<(i64, i64)> {
    let mut result = None;
    wait_for("broker metadata", Duration::from_secs(60), || {
        result = Some(progress(kafka, group, topic)?);
        Ok(true)
    })
    .await?;
    result.context("no progress read")
}

/// (sum of high watermarks, sum of the group's committed offsets) of a topic.
pub(super) fn progress(kafka: &KafkaArgs, group: &str, topic: &str) -> anyhow::Result<(i64, i64)> {
    let c = consumer(kafka, group)?;
    let parts = partitions(&c, topic)?;
    let mut tpl = TopicPartitionList::new();
    let mut high = 0;
    for p in &parts {
        tpl.add_partition(topic, *p);
        high += c.fetch_watermarks(topic, *p, Duration::from_secs(10))?.1;
    }
    let committed = c
        .committed_offsets(tpl, Duration::from_secs(10))?
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum();
    Ok((high, committed))
}

/// Every committed record of a topic ([`crate::topics::read_committed`]): (partition, offset,
/// payload).
pub(super) fn read_all(kafka: &KafkaArgs, topic: &str) -> anyhow::Result<Vec<(i32, i64, Vec<u8>)>> {
    crate::topics::read_committed(kafka, topic, Duration::from_secs(120), |m| {
        (
            m.partition(),
            m.offset(),
            m.payload().unwrap_or_default().to_vec(),
        )
    })
}

/// True when `group` committed past the last committed record of every partition of `topic`
/// (transaction markers and aborted records may follow it, so this is not the high watermark).
pub(super) fn caught_up(kafka: &KafkaArgs, group: &str, topic: &str) -> anyhow::Result<bool> {
    let mut end: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o, _) in read_all(kafka, topic)? {
        let e = end.entry(p).or_default();
        *e = (*e).max(o + 1);
    }
    let c = consumer(kafka, group)?;
    let mut tpl = TopicPartitionList::new();
    for p in end.keys() {
        tpl.add_partition(topic, *p);
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(!end.is_empty()
        && end.iter().all(|(p, e)| {
            committed
                .find_partition(topic, *p)
                .is_some_and(|c| matches!(c.offset(), Offset::Offset(o) if o >= *e))
        }))
}

pub(super) async fn wait_for(
    what: &str,
    deadline: Duration,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let end = Instant::now() + deadline;
    let mut last_error = None;
    loop {
        // Transient client errors (a broker that just restarted) mean "not yet".
        match done() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) if e.is::<Exited>() => return Err(e),
            Err(e) => last_error = Some(e),
        }
        if Instant::now() > end {
            bail!("timed out after {deadline:?} waiting for {what} (last error: {last_error:?})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
