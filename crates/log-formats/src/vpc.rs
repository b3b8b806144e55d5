//! AWS VPC Flow Logs: space-separated fields, by default the version 2 format
//! `version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start
//! end action log-status`; a custom format (fields of versions 2–5 and later, in any order) is
//! declared by the header line that flow log files delivered to S3 start with.
//!
//! Mapping: `start` → `timestamp` (else `end`); `srcaddr`/`dstaddr` → `source_ip`/
//! `destination_ip`; `dstport` → `port`; the protocol number → its IANA keyword (`6` → `TCP`);
//! `bytes` → `bytes_sent` and 0 → `bytes_received` (a flow log record covers one direction:
//! the reply traffic is a record of its own, with the addresses swapped); `ACCEPT` → `ALLOW`,
//! `REJECT` → `REJECT`. `NODATA` and `SKIPDATA` records carry no traffic and are skipped.

use crate::{ParseError, Parsed, Record, Skip, epoch_seconds, error, ip, number, protocol_name};

const NAME: &str = "aws-vpc-flow";

/// Where the fields the mapping needs are, by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    count: usize,
    srcaddr: Option<usize>,
    dstaddr: Option<usize>,
    dstport: Option<usize>,
    protocol: Option<usize>,
    bytes: Option<usize>,
    start: Option<usize>,
    end: Option<usize>,
    action: Option<usize>,
    log_status: Option<usize>,
}

impl Default for Columns {
    /// The default (version 2) format.
    fn default() -> Self {
        Self {
            count: 14,
            srcaddr: Some(3),
            dstaddr: Some(4),
            dstport: Some(6),
            protocol: Some(7),
            bytes: Some(9),
            start: Some(10),
            end: Some(11),
            action: Some(12),
            log_status: Some(13),
        }
    }
}

impl Columns {
    fn from_header(names: &[&str]) -> Self {
        let at = |name: &str| names.iter().position(|n| *n == name);
        Self {
            count: names.len(),
            srcaddr: at("srcaddr"),
            dstaddr: at("dstaddr"),
            dstport: at("dstport"),
            protocol: at("protocol"),
            bytes: at("bytes"),
            start: at("start"),
            end: at("end"),
            action: at("action"),
            log_status: at("log-status"),
        }
    }
}

/// A header line: field names only (`version account-id …`), naming at least the addresses.
fn is_header(tokens: &[&str]) -> bool {
    tokens.iter().all(|t| {
        t.starts_with(|c: char| c.is_ascii_lowercase())
            && t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }) && tokens.contains(&"srcaddr")
        && tokens.contains(&"dstaddr")
}

/// True for a header line or a default-format record.
pub(crate) fn looks_like(text: &str) -> bool {
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    is_header(&tokens)
        || tokens.len() == 14
            && tokens[0].bytes().all(|b| b.is_ascii_digit())
            && ["ACCEPT", "REJECT", "-"].contains(&tokens[12])
            && ["OK", "NODATA", "SKIPDATA"].contains(&tokens[13])
}

pub(crate) fn parse(columns: &mut Columns, line: &[u8]) -> Result<Parsed, ParseError> {
    let text = std::str::from_utf8(line).map_err(|_| error(NAME, "not UTF-8"))?;
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    if is_header(&tokens) {
        *columns = Columns::from_header(&tokens);
        return Ok(Parsed::Skip(Skip::Header));
    }
    if tokens.len() != columns.count {
        return Err(error(
            NAME,
            format!(
                "{} fields, but the format has {} (a custom format needs its header line)",
                tokens.len(),
                columns.count
            ),
        ));
    }
    let field = |at: Option<usize>, name: &str| {
        at.map(|i| tokens[i])
            .ok_or_else(|| error(NAME, format!("the format has no `{name}` field")))
    };
    match columns.log_status.map(|i| tokens[i]) {
        Some("NODATA") => return Ok(Parsed::Skip(Skip::NoData)),
        Some("SKIPDATA") => return Ok(Parsed::Skip(Skip::SkipData)),
        _ => {}
    }
    let at = match (columns.start, columns.end) {
        (Some(i), _) | (None, Some(i)) => epoch_seconds(NAME, tokens[i])?,
        (None, None) => return Err(error(NAME, "the format has neither `start` nor `end`")),
    };
    let action = match field(columns.action, "action")? {
        "ACCEPT" => log_schema::Action::Allow,
        "REJECT" => log_schema::Action::Reject,
        other => {
            return Err(error(
                NAME,
                format!("action `{other}` is not ACCEPT or REJECT"),
            ));
        }
    };
    let protocol: u8 = number(NAME, "protocol", field(columns.protocol, "protocol")?)?;
    Ok(Parsed::Record(Record {
        at,
        source: ip(NAME, "srcaddr", field(columns.srcaddr, "srcaddr")?)?,
        destination: ip(NAME, "dstaddr", field(columns.dstaddr, "dstaddr")?)?,
        port: number(NAME, "dstport", field(columns.dstport, "dstport")?)?,
        protocol: protocol_name(protocol),
        sent: number(NAME, "bytes", field(columns.bytes, "bytes")?)?,
        received: 0,
        action,
    }))
}
