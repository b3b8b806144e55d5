//! Wire types of the analytics outputs: per-IP window statistics (`ip_stats`) and security
//! alerts (`ip_alerts`).

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
}

impl AlertRule {
    /// Every rule.
    pub const ALL: [AlertRule; 4] = [
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
        }
    }

    /// The window figure the rule compares with its threshold.
    pub fn value(self, stats: &WindowStats) -> i64 {
        match self {
            AlertRule::PortScan => stats.distinct_ports,
            AlertRule::Flood => stats.events,
            AlertRule::DenyBurst => stats.denied,
            AlertRule::HostSweep => stats.distinct_destinations,
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

/// A triggered rule. The payload of `ip_alerts`, keyed by `source_ip`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Deterministic: UUIDv5 of `rule/source_ip/window_start`, so re-evaluation after a
    /// restart yields the same id, never a second alert.
    pub alert_id: Uuid,
    /// The rule.
    pub rule: AlertRule,
    /// The offending source.
    pub source_ip: IpAddr,
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
    /// The alert of `rule` for `stats` if the figure reaches `threshold`.
    pub fn evaluate(rule: AlertRule, stats: &WindowStats, threshold: i64) -> Option<Alert> {
        let value = rule.value(stats);
        (value >= threshold).then(|| {
            let what = match rule {
                AlertRule::PortScan => "distinct destination ports",
                AlertRule::Flood => "events",
                AlertRule::DenyBurst => "denied connections",
                AlertRule::HostSweep => "distinct destination addresses",
            };
            Alert {
                alert_id: Self::id(rule, stats.source_ip, stats.window_start),
                rule,
                source_ip: stats.source_ip,
                window_start: stats.window_start,
                window_end: stats.window_end,
                value,
                threshold,
                summary: format!(
                    "{rule}: {} had {value} {what} in the minute from {} (threshold {threshold})",
                    stats.source_ip,
                    stats.window_start.format("%Y-%m-%d %H:%M UTC")
                ),
            }
        })
    }

    /// UUIDv5 of `rule/source_ip/window_start` (RFC 3339, microseconds).
    pub fn id(rule: AlertRule, source_ip: IpAddr, window_start: DateTime<Utc>) -> Uuid {
        let name = format!(
            "{rule}/{source_ip}/{}",
            window_start.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
        Uuid::new_v5(&ALERT_ID_NAMESPACE, name.as_bytes())
    }
}

macro_rules! json_codec {
    ($t:ty, $what:literal) => {
        impl $t {
            /// Serialises to the topic payload.
            pub fn to_json(&self) -> Vec<u8> {
                serde_json::to_vec(self).unwrap_or_default()
            }

            /// Decodes a topic payload; never panics.
            pub fn from_json(payload: &[u8]) -> Result<Self, ValidationError> {
                serde_json::from_slice(payload).map_err(|e| {
                    let kind = if e.is_data() {
                        ErrorKind::InvalidType
                    } else {
                        ErrorKind::MalformedJson
                    };
                    ValidationError::new(kind, None, format!(concat!("not ", $what, ": {}"), e))
                })
            }
        }
    };
}

json_codec!(WindowStats, "window statistics");
json_codec!(Alert, "an alert");
