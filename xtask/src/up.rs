//! `cargo xtask up`: the whole pipeline on this machine.

use std::{
    fs,
    process::{Child, Command, ExitCode, Stdio},
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;
use pipeline_runtime::kafka::KafkaArgs;
use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};

use crate::stack::{self, Stack};

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Producer rate in logs/s (0 = as fast as possible).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Extra producer arguments, e.g. `--producer-arg=--scenario=port-scan`.
    #[arg(long = "producer-arg", allow_hyphen_values = true)]
    producer_args: Vec<String>,
    /// Build and run the services with optimisations.
    #[arg(long)]
    release: bool,
    /// Partitions per topic.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// Begin from an empty broker.
    #[arg(long)]
    clean: bool,
}

const SERVICES: [&str; 3] = ["cassandra-writer", "stream-reader", "producer"];

pub async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let stack = Stack::dev(args.partitions);
    stack.start(args.clean).await?;
    let mut build = vec!["build", "--quiet"];
    for s in SERVICES {
        build.extend(["-p", s]);
    }
    crate::cargo(&build, args.release)?;
    let logs = stack.dir.join("services");
    fs::create_dir_all(&logs)?;

    let mut children: Vec<(&str, Child)> = Vec::new();
    for name in SERVICES {
        let log = fs::File::create(logs.join(format!("{name}.log")))?;
        let mut cmd = Command::new(crate::bin_path(name, args.release));
        if name == "producer" {
            cmd.arg("--rate")
                .arg(args.rate.to_string())
                .args(&args.producer_args);
        }
        let child = stack::detached(&mut cmd)
            .envs(stack.env())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {name}"))?;
        println!(
            "{name:<16} started (pid {}), log {}",
            child.id(),
            logs.join(format!("{name}.log")).display()
        );
        children.push((name, child));
    }
    println!("pipeline running; status every 5 s; Ctrl-C stops everything");
    println!("query it: cqlsh 127.0.0.1 9042 -e \"SELECT * FROM ip_logs.access_logs LIMIT 10;\"");

    let kafka = KafkaArgs::new(stack.kafka_addr());
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                match status_line(&kafka) {
                    Ok(line) => println!("{line}"),
                    Err(e) => println!("status unavailable: {e:#}"),
                }
                for (name, child) in children.iter_mut() {
                    if let Ok(Some(status)) = child.try_wait() {
                        println!("{name} exited ({status}); see {}", logs.join(format!("{name}.log")).display());
                    }
                }
            }
        }
    }
    println!(
        "stopping: producer, stream-reader, cassandra-writer (they drain and commit), then the stack"
    );
    for (name, mut child) in children.into_iter().rev() {
        stack::terminate(child.id() as i32, Duration::from_secs(30));
        let _ = child.wait();
        println!("{name:<16} stopped");
    }
    stack.stop()?;
    Ok(ExitCode::SUCCESS)
}

/// Topic sizes and consumer-group lag, read from the broker.
fn status_line(kafka: &KafkaArgs) -> anyhow::Result<String> {
    let consumer: BaseConsumer = kafka.config(&[("group.id", "xtask-status")]).create()?;
    let end = |topic: &str| -> anyhow::Result<(i64, Vec<(i32, i64)>)> {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
        let mut total = 0;
        let mut per = Vec::new();
        for t in md.topics() {
            for p in t.partitions() {
                let (_, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(5))?;
                total += high;
                per.push((p.id(), high));
            }
        }
        Ok((total, per))
    };
    let lag = |group: &str, topic: &str, ends: &[(i32, i64)]| -> anyhow::Result<i64> {
        let c: BaseConsumer = kafka.config(&[("group.id", group)]).create()?;
        let mut tpl = TopicPartitionList::new();
        for (p, _) in ends {
            tpl.add_partition(topic, *p);
        }
        let committed = c.committed_offsets(tpl, Duration::from_secs(5))?;
        let mut lag = 0;
        for (p, high) in ends {
            let pos = match committed.find_partition(topic, *p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            };
            lag += (high - pos).max(0);
        }
        Ok(lag)
    };
    let (raw, raw_parts) = end("ip_logs")?;
    let (valid, valid_parts) = end("ip_logs_validated")?;
    let (dlq, _) = end("ip_logs_dlq")?;
    Ok(format!(
        "ip_logs {raw:>9} | validated {valid:>9} | dlq {dlq:>7} | reader lag {:>7} | writer lag {:>7}",
        lag("stream-reader", "ip_logs", &raw_parts)?,
        lag("cassandra-writer", "ip_logs_validated", &valid_parts)?,
    ))
}
