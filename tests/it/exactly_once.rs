//! Exactly-once delivery (`READER_DELIVERY=exactly-once`): SIGKILLs at many points, and a
//! stalled instance that outlives its transaction, leave each input record's output exactly
//! once on every output topic for a `read_committed` consumer (counted by source partition and
//! offset, independently of the service), the windows and alerts equal to the reference model,
//! and the writer consuming only committed records.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt as _;
use log_schema::{Alert, AlertRule, DeadLetter, TargetStats, ValidatedRecord, WindowStats};
use stream_reader::reference::Reference;
use tokio_util::sync::CancellationToken;

use crate::{
    analytics::closers,
    exact::{Raw, assert_matches, minute, reference_of, traffic},
    reader::{self, Topics},
    support::{self, DEADLINE},
};

fn eos_env(
    t: &Topics,
    instance: &str,
    extra: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    let mut env = t.env(&[
        ("READER_DELIVERY", "exactly-once".to_owned()),
        ("READER_TRANSACTIONAL_ID", format!("{}-{instance}", t.group)),
        ("READER_ALLOWED_LATENESS_SECS", "300".to_owned()),
        ("KAFKA_OPTIONS", "session.timeout.ms=6000".to_owned()),
    ]);
    env.extend_from_slice(extra);
    env
}

/// What a `read_committed` consumer sees on the output topics.
struct Seen {
    validated: Vec<ValidatedRecord>,
    /// Outputs per input (partition, offset) over the validated topic and the DLQ.
    per_input: BTreeMap<(i32, i64), u32>,
    stats: Vec<WindowStats>,
    alerts: Vec<Alert>,
    /// Outputs per input (partition, offset) on the by-destination topic.
    copies_per_input: BTreeMap<(i32, i64), u32>,
    targets: Vec<TargetStats>,
}

fn read_outputs(t: &Topics) -> Seen {
    let mut per_input = BTreeMap::new();
    let mut validated = Vec::new();
    for r in support::read_to_end(&t.validated, DEADLINE) {
        let v = ValidatedRecord::from_json(&r.payload).expect("validated record");
        let s = v.source.expect("source coordinates");
        *per_input.entry((s.partition, s.offset)).or_insert(0) += 1;
        validated.push((r.partition, r.offset, v));
    }
    for r in support::read_to_end(&t.dlq, DEADLINE) {
        let d = DeadLetter::from_json(&r.payload).expect("dead letter");
        *per_input
            .entry((d.source.partition, d.source.offset))
            .or_insert(0) += 1;
    }
    validated.sort_by_key(|(p, o, _)| (*p, *o));
    let mut copies_per_input = BTreeMap::new();
    for r in support::read_to_end(&t.by_destination, DEADLINE) {
        let v = ValidatedRecord::from_json(&r.payload).expect("validated record");
        let s = v.source.expect("source coordinates");
        *copies_per_input.entry((s.partition, s.offset)).or_insert(0) += 1;
    }
    Seen {
        copies_per_input,
        targets: support::read_to_end(&t.target_stats, DEADLINE)
            .iter()
            .map(|r| TargetStats::from_json(&r.payload).expect("target stats"))
            .collect(),
        validated: validated.into_iter().map(|(_, _, v)| v).collect(),
        per_input,
        stats: support::read_to_end(&t.stats, DEADLINE)
            .iter()
            .map(|r| WindowStats::from_json(&r.payload).expect("window stats"))
            .collect(),
        alerts: support::read_to_end(&t.alerts, DEADLINE)
            .iter()
            .map(|r| Alert::from_json(&r.payload).expect("alert"))
            .collect(),
    }
}

/// Waits until every input record is committed and every window of the reference so far is
/// on the stats topic (the stream-readers logging to `logs` may still take idle steps: the
/// final check comes once they stopped).
async fn settle(t: &Topics, n: i64, logs: &[&str]) {
    support::wait_until(DEADLINE * 3, "every input record committed", || {
        support::committed(&t.group, &t.input).values().sum::<i64>() == n
    })
    .await;
    let r = reference_of(t, LATENESS, logs, minute(30));
    support::wait_until(DEADLINE * 3, "every reference window emitted", || {
        let emitted: BTreeSet<(IpAddr, DateTime<Utc>)> = support::read_to_end(&t.stats, DEADLINE)
            .iter()
            .map(|r| WindowStats::from_json(&r.payload).expect("window stats"))
            .map(|s| (s.source_ip, s.window_start))
            .collect();
        r.windows.keys().all(|k| emitted.contains(k))
    })
    .await;
    if support::topic_size(&t.by_destination) > 0 {
        let r = crate::exact::target_reference_of(t, LATENESS, logs, minute(30));
        support::wait_until(DEADLINE * 3, "every destination window emitted", || {
            let emitted = crate::exact::final_targets(&t.target_stats, minute(30));
            r.windows.keys().all(|k| emitted.contains_key(k))
        })
        .await;
    }
}

const LATENESS: TimeDelta = TimeDelta::seconds(300);

/// Asserts exactly-once on every output topic once the stream-readers logging to `logs`
/// stopped; returns what was seen and the reference.
fn assert_exactly_once(
    t: &Topics,
    n: i64,
    cutoff: DateTime<Utc>,
    logs: &[&str],
) -> (Seen, Reference) {
    let r = reference_of(t, LATENESS, logs, cutoff);
    let seen = read_outputs(t);

    // Validated + DLQ: each input offset exactly once.
    let wrong: Vec<_> = seen.per_input.iter().filter(|(_, c)| **c != 1).collect();
    assert!(
        wrong.is_empty(),
        "inputs whose output is not exactly once (input, count): {:?} of {}",
        &wrong[..wrong.len().min(10)],
        wrong.len()
    );
    assert_eq!(
        seen.per_input.len() as i64,
        n,
        "every input record has its output"
    );
    assert_eq!(
        r.duplicates, 0,
        "a committed validated record seen twice by the windows"
    );

    // Stats: each window exactly once, equal to the reference.
    let mut per_window: BTreeMap<(IpAddr, DateTime<Utc>), Vec<WindowStats>> = BTreeMap::new();
    for s in &seen.stats {
        per_window
            .entry((s.source_ip, s.window_start))
            .or_default()
            .push(s.clone());
    }
    let repeated: Vec<_> = per_window
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, v)| (k, v.len()))
        .collect();
    assert!(
        repeated.is_empty(),
        "windows emitted more than once: {:?} of {}",
        &repeated[..repeated.len().min(10)],
        repeated.len()
    );
    let emitted: BTreeMap<(IpAddr, DateTime<Utc>), WindowStats> = per_window
        .into_iter()
        .filter(|((_, m), _)| *m < cutoff)
        .map(|(k, mut v)| (k, v.remove(0)))
        .collect();
    assert_matches(&emitted, &r);

    // Alerts: each exactly once, exactly those the reference windows trigger.
    let mut per_alert: BTreeMap<uuid::Uuid, u32> = BTreeMap::new();
    for a in &seen.alerts {
        *per_alert.entry(a.alert_id).or_insert(0) += 1;
    }
    assert!(
        per_alert.values().all(|c| *c == 1),
        "an alert emitted more than once"
    );
    let thresholds = [
        (AlertRule::PortScan, 100),
        (AlertRule::Flood, 5_000),
        (AlertRule::DenyBurst, 100),
        (AlertRule::HostSweep, 100),
    ];
    let mut want: BTreeSet<uuid::Uuid> = emitted
        .values()
        .flat_map(|s| {
            thresholds
                .iter()
                .filter_map(|(rule, th)| Alert::evaluate(*rule, s, *th).map(|a| a.alert_id))
                .chain(Alert::threat_matches(s, 1).into_iter().map(|a| a.alert_id))
        })
        .collect();

    // With destination windows: one copy per validated record, each destination window
    // exactly once and equal to the reference keyed by destination, and its alerts.
    if !seen.copies_per_input.is_empty() {
        let validated: BTreeMap<(i32, i64), u32> = seen
            .validated
            .iter()
            .map(|v| {
                let s = v.source.expect("source coordinates");
                ((s.partition, s.offset), 1)
            })
            .collect();
        assert_eq!(
            seen.copies_per_input, validated,
            "one committed copy keyed by destination per validated record"
        );
        let targets_reference = crate::exact::target_reference_of(t, LATENESS, logs, cutoff);
        assert_eq!(targets_reference.duplicates, 0);
        let mut targets: BTreeMap<(IpAddr, DateTime<Utc>), TargetStats> = BTreeMap::new();
        for s in &seen.targets {
            let previous = targets.insert((s.destination_ip, s.window_start), s.clone());
            assert!(
                previous.is_none(),
                "a destination window emitted twice: {s:?}"
            );
        }
        targets.retain(|(_, m), _| *m < cutoff);
        assert!(targets_reference.windows.len() > 100);
        assert_matches(&targets, &targets_reference);
        want.extend(targets.values().flat_map(|s| {
            Alert::evaluate_target(s, 500, 20_000)
                .into_iter()
                .chain(Alert::target_threat_matches(s, 1))
                .map(|a| a.alert_id)
        }));
    }
    let got: BTreeSet<uuid::Uuid> = seen
        .alerts
        .iter()
        .filter(|a| a.window_start < cutoff)
        .map(|a| a.alert_id)
        .collect();
    assert!(!want.is_empty(), "the scenarios trigger alerts");
    assert_eq!(got, want, "alerts equal the reference's");
    (seen, r)
}

fn topic_sizes(t: &Topics) -> i64 {
    support::topic_size(&t.validated) + support::topic_size(&t.stats)
}

#[tokio::test(flavor = "multi_thread")]
async fn twelve_sigkills_in_exactly_once_mode_leave_every_output_exactly_once() {
    let t = reader::topics("eos_kill").await;
    let keyspace = support::fresh_keyspace().await;
    let records: Vec<Raw> = traffic(17, minute(80), 50_000, 10);
    // The records arrive in 12 chunks, one before each kill, so that every restarted instance
    // has work and a kill can always follow an output; the closing records come last.
    let chunks: Vec<&[Raw]> = records.chunks(records.len().div_ceil(12)).collect();
    // The destination windows are under the same guarantee, in the same run.
    let env = eos_env(
        &t,
        "a",
        &[("READER_DESTINATION_WINDOWS", "true".to_owned())],
    );
    let mut service = support::spawn_service("stream-reader", &t.group, &env);
    let n = records.len() as i64;
    let mut mid_output = 0;
    let mut assigned = 0;
    for (k, chunk) in chunks.iter().enumerate() {
        // The instance has initialised its transactions (which writes abort markers for what
        // the killed one left open) and joined its three groups (validation, sources,
        // destinations) before the outputs are counted: what the watermarks gain from here on
        // starts with an output, not with a marker.
        support::wait_until(DEADLINE, "the instance joined its three groups", || {
            support::assignments(&t.group).len() >= assigned + 3
        })
        .await;
        assigned = support::assignments(&t.group).len();
        let before = topic_sizes(&t);
        support::produce(&t.input, chunk).await;
        if k == chunks.len() - 1 {
            support::produce(&t.input, &closers()).await;
        }
        // Every other kill right after an output reached the broker (inside an open
        // transaction: those outputs must never become visible); the others after progress.
        let step = if k % 2 == 0 {
            1
        } else {
            chunk.len() as i64 / 3
        };
        let deadline = std::time::Instant::now() + DEADLINE;
        while topic_sizes(&t) < before + step && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        mid_output += usize::from(k % 2 == 0 && topic_sizes(&t) > before);
        support::kill9(&mut service);
        service = support::spawn_service("stream-reader", &t.group, &env);
    }
    assert!(mid_output >= 5, "kills right after an output: {mid_output}");
    settle(&t, n + 64, &[&t.group]).await;
    assert!(support::terminate(&mut service).success());
    let (seen, r) = assert_exactly_once(&t, n + 64, minute(30), &[&t.group]);
    assert!(r.windows.len() > 1_000, "many windows: {}", r.windows.len());
    assert!(
        !seen.copies_per_input.is_empty() && !seen.targets.is_empty(),
        "the destination windows ran (and were checked)"
    );
    // The kills aborted transactions: the topics hold more records than were committed (on
    // any of the four: a kill may follow a stats output of the analytics stage alone).
    let stored: usize = [&t.validated, &t.dlq, &t.stats, &t.alerts]
        .iter()
        .map(|topic| support::read_uncommitted(topic, DEADLINE).len())
        .sum();
    let committed_outputs =
        seen.per_input.values().sum::<u32>() as usize + seen.stats.len() + seen.alerts.len();
    assert!(
        stored > committed_outputs,
        "some transactions with outputs were aborted by the kills: {stored} stored, \
         {committed_outputs} committed"
    );

    // The writer reads only committed records: it consumes exactly what a read_committed
    // consumer sees, not the aborted outputs also stored in the topics.
    let committed =
        (seen.validated.len() + seen.stats.len() + seen.targets.len() + seen.alerts.len()) as u64;
    let wstats = Arc::new(cassandra_writer::writer::WriterStats::default());
    let stop = CancellationToken::new();
    let writer = tokio::spawn(cassandra_writer::writer::run_until(
        crate::analytics::writer_args(&t, &keyspace),
        stop.clone(),
        wstats.clone(),
    ));
    support::wait_until(
        DEADLINE * 3,
        "the writer consumed every committed record",
        || wstats.consumed.load(Relaxed) >= committed,
    )
    .await;
    stop.cancel();
    writer.await.expect("join").expect("writer stopped cleanly");
    assert_eq!(
        wstats.consumed.load(Relaxed),
        committed,
        "the writer consumed aborted records"
    );
}

/// Sends SIGSTOP or SIGCONT.
fn signal(service: &support::Service, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &service.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_instance_is_fenced_and_writes_nothing_twice() {
    let t = reader::topics("eos_fence").await;
    let records = traffic(23, minute(60), 30_000, 6);
    let (first, rest) = records.split_at(10_000);
    let (second, third) = rest.split_at(10_000);
    let extra = [("READER_TRANSACTION_TIMEOUT_MS", "5000".to_owned())];
    let env_a = eos_env(&t, "a", &extra);
    let env_b = eos_env(&t, "b", &extra);
    let log_a = format!("{}_a", t.group);
    let log_b = format!("{}_b", t.group);
    support::produce(&t.input, first).await;
    let mut a = support::spawn_service("stream-reader", &log_a, &env_a);
    let mut b = support::spawn_service("stream-reader", &log_b, &env_b);
    support::wait_until(DEADLINE, "both instances assigned", || {
        support::assignments(&log_a).last().is_some_and(|n| *n > 0)
            && support::assignments(&log_b).last().is_some_and(|n| *n > 0)
    })
    .await;
    // Stall A while records flow (so that it holds an open transaction), past the session
    // and transaction timeouts: B takes its partitions over and redoes its open work.
    let producing = tokio::spawn({
        let (input, second) = (t.input.clone(), second.to_vec());
        async move { support::produce(&input, &second).await }
    });
    let before = support::topic_size(&t.validated);
    support::wait_until(DEADLINE, "outputs flowing", || {
        support::topic_size(&t.validated) > before
    })
    .await;
    signal(&a, "-STOP");
    producing.await.expect("produced");
    let done = (first.len() + second.len()) as i64;
    support::wait_until(
        DEADLINE * 2,
        "B committed everything while A is stalled",
        || support::committed(&t.group, &t.input).values().sum::<i64>() == done,
    )
    .await;
    // A wakes up holding work B already committed: it must not land.
    signal(&a, "-CONT");
    support::produce(&t.input, third).await;
    support::produce(&t.input, &closers()).await;
    let n = records.len() as i64 + 64;
    settle(&t, n, &[&log_a, &log_b]).await;
    for s in [&mut a, &mut b] {
        let status = support::terminate(s);
        assert!(status.success() || status.code() == Some(1), "{status:?}");
    }
    assert_exactly_once(&t, n, minute(30), &[&log_a, &log_b]);
}

/// The writer in exactly-once mode, SIGKILLed repeatedly, some kills right after a dead letter
/// reached the broker: every record it cannot decode has exactly one dead letter for a
/// `read_committed` consumer, every valid record exactly one row.
#[tokio::test(flavor = "multi_thread")]
async fn the_writers_dead_letters_are_exactly_once_across_sigkills() {
    let keyspace = support::fresh_keyspace().await;
    let [input, dlq, stats, alerts, group] = ["valid", "dlq", "stats", "alerts", "group"]
        .map(|n| support::unique(&format!("it_eosw_{n}")));
    support::fresh_topics(&[&input, &dlq, &stats, &alerts]).await;
    let mut g = producer::Generator::new(producer::GeneratorConfig {
        seed: 5,
        hosts: 300,
        ..Default::default()
    });
    let n = 20_000;
    let start = Utc::now() - TimeDelta::minutes(10);
    let mut buf = Vec::new();
    let mut valid = BTreeSet::new();
    let records: Vec<Raw> = (0..n)
        .map(|i| {
            if i % 20 == 7 {
                return (None, format!("not a validated record #{i}").into_bytes());
            }
            g.next_into(start + TimeDelta::milliseconds(i), &mut buf);
            let origin = log_schema::Origin {
                topic: "it_source",
                partition: 0,
                offset: i,
            };
            let r = log_schema::validate(&buf, &origin, Utc::now(), &log_schema::Limits::default())
                .expect("generated records are valid");
            valid.insert(r.event_id);
            (Some(r.source_ip.to_string().into_bytes()), r.to_json())
        })
        .collect();
    let garbage = records.len() - valid.len();
    let env = [
        ("CASSANDRA_KEYSPACE", keyspace.clone()),
        ("WRITER_GROUP_ID", group.clone()),
        ("WRITER_INPUT_TOPIC", input.clone()),
        ("WRITER_DLQ_TOPIC", dlq.clone()),
        ("WRITER_STATS_TOPIC", stats.clone()),
        ("WRITER_ALERTS_TOPIC", alerts.clone()),
        ("WRITER_DELIVERY", "exactly-once".to_owned()),
        ("WRITER_TRANSACTIONAL_ID", group.clone()),
        ("KAFKA_OPTIONS", "session.timeout.ms=6000".to_owned()),
    ];
    let mut writer = support::spawn_service("cassandra-writer", &group, &env);
    let mut after_dead_letter = 0;
    // The records arrive in 8 chunks, one before each kill, so that every restarted instance
    // has work: a dead letter to be killed after, or progress to commit.
    for (k, chunk) in records.chunks(records.len().div_ceil(8)).enumerate() {
        let before = support::topic_size(&dlq);
        let committed = support::committed(&group, &input).values().sum::<i64>();
        support::produce(&input, chunk).await;
        let deadline = std::time::Instant::now() + DEADLINE;
        if k % 2 == 0 {
            // Right after a dead letter reached the broker, inside its open transaction.
            while support::topic_size(&dlq) <= before && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            after_dead_letter += usize::from(support::topic_size(&dlq) > before);
        } else {
            support::wait_until(DEADLINE, "commit progress", || {
                support::committed(&group, &input).values().sum::<i64>() > committed
            })
            .await;
        }
        support::kill9(&mut writer);
        writer = support::spawn_service("cassandra-writer", &group, &env);
    }
    assert!(
        after_dead_letter >= 2,
        "kills after a dead letter: {after_dead_letter}"
    );
    support::wait_until(DEADLINE * 3, "every record committed", || {
        support::committed(&group, &input).values().sum::<i64>() == n
    })
    .await;
    assert!(support::terminate(&mut writer).success());
    let mut per_input: BTreeMap<(i32, i64), u32> = BTreeMap::new();
    for r in support::read_to_end(&dlq, DEADLINE) {
        let d = DeadLetter::from_json(&r.payload).expect("dead letter");
        assert_eq!(d.source.topic, input);
        *per_input
            .entry((d.source.partition, d.source.offset))
            .or_insert(0) += 1;
    }
    assert!(
        per_input.values().all(|c| *c == 1),
        "dead letters repeated: {:?}",
        per_input
            .iter()
            .filter(|(_, c)| **c > 1)
            .take(10)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        per_input.len(),
        garbage,
        "one dead letter per undecodable record"
    );
    let session = support::session(&keyspace).await;
    let rows: BTreeSet<uuid::Uuid> = session
        .query_iter(format!("SELECT event_id FROM {keyspace}.access_logs"), ())
        .await
        .expect("select")
        .rows_stream::<(uuid::Uuid,)>()
        .expect("typed")
        .map(|r| r.expect("row").0)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect();
    assert_eq!(rows, valid, "one row per valid record");
}

/// A revocation can abort a transaction right after its first output was sent, while the
/// producer is still adding the partition to the transaction (which the coordinator refuses
/// with CONCURRENT_TRANSACTIONS until the previous commit's markers are written). Aborting
/// then must not fail: librdkafka would send EndTxn for a transaction the coordinator does not
/// consider open, get INVALID_TXN_STATE and make the producer unusable (librdkafka #4849; a
/// rebalance drill saw the stream-reader exit on it). Each round commits one record, then
/// sends one and aborts at once; a `read_committed` reader sees exactly the committed ones.
#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_aborted_right_after_its_first_send_aborts_cleanly() {
    use pipeline_runtime::transaction::Transaction;
    use rdkafka::producer::FutureRecord;

    const ROUNDS: usize = 80;
    let topic = support::unique("abort_race");
    support::fresh_topics(&[&topic]).await;
    let kafka = support::kafka();
    let txn = Transaction::create(
        &kafka,
        &support::unique("abort_race_txn"),
        Duration::from_secs(30),
    )
    .expect("transactional producer");
    let consumer: rdkafka::consumer::BaseConsumer = kafka
        .config(&[("group.id", &support::unique("abort_race_group"))])
        .expect("config")
        .create()
        .expect("consumer");
    // Outputs go to every partition, one after the other, as a stage's outputs do: the
    // producer adds partitions to the transaction in several requests.
    let send = |payload: String, partition: i32| {
        // Sent, not awaited (dropping the delivery future does not cancel the send): an
        // abort purges what is not delivered yet.
        drop(
            txn.producer()
                .send_result(
                    FutureRecord::<(), _>::to(&topic)
                        .payload(&payload)
                        .partition(partition),
                )
                .expect("queued"),
        );
    };
    for round in 0..ROUNDS {
        txn.begin().expect("begin");
        send(format!("committed {round}"), 0);
        txn.commit(&consumer, &[])
            .unwrap_or_else(|e| panic!("round {round}: commit: {e}"));
        txn.begin().expect("begin");
        for (i, partition) in (0..3).cycle().take(1 + round % 6).enumerate() {
            send(format!("aborted {round}/{i}"), partition);
            tokio::time::sleep(Duration::from_micros(300 * (round % 5) as u64)).await;
        }
        txn.abort()
            .unwrap_or_else(|e| panic!("round {round}: abort right after a send: {e}"));
    }
    let seen: BTreeSet<String> = support::read_to_end(&topic, DEADLINE)
        .into_iter()
        .map(|r| String::from_utf8(r.payload).expect("utf-8"))
        .collect();
    let want: BTreeSet<String> = (0..ROUNDS).map(|r| format!("committed {r}")).collect();
    assert_eq!(
        seen, want,
        "read_committed sees exactly the committed records"
    );
}

/// A transactional call that never returns (librdkafka #5456: `send_offsets_to_transaction`
/// waits forever for a group coordinator that went away) is recovered by replacing the
/// producer. The replacement's initialisation must fence the old producer and abort the
/// transaction it left open: its delivered output never becomes visible, a late commit of the
/// old producer fails, and the new producer commits normally.
#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_producer_fences_the_old_one_and_aborts_its_transaction() {
    use pipeline_runtime::transaction::Transaction;
    use rdkafka::producer::{FutureRecord, Producer as _};

    let topic = support::unique("replace");
    support::fresh_topics(&[&topic]).await;
    let kafka = support::kafka();
    let txn = Transaction::create(
        &kafka,
        &support::unique("replace_txn"),
        Duration::from_secs(10),
    )
    .expect("transactional producer");
    let consumer: rdkafka::consumer::BaseConsumer = kafka
        .config(&[("group.id", &support::unique("replace_group"))])
        .expect("config")
        .create()
        .expect("consumer");
    let old = txn.producer();
    txn.begin().expect("begin");
    old.send(
        FutureRecord::<(), _>::to(&topic).payload("left open"),
        Duration::from_secs(10),
    )
    .await
    .expect("delivered in the open transaction");

    txn.replace().expect("replaced");
    assert!(!txn.is_open(), "the replacement has no transaction open");
    let late = tokio::task::spawn_blocking(move || old.commit_transaction(Duration::from_secs(10)))
        .await
        .expect("joined");
    assert!(late.is_err(), "the old producer is fenced: {late:?}");

    txn.begin().expect("begin on the replacement");
    txn.producer()
        .send(
            FutureRecord::<(), _>::to(&topic).payload("committed"),
            Duration::from_secs(10),
        )
        .await
        .expect("delivered");
    txn.commit(&consumer, &[]).expect("commit");
    let seen: Vec<String> = support::read_to_end(&topic, DEADLINE)
        .into_iter()
        .map(|r| String::from_utf8(r.payload).expect("utf-8"))
        .collect();
    assert_eq!(
        seen,
        ["committed"],
        "read_committed sees only the replacement's transaction"
    );
}

/// A transaction that outlives its timeout (its outputs stuck behind a broker restart longer
/// than the transaction timeout) is aborted by the coordinator, which bumps the producer's
/// epoch. The stage's own abort must still succeed (librdkafka answers it with a fatal
/// INVALID_TXN_STATE; the producer is then replaced), and the next transaction commits.
#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_the_coordinator_timed_out_aborts_and_the_next_one_commits() {
    use pipeline_runtime::transaction::Transaction;
    use rdkafka::producer::FutureRecord;

    let topic = support::unique("timed_out");
    support::fresh_topics(&[&topic]).await;
    let kafka = support::kafka();
    let txn = Transaction::create(
        &kafka,
        &support::unique("timed_out_txn"),
        Duration::from_secs(2),
    )
    .expect("transactional producer");
    let consumer: rdkafka::consumer::BaseConsumer = kafka
        .config(&[("group.id", &support::unique("timed_out_group"))])
        .expect("config")
        .create()
        .expect("consumer");
    txn.begin().expect("begin");
    txn.producer()
        .send(
            FutureRecord::<(), _>::to(&topic).payload("timed out"),
            Duration::from_secs(2),
        )
        .await
        .expect("delivered in the open transaction");
    // The coordinator aborts transactions past their timeout on its next check
    // (`transaction.abort.timed.out.transaction.cleanup.interval.ms`, 10 s by default).
    tokio::time::sleep(Duration::from_secs(14)).await;
    let aborted = txn.abort();
    assert!(
        aborted.is_ok(),
        "abort after the coordinator's: {aborted:?}"
    );

    txn.begin().expect("begin the next transaction");
    txn.producer()
        .send(
            FutureRecord::<(), _>::to(&topic).payload("committed"),
            Duration::from_secs(2),
        )
        .await
        .expect("delivered");
    txn.commit(&consumer, &[]).expect("commit");
    let seen: Vec<String> = support::read_to_end(&topic, DEADLINE)
        .into_iter()
        .map(|r| String::from_utf8(r.payload).expect("utf-8"))
        .collect();
    assert_eq!(
        seen,
        ["committed"],
        "read_committed sees only the committed one"
    );
}
