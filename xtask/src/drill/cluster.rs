//! The faults of the cluster drills (`cargo xtask drill --cluster`): a partition leader's
//! broker killed, a rolling restart of every broker, the transaction (or group) coordinator's
//! broker killed, one Cassandra node killed, two Cassandra nodes down. Each returns what it
//! measured beside the reconciliation: recovery, throughput while degraded, hints replayed,
//! replicas back in sync.

use std::path::Path;

use super::*;
use crate::stack::Node;

/// What a cluster fault measured.
pub(super) struct Fault {
    pub faults: usize,
    /// From the fault until the affected stage committed progress again.
    pub recover: Duration,
    /// Measurements for the result line, `key=value`.
    pub notes: Vec<String>,
}

/// Java's `String.hashCode` (Kafka maps a group or transactional id to a partition of its
/// internal topic with it).
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The partition of `__consumer_offsets` / `__transaction_state` (50 each, Kafka's default)
/// that coordinates `id`: `Utils.abs(id.hashCode()) % 50`.
fn coordinator_partition(id: &str) -> i32 {
    (java_hash(id) & 0x7fff_ffff) % 50
}

/// The broker (= node number) leading `partition` of `topic`.
fn leader(kafka: &KafkaArgs, topic: &str, partition: i32) -> anyhow::Result<u8> {
    let c = consumer(kafka, "drill-metadata")?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let p = md
        .topics()
        .first()
        .and_then(|t| t.partitions().iter().find(|p| p.id() == partition))
        .with_context(|| format!("no metadata for {topic}/{partition}"))?;
    u8::try_from(p.leader()).with_context(|| format!("{topic}/{partition} has no leader"))
}

/// Partitions of `topics` with fewer in-sync replicas than replicas.
fn under_replicated(kafka: &KafkaArgs, topics: &[&str]) -> anyhow::Result<usize> {
    let c = consumer(kafka, "drill-metadata")?;
    let mut n = 0;
    for topic in topics {
        let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in md.topics() {
            n += t
                .partitions()
                .iter()
                .filter(|p| p.isr().len() < p.replicas().len())
                .count();
        }
    }
    Ok(n)
}

/// Waits until no partition of `topics` is under-replicated; returns how long it took.
async fn wait_in_sync(kafka: &KafkaArgs, topics: &[&str]) -> anyhow::Result<Duration> {
    let t = Instant::now();
    wait_for(
        "every replica back in sync",
        Duration::from_secs(180),
        || Ok(under_replicated(kafka, topics)? == 0),
    )
    .await?;
    Ok(t.elapsed())
}

/// Waits until `group` commits past `before` on `topic` (or has nothing left); the time it
/// took from `since`.
async fn wait_progress(
    kafka: &KafkaArgs,
    group: &str,
    topic: &str,
    before: i64,
    since: Instant,
) -> anyhow::Result<Duration> {
    wait_for("progress after the fault", Duration::from_secs(180), || {
        let (_, committed) = progress(kafka, group, topic)?;
        Ok(committed > before || caught_up(kafka, group, topic)?)
    })
    .await?;
    Ok(since.elapsed())
}

/// The writer's status lines (every 5 s) in `log` between byte offsets `from` and `to`: (mean
/// rows/s, highest p99 write latency in ms), `None` without a line.
fn writer_status(log: &Path, from: u64, to: u64) -> Option<(f64, f64)> {
    let bytes = fs::read(log).ok()?;
    let (from, to) = (from as usize, (to as usize).min(bytes.len()));
    let text = String::from_utf8_lossy(bytes.get(from..to)?);
    let field = |line: &str, name: &str| -> Option<f64> {
        line.split(&format!("{name}=\""))
            .nth(1)?
            .split('"')
            .next()?
            .parse()
            .ok()
    };
    let samples: Vec<(f64, f64)> = text
        .lines()
        .map(pipeline_runtime::telemetry::without_colours)
        .filter(|l| l.contains("cassandra_writer::writer") && l.contains(" status "))
        .filter_map(|l| Some((field(&l, "rows_per_s")?, field(&l, "write_p99_ms")?)))
        .collect();
    if samples.is_empty() {
        return None;
    }
    let rate = samples.iter().map(|s| s.0).sum::<f64>() / samples.len() as f64;
    let p99 = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    Some((rate, p99))
}

fn log_len(log: &Path) -> u64 {
    fs::metadata(log).map(|m| m.len()).unwrap_or(0)
}

fn status_note(label: &str, status: Option<(f64, f64)>) -> String {
    match status {
        Some((rate, p99)) => format!("rows_per_s_{label}={rate:.0} write_p99_ms_{label}={p99:.0}"),
        None => format!("rows_per_s_{label}=n/a"),
    }
}

/// Bytes of hint files on the Cassandra nodes other than `down` (hints for it, written while
/// it was away, replayed once it is back).
fn hint_bytes(stack: &Stack, down: &[u8]) -> u64 {
    (1..=stack.nodes)
        .filter(|n| !down.contains(n))
        .filter_map(|n| fs::read_dir(stack.dir.join(format!("cassandra{n}-data/hints"))).ok())
        .flatten()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Lines of `log` after byte `from` that contain `needle`.
fn log_lines_since(log: &Path, from: u64, needle: &str) -> usize {
    fs::read(log)
        .map(|b| {
            String::from_utf8_lossy(&b[(from as usize).min(b.len())..])
                .lines()
                .filter(|l| l.contains(needle))
                .count()
        })
        .unwrap_or(0)
}

/// Injects `drill`'s fault a third into the production and returns what it measured.
#[allow(clippy::too_many_arguments)] // reason: the drill's context, passed as it is
pub(super) async fn inject(
    stack: &Stack,
    drill: Drill,
    kafka: &KafkaArgs,
    names: &Names,
    s: &Settings,
    production: Duration,
    log: &Path,
) -> anyhow::Result<Fault> {
    if stack.nodes < 3 {
        bail!("the {drill:?} drill needs a cluster: cargo xtask drill --cluster");
    }
    let reader_group = format!("{}_reader", names.tag);
    let writer_group = format!("{}_writer", names.tag);
    let topics: Vec<&str> = vec![
        &names.raw,
        &names.valid,
        &names.dlq,
        &names.stats,
        &names.alerts,
    ];
    let kafka_node = |index| Node {
        server: Server::Kafka,
        index,
    };
    let cassandra_node = |index| Node {
        server: Server::Cassandra,
        index,
    };
    // A steady-state fault: a third into the production, and never before the stream-reader
    // committed its first progress. A kill during the services' first group join and first
    // transaction is another failure (RELIABILITY.md, "Failures found").
    let start = Instant::now();
    wait_for(
        "the stream-reader's first commit",
        Duration::from_secs(120),
        || Ok(progress(kafka, &reader_group, &names.raw)?.1 > 0),
    )
    .await?;
    tokio::time::sleep((production / 3).saturating_sub(start.elapsed())).await;
    let mut notes = Vec::new();
    let (faults, recover) = match drill {
        Drill::LeaderKill | Drill::CoordinatorKill => {
            let victim = if drill == Drill::LeaderKill {
                leader(kafka, &names.raw, 0)?
            } else {
                // The validation stage's transaction coordinator (exactly-once), or its
                // group coordinator (at-least-once).
                let (internal, id) = match s.delivery {
                    Delivery::ExactlyOnce => (
                        "__transaction_state",
                        format!("{}_reader_a-validation", names.tag),
                    ),
                    Delivery::AtLeastOnce => ("__consumer_offsets", reader_group.clone()),
                };
                leader(kafka, internal, coordinator_partition(&id))?
            };
            notes.push(format!("killed=kafka{victim}"));
            let before = progress_retrying(kafka, &reader_group, &names.raw).await?.1;
            let killed = Instant::now();
            stack.stop_node(kafka_node(victim), true)?;
            let recover = wait_progress(kafka, &reader_group, &names.raw, before, killed).await?;
            let left = s.outage.saturating_sub(killed.elapsed());
            tokio::time::sleep(left).await;
            stack.resume_node(kafka_node(victim)).await?;
            let sync = wait_in_sync(kafka, &topics).await?;
            notes.push(format!("in_sync_after={:.1}s", sync.as_secs_f64()));
            (1, recover)
        }
        Drill::RollingRestart => {
            let started = Instant::now();
            let mut worst = Duration::ZERO;
            for index in 1..=stack.nodes {
                let before = progress_retrying(kafka, &reader_group, &names.raw).await?.1;
                let t = Instant::now();
                stack.restart_node(kafka_node(index), false).await?;
                worst =
                    worst.max(wait_progress(kafka, &reader_group, &names.raw, before, t).await?);
                // The next broker goes only once every replica is back in sync, as an
                // operator's rolling restart waits for under-replicated partitions to be 0.
                wait_in_sync(kafka, &topics).await?;
            }
            notes.push(format!(
                "rolling_restart={:.0}s",
                started.elapsed().as_secs_f64()
            ));
            (usize::from(stack.nodes), worst)
        }
        Drill::CassandraNodeKill => {
            // Throughput and write latency from the writer's status lines: the same span
            // before the kill, while the node is down, and once it is back.
            let before = log_len(log);
            tokio::time::sleep(s.outage / 2).await;
            let node = cassandra_node(3);
            let killed_at = log_len(log);
            stack.stop_node(node, true)?;
            let killed = Instant::now();
            tokio::time::sleep(s.outage.saturating_sub(killed.elapsed())).await;
            let hints = hint_bytes(stack, &[3]);
            let resumed_at = log_len(log);
            stack.resume_node(node).await?;
            let back = Instant::now();
            // Hints for the node are replayed to it, then deleted.
            wait_for("the hints to be replayed", Duration::from_secs(300), || {
                Ok(hint_bytes(stack, &[3]) == 0)
            })
            .await?;
            let replayed = back.elapsed();
            let after_from = log_len(log);
            tokio::time::sleep(s.outage / 2).await;
            notes.push(status_note("before", writer_status(log, before, killed_at)));
            notes.push(status_note(
                "down",
                writer_status(log, killed_at, resumed_at),
            ));
            notes.push(status_note(
                "after",
                writer_status(log, after_from, log_len(log)),
            ));
            notes.push(format!(
                "hint_bytes={hints} hints_replayed_after={:.1}s",
                replayed.as_secs_f64()
            ));
            (1, Duration::ZERO)
        }
        Drill::CassandraQuorumLoss => {
            let from = log_len(log);
            let down = [cassandra_node(2), cassandra_node(3)];
            for n in down {
                stack.stop_node(n, true)?;
            }
            let stalled = Instant::now();
            let before = progress_retrying(kafka, &writer_group, &names.valid)
                .await?
                .1;
            tokio::time::sleep(s.outage).await;
            let during = progress_retrying(kafka, &writer_group, &names.valid)
                .await?
                .1;
            // Writes at LOCAL_QUORUM need 2 of 3 replicas: the writer retries and says so
            // (rate-limited warnings; `/readyz` names the stalled partitions meanwhile).
            let stall_lines = log_lines_since(log, from, "write failed, retrying");
            for n in down {
                stack.resume_node(n).await?;
            }
            let back = Instant::now();
            let recover = wait_progress(kafka, &writer_group, &names.valid, during, back).await?;
            notes.push(format!(
                "committed_while_down={} retry_warnings={stall_lines} down_for={:.0}s",
                during - before,
                back.duration_since(stalled).as_secs_f64()
            ));
            (2, recover)
        }
        other => bail!("{other:?} is not a cluster drill"),
    };
    Ok(Fault {
        faults,
        recover,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_status_reads_rate_and_p99_from_coloured_lines() {
        let dir = std::env::temp_dir().join(format!("status-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("log");
        let line = |rate: u32, p99: f64| {
            format!(
                "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2mcassandra_writer::writer\u{1b}[0m\u{1b}[2m:\u{1b}[0m status \u{1b}[3mrows_per_s\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"{rate}\" \u{1b}[3mwrite_p99_ms\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"{p99:.2}\"\n"
            )
        };
        let text = format!("{}other line\n{}", line(300, 12.5), line(100, 80.25));
        fs::write(&log, &text).expect("write");
        assert_eq!(
            writer_status(&log, 0, text.len() as u64),
            Some((200.0, 80.25))
        );
        assert_eq!(writer_status(&log, 0, 0), None);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn coordinator_partition_matches_kafka() {
        // Values of Java's "…".hashCode(), as Kafka computes them.
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("a"), 97);
        assert_eq!(java_hash("hello"), 99_162_322);
        assert_eq!(java_hash("polygenelubricants"), i32::MIN);
        assert_eq!(coordinator_partition("polygenelubricants"), 0);
        assert!((0..50).contains(&coordinator_partition("drill_x_reader_a-validation")));
    }
}
