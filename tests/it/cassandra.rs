//! The schema: migrations, the table's shape, and the seed's queries verbatim.

use chrono::{TimeZone, Utc};
use uuid::Uuid;

use crate::support;

#[tokio::test]
async fn migrate_is_idempotent_and_writer_startup_check_passes() {
    let keyspace = support::fresh_keyspace().await;
    let args = support::migrate_args(support::cassandra(&keyspace));
    assert_eq!(
        cassandra_writer::migrate(&args).await.expect("second run"),
        0,
        "nothing left to apply"
    );
    let session = support::session(&keyspace).await;
    cassandra_writer::migrate::verify(&session, &keyspace)
        .await
        .expect("schema verified");
}

/// Retention is configuration: each table's default TTL follows the migrate settings on every
/// run, and back to the documented defaults (30, 90 and 365 days) without them.
#[tokio::test]
async fn migrate_sets_each_tables_retention_from_configuration() {
    let keyspace = support::fresh_keyspace().await;
    let session = support::session(&keyspace).await;
    let ttls = || async {
        let rows: Vec<(String, i32)> = session
            .query_unpaged(
                "SELECT table_name, default_time_to_live FROM system_schema.tables \
                 WHERE keyspace_name = ?",
                (&keyspace,),
            )
            .await
            .expect("schema query")
            .into_rows_result()
            .expect("rows")
            .rows()
            .expect("typed")
            .collect::<Result<_, _>>()
            .expect("decode");
        rows.into_iter()
            .filter(|(t, _)| t != "schema_migrations")
            .collect::<std::collections::BTreeMap<String, i32>>()
    };
    let day = 86_400;
    let want = |raw: i32, stats: i32, alerts: i32| {
        [
            ("access_logs", raw),
            ("alerts", alerts),
            ("ip_stats_by_ip", stats),
            ("target_alerts", alerts),
            ("target_stats_by_ip", stats),
            ("top_talkers_by_asn_minute", stats),
            ("top_talkers_by_country_minute", stats),
            ("top_talkers_by_minute", stats),
            ("top_targets_by_minute", stats),
        ]
        .into_iter()
        .map(|(t, v)| (t.to_owned(), v))
        .collect::<std::collections::BTreeMap<String, i32>>()
    };
    assert_eq!(
        ttls().await,
        want(30 * day, 90 * day, 365 * day),
        "defaults"
    );
    let args = cassandra_writer::MigrateArgs {
        access_logs_ttl_days: 7,
        stats_ttl_days: 1,
        alerts_ttl_days: 0,
        ..support::migrate_args(support::cassandra(&keyspace))
    };
    assert_eq!(cassandra_writer::migrate(&args).await.expect("migrate"), 0);
    assert_eq!(ttls().await, want(7 * day, day, 0), "configured");
    let defaults = support::migrate_args(support::cassandra(&keyspace));
    cassandra_writer::migrate(&defaults).await.expect("migrate");
    assert_eq!(ttls().await, want(30 * day, 90 * day, 365 * day), "back");
}

#[tokio::test]
async fn writer_startup_check_names_migrate_when_schema_is_missing() {
    let keyspace = support::unique("it_empty");
    let session = support::session(&keyspace).await;
    let err = cassandra_writer::migrate::verify(&session, &keyspace)
        .await
        .expect_err("no schema");
    assert!(
        format!("{err:#}").contains("cassandra-writer migrate"),
        "{err:#}"
    );
}

/// The writer's columns of `access_logs` without the GeoIP ones (which stay unset), for rows
/// built by hand: bind [`bucket`] of the timestamp after the source.
fn insert_without_geo(keyspace: &str) -> String {
    format!(
        "INSERT INTO {keyspace}.access_logs (source_ip, bucket, timestamp, event_id, \
         destination_ip, port, protocol, bytes_sent, bytes_received, action, created_at, \
         ingested_at, total_bytes, source_ip_class, destination_ip_class, service) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
}

/// README's rule: the event time floored to 10 minutes (UTC).
pub(crate) fn bucket(t: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
    use chrono::DurationRound as _;
    t.duration_trunc(chrono::TimeDelta::minutes(10))
        .expect("truncate")
}

#[tokio::test]
async fn access_logs_write_read_and_the_seed_queries_verbatim() {
    let keyspace = support::fresh_keyspace().await;
    let session = support::session(&keyspace).await;
    let insert = session
        .prepare(insert_without_geo(&keyspace))
        .await
        .expect("prepare insert");
    let t0 = Utc
        .with_ymd_and_hms(2025, 12, 28, 10, 30, 45)
        .single()
        .expect("date");
    let mut ids = Vec::new();
    // 25 events of the seed's IP a minute apart (three 10-minute buckets), two of them in the
    // same instant, plus 5 of another IP.
    for i in 0..30i64 {
        let source = if i < 25 { "192.168.1.100" } else { "10.1.1.1" };
        let at = if i == 1 {
            t0
        } else {
            t0 + chrono::Duration::minutes(i)
        };
        let id = Uuid::new_v4();
        ids.push(id);
        session
            .execute_unpaged(
                &insert,
                (
                    source,
                    bucket(at),
                    at,
                    id,
                    "10.0.0.50",
                    8080i32,
                    "TCP",
                    2048i64,
                    4096i64,
                    "ALLOW",
                    Utc::now(),
                    Utc::now(),
                    6144i64,
                    "private",
                    "private",
                    Some("http-alt"),
                ),
            )
            .await
            .expect("insert");
    }
    // Replaying a row (same key) rewrites it instead of adding one.
    session
        .execute_unpaged(
            &insert,
            (
                "192.168.1.100",
                bucket(t0),
                t0,
                ids[0],
                "10.0.0.50",
                8080i32,
                "TCP",
                1i64,
                1i64,
                "DENY",
                Utc::now(),
                Utc::now(),
                2i64,
                "private",
                "private",
                Some("ssh"),
            ),
        )
        .await
        .expect("upsert");

    session.use_keyspace(&keyspace, false).await.expect("USE");
    // The seed's queries, verbatim.
    let all = session
        .query_unpaged("SELECT * FROM access_logs LIMIT 10;", &[])
        .await
        .expect("seed query 1")
        .into_rows_result()
        .expect("rows");
    assert_eq!(all.rows_num(), 10);
    let by_ip = session
        .query_unpaged(
            "SELECT * FROM access_logs WHERE source_ip = '192.168.1.100' LIMIT 20;",
            &[],
        )
        .await
        .expect("seed query 2")
        .into_rows_result()
        .expect("rows");
    assert_eq!(by_ip.rows_num(), 20);
    let sources: Vec<(String,)> = session
        .query_unpaged(
            "SELECT source_ip FROM access_logs WHERE source_ip = '192.168.1.100' LIMIT 20;",
            &[],
        )
        .await
        .expect("seed query 2, its key")
        .into_rows_result()
        .expect("rows")
        .rows()
        .expect("typed")
        .collect::<Result<_, _>>()
        .expect("decode");
    assert!(
        sources.iter().all(|(s,)| s == "192.168.1.100"),
        "{sources:?}"
    );

    // Read the partition back with named columns: 25 rows, nothing overwritten but the upsert.
    let rows = session
        .query_unpaged(
            "SELECT source_ip, event_id, action, bytes_sent, port, service FROM access_logs WHERE source_ip = ?",
            ("192.168.1.100",),
        )
        .await
        .expect("partition read")
        .into_rows_result()
        .expect("rows");
    let rows: Vec<(String, Uuid, String, i64, i32, Option<String>)> = rows
        .rows()
        .expect("typed")
        .collect::<Result<_, _>>()
        .expect("decode");
    assert_eq!(rows.len(), 25, "same-instant events are distinct rows");
    assert!(rows.iter().all(|r| r.0 == "192.168.1.100" && r.4 == 8080));
    let replayed = rows.iter().find(|r| r.1 == ids[0]).expect("replayed row");
    assert_eq!(
        (replayed.2.as_str(), replayed.3, replayed.5.as_deref()),
        ("DENY", 1, Some("ssh"))
    );
    let mut got: Vec<Uuid> = rows.iter().map(|r| r.1).collect();
    let mut want = ids[..25].to_vec();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

/// Rows expire with the table's default TTL (access_logs keeps 30 days; here 2 s).
#[tokio::test]
async fn rows_expire_with_the_tables_default_ttl() {
    let keyspace = support::fresh_keyspace().await;
    let session = support::session(&keyspace).await;
    let ttl: (i32,) = session
        .query_unpaged(
            "SELECT default_time_to_live FROM system_schema.tables \
             WHERE keyspace_name = ? AND table_name = 'access_logs'",
            (&keyspace,),
        )
        .await
        .expect("schema query")
        .into_rows_result()
        .expect("rows")
        .single_row()
        .expect("one table");
    assert_eq!(ttl.0, 30 * 24 * 3600, "the migration's 30-day TTL");
    session
        .query_unpaged(
            format!("ALTER TABLE {keyspace}.access_logs WITH default_time_to_live = 2"),
            &[],
        )
        .await
        .expect("short TTL");
    let insert = session
        .prepare(insert_without_geo(&keyspace))
        .await
        .expect("prepare insert");
    let now = Utc::now();
    session
        .execute_unpaged(
            &insert,
            (
                "192.0.2.7",
                bucket(now),
                now,
                Uuid::new_v4(),
                "10.0.0.50",
                443i32,
                "TCP",
                1i64,
                2i64,
                "ALLOW",
                Utc::now(),
                Utc::now(),
                3i64,
                "documentation",
                "private",
                Some("https"),
            ),
        )
        .await
        .expect("insert");
    let count = || async {
        session
            .query_unpaged(
                format!(
                    "SELECT event_id FROM {keyspace}.access_logs WHERE source_ip = '192.0.2.7'"
                ),
                &[],
            )
            .await
            .expect("select")
            .into_rows_result()
            .expect("rows")
            .rows_num()
    };
    assert_eq!(count().await, 1, "the row is there right after the write");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while count().await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the row outlived its 2 s TTL by 28 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// The seed's two queries, verbatim, through the real cqlsh (installed from PyPI by
/// `cargo xtask test`, path in IT_CQLSH).
#[tokio::test]
async fn the_seed_queries_verbatim_through_cqlsh() {
    let cqlsh = std::env::var("IT_CQLSH").unwrap_or_else(|_| {
        panic!("IT_CQLSH is not set: run the integration tests with `cargo xtask test`")
    });
    let keyspace = support::fresh_keyspace().await;
    let session = support::session(&keyspace).await;
    let insert = session
        .prepare(insert_without_geo(&keyspace))
        .await
        .expect("prepare insert");
    let t0 = Utc::now() - chrono::Duration::hours(1);
    for i in 0..25i64 {
        let source = if i < 22 { "192.168.1.100" } else { "10.1.1.1" };
        session
            .execute_unpaged(
                &insert,
                (
                    source,
                    bucket(t0 + chrono::Duration::minutes(i)),
                    t0 + chrono::Duration::minutes(i),
                    Uuid::new_v4(),
                    "10.0.0.50",
                    8080i32,
                    "TCP",
                    2048i64,
                    4096i64,
                    "ALLOW",
                    Utc::now(),
                    Utc::now(),
                    6144i64,
                    "private",
                    "private",
                    Some("http-alt"),
                ),
            )
            .await
            .expect("insert");
    }
    let (host, port) = support::cassandra_nodes()
        .split_once(':')
        .map(|(h, p)| (h.to_owned(), p.to_owned()))
        .expect("host:port");
    let run = |query: &str| {
        let out = std::process::Command::new(&cqlsh)
            .args([host.as_str(), port.as_str(), "-e"])
            .arg(format!("USE {keyspace}; {query}"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cqlsh}: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "cqlsh failed on {query}: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let all = run("SELECT * FROM access_logs LIMIT 10;");
    assert!(all.contains("(10 rows)"), "{all}");
    let by_ip = run("SELECT * FROM access_logs WHERE source_ip = '192.168.1.100' LIMIT 20;");
    assert!(by_ip.contains("(20 rows)"), "{by_ip}");
    let data_lines: Vec<&str> = by_ip.lines().filter(|l| l.contains(" | ")).collect();
    // A header line plus 20 rows, every row of the seed's IP.
    assert_eq!(data_lines.len(), 21, "{by_ip}");
    assert!(
        data_lines[1..]
            .iter()
            .all(|l| l.trim_start().starts_with("192.168.1.100")),
        "{by_ip}"
    );
}
