//! `producer dlq list|stats|show|redrive`: the dead letters of `ip_logs_dlq`, selected by
//! error kind, field, source topic and the time they were written, read `read_committed` up
//! to the topic's end when the command starts.
//!
//! A redrive re-submits the original bytes of each selected dead letter to the topic it came
//! from (`ip_logs` for a validation failure, `ip_logs_validated` for `write_rejected`; or
//! `--to`), with its original coordinates and the attempt number as headers
//! ([`log_schema::headers`]): the stream-reader gives the record the `event_id` of the
//! original, so redriving twice, or a record that was written meanwhile, rewrites one row. A
//! record still invalid is dead-lettered again, marked with the attempt and the original;
//! nothing redrives by itself. A record is redriven only through its newest dead letter: a
//! second redrive of the same selection re-submits the records that were written (their rows
//! are rewritten) and leaves out those that failed again for another reason; a dead letter of
//! `--max-attempts` redrives, or whose payload was kept only in part, is not redriven.

use chrono::{DateTime, TimeDelta, Utc};
use clap::{Args, Subcommand};
use log_schema::{DeadLetter, ErrorKind, topics};
use pipeline_runtime::{kafka::KafkaArgs, telemetry::TelemetryArgs};
use rdkafka::Message as _;
use serde_json::Value;

mod inspect;
mod redrive;

use super::{
    bounded::{Bounded, Window},
    parse_time,
};

/// Dead letters are written right after their Kafka timestamp is taken; the time window is
/// widened by this much when seeking by Kafka timestamps, then applied to `failed_at` exactly.
const SEEK_MARGIN: TimeDelta = TimeDelta::minutes(5);

/// `producer dlq`.
#[derive(Debug, Clone, Args)]
pub struct DlqArgs {
    /// What to do with the dead letters.
    #[command(subcommand)]
    pub action: DlqAction,
}

/// The `producer dlq` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum DlqAction {
    /// One line per selected dead letter: where, when, why, from where.
    List(ListArgs),
    /// Counts of the selected dead letters by error kind, field and source topic.
    Stats(Selection),
    /// The selected dead letters with their original payload (UTF-8 as text, else hex).
    Show(ShowArgs),
    /// Re-submit the original bytes of the selected dead letters under their original identity.
    Redrive(RedriveArgs),
}

/// Which dead letters, and how to reach them.
#[derive(Debug, Clone, Args)]
pub struct Selection {
    /// Kafka connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Logging.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    /// The dead-letter topic.
    #[arg(long, env = "DLQ_TOPIC", default_value = topics::DLQ)]
    pub dlq_topic: String,

    /// Only dead letters of these error kinds (e.g. `too_large,malformed_json`).
    #[arg(long = "kind", env = "DLQ_KINDS", value_delimiter = ',', value_parser = parse_kind)]
    pub kinds: Vec<ErrorKind>,

    /// Only dead letters whose offending field is this one.
    #[arg(long, env = "DLQ_FIELD")]
    pub field: Option<String>,

    /// Only dead letters of records read from this topic.
    #[arg(long, env = "DLQ_SOURCE_TOPIC")]
    pub source_topic: Option<String>,

    /// Only dead letters written at or after this time (RFC 3339, UTC without zone, or an age
    /// such as `2h`).
    #[arg(long, env = "DLQ_SINCE", value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,

    /// Only dead letters written before this time (same forms as --since).
    #[arg(long, env = "DLQ_UNTIL", value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,

    /// Only these partitions of the dead-letter topic (default: all).
    #[arg(long, env = "DLQ_PARTITIONS", value_delimiter = ',')]
    pub partitions: Vec<i32>,

    /// Print JSON (one object per line) instead of text.
    #[arg(long, env = "DLQ_JSON", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub json: bool,
}

/// `producer dlq list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Which dead letters.
    #[command(flatten)]
    pub selection: Selection,

    /// Print at most this many (0 = all).
    #[arg(long, env = "DLQ_LIMIT", default_value_t = 1000)]
    pub limit: u64,
}

/// `producer dlq show`.
#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// Which dead letters.
    #[command(flatten)]
    pub selection: Selection,

    /// Only the dead letters at these `partition:offset` positions of the dead-letter topic.
    #[arg(long = "at", env = "DLQ_AT", value_delimiter = ',', value_parser = parse_position)]
    pub at: Vec<(i32, i64)>,

    /// Print at most this many (0 = all).
    #[arg(long, env = "DLQ_LIMIT", default_value_t = 20)]
    pub limit: u64,
}

/// `producer dlq redrive`.
#[derive(Debug, Clone, Args)]
pub struct RedriveArgs {
    /// Which dead letters (at least one --kind is required).
    #[command(flatten)]
    pub selection: Selection,

    /// Topic to re-submit to (default: the topic each record was first read from).
    #[arg(long, env = "DLQ_REDRIVE_TO")]
    pub to: Option<String>,

    /// Say what would be redriven; send nothing.
    #[arg(long, env = "DLQ_DRY_RUN", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub dry_run: bool,

    /// Records per second (0 = unlimited).
    #[arg(long, env = "DLQ_REDRIVE_RATE", default_value_t = 1000)]
    pub rate: u32,

    /// A dead letter that is already the result of this many redrives is not redriven.
    #[arg(long, env = "DLQ_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
}

fn parse_kind(text: &str) -> Result<ErrorKind, String> {
    serde_json::from_value(Value::String(text.to_owned()))
        .map_err(|_| format!("`{text}` is not an error kind (e.g. too_large, malformed_json)"))
}

fn parse_position(text: &str) -> Result<(i32, i64), String> {
    let bad = || format!("`{text}` is not partition:offset");
    let (p, o) = text.split_once(':').ok_or_else(bad)?;
    Ok((p.parse().map_err(|_| bad())?, o.parse().map_err(|_| bad())?))
}

/// One record of the dead-letter topic.
struct Letter {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    letter: DeadLetter,
}

/// What a scan read.
#[derive(Debug, Default)]
struct Scan {
    /// Records of the dead-letter topic read.
    read: u64,
    /// Records that are not dead letters (reported, never fatal).
    unreadable: u64,
}

/// Reads the dead letters and hands each selected one to `each` (with `all`, every dead letter
/// from `--since` to the topic's end, with whether it is selected); stops when `each` says so.
async fn scan(
    selection: &Selection,
    all: bool,
    mut each: impl FnMut(Letter, bool) -> anyhow::Result<bool>,
) -> anyhow::Result<Scan> {
    let window = Window {
        partitions: selection.partitions.clone(),
        since: selection.since.map(|t| t - SEEK_MARGIN),
        until: selection.until.filter(|_| !all).map(|t| t + SEEK_MARGIN),
    };
    let group = format!("producer-dlq-{}", uuid::Uuid::new_v4());
    let mut read = Bounded::open(
        &selection.kafka,
        &group,
        &selection.dlq_topic,
        &window,
        false,
    )?;
    let mut scan = Scan::default();
    while let Some(message) = read.next().await? {
        scan.read += 1;
        let Ok(letter) = DeadLetter::from_json(message.payload().unwrap_or_default()) else {
            scan.unreadable += 1;
            continue;
        };
        let chosen = selected(selection, &letter);
        if !chosen && !all {
            continue;
        }
        let more = each(
            Letter {
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(<[u8]>::to_vec),
                letter,
            },
            chosen,
        )?;
        if !more {
            break;
        }
    }
    if scan.unreadable > 0 {
        eprintln!(
            "note: {} record(s) of `{}` are not dead letters and were skipped",
            scan.unreadable, selection.dlq_topic
        );
    }
    Ok(scan)
}

fn selected(s: &Selection, l: &DeadLetter) -> bool {
    (s.kinds.is_empty() || s.kinds.contains(&l.error.kind))
        && s.field
            .as_ref()
            .is_none_or(|f| l.error.field.as_deref() == Some(f.as_str()))
        && s.source_topic
            .as_ref()
            .is_none_or(|t| l.source.topic == *t || l.origin().topic == *t)
        && s.since.is_none_or(|t| l.failed_at >= t)
        && s.until.is_none_or(|t| l.failed_at < t)
}

/// Runs a `producer dlq` subcommand.
pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    match args.action {
        DlqAction::List(a) => inspect::list(&a).await,
        DlqAction::Stats(s) => inspect::stats(&s).await,
        DlqAction::Show(a) => inspect::show(&a).await,
        DlqAction::Redrive(a) => redrive::redrive(&a).await,
    }
}

/// The `telemetry` of a subcommand.
pub fn telemetry(args: &DlqArgs) -> &TelemetryArgs {
    match &args.action {
        DlqAction::List(a) => &a.selection.telemetry,
        DlqAction::Stats(s) => &s.telemetry,
        DlqAction::Show(a) => &a.selection.telemetry,
        DlqAction::Redrive(a) => &a.selection.telemetry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_positions_parse() {
        assert_eq!(parse_kind("too_large"), Ok(ErrorKind::TooLarge));
        assert!(parse_kind("TooLarge").is_err());
        assert_eq!(parse_position("2:17"), Ok((2, 17)));
        assert!(parse_position("2-17").is_err());
    }
}
