//! The raw record (what producers write to `ip_logs`) and the validated, enriched record (what
//! the stream-reader writes to `ip_logs_validated`).

use std::{fmt, net::IpAddr, str::FromStr};

use chrono::{DateTime, Datelike, NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::{
    enrich::IpClass,
    error::{ErrorKind, ValidationError},
};

/// The eight fields every raw record carries, in the seed's order.
pub const RAW_FIELDS: [&str; 8] = [
    "timestamp",
    "source_ip",
    "destination_ip",
    "port",
    "protocol",
    "bytes_sent",
    "bytes_received",
    "action",
];

/// The firewall verdict of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    /// The connection was allowed.
    Allow,
    /// The connection was denied (with a response).
    Deny,
    /// The packets were silently dropped.
    Drop,
    /// The connection was rejected (with a reset or ICMP unreachable).
    Reject,
}

impl Action {
    /// The normalised upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Drop => "DROP",
            Action::Reject => "REJECT",
        }
    }

    /// DENY, DROP and REJECT all count as "denied" for the security rules.
    pub fn is_denied(self) -> bool {
        !matches!(self, Action::Allow)
    }
}

impl FromStr for Action {
    type Err = ();

    /// Case-insensitive.
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.eq_ignore_ascii_case("ALLOW") {
            Ok(Action::Allow)
        } else if s.eq_ignore_ascii_case("DENY") {
            Ok(Action::Deny)
        } else if s.eq_ignore_ascii_case("DROP") {
            Ok(Action::Drop)
        } else if s.eq_ignore_ascii_case("REJECT") {
            Ok(Action::Reject)
        } else {
            Err(())
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a raw record writes its `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampStyle {
    /// The seed's naive ISO form in UTC, microseconds: `2025-12-28T10:30:45.123456`.
    #[default]
    Seed,
    /// RFC 3339 with a `Z` offset, microseconds: `2025-12-28T10:30:45.123456Z`.
    Rfc3339,
}

/// An event time together with the style it is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTime {
    /// The instant.
    pub at: DateTime<Utc>,
    /// How it is written.
    pub style: TimestampStyle,
}

impl Serialize for EventTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.style {
            TimestampStyle::Seed => {
                s.collect_str(&self.at.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f"))
            }
            TimestampStyle::Rfc3339 => {
                s.collect_str(&self.at.to_rfc3339_opts(SecondsFormat::Micros, true))
            }
        }
    }
}

/// A raw access-log record in the seed's JSON format, as producers write it. Serialising it
/// yields exactly the eight fields, in the seed's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RawLog<'a> {
    /// When the connection was logged.
    pub timestamp: EventTime,
    /// Who opened it.
    pub source_ip: IpAddr,
    /// Who was contacted.
    pub destination_ip: IpAddr,
    /// Destination port (0 for ICMP).
    pub port: u16,
    /// Transport protocol, e.g. `TCP`.
    pub protocol: &'a str,
    /// Bytes from source to destination.
    pub bytes_sent: u64,
    /// Bytes from destination to source.
    pub bytes_received: u64,
    /// The firewall verdict.
    pub action: Action,
}

impl RawLog<'_> {
    /// Appends the record's JSON to `buf` (no trailing newline).
    pub fn write_json(&self, buf: &mut Vec<u8>) {
        // Serialising plain fields into a Vec cannot fail.
        let _ = serde_json::to_writer(buf, self);
    }
}

/// A record that passed validation: normalised fields, a deterministic `event_id`, and the
/// enrichment. This is the payload of `ip_logs_validated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatedRecord {
    /// Deterministic id: the record's own UUID `event_id`, else UUIDv5 of `topic/partition/offset`.
    pub event_id: Uuid,
    /// Event time, UTC, microsecond precision.
    #[serde(with = "micros")]
    pub timestamp: DateTime<Utc>,
    /// Source address (canonical text form when serialised).
    pub source_ip: IpAddr,
    /// Destination address.
    pub destination_ip: IpAddr,
    /// Destination port, 0 for ICMP.
    pub port: u16,
    /// Upper-case protocol.
    pub protocol: String,
    /// Bytes from source to destination.
    pub bytes_sent: i64,
    /// Bytes from destination to source.
    pub bytes_received: i64,
    /// Normalised verdict.
    pub action: Action,
    /// `bytes_sent + bytes_received`, saturating at `i64::MAX`.
    pub total_bytes: i64,
    /// Class of the source address.
    pub source_ip_class: IpClass,
    /// Class of the destination address.
    pub destination_ip_class: IpClass,
    /// Well-known service of protocol + port, if any.
    pub service: Option<String>,
    /// When the stream-reader processed it.
    #[serde(with = "micros")]
    pub ingested_at: DateTime<Utc>,
    /// Where the source address is (country, city, AS), from the stream-reader's MaxMind
    /// databases; absent without databases or data for the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_geo: Option<Geo>,
    /// Where the destination address is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_geo: Option<Geo>,
    /// The stream-reader's threat lists (`READER_THREAT_LISTS`) the source address is on, by
    /// name; absent when on none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_threats: Vec<String>,
    /// The threat lists the destination address is on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_threats: Vec<String>,
    /// Partition and offset of the raw record it came from, or the file line it carries
    /// (absent in records that other producers wrote to the validated topic). The analytics
    /// stage uses it to count each raw record (each file line) once even when it was emitted
    /// or sent twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceOffset>,
}

/// Where an address is, as the user's MaxMind databases (GeoLite2/GeoIP2 City or Country,
/// ASN) say; each part absent when the database or its data is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Geo {
    /// ISO 3166-1 alpha-2 country code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// City name (English).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Autonomous system number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// Autonomous system organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_org: Option<String>,
}

impl Geo {
    /// `None` when nothing is known.
    pub fn non_empty(self) -> Option<Self> {
        (self != Self::default()).then_some(self)
    }
}

/// Coordinates of a raw record inside its topic, or of the file line it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceOffset {
    /// Partition of the raw topic (0 for a file line).
    pub partition: i32,
    /// Offset in that partition, or the line's byte offset in its file.
    pub offset: i64,
    /// The fingerprint of the file the line was read from ([`crate::file_line`]); absent for
    /// a record identified by its raw coordinates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<crate::FileFingerprint>,
}

impl ValidatedRecord {
    /// Serialises to the JSON payload of `ip_logs_validated`.
    pub fn to_json(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(512);
        self.write_json(&mut buf);
        buf
    }

    /// Appends the JSON payload to `buf`.
    pub fn write_json(&self, buf: &mut Vec<u8>) {
        // Every field serialises infallibly into a Vec.
        let _ = serde_json::to_writer(buf, self);
    }

    /// Decodes a payload of `ip_logs_validated`. A payload that is not such a record is a
    /// `malformed_json` (syntax) or `invalid_type` (shape) error; never a panic.
    pub fn from_json(payload: &[u8]) -> Result<Self, ValidationError> {
        serde_json::from_slice(payload).map_err(|e| {
            let kind = if e.is_data() {
                ErrorKind::InvalidType
            } else {
                ErrorKind::MalformedJson
            };
            ValidationError::new(kind, None, format!("not a validated record: {e}"))
        })
    }
}

/// RFC 3339 with microseconds and `Z`, the one timestamp format of our topics.
pub mod micros {
    use super::*;

    /// Serialises as `2025-12-28T10:30:45.123456Z`.
    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    /// Parses any RFC 3339 timestamp whose instant [`serialize`] can write back (UTC year
    /// 0000..=9999).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let at = DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)?;
        super::writable(at).ok_or_else(|| {
            serde::de::Error::custom(format!("{s:?} is outside the years 0000-9999 in UTC"))
        })
    }
}

/// Parses the two accepted timestamp forms: RFC 3339 (any offset) or the seed's naive ISO
/// form `YYYY-MM-DDTHH:MM:SS[.fraction]`, taken as UTC.
///
/// The instant must lie in the years 0000..=9999 UTC, the range our topics can write (RFC 3339
/// has four-digit years): a signed naive year such as `-0001-…`, or an offset that crosses
/// year 0 (`0000-01-01T00:00:00+01:00`), is not a timestamp of the contract.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    // The seed's format has no offset: try it first when nothing after the seconds looks like
    // one (parsing it is the hot path; a failed RFC 3339 attempt first doubled its cost).
    let has_offset = s
        .as_bytes()
        .get(19..)
        .is_some_and(|tail| tail.iter().any(|b| matches!(b, b'Z' | b'z' | b'+' | b'-')));
    let naive = || {
        seed_timestamp(s)
            .or_else(|| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok())
            .map(|t| t.and_utc())
    };
    let rfc3339 = || {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    let at = if has_offset {
        rfc3339().or_else(naive)?
    } else {
        naive().or_else(rfc3339)?
    };
    writable(at)
}

/// Fast path for exactly `YYYY-MM-DDTHH:MM:SS` with an optional `.` and 1–9 fraction digits,
/// seconds 00–59; `None` for anything else (chrono's parser then decides). Same result as
/// `%Y-%m-%dT%H:%M:%S%.f` on the strings it accepts.
pub(crate) fn seed_timestamp(s: &str) -> Option<NaiveDateTime> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let nanos = match &b[19..] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            let n = num(20..b.len())?;
            n * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    let second = num(17..19)?;
    if second > 59 {
        return None;
    }
    chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?.and_hms_nano_opt(
        num(11..13)?,
        num(14..16)?,
        second,
        nanos,
    )
}

/// `at` if [`micros::serialize`] writes it as RFC 3339 (four-digit UTC year), else `None`.
fn writable(at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (0..=9999).contains(&at.year()).then_some(at)
}
