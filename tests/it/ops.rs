//! Operator commands (`producer dlq …`, `producer replay …`) against the real pipeline: the
//! stream-reader and cassandra-writer run as processes, the commands as the `producer` binary.
//! Expectations come from what the tests themselves produced (payloads, coordinates, the
//! contract's UUIDv5 of `topic/partition/offset`), never from the commands' own output alone.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Output,
};

use chrono::{DateTime, Duration as TimeDelta, Timelike as _, Utc};
use futures::StreamExt as _;
use log_schema::{DeadLetter, EVENT_ID_NAMESPACE};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    reader::{self, Topics},
    support::{self, DEADLINE},
};

/// Runs `producer <args>` against the test broker.
fn producer(args: &[&str]) -> Output {
    std::process::Command::new(support::bin("producer"))
        .args(args)
        .env("KAFKA_BROKER", support::kafka_broker())
        .env("RUST_LOG", "warn,librdkafka=off")
        .output()
        .expect("producer runs")
}

/// Runs `producer <args>` and returns its standard output; panics with its output on failure.
pub(crate) fn ok(args: &[&str]) -> String {
    let out = producer(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "producer {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `producer dlq redrive --kind too_large` of `dlq` with `extra` flags: its JSON report.
fn redrive(dlq: &str, extra: &[&str]) -> Value {
    let args = [
        &[
            "dlq",
            "redrive",
            "--dlq-topic",
            dlq,
            "--kind",
            "too_large",
            "--json",
        ][..],
        extra,
    ]
    .concat();
    json(&ok(&args)).remove(0)
}

pub(crate) fn json(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A valid seed record, padded with an ignored field to about `size` bytes.
fn valid(i: usize, at: DateTime<Utc>, size: usize) -> Vec<u8> {
    let body = format!(
        r#"{{"timestamp":"{}","source_ip":"10.{}.{}.{}","destination_ip":"10.0.0.1","port":443,"protocol":"tcp","bytes_sent":{i},"bytes_received":7,"action":"ALLOW""#,
        (at + TimeDelta::milliseconds(i as i64)).format("%Y-%m-%dT%H:%M:%S%.6f"),
        i / 65_536 % 256,
        i / 256 % 256,
        i % 256,
    );
    let pad = size.saturating_sub(body.len() + 12);
    format!(r#"{body},"pad":"{}"}}"#, "x".repeat(pad)).into_bytes()
}

/// The contract's event id of the record at `topic/partition/offset`.
fn event_id(topic: &str, partition: i32, offset: i64) -> Uuid {
    Uuid::new_v5(
        &EVENT_ID_NAMESPACE,
        format!("{topic}/{partition}/{offset}").as_bytes(),
    )
}

fn reader_env(t: &Topics, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    t.env(extra)
}

pub(crate) fn writer_env(t: &Topics, keyspace: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CASSANDRA_KEYSPACE", keyspace.to_owned()),
        ("WRITER_GROUP_ID", format!("{}_writer", t.group)),
        ("WRITER_INPUT_TOPIC", t.validated.clone()),
        ("WRITER_DLQ_TOPIC", t.dlq.clone()),
        ("WRITER_STATS_TOPIC", t.stats.clone()),
        ("WRITER_TARGET_STATS_TOPIC", t.target_stats.clone()),
        ("WRITER_ALERTS_TOPIC", t.alerts.clone()),
    ]
}

fn committed(group: &str, topic: &str) -> i64 {
    support::committed(group, topic).values().sum()
}

/// Every row of `access_logs` as JSON without `created_at` (the time of the write), by
/// primary key.
async fn table(keyspace: &str) -> BTreeMap<String, Value> {
    let session = support::session(keyspace).await;
    let select = session
        .prepare(format!("SELECT JSON * FROM {keyspace}.access_logs"))
        .await
        .expect("prepare");
    let mut rows = session
        .execute_iter(select, ())
        .await
        .expect("select")
        .rows_stream::<(String,)>()
        .expect("typed");
    let mut out = BTreeMap::new();
    while let Some(row) = rows.next().await {
        let mut v: Value = serde_json::from_str(&row.expect("row").0).expect("json row");
        v.as_object_mut().expect("object").remove("created_at");
        let key = format!("{}|{}|{}", v["source_ip"], v["timestamp"], v["event_id"]);
        out.insert(key, v);
    }
    out
}

async fn wait_rows(keyspace: &str, n: usize, what: &str) {
    let end = std::time::Instant::now() + DEADLINE * 2;
    loop {
        let have = table(keyspace).await.len();
        if have == n {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "{what}: {have} rows, want {n}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dlq_stats_count_what_was_produced_and_show_round_trips_payloads() {
    let t = reader::topics("dlqops").await;
    let at = Utc::now() - TimeDelta::minutes(10);
    let mut invalid: Vec<(&str, Vec<u8>)> = Vec::new();
    for i in 0..30 {
        invalid.push((
            "malformed_json",
            format!("{{\"timestamp\": broken {i} é").into_bytes(),
        ));
    }
    for i in 0..20u8 {
        invalid.push(("not_utf8", vec![0xff, 0xfe, i, 0x00, b'\n', 0x80 + i]));
    }
    for i in 0..10 {
        let mut v: Value = serde_json::from_slice(&valid(i, at, 0)).expect("json");
        v.as_object_mut().expect("object").remove("port");
        invalid.push(("missing_field", serde_json::to_vec(&v).expect("json")));
    }
    let mut records: Vec<(Option<Vec<u8>>, Vec<u8>)> =
        invalid.iter().map(|(_, p)| (None, p.clone())).collect();
    records.extend((100..140).map(|i| (None, valid(i, at, 0))));
    support::produce(&t.input, &records).await;
    let _reader = support::spawn_service("stream-reader", &t.group, &reader_env(&t, &[]));
    support::wait_until(DEADLINE, "the reader to commit every record", || {
        committed(&t.group, &t.input) == records.len() as i64
    })
    .await;

    let stats = &json(&ok(&["dlq", "stats", "--dlq-topic", &t.dlq, "--json"]))[0];
    let mut want_kinds = BTreeMap::new();
    for (kind, _) in &invalid {
        *want_kinds.entry(kind.to_string()).or_insert(0u64) += 1;
    }
    let kinds: BTreeMap<String, u64> =
        serde_json::from_value(stats["by_kind"].clone()).expect("by_kind");
    assert_eq!(kinds, want_kinds);
    assert_eq!(stats["total"], 60);
    assert_eq!(stats["unreadable"], 0);
    assert_eq!(stats["by_field"]["port"], 10);
    assert_eq!(stats["by_source_topic"][&t.input], 60);
    let binary = &json(&ok(&[
        "dlq",
        "stats",
        "--dlq-topic",
        &t.dlq,
        "--kind",
        "not_utf8",
        "--json",
    ]))[0];
    assert_eq!(binary["total"], 20, "--kind selects");
    let none = &json(&ok(&[
        "dlq",
        "stats",
        "--dlq-topic",
        &t.dlq,
        "--since",
        "2030-01-01T00:00:00Z",
        "--json",
    ]))[0];
    assert_eq!(
        none["total"], 0,
        "--since selects by the time of the dead letter"
    );

    // Every payload, byte for byte, as the test produced it.
    let shown = json(&ok(&[
        "dlq",
        "show",
        "--dlq-topic",
        &t.dlq,
        "--limit",
        "0",
        "--json",
    ]));
    let mut got: Vec<Vec<u8>> = shown
        .iter()
        .map(|v| match (&v["payload_utf8"], &v["payload_hex"]) {
            (Value::String(text), Value::Null) => text.clone().into_bytes(),
            (Value::Null, Value::String(hex)) => (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect(),
            other => panic!("one payload field per dead letter: {other:?}"),
        })
        .collect();
    let mut want: Vec<Vec<u8>> = invalid.iter().map(|(_, p)| p.clone()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // The text form of a binary dead letter is a hex dump.
    let letter = shown
        .iter()
        .find(|v| v["kind"] == "not_utf8")
        .expect("a binary dead letter");
    let at = format!("{}:{}", letter["dlq"]["partition"], letter["dlq"]["offset"]);
    let text = ok(&["dlq", "show", "--dlq-topic", &t.dlq, "--at", &at]);
    assert!(
        text.contains("binary") && text.contains("00000000  ff fe"),
        "{text}"
    );
    let listed = ok(&[
        "dlq",
        "list",
        "--dlq-topic",
        &t.dlq,
        "--kind",
        "missing_field",
    ]);
    assert_eq!(listed.lines().count(), 10, "{listed}");
    assert!(
        producer(&["dlq", "stats", "--kind", "no_such_kind"])
            .status
            .code()
            == Some(2)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redrive_after_fixing_a_rule_writes_each_record_once_and_twice_changes_nothing() {
    let t = reader::topics("redrive").await;
    let keyspace = support::fresh_keyspace().await;
    let at = Utc::now() - TimeDelta::minutes(10);
    // 40 valid but too large for the first reader (400 bytes), 10 too large and with a port
    // out of range, 30 valid and small.
    let mut records: Vec<(Option<Vec<u8>>, Vec<u8>)> = Vec::new();
    records.extend((0..40).map(|i| (None, valid(i, at, 600))));
    records.extend((40..50).map(|i| {
        let p = String::from_utf8(valid(i, at, 600)).expect("utf-8");
        (
            None,
            p.replace("\"port\":443", "\"port\":70000").into_bytes(),
        )
    }));
    records.extend((50..80).map(|i| (None, valid(i, at, 0))));
    support::produce(&t.input, &records).await;
    let originals = support::read_to_end(&t.input, DEADLINE);
    assert_eq!(originals.len(), 80);
    let coordinates = |range: std::ops::Range<usize>| -> BTreeSet<(i32, i64)> {
        originals
            .iter()
            .filter(|r| range.clone().any(|i| records[i].1 == r.payload))
            .map(|r| (r.partition, r.offset))
            .collect()
    };
    let (big, bad, small) = (coordinates(0..40), coordinates(40..50), coordinates(50..80));
    let want_ids: BTreeSet<Uuid> = big
        .iter()
        .chain(&small)
        .map(|(p, o)| event_id(&t.input, *p, *o))
        .collect();

    let _writer = support::spawn_service(
        "cassandra-writer",
        &format!("{}_writer", t.group),
        &writer_env(&t, &keyspace),
    );
    let mut strict = support::spawn_service(
        "stream-reader",
        &t.group,
        &reader_env(&t, &[("READER_MAX_RECORD_BYTES", "400".into())]),
    );
    support::wait_until(DEADLINE, "the strict reader to commit every record", || {
        committed(&t.group, &t.input) == 80
    })
    .await;
    wait_rows(&keyspace, 30, "the small records' rows").await;
    support::terminate(&mut strict);

    // The rule is fixed: the default limit.
    let _reader = support::spawn_service("stream-reader", &t.group, &reader_env(&t, &[]));
    let dry = redrive(&t.dlq, &["--dry-run"]);
    assert_eq!(dry["redrive"], 50);
    assert_eq!(dry["delivered"], 0);
    assert_eq!(support::topic_size(&t.input), 80, "a dry run sends nothing");
    let first = redrive(&t.dlq, &[]);
    assert_eq!(first["per_destination"][&t.input], 50, "{first}");
    assert_eq!(first["delivered"], 50);
    support::wait_until(
        DEADLINE,
        "the reader to commit the redriven records",
        || committed(&t.group, &t.input) == 130,
    )
    .await;
    wait_rows(&keyspace, 70, "one row per valid record").await;

    let redriven_letters = |expected: usize| {
        let letters: Vec<DeadLetter> = support::read_to_end(&t.dlq, DEADLINE)
            .iter()
            .map(|r| DeadLetter::from_json(&r.payload).expect("dead letter"))
            .filter(|d| d.redrive.is_some())
            .collect();
        assert_eq!(letters.len(), expected, "redriven dead letters");
        letters
    };
    let letters = redriven_letters(10);
    let origins: BTreeSet<(i32, i64)> = letters
        .iter()
        .map(|d| {
            let r = d.redrive.as_ref().expect("marked");
            assert_eq!(r.attempt, 1);
            assert_eq!(r.origin.topic, t.input);
            assert_eq!(d.error.kind.as_str(), "port_out_of_range");
            (r.origin.partition, r.origin.offset)
        })
        .collect();
    assert_eq!(origins, bad, "the still-invalid records, each back once");

    // Redrive the same selection again: the written records are re-submitted and rewrite
    // their rows; the ones that failed otherwise are left out.
    let second = redrive(&t.dlq, &[]);
    assert_eq!(second["redrive"], 40, "{second}");
    assert_eq!(second["superseded"], 10, "{second}");
    support::wait_until(DEADLINE, "the reader to commit the second redrive", || {
        committed(&t.group, &t.input) == 170
    })
    .await;
    support::wait_until(DEADLINE, "the writer to catch up", || {
        committed(&format!("{}_writer", t.group), &t.validated)
            == support::read_to_end(&t.validated, DEADLINE).len() as i64
    })
    .await;
    let rows = table(&keyspace).await;
    let ids: BTreeSet<Uuid> = rows
        .values()
        .map(|v| v["event_id"].as_str().expect("id").parse().expect("uuid"))
        .collect();
    assert_eq!(rows.len(), 70, "still one row per valid record");
    assert_eq!(ids, want_ids, "rows carry the originals' event ids");
    redriven_letters(10);
}

#[tokio::test(flavor = "multi_thread")]
async fn replaying_an_hour_of_validated_records_restores_deleted_rows_and_twice_changes_nothing() {
    let t = reader::topics("replay").await;
    let keyspace = support::fresh_keyspace().await;
    let _reader = support::spawn_service("stream-reader", &t.group, &reader_env(&t, &[]));
    let _writer = support::spawn_service(
        "cassandra-writer",
        &format!("{}_writer", t.group),
        &writer_env(&t, &keyspace),
    );
    // Three hours of events, each hour written to Kafka in its own stretch of time.
    // Whole hours, computed once: the deletion below must see the same hours.
    let now = Utc::now();
    let hour = |ago: i64| {
        (now - TimeDelta::hours(ago))
            .with_minute(0)
            .and_then(|t| t.with_second(0))
            .and_then(|t| t.with_nanosecond(0))
            .expect("hour")
    };
    let mut marks = Vec::new();
    for (n, ago) in [3i64, 2, 1].into_iter().enumerate() {
        marks.push(Utc::now());
        let batch: Vec<(Option<Vec<u8>>, Vec<u8>)> = (0..100)
            .map(|i| (None, valid(n * 100 + i, hour(ago), 0)))
            .collect();
        support::produce(&t.input, &batch).await;
        wait_rows(&keyspace, 100 * (n + 1), "the batch's rows").await;
    }
    marks.push(Utc::now());
    let before = table(&keyspace).await;
    assert_eq!(before.len(), 300);

    // Delete the rows of the middle hour.
    let session = support::session(&keyspace).await;
    let middle = hour(2).timestamp_millis();
    let mut deleted = 0;
    for v in before.values() {
        // Cassandra's JSON form of a timestamp: `2026-12-03 21:00:00.000Z`.
        let text = v["timestamp"].as_str().expect("timestamp");
        let ts = chrono::NaiveDateTime::parse_from_str(
            text.trim_end_matches('Z'),
            "%Y-%m-%d %H:%M:%S%.f",
        )
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .and_utc();
        if (middle..middle + 3_600_000).contains(&ts.timestamp_millis()) {
            session
                .query_unpaged(
                    format!(
                        "DELETE FROM {keyspace}.access_logs WHERE source_ip = ? AND bucket = ? \
                         AND timestamp = ? AND event_id = ?"
                    ),
                    (
                        v["source_ip"].as_str().expect("ip"),
                        crate::cassandra::bucket(ts),
                        ts,
                        v["event_id"]
                            .as_str()
                            .expect("id")
                            .parse::<Uuid>()
                            .expect("uuid"),
                    ),
                )
                .await
                .expect("delete");
            deleted += 1;
        }
    }
    assert_eq!(deleted, 100);
    assert_eq!(table(&keyspace).await.len(), 200);

    // Replay the validated records written while the middle hour was produced.
    let (since, until) = (marks[1].to_rfc3339(), marks[2].to_rfc3339());
    let args = [
        "replay",
        "--topic",
        &t.validated,
        "--since",
        &since,
        "--until",
        &until,
        "--json",
    ];
    let first = &json(&ok(&args))[0];
    assert_eq!(first["replayed"], 100, "{first}");
    wait_rows(&keyspace, 300, "the replayed rows").await;
    assert_eq!(
        table(&keyspace).await,
        before,
        "the table as before the deletion"
    );

    let again = &json(&ok(&args))[0];
    assert_eq!(
        again["replayed"], 0,
        "a finished replay resumes at its end: {again}"
    );
    let mut from_start = args.to_vec();
    from_start.push("--from-start");
    let twice = &json(&ok(&from_start))[0];
    assert_eq!(twice["replayed"], 100, "{twice}");
    support::wait_until(DEADLINE, "the writer to take the second replay", || {
        committed(&format!("{}_writer", t.group), &t.validated)
            == support::read_to_end(&t.validated, DEADLINE).len() as i64
    })
    .await;
    assert_eq!(
        table(&keyspace).await,
        before,
        "replaying twice changes nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_replay_resumes_without_skipping_or_repeating_a_record() {
    let input = support::unique("it_replay_src");
    let out = support::unique("it_replay_out");
    support::fresh_topics(&[&input, &out]).await;
    let since = Utc::now() - TimeDelta::seconds(1);
    let at = Utc::now() - TimeDelta::minutes(5);
    let records: Vec<(Option<Vec<u8>>, Vec<u8>)> =
        (0..3_000).map(|i| (None, valid(i, at, 0))).collect();
    support::produce(&input, &records).await;
    let until = Utc::now() + TimeDelta::seconds(1);
    let group = support::unique("it_replay_group");
    let (since, until) = (since.to_rfc3339(), until.to_rfc3339());
    let args = [
        "replay",
        "--topic",
        &input,
        "--to",
        &out,
        "--since",
        &since,
        "--until",
        &until,
        "--group",
        &group,
        "--rate",
        "600",
        "--save-interval-ms",
        "200",
    ];
    let child = std::process::Command::new(support::bin("producer"))
        .args(args)
        .env("KAFKA_BROKER", support::kafka_broker())
        .env("RUST_LOG", "warn,librdkafka=off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("replay starts");
    support::wait_until(DEADLINE, "the replay to save some progress", || {
        committed(&group, &input) >= 500
    })
    .await;
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success(), "kill -INT");
    let interrupted = child.wait_with_output().expect("exit");
    let stderr = String::from_utf8_lossy(&interrupted.stderr);
    assert!(
        !interrupted.status.success() && stderr.contains("interrupted"),
        "{}: {stderr}",
        interrupted.status
    );
    let part = support::read_to_end(&out, DEADLINE).len();
    assert!(part < 3_000, "interrupted before the end ({part} replayed)");
    let resumed = &json(&ok(&[&args[..], &["--json"]].concat()))[0];
    assert_eq!(
        resumed["replayed"].as_u64(),
        Some(3_000 - part as u64),
        "{resumed}"
    );

    // Each input record exactly once on the output, named by its coordinates.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in support::read_to_end(&out, DEADLINE) {
        *seen.entry(r.origin.expect("x-origin header")).or_default() += 1;
    }
    let want: BTreeMap<String, usize> = support::read_to_end(&input, DEADLINE)
        .iter()
        .map(|r| (format!("{input}/{}/{}", r.partition, r.offset), 1))
        .collect();
    assert_eq!(seen.len(), 3_000);
    assert_eq!(seen, want);
}
