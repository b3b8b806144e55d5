use std::collections::BTreeMap;

use log_schema::{Limits, Origin, SourceOffset, validate};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

use super::*;
use chrono::Utc;
use std::net::IpAddr;

fn record(at: DateTime<Utc>, ip: &str, port: u16, action: &str, source: i64) -> ValidatedRecord {
    let json = format!(
        r#"{{"timestamp":"{}","source_ip":"{ip}","destination_ip":"10.0.0.{}","port":{port},"protocol":"TCP","bytes_sent":10,"bytes_received":20,"action":"{action}"}}"#,
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        port % 7
    );
    let origin = Origin {
        topic: "t",
        partition: 0,
        offset: source,
    };
    validate(json.as_bytes(), &origin, Utc::now(), &Limits::default()).expect("valid")
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("time").to_utc()
}

fn config() -> WindowConfig {
    WindowConfig {
        lateness: TimeDelta::seconds(30),
        idle: Duration::from_secs(3600),
        thresholds: Thresholds {
            port_scan: 3,
            flood: 4,
            deny_burst: 2,
            host_sweep: 1_000,
            target_flood_sources: 1_000,
            target_flood_events: 1_000,
            threat_match_events: 1,
        },
        max_windows_per_minute: 1_000,
        max_distinct_per_minute: 10_000,
        side: Side::Source,
        sweep_port: None,
    }
}

/// The windows of `events` (time, source, port, action; destination `10.0.0.<port % 7>`),
/// closed by a record two minutes later.
fn close_all(mut w: Windows, events: &[(&str, &str, u16, &str)]) -> BTreeMap<String, Closed> {
    let mut closed = Vec::new();
    for (i, (t, ip, port, action)) in events.iter().enumerate() {
        let r = record(at(t), ip, *port, action, i as i64);
        closed.extend(w.observe(0, i as i64, &r).1);
    }
    let last = record(at("2025-12-28T10:03:00Z"), "10.9.9.9", 1, "ALLOW", 999);
    closed.extend(w.observe(0, events.len() as i64, &last).1);
    closed
        .into_iter()
        .map(|c| (c.stats.source_ip.to_string(), c))
        .collect()
}

#[test]
fn host_sweep_counts_destinations_and_the_allowlist_silences_every_rule() {
    let config = WindowConfig {
        thresholds: Thresholds {
            host_sweep: 5,
            ..config().thresholds
        },
        ..config()
    };
    // 10.0.0.1 reaches 7 destinations (ports 1..=7 → 10.0.0.1..6 and .0) and 7 ports;
    // 10.0.0.2 only 4 destinations.
    let mut events = Vec::new();
    for port in 1..=7 {
        events.push(("2025-12-28T10:00:10Z", "10.0.0.1", port, "ALLOW"));
    }
    for port in [7, 14, 1, 2, 3] {
        events.push(("2025-12-28T10:00:20Z", "10.0.0.2", port, "ALLOW"));
    }
    let got = close_all(Windows::new(config), &events);
    let rules = |ip: &str| got[ip].alerts.iter().map(|a| a.rule).collect::<Vec<_>>();
    assert_eq!(got["10.0.0.1"].stats.distinct_destinations, 7);
    assert_eq!(
        rules("10.0.0.1"),
        vec![AlertRule::PortScan, AlertRule::Flood, AlertRule::HostSweep]
    );
    assert_eq!(got["10.0.0.2"].stats.distinct_destinations, 4);
    assert_eq!(
        rules("10.0.0.2"),
        vec![AlertRule::PortScan, AlertRule::Flood]
    );

    // Listed (one address, one block): the same windows, no alert.
    let allow = Allowlist::parse("10.0.0.1, 10.0.0.2/31").expect("allowlist");
    let quiet = close_all(Windows::new(config).with_allowlist(allow), &events);
    for ip in ["10.0.0.1", "10.0.0.2"] {
        assert_eq!(quiet[ip].stats, got[ip].stats);
        assert!(quiet[ip].alerts.is_empty(), "{ip} is listed");
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
    for (i, (t, ip, port, action)) in events.iter().enumerate() {
        let r = record(at(t), ip, *port, action, i as i64);
        let (o, c) = w.observe(0, i as i64 + 100, &r);
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
    assert!(!a.distinct_capped && !a.sources_capped);
    let rules: Vec<AlertRule> = by_ip["10.0.0.1"].alerts.iter().map(|a| a.rule).collect();
    assert_eq!(rules, vec![AlertRule::PortScan, AlertRule::DenyBurst]);
    assert!(by_ip["10.0.0.2"].alerts.is_empty());
    assert_eq!(by_ip["10.0.0.2"].stats.events, 2);
    assert_eq!(w.open_windows(), 1, "10:01 is still open");
    assert_eq!(
        w.checkpoint(0).map(|c| c.0),
        Some(100),
        "closed but unacknowledged windows hold the commit"
    );
    for c in &closed {
        w.emitted(0, c.emission);
    }
    assert_eq!(
        w.checkpoint(0).map(|c| c.0),
        Some(104),
        "10:01's first offset"
    );
}

#[test]
fn quiet_partitions_advance_event_time_by_the_quiet_time() {
    let mut w = Windows::new(WindowConfig {
        idle: Duration::ZERO,
        lateness: TimeDelta::zero(),
        ..config()
    });
    let r = record(at("2025-12-28T10:00:59.999Z"), "10.0.0.1", 22, "ALLOW", 0);
    let (_, c) = w.observe(1, 5, &r);
    assert!(c.is_empty());
    std::thread::sleep(Duration::from_millis(5));
    assert!(
        w.tick(|_, _| false).0.is_empty(),
        "not caught up: nothing closes"
    );
    let (closed, stepped) = w.tick(|_, _| true);
    assert_eq!(closed.len(), 1);
    assert_eq!(
        stepped,
        vec![IdleStep {
            partition: 1,
            position: 6,
            horizon: at("2025-12-28T10:01:00Z"),
        }]
    );
    assert_eq!(closed[0].stats.events, 1);
    assert_eq!(w.open_windows(), 0);
}

#[test]
fn caps_flag_the_affected_windows_and_count_nothing_silently() {
    let mut w = Windows::new(WindowConfig {
        max_windows_per_minute: 2,
        max_distinct_per_minute: 5,
        ..config()
    });
    let t = at("2025-12-28T10:00:01Z");
    let mut observed = Vec::new();
    for (i, (ip, port)) in [
        ("10.0.0.1", 1),
        ("10.0.0.1", 2),
        ("10.0.0.2", 1),
        ("10.0.0.3", 1),
        ("10.0.0.1", 3),
    ]
    .into_iter()
    .enumerate()
    {
        observed.push(
            w.observe(0, i as i64, &record(t, ip, port, "ALLOW", i as i64))
                .0,
        );
    }
    assert_eq!(
        observed[3],
        Observed::Evicted { events: 1 },
        "a third source in a 2-window minute evicts the lowest-ranked window (10.0.0.2)"
    );
    let (_, closed) = w.observe(
        0,
        9,
        &record(at("2025-12-28T10:05:00Z"), "10.0.0.9", 1, "ALLOW", 9),
    );
    let by_ip: BTreeMap<String, &WindowStats> = closed
        .iter()
        .map(|c| (c.stats.source_ip.to_string(), &c.stats))
        .collect();
    assert_eq!(
        by_ip.keys().collect::<Vec<_>>(),
        ["10.0.0.1", "10.0.0.3"],
        "the evicted window is not emitted"
    );
    assert!(closed.iter().all(|c| c.stats.sources_capped));
    let first = by_ip["10.0.0.1"];
    assert_eq!(
        first.events, 3,
        "counted even when its distinct values are not"
    );
    assert!(
        first.distinct_capped,
        "budget 5: 4 tracked for 10.0.0.1 and 1 for 10.0.0.3"
    );
    assert_eq!(first.distinct_ports + first.distinct_destinations, 4);
    assert_eq!(by_ip["10.0.0.3"].events, 1);
}

#[test]
fn a_scan_after_a_flood_that_fills_the_cap_keeps_an_exact_window_and_its_alert() {
    let mut w = Windows::new(WindowConfig {
        max_windows_per_minute: 100,
        ..config()
    });
    let t = at("2025-12-28T10:00:01Z");
    let mut offset = 0;
    // 300 spoofed one-packet sources: three times the cap.
    for i in 0..300 {
        let ip = format!("10.1.{}.{}", i / 200, i % 200);
        w.observe(0, offset, &record(t, &ip, 1, "ALLOW", offset));
        offset += 1;
    }
    // The scan, interleaved with more flood.
    for port in 1..=5 {
        w.observe(0, offset, &record(t, "10.0.0.66", port, "ALLOW", offset));
        offset += 1;
        for i in 0..50 {
            let ip = format!("10.2.{port}.{i}");
            w.observe(0, offset, &record(t, &ip, 1, "ALLOW", offset));
            offset += 1;
        }
    }
    let (_, closed) = w.observe(
        0,
        offset,
        &record(at("2025-12-28T10:05:00Z"), "10.0.0.9", 1, "ALLOW", offset),
    );
    assert_eq!(closed.len(), 100, "the cap");
    let scan = closed
        .iter()
        .find(|c| c.stats.source_ip.to_string() == "10.0.0.66")
        .expect("the scanner kept its window");
    assert_eq!((scan.stats.events, scan.stats.distinct_ports), (5, 5));
    assert!(scan.stats.sources_capped);
    let scans = scan.alerts.iter().filter(|a| a.rule == AlertRule::PortScan);
    assert_eq!(scans.count(), 1);
}

/// Space-Saving's bound, checked against exact counts: in a (partition, minute) of `n` counted
/// events and `k` windows, every source with more than n/k events has a window, and no window
/// misses more than n/k of its source's events.
#[test]
fn the_window_cap_keeps_every_source_above_n_over_k_and_misses_at_most_n_over_k_events() {
    for seed in 0..30 {
        let mut rng = StdRng::seed_from_u64(seed);
        let k = rng.random_range(5..40);
        let mut w = Windows::new(WindowConfig {
            max_windows_per_minute: k,
            ..config()
        });
        let t = at("2025-12-28T10:00:01Z");
        let mut truth: BTreeMap<String, i64> = BTreeMap::new();
        let n = rng.random_range(200..2_000);
        for offset in 0..n {
            // A few heavy sources among many light ones, in random order.
            let ip = if rng.random_bool(0.3) {
                format!("10.0.0.{}", rng.random_range(1..4))
            } else {
                format!(
                    "10.9.{}.{}",
                    rng.random_range(0..4),
                    rng.random_range(0..250)
                )
            };
            *truth.entry(ip.clone()).or_default() += 1;
            w.observe(0, offset, &record(t, &ip, 1, "ALLOW", offset));
        }
        let (_, closed) = w.observe(
            0,
            n,
            &record(at("2025-12-28T10:05:00Z"), "10.0.0.9", 1, "ALLOW", n),
        );
        let emitted: BTreeMap<String, i64> = closed
            .iter()
            .map(|c| (c.stats.source_ip.to_string(), c.stats.events))
            .collect();
        let bound = n / k as i64;
        for (ip, events) in &truth {
            match emitted.get(ip) {
                Some(got) => assert!(
                    *got <= *events && events - got <= bound,
                    "seed {seed}: {ip} emitted {got} of {events} (bound {bound})"
                ),
                None => assert!(
                    *events <= bound,
                    "seed {seed}: {ip} with {events} events > n/k = {bound} lost its window"
                ),
            }
        }
    }
}

#[test]
fn alert_ids_are_deterministic() {
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut w = Windows::new(config());
        for (i, port) in [1, 2, 3].into_iter().enumerate() {
            let r = record(
                at("2025-12-28T10:00:01Z"),
                "10.0.0.9",
                port,
                "ALLOW",
                i as i64,
            );
            w.observe(0, i as i64, &r);
        }
        let r = record(at("2025-12-28T10:05:00Z"), "10.0.0.9", 1, "ALLOW", 9);
        let closed = w.observe(0, 9, &r).1;
        ids.push(closed[0].alerts[0].alert_id);
    }
    assert_eq!(ids[0], ids[1]);
}

/// One partition's records: disorder beyond the lateness, duplicates of the validation
/// stage (a raw partition replayed), several raw partitions and minutes.
fn stream(rng: &mut StdRng, n: usize) -> Vec<ValidatedRecord> {
    let base = at("2025-12-28T10:00:00Z");
    let mut out: Vec<ValidatedRecord> = Vec::new();
    let mut next = [0i64; 3];
    let mut i = 0;
    while out.len() < n {
        if rng.random_bool(0.03) && !out.is_empty() {
            // The validation stage restarts: the last few records of a raw partition again.
            let k = rng.random_range(1..=out.len().min(20));
            let again: Vec<ValidatedRecord> = out[out.len() - k..].to_vec();
            out.extend(again);
            continue;
        }
        let p = rng.random_range(0..3);
        let jitter = if rng.random_bool(0.05) {
            rng.random_range(-90..0)
        } else {
            rng.random_range(-5..5)
        };
        let t = base + TimeDelta::milliseconds(i * 700) + TimeDelta::seconds(jitter);
        let ip = format!("10.0.0.{}", rng.random_range(1..6));
        let action = if rng.random_bool(0.3) {
            "DENY"
        } else {
            "ALLOW"
        };
        let mut r = record(t, &ip, rng.random_range(1..40), action, 0);
        r.source = Some(SourceOffset {
            partition: p,
            offset: next[p as usize],
            file: None,
        });
        next[p as usize] += 1;
        out.push(r);
        i += 1;
    }
    // Retries: an output that failed is sent again after later ones landed.
    for i in 0..out.len() {
        if rng.random_bool(0.02) {
            let r = out.remove(i);
            let to = (i + rng.random_range(1..30)).min(out.len());
            out.insert(to, r);
        }
    }
    out
}

#[test]
fn crashes_at_any_point_emit_exactly_the_uninterrupted_windows() {
    for seed in 0..40 {
        let mut rng = StdRng::seed_from_u64(seed);
        let records = stream(&mut rng, 600);
        let want = crate::reference::reference(
            records
                .iter()
                .enumerate()
                .map(|(i, r)| (0, i as i64, r.clone())),
            TimeDelta::seconds(30),
        );
        assert!(want.windows.len() > 10, "seed {seed}: enough windows");
        assert!(
            want.late > 0 && want.duplicates > 0,
            "seed {seed}: late events and duplicates"
        );
        let mut emitted: BTreeMap<(IpAddr, DateTime<Utc>), WindowStats> = BTreeMap::new();
        let mut w = Windows::new(config());
        w.assign(0, None, "").expect("fresh");
        let mut committed: (Option<i64>, String) = (None, String::new());
        let mut unacked: Vec<Closed> = Vec::new();
        let mut offset = 0i64;
        let mut crashes = 0;
        while (offset as usize) < records.len() {
            let (_, closed) = w.observe(0, offset, &records[offset as usize]);
            for c in closed {
                let key = (c.stats.source_ip, c.stats.window_start);
                if let Some(previous) = emitted.insert(key, c.stats.clone()) {
                    assert_eq!(
                        previous, c.stats,
                        "seed {seed}: {key:?} emitted twice, differently"
                    );
                }
                unacked.push(c);
            }
            offset += 1;
            // Acknowledgements arrive late and in any order.
            while !unacked.is_empty() && rng.random_bool(0.5) {
                let c = unacked.swap_remove(rng.random_range(0..unacked.len()));
                w.emitted(0, c.emission);
            }
            if rng.random_bool(0.2) {
                let (o, m) = w.checkpoint(0).expect("position");
                committed = (Some(o), m);
            }
            if rng.random_bool(0.02) {
                // Crash: unacknowledged outputs may or may not have landed; restart from the
                // last commit.
                crashes += 1;
                unacked.clear();
                w = Windows::new(config());
                w.assign(0, committed.0, &committed.1).expect("checkpoint");
                offset = committed.0.unwrap_or(0);
            }
        }
        assert!(crashes > 3, "seed {seed}: crashes {crashes}");
        let differing = want.differences(&emitted);
        assert!(
            differing.is_empty(),
            "seed {seed}: (window, reference events, emitted events): {:?}",
            &differing[..differing.len().min(3)]
        );
    }
}

#[test]
fn an_idle_step_replays_at_the_same_position() {
    let mut w = Windows::new(WindowConfig {
        idle: Duration::ZERO,
        lateness: TimeDelta::zero(),
        ..config()
    });
    w.assign(0, Some(0), "").expect("fresh");
    w.observe(
        0,
        0,
        &record(at("2025-12-28T10:00:59.999Z"), "10.0.0.1", 1, "ALLOW", 0),
    );
    std::thread::sleep(Duration::from_millis(5));
    let (closed, _) = w.tick(|_, _| true);
    assert_eq!(closed.len(), 1);
    let (offset, metadata) = w.checkpoint(0).expect("checkpoint");
    assert_eq!(offset, 0, "not acknowledged yet");
    // Crash before the acknowledgement; the next record is late in the original run.
    let late = record(at("2025-12-28T10:00:59.000Z"), "10.0.0.1", 2, "ALLOW", 1);
    assert_eq!(w.observe(0, 1, &late).0, Observed::Late);
    let mut again = Windows::new(config());
    let replayed = again.assign(0, Some(offset), &metadata).expect("restored");
    assert!(replayed.is_empty());
    let (_, c) = again.observe(
        0,
        0,
        &record(at("2025-12-28T10:00:59.999Z"), "10.0.0.1", 1, "ALLOW", 0),
    );
    assert_eq!(
        c.len(),
        1,
        "the step applies once the replay reaches its position"
    );
    assert_eq!(c[0].stats.events, 1);
    assert_eq!(again.observe(0, 1, &late).0, Observed::Late, "late again");
}

#[test]
fn a_checkpoint_that_is_not_ours_is_an_error_and_a_fresh_start() {
    let mut w = Windows::new(config());
    assert!(w.assign(0, Some(5), "something else").is_err());
    assert_eq!(w.checkpoint(0).map(|c| c.0), Some(5));
}

/// A record that reached Kafka at `ingested`.
fn ingested(
    at: DateTime<Utc>,
    ingested: DateTime<Utc>,
    ip: &str,
    port: u16,
    source: i64,
) -> ValidatedRecord {
    let json = format!(
        r#"{{"timestamp":"{}","source_ip":"{ip}","destination_ip":"10.0.0.9","port":{port},"protocol":"TCP","bytes_sent":1,"bytes_received":1,"action":"ALLOW"}}"#,
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    );
    let origin = Origin {
        topic: "t",
        partition: 0,
        offset: source,
    };
    validate(json.as_bytes(), &origin, ingested, &Limits::default()).expect("valid")
}

#[test]
fn a_record_dated_ahead_of_its_ingestion_closes_nothing_and_the_scan_after_it_alerts() {
    let mut w = Windows::new(config());
    w.assign(0, Some(0), "").expect("fresh");
    let t0 = at("2025-12-28T10:00:05Z");
    // The scanner's own record, dated 290 s ahead of the time it reached Kafka (the validator
    // allows 300 s of skew).
    let (o, c) = w.observe(
        0,
        0,
        &ingested(t0 + TimeDelta::seconds(290), t0, "10.9.9.9", 1, 0),
    );
    assert_eq!(o, Observed::Counted);
    assert!(c.is_empty());
    // The scan: ports 1..=5 from 10.0.0.1 during 10:00, each record ingested a second later.
    for i in 0..5 {
        let t = t0 + TimeDelta::seconds(10 * i);
        let (o, c) = w.observe(
            0,
            1 + i,
            &ingested(
                t,
                t + TimeDelta::seconds(1),
                "10.0.0.1",
                1 + i as u16,
                1 + i,
            ),
        );
        assert_eq!(o, Observed::Counted, "scan event {i} is not late");
        assert!(c.is_empty(), "nothing closes during the scan's minute");
    }
    // Traffic of 10:01:40 closes 10:00 (lateness 30 s).
    let t = at("2025-12-28T10:01:40Z");
    let (_, closed) = w.observe(0, 6, &ingested(t, t, "10.0.0.2", 80, 6));
    let scan = closed
        .iter()
        .find(|c| c.stats.source_ip.to_string() == "10.0.0.1")
        .expect("the scanner's window closed");
    assert_eq!(scan.stats.events, 5);
    assert_eq!(scan.stats.distinct_ports, 5);
    let scans = scan.alerts.iter().filter(|a| a.rule == AlertRule::PortScan);
    assert_eq!(scans.count(), 1, "port_scan (threshold 3) fires once");
}

#[test]
fn a_retried_record_arriving_after_later_ones_is_counted_and_a_true_duplicate_is_not() {
    let mut w = Windows::new(config());
    w.assign(0, Some(0), "").expect("fresh");
    let t = at("2025-12-28T10:00:05Z");
    let r = |raw: i64| {
        let mut r = record(t, "10.0.0.1", 1 + raw as u16, "ALLOW", raw);
        r.source = Some(SourceOffset {
            partition: 4,
            offset: raw,
            file: None,
        });
        r
    };
    // Raw offsets 1 and 2 land before the retried 0; then 1 again (a real duplicate).
    let order = [1, 2, 0, 1];
    let observed: Vec<Observed> = order
        .iter()
        .enumerate()
        .map(|(i, raw)| w.observe(0, i as i64, &r(*raw)).0)
        .collect();
    assert_eq!(
        observed,
        [
            Observed::Counted,
            Observed::Counted,
            Observed::Counted,
            Observed::Duplicate
        ]
    );
}

#[test]
fn a_checkpoint_after_300_raw_partitions_fits_the_brokers_default_metadata_limit() {
    let mut w = Windows::new(config());
    w.assign(0, Some(0), "").expect("fresh");
    let t = at("2025-12-28T10:00:05Z");
    let mut closed = Vec::new();
    // Minutes of records from 300 raw partitions, the first ones closed and acknowledged.
    for raw in 0..600 {
        let at = t + TimeDelta::seconds(raw / 5);
        let mut r = record(at, "10.0.0.1", 1, "ALLOW", raw);
        r.source = Some(SourceOffset {
            partition: (raw % 300) as i32,
            offset: 1_000_000_000 + raw,
            file: None,
        });
        closed.extend(w.observe(0, raw, &r).1);
    }
    assert!(!closed.is_empty(), "the first minutes closed");
    for c in closed {
        w.emitted(0, c.emission);
    }
    let (offset, metadata) = w.checkpoint(0).expect("checkpoint");
    assert!(offset > 0, "the checkpoint moved past the final minutes");
    // offset.metadata.max.bytes defaults to 4,096; the checkpoint holds no per-raw-partition
    // state at all.
    assert!(metadata.len() < 200, "{} bytes: {metadata}", metadata.len());
}

#[test]
fn a_checkpoint_of_another_partition_count_is_refused() {
    let mut w = Windows::new(config());
    w.set_topic_partitions(3);
    w.assign(0, Some(0), "").expect("fresh");
    w.observe(
        0,
        0,
        &record(at("2025-12-28T10:00:01Z"), "10.0.0.1", 1, "ALLOW", 0),
    );
    let (offset, metadata) = w.checkpoint(0).expect("checkpoint");
    let mut same = Windows::new(config());
    same.set_topic_partitions(3);
    assert!(same.assign(0, Some(offset), &metadata).is_ok());
    let mut grown = Windows::new(config());
    grown.set_topic_partitions(4);
    assert_eq!(
        grown.assign(0, Some(offset), &metadata).err(),
        Some(RestoreError::PartitionsChanged { was: 3, now: 4 })
    );
}

#[test]
fn the_destination_side_counts_sources_per_target_and_raises_target_flood() {
    let config = WindowConfig {
        thresholds: Thresholds {
            target_flood_sources: 6,
            target_flood_events: 100,
            ..config().thresholds
        },
        side: Side::Destination,
        ..config()
    };
    // Six sources against 10.0.0.1 (ports 1 and 8), one of them twice and denied; two sources
    // against 10.0.0.2 (port 2).
    let mut events = Vec::new();
    for i in 1..=6 {
        events.push(("2025-12-28T10:00:10Z", format!("192.0.2.{i}"), 1, "ALLOW"));
    }
    events.push(("2025-12-28T10:00:40Z", "192.0.2.6".to_string(), 8, "DENY"));
    for i in 1..=2 {
        events.push((
            "2025-12-28T10:00:20Z",
            format!("198.51.100.{i}"),
            2,
            "ALLOW",
        ));
    }
    let run = |allowlist: &str| {
        let mut w = Windows::new(config).with_allowlist(Allowlist::parse(allowlist).expect("list"));
        let mut closed = Vec::new();
        for (i, (t, ip, port, action)) in events.iter().enumerate() {
            let r = record(at(t), ip, *port, action, i as i64);
            closed.extend(w.observe(0, i as i64, &r).1);
        }
        let last = record(at("2025-12-28T10:03:00Z"), "10.9.9.9", 3, "ALLOW", 999);
        closed.extend(w.observe(0, events.len() as i64, &last).1);
        closed
            .into_iter()
            .map(|c| (c.target().destination_ip.to_string(), c))
            .collect::<BTreeMap<_, _>>()
    };
    let closed = run("");
    let target = closed["10.0.0.1"].target();
    assert_eq!(
        (
            target.events,
            target.distinct_sources,
            target.distinct_ports,
            target.denied
        ),
        (7, 6, 2, 1)
    );
    assert_eq!(target.last_seen, at("2025-12-28T10:00:40Z"));
    let alerts = &closed["10.0.0.1"].alerts;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(
        (
            alert.rule,
            alert.source_ip,
            alert.destination_ip,
            alert.value,
            alert.threshold
        ),
        (
            AlertRule::TargetFlood,
            None,
            Some(target.destination_ip),
            6,
            6
        )
    );
    assert_eq!(
        alert.alert_id,
        Alert::id(
            AlertRule::TargetFlood,
            target.destination_ip,
            target.window_start
        )
    );
    let other = closed["10.0.0.2"].target();
    assert_eq!((other.events, other.distinct_sources), (2, 2));
    assert!(closed["10.0.0.2"].alerts.is_empty());
    // The source rules never fire on the destination side, whatever the counts.
    assert!(
        closed
            .values()
            .flat_map(|c| &c.alerts)
            .all(|a| a.rule == AlertRule::TargetFlood)
    );
    let silenced = run("10.0.0.0/31");
    assert!(silenced["10.0.0.1"].alerts.is_empty());
    assert_eq!(silenced["10.0.0.1"].target(), target);
}

#[test]
fn a_listed_address_raises_one_threat_match_per_list_and_minute_on_each_side() {
    let marked = |t: &str, src: &str, port: u16, offset: i64, src_lists: &[&str], dst: &[&str]| {
        let mut r = record(at(t), src, port, "ALLOW", offset);
        r.source_threats = src_lists.iter().map(|s| (*s).to_owned()).collect();
        r.destination_threats = dst.iter().map(|s| (*s).to_owned()).collect();
        r
    };
    // 192.0.2.1 is on `drop` in its first record and on both lists in its second (a list
    // reloaded between them); its destination 10.0.0.1 (port 1) is on `level1`.
    let records = [
        marked(
            "2025-12-28T10:00:10Z",
            "192.0.2.1",
            1,
            0,
            &["drop"],
            &["level1"],
        ),
        marked(
            "2025-12-28T10:00:20Z",
            "192.0.2.1",
            1,
            1,
            &["drop", "level1"],
            &["level1"],
        ),
        marked("2025-12-28T10:00:30Z", "192.0.2.2", 8, 2, &[], &["level1"]),
        marked("2025-12-28T10:00:40Z", "192.0.2.3", 2, 3, &[], &[]),
        marked("2025-12-28T10:03:00Z", "10.9.9.9", 3, 4, &[], &[]),
    ];
    let run = |side: Side, allowlist: &str| {
        let mut w = Windows::new(WindowConfig { side, ..config() })
            .with_allowlist(Allowlist::parse(allowlist).expect("list"));
        let mut closed = Vec::new();
        for (i, r) in records.iter().enumerate() {
            closed.extend(w.observe(0, i as i64, r).1);
        }
        closed
            .iter()
            .flat_map(|c| c.alerts.clone())
            .filter(|a| a.rule == AlertRule::ThreatMatch)
            .map(|a| {
                let address = a.address().expect("an address").to_string();
                (
                    a.list.clone().expect("a list"),
                    address,
                    a.value,
                    a.source_ip.is_some(),
                )
            })
            .collect::<BTreeSet<_>>()
    };
    use std::collections::BTreeSet;
    let want = |items: &[(&str, &str, i64, bool)]| {
        items
            .iter()
            .map(|(l, a, v, s)| ((*l).to_owned(), (*a).to_owned(), *v, *s))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        run(Side::Source, ""),
        want(&[
            ("drop", "192.0.2.1", 2, true),
            ("level1", "192.0.2.1", 2, true),
        ])
    );
    // As a destination, 10.0.0.1 received 3 events from two sources: one alert.
    assert_eq!(
        run(Side::Destination, ""),
        want(&[("level1", "10.0.0.1", 3, false)])
    );
    assert!(run(Side::Source, "192.0.2.0/30").is_empty());
    assert!(run(Side::Destination, "10.0.0.1").is_empty());
}

#[test]
fn a_sweep_port_makes_host_sweep_count_only_the_destinations_on_that_port() {
    let to = |t: &str, src: &str, dst: &str, port: u16, offset: i64| {
        let mut r = record(at(t), src, port, "ALLOW", offset);
        r.destination_ip = dst.parse().expect("ip");
        r
    };
    let mut records = Vec::new();
    // 192.0.2.1 reaches 6 hosts on 445; 192.0.2.2 reaches 7 hosts, only one of them on 445.
    for i in 0..6 {
        records.push(to(
            "2025-12-28T10:00:10Z",
            "192.0.2.1",
            &format!("10.1.0.{i}"),
            445,
            i,
        ));
    }
    for i in 0..7u16 {
        let port = if i == 0 { 445 } else { 3000 + i };
        let dst = format!("10.2.0.{i}");
        records.push(to(
            "2025-12-28T10:00:20Z",
            "192.0.2.2",
            &dst,
            port,
            10 + i64::from(i),
        ));
    }
    records.push(to("2025-12-28T10:03:00Z", "10.9.9.9", "10.9.9.8", 1, 99));
    let run = |sweep_port: Option<u16>| {
        let config = WindowConfig {
            thresholds: Thresholds {
                host_sweep: 5,
                port_scan: 1_000,
                flood: 1_000,
                ..config().thresholds
            },
            sweep_port,
            ..config()
        };
        let mut w = Windows::new(config);
        let mut closed = Vec::new();
        for (i, r) in records.iter().enumerate() {
            closed.extend(w.observe(0, i as i64, r).1);
        }
        closed
            .into_iter()
            .map(|c| (c.stats.source_ip.to_string(), c))
            .collect::<BTreeMap<_, _>>()
    };
    let on_445 = run(Some(445));
    let (a, b) = (&on_445["192.0.2.1"], &on_445["192.0.2.2"]);
    assert_eq!(
        a.stats.sweep,
        Some(log_schema::Sweep {
            port: 445,
            destinations: 6
        })
    );
    assert_eq!(
        (
            b.stats.distinct_destinations,
            b.stats.sweep.map(|s| s.destinations)
        ),
        (7, Some(1))
    );
    assert_eq!(a.alerts.len(), 1);
    assert_eq!(
        (a.alerts[0].rule, a.alerts[0].value),
        (AlertRule::HostSweep, 6)
    );
    assert!(
        a.alerts[0].summary.contains("on port 445"),
        "{}",
        a.alerts[0].summary
    );
    assert!(b.alerts.is_empty(), "{:?}", b.alerts);
    // On any port (the default), both sweep.
    let any = run(None);
    assert_eq!(any["192.0.2.2"].stats.sweep, None);
    for ip in ["192.0.2.1", "192.0.2.2"] {
        let rules: Vec<AlertRule> = any[ip].alerts.iter().map(|a| a.rule).collect();
        assert_eq!(rules, [AlertRule::HostSweep], "{ip}");
    }
}
