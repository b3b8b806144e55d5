//! Measuring a run: service processes, CPU and memory, topic sizes, committed offsets.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Child,
    time::{Duration, Instant},
};

use anyhow::bail;
use pipeline_runtime::kafka::KafkaArgs;
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};

pub(crate) fn bin(name: &str) -> PathBuf {
    crate::bin_path(name, true)
}

pub(crate) fn service(
    name: &str,
    args: &[&str],
    env: &[(String, String)],
    log: &Path,
) -> anyhow::Result<Child> {
    crate::spawn_logged(&bin(name), args, env, log)
}

/// Peak resident set (VmHWM) of a running process, in MB.
pub(crate) fn peak_rss_mb(pid: u32) -> f64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU time (user + system) a running process has used so far, in seconds.
pub(crate) fn process_cpu_secs(pid: i32) -> f64 {
    // /proc/<pid>/stat: fields 14 and 15 (utime, stime) in clock ticks, after the `(comm)`.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            #[allow(unsafe_code)] // reason: sysconf(3) has no std wrapper; it reads a constant
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
            Some(ticks / hz.max(1.0))
        })
        .unwrap_or(0.0)
}

/// CPU time (user + system) of this process's waited-for children so far, in seconds.
pub(crate) fn children_cpu_secs() -> f64 {
    #[allow(unsafe_code)] // reason: getrusage(2) has no std wrapper; it only fills the struct
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

pub(crate) fn stop(child: &mut Child) {
    crate::stack::terminate(child.id() as i32, Duration::from_secs(40));
    let _ = child.wait();
}

pub(crate) fn topic_size(kafka: &KafkaArgs, topic: &str) -> anyhow::Result<i64> {
    let c: BaseConsumer = kafka.config(&[])?.create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut total = 0;
    for t in md.topics() {
        for p in t.partitions() {
            total += c
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))?
                .1;
        }
    }
    Ok(total)
}

/// (key, payload) records.
pub(crate) type Records = Vec<(Option<Vec<u8>>, Vec<u8>)>;

/// Every committed record of `topic` ([`crate::topics::read_committed`]).
pub(crate) fn read_all(kafka: &KafkaArgs, topic: &str) -> anyhow::Result<Records> {
    crate::topics::read_committed(kafka, topic, Duration::from_secs(300), |m| {
        (
            m.key().map(<[u8]>::to_vec),
            m.payload().unwrap_or_default().to_vec(),
        )
    })
}

/// Sum of `group`'s committed offsets on `topic`.
fn committed_sum(kafka: &KafkaArgs, group: &str, topic: &str) -> anyhow::Result<i64> {
    let c: BaseConsumer = kafka.config(&[("group.id", group)])?.create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition(topic, p.id());
        }
    }
    Ok(c.committed_offsets(tpl, Duration::from_secs(10))?
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum())
}

/// Waits until `group` committed `n` offsets of `topic`; returns how long it took.
pub(crate) async fn wait_committed(
    kafka: &KafkaArgs,
    group: &str,
    topic: &str,
    n: i64,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let committed = committed_sum(kafka, group, topic).unwrap_or(0);
        if committed >= n {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!("{group} committed {committed} of {n} offsets of {topic} in {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn wait_size(
    kafka: &KafkaArgs,
    topics: &[&str],
    n: i64,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    // One client and one metadata lookup for the whole wait: a new client per check costs tens
    // of milliseconds, which was the resolution of every stage's clock (a 50,000-record drain
    // takes a few hundred).
    let c: BaseConsumer = kafka.config(&[])?.create()?;
    let mut partitions = Vec::new();
    loop {
        // Until every topic has partitions (one may be created by its first write).
        if partitions.is_empty()
            || topics
                .iter()
                .any(|t| !partitions.iter().any(|(pt, _)| pt == t))
        {
            partitions.clear();
            for t in topics {
                let md = c.fetch_metadata(Some(t), Duration::from_secs(10))?;
                for p in md.topics().iter().flat_map(|t| t.partitions()) {
                    partitions.push((*t, p.id()));
                }
            }
        }
        let mut total = 0;
        for (t, p) in &partitions {
            total += c.fetch_watermarks(t, *p, Duration::from_secs(10))?.1;
        }
        if total >= n {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!("only {total} of {n} records on {topics:?} after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Migrates the keyspace `env` names with the release build.
pub(crate) fn migrate(env: &[(String, String)]) -> anyhow::Result<()> {
    crate::procs::migrate(true, env, None)
}

/// Median, min and max of samples (at least one).
pub(crate) fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}
