//! `cargo xtask soak`: the three services at a steady rate for minutes, nobody scraping their
//! `/metrics`, with each one's resident set sampled from `/proc` over time. Flat memory is the
//! verdict: each service's RSS at the end within `--tolerance-pct` of its RSS after the first
//! minute (warm-up: client buffers, allocator arenas and caches fill during it).

use std::{
    fs,
    process::{Child, Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;

use crate::stack::{self, Stack};

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// How long the services run, in minutes.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Producer rate in logs/s.
    #[arg(long, default_value_t = 3000)]
    rate: u64,
    /// Seconds between RSS samples.
    #[arg(long, default_value_t = 30)]
    sample_secs: u64,
    /// Largest accepted growth of RSS from the end of the first minute to the end, in percent.
    #[arg(long, default_value_t = 10.0)]
    tolerance_pct: f64,
}

/// The services, their metrics ports (never scraped during the soak) and a producer flag.
const SERVICES: [(&str, u16); 3] = [
    ("cassandra-writer", 31303),
    ("stream-reader", 31302),
    ("producer", 31301),
];

pub async fn run(args: SoakArgs) -> anyhow::Result<ExitCode> {
    let mut build = vec!["build", "--quiet"];
    for (s, _) in SERVICES {
        build.extend(["-p", s]);
    }
    crate::cargo(&build, true)?;
    let stack = Stack::named("soak", 49092, 49042, 3);
    stack.start(true).await?;
    let result = soak(&stack, &args).await;
    let stopped = stack.stop();
    let code = result?;
    stopped?;
    Ok(code)
}

async fn soak(stack: &Stack, args: &SoakArgs) -> anyhow::Result<ExitCode> {
    let logs = stack.dir.join("services");
    fs::create_dir_all(&logs)?;
    let mut children: Vec<(&str, Child)> = Vec::new();
    for (name, port) in SERVICES {
        let log = fs::File::create(logs.join(format!("{name}.log")))?;
        let mut cmd = Command::new(crate::bin_path(name, true));
        if name == "producer" {
            cmd.args(["--rate", &args.rate.to_string()]);
        }
        let child = stack::detached(&mut cmd)
            .envs(stack.env())
            .env("METRICS_ADDR", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {name}"))?;
        children.push((name, child));
    }
    println!(
        "soak: {} logs/s for {} min, RSS (MiB) every {} s; nobody scrapes /metrics; logs in {}",
        args.rate,
        args.minutes,
        args.sample_secs,
        logs.display()
    );
    println!(
        "{:>6}  {:>16} {:>16} {:>16}",
        "t(s)", "cassandra-writer", "stream-reader", "producer"
    );
    let started = Instant::now();
    let end = started + Duration::from_secs(args.minutes * 60);
    let mut after_first_minute: Option<Vec<u64>> = None;
    let mut last: Vec<u64> = Vec::new();
    let mut every = tokio::time::interval(Duration::from_secs(args.sample_secs.max(1)));
    every.tick().await;
    let mut exited = None;
    while Instant::now() < end {
        every.tick().await;
        let sample: Vec<u64> = children
            .iter()
            .map(|(_, c)| stack::rss_kib(c.id() as i32).unwrap_or(0))
            .collect();
        let t = started.elapsed().as_secs();
        println!(
            "{t:>6}  {:>16.1} {:>16.1} {:>16.1}",
            mib(sample[0]),
            mib(sample[1]),
            mib(sample[2])
        );
        if after_first_minute.is_none() && t >= 60 {
            after_first_minute = Some(sample.clone());
        }
        last = sample;
        if let Some((name, status)) = children
            .iter_mut()
            .find_map(|(n, c)| c.try_wait().ok().flatten().map(|s| (*n, s)))
        {
            exited = Some(format!("{name} exited early ({status})"));
            break;
        }
    }
    let totals = throughput().await;
    for (_, child) in children.iter_mut().rev() {
        stack::terminate(child.id() as i32, Duration::from_secs(30));
        let _ = child.wait();
    }
    if let Some(why) = exited {
        anyhow::bail!("{why}; see {}", logs.display());
    }
    println!("{totals}");
    let base = after_first_minute.context("the soak needs more than one minute")?;
    let mut ok = true;
    for (i, (name, _)) in SERVICES.iter().enumerate() {
        let change = (last[i] as f64 - base[i] as f64) / base[i].max(1) as f64 * 100.0;
        let pass = change <= args.tolerance_pct;
        ok &= pass;
        println!(
            "{name:<16} RSS after 1 min {:>6.1} MiB, at the end {:>6.1} MiB, change {change:+.1} % {}",
            mib(base[i]),
            mib(last[i]),
            if pass { "PASS" } else { "FAIL" }
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One scrape at the end (after the sampling, so it did not fold the samples meanwhile): what
/// flowed.
async fn throughput() -> String {
    let mut parts = Vec::new();
    for (name, metric, port) in [
        ("produced", "producer_records_delivered_total", 31301),
        ("validated", "reader_records_out_total", 31302),
        ("written", "writer_rows_written_total", 31303),
    ] {
        let total: f64 = crate::up::get_metrics(port)
            .await
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(metric))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        parts.push(format!("{name} {total:.0}"));
    }
    format!("flowed: {}", parts.join(", "))
}
