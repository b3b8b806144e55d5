//! The producer against the real broker.

use std::net::IpAddr;
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use chrono::Utc;
use log_schema::{ErrorKind, Limits, Origin, validate};
use producer::{ProducerArgs, Scenario};
use tokio_util::sync::CancellationToken;

use crate::support::{self, DEADLINE};

fn args(topic: &str) -> ProducerArgs {
    support::producer_args(topic, 7, 2000)
}

async fn run(args: ProducerArgs) -> producer::Summary {
    producer::run_until(args, CancellationToken::new(), Arc::default())
        .await
        .expect("producer run")
}

#[tokio::test(flavor = "multi_thread")]
async fn count_puts_exactly_that_many_valid_records_keyed_by_source_ip() {
    let topic = support::unique("it_prod_count");
    support::fresh_topics(&[&topic]).await;
    let summary = run(ProducerArgs {
        count: Some(10_000),
        ..args(&topic)
    })
    .await;
    assert_eq!(
        (summary.sent, summary.delivered, summary.failed),
        (10_000, 10_000, 0)
    );
    assert_eq!(support::topic_size(&topic), 10_000);
    let records = support::read_topic(&topic, 10_000, DEADLINE);
    assert_eq!(records.len(), 10_000);
    let mut partitions_of_ip: HashMap<String, HashSet<i32>> = HashMap::new();
    for r in &records {
        let origin = Origin {
            topic: &topic,
            partition: r.partition,
            offset: r.offset,
        };
        let v =
            validate(&r.payload, &origin, Utc::now(), &Limits::default()).expect("valid record");
        let key = String::from_utf8(r.key.clone().expect("keyed")).expect("utf8 key");
        assert_eq!(key, v.source_ip.to_string());
        partitions_of_ip.entry(key).or_default().insert(r.partition);
        // The seed's format: exactly the eight fields, naive timestamp.
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&r.payload).expect("object");
        assert_eq!(obj.len(), 8);
        assert!(!obj["timestamp"].as_str().expect("ts").ends_with('Z'));
    }
    assert!(
        partitions_of_ip.values().all(|p| p.len() == 1),
        "one IP, one partition"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_ratio_mixes_in_records_the_contract_rejects() {
    let topic = support::unique("it_prod_invalid");
    support::fresh_topics(&[&topic]).await;
    let mut a = args(&topic);
    a.count = Some(3_000);
    a.generator.invalid_ratio = 0.3;
    let summary = run(a).await;
    assert_eq!(summary.delivered, 3_000);
    let records = support::read_topic(&topic, 3_000, DEADLINE);
    let mut kinds: HashMap<ErrorKind, usize> = HashMap::new();
    for r in &records {
        let origin = Origin {
            topic: &topic,
            partition: r.partition,
            offset: r.offset,
        };
        if let Err(e) = validate(&r.payload, &origin, Utc::now(), &Limits::default()) {
            *kinds.entry(e.kind).or_default() += 1;
        }
    }
    let invalid: usize = kinds.values().sum();
    assert!(
        (600..=1200).contains(&invalid),
        "~30 % invalid, got {invalid}"
    );
    assert_eq!(
        kinds.len(),
        producer::generate::INVALID_KINDS.len(),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_round_trips_a_file_byte_for_byte() {
    let topic = support::unique("it_prod_replay");
    support::fresh_topics(&[&topic]).await;
    let lines = [
        r#"{"timestamp": "2025-12-28T10:30:45.123456", "source_ip": "192.168.1.100", "destination_ip": "10.0.0.50", "port": 8080, "protocol": "TCP", "bytes_sent": 2048, "bytes_received": 4096, "action": "ALLOW"}"#,
        r#"{"source_ip":"10.9.9.9","extra":"kept as is","port":"not validated here"}"#,
        "this is not json at all",
        r#"{"timestamp":"2025-12-28T10:30:46Z","source_ip":"2001:db8::1","destination_ip":"10.0.0.50","port":0,"protocol":"icmp","bytes_sent":1,"bytes_received":0,"action":"deny"}"#,
    ];
    let path = std::env::temp_dir().join(format!("{}.jsonl", support::unique("replay")));
    std::fs::write(&path, format!("{}\n", lines.join("\n"))).expect("write input");
    let summary = run(ProducerArgs {
        input: Some(path.display().to_string()),
        rate: 500,
        ..args(&topic)
    })
    .await;
    assert_eq!(
        (
            summary.lines_read,
            summary.sent,
            summary.delivered,
            summary.failed
        ),
        (4, 4, 4, 0)
    );
    let records = support::read_topic(&topic, 4, DEADLINE);
    let mut got: Vec<Vec<u8>> = records.iter().map(|r| r.payload.clone()).collect();
    let mut want: Vec<Vec<u8>> = lines.iter().map(|l| l.as_bytes().to_vec()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let keyed: HashSet<String> = records
        .iter()
        .filter_map(|r| r.key.clone().map(|k| String::from_utf8(k).expect("utf8")))
        .collect();
    assert_eq!(
        keyed,
        ["192.168.1.100", "10.9.9.9", "2001:db8::1"]
            .map(String::from)
            .into()
    );
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_scenario_puts_its_pattern_on_the_topic() {
    let topic = support::unique("it_prod_scen");
    support::fresh_topics(&[&topic]).await;
    let mut a = args(&topic);
    a.count = Some(7_000);
    a.generator.scenarios = vec![
        Scenario::PortScan,
        Scenario::Flood,
        Scenario::DenyBurst,
        Scenario::HostSweep,
    ];
    run(a).await;
    let records = support::read_topic(&topic, 7_000, DEADLINE);
    // (source, minute) → (events, distinct ports, denied, distinct destinations)
    #[allow(clippy::type_complexity)] // reason: a one-off tally, named by the comment above
    let mut per: HashMap<(String, i64), (usize, HashSet<u16>, usize, HashSet<IpAddr>)> =
        HashMap::new();
    for r in &records {
        let origin = Origin {
            topic: &topic,
            partition: r.partition,
            offset: r.offset,
        };
        let v = validate(&r.payload, &origin, Utc::now(), &Limits::default()).expect("valid");
        let e = per
            .entry((v.source_ip.to_string(), v.timestamp.timestamp() / 60))
            .or_default();
        e.0 += 1;
        e.1.insert(v.port);
        e.2 += usize::from(v.action.is_denied());
        e.3.insert(v.destination_ip);
    }
    let find = |ip: String| {
        per.iter()
            .filter(|((i, _), _)| *i == ip)
            .map(|(_, v)| v)
            .collect::<Vec<_>>()
    };
    // Bursts are scheduled in order port-scan, flood, deny-burst: attackers 0, 1, 2.
    let scan = find(Scenario::PortScan.attacker(0).to_string());
    assert!(scan.iter().any(|v| v.1.len() >= 100), "port scan: {scan:?}");
    let flood = find(Scenario::Flood.attacker(1).to_string());
    assert!(flood.iter().any(|v| v.0 >= 5_000), "flood");
    let deny = find(Scenario::DenyBurst.attacker(2).to_string());
    assert!(deny.iter().any(|v| v.2 >= 100), "deny burst");
    let sweep = find(Scenario::HostSweep.attacker(3).to_string());
    assert!(sweep.iter().any(|v| v.3.len() >= 100), "host sweep");
}
