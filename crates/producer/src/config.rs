//! The producer's command line: the default mode (generate or replay logs) and the operator
//! subcommands.

use chrono::TimeDelta;
use clap::{Args, Parser, ValueEnum};
use log_schema::TimestampStyle;
use pipeline_runtime::{kafka::KafkaArgs, telemetry::TelemetryArgs};

use crate::{GeneratorConfig, Scenario, formats, ops};

/// Timestamp style flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TimestampArg {
    /// `2025-12-28T10:30:45.123456` (naive, UTC), as the seed writes it.
    Seed,
    /// `2025-12-28T10:30:45.123456Z`.
    Rfc3339,
}

/// Command line of the `producer` binary.
#[derive(Debug, Clone, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do (default: produce logs).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Producer options (when no subcommand is given).
    #[command(flatten)]
    pub producer: ProducerArgs,
}

/// Operator subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Inspect (list, stats, show) and redrive the dead letters of `ip_logs_dlq`.
    Dlq(ops::dlq::DlqArgs),
    /// Re-submit a time window of `ip_logs` or `ip_logs_validated` under the records'
    /// original identity (rows are rewritten, not duplicated); resumable.
    Replay(ops::replay::ReplayArgs),
}

/// Options of the log producer.
#[derive(Debug, Clone, Args)]
pub struct ProducerArgs {
    /// Kafka connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Logging.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    /// Topic to produce to.
    #[arg(long, env = "PRODUCER_TOPIC", default_value = log_schema::topics::RAW)]
    pub topic: String,

    /// Logs per second (0 = as fast as possible).
    #[arg(long, env = "PRODUCER_RATE", default_value_t = 1000)]
    pub rate: u64,

    /// Stop after this many records (default: run until stopped, or until the input ends).
    #[arg(long, env = "PRODUCER_COUNT")]
    pub count: Option<u64>,

    /// Stop after this many seconds.
    #[arg(long, env = "PRODUCER_DURATION_SECS")]
    pub duration_secs: Option<u64>,

    /// Replay lines from this file (`-` = stdin; gzip is decompressed) instead of generating.
    /// Each line is sent byte for byte, valid or not: the stream-reader sorts them out.
    #[arg(long, env = "PRODUCER_INPUT")]
    pub input: Option<String>,

    /// With --input FILE: at its end, wait for more lines instead of stopping, and follow the
    /// path to a new file when it is rotated (renamed or truncated), like `tail -F`.
    #[arg(long, env = "PRODUCER_FOLLOW", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub follow: bool,

    /// Directory of the saved read positions of --input files (one JSON file per input path):
    /// a restart continues after the last line Kafka acknowledged.
    #[arg(
        long,
        env = "PRODUCER_CHECKPOINT_DIR",
        default_value = "producer-checkpoints"
    )]
    pub checkpoint_dir: std::path::PathBuf,

    /// Milliseconds between saves of the read position (and at the end of the run).
    #[arg(long, env = "PRODUCER_CHECKPOINT_INTERVAL_MS", default_value_t = 1000)]
    pub checkpoint_interval_ms: u64,

    /// With --follow: how long a file shorter than 1 KiB waits to grow before its lines are
    /// sent under a fingerprint of the bytes it holds (a file that reaches 1 KiB first is
    /// fingerprinted over its first KiB, like an imported one).
    #[arg(long, env = "PRODUCER_FINGERPRINT_WAIT_MS", default_value_t = 5000)]
    pub fingerprint_wait_ms: u64,

    /// Read the --input file from its start, ignoring its saved position (its lines keep their
    /// identity, so lines sent before rewrite the same rows).
    #[arg(long, env = "PRODUCER_FROM_START", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub from_start: bool,

    /// Format of the --input lines: seed-json (sent byte for byte), aws-vpc-flow, zeek-conn,
    /// suricata-eve, iptables, nftables, or auto (detected from the first line).
    #[arg(long, env = "PRODUCER_FORMAT", value_enum, value_parser = pipeline_runtime::enums::Lenient::<formats::InputFormat>::new(), default_value_t = formats::InputFormat::SeedJson)]
    pub format: formats::InputFormat,

    /// With --format iptables|nftables: log prefixes matching this regular expression are
    /// DENY, all others ALLOW.
    #[arg(long, env = "PRODUCER_NETFILTER_DENY_PATTERN", default_value = log_formats::DEFAULT_DENY_PREFIX)]
    pub netfilter_deny_pattern: String,

    /// Longest input line sent whole, in bytes; a longer line is sent as its first this many
    /// bytes and counted as truncated.
    #[arg(long, env = "PRODUCER_MAX_LINE_BYTES", default_value_t = 1024 * 1024)]
    pub max_line_bytes: usize,

    /// Generator options.
    #[command(flatten)]
    pub generator: GeneratorArgs,

    /// Seconds between status lines.
    #[arg(long, env = "PRODUCER_STATUS_INTERVAL_SECS", default_value_t = 5)]
    pub status_interval_secs: u64,

    /// Seconds to wait for outstanding deliveries on shutdown.
    #[arg(long, env = "PRODUCER_FLUSH_TIMEOUT_SECS", default_value_t = 30)]
    pub flush_timeout_secs: u64,

    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9101")]
    pub metrics_addr: std::net::SocketAddr,
}

/// Options of the traffic generator.
#[derive(Debug, Clone, Args)]
pub struct GeneratorArgs {
    /// RNG seed: the same seed generates the same traffic.
    #[arg(long, env = "PRODUCER_SEED", default_value_t = 42)]
    pub seed: u64,

    /// Number of source hosts in the simulated network.
    #[arg(long, env = "PRODUCER_HOSTS", default_value_t = 2000)]
    pub hosts: usize,

    /// Share of ordinary events that are denied (0..1).
    #[arg(long, env = "PRODUCER_DENY_RATIO", default_value_t = 0.05)]
    pub deny_ratio: f64,

    /// Share of deliberately malformed records (0..1), to exercise the dead-letter path.
    #[arg(long, env = "PRODUCER_INVALID_RATIO", default_value_t = 0.0)]
    pub invalid_ratio: f64,

    /// Attack scenario to inject (repeatable).
    #[arg(
        long = "scenario",
        env = "PRODUCER_SCENARIOS",
        value_enum,
        value_parser = pipeline_runtime::enums::Lenient::<Scenario>::new(),
        value_delimiter = ','
    )]
    pub scenarios: Vec<Scenario>,

    /// Seconds between two bursts of one scenario (at least 60: one burst per minute window).
    #[arg(long, env = "PRODUCER_SCENARIO_INTERVAL_SECS", default_value_t = 60)]
    pub scenario_interval_secs: u64,

    /// Timestamp style.
    #[arg(long, env = "PRODUCER_TIMESTAMP_STYLE", value_enum, value_parser = pipeline_runtime::enums::Lenient::<TimestampArg>::new(), default_value_t = TimestampArg::Seed)]
    pub timestamp_style: TimestampArg,
}

impl GeneratorArgs {
    /// The generator configuration.
    pub fn config(&self) -> GeneratorConfig {
        GeneratorConfig {
            seed: self.seed,
            hosts: self.hosts,
            deny_ratio: self.deny_ratio,
            invalid_ratio: self.invalid_ratio,
            timestamp_style: match self.timestamp_style {
                TimestampArg::Seed => TimestampStyle::Seed,
                TimestampArg::Rfc3339 => TimestampStyle::Rfc3339,
            },
            scenarios: self.scenarios.clone(),
            scenario_interval: TimeDelta::seconds(self.scenario_interval_secs.max(60) as i64),
        }
    }
}
