//! File ingest that survives restarts: `producer --input FILE --follow` SIGKILLed at several
//! points while the file is written and rotated, restarted with the same command each time,
//! then a finished file imported again. Every line must be in `access_logs` exactly once, under
//! the identity the documented rule gives it (docs/formats.md, "Files"), and the windows must
//! equal a group-by of the lines written.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use log_schema::{DeadLetter, EVENT_ID_NAMESPACE};
use producer::{Generator, GeneratorConfig};
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use crate::{
    analytics::{closers, writer_args},
    exact::{assert_matches, final_stats, minute, reference_of, settle},
    reader,
    support::{self, DEADLINE},
};

/// Lines written in all, and after which lines the file is rotated.
const LINES: usize = 4_000;
const ROTATE_AT: [usize; 3] = [1_000, 2_000, 3_000];
/// Every this many lines, one that is not a record (a dead letter).
const BAD_EVERY: usize = 500;

/// A line as written: its text and where it went (the rotation generation of its file, from
/// 0, and its byte offset there).
struct Written {
    text: String,
    generation: usize,
    offset: u64,
}

/// The identity the documented rule gives a line: UUIDv5 of `file:<fp>/0/<offset>`, where
/// `fp` is the first 8 bytes (big-endian, hex) of the SHA-256 of the file's first 1,024 bytes.
fn expected_event_id(file_start: &[u8], offset: u64) -> uuid::Uuid {
    let digest = Sha256::digest(&file_start[..file_start.len().min(1024)]);
    let fp: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    uuid::Uuid::new_v5(
        &EVENT_ID_NAMESPACE,
        format!("file:{fp}/0/{offset}").as_bytes(),
    )
}

/// Writes `LINES` lines to `path` at ~400 lines/s, a few of them in two writes (a partial line
/// for a while), rotating like logrotate (`access.log` → `access.log.1` → `.2` …) after each
/// of `ROTATE_AT`. Counts lines written and rotations done.
fn write_and_rotate(
    path: &Path,
    lines: Vec<String>,
    written: Arc<AtomicUsize>,
    rotations: Arc<AtomicUsize>,
) -> Vec<Written> {
    let mut out = Vec::with_capacity(lines.len());
    let mut file = std::fs::File::create(path).expect("create the log");
    let (mut generation, mut offset) = (0, 0u64);
    let rotated = |k: usize| PathBuf::from(format!("{}.{k}", path.display()));
    for (i, text) in lines.into_iter().enumerate() {
        if ROTATE_AT.contains(&i) {
            for k in (1..=generation).rev() {
                std::fs::rename(rotated(k), rotated(k + 1)).expect("shift");
            }
            std::fs::rename(path, rotated(1)).expect("rotate");
            file = std::fs::File::create(path).expect("create the new log");
            generation += 1;
            offset = 0;
            rotations.fetch_add(1, Ordering::SeqCst);
        }
        let line = format!("{text}\n");
        if i % 97 == 0 {
            let (head, tail) = line.split_at(line.len() / 2);
            file.write_all(head.as_bytes()).expect("write");
            std::thread::sleep(Duration::from_millis(3));
            file.write_all(tail.as_bytes()).expect("write");
        } else {
            file.write_all(line.as_bytes()).expect("write");
        }
        out.push(Written {
            text,
            generation,
            offset,
        });
        offset += line.len() as u64;
        written.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_micros(2_500));
    }
    out
}

/// The saved position in the producer's checkpoint directory (file fingerprint, offset).
fn checkpoint(dir: &Path) -> Option<(String, u64)> {
    let entry = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".json")))?;
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok()?;
    Some((v["file"].as_str()?.to_owned(), v["offset"].as_u64()?))
}

/// Returns right after the producer saved its position again.
async fn next_save(dir: &Path) {
    let now = checkpoint(dir);
    support::wait_until(DEADLINE, "a checkpoint save", || checkpoint(dir) != now).await;
}

/// Waits (up to the deadline) for a run that ends by itself.
async fn exited(run: &mut support::Service) -> std::process::ExitStatus {
    let mut status = None;
    support::wait_until(DEADLINE, "the import to end", || {
        status = run.try_wait();
        status.is_some()
    })
    .await;
    status.expect("exited")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_followed_file_killed_and_rotated_lands_each_line_once() {
    let t = reader::topics("file").await;
    let keyspace = support::fresh_keyspace().await;
    let dir = support::scratch_dir("file_ingest");
    let path = dir.join("access.log");
    let checkpoints = dir.join("checkpoints");

    // Eight minutes of event time, 40 minutes ago, in file order; every 500th line is garbage.
    let start = minute(40);
    let mut g = Generator::new(GeneratorConfig {
        seed: 7,
        hosts: 60,
        ..Default::default()
    });
    let mut buf = Vec::new();
    let lines: Vec<String> = (0..LINES)
        .map(|i| {
            if i % BAD_EVERY == 0 {
                return format!("not a record, line {i}");
            }
            g.next_into(start + TimeDelta::milliseconds(i as i64 * 120), &mut buf);
            String::from_utf8(buf.clone()).expect("utf8")
        })
        .collect();

    let written = Arc::new(AtomicUsize::new(0));
    let rotations = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (path, lines) = (path.clone(), lines.clone());
        let (written, rotations) = (written.clone(), rotations.clone());
        std::thread::spawn(move || write_and_rotate(&path, lines, written, rotations))
    };
    let reader_env = t.env(&[]);
    let mut stream_reader = support::spawn_service("stream-reader", &t.group, &reader_env);
    let producer_env = vec![
        ("PRODUCER_TOPIC", t.input.clone()),
        ("PRODUCER_INPUT", path.display().to_string()),
        ("PRODUCER_FOLLOW", "true".to_owned()),
        ("PRODUCER_CHECKPOINT_DIR", checkpoints.display().to_string()),
    ];
    let log = format!("{}_producer", t.group);
    let spawn = || support::spawn_service("producer", &log, &producer_env);
    let mut producer = spawn();

    // 1: once records flow.
    support::wait_until(DEADLINE, "the first records", || {
        support::topic_size(&t.input) >= 300
    })
    .await;
    support::kill9(&mut producer);
    producer = spawn();
    // 2: right after a checkpoint was saved.
    next_save(&checkpoints).await;
    support::kill9(&mut producer);
    producer = spawn();
    // 3: right after the first rotation.
    support::wait_until(DEADLINE, "the first rotation", || {
        rotations.load(Ordering::SeqCst) >= 1
    })
    .await;
    support::kill9(&mut producer);
    producer = spawn();
    // 4: down across two rotations (the saved position ends up in `access.log.2`).
    support::wait_until(DEADLINE, "line 1,800 written", || {
        written.load(Ordering::SeqCst) >= 1_800
    })
    .await;
    support::kill9(&mut producer);
    support::wait_until(DEADLINE, "the third rotation", || {
        rotations.load(Ordering::SeqCst) >= 3
    })
    .await;
    producer = spawn();
    // 5: right after a checkpoint save near the end.
    support::wait_until(DEADLINE, "line 3,500 written", || {
        written.load(Ordering::SeqCst) >= 3_500
    })
    .await;
    next_save(&checkpoints).await;
    support::kill9(&mut producer);
    producer = spawn();

    let written = writer.join().expect("the writer thread");
    // The newest file, and every file's first KiB, as they ended.
    let files: Vec<Vec<u8>> = (0..=ROTATE_AT.len())
        .map(|generation| {
            let k = ROTATE_AT.len() - generation;
            let p = if k == 0 {
                path.clone()
            } else {
                PathBuf::from(format!("{}.{k}", path.display()))
            };
            std::fs::read(p).expect("read a log file")
        })
        .collect();
    let last = files.last().expect("files");
    let last_fp = {
        let d = Sha256::digest(&last[..1024]);
        d[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    support::wait_until(
        DEADLINE * 2,
        "the position saved at the end of the file",
        || checkpoint(&checkpoints) == Some((last_fp.clone(), last.len() as u64)),
    )
    .await;
    assert!(support::terminate(&mut producer).success(), "clean stop");

    // A finished file imported again, from its start (another checkpoint directory): the same
    // identities; then the same command once more sends nothing.
    let again = support::scratch_dir("file_ingest_again");
    let oldest = format!("{}.{}", path.display(), ROTATE_AT.len());
    let import = vec![
        ("PRODUCER_TOPIC", t.input.clone()),
        ("PRODUCER_INPUT", oldest),
        ("PRODUCER_CHECKPOINT_DIR", again.display().to_string()),
    ];
    let before = support::topic_size(&t.input);
    let mut run = support::spawn_service("producer", &log, &import);
    assert!(exited(&mut run).await.success(), "the import succeeds");
    let resent = support::topic_size(&t.input) - before;
    assert_eq!(
        resent, ROTATE_AT[0] as i64,
        "the whole first file sent again"
    );
    let mut run = support::spawn_service("producer", &log, &import);
    assert!(
        exited(&mut run).await.success(),
        "the import succeeds again"
    );
    assert_eq!(
        support::topic_size(&t.input) - before,
        resent,
        "a finished import run again sends nothing"
    );

    // Close every minute of the file's traffic, and wait for the windows.
    support::produce(&t.input, &closers()).await;
    let n = support::topic_size(&t.input);
    let lateness = TimeDelta::seconds(30);
    let cutoff = minute(20);
    settle(&t, n, cutoff, lateness, &[&t.group]).await;
    assert!(support::terminate(&mut stream_reader).success());

    // Windows: a group-by of the valid lines written, each once.
    let mut want: BTreeMap<(IpAddr, DateTime<Utc>), i64> = BTreeMap::new();
    let mut valid = Vec::new();
    let mut bad = BTreeSet::new();
    for (i, w) in written.iter().enumerate() {
        let id = expected_event_id(&files[w.generation], w.offset);
        if i % BAD_EVERY == 0 {
            bad.insert(format!("{id}"));
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&w.text).expect("a generated record");
        let ip: IpAddr = v["source_ip"].as_str().expect("ip").parse().expect("ip");
        let at = log_schema::parse_timestamp(v["timestamp"].as_str().expect("ts")).expect("ts");
        let m = at.duration_trunc(TimeDelta::minutes(1)).expect("trunc");
        *want.entry((ip, m)).or_default() += 1;
        valid.push(id);
    }
    let emitted = final_stats(&t.stats, cutoff);
    let got: BTreeMap<(IpAddr, DateTime<Utc>), i64> =
        emitted.iter().map(|(k, s)| (*k, s.events)).collect();
    assert_eq!(got, want, "each line counted once in its window");
    let r = reference_of(&t, lateness, &[&t.group], cutoff);
    assert!(
        r.duplicates > 0,
        "the kills and the import sent lines twice"
    );
    assert_matches(&emitted, &r);

    // Dead letters: each garbage line, under its identity.
    let dead: BTreeSet<String> = support::read_to_end(&t.dlq, DEADLINE)
        .iter()
        .map(|r| DeadLetter::from_json(&r.payload).expect("dead letter"))
        .map(|d| {
            let origin = d.redrive.expect("a file line carries its origin").origin;
            let id = uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, origin.to_header().as_bytes());
            id.to_string()
        })
        .collect();
    assert_eq!(
        dead, bad,
        "every garbage line dead-lettered under its identity"
    );

    // Cassandra: one row per valid line, with the documented event_id.
    let stats = Arc::new(cassandra_writer::writer::WriterStats::default());
    let stop = CancellationToken::new();
    let cassandra = tokio::spawn(cassandra_writer::writer::run_until(
        writer_args(&t, &keyspace),
        stop.clone(),
        stats,
    ));
    let session = support::session(&keyspace).await;
    let want_ids: BTreeSet<uuid::Uuid> = valid.iter().copied().collect();
    assert_eq!(want_ids.len(), valid.len(), "identities are distinct");
    let mut ids = BTreeSet::new();
    let deadline = Instant::now() + DEADLINE * 2;
    while Instant::now() < deadline {
        let rows = session
            .query_unpaged(format!("SELECT event_id FROM {keyspace}.access_logs"), ())
            .await
            .expect("select")
            .into_rows_result()
            .expect("rows");
        let all: Vec<uuid::Uuid> = rows
            .rows::<(uuid::Uuid,)>()
            .expect("typed")
            .map(|r| r.expect("row").0)
            .collect();
        // 64 closers are rows too.
        if all.len() >= valid.len() + 64 {
            assert_eq!(all.len(), valid.len() + 64, "one row per line");
            ids = all.into_iter().collect();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    cassandra
        .await
        .expect("join")
        .expect("writer stopped cleanly");
    let missing: Vec<_> = want_ids.difference(&ids).take(5).collect();
    assert!(missing.is_empty(), "rows missing for lines: {missing:?}");
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(again);
}
