//! `cargo xtask bench`: every stage against the ceiling it runs under, side by side in one run,
//! on a stack of its own (Apache Kafka and Apache Cassandra on 127.0.0.1:39092 / :39042).
//! Writes `target/bench/summary.json`. `--tuning` measures the client settings instead
//! ([`crate::tuning`]).
//!
//! 1. producer (release binary, `--rate 0`) vs a raw rdkafka producer sending the same
//!    pre-serialised bytes vs a Python confluent-kafka producer generating the same records;
//! 2. stream-reader vs a raw rdkafka consume → produce pass-through of the same topic;
//! 3. cassandra-writer vs a raw scylla concurrent prepared-insert loop of the same rows;
//! 4. end to end at a fixed rate: event time → row written (from the rows' own columns);
//! 5. peak RSS (VmHWM) of each service.
//!
//! `--data-model` measures the Cassandra data model instead ([`data_model`]).

use std::{
    fs,
    path::{Path, PathBuf},
};

use clap::Args;
use pipeline_runtime::kafka::KafkaArgs;

use crate::stack::Stack;

mod ceilings;
mod data_model;
mod e2e;
mod measure;
mod stages;
mod writes;

pub(crate) use measure::*;

pub(crate) use e2e::{EndToEnd, Load, end_to_end};
pub(crate) use writes::connector_batches;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Finish in about 3 minutes (fewer records, 20 s end-to-end phase).
    #[arg(long)]
    pub quick: bool,
    /// Instead of the stages: each Kafka client setting we chose against its alternative
    /// (`target/bench/tuning.json`).
    #[arg(long)]
    pub tuning: bool,
    /// Instead of the stages: the stream-reader's exactly-once transaction settings
    /// (interval, size) against alternatives and against at-least-once
    /// (`target/bench/transactions.json`).
    #[arg(long, conflicts_with = "tuning")]
    pub transactions: bool,
    /// Instead of the stages: our stream-reader + cassandra-writer against another system on
    /// the same records (`spark`: the seed's Spark Structured Streaming job), side by side.
    #[arg(long, value_enum, conflicts_with_all = ["tuning", "transactions"])]
    pub baseline: Option<crate::baseline::Baseline>,
    /// The stages on a 3 + 3 node cluster (topics with 3 replicas, the keyspace with RF 3,
    /// writes at LOCAL_QUORUM) instead of one node of each.
    #[arg(long, conflicts_with_all = ["tuning", "transactions", "baseline"])]
    pub cluster: bool,
    /// Instead of the stages: the Cassandra data model's write cost (previous layout, bucketed
    /// without and with each SAI index, as shipped), its largest partition under a skewed load
    /// and the latency of every README cookbook query (`target/bench/data_model.json`).
    #[arg(long, conflicts_with_all = ["tuning", "transactions", "baseline", "cluster"])]
    pub data_model: bool,
    /// Instead of the stages: Cassandra's CPU per row for the same rows sent as full
    /// single-partition batches of 1–32 rows, in the Spark connector's grouping, and by our
    /// writer (`target/bench/writes.json`).
    #[arg(long, conflicts_with_all = ["tuning", "transactions", "baseline", "cluster", "data_model"])]
    pub writes: bool,
    /// With `--writes`: the writer under each Cassandra setting (trie memtable with off-heap
    /// objects, concurrent_writes, the group commit-log window) against the shipped ones.
    #[arg(long, requires = "writes")]
    pub cassandra_settings: bool,
}

pub(crate) struct Metric {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    pub ceiling: Option<f64>,
}

impl Metric {
    pub(crate) fn json(&self) -> String {
        let ratio = self.ceiling.filter(|c| *c > 0.0).map(|c| self.value / c);
        format!(
            "{{\"name\": \"{}\", \"value\": {:.3}, \"unit\": \"{}\", \"ceiling\": {}, \"ratio\": {}}}",
            self.name,
            self.value,
            self.unit,
            self.ceiling
                .map_or("null".to_owned(), |c| format!("{c:.3}")),
            ratio.map_or("null".to_owned(), |r| format!("{r:.3}")),
        )
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    crate::cargo(
        &[
            "build",
            "--quiet",
            "-p",
            "producer",
            "-p",
            "stream-reader",
            "-p",
            "cassandra-writer",
        ],
        true,
    )?;
    let stack = Stack::named("bench", 39092, 39042, 3).shaped(crate::stack::Shape {
        cluster: args.cluster,
        secure: false,
    });
    stack.start(true).await?;
    let result = if args.tuning {
        crate::tuning::run(&stack, args.quick).await
    } else if args.transactions {
        crate::tuning::transactions(&stack, args.quick).await
    } else if args.data_model {
        data_model::run(&stack, args.quick).await
    } else if args.writes && args.cassandra_settings {
        writes::settings(&stack, args.quick).await
    } else if args.writes {
        writes::run(&stack, args.quick).await
    } else if let Some(crate::baseline::Baseline::Spark) = args.baseline {
        crate::baseline::run(&stack, args.quick).await
    } else {
        phases(&stack, &args).await
    };
    stack.stop()?;
    result
}

async fn phases(stack: &Stack, args: &BenchArgs) -> anyhow::Result<()> {
    let n: u64 = if args.quick { 50_000 } else { 200_000 };
    let e2e_secs: u64 = if args.quick { 20 } else { 60 };
    let kafka = stack.kafka_admin();
    let out_dir = crate::target_dir().join("bench");
    fs::create_dir_all(&out_dir)?;
    let log = out_dir.join("services.log");
    let _ = fs::remove_file(&log);
    let topics = [
        "b_raw",
        "b_raw_reader",
        "b_raw_ceiling",
        "b_raw_py",
        "b_valid",
        "b_dlq",
        "b_stats",
        "b_alerts",
        "b_valid_r",
        "b_dlq_r",
        "b_stats_r",
        "b_alerts_r",
        "b_pass",
        "b_valid_eos",
        "b_dlq_eos",
        "b_stats_eos",
        "b_alerts_eos",
    ];
    kafka
        .ensure_topics(&topics, 3, i32::from(stack.nodes))
        .await?;
    let mut env: Vec<(String, String)> = stack.env_with(&[]);
    env.extend([
        ("CASSANDRA_KEYSPACE".to_owned(), "bench".to_owned()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ]);
    migrate(&env)?;
    let mut ctx = Ctx {
        stack,
        kafka,
        env,
        log,
        n,
        quick: args.quick,
        e2e_secs,
        metrics: Vec::new(),
        rss: Vec::new(),
    };
    let records = stages::producer(&mut ctx).await?;
    stages::producer_mock(&mut ctx, &records).await?;
    stages::reader(&mut ctx).await?;
    stages::writer(&mut ctx).await?;
    stages::end_to_end(&mut ctx).await?;
    ctx.report(&out_dir)
}

/// What the phases share: the stack, the settings, and the results so far.
pub(crate) struct Ctx<'a> {
    pub(crate) stack: &'a Stack,
    pub(crate) kafka: KafkaArgs,
    /// The services' environment.
    pub(crate) env: Vec<(String, String)>,
    /// Where the services log.
    pub(crate) log: PathBuf,
    /// Records per stage.
    pub(crate) n: u64,
    pub(crate) quick: bool,
    /// Seconds of each full-rate end-to-end run.
    pub(crate) e2e_secs: u64,
    pub(crate) metrics: Vec<Metric>,
    /// Peak RSS per service, MB.
    pub(crate) rss: Vec<(&'static str, f64)>,
}

impl Ctx<'_> {
    /// Prints the table and merges the metrics into `summary.json` in `out_dir`.
    fn report(&mut self, out_dir: &Path) -> anyhow::Result<()> {
        let ctx = self;

        for (name, mb) in &ctx.rss {
            ctx.metrics.push(Metric {
                name: format!("rss_mb_{}", name.replace('-', "_")),
                value: *mb,
                unit: "MB",
                ceiling: None,
            });
        }

        println!(
            "\n{:<28} {:>14} {:>10} {:>14} {:>8}",
            "name", "value", "unit", "ceiling", "ratio"
        );
        for m in &ctx.metrics {
            println!(
                "{:<28} {:>14.1} {:>10} {:>14} {:>8}",
                m.name,
                m.value,
                m.unit,
                m.ceiling.map_or("-".to_owned(), |c| format!("{c:.1}")),
                m.ceiling
                    .filter(|c| *c > 0.0)
                    .map_or("-".to_owned(), |c| format!("{:.2}", m.value / c))
            );
        }
        // Merged, so the `--writes` and `--baseline spark` rows of other runs stay beside these.
        crate::baseline::merge_summary(&out_dir.join("summary.json"), &ctx.metrics)?;
        Ok(())
    }
}
