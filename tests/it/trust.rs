//! Analytics a security team can trust, with the defaults users get (only the topics, the
//! groups and the metrics port are set): the last windows of a stream that goes quiet close in
//! exactly-once mode, and a record dated ahead of its ingestion does not hide the scan after
//! it.

use std::sync::Arc;

use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use log_schema::{Alert, AlertRule, WindowStats};
use pipeline_runtime::transaction::Delivery;
use stream_reader::{ReaderArgs, ReaderStats};
use tokio_util::sync::CancellationToken;

use crate::{
    reader::{self, Topics},
    support::{self, DEADLINE},
};

/// A raw record of the seed's format from `source` to `port`.
fn raw(at: DateTime<Utc>, source: &str, port: u16) -> (Option<Vec<u8>>, Vec<u8>) {
    let json = format!(
        r#"{{"timestamp":"{}","source_ip":"{source}","destination_ip":"10.20.0.1","port":{port},"protocol":"TCP","bytes_sent":60,"bytes_received":0,"action":"ALLOW"}}"#,
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    );
    (None, json.into_bytes())
}

/// 150 distinct ports from `scanner`, plus 200 records of ordinary traffic from 20 other
/// sources, all dated `now`.
fn scan_and_traffic(scanner: &str, now: DateTime<Utc>) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let mut out: Vec<_> = (0..150).map(|i| raw(now, scanner, 1000 + i)).collect();
    out.extend((0..200).map(|i| raw(now, &format!("198.18.0.{}", i % 20), 443)));
    out
}

fn read_committed<T>(topic: &str, parse: fn(&[u8]) -> Option<T>) -> Vec<T> {
    support::read_to_end(topic, DEADLINE)
        .iter()
        .filter_map(|r| parse(&r.payload))
        .collect()
}

/// Runs a stream-reader with `args` until exactly the scan's alert is on the alerts topic:
/// returns the scanner's window and its alerts. The scan's minute closes `lateness` after it
/// ends (event time of the quiet partitions advances by the quiet time); the deadline is that
/// plus the idle flush, a transaction interval and a generous minute.
async fn scan_alerts(
    args: ReaderArgs,
    t: &Topics,
    scanner: &str,
    started: DateTime<Utc>,
) -> (Vec<WindowStats>, Vec<Alert>) {
    let minute_end = started
        .duration_trunc(TimeDelta::minutes(1))
        .expect("trunc")
        + TimeDelta::minutes(1);
    let bound = minute_end
        + TimeDelta::seconds(args.allowed_lateness_secs as i64)
        + TimeDelta::milliseconds((args.idle_flush_ms + args.transaction_interval_ms) as i64)
        + TimeDelta::seconds(60);
    let deadline = (bound - Utc::now()).to_std().expect("bound ahead");
    let stop = CancellationToken::new();
    let task = tokio::spawn(stream_reader::run_until(
        args,
        stop.clone(),
        Arc::new(ReaderStats::default()),
    ));
    let scanner_ip: std::net::IpAddr = scanner.parse().expect("ip");
    support::wait_until(
        deadline,
        "the scanner's window and its alert emitted",
        || {
            read_committed(&t.alerts, |p| Alert::from_json(p).ok())
                .iter()
                .any(|a| a.source_ip == Some(scanner_ip))
        },
    )
    .await;
    stop.cancel();
    task.await.expect("join").expect("reader stopped cleanly");
    let stats = read_committed(&t.stats, |p| WindowStats::from_json(p).ok())
        .into_iter()
        .filter(|s| s.source_ip == scanner_ip)
        .collect();
    let alerts = read_committed(&t.alerts, |p| Alert::from_json(p).ok())
        .into_iter()
        .filter(|a| a.source_ip == Some(scanner_ip))
        .collect();
    (stats, alerts)
}

/// The scanner's scan minute: one window of its 150 events and exactly one `port_scan` alert.
fn assert_one_scan(stats: &[WindowStats], alerts: &[Alert], scan_minute: DateTime<Utc>) {
    let windows: Vec<&WindowStats> = stats
        .iter()
        .filter(|s| s.window_start == scan_minute)
        .collect();
    assert_eq!(
        windows.len(),
        1,
        "one emission of the scan's window: {windows:?}"
    );
    assert_eq!((windows[0].events, windows[0].distinct_ports), (150, 150));
    let scans: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.rule == AlertRule::PortScan && a.window_start == scan_minute)
        .collect();
    assert_eq!(scans.len(), 1, "exactly one port_scan alert: {alerts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_then_silence_in_exactly_once_mode_emits_the_last_window_and_its_alert() {
    let t = reader::topics("eos_quiet").await;
    let started = Utc::now();
    support::produce(&t.input, &scan_and_traffic("203.0.113.66", started)).await;
    let scan_minute = started
        .duration_trunc(TimeDelta::minutes(1))
        .expect("trunc");
    let (stats, alerts) = scan_alerts(
        reader::defaults(&t, Delivery::ExactlyOnce),
        &t,
        "203.0.113.66",
        started,
    )
    .await;
    assert_one_scan(&stats, &alerts, scan_minute);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_dated_290_s_ahead_does_not_hide_the_scan_after_it() {
    let t = reader::topics("skewed_scan").await;
    let started = Utc::now();
    // The scanner's own record first, dated 290 s ahead (the validator accepts 300 s of skew).
    support::produce(
        &t.input,
        &[raw(started + TimeDelta::seconds(290), "203.0.113.77", 9)],
    )
    .await;
    support::produce(&t.input, &scan_and_traffic("203.0.113.77", started)).await;
    let scan_minute = started
        .duration_trunc(TimeDelta::minutes(1))
        .expect("trunc");
    let (stats, alerts) = scan_alerts(
        reader::defaults(&t, Delivery::AtLeastOnce),
        &t,
        "203.0.113.77",
        started,
    )
    .await;
    assert_one_scan(&stats, &alerts, scan_minute);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_past_the_source_cap_does_not_hide_the_scan_after_it() {
    let t = reader::topics("flooded_scan").await;
    let started = Utc::now();
    // 170,000 spoofed one-packet sources in the scan's minute: more than the default cap of
    // 50,000 windows on each of the 3 partitions.
    let flood: Vec<_> = (0..170_000u32)
        .map(|i| {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            raw(started, &ip.to_string(), 80)
        })
        .collect();
    for chunk in flood.chunks(50_000) {
        support::produce(&t.input, chunk).await;
    }
    support::produce(&t.input, &scan_and_traffic("203.0.113.88", started)).await;
    let scan_minute = started
        .duration_trunc(TimeDelta::minutes(1))
        .expect("trunc");
    let (stats, alerts) = scan_alerts(
        reader::defaults(&t, Delivery::AtLeastOnce),
        &t,
        "203.0.113.88",
        started,
    )
    .await;
    assert_one_scan(&stats, &alerts, scan_minute);
    assert!(
        stats.iter().all(|s| s.sources_capped),
        "the scan's window is flagged: its minute reached the cap"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn more_partitions_on_the_validated_topic_stop_the_analytics_stage_with_a_clear_error() {
    let t = reader::topics("repartitioned").await;
    let started = Utc::now();
    support::produce(&t.input, &scan_and_traffic("203.0.113.99", started)).await;
    // A first run commits window checkpoints for the 3 partitions.
    let stop = CancellationToken::new();
    let task = tokio::spawn(stream_reader::run_until(
        reader::defaults(&t, Delivery::AtLeastOnce),
        stop.clone(),
        Arc::new(ReaderStats::default()),
    ));
    support::wait_until(DEADLINE, "checkpoints committed on every partition", || {
        support::committed(&t.analytics_group(), &t.validated).len() == 3
    })
    .await;
    stop.cancel();
    task.await
        .expect("join")
        .expect("first run stopped cleanly");
    // The validated topic grows to 4 partitions: its sources move between partitions.
    let admin = support::kafka().admin().expect("admin client");
    let grown = admin
        .create_partitions(
            &[rdkafka::admin::NewPartitions::new(&t.validated, 4)],
            &rdkafka::admin::AdminOptions::new(),
        )
        .await
        .expect("create partitions");
    grown[0].clone().expect("4 partitions");
    let run = stream_reader::run_until(
        reader::defaults(&t, Delivery::AtLeastOnce),
        CancellationToken::new(),
        Arc::new(ReaderStats::default()),
    );
    let error = tokio::time::timeout(DEADLINE, run)
        .await
        .expect("the reader stops by itself")
        .expect_err("the reader refuses the old checkpoints");
    let message = format!("{error:#}");
    assert!(
        message.contains("had 3 partitions") && message.contains("has 4 now"),
        "{message}"
    );
}
