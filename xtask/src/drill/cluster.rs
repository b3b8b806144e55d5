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

/// Committed records per second of `group` on `topic` over `window`.
async fn rate(
    kafka: &KafkaArgs,
    group: &str,
    topic: &str,
    window: Duration,
) -> anyhow::Result<f64> {
    let before = progress_retrying(kafka, group, topic).await?.1;
    tokio::time::sleep(window).await;
    let after = progress_retrying(kafka, group, topic).await?.1;
    Ok((after - before) as f64 / window.as_secs_f64())
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
    tokio::time::sleep(production / 3).await;
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
            let window = s.outage.min(Duration::from_secs(10));
            let healthy = rate(kafka, &writer_group, &names.valid, window).await?;
            let node = cassandra_node(3);
            stack.stop_node(node, true)?;
            let killed = Instant::now();
            let degraded = rate(kafka, &writer_group, &names.valid, window).await?;
            tokio::time::sleep(s.outage.saturating_sub(killed.elapsed())).await;
            let hints = hint_bytes(stack, &[3]);
            stack.resume_node(node).await?;
            let back = Instant::now();
            // Hints for the node are replayed to it, then deleted.
            wait_for("the hints to be replayed", Duration::from_secs(300), || {
                Ok(hint_bytes(stack, &[3]) == 0)
            })
            .await?;
            notes.push(format!(
                "rows_per_s_before={healthy:.0} rows_per_s_one_node_down={degraded:.0} \
                 hint_bytes={hints} hints_replayed_after={:.1}s",
                back.elapsed().as_secs_f64()
            ));
            (1, Duration::ZERO)
        }
        Drill::CassandraQuorumLoss => {
            let from = fs::metadata(log).map(|m| m.len()).unwrap_or(0);
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
            // Writes at LOCAL_QUORUM need 2 of 3 replicas: the writer retries and says so.
            let stall_lines = log_lines_since(log, from, "Unavailable");
            for n in down {
                stack.resume_node(n).await?;
            }
            let back = Instant::now();
            let recover = wait_progress(kafka, &writer_group, &names.valid, during, back).await?;
            notes.push(format!(
                "committed_while_down={} unavailable_log_lines={stall_lines} down_for={:.0}s",
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
