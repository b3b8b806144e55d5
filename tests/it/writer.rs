//! The cassandra-writer against the real broker and CQL server.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use cassandra_writer::writer::{WriterArgs, WriterStats};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use log_schema::{DeadLetter, ErrorKind, Limits, Origin, ValidatedRecord, validate};
use pipeline_runtime::{kafka::KafkaArgs, telemetry::TelemetryArgs, transaction::Delivery};
use producer::{Generator, GeneratorConfig};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{self, DEADLINE};

struct Setup {
    keyspace: String,
    topic: String,
    dlq: String,
    stats: String,
    targets: String,
    alerts: String,
    group: String,
    records: Vec<ValidatedRecord>,
}

/// A fresh keyspace and topics, and `n` validated records (made by the real generator and
/// validator) on the input topic, keyed by source IP.
async fn setup(name: &str, n: usize) -> Setup {
    let keyspace = support::fresh_keyspace().await;
    let topic = support::unique(&format!("it_{name}_valid"));
    let dlq = support::unique(&format!("it_{name}_dlq"));
    let stats = support::unique(&format!("it_{name}_stats"));
    let alerts = support::unique(&format!("it_{name}_alerts"));
    let targets = support::unique(&format!("it_{name}_targets"));
    support::fresh_topics(&[&topic, &dlq, &stats, &targets, &alerts]).await;
    let mut g = Generator::new(GeneratorConfig {
        seed: n as u64,
        hosts: 300,
        ..Default::default()
    });
    let mut buf = Vec::new();
    let start = Utc::now() - chrono::Duration::minutes(10);
    let records: Vec<ValidatedRecord> = (0..n)
        .map(|i| {
            let at = start + chrono::Duration::microseconds(i as i64 * 997);
            g.next_into(at, &mut buf);
            let origin = Origin {
                topic: "it_source",
                partition: 0,
                offset: i as i64,
            };
            validate(&buf, &origin, Utc::now(), &Limits::default())
                .expect("generated records are valid")
        })
        .collect();
    let payloads = keyed(&records);
    support::produce(&topic, &payloads).await;
    Setup {
        keyspace,
        topic,
        dlq,
        stats,
        targets,
        alerts,
        group: support::unique(&format!("it_{name}_group")),
        records,
    }
}

/// Validated records as they travel: keyed by source IP, as the stream-reader writes them.
fn keyed(records: &[ValidatedRecord]) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    records
        .iter()
        .map(|r| (Some(r.source_ip.to_string().into_bytes()), r.to_json()))
        .collect()
}

fn args(s: &Setup, group: &str) -> WriterArgs {
    WriterArgs {
        kafka: KafkaArgs::new(support::kafka_broker()),
        cassandra: support::cassandra(&s.keyspace),
        telemetry: TelemetryArgs {
            log_format: pipeline_runtime::telemetry::LogFormat::Text,
        },
        group_id: group.to_owned(),
        input_topic: s.topic.clone(),
        stats_topic: s.stats.clone(),
        target_stats_topic: s.targets.clone(),
        alerts_topic: s.alerts.clone(),
        dlq_topic: s.dlq.clone(),
        retry_min_delay_ms: 50,
        retry_max_delay_ms: 1_000,
        metrics_addr: "127.0.0.1:0".parse().expect("addr"),
        ..support::writer_defaults()
    }
}

fn ips(records: &[ValidatedRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| r.source_ip.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Runs a writer in-process until `written` rows are counted, then stops it cleanly.
async fn write_all(args: WriterArgs, written: u64) -> Arc<WriterStats> {
    let stats = Arc::new(WriterStats::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(cassandra_writer::writer::run_until(
        args,
        stop.clone(),
        stats.clone(),
    ));
    support::wait_until(DEADLINE * 2, "all rows written", || {
        stats.written.load(Relaxed) >= written
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("writer stopped cleanly");
    stats
}

type Row = (
    String,
    DateTime<Utc>,
    Uuid,
    String,
    i32,
    String,
    i64,
    i64,
    String,
    DateTime<Utc>,
    i64,
    String,
    String,
    Option<String>,
);

async fn rows(s: &Setup) -> Vec<Row> {
    let session = support::session(&s.keyspace).await;
    let stmt = session
        .prepare(format!(
            "SELECT source_ip, timestamp, event_id, destination_ip, port, protocol, bytes_sent, \
             bytes_received, action, ingested_at, total_bytes, source_ip_class, \
             destination_ip_class, service FROM {}.access_logs WHERE source_ip = ?",
            s.keyspace
        ))
        .await
        .expect("prepare");
    let mut out = Vec::new();
    for ip in ips(&s.records) {
        let mut pages = session
            .execute_iter(stmt.clone(), (ip,))
            .await
            .expect("select")
            .rows_stream::<Row>()
            .expect("typed");
        while let Some(row) = pages.next().await {
            out.push(row.expect("decode"));
        }
    }
    out
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

#[tokio::test(flavor = "multi_thread")]
async fn n_records_become_exactly_n_rows_and_a_replay_adds_none() {
    let n = 3_000;
    let s = setup("rows", n).await;
    // One record on the topic that is not a validated record at all.
    support::produce(
        &s.topic,
        &[(None, b"{\"not\": \"a validated record\"}".to_vec())],
    )
    .await;

    let stats = write_all(args(&s, &s.group), n as u64).await;
    assert_eq!(stats.written.load(Relaxed), n as u64);
    assert_eq!(stats.dead_lettered.load(Relaxed), 1);
    // A backlog of 300 source IPs: rows of one IP go out together (the checks below compare
    // every column of every row with its record).
    assert!(
        stats.batched.load(Relaxed) > 0,
        "rows of one source IP written as batches"
    );
    let dlq = support::read_topic(&s.dlq, 1, DEADLINE);
    let dl = DeadLetter::from_json(&dlq[0].payload).expect("dead letter");
    assert_eq!(dl.error.kind, ErrorKind::InvalidType);
    assert_eq!(
        dl.raw_bytes().expect("raw"),
        b"{\"not\": \"a validated record\"}"
    );

    let got = rows(&s).await;
    assert_eq!(got.len(), n, "exactly one row per record");
    let by_id: HashMap<Uuid, &ValidatedRecord> =
        s.records.iter().map(|r| (r.event_id, r)).collect();
    for row in &got {
        let r = by_id[&row.2];
        assert_eq!(row.0, r.source_ip.to_string());
        assert_eq!(
            ms(row.1),
            ms(r.timestamp),
            "CQL timestamps have millisecond precision"
        );
        assert_eq!(row.3, r.destination_ip.to_string());
        assert_eq!(row.4, i32::from(r.port));
        assert_eq!(row.5, r.protocol);
        assert_eq!(
            (row.6, row.7, row.10),
            (r.bytes_sent, r.bytes_received, r.total_bytes)
        );
        assert_eq!(row.8, r.action.as_str());
        assert_eq!(ms(row.9), ms(r.ingested_at));
        assert_eq!(
            (row.11.as_str(), row.12.as_str()),
            (r.source_ip_class.as_str(), r.destination_ip_class.as_str())
        );
        assert_eq!(row.13, r.service);
    }

    // The seed's cqlsh queries, verbatim.
    let session = support::session(&s.keyspace).await;
    session.use_keyspace(&s.keyspace, false).await.expect("USE");
    let first10 = session
        .query_unpaged("SELECT * FROM access_logs LIMIT 10;", &[])
        .await
        .expect("seed query 1")
        .into_rows_result()
        .expect("rows");
    assert_eq!(first10.rows_num(), 10);
    let busiest = got.iter().fold(BTreeMap::<&str, usize>::new(), |mut m, r| {
        *m.entry(r.0.as_str()).or_default() += 1;
        m
    });
    let (ip, count) = busiest.iter().max_by_key(|(_, c)| **c).expect("rows");
    let by_ip = session
        .query_unpaged(
            format!("SELECT * FROM access_logs WHERE source_ip = '{ip}' LIMIT 20;"),
            &[],
        )
        .await
        .expect("seed query 2")
        .into_rows_result()
        .expect("rows");
    assert_eq!(by_ip.rows_num(), (*count).min(20));

    // Replay everything from the beginning (a new group = offsets reset): still n rows.
    // This time with WRITER_BATCH_MAX_ROWS=1: one insert per row.
    let replay_group = support::unique("it_rows_replay");
    let stats = write_all(
        WriterArgs {
            batch_max_rows: 1,
            ..args(&s, &replay_group)
        },
        n as u64,
    )
    .await;
    assert_eq!(stats.written.load(Relaxed), n as u64);
    assert_eq!(
        stats.batched.load(Relaxed),
        0,
        "no batches when the limit is 1"
    );
    let again = rows(&s).await;
    assert_eq!(again.len(), n, "a replay rewrites the same rows");
    let ids: BTreeSet<Uuid> = again.iter().map(|r| r.2).collect();
    assert_eq!(ids.len(), n);
}

#[tokio::test(flavor = "multi_thread")]
async fn cql_outage_mid_stream_loses_nothing_and_commits_nothing_unwritten() {
    let n = 4_000;
    let s = setup("outage", n).await;
    let proxy = support::CutProxy::start(support::cassandra_nodes()).await;
    let mut a = args(&s, &s.group);
    a.cassandra.nodes = vec![proxy.addr.to_string()];
    a.cassandra.request_timeout_ms = 2_000;
    let stats = Arc::new(WriterStats::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(cassandra_writer::writer::run_until(
        a,
        stop.clone(),
        stats.clone(),
    ));
    support::wait_until(DEADLINE, "some rows written", || {
        stats.written.load(Relaxed) >= 300
    })
    .await;

    proxy.cut();
    let cut_at = std::time::Instant::now();
    let written_at_cut = stats.written.load(Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // While the database is unreachable: every committed offset covers only written rows.
    let committed = support::committed(&s.group, &s.topic);
    let input = support::read_topic(&s.topic, n, DEADLINE);
    let present: BTreeSet<Uuid> = support::event_ids(
        &support::session(&s.keyspace).await,
        &s.keyspace,
        &ips(&s.records),
    )
    .await
    .into_iter()
    .collect();
    let mut checked = 0;
    for r in &input {
        if committed.get(&r.partition).is_some_and(|c| r.offset < *c) {
            let id = ValidatedRecord::from_json(&r.payload)
                .expect("record")
                .event_id;
            assert!(
                present.contains(&id),
                "offset {}/{} committed but its row is missing",
                r.partition,
                r.offset
            );
            checked += 1;
        }
    }
    assert!(
        (checked as u64) < n as u64,
        "the outage happened mid-stream"
    );
    while cut_at.elapsed() < Duration::from_secs(12) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        stats.retries.load(Relaxed) > 0,
        "writes were retried during the outage"
    );
    assert!(
        stats.written.load(Relaxed) < n as u64,
        "progress stopped during the outage ({written_at_cut} at the cut)"
    );
    proxy.restore();

    support::wait_until(DEADLINE * 2, "all rows after the outage", || {
        stats.written.load(Relaxed) >= n as u64
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("writer stopped cleanly");
    let got = rows(&s).await;
    assert_eq!(got.len(), n, "all rows present, none twice");
    let committed: i64 = support::committed(&s.group, &s.topic).values().sum();
    assert_eq!(committed, n as i64);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_stream_and_restart_gives_exactly_n_rows() {
    let n = 15_000;
    let s = setup("kill", n).await;
    let env = [
        ("CASSANDRA_KEYSPACE", s.keyspace.clone()),
        ("WRITER_GROUP_ID", s.group.clone()),
        ("WRITER_INPUT_TOPIC", s.topic.clone()),
        ("WRITER_DLQ_TOPIC", s.dlq.clone()),
        ("WRITER_STATS_TOPIC", s.stats.clone()),
        ("WRITER_TARGET_STATS_TOPIC", s.targets.clone()),
        ("WRITER_ALERTS_TOPIC", s.alerts.clone()),
        ("KAFKA_OPTIONS", "session.timeout.ms=6000".to_owned()),
    ];
    let mut writer = support::spawn_service("cassandra-writer", &s.group, &env);
    support::wait_until(DEADLINE, "some offsets committed before the kill", || {
        support::committed(&s.group, &s.topic).values().sum::<i64>() >= 1_000
    })
    .await;
    support::kill9(&mut writer);
    let at_kill: i64 = support::committed(&s.group, &s.topic).values().sum();
    assert!(
        at_kill < n as i64,
        "killed mid-stream ({at_kill} of {n} committed)"
    );

    let mut writer = support::spawn_service("cassandra-writer", &s.group, &env);
    support::wait_until(
        DEADLINE * 3,
        "everything committed after the restart",
        || support::committed(&s.group, &s.topic).values().sum::<i64>() == n as i64,
    )
    .await;
    assert!(
        support::terminate(&mut writer).success(),
        "clean exit on SIGTERM"
    );
    let got = rows(&s).await;
    assert_eq!(got.len(), n, "exactly n rows");
    let ids: BTreeSet<Uuid> = got.iter().map(|r| r.2).collect();
    let want: BTreeSet<Uuid> = s.records.iter().map(|r| r.event_id).collect();
    assert_eq!(ids, want);
}

/// A keyspace that asks for 3 replicas on a single node: every QUORUM write fails with
/// Unavailable. The writer retries (no dead letter, nothing committed) and writes everything once
/// the keyspace is fixed. A writer started meanwhile waits at its schema check instead of exiting.
#[tokio::test(flavor = "multi_thread")]
async fn unavailable_at_quorum_is_retried_and_commits_nothing_until_the_keyspace_is_fixed() {
    let n = 500;
    let mut s = setup("rf3", n).await;
    // The writer starts on an empty topic while the keyspace is healthy; the records come after
    // the keyspace was broken.
    s.topic = support::unique("it_rf3_late");
    support::fresh_topics(&[&s.topic]).await;
    let admin = support::session(&s.keyspace).await;
    admin
        .query_unpaged(
            format!("CREATE TABLE {}.probe (k int PRIMARY KEY)", s.keyspace),
            &[],
        )
        .await
        .expect("probe table");
    let alter = |rf: u8| {
        format!(
            "ALTER KEYSPACE {} WITH replication = {{'class': 'SimpleStrategy', \
             'replication_factor': {rf}}}",
            s.keyspace
        )
    };
    let quorum = |mut a: WriterArgs| {
        a.cassandra.consistency = pipeline_runtime::cassandra::ConsistencyArg::Quorum;
        a
    };
    let stats = Arc::new(WriterStats::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(cassandra_writer::writer::run_until(
        quorum(args(&s, &s.group)),
        stop.clone(),
        stats.clone(),
    ));
    support::wait_until(DEADLINE, "the writer owns its topics' partitions", || {
        // 3 partitions each of the input, stats, target stats and alerts topics.
        stats.assigned_partitions.load(Relaxed) == 12
    })
    .await;

    admin
        .query_unpaged(alter(3), &[])
        .await
        .expect("alter to RF 3");
    // Independent check of what the server answers: a QUORUM insert is Unavailable.
    let mut probe = scylla::statement::unprepared::Statement::new(format!(
        "INSERT INTO {}.probe (k) VALUES (1)",
        s.keyspace
    ));
    probe.set_consistency(scylla::statement::Consistency::Quorum);
    let err = admin
        .query_unpaged(probe, &[])
        .await
        .expect_err("QUORUM on RF 3 with one node");
    assert!(
        matches!(
            err,
            scylla::errors::ExecutionError::LastAttemptError(
                scylla::errors::RequestAttemptError::DbError(
                    scylla::errors::DbError::Unavailable { .. },
                    _
                )
            )
        ),
        "the server answers Unavailable: {err:?}"
    );
    let late_stats = Arc::new(WriterStats::default());
    let late = tokio::spawn(cassandra_writer::writer::run_until(
        quorum(args(&s, &support::unique("it_rf3_late_group"))),
        stop.clone(),
        late_stats.clone(),
    ));

    let payloads = keyed(&s.records);
    support::produce(&s.topic, &payloads).await;
    support::wait_until(DEADLINE, "Unavailable writes retried", || {
        stats.retries.load(Relaxed) >= 20 && stats.consumed.load(Relaxed) > 0
    })
    .await;
    assert_eq!(stats.written.load(Relaxed), 0, "no write succeeded");
    assert_eq!(
        stats.dead_lettered.load(Relaxed),
        0,
        "Unavailable is not a record's fault: nothing dead-lettered"
    );
    assert_eq!(support::topic_size(&s.dlq), 0, "the DLQ topic is empty");
    assert_eq!(
        support::committed(&s.group, &s.topic).values().sum::<i64>(),
        0,
        "no offset committed while nothing is written"
    );
    // Read at ONE: the one replica there is answers.
    let mut count = scylla::statement::unprepared::Statement::new(format!(
        "SELECT count(*) FROM {}.access_logs",
        s.keyspace
    ));
    count.set_consistency(scylla::statement::Consistency::One);
    let (rows_now,): (i64,) = admin
        .query_unpaged(count, &[])
        .await
        .expect("count at ONE")
        .into_rows_result()
        .expect("rows")
        .single_row()
        .expect("one row");
    assert_eq!(rows_now, 0, "no row in Cassandra");
    assert!(
        !late.is_finished(),
        "a writer started during the outage waits at its schema check: {:?}",
        late.await
    );
    assert_eq!(late_stats.consumed.load(Relaxed), 0, "and consumes nothing");

    admin
        .query_unpaged(alter(1), &[])
        .await
        .expect("alter back to RF 1");
    support::wait_until(DEADLINE * 2, "every row once the keyspace is fixed", || {
        stats.written.load(Relaxed) >= n as u64
    })
    .await;
    support::wait_until(DEADLINE, "everything committed", || {
        support::committed(&s.group, &s.topic).values().sum::<i64>() == n as i64
    })
    .await;
    support::wait_until(DEADLINE, "the late writer passed its schema check", || {
        late_stats.assigned_partitions.load(Relaxed) > 0
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("writer stopped cleanly");
    late.await
        .expect("join")
        .expect("late writer stopped cleanly");
    let got: BTreeSet<Uuid> = rows(&s).await.into_iter().map(|r| r.2).collect();
    let want: BTreeSet<Uuid> = s.records.iter().map(|r| r.event_id).collect();
    assert_eq!(got, want, "exactly the input's rows");
    assert_eq!(support::topic_size(&s.dlq), 0, "still no dead letter");
}

/// A dead letter larger than the DLQ topic takes goes without its payload (`raw_truncated`,
/// its size and coordinates kept), in both delivery modes, and the writer goes on: the record
/// after it is written.
async fn an_oversized_dead_letter_is_sent_without_its_payload(delivery: Delivery) {
    let name = format!("dlq_big_{delivery:?}")
        .to_lowercase()
        .replace('-', "_");
    let s = setup(&name, 20).await;
    support::set_topic_config(&s.dlq, "max.message.bytes", "20000").await;
    // 100 KB that are not a validated record, between valid records.
    let garbage = vec![b'x'; 100_000];
    support::produce(&s.topic, &[(None, garbage)]).await;
    let last = &s.records[0];
    support::produce(
        &s.topic,
        &[(
            Some(last.source_ip.to_string().into_bytes()),
            last.to_json(),
        )],
    )
    .await;
    let stats = write_all(
        WriterArgs {
            delivery,
            ..args(&s, &s.group)
        },
        21,
    )
    .await;
    assert_eq!(
        stats.written.load(Relaxed),
        21,
        "every valid record written"
    );
    let dead = support::read_to_end(&s.dlq, DEADLINE);
    assert_eq!(dead.len(), 1, "one dead letter");
    let d = DeadLetter::from_json(&dead[0].payload).expect("dead letter");
    assert!(d.raw.is_empty() && d.raw_truncated, "{d:?}");
    assert_eq!(d.raw_size, 100_000);
    assert_eq!(
        (d.source.partition, d.source.topic.as_str()),
        (dead_partition(&s), s.topic.as_str())
    );
}

/// The partition the unkeyed garbage record landed on (the only record of its offset that is
/// not a validated record).
fn dead_partition(s: &Setup) -> i32 {
    support::read_to_end(&s.topic, DEADLINE)
        .iter()
        .find(|r| r.payload.len() == 100_000)
        .map(|r| r.partition)
        .expect("the garbage record")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_dead_letter_is_sent_without_its_payload_at_least_once() {
    an_oversized_dead_letter_is_sent_without_its_payload(Delivery::AtLeastOnce).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_dead_letter_is_sent_without_its_payload_exactly_once() {
    an_oversized_dead_letter_is_sent_without_its_payload(Delivery::ExactlyOnce).await;
}

/// Two writers in one group under the given delivery mode and assignment protocol: the second
/// joins mid-stream (scale-out), so the first loses some partitions and keeps the others with
/// writes in flight; then the first leaves mid-stream (scale-in). Every partition is committed
/// to its end (a kept partition's in-flight writes still count), and every row is written.
async fn writers_share_partitions(name: &str, delivery: Delivery, option: &str) {
    let n = 20_000;
    let s = setup(name, n).await;
    let with = |id: &str| {
        let mut a = args(&s, &s.group);
        a.delivery = delivery;
        a.transactional_id = format!("{}-{id}", s.group);
        a.kafka.options = vec![option.parse().expect("option")];
        a
    };
    let (first_stats, second_stats) = (
        Arc::new(WriterStats::default()),
        Arc::new(WriterStats::default()),
    );
    let (stop_first, stop_second) = (CancellationToken::new(), CancellationToken::new());
    let first = tokio::spawn(cassandra_writer::writer::run_until(
        with("a"),
        stop_first.clone(),
        first_stats.clone(),
    ));
    support::wait_until(DEADLINE, "the first writer under way", || {
        first_stats.written.load(Relaxed) >= 2_000
    })
    .await;
    let second = tokio::spawn(cassandra_writer::writer::run_until(
        with("b"),
        stop_second.clone(),
        second_stats.clone(),
    ));
    let assigned = |w: &WriterStats| w.assigned_partitions.load(Relaxed);
    // The input, stats, target stats and alerts topics: 12 partitions between the two.
    support::wait_until(DEADLINE, "the second writer holds partitions", || {
        assigned(&second_stats) > 0 && assigned(&first_stats) + assigned(&second_stats) == 12
    })
    .await;
    // The same records again (idempotent rows): work for both members after the rebalance.
    let payloads = keyed(&s.records);
    support::produce(&s.topic, &payloads).await;
    let committed = || support::committed(&s.group, &s.topic).values().sum::<i64>();
    support::wait_until(DEADLINE * 3, "both writers under way", || {
        committed() >= n as i64 + n as i64 / 5
    })
    .await;
    // Scale-in mid-stream: the second writer finishes alone.
    stop_first.cancel();
    first
        .await
        .expect("join")
        .expect("first writer stopped cleanly");
    support::wait_until(DEADLINE * 3, "every partition committed to its end", || {
        committed() == 2 * n as i64
    })
    .await;
    stop_second.cancel();
    second
        .await
        .expect("join")
        .expect("second writer stopped cleanly");
    let session = support::session(&s.keyspace).await;
    let ids = support::event_ids(&session, &s.keyspace, &ips(&s.records)).await;
    assert_eq!(
        ids.into_iter().collect::<BTreeSet<_>>().len(),
        n,
        "every row written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn writers_share_partitions_with_eager_assignment() {
    writers_share_partitions(
        "w_eager",
        Delivery::AtLeastOnce,
        "partition.assignment.strategy=range",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn writers_share_partitions_with_cooperative_sticky_assignment() {
    writers_share_partitions(
        "w_coop",
        Delivery::AtLeastOnce,
        "partition.assignment.strategy=cooperative-sticky",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn writers_share_partitions_with_the_kip_848_consumer_protocol() {
    writers_share_partitions("w_kip848", Delivery::AtLeastOnce, "group.protocol=consumer").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_writers_share_partitions_with_eager_assignment() {
    writers_share_partitions(
        "eosw_eager",
        Delivery::ExactlyOnce,
        "partition.assignment.strategy=range",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_writers_share_partitions_with_cooperative_sticky_assignment() {
    writers_share_partitions(
        "eosw_coop",
        Delivery::ExactlyOnce,
        "partition.assignment.strategy=cooperative-sticky",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_writers_share_partitions_with_the_kip_848_consumer_protocol() {
    writers_share_partitions(
        "eosw_kip848",
        Delivery::ExactlyOnce,
        "group.protocol=consumer",
    )
    .await;
}
