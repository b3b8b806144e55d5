//! Hostile input through the real broker and the stream-reader: every payload of
//! `tests/corpus/hostile/` (plus a few generated ones, among them a 10 MiB message) lands on
//! exactly the output `EXPECTED.tsv` names, with exactly its error kind, the original bytes
//! recoverable from the dead letter, and the reader still running afterwards.
//!
//! The 10 MiB message is larger than the reader's 2 MiB fetches: with the consumer's production
//! settings it is still served (Kafka returns a first batch larger than the fetch limits,
//! KIP-74) and dead-lettered as `too_large`. Its input topic is configured for 16 MiB messages
//! (`max.message.bytes`), as a topic that carries such records would be. The 4 MiB message covers
//! the truncated dead letter end to end.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use chrono::Utc;
use log_schema::{
    DEFAULT_MAX_RAW_BYTES, DeadLetter, ErrorKind, Limits, Origin, RawEncoding, ValidatedRecord,
    validate,
};
use rdkafka::{error::KafkaError, types::RDKafkaErrorCode};
use stream_reader::ReaderStats;
use tokio_util::sync::CancellationToken;

use crate::{
    reader,
    support::{self, DEADLINE, Read},
};

/// The generated message larger than the local broker can serve.
const HUGE: &str = "@generated-10mb";
const TEN_MIB: usize = 10 * 1024 * 1024;
const FOUR_MIB: usize = 4 * 1024 * 1024;

/// The reader's `max_record_bytes` in `reader::args`.
const READER_MAX_RECORD_BYTES: usize = 64 * 1024;

/// What a producer of messages over 1 MB needs (librdkafka's default `message.max.bytes` is
/// 1,000,000).
const PRODUCER_MAX_MESSAGE: (&str, &str) = ("message.max.bytes", "16777216");

const SEED_EXAMPLE: &str = r#"{"timestamp": "2025-12-28T10:30:45.123456", "source_ip": "192.168.1.100", "destination_ip": "10.0.0.50", "port": 8080, "protocol": "TCP", "bytes_sent": 2048, "bytes_received": 4096, "action": "ALLOW"}"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Valid,
    Invalid(ErrorKind),
}

#[derive(Debug)]
struct Case {
    name: String,
    payload: Vec<u8>,
    expected: Outcome,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/hostile")
}

/// The seed example padded with spaces to `len` bytes.
fn padded_seed(len: usize) -> Vec<u8> {
    let mut p = SEED_EXAMPLE.as_bytes().to_vec();
    assert!(p.len() <= len);
    p.resize(len, b' ');
    p
}

/// A `len`-byte JSON record: the seed's fields plus an unknown field whose value mixes ASCII,
/// multi-byte characters and escapes (so the dead letter's prefix cut meets all of them).
fn big_record(len: usize) -> Vec<u8> {
    let head = SEED_EXAMPLE.strip_suffix('}').expect("object");
    let prefix = format!(r#"{head}, "pad": ""#);
    let suffix = r#""}"#;
    let room = len - prefix.len() - suffix.len();
    let chunk = "é😀\\\"abc\\n ";
    let mut pad = String::with_capacity(room);
    while pad.len() + chunk.len() <= room {
        pad.push_str(chunk);
    }
    while pad.len() < room {
        pad.push('x');
    }
    let out = format!("{prefix}{pad}{suffix}").into_bytes();
    assert_eq!(out.len(), len);
    out
}

fn generated(name: &str) -> Vec<u8> {
    match name {
        "@generated-64kib-exact" => padded_seed(READER_MAX_RECORD_BYTES),
        "@generated-64kib-plus-one" => padded_seed(READER_MAX_RECORD_BYTES + 1),
        "@generated-4mib" => big_record(FOUR_MIB),
        HUGE => big_record(TEN_MIB),
        other => panic!("EXPECTED.tsv names an unknown generated payload {other}"),
    }
}

fn parse_outcome(s: &str) -> Outcome {
    if s == "valid" {
        return Outcome::Valid;
    }
    let kind: ErrorKind = serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .unwrap_or_else(|e| panic!("EXPECTED.tsv: {s:?} is neither valid nor an error kind ({e})"));
    Outcome::Invalid(kind)
}

/// Every case of `EXPECTED.tsv`; every file of the directory must be listed, and vice versa.
fn corpus() -> Vec<Case> {
    let dir = corpus_dir();
    let table = std::fs::read_to_string(dir.join("EXPECTED.tsv")).expect("EXPECTED.tsv");
    let mut cases = Vec::new();
    for line in table.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let mut cols = line.split('\t');
        let (Some(name), Some(outcome)) = (cols.next(), cols.next()) else {
            panic!("EXPECTED.tsv: malformed line {line:?}");
        };
        let payload = if name.starts_with('@') {
            generated(name)
        } else {
            std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("corpus file {name}: {e}"))
        };
        cases.push(Case {
            name: name.to_owned(),
            payload,
            expected: parse_outcome(outcome),
        });
    }
    let listed: BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(listed.len(), cases.len(), "EXPECTED.tsv lists a name twice");
    let files: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("name"))
        .filter(|n| n != "EXPECTED.tsv")
        .collect();
    let unlisted: Vec<&String> = files
        .iter()
        .filter(|f| !listed.contains(f.as_str()))
        .collect();
    assert!(unlisted.is_empty(), "not in EXPECTED.tsv: {unlisted:?}");
    assert!(listed.contains(HUGE), "EXPECTED.tsv lists {HUGE}");
    cases
}

#[test]
fn the_corpus_covers_every_error_kind_of_the_reader() {
    let kinds: BTreeSet<ErrorKind> = corpus()
        .iter()
        .filter_map(|c| match c.expected {
            Outcome::Invalid(k) => Some(k),
            Outcome::Valid => None,
        })
        .collect();
    let reader_kinds: BTreeSet<ErrorKind> = ErrorKind::ALL
        .into_iter()
        .filter(|k| k.is_validation())
        .collect();
    assert_eq!(kinds, reader_kinds);
}

/// The corpus agrees with the validator, and the dead letter of each invalid case keeps what
/// the contract says, before anything touches the broker: a quick, precise failure when
/// `EXPECTED.tsv` and the code disagree, and the envelope of the 10 MiB case checked whatever
/// the broker can serve.
#[test]
fn the_validator_agrees_with_expected_tsv() {
    let origin = Origin {
        topic: "ip_logs",
        partition: 0,
        offset: 0,
    };
    let limits = Limits::default();
    let mut mismatches = Vec::new();
    for c in corpus() {
        match validate(&c.payload, &origin, Utc::now(), &limits) {
            Ok(_) if c.expected == Outcome::Valid => {}
            Err(e) if c.expected == Outcome::Invalid(e.kind) => {
                let dl =
                    DeadLetter::new(&e, &c.payload, &origin, Utc::now(), DEFAULT_MAX_RAW_BYTES);
                let back = DeadLetter::from_json(&dl.to_json()).expect("envelope round trip");
                check_dead_letter(&c, &back, dl.to_json().len());
            }
            got => mismatches.push(format!(
                "{}: expected {:?}, got {:?}",
                c.name,
                c.expected,
                got.map_err(|e| e.kind)
            )),
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}

/// What the dead letter of `case` must hold; `envelope_len` is its size on the topic.
fn check_dead_letter(case: &Case, dl: &DeadLetter, envelope_len: usize) {
    let name = case.name.as_str();
    assert_eq!(
        Outcome::Invalid(dl.error.kind),
        case.expected,
        "{name}: {}",
        dl.error.message
    );
    assert!(!dl.error.message.is_empty(), "{name}: a message for people");
    assert_eq!(dl.raw_size, case.payload.len(), "{name}: raw_size");
    let utf8 = std::str::from_utf8(&case.payload).is_ok();
    assert_eq!(
        dl.raw_encoding,
        if utf8 {
            RawEncoding::Utf8
        } else {
            RawEncoding::Base64
        },
        "{name}: raw_encoding"
    );
    let raw = dl.raw_bytes().expect("raw decodes");
    if case.payload.len() > DEFAULT_MAX_RAW_BYTES {
        assert!(dl.raw_truncated, "{name}: too big to keep whole");
        assert!(
            !raw.is_empty() && dl.raw.len() <= DEFAULT_MAX_RAW_BYTES,
            "{name}: kept {} bytes",
            raw.len()
        );
        assert!(
            case.payload.starts_with(&raw),
            "{name}: the kept bytes are a prefix of the original"
        );
        assert!(
            envelope_len < 1_000_000,
            "{name}: the dead letter fits Kafka's default message.max.bytes ({envelope_len} bytes)"
        );
    } else {
        assert!(!dl.raw_truncated, "{name}: kept whole");
        assert_eq!(raw, case.payload, "{name}: original bytes recoverable");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_corpus_is_routed_exactly_and_the_reader_survives() {
    let cases = corpus();
    let t = reader::topics("hostile").await;
    support::set_topic_config(&t.input, "max.message.bytes", "16777216").await;

    // Keyed by case name (dead letters keep the input key). Everything but the huge message
    // first; the huge one after all of them is acknowledged.
    let record = |c: &Case| (Some(c.name.clone().into_bytes()), c.payload.clone());
    let (huge, rest): (Vec<&Case>, Vec<&Case>) = cases.iter().partition(|c| c.name == HUGE);
    let huge = huge[0];
    let records: Vec<_> = rest.iter().map(|c| record(c)).collect();
    let deliveries = support::produce_each(&t.input, &records, &[PRODUCER_MAX_MESSAGE]).await;
    let mut coords: HashMap<(i32, i64), &Case> = HashMap::new();
    for (c, d) in rest.iter().zip(deliveries) {
        let at = d.unwrap_or_else(|e| panic!("{}: the broker must accept it: {e}", c.name));
        coords.insert(at, c);
    }
    // Without the raised producer limit, librdkafka refuses the huge message itself, clearly.
    let refused = support::produce_each(&t.input, &[record(huge)], &[]).await;
    assert!(
        matches!(
            refused[..],
            [Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageSizeTooLarge
            ))]
        ),
        "10 MiB with librdkafka's default message.max.bytes: {refused:?}"
    );
    // With it, the broker accepts it.
    let huge_at = support::produce_each(&t.input, &[record(huge)], &[PRODUCER_MAX_MESSAGE])
        .await
        .remove(0)
        .unwrap_or_else(|e| panic!("the broker must accept the 10 MiB message: {e}"));
    coords.insert(huge_at, huge);

    let stats = Arc::new(ReaderStats::default());
    let stop = CancellationToken::new();
    // The reader's production consumer settings: 2 MiB fetches, smaller than the 4 and 10 MiB
    // messages.
    let args = reader::args(&t);
    let running = tokio::spawn(stream_reader::run_until(args, stop.clone(), stats.clone()));
    let routed = || stats.valid.load(Relaxed) + stats.invalid.load(Relaxed);
    let progress = || {
        format!(
            "consumed {}, valid {}, invalid {}, produce retries {}",
            stats.consumed.load(Relaxed),
            stats.valid.load(Relaxed),
            stats.invalid.load(Relaxed),
            stats.retries.load(Relaxed),
        )
    };
    let n = cases.len() as u64;
    let end = Instant::now() + DEADLINE;
    while routed() < n && !running.is_finished() && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !running.is_finished(),
        "the reader stopped by itself on hostile input: {:?}",
        running.await
    );
    assert_eq!(
        routed(),
        n,
        "every case routed within {DEADLINE:?}, the 10 MiB one included ({})",
        progress()
    );
    assert_eq!(stats.consumed.load(Relaxed), n, "{}", progress());

    // Valid cases: on the validated topic, exactly as the contract enriches them.
    let by_event_id: HashMap<uuid::Uuid, ((i32, i64), &Case)> = coords
        .iter()
        .map(|(&(partition, offset), &case)| {
            let origin = Origin {
                topic: &t.input,
                partition,
                offset,
            };
            (origin.event_id(), ((partition, offset), case))
        })
        .collect();
    let n_valid = cases
        .iter()
        .filter(|c| c.expected == Outcome::Valid)
        .count();
    let n_invalid = cases.len() - n_valid;
    let ok = support::read_topic(&t.validated, n_valid, DEADLINE);
    let mut seen = BTreeSet::new();
    for r in &ok {
        let got = ValidatedRecord::from_json(&r.payload).expect("a validated record");
        let ((partition, offset), case) = by_event_id[&got.event_id];
        assert_eq!(
            case.expected,
            Outcome::Valid,
            "{} was validated: {got:?}",
            case.name
        );
        let origin = Origin {
            topic: &t.input,
            partition,
            offset,
        };
        let mut want =
            validate(&case.payload, &origin, got.ingested_at, &Limits::default()).expect("valid");
        want.ingested_at = got.ingested_at;
        assert_eq!(got, want, "{}: enriched as the contract says", case.name);
        assert!(seen.insert(case.name.as_str()), "{} twice", case.name);
    }

    // Invalid cases: on the DLQ with exactly their kind and their original bytes.
    let dlq: Vec<Read> = support::read_topic(&t.dlq, n_invalid, DEADLINE);
    for r in &dlq {
        let dl = DeadLetter::from_json(&r.payload).expect("a dead letter");
        assert_eq!(dl.source.topic, t.input);
        let case = coords[&(dl.source.partition, dl.source.offset)];
        check_dead_letter(case, &dl, r.payload.len());
        assert_eq!(
            r.key.as_deref(),
            Some(case.name.as_bytes()),
            "{}: input key kept",
            case.name
        );
        assert!(
            seen.insert(case.name.as_str()),
            "{} dead-lettered twice",
            case.name
        );
    }

    let missing: Vec<&str> = cases
        .iter()
        .map(|c| c.name.as_str())
        .filter(|name| !seen.contains(name))
        .collect();
    assert!(missing.is_empty(), "routed nowhere: {missing:?}");
    assert_eq!(
        support::topic_size(&t.validated),
        n_valid as i64,
        "nothing extra on the validated topic"
    );
    assert_eq!(
        support::topic_size(&t.dlq),
        n_invalid as i64,
        "nothing extra on the DLQ"
    );
    assert_eq!(stats.valid.load(Relaxed), n_valid as u64, "{}", progress());
    assert_eq!(
        stats.invalid.load(Relaxed),
        n_invalid as u64,
        "{}",
        progress()
    );
    let mut per_kind: BTreeMap<ErrorKind, u64> = BTreeMap::new();
    for c in &cases {
        if let Outcome::Invalid(k) = c.expected {
            *per_kind.entry(k).or_default() += 1;
        }
    }
    for (kind, count) in per_kind {
        assert_eq!(stats.invalid_of(kind), count, "dead letters of kind {kind}");
    }

    // Still the same reader, and it stops cleanly when asked.
    assert!(!running.is_finished(), "the reader is still running");
    stop.cancel();
    running
        .await
        .expect("join")
        .expect("the reader stopped cleanly");
}
