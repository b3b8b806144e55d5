//! Parsers of the firewall and flow logs people already have into the seed's access-log record
//! ([`log_schema::RawLog`]), one line at a time, for `producer --input FILE --format …`:
//!
//! * [`Format::AwsVpcFlow`]: AWS VPC Flow Logs, the default version 2 format and custom
//!   formats (versions 2–5 fields) declared by the file's header line ([`vpc`]);
//! * [`Format::ZeekConn`]: Zeek `conn.log`, TSV with its `#fields` header, or JSON ([`zeek`]);
//! * [`Format::SuricataEve`]: Suricata `eve.json` `flow` and `netflow` events ([`suricata`]);
//! * [`Format::Netfilter`]: iptables / nftables kernel log lines as syslog or journald write
//!   them, the log prefix deciding ALLOW/DENY ([`netfilter`]).
//!
//! A parser is a pure function of the line and of what earlier lines declared (headers); it
//! never panics, whatever the bytes (property-tested, fuzzed). A line is a record, a line to
//! skip (headers, comments, `NODATA`, events that are not flows) or a line that cannot be
//! parsed, which the producer sends as it is so that the stream-reader dead-letters it with
//! its bytes: nothing is dropped silently.

pub mod netfilter;
pub mod suricata;
pub mod vpc;
pub mod zeek;

use std::{net::IpAddr, str::FromStr};

use chrono::{DateTime, Utc};
use log_schema::{Action, EventTime, RawLog, TimestampStyle};

/// An input format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The seed's JSON records, sent byte for byte.
    SeedJson,
    /// AWS VPC Flow Logs (space-separated; default v2 or a header-declared custom format).
    AwsVpcFlow,
    /// Zeek `conn.log` (TSV with header, or JSON lines).
    ZeekConn,
    /// Suricata `eve.json` (`flow` and `netflow` events).
    SuricataEve,
    /// iptables / nftables kernel log lines (`SRC= DST= PROTO= DPT= LEN=`).
    Netfilter,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "seed-json" => Self::SeedJson,
            "aws-vpc-flow" => Self::AwsVpcFlow,
            "zeek-conn" => Self::ZeekConn,
            "suricata-eve" => Self::SuricataEve,
            "iptables" | "nftables" => Self::Netfilter,
            other => {
                return Err(format!(
                    "unknown format `{other}` (seed-json, aws-vpc-flow, zeek-conn, \
                     suricata-eve, iptables, nftables)"
                ));
            }
        })
    }
}

/// Why a line carries no record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A header or comment line (it may declare the fields of the lines that follow).
    Header,
    /// An AWS VPC `NODATA` record: no traffic in the aggregation interval.
    NoData,
    /// An AWS VPC `SKIPDATA` record: records were skipped in the aggregation interval.
    SkipData,
    /// A Suricata event that is not a flow (alert, dns, stats, …).
    NotAFlow,
    /// An empty line.
    Empty,
}

impl Skip {
    /// Stable name, for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Header => "header",
            Skip::NoData => "nodata",
            Skip::SkipData => "skipdata",
            Skip::NotAFlow => "not_a_flow",
            Skip::Empty => "empty",
        }
    }
}

/// A line that cannot be parsed, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{format}: {reason}")]
pub struct ParseError {
    /// The format's name.
    pub format: &'static str,
    /// What is wrong.
    pub reason: String,
}

/// What a line was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A record: its seed JSON is in the output buffer.
    Record,
    /// No record on this line.
    Skipped(Skip),
    /// Not parseable: send the original bytes, for the stream-reader to dead-letter.
    Unparsed(ParseError),
}

/// Options of the parsers.
#[derive(Debug, Clone)]
pub struct Options {
    /// Netfilter log prefixes matching this are DENY, all others ALLOW.
    pub deny_prefix: regex::Regex,
    /// "Now", for the year of BSD syslog timestamps (which have none).
    pub now: DateTime<Utc>,
}

/// The default `deny_prefix`: `(?i)drop|deny|reject|block`.
pub const DEFAULT_DENY_PREFIX: &str = "(?i)drop|deny|reject|block";

impl Default for Options {
    fn default() -> Self {
        Self {
            deny_prefix: regex::Regex::new(DEFAULT_DENY_PREFIX).expect("valid pattern"),
            now: Utc::now(),
        }
    }
}

/// A parser of one input (it keeps what header lines declared).
#[derive(Debug, Clone)]
pub struct Parser {
    state: State,
    options: Options,
}

#[derive(Debug, Clone)]
enum State {
    SeedJson,
    Vpc(vpc::Columns),
    Zeek(zeek::Header),
    Suricata,
    Netfilter,
}

impl Parser {
    /// A parser of `format`.
    pub fn new(format: Format, options: Options) -> Self {
        let state = match format {
            Format::SeedJson => State::SeedJson,
            Format::AwsVpcFlow => State::Vpc(vpc::Columns::default()),
            Format::ZeekConn => State::Zeek(zeek::Header::default()),
            Format::SuricataEve => State::Suricata,
            Format::Netfilter => State::Netfilter,
        };
        Self { state, options }
    }

    /// Parses one line (without its line break); a record's seed JSON replaces `out`.
    pub fn parse(&mut self, line: &[u8], out: &mut Vec<u8>) -> Outcome {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Outcome::Skipped(Skip::Empty);
        }
        let parsed = match &mut self.state {
            State::SeedJson => {
                out.clear();
                out.extend_from_slice(line);
                return Outcome::Record;
            }
            State::Vpc(columns) => vpc::parse(columns, line),
            State::Zeek(header) => zeek::parse(header, line),
            State::Suricata => suricata::parse(line),
            State::Netfilter => netfilter::parse(line, &self.options),
        };
        match parsed {
            Ok(Parsed::Record(r)) => {
                out.clear();
                r.write_json(out);
                Outcome::Record
            }
            Ok(Parsed::Skip(skip)) => Outcome::Skipped(skip),
            Err(error) => Outcome::Unparsed(error),
        }
    }
}

/// The format of an input, from its first line, where that is unambiguous.
pub fn detect(first_line: &[u8]) -> Option<Format> {
    let text = std::str::from_utf8(first_line).ok()?.trim();
    if text.starts_with("#separator") || text.starts_with("#fields") {
        return Some(Format::ZeekConn);
    }
    if text.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let has = |k: &str| v.get(k).is_some();
        return if has("event_type") && has("src_ip") || has("event_type") && has("flow_id") {
            Some(Format::SuricataEve)
        } else if has("id.orig_h") {
            Some(Format::ZeekConn)
        } else if has("source_ip") && has("destination_ip") {
            Some(Format::SeedJson)
        } else {
            None
        };
    }
    if text.contains(" SRC=") && text.contains(" DST=") && text.contains("PROTO=") {
        return Some(Format::Netfilter);
    }
    if vpc::looks_like(text) {
        return Some(Format::AwsVpcFlow);
    }
    None
}

/// What a format module makes of a line.
#[derive(Debug)]
enum Parsed {
    Record(Record),
    Skip(Skip),
}

/// The seed fields of one parsed line (the protocol owned: it may be a number's name).
#[derive(Debug)]
struct Record {
    at: DateTime<Utc>,
    source: IpAddr,
    destination: IpAddr,
    port: u16,
    protocol: String,
    sent: u64,
    received: u64,
    action: Action,
}

impl Record {
    fn write_json(&self, out: &mut Vec<u8>) {
        RawLog {
            timestamp: EventTime {
                at: self.at,
                style: TimestampStyle::Rfc3339,
            },
            source_ip: self.source,
            destination_ip: self.destination,
            port: self.port,
            protocol: &self.protocol,
            bytes_sent: self.sent,
            bytes_received: self.received,
            action: self.action,
        }
        .write_json(out);
    }
}

/// The IANA keyword of an IP protocol number where the seed's contract has a name for it
/// (`[A-Za-z0-9-]{1,16}`), else the number.
fn protocol_name(number: u8) -> String {
    match number {
        1 => "ICMP".into(),
        2 => "IGMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        47 => "GRE".into(),
        50 => "ESP".into(),
        51 => "AH".into(),
        58 => "IPv6-ICMP".into(),
        132 => "SCTP".into(),
        n => n.to_string(),
    }
}

fn error(format: &'static str, reason: impl Into<String>) -> ParseError {
    ParseError {
        format,
        reason: reason.into(),
    }
}

/// Seconds since the epoch with an optional fraction (`1418530010`, `1320279566.452687`).
fn epoch_seconds(format: &'static str, text: &str) -> Result<DateTime<Utc>, ParseError> {
    let bad = || {
        error(
            format,
            format!("`{text}` is not a time in seconds since the epoch"),
        )
    };
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let nanos: u32 = format!("{frac:0<9}").parse().map_err(|_| bad())?;
    DateTime::from_timestamp(secs, nanos).ok_or_else(bad)
}

fn ip(format: &'static str, field: &str, text: &str) -> Result<IpAddr, ParseError> {
    text.parse()
        .map_err(|_| error(format, format!("{field} `{text}` is not an IP address")))
}

fn number<T: FromStr>(format: &'static str, field: &str, text: &str) -> Result<T, ParseError> {
    text.parse()
        .map_err(|_| error(format, format!("{field} `{text}` is not a number in range")))
}

#[cfg(test)]
mod tests;
