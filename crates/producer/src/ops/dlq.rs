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
//! nothing redrives by itself, and a dead letter of `--max-attempts` redrives is skipped.

use std::collections::BTreeMap;

use anyhow::bail;
use chrono::{DateTime, TimeDelta, Utc};
use clap::{Args, Subcommand};
use log_schema::{DeadLetter, ErrorKind, RawEncoding, SourceRef, topics};
use pipeline_runtime::{kafka::KafkaArgs, telemetry::TelemetryArgs};
use rdkafka::{Message as _, producer::FutureRecord};
use serde_json::{Value, json};

use super::{
    bounded::{Bounded, Window},
    parse_time, print_json,
    sender::Sender,
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
        DlqAction::List(a) => list(&a).await,
        DlqAction::Stats(s) => stats(&s).await,
        DlqAction::Show(a) => show(&a).await,
        DlqAction::Redrive(a) => redrive(&a).await,
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

fn summary(l: &Letter) -> Value {
    let d = &l.letter;
    json!({
        "dlq": {"partition": l.partition, "offset": l.offset},
        "failed_at": d.failed_at.to_rfc3339(),
        "kind": d.error.kind,
        "field": d.error.field,
        "message": d.error.message,
        "source": d.source,
        "redrive": d.redrive,
        "raw_size": d.raw_size,
        "raw_truncated": d.raw_truncated,
    })
}

fn coordinates(s: &SourceRef) -> String {
    s.to_header()
}

async fn list(args: &ListArgs) -> anyhow::Result<()> {
    let s = &args.selection;
    let mut printed = 0u64;
    let mut more = false;
    scan(s, false, |l, _| {
        if args.limit > 0 && printed == args.limit {
            more = true;
            return Ok(false);
        }
        printed += 1;
        if s.json {
            return print_json(&summary(&l)).map(|()| true);
        }
        let d = &l.letter;
        let redrive = d.redrive.as_ref().map_or(String::new(), |r| {
            format!(" redrive=#{} of {}", r.attempt, coordinates(&r.origin))
        });
        println!(
            "{}:{} {} {} field={} source={} size={}{}{}: {}",
            l.partition,
            l.offset,
            d.failed_at.to_rfc3339(),
            d.error.kind.as_str(),
            d.error.field.as_deref().unwrap_or("-"),
            coordinates(&d.source),
            d.raw_size,
            if d.raw_truncated { " truncated" } else { "" },
            redrive,
            d.error.message,
        );
        Ok(true)
    })
    .await?;
    if more {
        eprintln!("(more dead letters match: raise --limit, 0 for all)");
    }
    Ok(())
}

/// Counts of the selected dead letters.
#[derive(Debug, Default)]
struct Stats {
    total: u64,
    redriven: u64,
    by_kind: BTreeMap<&'static str, u64>,
    by_field: BTreeMap<String, u64>,
    by_source_topic: BTreeMap<String, u64>,
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
}

async fn stats(s: &Selection) -> anyhow::Result<()> {
    let mut st = Stats::default();
    let scanned = scan(s, false, |l, _| {
        let d = &l.letter;
        st.total += 1;
        st.redriven += u64::from(d.redrive.is_some());
        *st.by_kind.entry(d.error.kind.as_str()).or_default() += 1;
        *st.by_field
            .entry(d.error.field.clone().unwrap_or_else(|| "-".into()))
            .or_default() += 1;
        *st.by_source_topic
            .entry(d.source.topic.clone())
            .or_default() += 1;
        st.first = Some(st.first.map_or(d.failed_at, |f| f.min(d.failed_at)));
        st.last = Some(st.last.map_or(d.failed_at, |f| f.max(d.failed_at)));
        Ok(true)
    })
    .await?;
    if s.json {
        return print_json(&json!({
            "total": st.total,
            "redriven": st.redriven,
            "unreadable": scanned.unreadable,
            "first_failed_at": st.first.map(|t| t.to_rfc3339()),
            "last_failed_at": st.last.map(|t| t.to_rfc3339()),
            "by_kind": st.by_kind,
            "by_field": st.by_field,
            "by_source_topic": st.by_source_topic,
        }));
    }
    let span = match (st.first, st.last) {
        (Some(f), Some(l)) => format!(", written {} .. {}", f.to_rfc3339(), l.to_rfc3339()),
        _ => String::new(),
    };
    println!(
        "{} dead letters ({} of them redrives){span}; {} records of the topic are not dead letters",
        st.total, st.redriven, scanned.unreadable
    );
    for (title, counts) in [
        (
            "error kind",
            st.by_kind
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<Vec<_>>(),
        ),
        ("field", st.by_field.clone().into_iter().collect()),
        (
            "source topic",
            st.by_source_topic.clone().into_iter().collect(),
        ),
    ] {
        println!("by {title}:");
        for (name, n) in counts {
            println!("  {name:<24} {n:>10}");
        }
    }
    Ok(())
}

/// Hex dump lines: offset, 16 bytes in hex, the printable ASCII.
fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let text: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        out.push_str(&format!(
            "{:08x}  {:<47}  |{text}|\n",
            i * 16,
            hex.join(" ")
        ));
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn show(args: &ShowArgs) -> anyhow::Result<()> {
    let s = &args.selection;
    let mut printed = 0u64;
    scan(s, false, |l, _| {
        if !args.at.is_empty() && !args.at.contains(&(l.partition, l.offset)) {
            return Ok(true);
        }
        if args.limit > 0 && printed == args.limit {
            eprintln!("(more dead letters match: raise --limit, 0 for all)");
            return Ok(false);
        }
        printed += 1;
        let d = &l.letter;
        let raw = d.raw_bytes()?;
        let utf8 = std::str::from_utf8(&raw).ok();
        if s.json {
            let mut v = summary(&l);
            v["encoding"] = json!(match d.raw_encoding {
                RawEncoding::Utf8 => "utf8",
                RawEncoding::Base64 => "binary",
            });
            match (d.raw_encoding, utf8) {
                (RawEncoding::Utf8, Some(text)) => v["payload_utf8"] = json!(text),
                _ => v["payload_hex"] = json!(hex(&raw)),
            }
            return print_json(&v).map(|()| true);
        }
        println!(
            "== {} {}:{}, written {}",
            s.dlq_topic,
            l.partition,
            l.offset,
            d.failed_at.to_rfc3339()
        );
        println!(
            "error:   {} (field {}): {}",
            d.error.kind.as_str(),
            d.error.field.as_deref().unwrap_or("-"),
            d.error.message
        );
        println!("source:  {}", coordinates(&d.source));
        if let Some(r) = &d.redrive {
            println!("redrive: #{} of {}", r.attempt, coordinates(&r.origin));
        }
        let shown = if d.raw_truncated {
            format!(" (only the first {} bytes were kept)", raw.len())
        } else {
            String::new()
        };
        match (d.raw_encoding, utf8) {
            (RawEncoding::Utf8, Some(text)) => {
                println!("payload: {} bytes, UTF-8{shown}:\n{text}", d.raw_size);
            }
            _ => print!(
                "payload: {} bytes, binary{shown}:\n{}",
                d.raw_size,
                hex_dump(&raw)
            ),
        }
        println!();
        Ok(true)
    })
    .await?;
    Ok(())
}

/// The newest dead letter of one original record.
struct Newest {
    letter: Letter,
    /// Whether the newest one is selected.
    selected: bool,
    /// Whether any dead letter of the record is selected.
    any_selected: bool,
    /// Selected dead letters of the record that are not the newest.
    older_selected: u64,
}

/// What a redrive selected and why some was left out.
#[derive(Debug, Default, serde::Serialize)]
struct Plan {
    /// Dead letters that match the selection.
    selected: u64,
    /// Original records to re-submit, per destination topic.
    per_destination: BTreeMap<String, u64>,
    /// Older dead letters of records whose newest dead letter is re-submitted.
    older_dead_letters: u64,
    /// Records whose newest dead letter is a later redrive that the selection does not match
    /// (already redriven, failed for another reason).
    superseded: u64,
    /// Records whose kept payload is only a prefix.
    truncated: u64,
    /// Records already redriven `--max-attempts` times.
    max_attempts: u64,
}

async fn redrive(args: &RedriveArgs) -> anyhow::Result<()> {
    let s = &args.selection;
    if s.kinds.is_empty() {
        bail!("redrive needs at least one --kind (see `producer dlq stats`)");
    }
    // Every dead letter from --since on: a record is redriven only through its newest one, so
    // a second redrive of the same selection re-submits the records that were written (their
    // rows are rewritten) but not those that failed again for another reason.
    let mut newest: BTreeMap<(String, i32, i64), Newest> = BTreeMap::new();
    scan(s, true, |l, chosen| {
        let o = l.letter.origin();
        let key = (o.topic.clone(), o.partition, o.offset);
        let rank = |d: &DeadLetter| (d.attempt(), d.failed_at);
        match newest.get_mut(&key) {
            None => {
                newest.insert(
                    key,
                    Newest {
                        letter: l,
                        selected: chosen,
                        any_selected: chosen,
                        older_selected: 0,
                    },
                );
            }
            Some(n) => {
                n.any_selected |= chosen;
                if rank(&l.letter) > rank(&n.letter.letter) {
                    n.older_selected += u64::from(n.selected);
                    n.letter = l;
                    n.selected = chosen;
                } else {
                    n.older_selected += u64::from(chosen);
                }
            }
        }
        Ok(true)
    })
    .await?;
    let mut plan = Plan::default();
    let mut chosen: Vec<(&Letter, String)> = Vec::new();
    for n in newest.values().filter(|n| n.any_selected) {
        plan.selected += n.older_selected + u64::from(n.selected);
        let d = &n.letter.letter;
        if !n.selected {
            plan.superseded += 1;
        } else if d.raw_truncated {
            plan.truncated += 1;
        } else if d.attempt() >= args.max_attempts {
            plan.max_attempts += 1;
        } else {
            plan.older_dead_letters += n.older_selected;
            let to = args.to.clone().unwrap_or_else(|| d.origin().topic.clone());
            *plan.per_destination.entry(to.clone()).or_default() += 1;
            chosen.push((&n.letter, to));
        }
    }
    let mut out = None;
    if !args.dry_run && !chosen.is_empty() {
        let mut sender = Sender::new(&s.kafka, args.rate)?;
        let mut progress = super::Progress::new("redrive", chosen.len() as u64);
        for (i, (l, to)) in chosen.iter().enumerate() {
            let d = &l.letter;
            let raw = d.raw_bytes()?;
            let headers = super::identity_headers(d.origin(), Some(d.attempt() + 1));
            let mut record = FutureRecord::<[u8], [u8]>::to(to)
                .payload(&raw)
                .headers(headers);
            if let Some(key) = &l.key {
                record = record.key(key);
            }
            sender.send(record).await?;
            progress.update(i as u64 + 1, sender.bytes);
        }
        sender.settle().await;
        progress.finish();
        out = Some(sender);
    }
    let (delivered, failed) = out.as_ref().map_or((0, 0), |o| (o.delivered, o.failed));
    if s.json {
        let mut report = serde_json::to_value(&plan)?;
        report["dry_run"] = json!(args.dry_run);
        report["redrive"] = json!(chosen.len());
        report["delivered"] = json!(delivered);
        report["failed"] = json!(failed);
        print_json(&report)?;
    } else {
        let targets: Vec<String> = plan
            .per_destination
            .iter()
            .map(|(t, n)| format!("{n} to {t}"))
            .collect();
        println!(
            "{} dead letters selected; {} {} records ({}); left out: {} already redriven and \
             failed otherwise, {} truncated, {} at --max-attempts, {} older dead letters of \
             the same records{}",
            plan.selected,
            if args.dry_run {
                "would redrive"
            } else {
                "redrove"
            },
            chosen.len(),
            if targets.is_empty() {
                "none".into()
            } else {
                targets.join(", ")
            },
            plan.superseded,
            plan.truncated,
            plan.max_attempts,
            plan.older_dead_letters,
            if args.dry_run {
                String::new()
            } else {
                format!("; delivered {delivered}, failed {failed}")
            },
        );
    }
    if let Some(o) = out.filter(|o| o.failed > 0) {
        bail!(
            "{} redriven record(s) were not delivered (first error: {})",
            o.failed,
            o.first_error.unwrap_or_default()
        );
    }
    Ok(())
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

    #[test]
    fn hex_dump_shows_offsets_bytes_and_text() {
        let dump = hex_dump(b"\xff\x00ab");
        assert_eq!(dump, format!("00000000  {:<47}  |..ab|\n", "ff 00 61 62"));
        assert_eq!(hex(b"\x01\xfe"), "01fe");
    }
}
