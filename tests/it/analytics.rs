//! Windowed per-IP statistics and alerts, end to end: reader → ip_stats / ip_alerts → writer →
//! Cassandra.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use cassandra_writer::writer::{WriterArgs, WriterStats};
use chrono::{DateTime, DurationRound, NaiveDate, TimeDelta, Utc};
use futures::StreamExt;
use log_schema::{Alert, AlertRule, WindowStats};
use pipeline_runtime::{kafka::KafkaArgs, telemetry::TelemetryArgs};
use producer::{Generator, GeneratorConfig, Scenario};
use stream_reader::ReaderStats;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    reader::{self, Topics},
    support::{self, DEADLINE},
};

/// (events, distinct ports, distinct destinations, denied, first seen, last seen)
type Expected = (i64, i64, i64, i64, DateTime<Utc>, DateTime<Utc>);

fn minute(ago: i64) -> DateTime<Utc> {
    (Utc::now() - TimeDelta::minutes(ago))
        .duration_trunc(TimeDelta::minutes(1))
        .expect("trunc")
}

pub(crate) fn raw(
    at: DateTime<Utc>,
    ip: &str,
    port: u16,
    dest: u8,
    action: &str,
) -> (Option<Vec<u8>>, Vec<u8>) {
    let json = format!(
        r#"{{"timestamp":"{}","source_ip":"{ip}","destination_ip":"10.9.0.{dest}","port":{port},"protocol":"TCP","bytes_sent":100,"bytes_received":10,"action":"{action}"}}"#,
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    );
    (Some(ip.as_bytes().to_vec()), json.into_bytes())
}

pub(crate) fn writer_args(t: &Topics, keyspace: &str) -> WriterArgs {
    WriterArgs {
        kafka: KafkaArgs::new(support::kafka_broker()),
        cassandra: support::cassandra(keyspace),
        telemetry: TelemetryArgs {
            log_format: pipeline_runtime::telemetry::LogFormat::Text,
        },
        group_id: format!("{}_writer", t.group),
        input_topic: t.validated.clone(),
        stats_topic: t.stats.clone(),
        target_stats_topic: t.target_stats.clone(),
        alerts_topic: t.alerts.clone(),
        dlq_topic: t.dlq.clone(),
        retry_min_delay_ms: 50,
        retry_max_delay_ms: 1_000,
        metrics_addr: "127.0.0.1:0".parse().expect("addr"),
        ..support::writer_defaults()
    }
}

pub(crate) fn stats_of(topic: &str) -> Vec<WindowStats> {
    let n = support::topic_size(topic) as usize;
    support::read_topic(topic, n, DEADLINE)
        .iter()
        .map(|r| WindowStats::from_json(&r.payload).expect("window stats"))
        .collect()
}

fn alerts_of(topic: &str) -> Vec<Alert> {
    let n = support::topic_size(topic) as usize;
    support::read_topic(topic, n, DEADLINE)
        .iter()
        .map(|r| Alert::from_json(&r.payload).expect("alert"))
        .collect()
}

/// Event time of the closing records: now, so their event time closes every window of the
/// tests' data (at least 20 minutes old); their own windows stay open.
pub(crate) fn closers() -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    // 64 sources and 64 destinations: every partition of the validated topic and of the
    // by-destination topic gets at least one (with 3 partitions the chance that one gets none
    // is 3 · (2/3)^64 ≈ 2e-11).
    (0..64u8)
        .map(|i| raw(Utc::now(), &format!("198.51.100.{i}"), 9, i + 1, "ALLOW"))
        .collect()
}

/// Windows of `stats` older than `cutoff` (the closers' own windows excluded).
fn before(stats: Vec<WindowStats>, cutoff: DateTime<Utc>) -> Vec<WindowStats> {
    stats
        .into_iter()
        .filter(|s| s.window_start < cutoff)
        .collect()
}

/// Runs a reader in-process on `t` (plus the closing records) until `windows` windows older
/// than `cutoff` were emitted, then stops it.
pub(crate) async fn run_reader(
    t: &Topics,
    windows: usize,
    cutoff: DateTime<Utc>,
) -> Arc<ReaderStats> {
    support::produce(&t.input, &closers()).await;
    let stats = Arc::new(ReaderStats::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(stream_reader::run_until(
        reader::args(t),
        stop.clone(),
        stats.clone(),
    ));
    support::wait_until(DEADLINE * 2, "the windows emitted", || {
        let n = support::topic_size(&t.stats) as usize;
        n >= windows && before(stats_of(&t.stats), cutoff).len() >= windows
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("reader stopped cleanly");
    stats
}

pub(crate) async fn rows<T>(
    keyspace: &str,
    cql: &str,
    values: impl scylla::serialize::row::SerializeRow,
) -> Vec<T>
where
    T: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
{
    let session = support::session(keyspace).await;
    let stmt = session
        .prepare(cql.replace("{ks}", keyspace))
        .await
        .expect("prepare");
    let mut pages = session
        .execute_iter(stmt, values)
        .await
        .expect("select")
        .rows_stream::<T>()
        .expect("typed");
    let mut out = Vec::new();
    while let Some(row) = pages.next().await {
        out.push(row.expect("decode"));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn crafted_traffic_gives_exact_window_totals_in_ip_stats_and_cassandra() {
    let t = reader::topics("win").await;
    let keyspace = support::fresh_keyspace().await;
    let ips = ["10.1.0.1", "10.1.0.2", "10.1.0.3"];
    let counts = [[5, 3, 7], [2, 8, 1], [4, 4, 4]];
    let base = minute(30);
    let mut events = Vec::new();
    // expected (ip, minute index) → (events, distinct ports, distinct destinations, denied, first, last)
    let mut want: BTreeMap<(String, i64), Expected> = BTreeMap::new();
    for (i, ip) in ips.iter().enumerate() {
        for (m, &count) in counts[i].iter().enumerate() {
            let mut ports = BTreeSet::new();
            let mut dests = BTreeSet::new();
            let mut denied = 0;
            let mut times = Vec::new();
            for k in 0..count {
                let at = base + TimeDelta::minutes(m as i64) + TimeDelta::seconds(5 * k + i as i64);
                let port = 1000 + (k % 3) as u16;
                let dest = (k % 2) as u8;
                let action = if k % 3 == 0 { "DENY" } else { "ALLOW" };
                ports.insert(port);
                dests.insert(dest);
                denied += i64::from(action == "DENY");
                times.push(at);
                events.push((at, raw(at, ip, port, dest, action)));
            }
            let first = *times.iter().min().expect("events");
            let last = *times.iter().max().expect("events");
            want.insert(
                (ip.to_string(), m as i64),
                (
                    count,
                    ports.len() as i64,
                    dests.len() as i64,
                    denied,
                    first,
                    last,
                ),
            );
        }
    }
    events.sort_by_key(|e| e.0);
    let records: Vec<_> = events.into_iter().map(|e| e.1).collect();
    let n = records.len() as i64;
    support::produce(&t.input, &records).await;

    let stats = run_reader(&t, 9, minute(20)).await;
    assert!(stats.windows_closed.load(Relaxed) >= 9);
    assert_eq!(stats.alerts.load(Relaxed), 0);
    let got = before(stats_of(&t.stats), minute(20));
    assert_eq!(got.len(), 9, "one statistics record per (ip, minute)");
    for s in &got {
        let m = (s.window_start - base).num_minutes();
        let w = want[&(s.source_ip.to_string(), m)];
        assert_eq!(
            (
                s.events,
                s.distinct_ports,
                s.distinct_destinations,
                s.denied,
                s.first_seen,
                s.last_seen
            ),
            w,
            "{s:?}"
        );
        assert_eq!((s.bytes_sent, s.bytes_received), (100 * w.0, 10 * w.0));
        assert!(!s.distinct_capped && !s.sources_capped);
        assert_eq!(s.window_end - s.window_start, TimeDelta::minutes(1));
    }
    assert_eq!(support::topic_size(&t.alerts), 0);

    // The writer persists them: an IP's history and the top talkers of a minute, one query each.
    let wstats = Arc::new(WriterStats::default());
    let stop = CancellationToken::new();
    let writer = tokio::spawn(cassandra_writer::writer::run_until(
        writer_args(&t, &keyspace),
        stop.clone(),
        wstats.clone(),
    ));
    support::wait_until(DEADLINE, "logs written", || {
        wstats.written.load(Relaxed) >= n as u64
    })
    .await;
    let day: NaiveDate = base.date_naive();
    for ip in ips {
        let expected: Vec<i64> = (0..3).map(|m| want[&(ip.to_string(), m)].0).collect();
        let mut history: Vec<(DateTime<Utc>, i64, i64, i64)> = Vec::new();
        for _ in 0..100 {
            history = rows(
                &keyspace,
                "SELECT window_start, events, bytes_sent, denied FROM {ks}.ip_stats_by_ip WHERE source_ip = ? AND day = ?",
                (ip, day),
            )
            .await;
            if history.len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        history.sort();
        assert_eq!(
            history.iter().map(|h| h.1).collect::<Vec<_>>(),
            expected,
            "{ip}"
        );
        assert_eq!(
            history.iter().map(|h| h.2).collect::<Vec<_>>(),
            expected.iter().map(|e| e * 100).collect::<Vec<_>>()
        );
    }
    for m in 0..3 {
        let talkers: Vec<(i64, String)> = rows(
            &keyspace,
            "SELECT events, source_ip FROM {ks}.top_talkers_by_minute WHERE window_start = ?",
            (base + TimeDelta::minutes(m),),
        )
        .await;
        // Busiest first (CLUSTERING ORDER BY events DESC), ties by source_ip.
        let mut want_m: Vec<(i64, String)> = ips
            .iter()
            .map(|ip| (want[&(ip.to_string(), m)].0, ip.to_string()))
            .collect();
        want_m.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        assert_eq!(talkers, want_m, "minute {m}: the busiest source first");
    }
    stop.cancel();
    writer.await.expect("join").expect("writer stopped cleanly");
}

/// Realistic traffic with attack bursts at synthetic times (1,000 logs/s of event time).
fn traffic(
    start: DateTime<Utc>,
    n: usize,
    scenarios: Vec<Scenario>,
) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let mut g = Generator::new(GeneratorConfig {
        seed: 5,
        scenarios,
        ..Default::default()
    });
    let mut buf = Vec::new();
    (0..n)
        .map(|i| {
            let at = start + TimeDelta::milliseconds(i as i64);
            let (key, _) = g.next_into(at, &mut buf);
            (Some(key.as_bytes().to_vec()), buf.clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_scenario_raises_exactly_its_alert_and_baseline_traffic_none() {
    let t = reader::topics("alerts").await;
    let keyspace = support::fresh_keyspace().await;
    let start = minute(40);
    // 59 s of event time at the default 1,000 logs/s: one window with ordinary traffic from
    // 2,000 hosts and one burst of each scenario.
    let records = traffic(
        start,
        59_000,
        vec![
            Scenario::PortScan,
            Scenario::Flood,
            Scenario::DenyBurst,
            Scenario::HostSweep,
        ],
    );
    support::produce(&t.input, &records).await;
    let distinct_sources: BTreeSet<&[u8]> = records.iter().filter_map(|r| r.0.as_deref()).collect();
    run_reader(&t, distinct_sources.len(), minute(20)).await;

    let alerts = alerts_of(&t.alerts);
    let got: BTreeSet<(AlertRule, IpAddr, DateTime<Utc>)> = alerts
        .iter()
        .filter_map(|a| Some((a.rule, a.source_ip?, a.window_start)))
        .collect();
    let want: BTreeSet<(AlertRule, IpAddr, DateTime<Utc>)> = [
        (AlertRule::PortScan, Scenario::PortScan.attacker(0), start),
        (AlertRule::Flood, Scenario::Flood.attacker(1), start),
        (AlertRule::DenyBurst, Scenario::DenyBurst.attacker(2), start),
        (AlertRule::HostSweep, Scenario::HostSweep.attacker(3), start),
    ]
    .into();
    assert_eq!(
        got, want,
        "exactly one alert per scenario and none for baseline traffic"
    );
    assert_eq!(alerts.len(), 4);
    for a in &alerts {
        assert_eq!(
            a.alert_id,
            Alert::id(a.rule, a.address().expect("an address"), a.window_start)
        );
        assert!(a.value >= a.threshold && !a.summary.is_empty());
    }

    // Persisted: today's (the window's day) alerts in one query, and by IP.
    let wstats = Arc::new(WriterStats::default());
    let stop = CancellationToken::new();
    let writer = tokio::spawn(cassandra_writer::writer::run_until(
        writer_args(&t, &keyspace),
        stop.clone(),
        wstats.clone(),
    ));
    let mut by_day: Vec<(Uuid, String, String)> = Vec::new();
    for _ in 0..300 {
        by_day = rows(
            &keyspace,
            "SELECT alert_id, rule, source_ip FROM {ks}.alerts WHERE day = ?",
            (start.date_naive(),),
        )
        .await;
        if by_day.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ids: BTreeSet<Uuid> = by_day.iter().map(|r| r.0).collect();
    assert_eq!(ids, alerts.iter().map(|a| a.alert_id).collect());
    let scanner = Scenario::PortScan.attacker(0).to_string();
    let by_ip: Vec<(Uuid, String)> = rows(
        &keyspace,
        "SELECT alert_id, rule FROM {ks}.alerts WHERE source_ip = ?",
        (scanner,),
    )
    .await;
    assert_eq!(by_ip.len(), 1);
    assert_eq!(by_ip[0].1, "port_scan");
    stop.cancel();
    writer.await.expect("join").expect("writer stopped cleanly");
}

/// What the rules see in one minute of raw records, counted from the input alone: per source
/// (events, distinct ports, distinct destinations, denied) and per destination (events,
/// distinct sources).
struct Counted {
    sources: BTreeMap<IpAddr, (i64, BTreeSet<u64>, BTreeSet<IpAddr>, i64)>,
    targets: BTreeMap<IpAddr, (i64, BTreeSet<IpAddr>)>,
}

fn count_raw(records: &[(Option<Vec<u8>>, Vec<u8>)]) -> Counted {
    let mut c = Counted {
        sources: BTreeMap::new(),
        targets: BTreeMap::new(),
    };
    for (_, payload) in records {
        let v: serde_json::Value = serde_json::from_slice(payload).expect("json");
        let ip = |field: &str| -> IpAddr { v[field].as_str().expect(field).parse().expect(field) };
        let (source, destination) = (ip("source_ip"), ip("destination_ip"));
        let denied = ["DENY", "DROP", "REJECT"].contains(
            &v["action"]
                .as_str()
                .expect("action")
                .to_uppercase()
                .as_str(),
        );
        let s = c.sources.entry(source).or_default();
        s.0 += 1;
        s.1.insert(v["port"].as_u64().expect("port"));
        s.2.insert(destination);
        s.3 += i64::from(denied);
        let t = c.targets.entry(destination).or_default();
        t.0 += 1;
        t.1.insert(source);
    }
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn a_distributed_flood_and_a_sweep_raise_exactly_their_alerts_with_destination_windows() {
    let t = reader::topics("targets").await;
    let keyspace = support::fresh_keyspace().await;
    let start = minute(40);
    // 59 s of ordinary traffic from 2,000 hosts to 300 servers, a botnet of 600 sources
    // against one web server, and a /24 sweep on port 445.
    let records = traffic(
        start,
        59_000,
        vec![Scenario::TargetFlood, Scenario::HostSweep],
    );
    let counted = count_raw(&records);
    let victim = Scenario::TargetFlood.victim(0).expect("a victim");
    assert_eq!(counted.targets[&victim].1.len(), 600);
    support::produce(&t.input, &records).await;
    // The defaults users get, with the destination windows on.
    let mut args = reader::defaults(&t, pipeline_runtime::transaction::Delivery::AtLeastOnce);
    args.destination_windows = true;
    let stop = CancellationToken::new();
    let task = tokio::spawn(stream_reader::run_until(
        args,
        stop.clone(),
        Arc::new(ReaderStats::default()),
    ));
    // The closers once the minute is validated: the validation stage interleaves the raw
    // partitions of a backlog, so a closer validated before the last of the minute's records
    // would make those late.
    support::wait_until(DEADLINE * 2, "the minute validated", || {
        support::committed(&t.group, &t.input).values().sum::<i64>() == records.len() as i64
    })
    .await;
    support::produce(&t.input, &closers()).await;
    let cutoff = minute(20);
    let targets_of = || -> BTreeMap<IpAddr, log_schema::TargetStats> {
        crate::exact::final_targets(&t.target_stats, cutoff)
            .into_iter()
            .map(|((ip, _), s)| (ip, s))
            .collect()
    };
    support::wait_until(DEADLINE * 2, "every destination window emitted", || {
        targets_of().len() == counted.targets.len()
            && before(stats_of(&t.stats), cutoff).len() == counted.sources.len()
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("reader stopped cleanly");

    // Every destination's window carries what the input holds for it.
    let targets = targets_of();
    for (ip, (events, sources)) in &counted.targets {
        let s = &targets[ip];
        assert_eq!(
            (s.window_start, s.events, s.distinct_sources),
            (start, *events, sources.len() as i64),
            "{ip}"
        );
        assert!(!s.distinct_capped && !s.targets_capped);
    }
    // Alerts: the rules applied to the input's own counts at the default thresholds.
    let mut want: BTreeSet<(AlertRule, IpAddr)> = BTreeSet::new();
    for (ip, (events, ports, destinations, denied)) in &counted.sources {
        for (rule, value, threshold) in [
            (AlertRule::PortScan, ports.len() as i64, 100),
            (AlertRule::Flood, *events, 5_000),
            (AlertRule::DenyBurst, *denied, 100),
            (AlertRule::HostSweep, destinations.len() as i64, 100),
        ] {
            if value >= threshold {
                want.insert((rule, *ip));
            }
        }
    }
    for (ip, (events, sources)) in &counted.targets {
        if sources.len() >= 500 || *events >= 20_000 {
            want.insert((AlertRule::TargetFlood, *ip));
        }
    }
    assert_eq!(
        want,
        [
            (AlertRule::HostSweep, Scenario::HostSweep.attacker(1)),
            (AlertRule::TargetFlood, victim),
        ]
        .into(),
        "the input raises exactly the two scenarios' alerts"
    );
    let alerts: Vec<Alert> = alerts_of(&t.alerts)
        .into_iter()
        .filter(|a| a.window_start < cutoff)
        .collect();
    let got: BTreeSet<(AlertRule, IpAddr)> = alerts
        .iter()
        .map(|a| (a.rule, a.address().expect("an address")))
        .collect();
    assert_eq!(got, want);
    assert_eq!(alerts.len(), 2, "each once: {alerts:?}");
    let flood = alerts
        .iter()
        .find(|a| a.rule == AlertRule::TargetFlood)
        .expect("the target_flood alert");
    assert_eq!(
        (
            flood.source_ip,
            flood.destination_ip,
            flood.value,
            flood.threshold
        ),
        (None, Some(victim), 600, 500)
    );
    assert_eq!(
        flood.alert_id,
        Alert::id(AlertRule::TargetFlood, victim, start)
    );

    // Persisted: the minute's top targets (the victim first), its history, its alert.
    let wstats = Arc::new(WriterStats::default());
    let stop = CancellationToken::new();
    let writer = tokio::spawn(cassandra_writer::writer::run_until(
        writer_args(&t, &keyspace),
        stop.clone(),
        wstats.clone(),
    ));
    let mut top: Vec<(i64, String, i64)> = Vec::new();
    for _ in 0..300 {
        top = rows(
            &keyspace,
            "SELECT events, destination_ip, distinct_sources FROM {ks}.top_targets_by_minute WHERE window_start = ?",
            (start,),
        )
        .await;
        if top.len() >= counted.targets.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut want_top: Vec<(i64, String, i64)> = counted
        .targets
        .iter()
        .map(|(ip, (events, sources))| (*events, ip.to_string(), sources.len() as i64))
        .collect();
    want_top.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    assert_eq!(top, want_top, "busiest destination first");
    let mut alert_rows: Vec<(Uuid, String, i64)> = Vec::new();
    for _ in 0..300 {
        alert_rows = rows(
            &keyspace,
            "SELECT alert_id, rule, value FROM {ks}.target_alerts WHERE day = ?",
            (start.date_naive(),),
        )
        .await;
        if !alert_rows.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        alert_rows,
        vec![(flood.alert_id, "target_flood".to_owned(), 600)]
    );
    let history: Vec<(DateTime<Utc>, i64)> = rows(
        &keyspace,
        "SELECT window_start, distinct_sources FROM {ks}.target_stats_by_ip WHERE destination_ip = ? AND day = ?",
        (victim.to_string(), start.date_naive()),
    )
    .await;
    assert_eq!(history, vec![(start, 600)]);
    stop.cancel();
    writer.await.expect("join").expect("writer stopped cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_sweep_port_host_sweep_fires_on_that_port_only() {
    let t = reader::topics("sweep_port").await;
    let start = minute(40);
    // 203.0.113.50 probes 150 hosts on 445; 203.0.113.51 reaches 150 hosts over 40 other
    // ports (a busy proxy, say): both reach 150 distinct destinations.
    let worm = "203.0.113.50";
    let proxy = "203.0.113.51";
    let mut records = Vec::new();
    for i in 0..150u8 {
        let at = start + TimeDelta::milliseconds(i64::from(i) * 100);
        records.push(raw(at, worm, 445, i + 1, "ALLOW"));
        records.push(raw(at, proxy, 3000 + u16::from(i % 40), i + 1, "ALLOW"));
    }
    support::produce(&t.input, &records).await;
    let mut args = reader::defaults(&t, pipeline_runtime::transaction::Delivery::AtLeastOnce);
    args.alert_host_sweep_port = Some(445);
    let stop = CancellationToken::new();
    let task = tokio::spawn(stream_reader::run_until(
        args,
        stop.clone(),
        Arc::new(ReaderStats::default()),
    ));
    support::wait_until(DEADLINE * 2, "the minute validated", || {
        support::committed(&t.group, &t.input).values().sum::<i64>() == records.len() as i64
    })
    .await;
    support::produce(&t.input, &closers()).await;
    let cutoff = minute(20);
    support::wait_until(DEADLINE * 2, "both windows emitted", || {
        before(stats_of(&t.stats), cutoff).len() == 2
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("reader stopped cleanly");
    let stats: BTreeMap<String, WindowStats> = before(stats_of(&t.stats), cutoff)
        .into_iter()
        .map(|s| (s.source_ip.to_string(), s))
        .collect();
    // What the input holds: 150 hosts each; on 445, 150 for the worm and none for the proxy.
    for (ip, on_445) in [(worm, 150), (proxy, 0)] {
        assert_eq!(stats[ip].distinct_destinations, 150, "{ip}");
        assert_eq!(
            stats[ip].sweep,
            Some(log_schema::Sweep {
                port: 445,
                destinations: on_445
            }),
            "{ip}"
        );
    }
    let alerts: Vec<(AlertRule, Option<IpAddr>, i64)> = alerts_of(&t.alerts)
        .into_iter()
        .filter(|a| a.window_start < cutoff)
        .map(|a| (a.rule, a.source_ip, a.value))
        .collect();
    assert_eq!(
        alerts,
        vec![(AlertRule::HostSweep, Some(worm.parse().expect("ip")), 150)],
        "only the sweep on the configured port"
    );
}
