//! Per-IP tumbling event-time windows of one minute, per partition of `ip_logs_validated`
//! (per source) or of `ip_logs_by_destination` (per destination, [`Side`]).
//!
//! The machine is written for sources; the destination side runs the same machine over the
//! stream the validation stage keys by destination, with the two addresses' roles swapped: a
//! window is keyed by the destination and counts distinct sources where a source's window
//! counts distinct destinations. Everything below holds for both sides.
//!
//! The validation stage keys `ip_logs_validated` by the canonical text of the source address,
//! so one partition of it holds every event of its sources, whatever the producers of the raw
//! topic did (no key, random keys, more partitions). Each partition is a deterministic state
//! machine over its records in offset order:
//!
//! * **Duplicates.** The validation stage is at-least-once: after its crash it emits some
//!   records again, and a retried output lands after later ones. A validated record names its
//!   raw coordinates (`source`); a record whose coordinates were seen before is a duplicate,
//!   not counted, in whatever order they arrive. A duplicate carries its original's timestamp,
//!   so each open minute keeps the raw coordinates of its records (a compressed bitmap per raw
//!   partition); a duplicate of a closed minute is late, and uncounted either way.
//! * **Event time, watermark and lateness.** A record moves the partition's event time to
//!   `min(timestamp, ingested_at)` if that is later: never past the Kafka timestamp of its raw
//!   record, so a record dated ahead (a skewed clock, or an attacker's +290 s record) cannot
//!   close the minutes of real traffic. The partition's horizon is the minute of its event
//!   time minus the allowed lateness; every window of a minute below the horizon is closed. An
//!   event of a closed minute is *late*: still a valid record, never counted. A partition that
//!   is quiet (no record for `idle`, and caught up) advances its event time by the quiet time,
//!   so live traffic still flushes its last minute; such an *idle step* is recorded.
//! * **Checkpoints.** With a partition's committed offset the stream-reader commits, as offset
//!   metadata, the machine's state at that offset: horizon, event time, the idle steps taken
//!   after it, and the minute below which every window was
//!   already emitted and acknowledged. The offset is the first offset of the earliest minute
//!   not yet final, so a replay from it rebuilds every unfinished window from all its events,
//!   takes the same late/duplicate decisions and the same idle steps at the same positions,
//!   and emits nothing that was final. A closed window is therefore emitted with the same
//!   statistics after any crash, restart or rebalance as in an uninterrupted run. An idle step
//!   is committed before the windows it closed are emitted (records after it close only later
//!   minutes, which do not depend on it).
//! * **Bounds.** Per partition and minute at most `max_windows_per_minute` windows and
//!   `max_distinct_per_minute` tracked distinct ports and destinations. A new source in a full
//!   minute takes the slot of the window of lowest rank (Space-Saving: a window's rank is its
//!   events plus the rank of the window it evicted; the oldest goes first among equals), and
//!   every window of that minute carries `sources_capped`. With `n` counted events and `k`
//!   windows, a source with more than `n/k` events of the minute always has a window, and a
//!   window misses only the events its source had before it last took a slot, at most `n/k`
//!   (a source that keeps its slot from its first event, as a scan after a flood does, is
//!   exact). The rules' counts are at most the
//!   events, so a source whose distinct ports or denials exceed `n/k` keeps its window too. A
//!   distinct value beyond the budget is not tracked and its window carries `distinct_capped`
//!   (its distinct counts are lower bounds). Every decision depends only on the minute's
//!   records in offset order, so it replays identically.

use std::{
    collections::{HashMap, hash_map::Entry},
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeDelta, Utc};
use log_schema::{Alert, AlertRule, Geo, TargetStats, ValidatedRecord, WindowStats};
use std::net::IpAddr;

pub use crate::allowlist::Allowlist;

const WINDOW_MICROS: i64 = 60_000_000;

/// Version of the checkpoint format in the committed offset metadata. Version 1 also held the
/// next raw offset per raw partition (ignored now: duplicates are recognised per minute, and
/// the replay from the checkpoint's offset rebuilds every open minute's raw coordinates).
const CHECKPOINT_VERSION: u32 = 2;

/// Alert thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// `port_scan`: distinct destination ports.
    pub port_scan: i64,
    /// `flood`: events.
    pub flood: i64,
    /// `deny_burst`: denied events.
    pub deny_burst: i64,
    /// `host_sweep`: distinct destination addresses.
    pub host_sweep: i64,
    /// `target_flood`: distinct sources against one destination.
    pub target_flood_sources: i64,
    /// `target_flood`: events against one destination.
    pub target_flood_events: i64,
    /// `threat_match`: events of a listed address.
    pub threat_match_events: i64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            port_scan: 100,
            flood: 5_000,
            deny_burst: 100,
            host_sweep: 100,
            target_flood_sources: 500,
            target_flood_events: 20_000,
            threat_match_events: 1,
        }
    }
}

impl Thresholds {
    fn of(&self, rule: AlertRule) -> i64 {
        match rule {
            AlertRule::PortScan => self.port_scan,
            AlertRule::Flood => self.flood,
            AlertRule::DenyBurst => self.deny_burst,
            AlertRule::HostSweep => self.host_sweep,
            // Not a source's rule: never evaluated on a source's window.
            _ => i64::MAX,
        }
    }
}

/// Which address of a record keys the windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Side {
    /// Per source IP, over `ip_logs_validated` (`ip_stats`): the peers are destinations.
    #[default]
    Source,
    /// Per destination IP, over `ip_logs_by_destination` (`ip_target_stats`): the peers are
    /// sources.
    Destination,
}

impl Side {
    /// The address a record's window is keyed by.
    pub fn key(self, r: &ValidatedRecord) -> IpAddr {
        match self {
            Side::Source => r.source_ip,
            Side::Destination => r.destination_ip,
        }
    }

    /// The other address of a record, counted as distinct peers.
    pub fn peer(self, r: &ValidatedRecord) -> IpAddr {
        match self {
            Side::Source => r.destination_ip,
            Side::Destination => r.source_ip,
        }
    }

    pub(crate) fn geo(self, r: &ValidatedRecord) -> Option<Geo> {
        match self {
            Side::Source => r.source_geo.clone(),
            Side::Destination => r.destination_geo.clone(),
        }
    }

    /// The threat lists the key address is on, as validation marked them.
    pub(crate) fn threats(self, r: &ValidatedRecord) -> &[String] {
        match self {
            Side::Source => &r.source_threats,
            Side::Destination => &r.destination_threats,
        }
    }
}

/// Window settings.
#[derive(Debug, Clone, Copy)]
pub struct WindowConfig {
    /// Allowed lateness.
    pub lateness: TimeDelta,
    /// Quiet time after which a caught-up partition advances its event time by the quiet time.
    pub idle: Duration,
    /// Alert thresholds.
    pub thresholds: Thresholds,
    /// Most windows (distinct sources) of one minute on one partition.
    pub max_windows_per_minute: usize,
    /// Most distinct ports plus peers tracked for one minute on one partition.
    pub max_distinct_per_minute: usize,
    /// Which address keys the windows.
    pub side: Side,
    /// `host_sweep` counts only the destinations a source reached on this port (source side).
    pub sweep_port: Option<u16>,
}

/// An idle step: `partition` closed the minutes before `horizon` at `position` (before its
/// record at that offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleStep {
    /// Partition of the validated topic.
    pub partition: i32,
    /// The partition's position when the step was taken.
    pub position: i64,
    /// Start of the first minute left open.
    pub horizon: DateTime<Utc>,
}

/// How a record was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Counted in its window.
    Counted,
    /// Its window had already closed: not counted.
    Late,
    /// The validation stage emitted this raw record before: not counted again.
    Duplicate,
    /// Its minute reached the window cap and its source has no window: not counted.
    Uncounted,
    /// Counted in a new window of a full minute, which evicted the lowest-ranked window and
    /// its `events` (Space-Saving).
    Evicted {
        /// Events of the evicted window: not counted any more.
        events: i64,
    },
    /// Its window was final before a restart (replay): nothing to do.
    Final,
}

/// A window that just closed: its statistics and the alerts it triggered.
#[derive(Debug, Clone)]
pub struct Closed {
    /// Partition it belongs to.
    pub partition: i32,
    /// Identifies the partition state and minute, to report back with [`Windows::emitted`].
    pub emission: Emission,
    /// The statistics, keyed by the side's address: on the destination side `source_ip` holds
    /// the destination, `distinct_destinations` the distinct sources and `sources_capped` the
    /// window cap ([`Closed::target`] gives them as the target's payload).
    pub stats: WindowStats,
    /// Triggered alerts.
    pub alerts: Vec<Alert>,
}

impl Closed {
    /// The statistics of a destination side's window as `ip_target_stats` carries them.
    pub fn target(&self) -> TargetStats {
        target_stats(&self.stats)
    }
}

/// A destination side's keyed statistics as the target's payload.
fn target_stats(s: &WindowStats) -> TargetStats {
    TargetStats {
        destination_ip: s.source_ip,
        window_start: s.window_start,
        window_end: s.window_end,
        events: s.events,
        bytes_sent: s.bytes_sent,
        bytes_received: s.bytes_received,
        distinct_sources: s.distinct_destinations,
        distinct_ports: s.distinct_ports,
        denied: s.denied,
        first_seen: s.first_seen,
        last_seen: s.last_seen,
        distinct_capped: s.distinct_capped,
        targets_capped: s.sources_capped,
        destination_geo: s.source_geo.clone(),
        destination_threats: s.source_threats.clone(),
    }
}

/// Which partition state and minute a closed window belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Emission {
    epoch: u64,
    minute: i64,
}

/// Window state of one stream-reader instance: one state machine per assigned partition.
#[derive(Debug)]
pub struct Windows {
    config: WindowConfig,
    /// Addresses (of the side) whose windows raise no alert.
    allowlist: Allowlist,
    partitions: HashMap<i32, PartitionWindows>,
    next_epoch: u64,
    /// Partitions of the validated topic, as last read from the broker.
    topic_partitions: Option<usize>,
}

/// Why a partition cannot be restored from its committed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreError {
    /// The offset metadata is not a window checkpoint: the partition starts empty.
    NotACheckpoint(String),
    /// The validated topic's partition count changed since the checkpoint was written: the
    /// sources of a partition are not the ones its windows hold.
    PartitionsChanged {
        /// Partitions when the checkpoint was written.
        was: usize,
        /// Partitions now.
        now: usize,
    },
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotACheckpoint(reason) => f.write_str(reason),
            Self::PartitionsChanged { was, now } => write!(
                f,
                "the topic had {was} partitions when the window checkpoints were written and \
                 has {now} now: an address's records now go to another partition's windows, so \
                 no window can be final. Return the topic to {was} partitions, or stop every \
                 stream-reader and reset the stage's group (READER_ANALYTICS_GROUP_ID for the \
                 validated topic, READER_TARGETS_GROUP_ID for the by-destination topic; its \
                 checkpoints are lost: windows open at that moment are emitted again from the \
                 reset offsets)"
            ),
        }
    }
}

fn minute_of(micros: i64) -> i64 {
    micros.div_euclid(WINDOW_MICROS)
}

impl Windows {
    /// Empty state.
    pub fn new(config: WindowConfig) -> Self {
        Self {
            config,
            allowlist: Allowlist::default(),
            partitions: HashMap::new(),
            next_epoch: 0,
            topic_partitions: None,
        }
    }

    /// The same state whose windows of `allowlist`'s addresses (sources, or destinations on
    /// the destination side) raise no alert.
    pub fn with_allowlist(mut self, allowlist: Allowlist) -> Self {
        self.allowlist = allowlist;
        self
    }

    fn epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }

    /// The validated topic's partition count, written into every checkpoint and checked
    /// against it on restore.
    pub fn set_topic_partitions(&mut self, count: usize) {
        self.topic_partitions = Some(count);
    }

    /// Takes over `partition` from its committed offset and the checkpoint committed with it
    /// (`metadata`; empty when none). Returns the closed windows of idle steps at that offset,
    /// or an error when the metadata is not a checkpoint (the partition then starts empty) or
    /// was written for another partition count of the topic.
    pub fn assign(
        &mut self,
        partition: i32,
        committed: Option<i64>,
        metadata: &str,
    ) -> Result<Vec<Closed>, RestoreError> {
        let epoch = self.epoch();
        let mut pw = PartitionWindows::new(epoch, committed);
        let restored = if metadata.is_empty() {
            Ok(())
        } else {
            match serde_json::from_str::<Checkpoint>(metadata) {
                Ok(Checkpoint {
                    partitions: Some(was),
                    ..
                }) if self.topic_partitions.is_some_and(|now| now != was) => {
                    return Err(RestoreError::PartitionsChanged {
                        was,
                        now: self.topic_partitions.unwrap_or_default(),
                    });
                }
                Ok(c) if c.version == CHECKPOINT_VERSION || c.version == 1 => {
                    pw.now = c.at;
                    pw.restored_final = c.final_below;
                    pw.idle_steps = c.idle_steps;
                    Ok(())
                }
                Ok(c) => Err(RestoreError::NotACheckpoint(format!(
                    "checkpoint version {} is not {CHECKPOINT_VERSION}",
                    c.version
                ))),
                Err(e) => Err(RestoreError::NotACheckpoint(format!(
                    "offset metadata is not a window checkpoint: {e}"
                ))),
            }
        };
        self.partitions.insert(partition, pw);
        let closed = match committed {
            Some(offset) => self.apply_idle_steps(partition, offset),
            None => Vec::new(),
        };
        restored.map(|()| closed)
    }

    /// Forgets a revoked partition: its next owner replays it from the committed checkpoint.
    pub fn revoke(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// Partitions with state.
    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.partitions.keys().copied()
    }

    /// Takes the record at `offset` of `partition` and returns the windows whose minutes it
    /// closed.
    pub fn observe(
        &mut self,
        partition: i32,
        offset: i64,
        r: &ValidatedRecord,
    ) -> (Observed, Vec<Closed>) {
        let mut closed = self.apply_idle_steps(partition, offset);
        let config = self.config;
        let next_epoch = self.next_epoch + 1;
        let pw = match self.partitions.entry(partition) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                self.next_epoch = next_epoch;
                e.insert(PartitionWindows::new(next_epoch, Some(offset)))
            }
        };
        pw.last_activity = Instant::now();
        let observed = take(pw, &config, offset, r);
        pw.position = Some(offset + 1);
        let lateness = config.lateness.num_microseconds().unwrap_or(i64::MAX);
        let horizon = pw
            .now
            .max_event
            .map_or(i64::MIN, |m| minute_of(m.saturating_sub(lateness)));
        closed.extend(self.advance(partition, horizon));
        closed.extend(self.apply_idle_steps(partition, offset + 1));
        (observed, closed)
    }

    /// A record of `partition` that is not a validated record (nothing to count): the
    /// position moves past it.
    pub fn skip(&mut self, partition: i32, offset: i64) -> Vec<Closed> {
        let mut closed = self.apply_idle_steps(partition, offset);
        if let Some(pw) = self.partitions.get_mut(&partition) {
            pw.position = Some(offset + 1);
        }
        closed.extend(self.apply_idle_steps(partition, offset + 1));
        closed
    }

    /// Idle steps for partitions that are quiet: no record for `idle`, open windows, and caught
    /// up (`caught_up(partition, last_activity)`: the broker reported no lag after the
    /// partition's last record). Returns the closed windows and the steps taken: their
    /// partitions' checkpoints must be committed before the closed windows are emitted.
    pub fn tick(
        &mut self,
        caught_up: impl Fn(i32, Instant) -> bool,
    ) -> (Vec<Closed>, Vec<IdleStep>) {
        let lateness = self.config.lateness.num_microseconds().unwrap_or(i64::MAX);
        let steps: Vec<(i32, i64)> = self
            .partitions
            .iter()
            .filter_map(|(p, pw)| {
                let quiet = pw.last_activity.elapsed();
                let open = pw.minutes.values().any(|m| m.unacknowledged.is_none());
                if quiet < self.config.idle || !open || !caught_up(*p, pw.last_activity) {
                    return None;
                }
                let quiet = i64::try_from(quiet.as_micros()).unwrap_or(i64::MAX);
                let at = pw.now.max_event?.saturating_add(quiet);
                let horizon = minute_of(at.saturating_sub(lateness));
                (horizon > pw.now.horizon && pw.position.is_some()).then_some((*p, horizon))
            })
            .collect();
        let mut closed = Vec::new();
        let mut stepped = Vec::new();
        for (p, horizon) in steps {
            if let Some(pw) = self.partitions.get_mut(&p)
                && let Some(position) = pw.position
            {
                // One step per position: a later step at the same position supersedes it.
                if pw.idle_steps.last().is_some_and(|(at, _)| *at == position) {
                    pw.idle_steps.pop();
                }
                pw.idle_steps.push((position, horizon));
                closed.extend(self.advance(p, horizon));
                stepped.push(IdleStep {
                    partition: p,
                    position,
                    horizon: DateTime::from_timestamp_micros(horizon.saturating_mul(WINDOW_MICROS))
                        .unwrap_or_default(),
                });
            }
        }
        (closed, stepped)
    }

    /// Applies the recorded idle steps at or before `position` (a replay reaching the
    /// position where the step was taken).
    fn apply_idle_steps(&mut self, partition: i32, position: i64) -> Vec<Closed> {
        let Some(pw) = self.partitions.get(&partition) else {
            return Vec::new();
        };
        let horizon = pw
            .idle_steps
            .iter()
            .filter(|(at, _)| *at <= position)
            .map(|(_, h)| *h)
            .max();
        match horizon {
            Some(h) => self.advance(partition, h),
            None => Vec::new(),
        }
    }

    /// Moves the horizon of `partition` to `horizon` and closes the minutes below it.
    fn advance(&mut self, partition: i32, horizon: i64) -> Vec<Closed> {
        let thresholds = self.config.thresholds;
        let side = self.config.side;
        let sweep_port = self.config.sweep_port.filter(|_| side == Side::Source);
        let allowlist = self.allowlist.clone();
        let Some(pw) = self.partitions.get_mut(&partition) else {
            return Vec::new();
        };
        if horizon <= pw.now.horizon {
            return Vec::new();
        }
        pw.now.horizon = horizon;
        let epoch = pw.epoch;
        let mut out = Vec::new();
        for (&m, minute) in pw.minutes.range_mut(..horizon) {
            if minute.unacknowledged.is_some() {
                continue;
            }
            let windows = std::mem::take(&mut minute.windows);
            // Records of a closed minute are late: its duplicates need no memory.
            minute.seen = HashMap::new();
            minute.unacknowledged = Some(windows.len());
            let start = DateTime::from_timestamp_micros(m * WINDOW_MICROS).unwrap_or_default();
            let end = start + TimeDelta::microseconds(WINDOW_MICROS);
            let mut closed: Vec<Closed> = windows
                .into_iter()
                .map(|(ip, acc)| {
                    let swept = acc.swept() as i64;
                    let stats = WindowStats {
                        source_ip: ip,
                        window_start: start,
                        window_end: end,
                        events: acc.events,
                        bytes_sent: acc.bytes_sent,
                        bytes_received: acc.bytes_received,
                        distinct_ports: acc.ports.len() as i64,
                        distinct_destinations: acc.peers.len() as i64,
                        denied: acc.denied,
                        first_seen: acc.first_seen,
                        last_seen: acc.last_seen,
                        distinct_capped: acc.distinct_capped,
                        sources_capped: minute.sources_capped,
                        source_geo: acc.geo.map(|g| *g),
                        sweep: sweep_port.map(|port| log_schema::Sweep {
                            port,
                            destinations: swept,
                        }),
                        source_threats: acc
                            .extra
                            .map(|e| e.threats.into_iter().collect())
                            .unwrap_or_default(),
                    };
                    let alerts = if allowlist.contains(ip) {
                        Vec::new()
                    } else if side == Side::Destination {
                        let target = target_stats(&stats);
                        Alert::evaluate_target(
                            &target,
                            thresholds.target_flood_sources,
                            thresholds.target_flood_events,
                        )
                        .into_iter()
                        .chain(Alert::target_threat_matches(
                            &target,
                            thresholds.threat_match_events,
                        ))
                        .collect()
                    } else {
                        AlertRule::SOURCE
                            .into_iter()
                            .filter_map(|rule| Alert::evaluate(rule, &stats, thresholds.of(rule)))
                            .chain(Alert::threat_matches(
                                &stats,
                                thresholds.threat_match_events,
                            ))
                            .collect()
                    };
                    Closed {
                        partition,
                        emission: Emission { epoch, minute: m },
                        stats,
                        alerts,
                    }
                })
                .collect();
            // Deterministic emission order (by IP) for readable output.
            closed.sort_by_key(|c| c.stats.source_ip);
            out.extend(closed);
        }
        pw.drop_final();
        out
    }

    /// The outputs of a closed window were acknowledged.
    pub fn emitted(&mut self, partition: i32, emission: Emission) {
        if let Some(pw) = self.partitions.get_mut(&partition)
            && pw.epoch == emission.epoch
        {
            if let Some(Some(left)) = pw
                .minutes
                .get_mut(&emission.minute)
                .map(|m| m.unacknowledged.as_mut())
            {
                *left = left.saturating_sub(1);
            }
            pw.drop_final();
        }
    }

    /// The offset to commit for `partition` and the checkpoint to commit with it: the first
    /// offset of the earliest minute not final yet (or the position), and the state there.
    pub fn checkpoint(&mut self, partition: i32) -> Option<(i64, String)> {
        let pw = self.partitions.get_mut(&partition)?;
        let position = pw.position?;
        let final_below = pw.final_below();
        let hold = pw
            .minutes
            .range(final_below..)
            .map(|(_, m)| m)
            .filter(|m| m.first_offset < position)
            .min_by_key(|m| m.first_offset);
        let (offset, at) = match hold {
            Some(m) => (m.first_offset, m.before.clone()),
            None => (position, pw.now.clone()),
        };
        pw.idle_steps.retain(|(at, _)| *at > offset);
        let checkpoint = Checkpoint {
            version: CHECKPOINT_VERSION,
            at,
            final_below,
            idle_steps: pw.idle_steps.clone(),
            partitions: self.topic_partitions,
        };
        let metadata = serde_json::to_string(&checkpoint).unwrap_or_default();
        Some((offset, metadata))
    }

    /// Windows open across all partitions.
    pub fn open_windows(&self) -> usize {
        self.partitions
            .values()
            .flat_map(|p| p.minutes.values())
            .map(|m| m.windows.len())
            .sum()
    }
}

mod close;
mod state;
#[cfg(test)]
mod tests;

use close::take;
use state::{Checkpoint, PartitionWindows};
