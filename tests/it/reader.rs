//! The stream-reader against the real broker.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, atomic::Ordering::Relaxed},
};

use chrono::Utc;
use clap::Parser as _;
use log_schema::{DeadLetter, ErrorKind, Limits, Origin, RawEncoding, ValidatedRecord, validate};
use pipeline_runtime::{kafka::KafkaArgs, telemetry::TelemetryArgs, transaction::Delivery};
use stream_reader::{ReaderArgs, ReaderStats};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{self, DEADLINE, Read};

pub(crate) struct Topics {
    pub(crate) input: String,
    pub(crate) validated: String,
    pub(crate) dlq: String,
    pub(crate) stats: String,
    pub(crate) alerts: String,
    /// Validated records keyed by destination, and the destination windows' statistics.
    pub(crate) by_destination: String,
    pub(crate) target_stats: String,
    pub(crate) group: String,
}

impl Topics {
    /// The analytics stage's consumer group.
    pub(crate) fn analytics_group(&self) -> String {
        format!("{}_analytics", self.group)
    }

    /// The destination windows' consumer group.
    pub(crate) fn targets_group(&self) -> String {
        format!("{}_targets", self.group)
    }

    /// The stream-reader's environment for these topics and group, plus `extra`.
    pub(crate) fn env(&self, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("READER_GROUP_ID", self.group.clone()),
            ("READER_INPUT_TOPIC", self.input.clone()),
            ("READER_VALIDATED_TOPIC", self.validated.clone()),
            ("READER_DLQ_TOPIC", self.dlq.clone()),
            ("READER_STATS_TOPIC", self.stats.clone()),
            ("READER_ALERTS_TOPIC", self.alerts.clone()),
            ("READER_ANALYTICS_GROUP_ID", self.analytics_group()),
            ("READER_DESTINATION_TOPIC", self.by_destination.clone()),
            ("READER_TARGET_STATS_TOPIC", self.target_stats.clone()),
            ("READER_TARGETS_GROUP_ID", self.targets_group()),
        ];
        env.extend_from_slice(extra);
        env
    }
}

pub(crate) async fn topics(name: &str) -> Topics {
    let t = Topics {
        input: support::unique(&format!("it_{name}_in")),
        validated: support::unique(&format!("it_{name}_ok")),
        dlq: support::unique(&format!("it_{name}_dlq")),
        stats: support::unique(&format!("it_{name}_stats")),
        alerts: support::unique(&format!("it_{name}_alerts")),
        by_destination: support::unique(&format!("it_{name}_bydest")),
        target_stats: support::unique(&format!("it_{name}_targets")),
        group: support::unique(&format!("it_{name}_group")),
    };
    support::fresh_topics(&[
        &t.input,
        &t.validated,
        &t.dlq,
        &t.stats,
        &t.alerts,
        &t.by_destination,
        &t.target_stats,
    ])
    .await;
    t
}

/// The stream-reader's defaults (as users get them), on the test's topics and groups.
pub(crate) fn defaults(t: &Topics, delivery: Delivery) -> ReaderArgs {
    let mut args = ReaderArgs::try_parse_from(["stream-reader"]).expect("the defaults parse");
    let named = self::args(t);
    args.kafka = named.kafka;
    args.group_id = named.group_id;
    args.input_topic = named.input_topic;
    args.validated_topic = named.validated_topic;
    args.dlq_topic = named.dlq_topic;
    args.stats_topic = named.stats_topic;
    args.alerts_topic = named.alerts_topic;
    args.analytics_group_id = named.analytics_group_id;
    args.destination_topic = named.destination_topic;
    args.target_stats_topic = named.target_stats_topic;
    args.targets_group_id = named.targets_group_id;
    args.metrics_addr = named.metrics_addr;
    args.delivery = delivery;
    args
}

pub(crate) fn args(t: &Topics) -> ReaderArgs {
    ReaderArgs {
        kafka: KafkaArgs::new(support::kafka_broker()),
        telemetry: TelemetryArgs {
            log_format: pipeline_runtime::telemetry::LogFormat::Text,
        },
        group_id: t.group.clone(),
        input_topic: t.input.clone(),
        validated_topic: t.validated.clone(),
        dlq_topic: t.dlq.clone(),
        max_record_bytes: 64 * 1024,
        max_future_skew_secs: 300,
        dlq_max_raw_bytes: log_schema::DEFAULT_MAX_RAW_BYTES,
        max_in_flight: 1000,
        retry_min_delay_ms: 50,
        retry_max_delay_ms: 1000,
        status_interval_secs: 5,
        metrics_addr: "127.0.0.1:0".parse().expect("addr"),
        analytics: true,
        stats_topic: t.stats.clone(),
        alerts_topic: t.alerts.clone(),
        allowed_lateness_secs: 30,
        idle_flush_ms: 2_000,
        alert_port_scan_ports: 100,
        alert_flood_events: 5_000,
        alert_deny_burst_denied: 100,
        alert_host_sweep_destinations: 100,
        alert_host_sweep_port: None,
        alert_allowlist: Default::default(),
        analytics_group_id: t.analytics_group(),
        max_windows_per_minute: 50_000,
        max_distinct_per_minute: 500_000,
        analytics_max_in_flight: 5_000,
        delivery: Delivery::AtLeastOnce,
        transactional_id: String::new(),
        transaction_interval_ms: 100,
        transaction_max_records: 5_000,
        transaction_timeout_ms: 10_000,
        geoip_city_db: None,
        geoip_asn_db: None,
        geoip_reload_interval_ms: 2_000,
        threat_lists: Default::default(),
        threat_reload_interval_ms: 2_000,
        destination_windows: false,
        destination_topic: t.by_destination.clone(),
        target_stats_topic: t.target_stats.clone(),
        targets_group_id: t.targets_group(),
        alert_target_flood_sources: 500,
        alert_target_flood_events: 20_000,
        alert_threat_match_events: 1,
        alert_target_allowlist: Default::default(),
    }
}

fn valid(i: usize) -> Vec<u8> {
    format!(
        r#"{{"timestamp":"2025-12-28T10:30:{:02}.{:06}","source_ip":"192.168.{}.{}","destination_ip":"10.0.0.50","port":{},"protocol":"tcp","bytes_sent":{},"bytes_received":4096,"action":"allow","extra":"ignored"}}"#,
        i % 60,
        i,
        i % 4,
        1 + i % 200,
        [443, 22, 53, 8080][i % 4],
        i * 10,
    )
    .into_bytes()
}

/// (key, payload, the error kind it must be rejected with, if any)
type CorpusEntry = (Option<Vec<u8>>, Vec<u8>, Option<ErrorKind>);

/// Our own corpus: valid records and at least one record of every error kind the reader can
/// meet (write_rejected is the writer's).
fn corpus() -> Vec<CorpusEntry> {
    let mut out: Vec<CorpusEntry> = (0..60)
        .map(|i| (Some(format!("k{i}").into_bytes()), valid(i), None))
        .collect();
    let seed = String::from_utf8(valid(1)).expect("utf8");
    let bad = |from: &str, to: &str| seed.replacen(from, to, 1).into_bytes();
    let future = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let cases: Vec<(Vec<u8>, ErrorKind)> = vec![
        (vec![0xde, 0xad, 0xbe, 0xef, 0xff, 0x00], ErrorKind::NotUtf8),
        (b"{\"timestamp\": \"2025".to_vec(), ErrorKind::MalformedJson),
        (Vec::new(), ErrorKind::MalformedJson),
        (b"[\"an\", \"array\"]".to_vec(), ErrorKind::NotObject),
        (
            format!("{{\"pad\":\"{}\"}}", "x".repeat(100_000)).into_bytes(),
            ErrorKind::TooLarge,
        ),
        (bad("\"port\":22,", ""), ErrorKind::MissingField),
        (
            bad("\"port\":22", "\"port\":\"22\""),
            ErrorKind::InvalidType,
        ),
        (bad("192.168.1.2", "192.168.1.256"), ErrorKind::InvalidIp),
        (
            bad("\"port\":22", "\"port\":65536"),
            ErrorKind::PortOutOfRange,
        ),
        (
            bad("\"bytes_sent\":10", "\"bytes_sent\":-10"),
            ErrorKind::BytesOutOfRange,
        ),
        (
            bad("2025-12-28T10:30:01.000001", "28/12/2025 10:30"),
            ErrorKind::InvalidTimestamp,
        ),
        (
            bad("2025-12-28T10:30:01.000001", &future),
            ErrorKind::TimestampInFuture,
        ),
        (bad("\"tcp\"", "\"tcp/ip\""), ErrorKind::InvalidProtocol),
        (bad("\"allow\"", "\"permit\""), ErrorKind::InvalidAction),
    ];
    out.extend(
        cases
            .into_iter()
            .map(|(p, k)| (Some(b"bad".to_vec()), p, Some(k))),
    );
    out
}

/// Validates the input topic locally: the outputs the reader must produce, by input coordinates.
fn expected(
    input: &str,
    records: &[Read],
) -> HashMap<(i32, i64), Result<ValidatedRecord, ErrorKind>> {
    records
        .iter()
        .map(|r| {
            let origin = Origin {
                topic: input,
                partition: r.partition,
                offset: r.offset,
            };
            let limits = Limits::default();
            let v = validate(&r.payload, &origin, Utc::now(), &limits).map_err(|e| e.kind);
            ((r.partition, r.offset), v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_record_lands_on_exactly_one_output_with_the_right_content() {
    let t = topics("route").await;
    let corpus = corpus();
    let records: Vec<_> = corpus
        .iter()
        .map(|(k, p, _)| (k.clone(), p.clone()))
        .collect();
    support::produce(&t.input, &records).await;
    let stats = Arc::new(ReaderStats::default());
    let stop = CancellationToken::new();
    let reader = tokio::spawn(stream_reader::run_until(
        args(&t),
        stop.clone(),
        stats.clone(),
    ));

    let n = corpus.len() as u64;
    support::wait_until(DEADLINE, "every record routed", || {
        stats.valid.load(Relaxed) + stats.invalid.load(Relaxed) >= n
    })
    .await;
    wait_committed(&t, n as i64).await;
    stop.cancel();
    reader.await.expect("join").expect("reader stopped cleanly");

    let n_invalid = corpus.iter().filter(|c| c.2.is_some()).count();
    let n_valid = corpus.len() - n_invalid;
    assert_eq!(stats.consumed.load(Relaxed), n);
    assert_eq!(stats.valid.load(Relaxed) as usize, n_valid);
    assert_eq!(stats.invalid.load(Relaxed) as usize, n_invalid);
    assert_eq!(stats.invalid_of(ErrorKind::MalformedJson), 2);

    let input = support::read_topic(&t.input, corpus.len(), DEADLINE);
    let want = expected(&t.input, &input);
    let by_coords: HashMap<(i32, i64), &Read> =
        input.iter().map(|r| ((r.partition, r.offset), r)).collect();

    let ok = support::read_topic(&t.validated, n_valid, DEADLINE);
    assert_eq!(ok.len(), n_valid);
    assert_eq!(
        support::topic_size(&t.validated),
        n_valid as i64,
        "nothing extra"
    );
    let mut ids = BTreeSet::new();
    for r in &ok {
        let got = ValidatedRecord::from_json(&r.payload).expect("validated record");
        assert_eq!(
            r.key.as_deref(),
            Some(got.source_ip.to_string().as_bytes()),
            "keyed by source ip"
        );
        let coords = want
            .iter()
            .find_map(|(c, v)| {
                v.as_ref()
                    .ok()
                    .filter(|v| v.event_id == got.event_id)
                    .map(|_| *c)
            })
            .expect("event id derived from an input record's coordinates");
        let mut exp = want[&coords].clone().expect("valid");
        exp.ingested_at = got.ingested_at;
        assert_eq!(got, exp, "enriched exactly as the contract says");
        assert_eq!(got.protocol, "TCP");
        assert_eq!(got.action, log_schema::Action::Allow);
        assert!(got.service.is_some());
        ids.insert(got.event_id);
    }
    assert_eq!(ids.len(), n_valid, "distinct ids");

    let dlq = support::read_topic(&t.dlq, n_invalid, DEADLINE);
    assert_eq!(dlq.len(), n_invalid);
    assert_eq!(support::topic_size(&t.dlq), n_invalid as i64);
    let mut kinds = BTreeSet::new();
    for r in &dlq {
        let dl = DeadLetter::from_json(&r.payload).expect("dead letter");
        assert_eq!(dl.source.topic, t.input);
        let original = by_coords[&(dl.source.partition, dl.source.offset)];
        assert_eq!(
            want[&(dl.source.partition, dl.source.offset)]
                .as_ref()
                .err(),
            Some(&dl.error.kind)
        );
        assert_eq!(
            dl.raw_bytes().expect("raw"),
            original.payload,
            "original bytes recoverable"
        );
        assert!(!dl.raw_truncated);
        assert_eq!(r.key, original.key, "dead letters keep the input key");
        if dl.error.kind == ErrorKind::NotUtf8 {
            assert_eq!(dl.raw_encoding, RawEncoding::Base64);
        }
        assert!(!dl.error.message.is_empty());
        kinds.insert(dl.error.kind);
    }
    let all: BTreeSet<ErrorKind> = corpus.iter().filter_map(|c| c.2).collect();
    assert_eq!(kinds, all);
    // The final commit covers everything.
    let committed: i64 = support::committed(&t.group, &t.input).values().sum();
    assert_eq!(committed, corpus.len() as i64);
}

/// Waits until the group committed everything: the windows of the valid records (all in the
/// past) close once the partitions are quiet and caught up, which releases the commit.
async fn wait_committed(t: &Topics, n: i64) {
    support::wait_until(DEADLINE, "every input committed", || {
        support::committed(&t.group, &t.input).values().sum::<i64>() == n
    })
    .await;
}

async fn generate(topic: &str, count: u64) {
    let mut a = support::producer_args(topic, 11, 500);
    a.count = Some(count);
    a.generator.invalid_ratio = 0.01;
    let s = producer::run_until(a, CancellationToken::new(), Arc::default())
        .await
        .expect("produce");
    assert_eq!(s.delivered, count);
}

fn expected_ids(input: &str, count: usize) -> BTreeSet<Uuid> {
    let records = support::read_topic(input, count, DEADLINE);
    assert_eq!(records.len(), count);
    expected(input, &records)
        .into_values()
        .filter_map(Result::ok)
        .map(|v| v.event_id)
        .collect()
}

fn output_ids(topic: &str, at_least: usize) -> Vec<Uuid> {
    support::read_topic(topic, at_least, DEADLINE)
        .iter()
        .map(|r| {
            ValidatedRecord::from_json(&r.payload)
                .expect("validated")
                .event_id
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_stream_loses_nothing_and_ids_are_stable() {
    let t = topics("kill").await;
    let n = 20_000;
    generate(&t.input, n).await;
    let env = t.env(&[("KAFKA_OPTIONS", "session.timeout.ms=6000".to_owned())]);
    let mut reader = support::spawn_service("stream-reader", &t.group, &env);
    support::wait_until(DEADLINE, "some output before the kill", || {
        support::topic_size(&t.validated) >= 2_000
    })
    .await;
    support::kill9(&mut reader);
    let after_kill = support::topic_size(&t.validated) + support::topic_size(&t.dlq);
    assert!(
        after_kill < n as i64,
        "killed mid-stream ({after_kill} of {n} routed)"
    );

    let mut reader = support::spawn_service("stream-reader", &t.group, &env);
    support::wait_until(
        DEADLINE * 2,
        "everything committed after the restart",
        || support::committed(&t.group, &t.input).values().sum::<i64>() == n as i64,
    )
    .await;
    assert!(
        support::terminate(&mut reader).success(),
        "clean exit on SIGTERM"
    );

    let want = expected_ids(&t.input, n as usize);
    let out = support::topic_size(&t.validated) as usize;
    let got = output_ids(&t.validated, out);
    let distinct: BTreeSet<Uuid> = got.iter().copied().collect();
    assert_eq!(
        distinct, want,
        "every valid input present, with the same ids, and nothing else"
    );
    let dlq = support::topic_size(&t.dlq) as usize;
    let dead: BTreeSet<(i32, i64)> = support::read_topic(&t.dlq, dlq, DEADLINE)
        .iter()
        .map(|r| {
            let d = DeadLetter::from_json(&r.payload).expect("dead letter");
            (d.source.partition, d.source.offset)
        })
        .collect();
    assert_eq!(
        distinct.len() + dead.len(),
        n as usize,
        "valid + invalid = consumed"
    );
}

/// Kafka moves a SIGKILLed member's partitions to the surviving member once the dead member's
/// session expires: the survivor routes the whole input, nobody is restarted.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_members_partitions_move_to_the_survivor() {
    let t = topics("failover").await;
    // Without windows, an offset is committed as soon as its output is acknowledged (open
    // windows would hold commits back by up to a minute and a half of event time).
    let env = t.env(&[
        ("READER_ANALYTICS", "false".to_owned()),
        ("KAFKA_OPTIONS", "session.timeout.ms=6000".to_owned()),
    ]);
    let (log_a, log_b) = (format!("{}_a", t.group), format!("{}_b", t.group));
    let _survivor = support::spawn_service("stream-reader", &log_a, &env);
    support::wait_until(DEADLINE, "the first member owns all 3 partitions", || {
        support::assignments(&log_a).last() == Some(&3)
    })
    .await;
    let mut victim = support::spawn_service("stream-reader", &log_b, &env);
    support::wait_until(DEADLINE, "the group split the partitions", || {
        support::assignments(&log_b).last().is_some_and(|n| *n > 0)
            && support::assignments(&log_a).last().is_some_and(|n| *n < 3)
    })
    .await;
    let victim_owned = *support::assignments(&log_b).last().expect("assigned");
    let n = 6_000;
    generate(&t.input, n / 2).await;
    support::wait_until(DEADLINE, "both members committed the first half", || {
        support::committed(&t.group, &t.input).values().sum::<i64>() == (n / 2) as i64
    })
    .await;
    support::kill9(&mut victim);
    let killed = std::time::Instant::now();
    generate(&t.input, n / 2).await;
    support::wait_until(
        DEADLINE,
        "the survivor committed everything, the victim's partitions included",
        || support::committed(&t.group, &t.input).values().sum::<i64>() == n as i64,
    )
    .await;
    eprintln!(
        "failover: the victim owned {victim_owned} partition(s); everything committed {:.1} s \
         after its SIGKILL",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(
        support::assignments(&log_a).last(),
        Some(&3),
        "the survivor owns every partition again"
    );
    assert_eq!(
        support::assignments(&log_b).len(),
        1,
        "the victim was never restarted"
    );
    let want = expected_ids(&t.input, n as usize);
    let got: BTreeSet<Uuid> = output_ids(&t.validated, support::topic_size(&t.validated) as usize)
        .into_iter()
        .collect();
    assert_eq!(got, want, "every valid input routed, with its id");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_the_partitions() {
    let t = topics("pair").await;
    let other_out = support::unique("it_pair_ok_b");
    support::fresh_topics(&[&other_out]).await;
    let stop = CancellationToken::new();
    let a_stats = Arc::new(ReaderStats::default());
    let b_stats = Arc::new(ReaderStats::default());
    let a = tokio::spawn(stream_reader::run_until(
        args(&t),
        stop.clone(),
        a_stats.clone(),
    ));
    let b = tokio::spawn(stream_reader::run_until(
        ReaderArgs {
            validated_topic: other_out.clone(),
            ..args(&t)
        },
        stop.clone(),
        b_stats.clone(),
    ));
    // Wait until the group is stable with both members holding partitions.
    support::wait_until(DEADLINE, "both instances hold partitions", || {
        let (pa, pb) = (
            a_stats.assigned_partitions.load(Relaxed),
            b_stats.assigned_partitions.load(Relaxed),
        );
        pa > 0 && pb > 0 && pa + pb == 3
    })
    .await;

    let n = 6_000;
    generate(&t.input, n).await;
    support::wait_until(
        DEADLINE,
        "both instances together consumed everything",
        || a_stats.consumed.load(Relaxed) + b_stats.consumed.load(Relaxed) >= n,
    )
    .await;
    support::wait_until(DEADLINE, "everything routed", || {
        let done = |s: &ReaderStats| s.valid.load(Relaxed) + s.invalid.load(Relaxed);
        done(&a_stats) + done(&b_stats) >= n
    })
    .await;
    stop.cancel();
    a.await.expect("join").expect("a");
    b.await.expect("join").expect("b");

    assert!(
        a_stats.consumed.load(Relaxed) > 0 && b_stats.consumed.load(Relaxed) > 0,
        "both worked"
    );
    assert_eq!(
        a_stats.consumed.load(Relaxed) + b_stats.consumed.load(Relaxed),
        n,
        "no partition twice"
    );
    // Map every output back to its input partition: each partition was handled by one instance.
    let input = support::read_topic(&t.input, n as usize, DEADLINE);
    let partition_of: HashMap<Uuid, i32> = expected(&t.input, &input)
        .into_iter()
        .filter_map(|((p, _), v)| v.ok().map(|v| (v.event_id, p)))
        .collect();
    let parts = |topic: &str| -> BTreeSet<i32> {
        output_ids(topic, support::topic_size(topic) as usize)
            .iter()
            .map(|id| partition_of[id])
            .collect()
    };
    let (pa, pb) = (parts(&t.validated), parts(&other_out));
    assert!(pa.is_disjoint(&pb), "{pa:?} vs {pb:?}");
    assert_eq!(pa.union(&pb).count(), 3);
}
