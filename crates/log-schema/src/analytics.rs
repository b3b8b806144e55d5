//! Wire types of the analytics outputs: per-source window statistics (`ip_stats`), per-target
//! (destination) window statistics (`ip_target_stats`) and security alerts (`ip_alerts`).

use std::{fmt, net::IpAddr, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    error::{ErrorKind, ValidationError},
    record::micros,
};

/// Namespace of the UUIDv5 alert ids.
pub const ALERT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x1f3a_7c92_44d0_4c61_8e2b_5a9d_0c7e_6b14);

/// Traffic of one source IP in one tumbling event-time window. The payload of `ip_stats`,
/// keyed by `source_ip`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowStats {
    /// The source address.
    pub source_ip: IpAddr,
    /// Inclusive window start (UTC, aligned to the window length).
    #[serde(with = "micros")]
    pub window_start: DateTime<Utc>,
    /// Exclusive window end.
    #[serde(with = "micros")]
    pub window_end: DateTime<Utc>,
    /// Events in the window.
    pub events: i64,
    /// Sum of `bytes_sent`.
    pub bytes_sent: i64,
    /// Sum of `bytes_received`.
    pub bytes_received: i64,
    /// Distinct destination ports.
    pub distinct_ports: i64,
    /// Distinct destination addresses.
    pub distinct_destinations: i64,
    /// DENY, DROP and REJECT events.
    pub denied: i64,
    /// Earliest event time.
    #[serde(with = "micros")]
    pub first_seen: DateTime<Utc>,
    /// Latest event time.
    #[serde(with = "micros")]
    pub last_seen: DateTime<Utc>,
    /// `distinct_ports` and `distinct_destinations` are lower bounds: the window's minute
    /// reached the stream-reader's budget of tracked distinct values on its partition.
    #[serde(default)]
    pub distinct_capped: bool,
    /// The window's minute reached the cap of open windows on its partition: events of sources
    /// without a window were not counted, so the minute's top talkers may miss sources.
    #[serde(default)]
    pub sources_capped: bool,
    /// Where the source address is (the stream-reader's MaxMind databases when the window
    /// closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_geo: Option<crate::Geo>,
    /// The threat lists the source was on in the window's counted records (as validation
    /// marked them), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_threats: Vec<String>,
    /// With a sweep port configured (`READER_ALERT_HOST_SWEEP_PORT`): the distinct destination
    /// addresses the source reached on that port, which `host_sweep` then reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<Sweep>,
}

/// The distinct destination addresses a source reached on one port in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sweep {
    /// The port.
    pub port: u16,
    /// Distinct destination addresses reached on it.
    pub destinations: i64,
}

/// Traffic towards one destination IP in one tumbling event-time window: who is under attack.
/// The payload of `ip_target_stats`, keyed by `destination_ip`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetStats {
    /// The destination address.
    pub destination_ip: IpAddr,
    /// Inclusive window start (UTC, aligned to the window length).
    #[serde(with = "micros")]
    pub window_start: DateTime<Utc>,
    /// Exclusive window end.
    #[serde(with = "micros")]
    pub window_end: DateTime<Utc>,
    /// Events in the window.
    pub events: i64,
    /// Sum of `bytes_sent` (by the sources).
    pub bytes_sent: i64,
    /// Sum of `bytes_received` (by the sources).
    pub bytes_received: i64,
    /// Distinct source addresses.
    pub distinct_sources: i64,
    /// Distinct destination ports of this address that were hit (the seed's records carry no
    /// source port).
    pub distinct_ports: i64,
    /// DENY, DROP and REJECT events.
    pub denied: i64,
    /// Earliest event time.
    #[serde(with = "micros")]
    pub first_seen: DateTime<Utc>,
    /// Latest event time.
    #[serde(with = "micros")]
    pub last_seen: DateTime<Utc>,
    /// `distinct_sources` and `distinct_ports` are lower bounds: the window's minute reached
    /// the stream-reader's budget of tracked distinct values on its partition.
    #[serde(default)]
    pub distinct_capped: bool,
    /// The window's minute reached the cap of open windows on its partition: the minute's top
    /// targets may miss destinations.
    #[serde(default)]
    pub targets_capped: bool,
    /// Where the destination address is (the stream-reader's MaxMind databases, as validation
    /// looked it up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_geo: Option<crate::Geo>,
    /// The threat lists the destination was on in the window's counted records (as validation
    /// marked them), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_threats: Vec<String>,
}

/// A security rule evaluated per closed window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AlertRule {
    /// Many distinct destination ports from one source.
    PortScan,
    /// Many events from one source.
    Flood,
    /// Many denied events for one source.
    DenyBurst,
    /// Many distinct destination addresses from one source.
    HostSweep,
    /// Many distinct sources, or many events, against one destination (a distributed flood).
    TargetFlood,
    /// An address on a threat list sent (or, with destination windows, received) traffic.
    ThreatMatch,
}

impl AlertRule {
    /// Every rule.
    pub const ALL: [AlertRule; 6] = [
        AlertRule::PortScan,
        AlertRule::Flood,
        AlertRule::DenyBurst,
        AlertRule::HostSweep,
        AlertRule::TargetFlood,
        AlertRule::ThreatMatch,
    ];

    /// The threshold rules of a source's window ([`WindowStats`], [`Alert::evaluate`]).
    pub const SOURCE: [AlertRule; 4] = [
        AlertRule::PortScan,
        AlertRule::Flood,
        AlertRule::DenyBurst,
        AlertRule::HostSweep,
    ];

    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertRule::PortScan => "port_scan",
            AlertRule::Flood => "flood",
            AlertRule::DenyBurst => "deny_burst",
            AlertRule::HostSweep => "host_sweep",
            AlertRule::TargetFlood => "target_flood",
            AlertRule::ThreatMatch => "threat_match",
        }
    }

    /// The source window's figure the rule compares with its threshold (0 for a rule that is
    /// not a source's threshold rule).
    pub fn value(self, stats: &WindowStats) -> i64 {
        match self {
            AlertRule::PortScan => stats.distinct_ports,
            AlertRule::Flood => stats.events,
            AlertRule::DenyBurst => stats.denied,
            AlertRule::HostSweep => stats
                .sweep
                .map_or(stats.distinct_destinations, |s| s.destinations),
            AlertRule::TargetFlood | AlertRule::ThreatMatch => 0,
        }
    }
}

impl fmt::Display for AlertRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AlertRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        AlertRule::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown rule {s:?}"))
    }
}

/// A triggered rule. The payload of `ip_alerts`, keyed by the address it is about: `source_ip`
/// for a source's rule, `destination_ip` for a target's rule (`target_flood`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Deterministic: UUIDv5 of `rule/address/window_start`, so re-evaluation after a
    /// restart yields the same id, never a second alert.
    pub alert_id: Uuid,
    /// The rule.
    pub rule: AlertRule,
    /// The offending source (a source's rule); absent for a target's rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<IpAddr>,
    /// The destination under attack (a target's rule); absent for a source's rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_ip: Option<IpAddr>,
    /// The threat list of a `threat_match` alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    /// Window start.
    #[serde(with = "micros")]
    pub window_start: DateTime<Utc>,
    /// Window end.
    #[serde(with = "micros")]
    pub window_end: DateTime<Utc>,
    /// The measured figure.
    pub value: i64,
    /// The threshold it reached.
    pub threshold: i64,
    /// One line for people.
    pub summary: String,
}

impl Alert {
    /// The alert of a source's `rule` for `stats` if the figure reaches `threshold`.
    pub fn evaluate(rule: AlertRule, stats: &WindowStats, threshold: i64) -> Option<Alert> {
        let value = rule.value(stats);
        let what = match (rule, stats.sweep) {
            (AlertRule::PortScan, _) => "distinct destination ports".to_owned(),
            (AlertRule::Flood, _) => "events".to_owned(),
            (AlertRule::DenyBurst, _) => "denied connections".to_owned(),
            (AlertRule::HostSweep, None) => "distinct destination addresses".to_owned(),
            (AlertRule::HostSweep, Some(s)) => {
                format!("distinct destination addresses on port {}", s.port)
            }
            (AlertRule::TargetFlood | AlertRule::ThreatMatch, _) => return None,
        };
        (value >= threshold).then(|| Alert {
            alert_id: Self::id(rule, stats.source_ip, stats.window_start),
            rule,
            source_ip: Some(stats.source_ip),
            destination_ip: None,
            list: None,
            window_start: stats.window_start,
            window_end: stats.window_end,
            value,
            threshold,
            summary: format!(
                "{rule}: {} had {value} {what} in the minute from {} (threshold {threshold})",
                stats.source_ip,
                stats.window_start.format("%Y-%m-%d %H:%M UTC")
            ),
        })
    }

    /// The `target_flood` alert of a target's window: its distinct sources reach `sources`, or
    /// else its events reach `events`. The figure named is the first of the two that reached
    /// its threshold.
    pub fn evaluate_target(stats: &TargetStats, sources: i64, events: i64) -> Option<Alert> {
        let rule = AlertRule::TargetFlood;
        let (value, threshold, what) = if stats.distinct_sources >= sources {
            (stats.distinct_sources, sources, "distinct sources")
        } else if stats.events >= events {
            (stats.events, events, "events")
        } else {
            return None;
        };
        Some(Alert {
            alert_id: Self::id(rule, stats.destination_ip, stats.window_start),
            rule,
            source_ip: None,
            destination_ip: Some(stats.destination_ip),
            list: None,
            window_start: stats.window_start,
            window_end: stats.window_end,
            value,
            threshold,
            summary: format!(
                "{rule}: {} received {value} {what} in the minute from {} (threshold {threshold})",
                stats.destination_ip,
                stats.window_start.format("%Y-%m-%d %H:%M UTC")
            ),
        })
    }

    /// The `threat_match` alerts of a source's window: one per list the source was on, when
    /// its events reach `events`.
    pub fn threat_matches(stats: &WindowStats, events: i64) -> Vec<Alert> {
        let w = (stats.window_start, stats.window_end, stats.events);
        (stats.events >= events)
            .then_some(&stats.source_threats)
            .into_iter()
            .flatten()
            .map(|list| Self::threat_match(list, Some(stats.source_ip), None, w, events))
            .collect()
    }

    /// The `threat_match` alerts of a destination's window: one per list the destination was
    /// on, when its events reach `events`.
    pub fn target_threat_matches(stats: &TargetStats, events: i64) -> Vec<Alert> {
        let w = (stats.window_start, stats.window_end, stats.events);
        (stats.events >= events)
            .then_some(&stats.destination_threats)
            .into_iter()
            .flatten()
            .map(|list| Self::threat_match(list, None, Some(stats.destination_ip), w, events))
            .collect()
    }

    /// A `threat_match` alert: `list`, one of the two addresses, the window (start, end,
    /// events) and the threshold. Its id is the UUIDv5 of
    /// `threat_match/<list>/<source|destination>/<address>/<window_start>`.
    fn threat_match(
        list: &str,
        source_ip: Option<IpAddr>,
        destination_ip: Option<IpAddr>,
        (window_start, window_end, value): (DateTime<Utc>, DateTime<Utc>, i64),
        threshold: i64,
    ) -> Alert {
        let rule = AlertRule::ThreatMatch;
        let (direction, address, did) = match (source_ip, destination_ip) {
            (Some(ip), _) => ("source", ip, "sent"),
            (None, ip) => (
                "destination",
                ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
                "received",
            ),
        };
        let name = format!(
            "{rule}/{list}/{direction}/{address}/{}",
            window_start.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
        Alert {
            alert_id: Uuid::new_v5(&ALERT_ID_NAMESPACE, name.as_bytes()),
            rule,
            source_ip,
            destination_ip,
            list: Some(list.to_owned()),
            window_start,
            window_end,
            value,
            threshold,
            summary: format!(
                "{rule}: {address}, on the list {list}, {did} {value} events in the minute from {} (threshold {threshold})",
                window_start.format("%Y-%m-%d %H:%M UTC")
            ),
        }
    }

    /// The address the alert is about: its source, or the target of a target's rule.
    pub fn address(&self) -> Option<IpAddr> {
        self.source_ip.or(self.destination_ip)
    }

    /// UUIDv5 of `rule/address/window_start` (RFC 3339, microseconds); the address is the
    /// source of a source's rule, the destination of a target's rule.
    pub fn id(rule: AlertRule, address: IpAddr, window_start: DateTime<Utc>) -> Uuid {
        let name = format!(
            "{rule}/{address}/{}",
            window_start.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
        Uuid::new_v5(&ALERT_ID_NAMESPACE, name.as_bytes())
    }
}

macro_rules! json_codec {
    ($t:ty, $what:literal) => {
        json_codec!($t, $what, |_: &$t| Ok::<(), &str>(()));
    };
    ($t:ty, $what:literal, $check:expr) => {
        impl $t {
            /// Serialises to the topic payload.
            pub fn to_json(&self) -> Vec<u8> {
                serde_json::to_vec(self).unwrap_or_default()
            }

            /// Decodes a topic payload; never panics.
            pub fn from_json(payload: &[u8]) -> Result<Self, ValidationError> {
                let decoded: Self = serde_json::from_slice(payload).map_err(|e| {
                    let kind = if e.is_data() {
                        ErrorKind::InvalidType
                    } else {
                        ErrorKind::MalformedJson
                    };
                    ValidationError::new(kind, None, format!(concat!("not ", $what, ": {}"), e))
                })?;
                ($check)(&decoded).map_err(|reason| {
                    ValidationError::new(
                        ErrorKind::InvalidType,
                        None,
                        format!(concat!("not ", $what, ": {}"), reason),
                    )
                })?;
                Ok(decoded)
            }
        }
    };
}

json_codec!(WindowStats, "window statistics");
json_codec!(TargetStats, "target window statistics");
json_codec!(Alert, "an alert", |alert: &Alert| {
    if alert.source_ip.is_some() == alert.destination_ip.is_some() {
        Err("an alert names exactly one of source_ip and destination_ip")
    } else if alert.list.is_some() != (alert.rule == AlertRule::ThreatMatch) {
        Err("a threat_match alert, and only one, names its list")
    } else {
        Ok(())
    }
});
