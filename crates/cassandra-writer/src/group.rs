//! Rows of one Cassandra partition written together, the way the Spark Cassandra Connector
//! groups them, without its latency.
//!
//! Every `access_logs` row of the validated topic joins the open group of its partition key,
//! `(source_ip, bucket)`; groups stay open across polls, at most `WRITER_BATCH_MAX_OPEN_GROUPS`
//! of them (past it, the oldest is closed). A group is closed when it holds
//! `WRITER_BATCH_MAX_ROWS` rows or `WRITER_BATCH_MAX_BYTES` of payload; a closed group is one
//! request, an unlogged batch of one partition, which Cassandra applies as one mutation. What
//! Cassandra pays is mostly per request (`cargo xtask bench --baseline spark`'s sweep,
//! BENCHMARKS.md), so full groups are what makes a backlog drain cheap.
//!
//! A partial group is sent as soon as a request slot is free **unless the writer is behind**
//! (the consumer had more records ready than the writer took): then it may wait up to
//! `WRITER_BATCH_LINGER_MS` for more rows of its partition. At low rates the writer is never
//! behind, so every record goes out at once, as a single insert, exactly as without grouping.
//!
//! Stats, alerts and records that do not decode are requests of their own. A group is tried
//! once as a batch; if that fails for any reason, each of its records goes through the
//! single-record path ([`crate::write::handle`]): retries with backoff, a row Cassandra rejects
//! dead-lettered alone, an authorization failure stopping the service. Outcomes, offsets and
//! dead letters are therefore per record.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};

use chrono::Utc;
use log_schema::{Origin, ValidatedRecord};
use scylla::statement::batch::{Batch, BatchType};

use crate::{
    metrics::{
        BATCH_FALLBACKS, BATCHED_ROWS, BATCHES, E2E_LATENCY_SECONDS, ROWS_WRITTEN,
        WRITE_LATENCY_SECONDS,
    },
    rows::{access_log_row, bucket},
    shared::{Outcome, Pending, Shared, Written},
    write::handle,
};

/// When groups are closed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most rows in a group (1: every record alone).
    pub max_rows: usize,
    /// Most payload bytes in a group (it closes when it reaches them).
    pub max_bytes: usize,
    /// Most groups open at once.
    pub max_open: usize,
    /// How long a partial group may wait for more rows while the writer is behind.
    pub linger: Duration,
}

/// One request's worth of records.
#[derive(Debug)]
pub(crate) enum Request {
    /// Rows of one `access_logs` partition, decoded.
    Rows(Vec<(Pending, ValidatedRecord)>),
    /// A record written through the single-record path (stats, alert, one that does not
    /// decode).
    Single(Pending),
}

/// The partition key of an `access_logs` row: source IP, bucket start in ms.
type Key = (IpAddr, i64);

#[derive(Debug)]
struct Open {
    serial: u64,
    opened: Instant,
    bytes: usize,
    rows: Vec<(Pending, ValidatedRecord)>,
}

/// The open groups and the closed requests waiting for a request slot.
#[derive(Debug)]
pub(crate) struct Groups {
    limits: Limits,
    open: HashMap<Key, Open>,
    /// Open groups in the order they were opened (entries of closed groups are skipped).
    order: VecDeque<(Key, u64)>,
    serial: u64,
    ready: VecDeque<Request>,
}

impl Groups {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits: Limits {
                max_rows: limits.max_rows.max(1),
                max_open: limits.max_open.max(1),
                ..limits
            },
            open: HashMap::new(),
            order: VecDeque::new(),
            serial: 0,
            ready: VecDeque::new(),
        }
    }

    /// Adds a consumed record: a row of `input_topic` joins its partition's group, anything
    /// else is a request of its own.
    pub(crate) fn add(&mut self, p: Pending, input_topic: &str, now: Instant) {
        if self.limits.max_rows == 1 || *p.topic != *input_topic {
            self.ready.push_back(Request::Single(p));
            return;
        }
        let Ok(row) = ValidatedRecord::from_json(&p.payload) else {
            self.ready.push_back(Request::Single(p));
            return;
        };
        let key = (row.source_ip, bucket(row.timestamp).timestamp_millis());
        if !self.open.contains_key(&key) {
            if self.open.len() >= self.limits.max_open {
                self.close_oldest();
            }
            self.serial += 1;
            self.order.push_back((key, self.serial));
            self.open.insert(
                key,
                Open {
                    serial: self.serial,
                    opened: now,
                    bytes: 0,
                    rows: Vec::new(),
                },
            );
        }
        let group = self.open.get_mut(&key).expect("inserted above");
        group.bytes += p.payload.len();
        group.rows.push((p, row));
        if group.rows.len() >= self.limits.max_rows || group.bytes >= self.limits.max_bytes {
            let group = self.open.remove(&key).expect("present");
            self.ready.push_back(Request::Rows(group.rows));
            self.compact();
        }
    }

    /// The next request to send: a closed one, or else the oldest open group if the writer
    /// is not `behind` or the group has waited its linger.
    pub(crate) fn next(&mut self, now: Instant, behind: bool) -> Option<Request> {
        if let Some(r) = self.ready.pop_front() {
            return Some(r);
        }
        let opened = self.oldest()?.1;
        if behind && now < opened + self.limits.linger {
            return None;
        }
        self.close_oldest();
        self.ready.pop_front()
    }

    /// When the oldest open group's linger ends.
    pub(crate) fn deadline(&mut self) -> Option<Instant> {
        self.oldest().map(|(_, opened)| opened + self.limits.linger)
    }

    /// Forgets everything (the records go back to the committed offsets).
    pub(crate) fn clear(&mut self) {
        self.open.clear();
        self.order.clear();
        self.ready.clear();
    }

    /// The oldest open group's key and opening time; drops entries of closed groups.
    fn oldest(&mut self) -> Option<(Key, Instant)> {
        while let Some(&(key, serial)) = self.order.front() {
            match self.open.get(&key) {
                Some(g) if g.serial == serial => return Some((key, g.opened)),
                _ => {
                    self.order.pop_front();
                }
            }
        }
        None
    }

    fn close_oldest(&mut self) {
        if let Some((key, _)) = self.oldest() {
            self.order.pop_front();
            let group = self.open.remove(&key).expect("live entry");
            self.ready.push_back(Request::Rows(group.rows));
        }
    }

    /// Keeps `order` bounded when groups keep closing full while an old one stays open.
    fn compact(&mut self) {
        if self.order.len() > 4 * self.limits.max_open + 64 {
            let open = &self.open;
            self.order
                .retain(|(key, serial)| open.get(key).is_some_and(|g| g.serial == *serial));
        }
    }
}

/// Writes one request; one outcome per record.
pub(crate) async fn write(shared: &Shared, request: Request) -> Vec<Written> {
    let records = match request {
        Request::Rows(rows) if rows.len() > 1 => {
            let values: Vec<_> = rows.iter().map(|(_, r)| access_log_row(r)).collect();
            if write_rows(shared, &rows, values).await {
                return rows
                    .into_iter()
                    .map(|(p, _)| {
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
            rows.into_iter().map(|(p, _)| p).collect()
        }
        Request::Rows(rows) => rows.into_iter().map(|(p, _)| p).collect(),
        Request::Single(p) => vec![p],
    };
    // One record, or a failed batch: record by record.
    let mut out = Vec::with_capacity(records.len());
    for p in records {
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

/// One unlogged batch of `rows` (one partition); true when Cassandra applied it.
async fn write_rows(
    shared: &Shared,
    rows: &[(Pending, ValidatedRecord)],
    values: Vec<crate::rows::AccessLogRow<'_>>,
) -> bool {
    let started = Instant::now();
    let mut batch = Batch::new(BatchType::Unlogged);
    for _ in rows {
        batch.append_statement(shared.statements.access_logs.clone());
    }
    if let Err(error) = shared.session.batch(&batch, values).await {
        metrics::counter!(BATCH_FALLBACKS.name).increment(1);
        tracing::debug!(%error, rows = rows.len(), "batch failed; writing its rows one by one");
        return false;
    }
    let n = rows.len() as u64;
    metrics::counter!(ROWS_WRITTEN.name, "table" => "access_logs").increment(n);
    metrics::counter!(BATCHES.name).increment(1);
    metrics::counter!(BATCHED_ROWS.name).increment(n);
    let stats = &shared.stats;
    stats.written.fetch_add(n, Relaxed);
    stats.batched.fetch_add(n, Relaxed);
    stats.batches.fetch_add(1, Relaxed);
    // Per row, as for single inserts: each row's write took the batch's time.
    let took = started.elapsed();
    let now = Utc::now();
    for (_, r) in rows {
        metrics::histogram!(WRITE_LATENCY_SECONDS.name).record(took.as_secs_f64());
        stats.record_latency(took);
        let e2e = (now - r.timestamp).to_std().unwrap_or_default();
        metrics::histogram!(E2E_LATENCY_SECONDS.name).record(e2e.as_secs_f64());
    }
    true
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::Arc};

    use proptest::prelude::*;

    use super::*;

    const INPUT: &str = "valid";

    /// A validated record of `source` at `minute` (of 2026-12-01) as the validated topic
    /// carries it; `pad` bytes of padding in its protocol field vary its size.
    fn pending(topic: &str, offset: i64, source: u8, minute: u32) -> Pending {
        let raw = format!(
            r#"{{"timestamp":"2026-12-01T10:{:02}:00Z","source_ip":"10.0.0.{source}","destination_ip":"10.0.1.1","port":443,"protocol":"TCP","bytes_sent":1,"bytes_received":2,"action":"ALLOW"}}"#,
            minute % 60
        );
        let origin = log_schema::Origin {
            topic: "raw",
            partition: 0,
            offset,
        };
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T11:00:00Z")
            .expect("time")
            .to_utc();
        let payload = if topic == INPUT {
            log_schema::validate(raw.as_bytes(), &origin, now, &Default::default())
                .expect("valid")
                .to_json()
        } else {
            raw.into_bytes()
        };
        Pending {
            topic: Arc::from(topic),
            partition: 0,
            offset,
            epoch: 0,
            payload,
            key: None,
        }
    }

    /// What a request holds: offsets, and whether it is a group of rows.
    fn shape(r: &Request) -> (bool, Vec<i64>) {
        match r {
            Request::Rows(rows) => (true, rows.iter().map(|(p, _)| p.offset).collect()),
            Request::Single(p) => (false, vec![p.offset]),
        }
    }

    /// An open group of the model: key, offsets, bytes, when it opened.
    type ModelGroup = ((u8, u32), Vec<i64>, usize, Instant);

    /// The documented rule, written independently with linear scans: groups in opening order.
    #[derive(Default)]
    struct Model {
        open: Vec<ModelGroup>,
        ready: VecDeque<(bool, Vec<i64>)>,
    }

    impl Model {
        fn add(
            &mut self,
            l: &Limits,
            input: bool,
            offset: i64,
            key: (u8, u32),
            bytes: usize,
            now: Instant,
        ) {
            if !input || l.max_rows <= 1 {
                self.ready.push_back((false, vec![offset]));
                return;
            }
            let at = match self.open.iter().position(|g| g.0 == key) {
                Some(at) => at,
                None => {
                    if self.open.len() >= l.max_open.max(1) {
                        let g = self.open.remove(0);
                        self.ready.push_back((true, g.1));
                    }
                    self.open.push((key, Vec::new(), 0, now));
                    self.open.len() - 1
                }
            };
            let g = &mut self.open[at];
            g.1.push(offset);
            g.2 += bytes;
            if g.1.len() >= l.max_rows || g.2 >= l.max_bytes {
                let g = self.open.remove(at);
                self.ready.push_back((true, g.1));
            }
        }

        fn next(&mut self, l: &Limits, now: Instant, behind: bool) -> Option<(bool, Vec<i64>)> {
            if let Some(r) = self.ready.pop_front() {
                return Some(r);
            }
            let g = self.open.first()?;
            if behind && now < g.3 + l.linger {
                return None;
            }
            Some((true, self.open.remove(0).1))
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A record: on the input topic or not, its source, its minute.
        Add(bool, u8, u32),
        /// Time passes, in ms.
        Wait(u64),
        /// A request slot frees: the next request, behind or not.
        Next(bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (prop::bool::weighted(0.9), 0u8..6, prop_oneof![Just(1u32), Just(5), Just(15)])
                .prop_map(|(i, s, m)| Op::Add(i, s, m)),
            1 => (0u64..30).prop_map(Op::Wait),
            3 => any::<bool>().prop_map(Op::Next),
        ]
    }

    proptest! {
        /// Same requests in the same order as the reference; every record once; every group
        /// one partition within its limits; nothing left once the writer is not behind.
        #[test]
        fn groups_follow_the_documented_rule(
            ops in prop::collection::vec(op(), 1..200),
            max_rows in 1usize..6,
            max_open in 1usize..4,
            max_bytes in prop_oneof![Just(usize::MAX), 500usize..3_000],
        ) {
            let limits = Limits { max_rows, max_bytes, max_open, linger: Duration::from_millis(20) };
            let mut groups = Groups::new(limits);
            let mut model = Model::default();
            let mut now = Instant::now();
            let mut offset = 0;
            let mut keys = BTreeMap::new();
            let mut got = Vec::new();
            for op in ops {
                match op {
                    Op::Add(input, source, minute) => {
                        let p = pending(if input { INPUT } else { "stats" }, offset, source, minute);
                        // Minutes 1 and 5 share a 10-minute bucket, 15 does not.
                        keys.insert(offset, (source, minute / 10));
                        model.add(&limits, input, offset, (source, minute / 10), p.payload.len(), now);
                        groups.add(p, INPUT, now);
                        offset += 1;
                    }
                    Op::Wait(ms) => now += Duration::from_millis(ms),
                    Op::Next(behind) => {
                        let ours = groups.next(now, behind);
                        prop_assert_eq!(ours.as_ref().map(shape), model.next(&limits, now, behind));
                        got.extend(ours);
                    }
                }
                prop_assert!(groups.open.len() <= max_open);
            }
            while let Some(r) = groups.next(now, false) {
                prop_assert_eq!(Some(shape(&r)), model.next(&limits, now, false));
                got.push(r);
            }
            prop_assert!(model.next(&limits, now, false).is_none());
            let mut seen: Vec<i64> = got.iter().flat_map(|r| shape(r).1).collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..offset).collect::<Vec<_>>(), "every record once");
            for r in &got {
                if let Request::Rows(rows) = r {
                    prop_assert!(rows.len() <= max_rows);
                    let first = keys[&rows[0].0.offset];
                    prop_assert!(rows.iter().all(|(p, _)| keys[&p.offset] == first), "one partition");
                    let bytes: usize = rows[..rows.len() - 1].iter().map(|(p, _)| p.payload.len()).sum();
                    prop_assert!(bytes < max_bytes, "closed when it reached max_bytes");
                }
            }
        }
    }

    #[test]
    fn a_partial_group_waits_only_while_behind_and_only_its_linger() {
        let limits = Limits {
            max_rows: 4,
            max_bytes: usize::MAX,
            max_open: 10,
            linger: Duration::from_millis(20),
        };
        let mut groups = Groups::new(limits);
        let t0 = Instant::now();
        groups.add(pending(INPUT, 0, 1, 1), INPUT, t0);
        groups.add(pending(INPUT, 1, 1, 2), INPUT, t0);
        assert!(
            groups.next(t0, true).is_none(),
            "behind: it waits for more rows"
        );
        assert_eq!(groups.deadline(), Some(t0 + limits.linger));
        let at_linger = groups.next(t0 + limits.linger, true).expect("linger over");
        assert_eq!(shape(&at_linger), (true, vec![0, 1]));
        groups.add(pending(INPUT, 2, 1, 3), INPUT, t0);
        let now = groups.next(t0, false).expect("not behind: sent at once");
        assert_eq!(shape(&now), (true, vec![2]));
        assert_eq!(groups.deadline(), None);
    }

    #[test]
    fn a_record_that_does_not_decode_is_a_request_of_its_own() {
        let mut groups = Groups::new(Limits {
            max_rows: 4,
            max_bytes: usize::MAX,
            max_open: 10,
            linger: Duration::from_millis(20),
        });
        let mut bad = pending(INPUT, 0, 1, 1);
        bad.payload = b"{not json".to_vec();
        groups.add(bad, INPUT, Instant::now());
        let r = groups.next(Instant::now(), true).expect("ready at once");
        assert_eq!(shape(&r), (false, vec![0]));
    }
}
