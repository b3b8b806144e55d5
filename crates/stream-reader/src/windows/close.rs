//! Counting a record into its window, and a closed minute's windows into statistics and
//! alerts.

use std::collections::{HashMap, HashSet};

use log_schema::ValidatedRecord;

use super::{
    Observed, WindowConfig, minute_of,
    state::{Acc, Minute, PartitionWindows},
};

/// Counts one record into its partition's state (not the horizon: the caller advances it).
pub(super) fn take(
    pw: &mut PartitionWindows,
    config: &WindowConfig,
    offset: i64,
    r: &ValidatedRecord,
) -> Observed {
    if let Some(source) = r.source {
        match pw.now.next_source.get(&source.partition) {
            Some(next) if source.offset < *next => return Observed::Duplicate,
            _ => {}
        }
    }
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
            first_offset: offset,
            before: before.unwrap_or_default(),
            tracked_distinct: 0,
            sources_capped: false,
            unacknowledged: None,
        });
        count(minute, config, r)
    };
    if let Some(source) = r.source {
        pw.now
            .next_source
            .insert(source.partition, source.offset + 1);
    }
    pw.now.max_event = Some(pw.now.max_event.map_or(t, |e| e.max(t)));
    observed
}

pub(super) fn count(minute: &mut Minute, config: &WindowConfig, r: &ValidatedRecord) -> Observed {
    if !minute.windows.contains_key(&r.source_ip)
        && minute.windows.len() >= config.max_windows_per_minute
    {
        minute.sources_capped = true;
        return Observed::Uncounted;
    }
    let acc = minute.windows.entry(r.source_ip).or_insert_with(|| Acc {
        events: 0,
        bytes_sent: 0,
        bytes_received: 0,
        ports: HashSet::new(),
        destinations: HashSet::new(),
        denied: 0,
        first_seen: r.timestamp,
        last_seen: r.timestamp,
        distinct_capped: false,
    });
    acc.events += 1;
    acc.bytes_sent = acc.bytes_sent.saturating_add(r.bytes_sent);
    acc.bytes_received = acc.bytes_received.saturating_add(r.bytes_received);
    acc.denied += i64::from(r.action.is_denied());
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
    if !acc.destinations.contains(&r.destination_ip) {
        if minute.tracked_distinct < budget {
            acc.destinations.insert(r.destination_ip);
            minute.tracked_distinct += 1;
        } else {
            acc.distinct_capped = true;
        }
    }
    Observed::Counted
}
