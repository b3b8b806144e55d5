//! Rows of one Cassandra partition written together: the records the consumer has ready at
//! once are grouped by their Kafka key (the validated topic is keyed by `source_ip`, the first
//! column of `access_logs`' partition key), and each group of up to `WRITER_BATCH_MAX_ROWS` is
//! one unlogged batch instead of one insert per row: one partition, or two when its rows
//! straddle a 10-minute bucket boundary. Cassandra applies such a
//! batch as one mutation; measured on the local node, it costs 71 µs of Cassandra CPU per row
//! against 112 µs for single inserts (`cargo xtask bench --baseline spark`, BENCHMARKS.md).
//!
//! Nothing waits for a group to fill: a group is what was already buffered when a record
//! arrived, so at low rates every group is one record and is written exactly as before.
//!
//! A batch is tried once. If it fails for any reason, each of its records goes through the
//! single-record path ([`crate::writer`]'s `handle`): retries with backoff, a row Cassandra
//! rejects dead-lettered alone, an authorization failure stopping the service. Outcomes,
//! offsets and dead letters are therefore per record, as without batching.

use std::{sync::Arc, time::Instant};

use chrono::Utc;
use log_schema::{Origin, ValidatedRecord};
use scylla::statement::batch::{Batch, BatchType};

use crate::metrics::{
    BATCH_FALLBACKS, BATCHES, E2E_LATENCY_SECONDS, ROWS_WRITTEN, WRITE_LATENCY_SECONDS,
};
use crate::{
    rows::access_log_row,
    write::{Outcome, Shared, Written, handle},
};

/// A consumed record waiting for its write.
pub(crate) struct Pending {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// The exactly-once epoch its write started in.
    pub epoch: u64,
    pub payload: Vec<u8>,
    pub key: Option<Vec<u8>>,
}

/// Splits what the consumer had ready into write groups, in consumption order of each
/// group's first record: records of `input_topic` with the same key, up to `max_rows` per
/// group; every other record (stats, alerts, keyless) alone.
pub(crate) fn group(
    records: Vec<Pending>,
    input_topic: &str,
    max_rows: usize,
) -> Vec<Vec<Pending>> {
    let mut groups: Vec<Vec<Pending>> = Vec::new();
    // Open group per key: index into `groups`.
    let mut open: std::collections::HashMap<Vec<u8>, usize> = Default::default();
    for r in records {
        let key = match &r.key {
            Some(k) if max_rows > 1 && *r.topic == *input_topic => k.clone(),
            _ => {
                groups.push(vec![r]);
                continue;
            }
        };
        match open.get(&key) {
            Some(&i) if groups[i].len() < max_rows => groups[i].push(r),
            _ => {
                open.insert(key, groups.len());
                groups.push(vec![r]);
            }
        }
    }
    groups
}

/// Writes one group; one outcome per record.
pub(crate) async fn write(shared: &Shared, mut group: Vec<Pending>) -> Vec<Written> {
    if group.len() > 1 {
        let rows: Option<Vec<ValidatedRecord>> = group
            .iter()
            .map(|p| ValidatedRecord::from_json(&p.payload).ok())
            .collect();
        if let Some(rows) = rows
            && write_rows(shared, &rows).await
        {
            return group
                .into_iter()
                .map(|p| {
                    (
                        p.topic,
                        p.partition,
                        p.offset,
                        p.epoch,
                        Ok(Outcome::Written),
                    )
                })
                .collect();
        }
    }
    // One record, a record that does not decode, or a failed batch: record by record.
    let mut out = Vec::with_capacity(group.len());
    for p in group.drain(..) {
        let origin = Origin {
            topic: &p.topic,
            partition: p.partition,
            offset: p.offset,
        };
        let outcome = handle(shared, &p.payload, p.key.as_deref(), &origin).await;
        out.push((p.topic, p.partition, p.offset, p.epoch, outcome));
    }
    out
}

/// One unlogged batch of `rows` (one source); true when Cassandra applied it.
async fn write_rows(shared: &Shared, rows: &[ValidatedRecord]) -> bool {
    let started = Instant::now();
    let mut batch = Batch::new(BatchType::Unlogged);
    for _ in rows {
        batch.append_statement(shared.statements.access_logs.clone());
    }
    let values: Vec<_> = rows.iter().map(access_log_row).collect();
    if let Err(error) = shared.session.batch(&batch, values).await {
        metrics::counter!(BATCH_FALLBACKS.name).increment(1);
        tracing::debug!(%error, rows = rows.len(), "batch failed; writing its rows one by one");
        return false;
    }
    let n = rows.len() as u64;
    metrics::counter!(ROWS_WRITTEN.name, "table" => "access_logs").increment(n);
    metrics::counter!(BATCHES.name).increment(1);
    let stats = &shared.stats;
    stats
        .written
        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    stats
        .batched
        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    // Per row, as for single inserts: each row's write took the batch's time.
    let took = started.elapsed();
    let now = Utc::now();
    for r in rows {
        metrics::histogram!(WRITE_LATENCY_SECONDS.name).record(took.as_secs_f64());
        stats.record_latency(took);
        let e2e = (now - r.timestamp).to_std().unwrap_or_default();
        metrics::histogram!(E2E_LATENCY_SECONDS.name).record(e2e.as_secs_f64());
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(topic: &str, offset: i64, key: Option<&str>) -> Pending {
        Pending {
            topic: Arc::from(topic),
            partition: 0,
            offset,
            epoch: 0,
            payload: Vec::new(),
            key: key.map(|k| k.as_bytes().to_vec()),
        }
    }

    fn offsets(groups: &[Vec<Pending>]) -> Vec<Vec<i64>> {
        groups
            .iter()
            .map(|g| g.iter().map(|p| p.offset).collect())
            .collect()
    }

    #[test]
    fn groups_by_key_on_the_input_topic_only_and_caps_the_size() {
        let records = vec![
            p("valid", 0, Some("a")),
            p("valid", 1, Some("b")),
            p("valid", 2, Some("a")),
            p("stats", 3, Some("a")),
            p("valid", 4, None),
            p("valid", 5, Some("a")),
            p("valid", 6, Some("a")),
            p("valid", 7, Some("b")),
        ];
        let groups = group(records, "valid", 3);
        assert_eq!(
            offsets(&groups),
            vec![vec![0, 2, 5], vec![1, 7], vec![3], vec![4], vec![6]]
        );
    }

    #[test]
    fn max_rows_one_keeps_every_record_alone() {
        let records = (0..4).map(|i| p("valid", i, Some("a"))).collect();
        assert_eq!(
            offsets(&group(records, "valid", 1)),
            vec![vec![0], vec![1], vec![2], vec![3]]
        );
    }
}
