//! The data model against the real pipeline and Cassandra 5.0 (docs/data-model.md "Data model", "Query
//! cookbook", "Upgrading an existing keyspace"): every cookbook query, verbatim from docs/data-model.md,
//! against the answer this file computes from the events it sent; and the upgrade from the
//! source-partitioned layout with `producer replay`.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use cassandra_writer::{migrate::MIGRATIONS, writer::WriterStats};
use chrono::{DateTime, DurationRound, NaiveDate, TimeDelta, TimeZone, Utc};
use log_schema::{Alert, ValidatedRecord};
use scylla::client::session::Session;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    analytics, cookbook, ops,
    reader::{self, Topics},
    support::{self, DEADLINE},
};

/// A row of the cookbook's first query: timestamp, destination, port, protocol, action, bytes
/// sent and received.
type Flow = (DateTime<Utc>, String, i32, String, String, i64, i64);

/// The cookbook's source and destination.
const SOURCE: &str = "192.168.1.100";
const TARGET: &str = "10.0.0.5";

/// One event sent through the pipeline.
#[derive(Debug, Clone)]
struct Event {
    at: DateTime<Utc>,
    src: String,
    dst: String,
    port: u16,
    action: &'static str,
}

impl Event {
    fn denied(&self) -> bool {
        self.action != "ALLOW"
    }

    fn raw(&self) -> (Option<Vec<u8>>, Vec<u8>) {
        let json = format!(
            r#"{{"timestamp":"{}","source_ip":"{}","destination_ip":"{}","port":{},"protocol":"TCP","bytes_sent":100,"bytes_received":10,"action":"{}"}}"#,
            self.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            self.src,
            self.dst,
            self.port,
            self.action
        );
        (Some(self.src.as_bytes().to_vec()), json.into_bytes())
    }
}

/// A time on the cookbook's day, 2026-12-01 (UTC).
fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, h, m, s)
        .single()
        .expect("time")
}

/// 80 minutes of ordinary traffic around 13:00–14:00 (a quarter of it from [`SOURCE`]), a
/// port scan of [`TARGET`] by [`SOURCE`] at 13:05 (120 denied flows to 120 ports), another scan
/// the next day, and events just outside the cookbook's ranges; in event-time order.
fn events() -> Vec<Event> {
    let ports = [22u16, 80, 443, 3389, 445, 53];
    let actions = ["ALLOW", "ALLOW", "DENY", "ALLOW", "DROP", "REJECT", "ALLOW"];
    let mut v: Vec<Event> = (0..1_200i64)
        .map(|k| Event {
            at: at(12, 50, 0) + TimeDelta::seconds(4 * k),
            src: if k % 4 == 0 {
                SOURCE.to_owned()
            } else {
                format!("192.168.1.{}", k % 30 + 1)
            },
            dst: format!("10.0.0.{}", k % 7 + 1),
            port: ports[k as usize % ports.len()],
            action: actions[k as usize % actions.len()],
        })
        .collect();
    let scan = |start: DateTime<Utc>, dst: &'static str, first_port: u16, n: u16| {
        (0..n).map(move |i| Event {
            at: start + TimeDelta::milliseconds(400 * i64::from(i)),
            src: SOURCE.to_owned(),
            dst: dst.to_owned(),
            port: first_port + i,
            action: "DENY",
        })
    };
    v.extend(scan(
        at(13, 5, 0) + TimeDelta::milliseconds(1),
        TARGET,
        1_000,
        120,
    ));
    v.extend(scan(
        at(0, 20, 0) + TimeDelta::days(1) + TimeDelta::milliseconds(1),
        "10.0.0.9",
        2_000,
        110,
    ));
    let edge = |t: DateTime<Utc>, src: &str, port: u16| Event {
        at: t,
        src: src.to_owned(),
        dst: TARGET.to_owned(),
        port,
        action: "DENY",
    };
    v.push(edge(
        at(13, 0, 0) - TimeDelta::milliseconds(1),
        SOURCE,
        3389,
    ));
    v.push(edge(at(14, 0, 0), SOURCE, 3389));
    v.push(edge(
        at(0, 0, 0) - TimeDelta::milliseconds(1),
        "192.168.1.7",
        3389,
    ));
    v.push(edge(at(0, 0, 0) + TimeDelta::days(1), "192.168.1.7", 3389));
    v.sort_by_key(|e| e.at);
    v
}

/// (source, minute) → its events: the windows the analytics stage closes.
fn windows(events: &[Event]) -> BTreeMap<(String, DateTime<Utc>), Vec<&Event>> {
    let mut w: BTreeMap<(String, DateTime<Utc>), Vec<&Event>> = BTreeMap::new();
    for e in events {
        let minute = e.at.duration_trunc(TimeDelta::minutes(1)).expect("minute");
        w.entry((e.src.clone(), minute)).or_default().push(e);
    }
    w
}

/// The alerts the documented rules raise (thresholds reached: 100 distinct ports, 5,000
/// events, 100 denied, 100 distinct destinations per source and minute): (window start, rule,
/// source).
fn alerts(events: &[Event]) -> BTreeSet<(DateTime<Utc>, String, String)> {
    let mut out = BTreeSet::new();
    for ((src, minute), evs) in windows(events) {
        let ports: BTreeSet<u16> = evs.iter().map(|e| e.port).collect();
        let hosts: BTreeSet<&str> = evs.iter().map(|e| e.dst.as_str()).collect();
        let denied = evs.iter().filter(|e| e.denied()).count();
        for (rule, hit) in [
            ("port_scan", ports.len() >= 100),
            ("flood", evs.len() >= 5_000),
            ("deny_burst", denied >= 100),
            ("host_sweep", hosts.len() >= 100),
        ] {
            if hit {
                out.insert((minute, rule.to_owned(), src.clone()));
            }
        }
    }
    out
}

/// Runs `cql` unpaged (cqlsh's `PAGING OFF`) in `session`'s keyspace; rows decoded as `T`.
async fn query<T>(session: &Session, cql: &str) -> Vec<T>
where
    T: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
{
    session
        .query_unpaged(cql, &[])
        .await
        .unwrap_or_else(|e| panic!("{cql}: {e}"))
        .into_rows_result()
        .unwrap_or_else(|e| panic!("{cql}: {e}"))
        .rows::<T>()
        .unwrap_or_else(|e| panic!("{cql}: {e}"))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{cql}: {e}"))
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Sends `events` through the stream-reader and the writer (both in-process) into `keyspace`;
/// returns when the writer has committed every record of the three topics it reads.
async fn pipeline(t: &Topics, keyspace: &str, events: &[Event]) {
    let raw: Vec<_> = events.iter().map(Event::raw).collect();
    support::produce(&t.input, &raw).await;
    let cutoff = Utc::now() - TimeDelta::minutes(10);
    analytics::run_reader(t, windows(events).len(), cutoff).await;
    write_all(t, keyspace).await;
}

/// Runs the writer in-process on `t` until it committed the end of its three input topics.
async fn write_all(t: &Topics, keyspace: &str) {
    let stop = CancellationToken::new();
    let writer = tokio::spawn(cassandra_writer::writer::run_until(
        analytics::writer_args(t, keyspace),
        stop.clone(),
        Arc::new(WriterStats::default()),
    ));
    let group = format!("{}_writer", t.group);
    support::wait_until(DEADLINE, "the writer committed every input", || {
        [&t.validated, &t.stats, &t.alerts].iter().all(|topic| {
            support::committed(&group, topic).values().sum::<i64>() == support::topic_size(topic)
        })
    })
    .await;
    stop.cancel();
    writer.await.expect("join").expect("writer stopped cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_cookbook_query_returns_what_an_independent_count_of_the_input_says() {
    let t = reader::topics("cookbook").await;
    let keyspace = support::fresh_keyspace().await;
    let events = events();
    pipeline(&t, &keyspace, &events).await;
    let session = support::session(&keyspace).await;
    session.use_keyspace(&keyspace, false).await.expect("USE");

    let queries = cookbook::parse(&cookbook::readme());
    let in_range = |e: &&Event, from: DateTime<Utc>, to: DateTime<Utc>| e.at >= from && e.at < to;
    let (h13, h14) = (at(13, 0, 0), at(14, 0, 0));
    let day = NaiveDate::from_ymd_opt(2026, 12, 1).expect("day");
    let mut checked = BTreeSet::new();
    for q in &queries {
        let cql = q.cql.as_str();
        match q.question.as_str() {
            "What did 192.168.1.100 do between 13:00 and 14:00? (bucket by bucket, newest first within each)" =>
            {
                let got: Vec<Flow> = query(&session, cql).await;
                let want: Vec<_> = events
                    .iter()
                    .filter(|e| e.src == SOURCE && in_range(e, h13, h14))
                    .map(|e| {
                        (
                            e.at,
                            e.dst.clone(),
                            i32::from(e.port),
                            "TCP".to_owned(),
                            e.action.to_owned(),
                            100,
                            10,
                        )
                    })
                    .collect();
                assert_eq!(sorted(got.clone()), sorted(want), "{cql}");
                // Newest first within each 10-minute bucket, bucket after bucket.
                for pair in got.windows(2) {
                    let bucket = |t: DateTime<Utc>| crate::cassandra::bucket(t);
                    if bucket(pair[0].0) == bucket(pair[1].0) {
                        assert!(pair[0].0 > pair[1].0, "{cql}: {pair:?}");
                    }
                }
            }
            "The same, newest first across buckets (cqlsh: PAGING OFF first; one bucket per 10 minutes)" =>
            {
                let got: Vec<(DateTime<Utc>, String, i32, String, String)> =
                    query(&session, cql).await;
                let mut want: Vec<_> = events
                    .iter()
                    .filter(|e| e.src == SOURCE && in_range(e, h13, h14))
                    .map(|e| {
                        (
                            e.at,
                            e.dst.clone(),
                            i32::from(e.port),
                            "TCP".to_owned(),
                            e.action.to_owned(),
                        )
                    })
                    .collect();
                want.sort_by_key(|w| std::cmp::Reverse(w.0));
                assert!(want.len() > 250, "the range holds {} events", want.len());
                assert_eq!(got, want, "{cql}: every event of the range, newest first");
            }
            "Who talked to 10.0.0.5 between 13:00 and 14:00?" => {
                let got: Vec<(String, DateTime<Utc>, i32, String, String)> =
                    query(&session, cql).await;
                let want: Vec<_> = events
                    .iter()
                    .filter(|e| e.dst == TARGET && in_range(e, h13, h14))
                    .map(|e| {
                        (
                            e.src.clone(),
                            e.at,
                            i32::from(e.port),
                            "TCP".to_owned(),
                            e.action.to_owned(),
                        )
                    })
                    .collect();
                assert_eq!(sorted(got), sorted(want), "{cql}");
            }
            "What hit port 3389 on 2026-12-01? (SAI takes no IN: for 445, run it again with port = 445)" =>
            {
                let got: Vec<(String, String, DateTime<Utc>, String)> = query(&session, cql).await;
                let want: Vec<_> = events
                    .iter()
                    .filter(|e| e.port == 3389 && e.at.date_naive() == day)
                    .map(|e| (e.src.clone(), e.dst.clone(), e.at, e.action.to_owned()))
                    .collect();
                assert_eq!(sorted(got), sorted(want), "{cql}");
            }
            "Which flows were denied (DENY, DROP or REJECT) between 13:00 and 13:30?" => {
                let got: Vec<(String, String, i32, String, DateTime<Utc>)> =
                    query(&session, cql).await;
                let want: Vec<_> = events
                    .iter()
                    .filter(|e| e.denied() && in_range(e, h13, at(13, 30, 0)))
                    .map(|e| {
                        (
                            e.src.clone(),
                            e.dst.clone(),
                            i32::from(e.port),
                            e.action.to_owned(),
                            e.at,
                        )
                    })
                    .collect();
                assert_eq!(sorted(got), sorted(want), "{cql}");
            }
            "Who were the top talkers of the minute 13:05? (busiest first)" => {
                let got: Vec<(String, i64, i64, i64)> = query(&session, cql).await;
                let mut want: Vec<(String, i64, i64, i64)> = windows(&events)
                    .into_iter()
                    .filter(|((_, minute), _)| *minute == at(13, 5, 0))
                    .map(|((src, _), evs)| {
                        let n = evs.len() as i64;
                        let denied = evs.iter().filter(|e| e.denied()).count() as i64;
                        (src, n, 110 * n, denied)
                    })
                    .collect();
                want.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                want.truncate(10);
                assert_eq!(got, want, "{cql}");
            }
            "How did 192.168.1.100's traffic go minute by minute on 2026-12-01? (newest first)" => {
                let got: Vec<(DateTime<Utc>, i64, i64, i64, i64, i64)> = query(&session, cql).await;
                let mut want: Vec<_> = windows(&events)
                    .into_iter()
                    .filter(|((src, minute), _)| src == SOURCE && minute.date_naive() == day)
                    .map(|((_, minute), evs)| {
                        let ports: BTreeSet<u16> = evs.iter().map(|e| e.port).collect();
                        let dsts: BTreeSet<&str> = evs.iter().map(|e| e.dst.as_str()).collect();
                        let denied = evs.iter().filter(|e| e.denied()).count() as i64;
                        let n = evs.len() as i64;
                        (
                            minute,
                            n,
                            100 * n,
                            ports.len() as i64,
                            dsts.len() as i64,
                            denied,
                        )
                    })
                    .collect();
                want.sort_by_key(|w| std::cmp::Reverse(w.0));
                assert_eq!(got, want, "{cql}");
            }
            "Which alerts fired on 2026-12-01?" => {
                let got: Vec<(DateTime<Utc>, String, String, i64, String)> =
                    query(&session, cql).await;
                let got: BTreeSet<_> = got.into_iter().map(|a| (a.0, a.1, a.2)).collect();
                let want: BTreeSet<_> = alerts(&events)
                    .into_iter()
                    .filter(|a| a.0.date_naive() == day)
                    .collect();
                assert_eq!(want.len(), 2, "the 13:05 scan: port_scan and deny_burst");
                assert_eq!(got, want, "{cql}");
            }
            "Which alerts did 192.168.1.100 raise on 2026-12-01? (newest first)" => {
                let got: Vec<(DateTime<Utc>, String, i64, String)> = query(&session, cql).await;
                let got: Vec<_> = got.into_iter().map(|a| (a.0, a.1)).collect();
                let mut want: Vec<_> = alerts(&events)
                    .into_iter()
                    .filter(|a| a.2 == SOURCE && a.0.date_naive() == day)
                    .map(|a| (a.0, a.1))
                    .collect();
                want.sort_by_key(|w| std::cmp::Reverse(w.0));
                assert_eq!(sorted(got.clone()), sorted(want.clone()), "{cql}");
                assert!(
                    got.windows(2).all(|p| p[0].0 >= p[1].0),
                    "{cql}: newest first"
                );
            }
            "Which alerts did 192.168.1.100 ever raise?" => {
                let got: Vec<(NaiveDate, DateTime<Utc>, String, i64)> = query(&session, cql).await;
                let got: BTreeSet<_> = got.into_iter().map(|a| (a.1, a.2)).collect();
                let want: BTreeSet<_> = alerts(&events)
                    .into_iter()
                    .filter(|a| a.2 == SOURCE)
                    .map(|a| (a.0, a.1))
                    .collect();
                assert_eq!(want.len(), 4, "two scans on two days");
                assert_eq!(got, want, "{cql}");
            }
            other => panic!("the cookbook question {other:?} has no check here: add one"),
        }
        checked.insert(q.question.clone());
    }
    assert_eq!(checked.len(), 10, "the cookbook: {queries:#?}");
}

/// What the previous layout's writer did: its columns of `access_logs` (partitioned by
/// `source_ip` alone) and the two alert tables.
async fn write_old_layout(
    session: &Session,
    ks: &str,
    records: &[ValidatedRecord],
    alerts: &[Alert],
) {
    let insert = session
        .prepare(format!(
            "INSERT INTO {ks}.access_logs (source_ip, timestamp, event_id, destination_ip, port, \
             protocol, bytes_sent, bytes_received, action, created_at, ingested_at, total_bytes, \
             source_ip_class, destination_ip_class, service) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .await
        .expect("prepare the old insert");
    for r in records {
        session
            .execute_unpaged(
                &insert,
                (
                    r.source_ip.to_string(),
                    r.timestamp,
                    r.event_id,
                    r.destination_ip.to_string(),
                    i32::from(r.port),
                    r.protocol.as_str(),
                    r.bytes_sent,
                    r.bytes_received,
                    r.action.as_str(),
                    Utc::now(),
                    r.ingested_at,
                    r.total_bytes,
                    r.source_ip_class.as_str(),
                    r.destination_ip_class.as_str(),
                    r.service.as_deref(),
                ),
            )
            .await
            .expect("old row");
    }
    for a in alerts {
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {ks}.alerts_by_day (day, window_start, alert_id, rule, source_ip, \
                     window_end, value, threshold, summary) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                (
                    a.window_start.date_naive(),
                    a.window_start,
                    a.alert_id,
                    a.rule.as_str(),
                    a.source_ip.expect("a source's alert").to_string(),
                    a.window_end,
                    a.value,
                    a.threshold,
                    a.summary.as_str(),
                ),
            )
            .await
            .expect("old alert by day");
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {ks}.alerts_by_ip (source_ip, window_start, alert_id, rule, \
                     window_end, value, threshold, summary) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                (
                    a.source_ip.expect("a source's alert").to_string(),
                    a.window_start,
                    a.alert_id,
                    a.rule.as_str(),
                    a.window_end,
                    a.value,
                    a.threshold,
                    a.summary.as_str(),
                ),
            )
            .await
            .expect("old alert by ip");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrading_a_source_partitioned_keyspace_by_migrate_and_replay_keeps_every_row_once() {
    let t = reader::topics("upgrade").await;
    let ks = support::unique("it_upgrade");
    // The keyspace as the previous release left it: migrations 0001–0004, recorded.
    let session = support::session(&ks).await;
    for cql in [
        format!(
            "CREATE KEYSPACE {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
        ),
        format!(
            "CREATE TABLE {ks}.schema_migrations (version int PRIMARY KEY, name text, \
             checksum text, applied_at timestamp)"
        ),
    ] {
        session.query_unpaged(cql, &[]).await.expect("old keyspace");
    }
    session.use_keyspace(&ks, false).await.expect("USE");
    for m in &MIGRATIONS[..4] {
        for statement in m.statements() {
            session
                .query_unpaged(statement, &[])
                .await
                .expect("old migration");
        }
        session
            .query_unpaged(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
                (m.version, m.name, m.checksum(), Utc::now()),
            )
            .await
            .expect("record");
    }

    // Traffic through the stream-reader; the old writer wrote all of it and committed.
    let since = Utc::now() - TimeDelta::minutes(1);
    let events = events();
    let raw: Vec<_> = events.iter().map(Event::raw).collect();
    support::produce(&t.input, &raw).await;
    analytics::run_reader(
        &t,
        windows(&events).len(),
        Utc::now() - TimeDelta::minutes(10),
    )
    .await;
    let records: Vec<ValidatedRecord> = support::read_to_end(&t.validated, DEADLINE)
        .iter()
        .map(|r| ValidatedRecord::from_json(&r.payload).expect("validated"))
        .collect();
    let alerts: Vec<Alert> = support::read_to_end(&t.alerts, DEADLINE)
        .iter()
        .map(|r| Alert::from_json(&r.payload).expect("alert"))
        .collect();
    assert_eq!(alerts.len(), 4, "two scans, two rules each");
    write_old_layout(&session, &ks, &records, &alerts).await;
    let group = format!("{}_writer", t.group);
    for topic in [&t.validated, &t.stats, &t.alerts] {
        support::commit_at_end(&group, topic);
    }
    let until = Utc::now();

    // Migrate without confirmation: refused, nothing dropped.
    let count = |table: &'static str| {
        let session = &session;
        async move { query::<(i64,)>(session, &format!("SELECT count(*) FROM {table}")).await[0].0 }
    };
    let err = cassandra_writer::migrate(&support::migrate_args(support::cassandra(&ks)))
        .await
        .expect_err("the old tables hold rows");
    let message = format!("{err:#}");
    assert!(
        message.contains("access_logs, alerts_by_day, alerts_by_ip")
            && message
                .contains("CASSANDRA_MIGRATE_ALLOW_DROP=access_logs,alerts_by_day,alerts_by_ip"),
        "{message}"
    );
    assert_eq!(count("access_logs").await, records.len() as i64);

    // Confirmed: the new layout, empty; the writer goes on from its committed offsets.
    let confirmed = cassandra_writer::MigrateArgs {
        allow_drop: ["access_logs", "alerts_by_day", "alerts_by_ip"]
            .map(String::from)
            .to_vec(),
        ..support::migrate_args(support::cassandra(&ks))
    };
    // 0005 and every migration after it.
    assert_eq!(
        cassandra_writer::migrate(&confirmed)
            .await
            .expect("migrate"),
        cassandra_writer::migrate::MIGRATIONS.len() - 4
    );
    assert_eq!(count("access_logs").await, 0);

    // The documented backfill: replay both topics up to the upgrade, with the writer running.
    let stop = CancellationToken::new();
    let writer = tokio::spawn(cassandra_writer::writer::run_until(
        analytics::writer_args(&t, &ks),
        stop.clone(),
        Arc::new(WriterStats::default()),
    ));
    let (since, until) = (since.to_rfc3339(), until.to_rfc3339());
    for topic in [&t.validated, &t.alerts] {
        let report = &ops::json(&ops::ok(&[
            "replay",
            "--topic",
            topic.as_str(),
            "--since",
            &since,
            "--until",
            &until,
            "--json",
        ]))[0];
        let want = if *topic == t.alerts {
            alerts.len()
        } else {
            records.len()
        };
        assert_eq!(report["replayed"], want, "{topic}: {report}");
    }
    support::wait_until(DEADLINE, "the replayed rows written", || {
        support::committed(&group, &t.validated)
            .values()
            .sum::<i64>()
            == support::topic_size(&t.validated)
            && support::committed(&group, &t.alerts).values().sum::<i64>()
                == support::topic_size(&t.alerts)
    })
    .await;
    stop.cancel();
    writer.await.expect("join").expect("writer stopped cleanly");

    // Every validated record once, every alert once.
    let ids: Vec<(Uuid,)> = query(&session, "SELECT event_id FROM access_logs").await;
    let want: Vec<Uuid> = sorted(records.iter().map(|r| r.event_id).collect());
    assert_eq!(sorted(ids.into_iter().map(|r| r.0).collect()), want);
    let got: Vec<(Uuid,)> = query(&session, "SELECT alert_id FROM alerts").await;
    assert_eq!(
        sorted(got.into_iter().map(|r| r.0).collect::<Vec<_>>()),
        sorted(alerts.iter().map(|a| a.alert_id).collect::<Vec<_>>())
    );
    // The seed's queries, verbatim.
    let all: Vec<(String,)> = query(&session, "SELECT source_ip FROM access_logs LIMIT 10;").await;
    assert_eq!(all.len(), 10);
    let seed = query::<(String,)>(
        &session,
        "SELECT source_ip FROM access_logs WHERE source_ip = '192.168.1.100' LIMIT 20;",
    )
    .await;
    assert_eq!(seed.len(), 20);
    assert!(seed.iter().all(|(s,)| s == SOURCE));
    for verbatim in [
        "SELECT * FROM access_logs LIMIT 10;",
        "SELECT * FROM access_logs WHERE source_ip = '192.168.1.100' LIMIT 20;",
    ] {
        let n = session
            .query_unpaged(verbatim, &[])
            .await
            .expect(verbatim)
            .into_rows_result()
            .expect("rows")
            .rows_num();
        assert!(n == 10 || n == 20, "{verbatim}: {n} rows");
    }
}
