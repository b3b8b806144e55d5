//! Per-IP tumbling event-time windows of one minute, per Kafka partition.
//!
//! Records are keyed by source IP, so one partition holds every event of its IPs and windows
//! are kept per partition. A partition's **watermark** is its largest event time minus the
//! allowed lateness; a window closes when the watermark passes its end. A partition that has
//! been quiet for `idle` also closes windows by wall clock (`now − lateness`), so a quiet stream
//! still flushes; while records keep flowing (for example during a replay after a restart) only
//! event time closes windows, which keeps the result independent of processing speed. An event
//! whose window has already closed is *late*: it is still a valid record, but it is not counted.
//!
//! Window state lives in memory. The stream-reader never commits a partition's offset past the
//! earliest offset that feeds a window still open (or closed but not yet acknowledged
//! downstream), so after a crash the replay rebuilds every unfinished window from all of its
//! events; closed windows were already emitted with deterministic keys and alert ids.

use std::{
    collections::{BTreeMap, HashMap, HashSet, btree_map},
    net::IpAddr,
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeDelta, Utc};
use log_schema::{Alert, AlertRule, ValidatedRecord, WindowStats};

const WINDOW_MICROS: i64 = 60_000_000;

/// Alert thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// `port_scan`: distinct destination ports.
    pub port_scan: i64,
    /// `flood`: events.
    pub flood: i64,
    /// `deny_burst`: denied events.
    pub deny_burst: i64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            port_scan: 100,
            flood: 5_000,
            deny_burst: 100,
        }
    }
}

impl Thresholds {
    fn of(&self, rule: AlertRule) -> i64 {
        match rule {
            AlertRule::PortScan => self.port_scan,
            AlertRule::Flood => self.flood,
            _ => self.deny_burst,
        }
    }
}

/// Window settings.
#[derive(Debug, Clone, Copy)]
pub struct WindowConfig {
    /// Allowed lateness.
    pub lateness: TimeDelta,
    /// Quiet time after which a partition closes windows by wall clock.
    pub idle: Duration,
    /// Alert thresholds.
    pub thresholds: Thresholds,
}

#[derive(Debug)]
struct Acc {
    events: i64,
    bytes_sent: i64,
    bytes_received: i64,
    ports: HashSet<u16>,
    destinations: HashSet<IpAddr>,
    denied: i64,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    first_offset: i64,
}

#[derive(Debug)]
struct PartitionWindows {
    open: HashMap<(IpAddr, i64), Acc>,
    /// Closed windows whose outputs are not acknowledged yet: emission id → first offset.
    pending: HashMap<u64, i64>,
    /// First offsets of the open and pending windows (a multiset: offset → windows), so the
    /// commit hold is the first key instead of a scan over every window.
    holds: BTreeMap<i64, u32>,
    max_event_micros: Option<i64>,
    /// Every window whose minute index is below this is closed.
    horizon: i64,
    last_activity: Instant,
}

impl PartitionWindows {
    fn new() -> Self {
        Self {
            open: HashMap::new(),
            pending: HashMap::new(),
            holds: BTreeMap::new(),
            max_event_micros: None,
            horizon: i64::MIN,
            last_activity: Instant::now(),
        }
    }
}

/// Whether an observed record was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Counted in its window.
    Counted,
    /// Its window had already closed.
    Late,
}

/// A window that just closed: its statistics and the alerts it triggered.
#[derive(Debug, Clone)]
pub struct Closed {
    /// Partition it belongs to.
    pub partition: i32,
    /// Id to report back with [`Windows::emitted`] once its outputs are acknowledged.
    pub emission: u64,
    /// The statistics.
    pub stats: WindowStats,
    /// Triggered alerts.
    pub alerts: Vec<Alert>,
}

/// Window state of one stream-reader instance.
#[derive(Debug)]
pub struct Windows {
    config: WindowConfig,
    partitions: HashMap<i32, PartitionWindows>,
    next_emission: u64,
}

fn minute_of(micros: i64) -> i64 {
    micros.div_euclid(WINDOW_MICROS)
}

impl Windows {
    /// Empty state.
    pub fn new(config: WindowConfig) -> Self {
        Self {
            config,
            partitions: HashMap::new(),
            next_emission: 0,
        }
    }

    /// Counts a record (or classifies it late) and returns the windows its event-time watermark
    /// closed.
    pub fn observe(
        &mut self,
        partition: i32,
        offset: i64,
        r: &ValidatedRecord,
    ) -> (Observed, Vec<Closed>) {
        let pw = self
            .partitions
            .entry(partition)
            .or_insert_with(PartitionWindows::new);
        pw.last_activity = Instant::now();
        let t = r.timestamp.timestamp_micros();
        let minute = minute_of(t);
        let observed = if minute < pw.horizon {
            Observed::Late
        } else {
            let holds = &mut pw.holds;
            let acc = pw.open.entry((r.source_ip, minute)).or_insert_with(|| {
                *holds.entry(offset).or_default() += 1;
                Acc {
                    events: 0,
                    bytes_sent: 0,
                    bytes_received: 0,
                    ports: HashSet::new(),
                    destinations: HashSet::new(),
                    denied: 0,
                    first_seen: r.timestamp,
                    last_seen: r.timestamp,
                    first_offset: offset,
                }
            });
            acc.events += 1;
            acc.bytes_sent = acc.bytes_sent.saturating_add(r.bytes_sent);
            acc.bytes_received = acc.bytes_received.saturating_add(r.bytes_received);
            acc.ports.insert(r.port);
            acc.destinations.insert(r.destination_ip);
            acc.denied += i64::from(r.action.is_denied());
            acc.first_seen = acc.first_seen.min(r.timestamp);
            acc.last_seen = acc.last_seen.max(r.timestamp);
            Observed::Counted
        };
        let before = pw.max_event_micros;
        pw.max_event_micros = Some(before.map_or(t, |m| m.max(t)));
        let closed = if pw.max_event_micros != before {
            self.close(partition, None)
        } else {
            Vec::new()
        };
        (observed, closed)
    }

    /// Wall-clock closing for partitions that are quiet: no record for `idle`, and caught up
    /// (`caught_up(partition, last_activity)`: the broker reported no lag after the partition's
    /// last record). A partition that is merely slow or
    /// paused by backpressure is not quiet, so replays close windows by event time only.
    pub fn tick(
        &mut self,
        now: DateTime<Utc>,
        caught_up: impl Fn(i32, Instant) -> bool,
    ) -> Vec<Closed> {
        let idle: Vec<i32> = self
            .partitions
            .iter()
            .filter(|(p, pw)| {
                pw.last_activity.elapsed() >= self.config.idle
                    && !pw.open.is_empty()
                    && caught_up(**p, pw.last_activity)
            })
            .map(|(p, _)| *p)
            .collect();
        idle.into_iter()
            .flat_map(|p| self.close(p, Some(now)))
            .collect()
    }

    fn close(&mut self, partition: i32, wall_clock: Option<DateTime<Utc>>) -> Vec<Closed> {
        let lateness = self.config.lateness.num_microseconds().unwrap_or(i64::MAX);
        let Some(pw) = self.partitions.get_mut(&partition) else {
            return Vec::new();
        };
        let mut horizon = pw
            .max_event_micros
            .map_or(i64::MIN, |m| minute_of(m.saturating_sub(lateness)));
        if let Some(now) = wall_clock {
            horizon = horizon.max(minute_of(now.timestamp_micros().saturating_sub(lateness)));
        }
        if horizon <= pw.horizon {
            return Vec::new();
        }
        pw.horizon = horizon;
        let keys: Vec<(IpAddr, i64)> = pw
            .open
            .keys()
            .filter(|(_, m)| *m < horizon)
            .copied()
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(acc) = pw.open.remove(&key) else {
                continue;
            };
            let start = DateTime::from_timestamp_micros(key.1 * WINDOW_MICROS).unwrap_or_default();
            let stats = WindowStats {
                source_ip: key.0,
                window_start: start,
                window_end: start + TimeDelta::microseconds(WINDOW_MICROS),
                events: acc.events,
                bytes_sent: acc.bytes_sent,
                bytes_received: acc.bytes_received,
                distinct_ports: acc.ports.len() as i64,
                distinct_destinations: acc.destinations.len() as i64,
                denied: acc.denied,
                first_seen: acc.first_seen,
                last_seen: acc.last_seen,
            };
            let alerts = AlertRule::ALL
                .into_iter()
                .filter_map(|rule| Alert::evaluate(rule, &stats, self.config.thresholds.of(rule)))
                .collect();
            let emission = self.next_emission;
            self.next_emission += 1;
            pw.pending.insert(emission, acc.first_offset);
            out.push(Closed {
                partition,
                emission,
                stats,
                alerts,
            });
        }
        // Deterministic emission order (by window, then IP) for readable output.
        out.sort_by(|a, b| {
            (a.stats.window_start, a.stats.source_ip)
                .cmp(&(b.stats.window_start, b.stats.source_ip))
        });
        out
    }

    /// The outputs of a closed window were acknowledged.
    pub fn emitted(&mut self, partition: i32, emission: u64) {
        if let Some(pw) = self.partitions.get_mut(&partition)
            && let Some(offset) = pw.pending.remove(&emission)
            && let btree_map::Entry::Occupied(mut e) = pw.holds.entry(offset)
        {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    /// The earliest input offset that still feeds an unfinished window of `partition`: the
    /// partition's commit must not pass it.
    pub fn min_offset(&self, partition: i32) -> Option<i64> {
        let pw = self.partitions.get(&partition)?;
        pw.holds.first_key_value().map(|(offset, _)| *offset)
    }

    /// Windows open across all partitions.
    pub fn open_windows(&self) -> usize {
        self.partitions.values().map(|p| p.open.len()).sum()
    }

    /// Forgets everything (after a partition revoke: the next owner, maybe us, replays from the
    /// committed offsets).
    pub fn clear(&mut self) {
        self.partitions.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use log_schema::{Limits, Origin, validate};

    use super::*;

    fn record(at: &str, ip: &str, port: u16, action: &str) -> ValidatedRecord {
        let json = format!(
            r#"{{"timestamp":"{at}","source_ip":"{ip}","destination_ip":"10.0.0.{}","port":{port},"protocol":"TCP","bytes_sent":10,"bytes_received":20,"action":"{action}"}}"#,
            port % 7
        );
        let origin = Origin {
            topic: "t",
            partition: 0,
            offset: 0,
        };
        validate(json.as_bytes(), &origin, Utc::now(), &Limits::default()).expect("valid")
    }

    fn config() -> WindowConfig {
        WindowConfig {
            lateness: TimeDelta::seconds(30),
            idle: Duration::from_secs(3600),
            thresholds: Thresholds {
                port_scan: 3,
                flood: 4,
                deny_burst: 2,
            },
        }
    }

    #[test]
    fn windows_close_on_the_watermark_with_exact_totals_and_alerts() {
        let mut w = Windows::new(config());
        let mut closed = Vec::new();
        let events = [
            ("2025-12-28T10:00:01Z", "10.0.0.1", 22, "ALLOW"),
            ("2025-12-28T10:00:02Z", "10.0.0.1", 23, "DENY"),
            ("2025-12-28T10:00:59Z", "10.0.0.1", 24, "DROP"),
            ("2025-12-28T10:00:30Z", "10.0.0.2", 80, "ALLOW"),
            // Watermark 10:00:35 - lateness: nothing closes yet.
            ("2025-12-28T10:01:05Z", "10.0.0.1", 22, "ALLOW"),
            // Within lateness: still counted in 10:00.
            ("2025-12-28T10:00:40Z", "10.0.0.2", 81, "ALLOW"),
            // Watermark 10:01:00: the 10:00 windows close.
            ("2025-12-28T10:01:30Z", "10.0.0.1", 22, "ALLOW"),
            // Late: 10:00 is closed.
            ("2025-12-28T10:00:50Z", "10.0.0.1", 25, "ALLOW"),
        ];
        let mut late = 0;
        for (i, (at, ip, port, action)) in events.iter().enumerate() {
            let (o, c) = w.observe(0, i as i64 + 100, &record(at, ip, *port, action));
            late += usize::from(o == Observed::Late);
            closed.extend(c);
        }
        assert_eq!(late, 1);
        assert_eq!(closed.len(), 2);
        let by_ip: BTreeMap<String, &Closed> = closed
            .iter()
            .map(|c| (c.stats.source_ip.to_string(), c))
            .collect();
        let a = &by_ip["10.0.0.1"].stats;
        assert_eq!(
            (
                a.events,
                a.distinct_ports,
                a.denied,
                a.bytes_sent,
                a.bytes_received
            ),
            (3, 3, 2, 30, 60)
        );
        assert_eq!(a.window_start.to_rfc3339(), "2025-12-28T10:00:00+00:00");
        assert_eq!(a.first_seen.to_rfc3339(), "2025-12-28T10:00:01+00:00");
        assert_eq!(a.last_seen.to_rfc3339(), "2025-12-28T10:00:59+00:00");
        let rules: Vec<AlertRule> = by_ip["10.0.0.1"].alerts.iter().map(|a| a.rule).collect();
        assert_eq!(rules, vec![AlertRule::PortScan, AlertRule::DenyBurst]);
        assert!(by_ip["10.0.0.2"].alerts.is_empty());
        assert_eq!(by_ip["10.0.0.2"].stats.events, 2);
        // 10:01 is still open and holds the commit at its first offset.
        assert_eq!(w.open_windows(), 1);
        assert_eq!(
            w.min_offset(0),
            Some(100),
            "closed but unacknowledged windows hold too"
        );
        for c in &closed {
            w.emitted(0, c.emission);
        }
        assert_eq!(w.min_offset(0), Some(104));
    }

    #[test]
    fn quiet_partitions_close_by_wall_clock() {
        let mut w = Windows::new(WindowConfig {
            idle: Duration::ZERO,
            ..config()
        });
        let (_, c) = w.observe(
            1,
            5,
            &record("2025-12-28T10:00:01Z", "10.0.0.1", 22, "ALLOW"),
        );
        assert!(c.is_empty());
        assert!(
            w.tick(Utc::now(), |_, _| false).is_empty(),
            "not caught up: nothing closes"
        );
        let closed = w.tick(Utc::now(), |_, _| true);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].stats.events, 1);
        assert_eq!(w.open_windows(), 0);
    }

    #[test]
    fn alert_ids_are_deterministic() {
        let mut ids = Vec::new();
        for _ in 0..2 {
            let mut w = Windows::new(config());
            for (i, port) in [1, 2, 3].into_iter().enumerate() {
                w.observe(
                    0,
                    i as i64,
                    &record("2025-12-28T10:00:01Z", "10.0.0.9", port, "ALLOW"),
                );
            }
            let closed = w
                .observe(
                    0,
                    9,
                    &record("2025-12-28T10:05:00Z", "10.0.0.9", 1, "ALLOW"),
                )
                .1;
            ids.push(closed[0].alerts[0].alert_id);
        }
        assert_eq!(ids[0], ids[1]);
    }
}
