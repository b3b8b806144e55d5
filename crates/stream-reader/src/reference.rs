//! The window rule of [`crate::windows`] written as a plain loop, for tests and drills to
//! compare the analytics stage's outputs with.
//!
//! It shares no code with the state machine: no checkpoints, no caps (the callers stay below
//! them). Per partition of the validated topic in offset order: a record whose raw
//! coordinates were seen before (at any earlier offset) is a duplicate; a record's event time
//! is `min(timestamp, ingested_at)`; an event of a minute below the horizon is late; the
//! windows of minutes below the final horizon are the closed ones. The horizon is the largest
//! of the minute of the largest event time so far minus the lateness, and of the idle steps
//! taken at or before the record's offset.
//!
//! Idle steps depend on wall-clock quiet, so the reference cannot compute them: it takes the
//! ones the stream-reader committed, as it logged them ([`idle_steps_in_log`]).
//!
//! The destination windows follow the same rule over the by-destination topic, with windows
//! keyed by destination and distinct sources where a source's window has distinct
//! destinations ([`By`]).

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::IpAddr,
};

use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use log_schema::{TargetStats, ValidatedRecord, WindowStats};

/// Which address keys the windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// Per source (`ip_stats`).
    Source,
    /// Per destination (`ip_target_stats`).
    Destination,
}

/// Events, bytes sent and received, distinct ports, distinct peers (destinations of a source,
/// sources of a target), denied, first and last seen.
pub type Counts = (i64, i64, i64, i64, i64, i64, DateTime<Utc>, DateTime<Utc>);

/// What the reference compares of an emitted window.
pub trait Figures {
    /// Its counts.
    fn figures(&self) -> Counts;
    /// The threat lists its address was on.
    fn threats(&self) -> &[String];
}

impl Figures for WindowStats {
    fn threats(&self) -> &[String] {
        &self.source_threats
    }

    fn figures(&self) -> Counts {
        (
            self.events,
            self.bytes_sent,
            self.bytes_received,
            self.distinct_ports,
            self.distinct_destinations,
            self.denied,
            self.first_seen,
            self.last_seen,
        )
    }
}

impl Figures for TargetStats {
    fn threats(&self) -> &[String] {
        &self.destination_threats
    }

    fn figures(&self) -> Counts {
        (
            self.events,
            self.bytes_sent,
            self.bytes_received,
            self.distinct_ports,
            self.distinct_sources,
            self.denied,
            self.first_seen,
            self.last_seen,
        )
    }
}

/// The statistics of one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Events counted.
    pub events: i64,
    /// Sum of `bytes_sent`.
    pub bytes_sent: i64,
    /// Sum of `bytes_received`.
    pub bytes_received: i64,
    /// Destination ports.
    pub ports: BTreeSet<u16>,
    /// The other addresses: destinations of a source, sources of a destination.
    pub destinations: BTreeSet<IpAddr>,
    /// Denied events.
    pub denied: i64,
    /// Earliest event time.
    pub first_seen: DateTime<Utc>,
    /// Latest event time.
    pub last_seen: DateTime<Utc>,
    /// The threat lists the address was on in the counted records.
    pub threats: BTreeSet<String>,
}

impl Window {
    /// Whether `stats` carries exactly these statistics (cap flags aside).
    pub fn matches(&self, stats: &impl Figures) -> bool {
        stats.threats().iter().eq(self.threats.iter())
            && stats.figures()
                == (
                    self.events,
                    self.bytes_sent,
                    self.bytes_received,
                    self.ports.len() as i64,
                    self.destinations.len() as i64,
                    self.denied,
                    self.first_seen,
                    self.last_seen,
                )
    }
}

/// What an uninterrupted run closes.
#[derive(Debug, Default)]
pub struct Reference {
    /// Closed windows by (source IP, window start).
    pub windows: BTreeMap<(IpAddr, DateTime<Utc>), Window>,
    /// Late events.
    pub late: usize,
    /// Duplicates (raw coordinates seen before).
    pub duplicates: usize,
}

/// A window and its event counts on both sides.
pub type Difference = ((IpAddr, DateTime<Utc>), Option<i64>, Option<i64>);

impl Reference {
    /// Where `emitted` (the last emission per window) differs from the reference: a reference
    /// window missing or with other statistics, or an emitted window the reference does not
    /// close; each as (window, reference events, emitted events).
    pub fn differences<F: Figures>(
        &self,
        emitted: &BTreeMap<(IpAddr, DateTime<Utc>), F>,
    ) -> Vec<Difference> {
        let wrong = self
            .windows
            .iter()
            .filter(|(k, w)| !emitted.get(*k).is_some_and(|s| w.matches(s)))
            .map(|(k, w)| (*k, Some(w.events), emitted.get(k).map(|s| s.figures().0)));
        let extra = emitted
            .iter()
            .filter(|(k, _)| !self.windows.contains_key(*k))
            .map(|(k, s)| (*k, None, Some(s.figures().0)));
        wrong.chain(extra).collect()
    }
}

fn minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::minutes(1)).unwrap_or(t)
}

/// An idle step the stream-reader committed: from offset `position` of `partition` on, the
/// minutes before `horizon` are closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleStep {
    /// Partition of the validated topic.
    pub partition: i32,
    /// First offset the step applies to.
    pub position: i64,
    /// Start of the first minute left open.
    pub horizon: DateTime<Utc>,
}

/// The idle steps committed for `topic` (the validated topic) in a stream-reader log: its
/// `idle step committed` lines, with or without terminal colours.
pub fn idle_steps_in_log(log: &str, topic: &str) -> Vec<IdleStep> {
    let plain = pipeline_runtime::telemetry::without_colours(log);
    plain
        .lines()
        .filter(|l| l.contains("idle step committed"))
        .filter_map(|l| {
            let field = |name: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            };
            (field("topic")? == topic).then_some(())?;
            Some(IdleStep {
                partition: field("partition")?.parse().ok()?,
                position: field("position")?.parse().ok()?,
                horizon: DateTime::parse_from_rfc3339(field("horizon")?)
                    .ok()?
                    .with_timezone(&Utc),
            })
        })
        .collect()
}

/// The reference run over `records` (partition, offset, record) of the validated topic, in any
/// order, without idle steps.
pub fn reference(
    records: impl IntoIterator<Item = (i32, i64, ValidatedRecord)>,
    lateness: TimeDelta,
) -> Reference {
    reference_with_idle_steps(records, lateness, &[])
}

/// The reference run over `records` with the idle steps the stream-reader committed.
pub fn reference_with_idle_steps(
    records: impl IntoIterator<Item = (i32, i64, ValidatedRecord)>,
    lateness: TimeDelta,
    steps: &[IdleStep],
) -> Reference {
    reference_by(By::Source, records, lateness, steps)
}

/// The reference run of `by`'s windows over `records` (of the validated topic for sources, of
/// the by-destination topic for destinations) with the idle steps committed for that topic.
pub fn reference_by(
    by: By,
    records: impl IntoIterator<Item = (i32, i64, ValidatedRecord)>,
    lateness: TimeDelta,
    steps: &[IdleStep],
) -> Reference {
    let mut by_partition: BTreeMap<i32, BTreeMap<i64, ValidatedRecord>> = BTreeMap::new();
    for (p, o, r) in records {
        by_partition.entry(p).or_default().insert(o, r);
    }
    let mut out = Reference::default();
    for (partition, records) in by_partition {
        let stepped = |offset: i64| {
            steps
                .iter()
                .filter(|s| s.partition == partition && s.position <= offset)
                .map(|s| s.horizon)
                .max()
        };
        let mut seen: HashSet<log_schema::SourceOffset> = HashSet::new();
        let mut max_event: Option<DateTime<Utc>> = None;
        let mut open: BTreeMap<(IpAddr, DateTime<Utc>), Window> = BTreeMap::new();
        for (offset, v) in records {
            if let Some(s) = v.source
                && !seen.insert(s)
            {
                out.duplicates += 1;
                continue;
            }
            let m = minute(v.timestamp);
            let horizon = max_event.map(|e| minute(e - lateness)).max(stepped(offset));
            if horizon.is_some_and(|h| m < h) {
                out.late += 1;
            } else {
                let (key, other, lists) = match by {
                    By::Source => (v.source_ip, v.destination_ip, &v.source_threats),
                    By::Destination => (v.destination_ip, v.source_ip, &v.destination_threats),
                };
                let w = open.entry((key, m)).or_insert_with(|| Window {
                    events: 0,
                    bytes_sent: 0,
                    bytes_received: 0,
                    ports: BTreeSet::new(),
                    destinations: BTreeSet::new(),
                    denied: 0,
                    first_seen: v.timestamp,
                    last_seen: v.timestamp,
                    threats: BTreeSet::new(),
                });
                w.events += 1;
                w.bytes_sent += v.bytes_sent;
                w.bytes_received += v.bytes_received;
                w.ports.insert(v.port);
                w.destinations.insert(other);
                w.threats.extend(lists.iter().cloned());
                w.denied += i64::from(v.action.is_denied());
                w.first_seen = w.first_seen.min(v.timestamp);
                w.last_seen = w.last_seen.max(v.timestamp);
            }
            let reached = v.timestamp.min(v.ingested_at);
            max_event = Some(max_event.map_or(reached, |e| e.max(reached)));
        }
        let horizon = max_event
            .map(|e| minute(e - lateness))
            .max(stepped(i64::MAX));
        if let Some(horizon) = horizon {
            out.windows
                .extend(open.into_iter().filter(|((_, m), _)| *m < horizon));
        }
    }
    out
}
