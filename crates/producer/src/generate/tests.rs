use std::collections::{HashMap, HashSet};

use log_schema::{Limits, Origin, validate};

use super::*;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-12-28T10:00:00Z")
        .expect("date")
        .with_timezone(&Utc)
}

#[test]
fn deterministic_for_a_seed() {
    let run = |seed| {
        let mut g = Generator::new(GeneratorConfig {
            seed,
            ..Default::default()
        });
        let mut buf = Vec::new();
        (0..100)
            .map(|_| {
                g.next_into(t0(), &mut buf);
                buf.clone()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn default_traffic_is_valid_skewed_and_below_alert_thresholds() {
    let mut g = Generator::new(GeneratorConfig::default());
    let mut buf = Vec::new();
    let origin = Origin {
        topic: "t",
        partition: 0,
        offset: 0,
    };
    let mut per_host: HashMap<String, (usize, HashSet<u16>, usize, HashSet<std::net::IpAddr>)> =
        HashMap::new();
    let (mut icmp, mut v6, mut udp) = (0, 0, 0);
    // One minute at the default 1,000 logs/s.
    for i in 0..60_000 {
        let at = t0() + TimeDelta::microseconds(i * 1000);
        let (key, kind) = g.next_into(at, &mut buf);
        assert_eq!(kind, Kind::Normal);
        let key = key.to_owned();
        let r = validate(&buf, &origin, at, &Limits::default()).expect("valid");
        assert_eq!(r.source_ip.to_string(), key);
        if r.protocol == "ICMP" {
            icmp += 1;
            assert_eq!(r.port, 0);
        }
        udp += usize::from(r.protocol == "UDP");
        v6 += usize::from(r.source_ip.is_ipv6());
        let e = per_host.entry(key).or_default();
        e.0 += 1;
        e.1.insert(r.port);
        e.2 += usize::from(r.action.is_denied());
        e.3.insert(r.destination_ip);
    }
    let max_destinations = per_host.values().map(|h| h.3.len()).max().expect("hosts");
    assert!(
        max_destinations <= 8,
        "most destinations {max_destinations}"
    );
    let max_events = per_host.values().map(|h| h.0).max().expect("hosts");
    let max_ports = per_host.values().map(|h| h.1.len()).max().expect("hosts");
    let max_denied = per_host.values().map(|h| h.2).max().expect("hosts");
    assert!(max_events < 5_000 / 2, "busiest host {max_events}");
    assert!(max_ports < 100 / 2, "most ports {max_ports}");
    assert!(max_denied < 100 / 2, "most denied {max_denied}");
    let min_events = per_host.values().map(|h| h.0).min().expect("hosts");
    assert!(
        max_events > 20 * min_events.max(1),
        "skewed: {max_events} vs {min_events}"
    );
    assert!(icmp > 0 && v6 > 0 && udp > 0);
}

#[test]
fn scenarios_produce_their_pattern_within_one_minute() {
    let mut g = Generator::new(GeneratorConfig {
        scenarios: vec![
            Scenario::PortScan,
            Scenario::Flood,
            Scenario::DenyBurst,
            Scenario::HostSweep,
            Scenario::TargetFlood,
        ],
        ..Default::default()
    });
    let mut buf = Vec::new();
    let origin = Origin {
        topic: "t",
        partition: 0,
        offset: 0,
    };
    let mut attacks: HashMap<(Scenario, String), Vec<log_schema::ValidatedRecord>> = HashMap::new();
    for i in 0..10_000 {
        let at = t0() + TimeDelta::milliseconds(i);
        let (key, kind) = g.next_into(at, &mut buf);
        if let Kind::Attack(s) = kind {
            let r = validate(&buf, &origin, at, &Limits::default()).expect("valid");
            assert_eq!(key, r.source_ip.to_string(), "keyed by its source");
            // A target's scenario is grouped by its victim, a source's by its attacker.
            let key = s
                .victim(0)
                .map_or(key.to_owned(), |_| r.destination_ip.to_string());
            attacks.entry((s, key)).or_default().push(r);
        }
    }
    assert_eq!(attacks.len(), 5);
    for ((s, _), events) in &attacks {
        let minutes: HashSet<i64> = events
            .iter()
            .map(|r| r.timestamp.timestamp() / 60)
            .collect();
        assert_eq!(minutes.len(), 1, "{s:?} burst within one minute");
        match s {
            Scenario::PortScan => {
                let ports: HashSet<u16> = events.iter().map(|r| r.port).collect();
                assert!(ports.len() >= 100, "{}", ports.len());
            }
            Scenario::Flood => assert!(events.len() >= 5_000),
            Scenario::DenyBurst => {
                assert!(events.iter().filter(|r| r.action.is_denied()).count() >= 100)
            }
            Scenario::HostSweep => {
                let hosts: HashSet<_> = events.iter().map(|r| r.destination_ip).collect();
                assert!(hosts.len() >= 100, "{}", hosts.len());
                assert!(events.iter().all(|r| r.port == 445));
                assert!(events.iter().filter(|r| r.action.is_denied()).count() < 100);
            }
            Scenario::TargetFlood => {
                let sources: HashSet<_> = events.iter().map(|r| r.source_ip).collect();
                assert!(sources.len() >= 500, "{}", sources.len());
                assert_eq!(events.len(), sources.len(), "one event per source");
                assert_eq!(
                    events[0].destination_ip,
                    Scenario::TargetFlood.victim(4).expect("a victim"),
                    "the fifth burst's victim"
                );
            }
        }
    }
}

#[test]
fn invalid_records_are_rejected_with_their_kind() {
    let mut g = Generator::new(GeneratorConfig {
        invalid_ratio: 0.5,
        ..Default::default()
    });
    let mut buf = Vec::new();
    let origin = Origin {
        topic: "t",
        partition: 0,
        offset: 0,
    };
    let mut kinds = HashSet::new();
    for _ in 0..2_000 {
        let (_, kind) = g.next_into(t0(), &mut buf);
        let result = validate(&buf, &origin, t0(), &Limits::default());
        match kind {
            Kind::Invalid(k) => {
                assert_eq!(result.expect_err("invalid").kind, k);
                kinds.insert(k);
            }
            _ => assert!(result.is_ok()),
        }
    }
    assert_eq!(kinds.len(), INVALID_KINDS.len());
}
