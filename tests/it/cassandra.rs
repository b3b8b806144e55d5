//! The schema: migrations, the table's shape, and the seed's queries verbatim.

use chrono::{TimeZone, Utc};
use uuid::Uuid;

use crate::support;

#[tokio::test]
async fn migrate_is_idempotent_and_writer_startup_check_passes() {
    let keyspace = support::fresh_keyspace().await;
    let args = cassandra_writer::MigrateArgs {
        cassandra: support::cassandra(&keyspace),
        telemetry: pipeline_runtime::telemetry::TelemetryArgs {
            log_format: pipeline_runtime::telemetry::LogFormat::Text,
        },
        replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".into(),
    };
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

#[tokio::test]
async fn access_logs_write_read_and_the_seed_queries_verbatim() {
    let keyspace = support::fresh_keyspace().await;
    let session = support::session(&keyspace).await;
    let insert = session
        .prepare(cassandra_writer::writer::insert_cql(&keyspace))
        .await
        .expect("prepare insert");
    let t0 = Utc
        .with_ymd_and_hms(2025, 12, 28, 10, 30, 45)
        .single()
        .expect("date");
    let mut ids = Vec::new();
    // 25 events of the seed's IP, two of them in the same instant, plus 5 of another IP.
    for i in 0..30i64 {
        let source = if i < 25 { "192.168.1.100" } else { "10.1.1.1" };
        let at = if i == 1 {
            t0
        } else {
            t0 + chrono::Duration::seconds(i)
        };
        let id = Uuid::new_v4();
        ids.push(id);
        session
            .execute_unpaged(
                &insert,
                (
                    source,
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
