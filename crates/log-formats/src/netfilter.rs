//! iptables and nftables kernel log lines (the `LOG` target, `log prefix "…"`), as syslog or
//! journald write them: `<time> <host> kernel: [<uptime>] <prefix>IN=eth0 OUT= … SRC=…
//! DST=… LEN=… PROTO=TCP SPT=… DPT=22 …`.
//!
//! Mapping: the line's time → `timestamp` (ISO 8601 as journald's `short-iso` output or
//! RFC 5424 syslog write it; or BSD syslog's `Mmm dd HH:MM:SS`, which has no year and no zone:
//! read as UTC, in the year that puts it at most a day ahead of now); `SRC`/`DST` →
//! `source_ip`/`destination_ip`; `DPT` → `port` (0 without one, e.g. ICMP); `PROTO` →
//! `protocol` (a number becomes its IANA keyword); `LEN` (the IP packet's length: one line is
//! one packet) → `bytes_sent`, 0 → `bytes_received`; the log prefix → `DENY` when it matches
//! the deny pattern (`--netfilter-deny-pattern`, default `(?i)drop|deny|reject|block`), else
//! `ALLOW`.

use chrono::{DateTime, Datelike as _, NaiveDateTime, TimeDelta, Utc};
use log_schema::Action;

use crate::{Options, ParseError, Parsed, Record, error, ip, number, protocol_name};

const NAME: &str = "netfilter";

/// The time a line starts with, and the rest of the line.
fn time(text: &str, now: DateTime<Utc>) -> Result<(DateTime<Utc>, &str), ParseError> {
    let (first, rest) = text.split_once(' ').unwrap_or((text, ""));
    if first.starts_with(|c: char| c.is_ascii_digit()) {
        let at = DateTime::parse_from_rfc3339(first)
            .or_else(|_| DateTime::parse_from_str(first, "%Y-%m-%dT%H:%M:%S%.f%z"))
            .map_err(|_| error(NAME, format!("`{first}` is not an ISO 8601 time")))?;
        return Ok((at.to_utc(), rest));
    }
    // BSD syslog: `Dec  3 10:00:00` (day space-padded) or `Dec 03 10:00:00`.
    let mut parts = text.split_ascii_whitespace();
    let (Some(month), Some(day), Some(clock)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(error(NAME, "no time at the start of the line"));
    };
    let rest = text.find(clock).map_or("", |i| &text[i + clock.len()..]);
    let at_year = |year: i32| {
        NaiveDateTime::parse_from_str(
            &format!("{year} {month} {day} {clock}"),
            "%Y %b %d %H:%M:%S",
        )
        .map(|t| t.and_utc())
    };
    let at = at_year(now.year()).map_err(|_| {
        error(
            NAME,
            format!("`{month} {day} {clock}` is not a syslog time"),
        )
    })?;
    if at > now + TimeDelta::days(1) {
        let last_year =
            at_year(now.year() - 1).map_err(|_| error(NAME, "no such day last year"))?;
        return Ok((last_year, rest));
    }
    Ok((at, rest))
}

pub(crate) fn parse(line: &[u8], options: &Options) -> Result<Parsed, ParseError> {
    let text = std::str::from_utf8(line).map_err(|_| error(NAME, "not UTF-8"))?;
    // A syslog priority (`<6>`) may come first, as in lines forwarded over the network.
    let text = text.trim_start();
    let text = match text.strip_prefix('<').and_then(|t| t.split_once('>')) {
        Some((pri, rest)) if !pri.is_empty() && pri.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => text,
    };
    let (at, rest) = time(text, options.now)?;
    let fields_at = rest
        .find("IN=")
        .ok_or_else(|| error(NAME, "no `IN=`: not a netfilter log line"))?;
    let head = &rest[..fields_at];
    // The prefix: after `kernel:` and the optional `[uptime]`, up to `IN=` (a bracketed
    // prefix such as `[WAN_IN-default-D]` is the prefix itself).
    let prefix = head
        .split_once("kernel:")
        .map_or(head, |(_, p)| p)
        .trim_start();
    let prefix = match prefix.strip_prefix('[').and_then(|p| p.split_once(']')) {
        Some((uptime, after))
            if uptime
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.' || b == b' ') =>
        {
            after
        }
        _ => prefix,
    }
    .trim();
    let mut src = None;
    let mut dst = None;
    let mut proto = None;
    let (mut dpt, mut len) = (None, None);
    for token in rest[fields_at..].split_ascii_whitespace() {
        let Some((key, value)) = token.split_once('=') else {
            continue;
        };
        // The first of each: an ICMP error quotes the offending packet's fields after it.
        let slot = match key {
            "SRC" => &mut src,
            "DST" => &mut dst,
            "PROTO" => &mut proto,
            "DPT" => &mut dpt,
            "LEN" => &mut len,
            _ => continue,
        };
        slot.get_or_insert(value);
    }
    let protocol = match proto.ok_or_else(|| error(NAME, "no `PROTO=`"))? {
        p if p.bytes().all(|b| b.is_ascii_digit()) => protocol_name(number(NAME, "PROTO", p)?),
        p => p.to_owned(),
    };
    let action = if options.deny_prefix.is_match(prefix) {
        Action::Deny
    } else {
        Action::Allow
    };
    Ok(Parsed::Record(Record {
        at,
        source: ip(NAME, "SRC", src.ok_or_else(|| error(NAME, "no `SRC=`"))?)?,
        destination: ip(NAME, "DST", dst.ok_or_else(|| error(NAME, "no `DST=`"))?)?,
        port: dpt.map_or(Ok(0), |p| number(NAME, "DPT", p))?,
        protocol,
        sent: len.map_or(Ok(0), |l| number(NAME, "LEN", l))?,
        received: 0,
        action,
    }))
}
