//! A partition's window state: what a checkpoint holds, the open minutes and their windows.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    time::Instant,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The part of a partition's state that a replay cannot rebuild from the records after an
/// offset: what was decided before it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Snapshot {
    /// Every minute below is closed.
    #[serde(rename = "h")]
    pub(super) horizon: i64,
    /// Largest event time (µs) counted or seen late.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub(super) max_event: Option<i64>,
    /// Per raw partition: the next raw offset not seen yet.
    #[serde(rename = "s", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) next_source: BTreeMap<i32, i64>,
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
}

#[derive(Debug)]
pub(super) struct Acc {
    pub(super) events: i64,
    pub(super) bytes_sent: i64,
    pub(super) bytes_received: i64,
    pub(super) ports: HashSet<u16>,
    pub(super) destinations: HashSet<IpAddr>,
    pub(super) denied: i64,
    pub(super) first_seen: DateTime<Utc>,
    pub(super) last_seen: DateTime<Utc>,
    pub(super) distinct_capped: bool,
}

/// One minute of one partition: its windows until it closes, then the count of windows whose
/// outputs are not acknowledged yet.
#[derive(Debug)]
pub(super) struct Minute {
    pub(super) windows: HashMap<IpAddr, Acc>,
    pub(super) first_offset: i64,
    /// The partition's state just before `first_offset`.
    pub(super) before: Snapshot,
    pub(super) tracked_distinct: usize,
    pub(super) sources_capped: bool,
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
