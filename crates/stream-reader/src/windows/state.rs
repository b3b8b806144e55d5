//! A partition's window state: what a checkpoint holds, the open minutes and their windows.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
    time::Instant,
};

use chrono::{DateTime, Utc};
use log_schema::FileFingerprint;
use roaring::RoaringTreemap;
use serde::{Deserialize, Serialize};

/// The part of a partition's state that a replay cannot rebuild from the records after an
/// offset: what was decided before it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Snapshot {
    /// Every minute below is closed.
    #[serde(rename = "h")]
    pub(super) horizon: i64,
    /// The partition's event time (µs): the largest `min(timestamp, ingested_at)` of the
    /// records counted or seen late.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub(super) max_event: Option<i64>,
}

/// The offset metadata committed with a partition's offset.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Checkpoint {
    #[serde(rename = "v")]
    pub(super) version: u32,
    /// The state at the offset.
    #[serde(rename = "a")]
    pub(super) at: Snapshot,
    /// Every window of a minute below was emitted and acknowledged: not emitted again.
    #[serde(rename = "f")]
    pub(super) final_below: i64,
    /// Idle steps after the offset: (position, horizon).
    #[serde(rename = "i", default, skip_serializing_if = "Vec::is_empty")]
    pub(super) idle_steps: Vec<(i64, i64)>,
    /// Partitions of the validated topic when the checkpoint was written: a source's windows
    /// live on the partition its key hashes to, which changes with the count.
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub(super) partitions: Option<usize>,
}

#[derive(Debug)]
pub(super) struct Acc {
    pub(super) events: i64,
    pub(super) bytes_sent: i64,
    pub(super) bytes_received: i64,
    pub(super) ports: HashSet<u16>,
    /// Distinct peers: destinations, or sources on the destination side.
    pub(super) peers: HashSet<IpAddr>,

    pub(super) denied: i64,
    pub(super) first_seen: DateTime<Utc>,
    pub(super) last_seen: DateTime<Utc>,
    pub(super) distinct_capped: bool,
    /// Space-Saving rank: the events of this window plus the rank of the window it evicted
    /// (0 when admitted without eviction): never below the source's events of the minute.
    pub(super) rank: i64,
    /// Admission order within the minute: among equal ranks the oldest window is evicted.
    pub(super) seq: u64,
    /// The source's place as validation looked it up for the window's first record: a
    /// re-emission carries the same, whatever GeoIP database is loaded by then.
    pub(super) geo: Option<Box<log_schema::Geo>>,
    /// What few windows need, allocated for those only: a window's size bounds the memory of
    /// a minute of a million sources.
    pub(super) extra: Option<Box<Extra>>,
}

/// The rarer parts of a window.
#[derive(Debug, Default)]
pub(super) struct Extra {
    /// Distinct destinations reached on the sweep port (source side, with one configured).
    pub(super) swept: HashSet<IpAddr>,
    /// The threat lists the key address was on in the counted records, as validation marked
    /// them (a union: the same whatever order the records came in).
    pub(super) threats: BTreeSet<String>,
}

impl Acc {
    /// Distinct destinations reached on the sweep port.
    pub(super) fn swept(&self) -> usize {
        self.extra.as_ref().map_or(0, |e| e.swept.len())
    }
}

/// One minute of one partition: its windows until it closes, then the count of windows whose
/// outputs are not acknowledged yet.
#[derive(Debug)]
pub(super) struct Minute {
    pub(super) windows: HashMap<IpAddr, Acc>,
    /// Identities of the minute's records (raw partition or file → offsets): a record seen
    /// again is a duplicate. A duplicate has its original's timestamp, so it falls in the same
    /// minute.
    pub(super) seen: HashMap<(Option<FileFingerprint>, i32), RoaringTreemap>,
    pub(super) first_offset: i64,
    /// The partition's state just before `first_offset`.
    pub(super) before: Snapshot,
    pub(super) tracked_distinct: usize,
    pub(super) sources_capped: bool,
    /// Windows by (rank, admission): built when the minute first reaches the window cap, then
    /// kept in step with every counted event.
    pub(super) ranking: Option<BTreeSet<(i64, u64, IpAddr)>>,
    /// Next admission number.
    pub(super) next_seq: u64,
    /// `None` while open; once closed, the windows whose outputs are not acknowledged yet.
    pub(super) unacknowledged: Option<usize>,
}

#[derive(Debug)]
pub(super) struct PartitionWindows {
    /// Distinguishes this state from an earlier one of the same partition (before a revoke).
    pub(super) epoch: u64,
    /// Open minutes, and closed minutes not final yet; closed ones are a prefix.
    pub(super) minutes: BTreeMap<i64, Minute>,
    pub(super) now: Snapshot,
    /// Next offset to process (`None` until the first record when nothing was committed).
    pub(super) position: Option<i64>,
    /// From the restored checkpoint: minutes below were final before the restart.
    pub(super) restored_final: i64,
    pub(super) idle_steps: Vec<(i64, i64)>,
    pub(super) last_activity: Instant,
}

impl PartitionWindows {
    pub(super) fn new(epoch: u64, position: Option<i64>) -> Self {
        Self {
            epoch,
            minutes: BTreeMap::new(),
            now: Snapshot {
                horizon: i64::MIN,
                ..Snapshot::default()
            },
            position,
            restored_final: i64::MIN,
            idle_steps: Vec::new(),
            last_activity: Instant::now(),
        }
    }

    /// Every window of a minute below this is final: emitted and acknowledged (or empty).
    pub(super) fn final_below(&self) -> i64 {
        let computed = match self.minutes.first_key_value() {
            Some((m, minute)) if minute.unacknowledged.is_some() => *m,
            _ => self.now.horizon,
        };
        computed.max(self.restored_final)
    }

    /// Drops closed minutes whose outputs are all acknowledged, lowest first.
    pub(super) fn drop_final(&mut self) {
        while let Some(entry) = self.minutes.first_entry() {
            if entry.get().unacknowledged != Some(0) {
                break;
            }
            entry.remove();
        }
    }
}
