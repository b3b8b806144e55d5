//! Zeek `conn.log`: TSV with its header (`#separator`, `#unset_field`, `#fields`, …; the
//! `#fields` line declares the columns of the records that follow), or JSON lines.
//!
//! Mapping: `ts` → `timestamp`; `id.orig_h`/`id.resp_h` → `source_ip`/`destination_ip`;
//! `id.resp_p` → `port`; `proto` (`tcp`, `udp`, `icmp`) upper-cased → `protocol`;
//! `orig_bytes` → `bytes_sent`, `resp_bytes` → `bytes_received` (payload bytes; unset → 0);
//! `conn_state` → `action`: `REJ` (the responder refused the attempt) → `REJECT`; `S0`,
//! `RSTOS0`, `SH` (an attempt nobody answered) → `DROP`; every other state (traffic flowed in
//! both directions: `SF`, `S1`, `S2`, `S3`, `RSTO`, `RSTR`, `RSTRH`, `SHR`, `OTH`) or an unset
//! one → `ALLOW`.

use log_schema::Action;
use serde_json::Value;

use crate::{ParseError, Parsed, Record, Skip, epoch_seconds, error, ip, number};

const NAME: &str = "zeek-conn";

/// What the TSV header declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    separator: u8,
    unset: String,
    fields: Option<Vec<String>>,
}

impl Default for Header {
    fn default() -> Self {
        Self {
            separator: b'\t',
            unset: "-".into(),
            fields: None,
        }
    }
}

/// `conn_state` → the verdict (see the module documentation).
pub fn action_of(conn_state: &str) -> Action {
    match conn_state {
        "REJ" => Action::Reject,
        "S0" | "RSTOS0" | "SH" => Action::Drop,
        _ => Action::Allow,
    }
}

/// `\x09` → tab: the escaped byte of a `#separator` line.
fn unescape(text: &str) -> Option<u8> {
    match text.strip_prefix("\\x") {
        Some(hex) if hex.len() == 2 => u8::from_str_radix(hex, 16).ok(),
        _ if text.len() == 1 => Some(text.as_bytes()[0]),
        _ => None,
    }
}

pub(crate) fn parse(header: &mut Header, line: &[u8]) -> Result<Parsed, ParseError> {
    let text = std::str::from_utf8(line).map_err(|_| error(NAME, "not UTF-8"))?;
    if text.starts_with('{') {
        return json(text);
    }
    if let Some(directive) = text.strip_prefix('#') {
        if let Some(sep) = directive.strip_prefix("separator ") {
            header.separator = unescape(sep.trim())
                .ok_or_else(|| error(NAME, format!("bad #separator {sep:?}")))?;
        } else if let Some(unset) = directive.strip_prefix("unset_field") {
            header.unset = unset
                .trim_start_matches(header.separator as char)
                .to_owned();
        } else if let Some(fields) = directive.strip_prefix("fields") {
            header.fields = Some(
                fields
                    .split(header.separator as char)
                    .filter(|f| !f.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
        }
        return Ok(Parsed::Skip(Skip::Header));
    }
    let fields = header
        .fields
        .as_ref()
        .ok_or_else(|| error(NAME, "a TSV record before the #fields header line"))?;
    let values: Vec<&str> = text.split(header.separator as char).collect();
    if values.len() != fields.len() {
        return Err(error(
            NAME,
            format!(
                "{} values, but #fields declares {}",
                values.len(),
                fields.len()
            ),
        ));
    }
    let get = |name: &str| {
        fields
            .iter()
            .position(|f| f == name)
            .map(|i| values[i])
            .filter(|v| *v != header.unset)
    };
    let need = |name: &str| get(name).ok_or_else(|| error(NAME, format!("no `{name}`")));
    let bytes = |name: &str| get(name).map_or(Ok(0), |v| number(NAME, name, v));
    Ok(Parsed::Record(Record {
        at: epoch_seconds(NAME, need("ts")?)?,
        source: ip(NAME, "id.orig_h", need("id.orig_h")?)?,
        destination: ip(NAME, "id.resp_h", need("id.resp_h")?)?,
        port: number(NAME, "id.resp_p", need("id.resp_p")?)?,
        protocol: need("proto")?.to_ascii_uppercase(),
        sent: bytes("orig_bytes")?,
        received: bytes("resp_bytes")?,
        action: action_of(get("conn_state").unwrap_or("")),
    }))
}

fn json(text: &str) -> Result<Parsed, ParseError> {
    let v: Value = serde_json::from_str(text).map_err(|e| error(NAME, format!("bad JSON: {e}")))?;
    let string = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| error(NAME, format!("no string `{name}`")))
    };
    let unsigned = |name: &str| match v.get(name) {
        None | Some(Value::Null) => Ok(0),
        Some(n) => n
            .as_u64()
            .ok_or_else(|| error(NAME, format!("`{name}` is not a count"))),
    };
    let at = match v.get("ts") {
        Some(Value::Number(n)) => epoch_seconds(NAME, &n.to_string())?,
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|_| error(NAME, format!("ts `{s}` is not ISO 8601")))?
            .to_utc(),
        _ => return Err(error(NAME, "no `ts`")),
    };
    let port = v
        .get("id.resp_p")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| error(NAME, "`id.resp_p` is not a port"))?;
    Ok(Parsed::Record(Record {
        at,
        source: ip(NAME, "id.orig_h", string("id.orig_h")?)?,
        destination: ip(NAME, "id.resp_h", string("id.resp_h")?)?,
        port,
        protocol: string("proto")?.to_ascii_uppercase(),
        sent: unsigned("orig_bytes")?,
        received: unsigned("resp_bytes")?,
        action: action_of(v.get("conn_state").and_then(Value::as_str).unwrap_or("")),
    }))
}
