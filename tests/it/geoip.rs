//! GeoIP / ASN enrichment against the real pipeline, with MaxMind's test databases
//! (`tests/data/geoip/`, their documented networks): known addresses get their country, city
//! and AS on the validated topic, in `access_logs`, in the window statistics and the
//! per-country / per-AS top talkers; a database that appears, or replaces another, enriches
//! the records that follow within seconds, without a restart.

use std::{path::Path, time::Duration};

use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use futures::StreamExt as _;
use log_schema::{Geo, ValidatedRecord, WindowStats};

use crate::{
    analytics::closers,
    ops::writer_env,
    reader,
    support::{self, DEADLINE},
};

fn test_db(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/geoip")
        .join(name)
}

/// Puts `from` at `to` the way a database update should: a new file renamed over the old.
fn install(from: &str, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(test_db(from), &tmp).expect("copy");
    std::fs::rename(&tmp, to).expect("rename");
}

fn record(at: DateTime<Utc>, src: &str, dst: &str, port: u16) -> (Option<Vec<u8>>, Vec<u8>) {
    let json = format!(
        r#"{{"timestamp":"{}","source_ip":"{src}","destination_ip":"{dst}","port":{port},"protocol":"TCP","bytes_sent":100,"bytes_received":10,"action":"ALLOW"}}"#,
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    );
    (Some(src.as_bytes().to_vec()), json.into_bytes())
}

fn geo(country: Option<&str>, city: Option<&str>, asn: Option<(u32, &str)>) -> Option<Geo> {
    Geo {
        country: country.map(str::to_owned),
        city: city.map(str::to_owned),
        asn: asn.map(|a| a.0),
        as_org: asn.map(|a| a.1.to_owned()),
    }
    .non_empty()
}

fn validated(topic: &str) -> Vec<ValidatedRecord> {
    support::read_to_end(topic, DEADLINE)
        .iter()
        .map(|r| ValidatedRecord::from_json(&r.payload).expect("validated record"))
        .collect()
}

/// A row's port and geo columns: source country, city, AS; destination country, city.
type GeoRow = (
    i32,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
);

/// A row's geo columns, borrowed for comparison.
type GeoColumns<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    Option<i64>,
    Option<&'a str>,
    Option<&'a str>,
);

/// The geo columns of a row.
fn columns(r: &GeoRow) -> GeoColumns<'_> {
    (
        r.1.as_deref(),
        r.2.as_deref(),
        r.3,
        r.4.as_deref(),
        r.5.as_deref(),
    )
}

/// The geo columns of `access_logs` rows of `ip`, by port.
async fn row_geo(keyspace: &str, ip: &str) -> Vec<GeoRow> {
    let session = support::session(keyspace).await;
    let select = session
        .prepare(format!(
            "SELECT port, source_country, source_city, source_asn, destination_country, \
             destination_city FROM {keyspace}.access_logs WHERE source_ip = ?"
        ))
        .await
        .expect("prepare");
    let mut rows = session
        .execute_iter(select, (ip,))
        .await
        .expect("select")
        .rows_stream()
        .expect("typed");
    let mut out = Vec::new();
    while let Some(row) = rows.next().await {
        out.push(row.expect("row"));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn known_addresses_are_enriched_everywhere_and_a_new_database_takes_over_without_a_restart() {
    let t = reader::topics("geoip").await;
    let keyspace = support::fresh_keyspace().await;
    let dir = support::scratch_dir("geoip");
    let (city, asn) = (dir.join("city.mmdb"), dir.join("asn.mmdb"));
    install("GeoLite2-City-Test.mmdb", &city);
    // No ASN database yet: no AS enrichment, and no error.
    let _reader = support::spawn_service(
        "stream-reader",
        &t.group,
        &t.env(&[
            ("READER_GEOIP_CITY_DB", city.display().to_string()),
            ("READER_GEOIP_ASN_DB", asn.display().to_string()),
            ("READER_GEOIP_RELOAD_INTERVAL_MS", "200".into()),
        ]),
    );
    let _writer = support::spawn_service(
        "cassandra-writer",
        &format!("{}_writer", t.group),
        &writer_env(&t, &keyspace),
    );

    // Before: London → Linköping, and Telstra → Google without an ASN database.
    let minute = (Utc::now() - TimeDelta::minutes(5))
        .duration_trunc(TimeDelta::minutes(1))
        .expect("minute");
    let mut first: Vec<(Option<Vec<u8>>, Vec<u8>)> = (0..5)
        .map(|i| {
            record(
                minute + TimeDelta::seconds(i),
                "81.2.69.142",
                "89.160.20.112",
                443,
            )
        })
        .collect();
    first.push(record(minute, "1.128.0.1", "1.0.0.1", 53));
    support::produce(&t.input, &first).await;
    support::produce(&t.input, &closers()).await;
    let london = geo(Some("GB"), Some("London"), None);
    let linkoping = geo(Some("SE"), Some("Linköping"), None);
    support::wait_until(DEADLINE, "the first records validated", || {
        validated(&t.validated).len() >= first.len()
    })
    .await;
    for r in validated(&t.validated) {
        match r.source_ip.to_string().as_str() {
            "81.2.69.142" => {
                assert_eq!(r.source_geo, london);
                assert_eq!(r.destination_geo, linkoping);
            }
            "1.128.0.1" => {
                assert!(
                    r.source_geo.as_ref().is_none_or(|g| g.asn.is_none()),
                    "{r:?}"
                );
                assert!(
                    r.destination_geo.as_ref().is_none_or(|g| g.asn.is_none()),
                    "{r:?}"
                );
            }
            _ => {}
        }
    }

    // The ASN database appears and the City database is replaced by a Country one.
    install("GeoLite2-ASN-Test.mmdb", &asn);
    install("GeoIP2-Country-Test.mmdb", &city);
    let swapped = Utc::now();
    let mut probe = 0;
    let end = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        probe += 1;
        support::produce(
            &t.input,
            &[record(Utc::now(), "81.2.69.142", "1.0.0.1", 10_000 + probe)],
        )
        .await;
        let enriched = validated(&t.validated).into_iter().any(|r| {
            r.port == 10_000 + probe
                && r.source_geo == geo(Some("GB"), None, None)
                && r.destination_geo == geo(None, None, Some((15169, "Google Inc.")))
        });
        if enriched {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "new databases not used 30 s after the swap"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let took = Utc::now() - swapped;
    assert!(took < TimeDelta::seconds(30), "{took}");

    // After: Telstra → London in a window of its own (this minute: the probes moved the
    // horizon past earlier ones), closed by the idle flush once the partition's event time
    // passes the minute's end plus the lateness (records dated ahead cannot close it).
    let later = Utc::now()
        .duration_trunc(TimeDelta::minutes(1))
        .expect("minute");
    let second: Vec<_> = (0..3)
        .map(|i| {
            record(
                later + TimeDelta::seconds(i),
                "1.128.0.1",
                "81.2.69.142",
                80,
            )
        })
        .collect();
    support::produce(&t.input, &second).await;
    let telstra = geo(None, None, Some((1221, "Telstra Pty Ltd")));
    support::wait_until(DEADLINE, "the second records validated", || {
        validated(&t.validated)
            .iter()
            .filter(|r| r.port == 80 && r.source_geo == telstra)
            .count()
            == 3
    })
    .await;

    // Windows: the source's place on ip_stats, and the per-country / per-AS top talkers.
    let stats = || -> Vec<WindowStats> {
        support::read_to_end(&t.stats, DEADLINE)
            .iter()
            .map(|r| WindowStats::from_json(&r.payload).expect("stats"))
            .collect()
    };
    // The minute ends within 60 s, the lateness is 30 s and the idle flush 2 s.
    support::wait_until(DEADLINE * 3, "both windows closed", || {
        let s = stats();
        s.iter()
            .any(|w| w.window_start == minute && w.source_ip.to_string() == "81.2.69.142")
            && s.iter()
                .any(|w| w.window_start == later && w.source_ip.to_string() == "1.128.0.1")
    })
    .await;
    for w in stats() {
        if w.window_start == minute && w.source_ip.to_string() == "81.2.69.142" {
            assert_eq!(w.source_geo, london, "closed before the swap");
            assert_eq!(w.events, 5);
        }
        if w.window_start == later && w.source_ip.to_string() == "1.128.0.1" {
            assert_eq!(w.source_geo, telstra);
        }
    }
    let session = support::session(&keyspace).await;
    let count = |cql: String| {
        let session = &session;
        async move {
            let mut rows = session
                .execute_iter(session.prepare(cql).await.expect("prepare"), ())
                .await
                .expect("select")
                .rows_stream::<(String, i64)>()
                .expect("typed");
            let mut out = Vec::new();
            while let Some(row) = rows.next().await {
                out.push(row.expect("row"));
            }
            out
        }
    };
    let ms = |t: DateTime<Utc>| t.timestamp_millis();
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let gb = count(format!(
            "SELECT source_ip, events FROM {keyspace}.top_talkers_by_country_minute \
             WHERE window_start = {} AND country = 'GB'",
            ms(minute)
        ))
        .await;
        let telstra_rows = count(format!(
            "SELECT source_ip, events FROM {keyspace}.top_talkers_by_asn_minute \
             WHERE window_start = {} AND asn = 1221",
            ms(later)
        ))
        .await;
        if gb == [("81.2.69.142".to_owned(), 5)] && telstra_rows == [("1.128.0.1".to_owned(), 3)] {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "top talkers by country {gb:?}, by AS {telstra_rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // access_logs: the same places, column by column.
    let rows = row_geo(&keyspace, "81.2.69.142").await;
    let before: Vec<_> = rows.iter().filter(|r| r.0 == 443).collect();
    assert_eq!(before.len(), 5);
    for r in before {
        assert_eq!(
            columns(r),
            (
                Some("GB"),
                Some("London"),
                None,
                Some("SE"),
                Some("Linköping")
            )
        );
    }
    let rows = row_geo(&keyspace, "1.128.0.1").await;
    let after: Vec<_> = rows.iter().filter(|r| r.0 == 80).collect();
    assert_eq!(after.len(), 3);
    for r in after {
        assert_eq!(columns(r), (None, None, Some(1221), Some("GB"), None));
    }
    let _ = std::fs::remove_dir_all(dir);
}
