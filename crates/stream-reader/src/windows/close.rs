//! Counting a record into its window, and a closed minute's windows into statistics and
//! alerts.

use std::collections::{BTreeSet, HashMap, HashSet};

use log_schema::ValidatedRecord;

use super::{
    Observed, Side, WindowConfig, minute_of,
    state::{Acc, Minute, PartitionWindows},
};

/// Counts one record into its partition's state (not the horizon: the caller advances it).
pub(super) fn take(
    pw: &mut PartitionWindows,
    config: &WindowConfig,
    offset: i64,
    r: &ValidatedRecord,
) -> Observed {
    let t = r.timestamp.timestamp_micros();
    let m = minute_of(t);
    let observed = if m < pw.now.horizon {
        Observed::Late
    } else if m < pw.restored_final {
        Observed::Final
    } else {
        let before = if pw.minutes.contains_key(&m) {
            None
        } else {
            Some(pw.now.clone())
        };
        let minute = pw.minutes.entry(m).or_insert_with(|| Minute {
            windows: HashMap::new(),
            seen: HashMap::new(),
            first_offset: offset,
            before: before.unwrap_or_default(),
            tracked_distinct: 0,
            sources_capped: false,
            ranking: None,
            next_seq: 0,
            unacknowledged: None,
        });
        let fresh = r.source.is_none_or(|s| {
            u64::try_from(s.offset).map_or(true, |o| {
                minute
                    .seen
                    .entry((s.file, s.partition))
                    .or_default()
                    .insert(o)
            })
        });
        if !fresh {
            return Observed::Duplicate;
        }
        count(minute, config, r)
    };
    // The record moves the partition's event time, but never past the time it reached Kafka:
    // a record dated ahead of its ingestion (a skewed clock, a forged timestamp) cannot close
    // the windows of the real traffic.
    let reached = t.min(r.ingested_at.timestamp_micros());
    pw.now.max_event = Some(pw.now.max_event.map_or(reached, |e| e.max(reached)));
    observed
}

pub(super) fn count(minute: &mut Minute, config: &WindowConfig, r: &ValidatedRecord) -> Observed {
    let mut observed = Observed::Counted;
    let mut floor = 0;
    let (key, peer) = (config.side.key(r), config.side.peer(r));
    if !minute.windows.contains_key(&key) && minute.windows.len() >= config.max_windows_per_minute {
        minute.sources_capped = true;
        match evict(minute) {
            Some(victim) => {
                floor = victim.rank;
                observed = Observed::Evicted {
                    events: victim.events,
                };
            }
            // A cap of zero windows.
            None => return Observed::Uncounted,
        }
    }
    let seq = minute.next_seq;
    let acc = minute.windows.entry(key).or_insert_with(|| Acc {
        events: 0,
        bytes_sent: 0,
        bytes_received: 0,
        ports: HashSet::new(),
        peers: HashSet::new(),
        denied: 0,
        first_seen: r.timestamp,
        last_seen: r.timestamp,
        distinct_capped: false,
        rank: floor,
        seq,
        geo: config.side.geo(r).map(Box::new),
        extra: None,
    });
    if acc.seq == seq {
        minute.next_seq += 1;
    }
    if let Some(ranking) = &mut minute.ranking {
        ranking.remove(&(acc.rank, acc.seq, key));
        ranking.insert((acc.rank + 1, acc.seq, key));
    }
    acc.rank += 1;
    acc.events += 1;
    acc.bytes_sent = acc.bytes_sent.saturating_add(r.bytes_sent);
    acc.bytes_received = acc.bytes_received.saturating_add(r.bytes_received);
    acc.denied += i64::from(r.action.is_denied());
    for list in config.side.threats(r) {
        let extra = acc.extra.get_or_insert_default();
        if !extra.threats.contains(list) {
            extra.threats.insert(list.clone());
        }
    }
    acc.first_seen = acc.first_seen.min(r.timestamp);
    acc.last_seen = acc.last_seen.max(r.timestamp);
    let budget = config.max_distinct_per_minute;
    if !acc.ports.contains(&r.port) {
        if minute.tracked_distinct < budget {
            acc.ports.insert(r.port);
            minute.tracked_distinct += 1;
        } else {
            acc.distinct_capped = true;
        }
    }
    if !acc.peers.contains(&peer) {
        if minute.tracked_distinct < budget {
            acc.peers.insert(peer);
            minute.tracked_distinct += 1;
        } else {
            acc.distinct_capped = true;
        }
    }
    let swept = config.side == Side::Source && config.sweep_port == Some(r.port);
    if swept && !acc.extra.as_ref().is_some_and(|e| e.swept.contains(&peer)) {
        if minute.tracked_distinct < budget {
            acc.extra.get_or_insert_default().swept.insert(peer);
            minute.tracked_distinct += 1;
        } else {
            acc.distinct_capped = true;
        }
    }
    observed
}

/// Space-Saving: a full minute makes room for a new source by evicting the window of the
/// lowest rank (the oldest among equals). The ranking is built the first time the minute is
/// full. Returns the evicted window.
fn evict(minute: &mut Minute) -> Option<Acc> {
    let windows = &minute.windows;
    let ranking = minute.ranking.get_or_insert_with(|| {
        windows
            .iter()
            .map(|(ip, acc)| (acc.rank, acc.seq, *ip))
            .collect::<BTreeSet<_>>()
    });
    let (_, _, ip) = ranking.pop_first()?;
    let victim = minute.windows.remove(&ip)?;
    minute.tracked_distinct = minute
        .tracked_distinct
        .saturating_sub(victim.ports.len() + victim.peers.len() + victim.swept());
    Some(victim)
}
