//! `--format`: input lines in other log formats become seed records ([`log_formats`]).
//!
//! A line that is a record is sent as its seed JSON; a header, comment, `NODATA` line or an
//! event that is not a flow is skipped (counted); a line that cannot be parsed is sent as it
//! is, so that the stream-reader dead-letters it with its bytes and a reason (counted and
//! logged here too). Nothing is dropped silently.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use log_formats::{Format, Options, Outcome, Parser};
use pipeline_runtime::telemetry::{Metric, MetricKind};
use tracing::{info, warn};

/// The format of `--input` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// Detected from the first line (fails when that is ambiguous).
    Auto,
    /// The seed's JSON records, sent byte for byte (valid or not).
    SeedJson,
    /// AWS VPC Flow Logs (default v2 format, or a custom one declared by its header line).
    AwsVpcFlow,
    /// Zeek conn.log, TSV with its header or JSON.
    ZeekConn,
    /// Suricata eve.json flow and netflow events.
    SuricataEve,
    /// iptables kernel log lines (syslog or journald).
    Iptables,
    /// nftables kernel log lines (syslog or journald).
    Nftables,
}

impl InputFormat {
    fn format(self) -> Option<Format> {
        Some(match self {
            Self::Auto => return None,
            Self::SeedJson => Format::SeedJson,
            Self::AwsVpcFlow => Format::AwsVpcFlow,
            Self::ZeekConn => Format::ZeekConn,
            Self::SuricataEve => Format::SuricataEve,
            Self::Iptables | Self::Nftables => Format::Netfilter,
        })
    }
}

/// Input lines by what they were.
pub const INPUT_LINES: Metric = Metric {
    name: "producer_input_lines_total",
    kind: MetricKind::Counter,
    labels: &["outcome"],
    help: "Input lines by outcome (--format): parsed into a record, skipped (headers, NODATA, \
         non-flow events), unparsed (sent as they are, for the dead-letter topic)",
};

/// Counts of decoded lines.
#[derive(Debug, Default)]
pub struct LineCounts {
    /// Lines that became records.
    pub parsed: AtomicU64,
    /// Lines without a record (headers, comments, NODATA, non-flow events).
    pub skipped: AtomicU64,
    /// Lines that could not be parsed, sent as they are.
    pub unparsed: AtomicU64,
}

/// What to do with a decoded line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// Send the buffer.
    Send,
    /// Send nothing for this line.
    Skip,
}

/// Decodes input lines of one format.
#[derive(Debug)]
pub struct Decoder {
    wanted: InputFormat,
    deny_pattern: regex::Regex,
    parser: Option<Parser>,
    out: Vec<u8>,
}

impl Decoder {
    /// A decoder of `format`; `deny_pattern` decides netfilter verdicts.
    pub fn new(format: InputFormat, deny_pattern: &str) -> anyhow::Result<Self> {
        let deny_pattern = regex::Regex::new(deny_pattern)
            .context("PRODUCER_NETFILTER_DENY_PATTERN is not a regular expression")?;
        Ok(Self {
            wanted: format,
            deny_pattern,
            parser: None,
            out: Vec::new(),
        })
    }

    /// Replaces the line in `buf` with the record to send, or says to skip it.
    pub fn decode(&mut self, buf: &mut Vec<u8>, counts: &LineCounts) -> anyhow::Result<Decoded> {
        if self.parser.is_none() {
            let format = match self.wanted.format() {
                Some(f) => f,
                None if buf.iter().all(u8::is_ascii_whitespace) => return Ok(Decoded::Skip),
                None => match log_formats::detect(buf) {
                    Some(f) => {
                        info!(format = ?f, "input format detected from the first line");
                        f
                    }
                    None => bail!(
                        "cannot tell the input format from its first line; pass --format \
                         (seed-json, aws-vpc-flow, zeek-conn, suricata-eve, iptables, nftables)"
                    ),
                },
            };
            let options = Options {
                deny_prefix: self.deny_pattern.clone(),
                ..Options::default()
            };
            self.parser = Some(Parser::new(format, options));
        }
        let Some(parser) = &mut self.parser else {
            return Ok(Decoded::Send);
        };
        match parser.parse(buf, &mut self.out) {
            Outcome::Record => {
                std::mem::swap(buf, &mut self.out);
                counts.parsed.fetch_add(1, Relaxed);
                metrics::counter!(INPUT_LINES.name, "outcome" => "parsed").increment(1);
                Ok(Decoded::Send)
            }
            Outcome::Skipped(skip) => {
                counts.skipped.fetch_add(1, Relaxed);
                metrics::counter!(INPUT_LINES.name, "outcome" => "skipped").increment(1);
                tracing::debug!(reason = skip.as_str(), "input line skipped");
                Ok(Decoded::Skip)
            }
            Outcome::Unparsed(error) => {
                let n = counts.unparsed.fetch_add(1, Relaxed);
                metrics::counter!(INPUT_LINES.name, "outcome" => "unparsed").increment(1);
                if n < 10 || n.is_multiple_of(10_000) {
                    warn!(%error, unparsed = n + 1, "input line not parsed; sending it as it is, for the dead-letter topic");
                }
                Ok(Decoded::Send)
            }
        }
    }
}

/// Registers [`INPUT_LINES`] with its help text and zero values.
/// Zero values of [`INPUT_LINES`] per outcome.
pub fn describe_metrics() {
    for outcome in ["parsed", "skipped", "unparsed"] {
        metrics::counter!(INPUT_LINES.name, "outcome" => outcome).absolute(0);
    }
}
