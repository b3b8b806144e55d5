//! Threat-list enrichment against the real pipeline: two lists in the feeds' formats mark the
//! addresses of validated records and of their `access_logs` rows, and a list swapped on disk
//! (written aside, renamed over) marks the records that follow, without a restart. The expected
//! marks come from the lists' text read by this test with `ipnet` (no trie). The `threat_match`
//! alerts are once per list, address, direction and minute, as the reference windows of both
//! sides (the destination windows are on) give them.

use std::{collections::BTreeSet, net::IpAddr, path::Path, time::Duration};

use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use ipnet::IpNet;
use log_schema::{Alert, AlertRule, ValidatedRecord};
use stream_reader::reference::{By, reference_by};

use crate::{
    analytics::rows,
    ops::writer_env,
    reader,
    support::{self, DEADLINE},
};

const DROP_BEFORE: &str =
    "; Spamhaus DROP List\n198.51.100.0/24 ; SBL000001\n2001:db8:bad::/48 ; SBL000002\n";
const DROP_AFTER: &str = "; Spamhaus DROP List, next day\n203.0.113.0/24 ; SBL000003\n";
const LEVEL1: &str = "#\n# firehol_level1\n#\n198.51.100.128/25\n192.0.2.0/24\n";

/// (source, destination) pairs: on no list, on one, on both, IPv6.
const PAIRS: [(&str, &str); 5] = [
    ("198.51.100.5", "8.8.8.8"),
    ("198.51.100.200", "192.0.2.9"),
    ("10.0.0.1", "192.0.2.200"),
    ("2001:db8:bad::1", "10.0.0.2"),
    ("203.0.113.77", "10.0.0.3"),
];

fn record(at: DateTime<Utc>, src: &str, dst: &str, port: u16) -> (Option<Vec<u8>>, Vec<u8>) {
    let json = format!(
        r#"{{"timestamp":"{}","source_ip":"{src}","destination_ip":"{dst}","port":{port},"protocol":"TCP","bytes_sent":100,"bytes_received":10,"action":"ALLOW"}}"#,
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    );
    (Some(src.as_bytes().to_vec()), json.into_bytes())
}

/// The names of the lists (name, text) whose blocks contain `ip`, read with `ipnet`.
fn expected(ip: IpAddr, lists: &[(&str, &str)]) -> Vec<String> {
    lists
        .iter()
        .filter(|(_, text)| {
            text.lines()
                .filter_map(|l| l.split([';', '#']).next())
                .filter_map(|e| e.trim().parse::<IpNet>().ok())
                .any(|n| n.contains(&ip))
        })
        .map(|(name, _)| (*name).to_owned())
        .collect()
}

/// A row's `source_threats` or `destination_threats`.
type Marks = Option<BTreeSet<String>>;

fn validated(topic: &str) -> Vec<ValidatedRecord> {
    support::read_to_end(topic, DEADLINE)
        .iter()
        .map(|r| ValidatedRecord::from_json(&r.payload).expect("validated record"))
        .collect()
}

/// Writes `text` to `path` the way list updates should: a new file renamed over the old.
fn install(text: &str, path: &Path) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Every validated record of `ports` carries the marks `lists` give its addresses.
fn assert_marked(records: &[ValidatedRecord], ports: &BTreeSet<u16>, lists: &[(&str, &str)]) {
    let mine: Vec<&ValidatedRecord> = records.iter().filter(|r| ports.contains(&r.port)).collect();
    assert_eq!(mine.len(), ports.len(), "every record validated once");
    for r in mine {
        assert_eq!(r.source_threats, expected(r.source_ip, lists), "{r:?}");
        assert_eq!(
            r.destination_threats,
            expected(r.destination_ip, lists),
            "{r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn listed_addresses_are_marked_everywhere_and_a_swapped_list_takes_over() {
    let t = reader::topics("threats").await;
    let keyspace = support::fresh_keyspace().await;
    let dir = support::scratch_dir("threats");
    let (drop, level1) = (dir.join("drop.txt"), dir.join("firehol_level1.netset"));
    install(DROP_BEFORE, &drop);
    install(LEVEL1, &level1);
    let _reader = support::spawn_service(
        "stream-reader",
        &t.group,
        &t.env(&[
            (
                "READER_THREAT_LISTS",
                format!("drop={},{}", drop.display(), level1.display()),
            ),
            ("READER_DESTINATION_WINDOWS", "true".to_owned()),
        ]),
    );
    let _writer = support::spawn_service(
        "cassandra-writer",
        &format!("{}_writer", t.group),
        &writer_env(&t, &keyspace),
    );
    let minute = (Utc::now() - TimeDelta::minutes(5))
        .duration_trunc(TimeDelta::minutes(1))
        .expect("minute");
    let batch = |first_port: u16| {
        PAIRS
            .iter()
            .enumerate()
            .map(|(i, (s, d))| record(minute, s, d, first_port + i as u16))
            .collect::<Vec<_>>()
    };
    let before: BTreeSet<u16> = (1_000..1_000 + PAIRS.len() as u16).collect();
    support::produce(&t.input, &batch(1_000)).await;
    support::wait_until(DEADLINE, "the first records validated", || {
        validated(&t.validated).len() >= PAIRS.len()
    })
    .await;
    let lists_before = [("drop", DROP_BEFORE), ("firehol_level1", LEVEL1)];
    assert_marked(&validated(&t.validated), &before, &lists_before);
    assert_eq!(
        expected("198.51.100.200".parse().expect("ip"), &lists_before),
        ["drop", "firehol_level1"],
        "the fixture puts one address on both lists"
    );

    // The rows: the sets of list names, null when on none.
    support::wait_until_async(DEADLINE, "the rows written", || async {
        rows::<(i32,)>(&keyspace, "SELECT port FROM {ks}.access_logs", ())
            .await
            .len()
            >= PAIRS.len()
    })
    .await;
    for (src, dst) in PAIRS {
        let got: Vec<(Marks, Marks)> = rows(
            &keyspace,
            "SELECT source_threats, destination_threats FROM {ks}.access_logs WHERE source_ip = ?",
            (src,),
        )
        .await;
        let want = |ip: &str| {
            let names: BTreeSet<String> = expected(ip.parse().expect("ip"), &lists_before)
                .into_iter()
                .collect();
            (!names.is_empty()).then_some(names)
        };
        assert_eq!(got, vec![(want(src), want(dst))], "{src} → {dst}");
    }

    // The DROP list is replaced: probes until one from the new block is marked, then the same
    // pairs again.
    install(DROP_AFTER, &drop);
    let end = std::time::Instant::now() + Duration::from_secs(30);
    let mut probe = 0;
    loop {
        probe += 1;
        support::produce(
            &t.input,
            &[record(minute, "203.0.113.9", "10.0.0.9", 20_000 + probe)],
        )
        .await;
        let swapped = validated(&t.validated)
            .iter()
            .any(|r| r.port == 20_000 + probe && r.source_threats == ["drop"]);
        if swapped {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "the new list not used 30 s after the swap"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after: BTreeSet<u16> = (2_000..2_000 + PAIRS.len() as u16).collect();
    support::produce(&t.input, &batch(2_000)).await;
    support::wait_until(DEADLINE, "the second records validated", || {
        let ports: BTreeSet<u16> = validated(&t.validated).iter().map(|r| r.port).collect();
        after.is_subset(&ports)
    })
    .await;
    assert_marked(
        &validated(&t.validated),
        &after,
        &[("drop", DROP_AFTER), ("firehol_level1", LEVEL1)],
    );

    // The minute closes: one threat_match per (list, address, direction), its events counted
    // as the reference windows of each side count them (marks as validation gave them).
    let validated_so_far = validated(&t.validated).len();
    support::produce(&t.input, &crate::analytics::closers()).await;
    let cutoff = minute + TimeDelta::minutes(1);
    let logs = [t.group.as_str()];
    let want = || -> BTreeSet<(String, IpAddr, bool, i64)> {
        let mut want = BTreeSet::new();
        for (by, topic, source) in [
            (By::Source, &t.validated, true),
            (By::Destination, &t.by_destination, false),
        ] {
            let r = reference_by(
                by,
                support::read_to_end(topic, DEADLINE).iter().map(|r| {
                    let v = ValidatedRecord::from_json(&r.payload).expect("validated record");
                    (r.partition, r.offset, v)
                }),
                TimeDelta::seconds(30),
                &support::idle_steps(&logs, topic),
            );
            for ((ip, m), w) in r.windows.iter().filter(|((_, m), _)| *m < cutoff) {
                assert_eq!(*m, minute);
                for list in &w.threats {
                    want.insert((list.clone(), *ip, source, w.events));
                }
            }
        }
        want
    };
    let got = || -> BTreeSet<(String, IpAddr, bool, i64)> {
        support::read_to_end(&t.alerts, DEADLINE)
            .iter()
            .map(|r| Alert::from_json(&r.payload).expect("alert"))
            .filter(|a| a.rule == AlertRule::ThreatMatch && a.window_start < cutoff)
            .map(|a| {
                let ip = a.address().expect("an address");
                (a.list.expect("a list"), ip, a.source_ip.is_some(), a.value)
            })
            .collect()
    };
    support::wait_until(DEADLINE * 2, "the minute's threat_match alerts", || {
        validated(&t.validated).len() > validated_so_far && !got().is_empty() && got() == want()
    })
    .await;
    let want = want();
    // Sources on a list sent, and listed destinations received, in that minute.
    let addresses: BTreeSet<(IpAddr, bool)> = want.iter().map(|w| (w.1, w.2)).collect();
    for (ip, source) in [
        ("198.51.100.5", true),
        ("198.51.100.200", true),
        ("2001:db8:bad::1", true),
        ("192.0.2.9", false),
        ("192.0.2.200", false),
        ("203.0.113.9", true),
    ] {
        assert!(
            addresses.contains(&(ip.parse().expect("ip"), source)),
            "{ip} ({}) raises threat_match: {want:?}",
            if source { "source" } else { "destination" }
        );
    }
    let alerts: Vec<Alert> = support::read_to_end(&t.alerts, DEADLINE)
        .iter()
        .map(|r| Alert::from_json(&r.payload).expect("alert"))
        .filter(|a| a.rule == AlertRule::ThreatMatch)
        .collect();
    assert_eq!(alerts.len(), want.len(), "each alert once");
    let ids: BTreeSet<uuid::Uuid> = alerts.iter().map(|a| a.alert_id).collect();
    assert_eq!(
        ids.len(),
        alerts.len(),
        "one id per (list, address, direction, minute)"
    );
    // Persisted with its list: a listed source's in `alerts`, a listed destination's in
    // `target_alerts`.
    support::wait_until_async(DEADLINE, "the threat_match rows", || async {
        let sources: Vec<(String, String)> = rows(
            &keyspace,
            "SELECT source_ip, list FROM {ks}.alerts WHERE day = ?",
            (minute.date_naive(),),
        )
        .await;
        let targets: Vec<(String, String)> = rows(
            &keyspace,
            "SELECT destination_ip, list FROM {ks}.target_alerts WHERE day = ?",
            (minute.date_naive(),),
        )
        .await;
        let stored: BTreeSet<(String, String, bool)> = sources
            .into_iter()
            .map(|(ip, l)| (l, ip, true))
            .chain(targets.into_iter().map(|(ip, l)| (l, ip, false)))
            .collect();
        stored
            == want
                .iter()
                .map(|(l, ip, s, _)| (l.clone(), ip.to_string(), *s))
                .collect()
    })
    .await;
}
