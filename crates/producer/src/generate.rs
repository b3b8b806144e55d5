//! A plausible network, deterministic for a given seed.
//!
//! * **Sources**: a population of hosts (default 2,000) with skewed activity: host *i* is picked
//!   with weight `1 / (i + 20)`, so the busiest hosts send ~100× more than the long tail but
//!   none dominates (the top host is ~1 % of traffic). 85 % private IPv4 (10/8, 172.16/12,
//!   192.168/16), 10 % public IPv4, 5 % IPv6.
//! * **Destinations**: 300 servers, half internal, half on the internet, some IPv6; each host
//!   talks to 8 of them (its own, overlapping with its neighbours').
//! * **Ports**: a weighted list of real services (https, http, dns, ssh, databases, …); 3 % are
//!   ephemeral ports (49152–65535).
//! * **Protocols**: TCP 80 %, UDP 17 %, ICMP 3 % (ICMP has port 0).
//! * **Bytes**: log-normal (sent: median ~1.1 kB, received: median ~3 kB, long tails).
//! * **Verdicts**: `deny_ratio` (default 5 %) of events are denied (DENY, DROP or REJECT).
//!
//! At default settings (1,000 logs/s) no host comes near an alert threshold: the busiest sends
//! ~650 events a minute to ~40 distinct ports and 8 destinations with ~30 denied.
//!
//! **Attack scenarios** ([`Scenario`]) inject recognisable bursts from attacker IPs in the
//! `203.0.113.0/24` documentation range, each burst within one event-time minute:
//! * `port-scan`: one source probes 150 distinct TCP ports (1–1024) of one target, 1 event each,
//!   ~40 % REJECTed — ≥ 100 distinct destination ports within a minute (and < 100 denials);
//! * `flood`: one source sends 6,000 small TCP/443 connections to one target — ≥ 5,000 events
//!   within a minute;
//! * `deny-burst`: one source is denied 150 times (SSH/RDP/SMB attempts on 8 hosts) —
//!   ≥ 100 DENYs within a minute;
//! * `host-sweep`: one source probes SMB (TCP/445) on every address of a /24 (10.77.n.1–254),
//!   1 event each, ~70 % REJECTed — ≥ 100 distinct destinations within a minute;
//! * `target-flood`: 600 sources of a botnet (198.18.0.0/15, the benchmarking range) each open
//!   one TCP/80 connection to one web server (10.88.n.80) — ≥ 500 distinct sources against one
//!   destination within a minute, and no source rule.

use std::net::{IpAddr, Ipv4Addr};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use clap::ValueEnum;
use log_schema::{Action, ErrorKind, EventTime, RawLog, TimestampStyle};
use rand::{
    Rng, SeedableRng, distr::weighted::WeightedIndex, prelude::Distribution, rngs::SmallRng,
};
use rand_distr::LogNormal;

/// An attack pattern to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Scenario {
    /// One source touches 150 distinct destination ports of one target within a minute.
    PortScan,
    /// One source sends 6,000 events within a minute.
    Flood,
    /// One source gets 150 DENY/DROP/REJECT verdicts within a minute.
    DenyBurst,
    /// One source touches 254 hosts of a /24 on port 445 within a minute.
    HostSweep,
    /// 600 sources connect once each to one destination within a minute.
    TargetFlood,
}

impl Scenario {
    /// Events in one burst.
    pub fn burst_len(self) -> usize {
        match self {
            Scenario::PortScan => 150,
            Scenario::Flood => 6_000,
            Scenario::DenyBurst => 150,
            Scenario::HostSweep => 254,
            Scenario::TargetFlood => 600,
        }
    }

    /// The destination burst number `n` of a target's scenario attacks (10.88.n.80); `None`
    /// for a source's scenario.
    pub fn victim(self, n: u64) -> Option<IpAddr> {
        (self == Scenario::TargetFlood)
            .then(|| IpAddr::V4(Ipv4Addr::new(10, 88, (n % 256) as u8, 80)))
    }

    /// Source number `k` of a botnet burst (198.18.0.1 onwards).
    fn bot(k: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, (k / 250) as u8, (k % 250) as u8 + 1))
    }

    /// Attacker address of burst number `n` of this scenario (203.0.113.0/24, TEST-NET-3).
    pub fn attacker(self, n: u64) -> IpAddr {
        let (base, spread): (u8, u64) = match self {
            Scenario::PortScan => (10, 64),
            Scenario::Flood => (80, 64),
            Scenario::DenyBurst => (160, 64),
            Scenario::HostSweep => (224, 32),
            // The first bot: a target flood has hundreds of sources.
            Scenario::TargetFlood => return Scenario::bot(0),
        };
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, base + (n % spread) as u8))
    }
}

/// Malformed records mixed in by `--invalid-ratio`, one per error kind the contract knows.
pub const INVALID_KINDS: [ErrorKind; 11] = [
    ErrorKind::MalformedJson,
    ErrorKind::NotObject,
    ErrorKind::NotUtf8,
    ErrorKind::MissingField,
    ErrorKind::InvalidType,
    ErrorKind::InvalidIp,
    ErrorKind::PortOutOfRange,
    ErrorKind::BytesOutOfRange,
    ErrorKind::InvalidTimestamp,
    ErrorKind::InvalidProtocol,
    ErrorKind::InvalidAction,
];

/// What a generated record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Ordinary traffic.
    Normal,
    /// Part of an attack burst.
    Attack(Scenario),
    /// Deliberately malformed; the validator must reject it with this kind.
    Invalid(ErrorKind),
}

/// Generator settings.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// RNG seed (same seed, same traffic).
    pub seed: u64,
    /// Number of source hosts.
    pub hosts: usize,
    /// Share of denied events in ordinary traffic.
    pub deny_ratio: f64,
    /// Share of malformed records.
    pub invalid_ratio: f64,
    /// Timestamp style of the records.
    pub timestamp_style: TimestampStyle,
    /// Scenarios to inject, each once per `scenario_interval`.
    pub scenarios: Vec<Scenario>,
    /// Event time between two bursts of one scenario.
    pub scenario_interval: TimeDelta,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            hosts: 2_000,
            deny_ratio: 0.05,
            invalid_ratio: 0.0,
            timestamp_style: TimestampStyle::Seed,
            scenarios: Vec::new(),
            scenario_interval: TimeDelta::seconds(60),
        }
    }
}

struct Host {
    ip: IpAddr,
    key: String,
}

struct Burst {
    scenario: Scenario,
    /// Which burst this is (of all scenarios).
    index: u64,
    attacker: Host,
    target: IpAddr,
    minute_end: DateTime<Utc>,
    next: usize,
}

/// Destinations each host talks to.
const PEERS: usize = 8;

const TCP_SERVICES: [(u16, u32); 16] = [
    (443, 400),
    (80, 150),
    (22, 40),
    (53, 30),
    (8080, 40),
    (8443, 20),
    (3306, 25),
    (5432, 25),
    (6379, 20),
    (9092, 20),
    (9042, 10),
    (25, 10),
    (993, 10),
    (3389, 8),
    (445, 8),
    (27017, 6),
];
const UDP_SERVICES: [(u16, u32); 5] = [(53, 60), (123, 15), (443, 15), (161, 5), (514, 5)];

/// The traffic generator.
pub struct Generator {
    rng: SmallRng,
    config: GeneratorConfig,
    hosts: Vec<Host>,
    host_pick: WeightedIndex<f64>,
    destinations: Vec<IpAddr>,
    tcp_pick: WeightedIndex<u32>,
    udp_pick: WeightedIndex<u32>,
    sent_bytes: LogNormal<f64>,
    received_bytes: LogNormal<f64>,
    bursts: Vec<Burst>,
    next_burst_at: Vec<Option<DateTime<Utc>>>,
    burst_count: u64,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Generator {
    /// A generator for `config` (invalid settings are clamped into range).
    pub fn new(mut config: GeneratorConfig) -> Self {
        config.hosts = config.hosts.max(1);
        config.deny_ratio = config.deny_ratio.clamp(0.0, 1.0);
        config.invalid_ratio = config.invalid_ratio.clamp(0.0, 1.0);
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let hosts: Vec<Host> = (0..config.hosts)
            .map(|_| {
                let roll: f64 = rng.random();
                let ip = if roll < 0.85 {
                    IpAddr::V4(private_v4(&mut rng))
                } else if roll < 0.95 {
                    IpAddr::V4(public_v4(&mut rng))
                } else {
                    IpAddr::V6(public_v6(&mut rng))
                };
                Host {
                    ip,
                    key: ip.to_string(),
                }
            })
            .collect();
        let weights: Vec<f64> = (0..hosts.len()).map(|i| 1.0 / (i as f64 + 20.0)).collect();
        let destinations = (0..300)
            .map(|i| match i % 10 {
                0..=4 => IpAddr::V4(private_v4(&mut rng)),
                5..=8 => IpAddr::V4(public_v4(&mut rng)),
                _ => IpAddr::V6(public_v6(&mut rng)),
            })
            .collect();
        let next_burst_at = vec![None; config.scenarios.len()];
        Self {
            host_pick: WeightedIndex::new(weights).expect("positive weights"),
            tcp_pick: WeightedIndex::new(TCP_SERVICES.map(|s| s.1)).expect("positive weights"),
            udp_pick: WeightedIndex::new(UDP_SERVICES.map(|s| s.1)).expect("positive weights"),
            sent_bytes: LogNormal::new(7.0, 1.5).expect("valid log-normal"),
            received_bytes: LogNormal::new(8.0, 1.8).expect("valid log-normal"),
            rng,
            hosts,
            destinations,
            config,
            bursts: Vec::new(),
            next_burst_at,
            burst_count: 0,
        }
    }

    /// Generates the next record with event time `now` into `buf` (cleared first). Returns its
    /// key (the source IP) and what it is.
    pub fn next_into(&mut self, now: DateTime<Utc>, buf: &mut Vec<u8>) -> (&str, Kind) {
        buf.clear();
        self.schedule_bursts(now);
        if let Some(i) = self
            .bursts
            .iter()
            .position(|b| b.next < b.scenario.burst_len())
        {
            return self.burst_event(i, now, buf);
        }
        self.bursts.clear();
        let host = self.host_pick.sample(&mut self.rng);
        if self.config.invalid_ratio > 0.0 && self.rng.random_bool(self.config.invalid_ratio) {
            let kind = INVALID_KINDS[self.rng.random_range(0..INVALID_KINDS.len())];
            let log = self.normal(host, now);
            write_invalid(kind, &log, buf);
            return (&self.hosts[host].key, Kind::Invalid(kind));
        }
        let log = self.normal(host, now);
        log.write_json(buf);
        (&self.hosts[host].key, Kind::Normal)
    }

    fn normal(&mut self, host: usize, now: DateTime<Utc>) -> RawLog<'static> {
        let rng = &mut self.rng;
        let roll: f64 = rng.random();
        let (protocol, port) = if roll < 0.80 {
            let port = if rng.random_bool(0.03) {
                rng.random_range(49152..=65535)
            } else {
                TCP_SERVICES[self.tcp_pick.sample(rng)].0
            };
            ("TCP", port)
        } else if roll < 0.97 {
            ("UDP", UDP_SERVICES[self.udp_pick.sample(rng)].0)
        } else {
            ("ICMP", 0)
        };
        let denied = rng.random_bool(self.config.deny_ratio);
        let action = if denied {
            [Action::Deny, Action::Drop, Action::Reject][rng.random_range(0..3)]
        } else {
            Action::Allow
        };
        let sent = self.sent_bytes.sample(rng).min(1e12) as u64;
        let received = if denied {
            0
        } else {
            self.received_bytes.sample(rng).min(1e12) as u64
        };
        RawLog {
            timestamp: EventTime {
                at: now,
                style: self.config.timestamp_style,
            },
            source_ip: self.hosts[host].ip,
            destination_ip: self.destinations
                [(host * PEERS + rng.random_range(0..PEERS)) % self.destinations.len()],
            port,
            protocol,
            bytes_sent: sent,
            bytes_received: received,
            action,
        }
    }

    fn schedule_bursts(&mut self, now: DateTime<Utc>) {
        for i in 0..self.config.scenarios.len() {
            let due = match self.next_burst_at[i] {
                None => true,
                Some(at) => now >= at,
            };
            if !due {
                continue;
            }
            let scenario = self.config.scenarios[i];
            let minute = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
            let index = self.burst_count;
            let ip = scenario.attacker(index);
            self.burst_count += 1;
            let target = scenario.victim(index).unwrap_or_else(|| {
                self.destinations[self.rng.random_range(0..self.destinations.len())]
            });
            self.bursts.push(Burst {
                scenario,
                index,
                attacker: Host {
                    ip,
                    key: ip.to_string(),
                },
                target,
                minute_end: minute + TimeDelta::minutes(1),
                next: 0,
            });
            // The next burst starts at a minute boundary, `scenario_interval` later.
            let interval = self.config.scenario_interval.max(TimeDelta::minutes(1));
            self.next_burst_at[i] = Some(
                (minute + interval)
                    .duration_trunc(TimeDelta::minutes(1))
                    .unwrap_or(minute + interval),
            );
        }
    }

    fn burst_event(&mut self, i: usize, now: DateTime<Utc>, buf: &mut Vec<u8>) -> (&str, Kind) {
        let rng = &mut self.rng;
        let b = &mut self.bursts[i];
        let n = b.next;
        b.next += 1;
        // Every event of a burst stays inside the minute the burst started in.
        let at = now.min(b.minute_end - TimeDelta::microseconds(1));
        let (port, action, destination, sent, received) = match b.scenario {
            Scenario::PortScan => {
                // 150 distinct ports out of 1..=1024: a stride walk that never repeats.
                let port = 1 + ((n * 7) % 1024) as u16;
                // Most probes pass the firewall and meet closed ports; fewer than the deny-burst
                // threshold are blocked, so a scan raises exactly the port_scan alert.
                let action = if rng.random_bool(0.4) {
                    Action::Reject
                } else {
                    Action::Allow
                };
                (port, action, b.target, 60, 0)
            }
            Scenario::Flood => (443, Action::Allow, b.target, 300, 120),
            Scenario::DenyBurst => {
                let port = [22, 3389, 445][n % 3];
                let destination = self.destinations[n % PEERS];
                (port, Action::Deny, destination, 80, 0)
            }
            Scenario::HostSweep => {
                // Every address of one /24 once; most meet no listener, fewer than the
                // deny-burst threshold are blocked, so a sweep raises exactly host_sweep.
                let subnet = (b.index % 256) as u8;
                let destination = IpAddr::V4(Ipv4Addr::new(10, 77, subnet, (n % 254) as u8 + 1));
                let action = if rng.random_bool(0.25) {
                    Action::Reject
                } else {
                    Action::Allow
                };
                (445, action, destination, 60, 0)
            }
            Scenario::TargetFlood => {
                let ip = Scenario::bot(n);
                b.attacker = Host {
                    ip,
                    key: ip.to_string(),
                };
                (80, Action::Allow, b.target, 74, 0)
            }
        };
        let log = RawLog {
            timestamp: EventTime {
                at,
                style: self.config.timestamp_style,
            },
            source_ip: b.attacker.ip,
            destination_ip: destination,
            port,
            protocol: "TCP",
            bytes_sent: sent,
            bytes_received: received,
            action,
        };
        log.write_json(buf);
        (
            &self.bursts[i].attacker.key,
            Kind::Attack(self.bursts[i].scenario),
        )
    }
}

mod addresses;
mod invalid;

use addresses::{private_v4, public_v4, public_v6};
use invalid::write_invalid;

#[cfg(test)]
mod tests;
