//! `producer replay`: re-submits the records of a time window of a topic (`ip_logs` or
//! `ip_logs_validated`) into the running pipeline, under their original identity.
//!
//! The window is found with offsets-for-times (Kafka timestamps, i.e. when the records were
//! written) and fixed when the replay starts; each record goes to `--to` (default: the same
//! topic) with its key, its bytes and an [`log_schema::headers::ORIGIN`] header naming where
//! it was first written, so the stream-reader derives the same `event_id` (a validated
//! record carries its own) and the writer rewrites the same row. Progress is saved as the
//! committed offsets of a consumer group, only for records whose re-submission Kafka
//! acknowledged: an interrupted replay (SIGINT/SIGTERM) saves what was acknowledged and the
//! same command resumes there, skipping nothing and re-submitting nothing. After a SIGKILL
//! it re-submits at most the records since the last save, which rewrite the same rows.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::bail;
use chrono::{DateTime, Utc};
use clap::Args;
use log_schema::{SourceRef, topics};
use pipeline_runtime::{kafka::KafkaArgs, shutdown, telemetry::TelemetryArgs};
use rdkafka::{Message as _, Timestamp, producer::FutureRecord};
use serde_json::json;

use super::{
    Progress,
    bounded::{Bounded, Window},
    carried_origin, identity_headers, parse_time, print_json,
    sender::Sender,
};

/// `producer replay`.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Kafka connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Logging.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    /// Topic to replay (the pipeline's raw or validated topic, or `ip_alerts` to rewrite alert rows).
    #[arg(long, env = "REPLAY_TOPIC", default_value = topics::RAW)]
    pub topic: String,

    /// Replay records written at or after this time (RFC 3339, UTC without zone, or an age
    /// such as `2h`).
    #[arg(long, env = "REPLAY_SINCE", value_parser = parse_time)]
    pub since: DateTime<Utc>,

    /// Replay records written before this time (same forms as --since).
    #[arg(long, env = "REPLAY_UNTIL", value_parser = parse_time)]
    pub until: DateTime<Utc>,

    /// Only these partitions (default: all).
    #[arg(long, env = "REPLAY_PARTITIONS", value_delimiter = ',')]
    pub partitions: Vec<i32>,

    /// Topic to re-submit to (default: --topic).
    #[arg(long, env = "REPLAY_TO")]
    pub to: Option<String>,

    /// Records per second (0 = unlimited).
    #[arg(long, env = "REPLAY_RATE", default_value_t = 5000)]
    pub rate: u32,

    /// Consumer group that keeps this replay's progress (default: one per topic and window,
    /// `replay.<topic>.<since ms>.<until ms>`).
    #[arg(long, env = "REPLAY_GROUP")]
    pub group: Option<String>,

    /// Start at the window's beginning even if an earlier run of this replay saved progress.
    #[arg(long, env = "REPLAY_FROM_START", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub from_start: bool,

    /// Milliseconds between progress saves (each waits for the records sent so far).
    #[arg(long, env = "REPLAY_SAVE_INTERVAL_MS", default_value_t = 1000)]
    pub save_interval_ms: u64,

    /// Print the summary as JSON.
    #[arg(long, env = "REPLAY_JSON", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub json: bool,
}

impl ReplayArgs {
    fn group(&self) -> String {
        self.group.clone().unwrap_or_else(|| {
            format!(
                "replay.{}.{}.{}",
                self.topic,
                self.since.timestamp_millis(),
                self.until.timestamp_millis()
            )
        })
    }
}

/// Runs `producer replay`.
pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    if args.since >= args.until {
        bail!("--since must be before --until");
    }
    let stop = shutdown::on_signals();
    let group = args.group();
    let to = args.to.clone().unwrap_or_else(|| args.topic.clone());
    let window = Window {
        partitions: args.partitions.clone(),
        since: Some(args.since),
        until: Some(args.until),
    };
    let mut read = Bounded::open(&args.kafka, &group, &args.topic, &window, !args.from_start)?;
    let total = read.len();
    let mut out = Sender::new(&args.kafka, args.rate)?;
    let mut progress = Progress::new("replay", total);
    let (since_ms, until_ms) = (args.since.timestamp_millis(), args.until.timestamp_millis());
    let save_every = Duration::from_millis(args.save_interval_ms.max(1));
    let started = Instant::now();
    let mut saved_at = Instant::now();
    // Next offset per partition, of records sent (saved once they are acknowledged).
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let (mut replayed, mut outside) = (0u64, 0u64);
    let mut interrupted = false;
    loop {
        let message = tokio::select! {
            biased;
            () = stop.cancelled() => {
                interrupted = true;
                break;
            }
            message = read.next() => message?,
        };
        let Some(message) = message else { break };
        let (partition, offset) = (message.partition(), message.offset());
        let at = match message.timestamp() {
            Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => Some(ms),
            Timestamp::NotAvailable => None,
        };
        if at.is_some_and(|ms| ms < since_ms || ms >= until_ms) {
            // Written out of timestamp order: inside the offset range, outside the window.
            outside += 1;
        } else {
            let origin = carried_origin(&message).unwrap_or_else(|| SourceRef {
                topic: args.topic.clone(),
                partition,
                offset,
            });
            let mut record = FutureRecord::<[u8], [u8]>::to(&to)
                .payload(message.payload().unwrap_or_default())
                .headers(identity_headers(&origin, None));
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            out.send(record).await?;
            replayed += 1;
        }
        drop(message);
        next.insert(partition, offset + 1);
        progress.update(replayed + outside, out.bytes);
        if saved_at.elapsed() >= save_every {
            save(&mut out, &read, &next).await?;
            saved_at = Instant::now();
        }
    }
    save(&mut out, &read, &next).await?;
    progress.finish();
    let secs = started.elapsed().as_secs_f64();
    let summary = json!({
        "topic": args.topic,
        "to": to,
        "group": group,
        "since": args.since.to_rfc3339(),
        "until": args.until.to_rfc3339(),
        "replayed": replayed,
        "outside_window": outside,
        "bytes": out.bytes,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "interrupted": interrupted,
        "next_offsets": next,
    });
    if args.json {
        print_json(&summary)?;
    } else {
        println!(
            "replay of {} [{} .. {}) into {to}: {replayed} records, {:.1} MB in {secs:.1} s{}{}",
            args.topic,
            args.since.to_rfc3339(),
            args.until.to_rfc3339(),
            out.bytes as f64 / 1e6,
            if outside > 0 {
                format!(" ({outside} records in the offset range were written outside the window)")
            } else {
                String::new()
            },
            if interrupted { "; interrupted" } else { "" },
        );
    }
    if interrupted {
        bail!(
            "interrupted; the progress is saved in consumer group `{group}`: run the same \
             command (`--since {} --until {}`) to resume",
            args.since.to_rfc3339(),
            args.until.to_rfc3339()
        );
    }
    Ok(())
}

/// Waits for every record sent so far, then saves `next` as the replay's progress; fails
/// (saving nothing) if Kafka refused a record, so a resume sends it again.
async fn save(out: &mut Sender, read: &Bounded, next: &BTreeMap<i32, i64>) -> anyhow::Result<()> {
    out.settle().await;
    if out.failed > 0 {
        bail!(
            "{} record(s) were not delivered (first error: {}); progress is saved up to the \
             last save: run the same command to resume",
            out.failed,
            out.first_error.clone().unwrap_or_default()
        );
    }
    read.save(next)
}
