//! `producer --input FILE --format …` against the real broker and stream-reader: the real
//! sample lines of each format (`crates/log-formats/samples/`) become exactly the records the
//! independent reference (`samples/expected.py`) lists, a line that cannot be parsed reaches
//! the dead-letter topic with its bytes and a reason, gzip files and followed files through a
//! rotation give the same records.

use std::{io::Write as _, path::PathBuf, sync::Arc};

use log_schema::DeadLetter;
use producer::{ProducerArgs, formats::InputFormat};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{
    reader,
    support::{self, DEADLINE},
};

fn sample(name: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/log-formats/samples")
        .join(name)
}

/// The reference's records of a sample, addresses in canonical form.
fn expected(name: &str) -> Vec<Value> {
    std::fs::read_to_string(sample(&format!("{name}.expected.jsonl")))
        .expect("expected records")
        .lines()
        .map(|l| canonical(serde_json::from_str(l).expect("json")))
        .collect()
}

fn canonical(mut v: Value) -> Value {
    for field in ["source_ip", "destination_ip"] {
        if let Some(ip) = v[field]
            .as_str()
            .and_then(|s| s.parse::<std::net::IpAddr>().ok())
        {
            v[field] = Value::String(ip.to_string());
        }
    }
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("compress");
    encoder.finish().expect("gzip")
}

async fn replay(topic: &str, path: &std::path::Path, format: InputFormat) -> producer::Summary {
    producer::run_until(
        ProducerArgs {
            input: Some(path.display().to_string()),
            format,
            ..support::producer_args(topic, 1, 10)
        },
        CancellationToken::new(),
        Arc::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
}

#[tokio::test(flavor = "multi_thread")]
async fn each_format_gives_its_expected_records_and_dead_letters_what_it_cannot_parse() {
    let t = reader::topics("formats").await;
    let _reader = support::spawn_service("stream-reader", &t.group, &t.env(&[]));
    let dir = support::scratch_dir("formats");
    // Timestamps of BSD syslog lines have no year: the netfilter samples are checked with a
    // fixed "now" in log-formats' own tests; here the formats whose lines carry full times.
    let cases = [
        ("aws-vpc-flow-v2.log", InputFormat::AwsVpcFlow, false),
        ("aws-vpc-flow-custom.log", InputFormat::Auto, false),
        ("zeek-conn.log", InputFormat::ZeekConn, true),
        ("zeek-conn.json", InputFormat::Auto, false),
        ("suricata-eve.json", InputFormat::SuricataEve, true),
    ];
    let mut want: Vec<Value> = Vec::new();
    let mut garbage: Vec<Vec<u8>> = Vec::new();
    for (name, format, compress) in cases {
        let mut content = std::fs::read(sample(name)).expect("sample");
        let bad = format!("{name}: not a record of this format").into_bytes();
        content.extend_from_slice(&bad);
        content.push(b'\n');
        let path = dir.join(if compress {
            format!("{name}.gz")
        } else {
            name.to_owned()
        });
        std::fs::write(&path, if compress { gzip(&content) } else { content }).expect("write");
        let records = expected(name);
        let summary = replay(&t.input, &path, format).await;
        assert_eq!(
            (summary.delivered, summary.failed, summary.lines_unparsed),
            (records.len() as u64 + 1, 0, 1),
            "{name}: every record and the unparsed line sent"
        );
        assert_eq!(
            summary.lines_skipped + records.len() as u64 + 1,
            summary.lines_read,
            "{name}: every other line skipped"
        );
        want.extend(records);
        garbage.push(bad);
    }

    // On the input topic: exactly the expected records, and the unparsed lines as they were.
    let total = want.len() + garbage.len();
    let input = support::read_topic(&t.input, total, DEADLINE);
    assert_eq!(input.len(), total);
    let (mut got, mut raw): (Vec<Value>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
    for r in input {
        match serde_json::from_slice::<Value>(&r.payload) {
            Ok(v) => got.push(canonical(v)),
            Err(_) => raw.push(r.payload),
        }
    }
    let key = |v: &Value| v.to_string();
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(got, want, "the records, field by field");
    raw.sort();
    garbage.sort();
    assert_eq!(raw, garbage);

    // Through the stream-reader: the records validated, the unparsed lines dead-lettered.
    support::wait_until(DEADLINE, "the reader to commit everything", || {
        support::committed(&t.group, &t.input).values().sum::<i64>() == total as i64
    })
    .await;
    assert_eq!(
        support::read_to_end(&t.validated, DEADLINE).len(),
        want.len()
    );
    let mut dead: Vec<Vec<u8>> = support::read_to_end(&t.dlq, DEADLINE)
        .iter()
        .map(|r| {
            let d = DeadLetter::from_json(&r.payload).expect("dead letter");
            assert_eq!(d.error.kind.as_str(), "malformed_json", "{d:?}");
            assert!(!d.error.message.is_empty());
            d.raw_bytes().expect("raw")
        })
        .collect();
    dead.sort();
    assert_eq!(dead, garbage);
    let _ = std::fs::remove_dir_all(dir);
}

/// A followed Zeek log through a rotation: the new file's header declares its columns again.
#[tokio::test(flavor = "multi_thread")]
async fn a_followed_zeek_log_is_read_through_its_rotation() {
    let topic = support::unique("it_follow_zeek");
    support::fresh_topics(&[&topic]).await;
    let dir = support::scratch_dir("follow_zeek");
    let path = dir.join("conn.log");
    let text = std::fs::read_to_string(sample("zeek-conn.log")).expect("sample");
    let header: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with('#') && !l.starts_with("#close"))
        .collect();
    let records: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let write = |lines: &[&str], append: bool| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(&path)
            .expect("open");
        for l in lines {
            writeln!(f, "{l}").expect("write");
        }
    };
    let (first, second) = records.split_at(6);
    write(&[&header[..], &first[..3]].concat(), false);
    let stop = CancellationToken::new();
    let stats = Arc::new(producer::ProducerStats::default());
    let running = tokio::spawn(producer::run_until(
        ProducerArgs {
            input: Some(path.display().to_string()),
            follow: true,
            format: InputFormat::ZeekConn,
            ..support::producer_args(&topic, 1, 10)
        },
        stop.clone(),
        stats.clone(),
    ));
    let delivered = |n: u64| {
        let stats = stats.clone();
        move || stats.delivered.load(std::sync::atomic::Ordering::Relaxed) >= n
    };
    support::wait_until(DEADLINE, "the first lines", delivered(3)).await;
    write(&first[3..], true);
    support::wait_until(DEADLINE, "the appended lines", delivered(6)).await;
    // logrotate: rename, then a new file that starts with its own header.
    std::fs::rename(&path, dir.join("conn.log.1")).expect("rotate");
    write(&[&header[..], second].concat(), false);
    let n = records.len() as u64;
    support::wait_until(DEADLINE, "the new file's lines", delivered(n)).await;
    stop.cancel();
    let summary = running.await.expect("join").expect("producer");
    assert_eq!((summary.delivered, summary.lines_unparsed), (n, 0));
    let mut got: Vec<Value> = support::read_topic(&topic, n as usize, DEADLINE)
        .iter()
        .map(|r| canonical(serde_json::from_slice(&r.payload).expect("record")))
        .collect();
    let mut want = expected("zeek-conn.log");
    got.sort_by_key(|v| v.to_string());
    want.sort_by_key(|v| v.to_string());
    assert_eq!(got, want);
    let _ = std::fs::remove_dir_all(dir);
}
