//! Suricata `eve.json`: one JSON event per line; `flow` and `netflow` events are records,
//! every other `event_type` (alert, dns, http, stats, …) is skipped.
//!
//! Mapping: `flow.start` (`netflow.start`; else the event's `timestamp`) → `timestamp`;
//! `src_ip`/`dest_ip` → `source_ip`/`destination_ip`; `dest_port` → `port` (0 when absent,
//! e.g. ICMP); `proto` → `protocol` (a number, or digits as text, becomes its IANA keyword); `flow` events are
//! bidirectional: `flow.bytes_toserver` → `bytes_sent`, `flow.bytes_toclient` →
//! `bytes_received`; `netflow` events are one direction: `netflow.bytes` → `bytes_sent`, 0 →
//! `bytes_received`. `flow.action` (IPS mode) `drop` → `DROP`, `reject` → `REJECT`, anything
//! else or absent → `ALLOW`.

use chrono::{DateTime, Utc};
use log_schema::Action;
use serde_json::Value;

use crate::{ParseError, Parsed, Record, Skip, error, ip, protocol_name};

const NAME: &str = "suricata-eve";

/// Suricata's timestamps: `2017-12-18T14:05:56.021318+0100` (no colon in the offset), or
/// RFC 3339.
fn time(text: &str) -> Result<DateTime<Utc>, ParseError> {
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .map(|t| t.to_utc())
        .map_err(|_| error(NAME, format!("`{text}` is not a Suricata timestamp")))
}

pub(crate) fn parse(line: &[u8]) -> Result<Parsed, ParseError> {
    let v: Value =
        serde_json::from_slice(line).map_err(|e| error(NAME, format!("bad JSON: {e}")))?;
    let kind = v
        .get("event_type")
        .and_then(Value::as_str)
        .ok_or_else(|| error(NAME, "no `event_type`"))?;
    let (section, bidirectional) = match kind {
        "flow" => ("flow", true),
        "netflow" => ("netflow", false),
        _ => return Ok(Parsed::Skip(Skip::NotAFlow)),
    };
    let body = v
        .get(section)
        .ok_or_else(|| error(NAME, format!("a {kind} event without `{section}`")))?;
    let string = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| error(NAME, format!("no string `{name}`")))
    };
    let count = |name: &str| match body.get(name) {
        None | Some(Value::Null) => Ok(0),
        Some(n) => n
            .as_u64()
            .ok_or_else(|| error(NAME, format!("`{section}.{name}` is not a count"))),
    };
    let start = body
        .get("start")
        .and_then(Value::as_str)
        .map_or_else(|| string("timestamp"), Ok)?;
    let port = match v.get("dest_port") {
        None | Some(Value::Null) => 0,
        Some(p) => p
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| error(NAME, "`dest_port` is not a port"))?,
    };
    let protocol = match v.get("proto") {
        // Netflow events may write the number as text (`"006"`).
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
            .parse::<u8>()
            .map(protocol_name)
            .map_err(|_| error(NAME, format!("`proto` {s:?} is not a protocol number")))?,
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .map(protocol_name)
            .ok_or_else(|| error(NAME, "`proto` is not a protocol number"))?,
        _ => return Err(error(NAME, "no `proto`")),
    };
    let (sent, received) = if bidirectional {
        (count("bytes_toserver")?, count("bytes_toclient")?)
    } else {
        (count("bytes")?, 0)
    };
    let action = match body.get("action").and_then(Value::as_str) {
        Some("drop") => Action::Drop,
        Some("reject") => Action::Reject,
        _ => Action::Allow,
    };
    Ok(Parsed::Record(Record {
        at: time(start)?,
        source: ip(NAME, "src_ip", string("src_ip")?)?,
        destination: ip(NAME, "dest_ip", string("dest_ip")?)?,
        port,
        protocol,
        sent,
        received,
        action,
    }))
}
