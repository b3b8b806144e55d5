//! `cargo xtask soak`: the three services at a steady rate for minutes, nobody scraping their
//! `/metrics`, with each one's resident set sampled from `/proc` over time. Flat memory is the
//! verdict: after the warm-up (`--warmup-minutes`: client buffers, allocator caches and the
//! open windows fill during it), each service's median RSS over the last stretch of the run is
//! within `--tolerance-pct` of its median over the first stretch after the warm-up (a stretch
//! is 5 minutes, or half of what follows the warm-up if that is shorter). Medians, because an
//! allocator that returns memory (jemalloc) makes the RSS follow the live heap up and down.

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
    /// Minutes of warm-up before the first stretch.
    #[arg(long, default_value_t = 2)]
    warmup_minutes: u64,
    /// Largest accepted growth of the median RSS from the first stretch after the warm-up to
    /// the last one, in percent.
    #[arg(long, default_value_t = 5.0)]
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
    let mut samples: Vec<(u64, Vec<u64>)> = Vec::new();
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
        samples.push((t, sample));
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
    let warmup = args.warmup_minutes * 60;
    let run = args.minutes * 60;
    let stretch = 300.min(run.saturating_sub(warmup) / 2);
    anyhow::ensure!(
        stretch >= args.sample_secs,
        "the soak needs more than {} minutes after the warm-up",
        2 * args.sample_secs.div_ceil(60)
    );
    let median = |i: usize, from: u64, to: u64| {
        let mut v: Vec<u64> = samples
            .iter()
            .filter(|(t, _)| (from..=to).contains(t))
            .map(|(_, s)| s[i])
            .collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    let mut ok = true;
    for (i, (name, _)) in SERVICES.iter().enumerate() {
        let first = median(i, warmup, warmup + stretch);
        let last = median(i, run - stretch, run);
        let change = (last as f64 - first as f64) / first.max(1) as f64 * 100.0;
        let pass = change <= args.tolerance_pct;
        ok &= pass;
        println!(
            "{name:<16} median RSS {}–{} min {:>6.1} MiB, {}–{} min {:>6.1} MiB, change {change:+.1} % {}",
            warmup / 60,
            (warmup + stretch) / 60,
            mib(first),
            (run - stretch) / 60,
            run / 60,
            mib(last),
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
