//! Exact analytics: the windows emitted after crashes, restarts and rebalances equal an
//! independent reference model of the stated rule, computed from what the validation stage
//! wrote; Cassandra holds one row per (minute, source); memory stays bounded under a million
//! sources in one minute.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use log_schema::{Alert, AlertRule, DeadLetter, TargetStats, ValidatedRecord, WindowStats};
use pipeline_runtime::{kafka::KafkaOption, transaction::Delivery};
use producer::{Generator, GeneratorConfig, Scenario};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use stream_reader::{
    ReaderStats,
    reference::{By, Figures, Reference, reference_by},
};
use tokio_util::sync::CancellationToken;

use crate::{
    analytics::{closers, stats_of},
    reader::{self, Topics},
    support::{self, DEADLINE},
};

pub(crate) type Raw = (Option<Vec<u8>>, Vec<u8>);

pub(crate) fn minute(ago: i64) -> DateTime<Utc> {
    (Utc::now() - TimeDelta::minutes(ago))
        .duration_trunc(TimeDelta::minutes(1))
        .expect("trunc")
}

/// `n` records over `minutes` of event time from `start`: ordinary traffic and attack bursts,
/// 1 % invalid, 3 % of the events up to 7 minutes late, unkeyed or randomly keyed (so one
/// source lands on every raw partition).
pub(crate) fn traffic(seed: u64, start: DateTime<Utc>, n: usize, minutes: i64) -> Vec<Raw> {
    let mut g = Generator::new(GeneratorConfig {
        seed,
        hosts: 300,
        invalid_ratio: 0.01,
        scenarios: vec![Scenario::PortScan, Scenario::DenyBurst],
        scenario_interval: TimeDelta::seconds(120),
        ..Default::default()
    });
    let mut rng = StdRng::seed_from_u64(seed);
    let step = minutes * 60_000 / n as i64;
    let mut buf = Vec::new();
    (0..n)
        .map(|i| {
            let mut at = start + TimeDelta::milliseconds(i as i64 * step);
            if rng.random_bool(0.03) {
                at -= TimeDelta::seconds(rng.random_range(5..420));
            }
            g.next_into(at, &mut buf);
            let key = rng
                .random_bool(0.5)
                .then(|| rng.random::<u64>().to_string().into_bytes());
            (key, buf.clone())
        })
        .collect()
}

/// Every emission of a window on `topic` is identical; returns the last one per window
/// (`key`: its address and start) older than `cutoff`.
fn final_windows<S: Clone + PartialEq + std::fmt::Debug>(
    topic: &str,
    cutoff: DateTime<Utc>,
    decode: fn(&[u8]) -> S,
    key: fn(&S) -> (IpAddr, DateTime<Utc>),
) -> BTreeMap<(IpAddr, DateTime<Utc>), S> {
    let mut out = BTreeMap::new();
    // read_committed to the end: in exactly-once mode the topic holds transaction markers and
    // aborted records, which a count of its offsets would wait for in vain.
    for r in support::read_to_end(topic, DEADLINE) {
        let s = decode(&r.payload);
        let (ip, start) = key(&s);
        if start < cutoff
            && let Some(previous) = out.insert((ip, start), s.clone())
        {
            assert_eq!(
                previous, s,
                "a window emitted twice carries the same statistics"
            );
        }
    }
    out
}

/// The source windows on `topic` ([`final_windows`]).
pub(crate) fn final_stats(
    topic: &str,
    cutoff: DateTime<Utc>,
) -> BTreeMap<(IpAddr, DateTime<Utc>), WindowStats> {
    final_windows(
        topic,
        cutoff,
        |p| WindowStats::from_json(p).expect("window stats"),
        |s| (s.source_ip, s.window_start),
    )
}

/// The destination windows on `topic` ([`final_windows`]).
pub(crate) fn final_targets(
    topic: &str,
    cutoff: DateTime<Utc>,
) -> BTreeMap<(IpAddr, DateTime<Utc>), TargetStats> {
    final_windows(
        topic,
        cutoff,
        |p| TargetStats::from_json(p).expect("target stats"),
        |s| (s.destination_ip, s.window_start),
    )
}

/// The reference of `by`'s windows over what the validation stage committed to `topic`, with
/// the idle steps committed for it by the stream-readers logging to `logs`; only the windows
/// before `cutoff`.
fn reference_over(
    by: By,
    topic: &str,
    lateness: TimeDelta,
    logs: &[&str],
    cutoff: DateTime<Utc>,
) -> Reference {
    let records = support::read_to_end(topic, DEADLINE);
    let mut r = reference_by(
        by,
        records.iter().map(|r| {
            let v = ValidatedRecord::from_json(&r.payload).expect("validated record");
            (r.partition, r.offset, v)
        }),
        lateness,
        &support::idle_steps(logs, topic),
    );
    r.windows.retain(|(_, m), _| *m < cutoff);
    r
}

/// The destination windows' reference over the by-destination topic ([`reference_over`]).
pub(crate) fn target_reference_of(
    t: &Topics,
    lateness: TimeDelta,
    logs: &[&str],
    cutoff: DateTime<Utc>,
) -> Reference {
    reference_over(By::Destination, &t.by_destination, lateness, logs, cutoff)
}

/// The by-destination topic holds every validated record once, keyed by its destination, as
/// the validated topic holds it keyed by its source (duplicates aside: compared by event id,
/// which the input coordinates determine).
pub(crate) fn assert_copies_match(t: &Topics) {
    let coordinates = |topic: &str, key: fn(&ValidatedRecord) -> IpAddr| {
        support::read_to_end(topic, DEADLINE)
            .iter()
            .map(|r| {
                let v = ValidatedRecord::from_json(&r.payload).expect("validated record");
                assert_eq!(
                    r.key.as_deref(),
                    Some(key(&v).to_string().as_bytes()),
                    "keyed by its address"
                );
                v.event_id
            })
            .collect::<BTreeSet<_>>()
    };
    let validated = coordinates(&t.validated, |v| v.source_ip);
    let copies = coordinates(&t.by_destination, |v| v.destination_ip);
    assert!(!validated.is_empty());
    assert_eq!(
        validated, copies,
        "one copy keyed by destination per validated record"
    );
}

/// Compares the emitted windows with the reference, field by field.
pub(crate) fn assert_matches<F: Figures>(
    got_stats: &BTreeMap<(IpAddr, DateTime<Utc>), F>,
    r: &Reference,
) {
    let differing = r.differences(got_stats);
    assert!(
        differing.is_empty(),
        "windows differ from the reference (window, reference events, emitted events): {:?}",
        &differing[..differing.len().min(5)]
    );
}

/// The source windows' reference over the validated topic ([`reference_over`]).
pub(crate) fn reference_of(
    t: &Topics,
    lateness: TimeDelta,
    logs: &[&str],
    cutoff: DateTime<Utc>,
) -> Reference {
    reference_over(By::Source, &t.validated, lateness, logs, cutoff)
}

/// Waits until the validation stage committed all `n` input records and the analytics stage
/// emitted every window the reference closes so far. Idle steps may still close more: the
/// final reference is taken once the stream-readers stopped.
pub(crate) async fn settle(
    t: &Topics,
    n: i64,
    cutoff: DateTime<Utc>,
    lateness: TimeDelta,
    logs: &[&str],
) {
    support::wait_until(DEADLINE * 3, "every input record committed", || {
        support::committed(&t.group, &t.input).values().sum::<i64>() == n
    })
    .await;
    let r = reference_of(t, lateness, logs, cutoff);
    support::wait_until(DEADLINE * 3, "every reference window emitted", || {
        let emitted = final_stats(&t.stats, cutoff);
        r.windows.keys().all(|k| emitted.contains_key(k))
    })
    .await;
    if support::topic_size(&t.by_destination) > 0 {
        let r = target_reference_of(t, lateness, logs, cutoff);
        support::wait_until(DEADLINE * 3, "every destination window emitted", || {
            let emitted = final_targets(&t.target_stats, cutoff);
            r.windows.keys().all(|k| emitted.contains_key(k))
        })
        .await;
    }
}

/// Every input offset ended on the validated topic or the DLQ (counted by source offset).
fn assert_nothing_lost(t: &Topics, n: i64) {
    let mut seen = BTreeSet::new();
    for r in support::read_topic(
        &t.validated,
        support::topic_size(&t.validated) as usize,
        DEADLINE,
    ) {
        let s = ValidatedRecord::from_json(&r.payload)
            .expect("validated")
            .source
            .expect("source");
        seen.insert((s.partition, s.offset));
    }
    for r in support::read_topic(&t.dlq, support::topic_size(&t.dlq) as usize, DEADLINE) {
        let d = DeadLetter::from_json(&r.payload).expect("dead letter");
        seen.insert((d.source.partition, d.source.offset));
    }
    assert_eq!(seen.len() as i64, n, "every input record is on an output");
}

#[tokio::test(flavor = "multi_thread")]
async fn twelve_sigkills_emit_exactly_the_reference_windows_once_each_in_cassandra() {
    let t = reader::topics("exact").await;
    let keyspace = support::fresh_keyspace().await;
    // A backlog: the validation stage interleaves the raw partitions in fetch-sized chunks,
    // minutes of event time apart, so the lateness must cover that (see docs/analytics.md, "Analytics
    // guarantee").
    let lateness = TimeDelta::seconds(300);
    let records = traffic(11, minute(80), 30_000, 10);
    support::produce(&t.input, &records).await;
    let env = t.env(&[
        ("READER_ALLOWED_LATENESS_SECS", "300".to_owned()),
        ("KAFKA_OPTIONS", "session.timeout.ms=6000".to_owned()),
        ("READER_DESTINATION_WINDOWS", "true".to_owned()),
    ]);
    let mut service = support::spawn_service("stream-reader", &t.group, &env);
    let n = records.len() as i64;
    let mut kills = 0;
    let mut after_output = 0;
    for k in 0..12 {
        if k == 9 {
            // The closing wave: most windows close at once; kill inside it.
            support::produce(&t.input, &closers()).await;
        }
        if k % 3 == 1 || k >= 9 {
            // Right after an output was emitted (if one comes: a restarted instance may have
            // nothing left to emit; then the kill is just another kill point).
            let before = support::topic_size(&t.stats);
            let deadline = std::time::Instant::now() + DEADLINE;
            while support::topic_size(&t.stats) <= before && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            after_output += usize::from(support::topic_size(&t.stats) > before);
        } else {
            let target = support::topic_size(&t.validated) + n / 20;
            support::wait_until(DEADLINE * 2, "validation progress", || {
                support::topic_size(&t.validated) >= target
            })
            .await;
        }
        support::kill9(&mut service);
        kills += 1;
        service = support::spawn_service("stream-reader", &t.group, &env);
    }
    assert!(
        after_output >= 3,
        "kills right after an output: {after_output}"
    );
    settle(&t, n + 64, minute(30), lateness, &[&t.group]).await;
    assert!(support::terminate(&mut service).success());
    let r = reference_of(&t, lateness, &[&t.group], minute(30));
    assert_eq!(kills, 12);
    assert_nothing_lost(&t, n + 64);
    assert!(r.windows.len() > 1_000, "many windows: {}", r.windows.len());
    assert!(r.late > 0, "the disorder makes some events late");
    assert!(
        r.duplicates > 0,
        "the kills made the validation stage emit duplicates"
    );
    let emitted = final_stats(&t.stats, minute(30));
    assert_matches(&emitted, &r);
    assert_copies_match(&t);
    let targets_reference = target_reference_of(&t, lateness, &[&t.group], minute(30));
    assert!(
        targets_reference.windows.len() > 100,
        "many destination windows: {}",
        targets_reference.windows.len()
    );
    assert!(
        targets_reference.duplicates > 0,
        "the copies have duplicates too"
    );
    let targets = final_targets(&t.target_stats, minute(30));
    assert_matches(&targets, &targets_reference);

    // Alerts: exactly those the reference windows trigger, each emission identical.
    let thresholds = [
        (AlertRule::PortScan, 100),
        (AlertRule::Flood, 5_000),
        (AlertRule::DenyBurst, 100),
        (AlertRule::HostSweep, 100),
    ];
    let mut want_alerts = BTreeSet::new();
    for s in emitted.values() {
        for (rule, threshold) in thresholds {
            if let Some(a) = Alert::evaluate(rule, s, threshold) {
                want_alerts.insert(a.alert_id);
            }
        }
        want_alerts.extend(Alert::threat_matches(s, 1).iter().map(|a| a.alert_id));
    }
    for s in targets.values() {
        if let Some(a) = Alert::evaluate_target(s, 500, 20_000) {
            want_alerts.insert(a.alert_id);
        }
        want_alerts.extend(
            Alert::target_threat_matches(s, 1)
                .iter()
                .map(|a| a.alert_id),
        );
    }
    let n_alerts = support::topic_size(&t.alerts) as usize;
    let mut alerts: BTreeMap<uuid::Uuid, Alert> = BTreeMap::new();
    for a in support::read_topic(&t.alerts, n_alerts, DEADLINE) {
        let a = Alert::from_json(&a.payload).expect("alert");
        if a.window_start < minute(30)
            && let Some(previous) = alerts.insert(a.alert_id, a.clone())
        {
            assert_eq!(previous, a, "an alert emitted twice is identical");
        }
    }
    assert!(!want_alerts.is_empty(), "the scenarios trigger alerts");
    assert_eq!(alerts.keys().copied().collect::<BTreeSet<_>>(), want_alerts);

    // Cassandra: the writer's upserts give one row per window in both tables.
    let wstats = Arc::new(cassandra_writer::writer::WriterStats::default());
    let stop = CancellationToken::new();
    let writer = tokio::spawn(cassandra_writer::writer::run_until(
        crate::analytics::writer_args(&t, &keyspace),
        stop.clone(),
        wstats.clone(),
    ));
    let session = support::session(&keyspace).await;
    let mut talkers: Vec<(DateTime<Utc>, i64, String)> = Vec::new();
    for _ in 0..600 {
        let result = session
            .query_unpaged(
                format!(
                    "SELECT window_start, events, source_ip FROM {keyspace}.top_talkers_by_minute"
                ),
                (),
            )
            .await
            .expect("select");
        talkers = result
            .into_rows_result()
            .expect("rows")
            .rows::<(DateTime<Utc>, i64, String)>()
            .expect("typed")
            .map(|r| r.expect("row"))
            .filter(|r| r.0 < minute(30))
            .collect();
        if talkers.len() >= r.windows.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let want_targets: BTreeMap<(String, DateTime<Utc>), Vec<i64>> = targets_reference
        .windows
        .iter()
        .map(|((ip, m), w)| ((ip.to_string(), *m), vec![w.events]))
        .collect();
    let mut top_targets: BTreeMap<(String, DateTime<Utc>), Vec<i64>> = BTreeMap::new();
    for _ in 0..600 {
        let rows = session
            .query_unpaged(
                format!(
                    "SELECT window_start, events, destination_ip FROM {keyspace}.top_targets_by_minute"
                ),
                (),
            )
            .await
            .expect("select")
            .into_rows_result()
            .expect("rows")
            .rows::<(DateTime<Utc>, i64, String)>()
            .expect("typed")
            .map(|r| r.expect("row"))
            .filter(|r| r.0 < minute(30))
            .collect::<Vec<_>>();
        top_targets.clear();
        for (m, events, ip) in rows {
            top_targets.entry((ip, m)).or_default().push(events);
        }
        if top_targets.len() >= want_targets.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    writer.await.expect("join").expect("writer stopped cleanly");
    assert_eq!(
        top_targets, want_targets,
        "top_targets_by_minute: one row per destination window, the reference's count"
    );
    let mut rows_per_window: BTreeMap<(String, DateTime<Utc>), Vec<i64>> = BTreeMap::new();
    for (m, events, ip) in talkers {
        rows_per_window.entry((ip, m)).or_default().push(events);
    }
    let want_rows: BTreeMap<(String, DateTime<Utc>), Vec<i64>> = r
        .windows
        .iter()
        .map(|((ip, m), w)| ((ip.to_string(), *m), vec![w.events]))
        .collect();
    assert_eq!(
        rows_per_window, want_rows,
        "top_talkers_by_minute: one row per window, the reference's count"
    );
}

/// Idle steps in a matrix test.
#[derive(Clone, Copy)]
enum Idle {
    /// `READER_IDLE_FLUSH_MS` as users get it.
    Default,
    /// `READER_IDLE_FLUSH_MS=0`: only event time closes windows.
    Off,
}

/// Two instances of the analytics stage, the second joining mid-stream and the first leaving
/// mid-stream, under the given assignment protocol, delivery mode and idle flush; the windows
/// equal the reference.
async fn revocation_is_per_partition(name: &str, options: &[&str], delivery: Delivery, idle: Idle) {
    support::log_in_process();
    let t = reader::topics(name).await;
    let lateness = TimeDelta::seconds(60);
    let start = minute(80);
    let records = traffic(23, start, 12_000, 8);
    // The first half ends just before start + 4 min: event time alone closes the minutes
    // before start + 2 min, an idle step after it those before start + 3 min. The stragglers,
    // dated start + 2.5 min, arrive after the pause: late only if the step was taken.
    let stragglers: Vec<Raw> = (0..64)
        .map(|i| {
            let at = start + TimeDelta::seconds(150);
            crate::analytics::raw(at, &format!("198.51.100.{i}"), 9, 1, "ALLOW")
        })
        .collect();
    let n = (records.len() + stragglers.len()) as i64;
    let (first, second) = records.split_at(records.len() / 2);
    let logs = [support::IN_PROCESS_LOG];
    // The defaults users get, but for what the test is about: the lateness its traffic needs,
    // the protocol, and the idle flush.
    let mut args = reader::defaults(&t, delivery);
    args.allowed_lateness_secs = 60;
    // The destination windows are under the same guarantee, in the same runs.
    args.destination_windows = true;
    if let Idle::Off = idle {
        args.idle_flush_ms = 0;
    }
    args.kafka.options = options
        .iter()
        .map(|o| o.parse::<KafkaOption>().expect("option"))
        .collect();
    args.kafka
        .options
        .push("session.timeout.ms=6000".parse().expect("option"));
    if options.iter().any(|o| o.starts_with("group.protocol")) {
        args.kafka.options.retain(|o| o.key != "session.timeout.ms");
    }
    let start = |mut args: stream_reader::ReaderArgs, instance: &str| {
        // Two instances in one process: their transactional ids must differ.
        args.transactional_id = format!("{}-{instance}", t.group);
        let stop = CancellationToken::new();
        let stats = Arc::new(ReaderStats::default());
        let task = tokio::spawn(stream_reader::run_until(args, stop.clone(), stats.clone()));
        (stop, stats, task)
    };
    let analytics = |s: &ReaderStats| {
        s.analytics_partitions
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    support::produce(&t.input, first).await;
    let (stop_a, stats_a, mut a) = start(args.clone(), "a");
    support::wait_until(DEADLINE, "instance A working", || {
        support::topic_size(&t.stats) > 0
    })
    .await;
    assert_eq!(analytics(&stats_a), 3, "A holds every validated partition");
    let (stop_b, stats_b, mut b) = start(args.clone(), "b");
    support::wait_until(DEADLINE, "B took partitions from A", || {
        analytics(&stats_b) > 0 && analytics(&stats_a) + analytics(&stats_b) == 3
    })
    .await;
    if let Idle::Default = idle {
        support::wait_until(DEADLINE, "an idle step on every partition", || {
            let steps = support::idle_steps(&logs, &t.validated);
            steps
                .iter()
                .map(|s| s.partition)
                .collect::<BTreeSet<_>>()
                .len()
                == 3
        })
        .await;
    }
    let closed = |s: &ReaderStats| s.windows_closed.load(std::sync::atomic::Ordering::Relaxed);
    let closed_before = closed(&stats_a) + closed(&stats_b);
    support::produce(&t.input, &stragglers).await;
    support::produce(&t.input, second).await;
    // Windows of the second half close while both instances hold partitions.
    let deadline = std::time::Instant::now() + DEADLINE * 3;
    while closed(&stats_a) + closed(&stats_b) < closed_before + 50 {
        if a.is_finished() || b.is_finished() || std::time::Instant::now() > deadline {
            let describe = |s: &ReaderStats| {
                format!(
                    "consumed {} valid {} windows closed {} analytics partitions {}",
                    s.consumed.load(std::sync::atomic::Ordering::Relaxed),
                    s.valid.load(std::sync::atomic::Ordering::Relaxed),
                    closed(s),
                    analytics(s)
                )
            };
            let ended = |t: &mut tokio::task::JoinHandle<anyhow::Result<()>>| {
                futures::FutureExt::now_or_never(t).map(|r| format!("{r:?}"))
            };
            panic!(
                "no windows of the second half after B joined (A: {}, ended {:?}; B: {}, ended {:?})",
                describe(&stats_a),
                ended(&mut a),
                describe(&stats_b),
                ended(&mut b)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_a.cancel();
    a.await.expect("join").expect("A stopped cleanly");
    support::produce(&t.input, &closers()).await;
    settle(&t, n + 64, minute(30), lateness, &logs).await;
    stop_b.cancel();
    b.await.expect("join").expect("B stopped cleanly");
    let r = reference_of(&t, lateness, &logs, minute(30));
    let event_time_only = reference_of(&t, lateness, &[], minute(30));
    match idle {
        Idle::Default => assert!(
            r.late >= event_time_only.late + stragglers.len(),
            "the idle steps made the stragglers late ({} late, {} by event time alone)",
            r.late,
            event_time_only.late
        ),
        Idle::Off => assert!(
            support::idle_steps(&logs, &t.validated).is_empty(),
            "no idle step when they are off"
        ),
    }
    assert!(r.windows.len() > 500, "many windows: {}", r.windows.len());
    assert_matches(&final_stats(&t.stats, minute(30)), &r);
    assert_copies_match(&t);
    let targets = target_reference_of(&t, lateness, &logs, minute(30));
    assert!(
        targets.windows.len() > 100,
        "many destination windows: {}",
        targets.windows.len()
    );
    if let Idle::Default = idle {
        assert!(
            !support::idle_steps(&logs, &t.by_destination).is_empty(),
            "the destination windows took idle steps too"
        );
    }
    assert_matches(&final_targets(&t.target_stats, minute(30)), &targets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_is_per_partition_with_eager_assignment() {
    revocation_is_per_partition(
        "eager",
        &["partition.assignment.strategy=range"],
        Delivery::AtLeastOnce,
        Idle::Default,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_is_per_partition_with_eager_assignment_and_idle_steps_off() {
    revocation_is_per_partition(
        "eager_noidle",
        &["partition.assignment.strategy=range"],
        Delivery::AtLeastOnce,
        Idle::Off,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_is_per_partition_with_cooperative_sticky_assignment() {
    revocation_is_per_partition(
        "coop",
        &["partition.assignment.strategy=cooperative-sticky"],
        Delivery::AtLeastOnce,
        Idle::Default,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_is_per_partition_with_cooperative_sticky_assignment_and_idle_steps_off() {
    revocation_is_per_partition(
        "coop_noidle",
        &["partition.assignment.strategy=cooperative-sticky"],
        Delivery::AtLeastOnce,
        Idle::Off,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_is_per_partition_with_the_kip_848_consumer_protocol() {
    revocation_is_per_partition(
        "kip848",
        &["group.protocol=consumer"],
        Delivery::AtLeastOnce,
        Idle::Default,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_is_per_partition_with_the_kip_848_consumer_protocol_and_idle_steps_off() {
    revocation_is_per_partition(
        "kip848_noidle",
        &["group.protocol=consumer"],
        Delivery::AtLeastOnce,
        Idle::Off,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_revocation_is_per_partition_with_eager_assignment() {
    revocation_is_per_partition(
        "eos_eager",
        &["partition.assignment.strategy=range"],
        Delivery::ExactlyOnce,
        Idle::Default,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_revocation_is_per_partition_with_eager_assignment_and_idle_steps_off() {
    revocation_is_per_partition(
        "eos_eager_noidle",
        &["partition.assignment.strategy=range"],
        Delivery::ExactlyOnce,
        Idle::Off,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_revocation_is_per_partition_with_cooperative_sticky_assignment() {
    revocation_is_per_partition(
        "eos_coop",
        &["partition.assignment.strategy=cooperative-sticky"],
        Delivery::ExactlyOnce,
        Idle::Default,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_revocation_is_per_partition_with_cooperative_sticky_assignment_and_idle_steps_off()
 {
    revocation_is_per_partition(
        "eos_coop_noidle",
        &["partition.assignment.strategy=cooperative-sticky"],
        Delivery::ExactlyOnce,
        Idle::Off,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_revocation_is_per_partition_with_the_kip_848_consumer_protocol() {
    revocation_is_per_partition(
        "eos_kip848",
        &["group.protocol=consumer"],
        Delivery::ExactlyOnce,
        Idle::Default,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_revocation_is_per_partition_with_the_kip_848_consumer_protocol_and_idle_steps_off()
 {
    revocation_is_per_partition(
        "eos_kip848_noidle",
        &["group.protocol=consumer"],
        Delivery::ExactlyOnce,
        Idle::Off,
    )
    .await;
}

/// Peak resident memory of a process, in bytes (`VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

/// The documented bound of the stream-reader's resident memory with the default caps (README,
/// "Analytics guarantee").
const RSS_BOUND: u64 = 256 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn a_million_sources_in_one_minute_stay_under_the_memory_bound_and_are_flagged() {
    let t = reader::topics("million").await;
    let at = minute(40) + TimeDelta::seconds(10);
    let records: Vec<Raw> = (0..1_000_000u32)
        .map(|i| {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            let json = format!(
                r#"{{"timestamp":"{}","source_ip":"{ip}","destination_ip":"192.0.2.{}","port":{},"protocol":"TCP","bytes_sent":1,"bytes_received":1,"action":"DENY"}}"#,
                (at + TimeDelta::microseconds(i as i64 * 40)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                i % 200,
                i % 1000,
            );
            (None, json.into_bytes())
        })
        .collect();
    for chunk in records.chunks(100_000) {
        support::produce(&t.input, chunk).await;
    }
    drop(records);
    support::produce(&t.input, &closers()).await;
    let mut service = support::spawn_service("stream-reader", &t.group, &t.env(&[]));
    let pid = service.pid();
    let n = 1_000_064;
    support::wait_until(Duration::from_secs(600), "every input committed", || {
        support::committed(&t.group, &t.input).values().sum::<i64>() == n
    })
    .await;
    // The minute's windows: at most the cap (50,000) per validated partition, all flagged.
    support::wait_until(DEADLINE * 2, "the capped minute emitted", || {
        support::topic_size(&t.stats) >= 3 * 50_000
    })
    .await;
    let peak = peak_rss(pid);
    assert!(support::terminate(&mut service).success());
    let stats = stats_of(&t.stats);
    let minute_stats: Vec<&WindowStats> = stats
        .iter()
        .filter(|s| s.window_start < minute(30))
        .collect();
    assert_eq!(
        minute_stats.len(),
        150_000,
        "the cap of windows per partition and minute"
    );
    assert!(
        minute_stats.iter().all(|s| s.sources_capped),
        "every window of the capped minute is flagged"
    );
    assert_eq!(
        support::topic_size(&t.validated),
        n,
        "nothing lost in ip_logs_validated"
    );
    assert!(
        peak < RSS_BOUND,
        "peak RSS {} MB over the bound {} MB",
        peak >> 20,
        RSS_BOUND >> 20
    );
    println!(
        "a million sources: stream-reader peak RSS {} MB",
        peak >> 20
    );
}
