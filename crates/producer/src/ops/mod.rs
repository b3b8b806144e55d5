//! Operator commands of the `producer` binary: `producer dlq …` inspects and redrives dead
//! letters, `producer replay …` re-submits a time window of a topic. Both re-submit records
//! under their original identity (the [`log_schema::headers`]), so Cassandra rows are
//! rewritten, never duplicated, and both are rate-limited and honour the Kafka security
//! settings of every service.

pub mod bounded;
pub mod dlq;
pub mod replay;
mod sender;

use std::{
    io::{IsTerminal as _, Write as _},
    num::NonZeroU32,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use log_schema::{SourceRef, headers};
use rdkafka::message::{Header, Headers as _, OwnedHeaders};

/// Parses a point in time: RFC 3339 (`2026-12-03T10:00:00Z`), the seed's naive UTC form
/// (`2026-12-03T10:00:00`), or an age such as `90s`, `15m`, `2h`, `7d` (that long ago).
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Some(at) = log_schema::parse_timestamp(text) {
        return Ok(at);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => 0,
    };
    match number.parse::<i64>() {
        Ok(n) if seconds > 0 => TimeDelta::try_seconds(n.saturating_mul(seconds))
            .and_then(|d| Utc::now().checked_sub_signed(d))
            .ok_or_else(|| format!("`{text}` is too long ago")),
        _ => Err(format!(
            "`{text}` is not a time: use RFC 3339 (2026-12-03T10:00:00Z), \
             2026-12-03T10:00:00 (UTC) or an age such as 15m, 2h, 7d"
        )),
    }
}

/// A rate limiter of `per_second` records (0 = unlimited).
fn limiter(per_second: u32) -> Option<DefaultDirectRateLimiter> {
    NonZeroU32::new(per_second).map(|n| RateLimiter::direct(Quota::per_second(n)))
}

/// The headers of a re-submitted record (or of a file line): its original coordinates (and
/// redrive attempt).
pub(crate) fn identity_headers(origin: &SourceRef, attempt: Option<u32>) -> OwnedHeaders {
    let origin = origin.to_header();
    let headers = OwnedHeaders::new().insert(Header {
        key: headers::ORIGIN,
        value: Some(origin.as_bytes()),
    });
    match attempt {
        Some(n) => headers.insert(Header {
            key: headers::REDRIVE_ATTEMPT,
            value: Some(n.to_string().as_bytes()),
        }),
        None => headers,
    }
}

/// The original coordinates a record carries in its [`headers::ORIGIN`] header, if valid.
fn carried_origin(message: &impl rdkafka::Message) -> Option<SourceRef> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == headers::ORIGIN)
        .and_then(|h| SourceRef::from_header(h.value?).ok())
}

/// A one-line progress display on standard error, redrawn at most twice a second, only when
/// standard error is a terminal.
struct Progress {
    what: &'static str,
    total: u64,
    started: Instant,
    drawn: Option<Instant>,
    terminal: bool,
}

impl Progress {
    fn new(what: &'static str, total: u64) -> Self {
        Self {
            what,
            total,
            started: Instant::now(),
            drawn: None,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, done: u64, bytes: u64) {
        if !self.terminal
            || self
                .drawn
                .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
        {
            return;
        }
        self.drawn = Some(Instant::now());
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let pct = if self.total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / self.total as f64
        };
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r{} {done}/{} records ({pct:.1} %), {:.1} MB, {:.0} records/s   ",
            self.what,
            self.total,
            bytes as f64 / 1e6,
            done as f64 / secs
        );
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.terminal && self.drawn.is_some() {
            eprintln!();
        }
    }
}

/// Prints `value` as one line of JSON on standard output.
fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value).context("cannot write to standard output")?;
    writeln!(out).context("cannot write to standard output")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_three_forms_and_garbage_is_refused() {
        let at = parse_time("2026-12-03T10:00:00Z").unwrap();
        assert_eq!(at, parse_time("2026-12-03T10:00:00").unwrap());
        let two_hours = Utc::now() - parse_time("2h").unwrap();
        assert!(
            (7_199..=7_201).contains(&two_hours.num_seconds()),
            "{two_hours}"
        );
        for bad in ["", "h", "2w", "yesterday", "-2h", "99999999999999999d"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
