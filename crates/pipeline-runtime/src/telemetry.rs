//! Tracing setup: level from `RUST_LOG` (default `info`), text or JSON lines on stderr.

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Logging options shared by every service.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Log format (the level comes from RUST_LOG, default `info`).
    #[arg(long, env = "LOG_FORMAT", value_enum, value_parser = crate::enums::Lenient::<LogFormat>::new(), default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl TelemetryArgs {
    /// Installs the global subscriber. Calling it twice is harmless (the second call is ignored),
    /// so tests can start several services in one process.
    pub fn init(&self) {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let _ = match self.log_format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
        };
    }
}

/// A text log without its terminal colour codes (`ESC [ ... m`), as the text format writes
/// them, for reading a log back.
pub fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Lets through at most `per_second` log lines of one kind and counts the rest, so a flood of
/// bad input or a long outage cannot flood the log. The exact counts are in the metrics.
#[derive(Debug)]
pub struct LogLimiter {
    limiter: governor::DefaultDirectRateLimiter,
    suppressed: std::sync::atomic::AtomicU64,
}

impl LogLimiter {
    /// At most `per_second` lines a second (bursts of the same size).
    pub fn per_second(per_second: u32) -> Self {
        let rate = std::num::NonZeroU32::new(per_second.max(1)).expect("non-zero");
        Self {
            limiter: governor::RateLimiter::direct(governor::Quota::per_second(rate)),
            suppressed: Default::default(),
        }
    }

    /// `Some(n)` when a line may be logged now (`n` lines were suppressed since the last one),
    /// `None` when it must be dropped.
    pub fn allow(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        match self.limiter.check() {
            Ok(()) => Some(self.suppressed.swap(0, Relaxed)),
            Err(_) => {
                self.suppressed.fetch_add(1, Relaxed);
                None
            }
        }
    }
}

/// One metric, defined once in the crate that emits it: name, kind, label names and help
/// text. Call sites use the definition (`metrics::counter!(RECORDS.name)`), never a literal;
/// [`describe`] registers the help texts, and the observability tests read the definitions
/// the services export (`METRICS`) to check the dashboard and the alert rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// The Prometheus name (`*_total` for counters).
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// Label names (low cardinality); empty for none.
    pub labels: &'static [&'static str],
    /// Help text.
    pub help: &'static str,
}

/// The kind of a [`Metric`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// A current value.
    Gauge,
    /// A distribution of seconds (exposed as `_bucket`, `_sum`, `_count`).
    Histogram,
}

impl Metric {
    /// The series names Prometheus exposes for it.
    pub fn series(&self) -> Vec<String> {
        match self.kind {
            MetricKind::Histogram => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{}{s}", self.name))
                .collect(),
            _ => vec![self.name.to_owned()],
        }
    }
}

/// Registers the help texts of `defined`; counters without labels start at zero, so their
/// series exist before the first event.
pub fn describe(defined: &[Metric]) {
    for m in defined {
        match m.kind {
            MetricKind::Counter => {
                metrics::describe_counter!(m.name, m.help);
                if m.labels.is_empty() {
                    metrics::counter!(m.name).absolute(0);
                }
            }
            MetricKind::Gauge => metrics::describe_gauge!(m.name, m.help),
            MetricKind::Histogram => {
                metrics::describe_histogram!(m.name, metrics::Unit::Seconds, m.help);
            }
        }
    }
}
