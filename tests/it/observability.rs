//! The services' /metrics, /healthz and /readyz, scraped from real running binaries.

use std::time::Duration;

use crate::support::{self, DEADLINE, http_get, metric};

async fn scrape(port: u16) -> String {
    match http_get(port, "/metrics").await {
        Some((200, body)) => body,
        other => panic!("GET /metrics on {port}: {other:?}"),
    }
}

async fn wait_metric(port: u16, name: &str, labels: &[(&str, &str)], at_least: f64) {
    let end = tokio::time::Instant::now() + DEADLINE * 2;
    loop {
        // The service may not listen yet: only a successful scrape counts.
        if let Some((200, body)) = http_get(port, "/metrics").await
            && metric(&body, name, labels) >= at_least
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{name}{labels:?} never reached {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_match_what_flowed_and_readyz_follows_cassandra() {
    let keyspace = support::fresh_keyspace().await;
    let raw = support::unique("it_obs_raw");
    let valid = support::unique("it_obs_valid");
    let dlq = support::unique("it_obs_dlq");
    let stats = support::unique("it_obs_stats");
    let alerts = support::unique("it_obs_alerts");
    support::fresh_topics(&[&raw, &valid, &dlq, &stats, &alerts]).await;
    let proxy = support::CutProxy::start(support::cassandra_nodes()).await;
    let (pp, rp, wp) = (
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );

    let mut reader = support::spawn_service(
        "stream-reader",
        &raw,
        &[
            ("READER_GROUP_ID", support::unique("it_obs_reader")),
            (
                "READER_ANALYTICS_GROUP_ID",
                support::unique("it_obs_analytics"),
            ),
            ("READER_INPUT_TOPIC", raw.clone()),
            ("READER_VALIDATED_TOPIC", valid.clone()),
            ("READER_DLQ_TOPIC", dlq.clone()),
            ("READER_STATS_TOPIC", stats.clone()),
            ("READER_ALERTS_TOPIC", alerts.clone()),
            ("METRICS_ADDR", format!("127.0.0.1:{rp}")),
        ],
    );
    let mut writer = support::spawn_service(
        "cassandra-writer",
        &valid,
        &[
            ("CASSANDRA_NODES", proxy.addr.to_string()),
            ("CASSANDRA_KEYSPACE", keyspace.clone()),
            ("WRITER_GROUP_ID", support::unique("it_obs_writer")),
            ("WRITER_INPUT_TOPIC", valid.clone()),
            ("WRITER_DLQ_TOPIC", dlq.clone()),
            ("WRITER_STATS_TOPIC", stats.clone()),
            ("WRITER_ALERTS_TOPIC", alerts.clone()),
            ("METRICS_ADDR", format!("127.0.0.1:{wp}")),
        ],
    );
    // Liveness first, readiness once connected, partitions assigned and schema verified.
    for port in [rp, wp] {
        support::wait_until_async(DEADLINE, "healthz 200", || async move {
            matches!(http_get(port, "/healthz").await, Some((200, _)))
        })
        .await;
        support::wait_until_async(DEADLINE, "readyz 200", || async move {
            matches!(http_get(port, "/readyz").await, Some((200, _)))
        })
        .await;
    }

    let n = 5_000u64;
    let mut producer = support::spawn_service(
        "producer",
        &raw,
        &[
            ("PRODUCER_TOPIC", raw.clone()),
            ("PRODUCER_COUNT", n.to_string()),
            ("PRODUCER_RATE", "500".into()),
            ("PRODUCER_INVALID_RATIO", "0.02".into()),
            ("METRICS_ADDR", format!("127.0.0.1:{pp}")),
        ],
    );
    // The producer serves metrics while it runs.
    wait_metric(pp, "producer_records_delivered_total", &[], 1.0).await;
    let body = scrape(pp).await;
    assert!(
        body.contains("# TYPE producer_produce_latency_seconds histogram"),
        "{body}"
    );
    assert!(
        support::terminate_or_wait(&mut producer).success(),
        "producer delivered everything"
    );

    wait_metric(rp, "reader_records_consumed_total", &[], n as f64).await;
    let reader_body = scrape(rp).await;
    let validated = metric(
        &reader_body,
        "reader_records_out_total",
        &[("output", "validated")],
    );
    let dead = metric(
        &reader_body,
        "reader_records_out_total",
        &[("output", "dlq")],
    );
    wait_metric(rp, "reader_records_out_total", &[], n as f64).await;
    let reader_body = scrape(rp).await;
    let validated = validated.max(metric(
        &reader_body,
        "reader_records_out_total",
        &[("output", "validated")],
    ));
    let dead = dead.max(metric(
        &reader_body,
        "reader_records_out_total",
        &[("output", "dlq")],
    ));
    assert_eq!(validated + dead, n as f64);
    assert!(dead > 0.0, "the invalid ratio produced dead letters");
    assert_eq!(
        metric(&reader_body, "reader_invalid_records_total", &[]),
        dead,
        "by kind adds up"
    );
    assert_eq!(support::topic_size(&valid) as f64, validated);
    assert_eq!(support::topic_size(&dlq) as f64, dead);

    // A row's counter and its two histogram samples are recorded one after the other, so a
    // scrape can fall between them: wait for all three before comparing them exactly.
    for name in [
        "writer_rows_written_total",
        "writer_write_latency_seconds_count",
        "writer_e2e_latency_seconds_count",
    ] {
        wait_metric(wp, name, &[], validated).await;
    }
    let writer_body = scrape(wp).await;
    assert_eq!(
        metric(&writer_body, "writer_rows_written_total", &[]),
        validated
    );
    assert_eq!(
        metric(&writer_body, "writer_records_consumed_total", &[]),
        validated
    );
    for name in [
        "writer_write_latency_seconds_count",
        "writer_e2e_latency_seconds_count",
    ] {
        assert_eq!(metric(&writer_body, name, &[]), validated, "{name}");
    }
    assert!(
        writer_body.contains("kafka_consumer_lag{"),
        "lag gauges exported"
    );

    // Cassandra unreachable: /readyz turns 503 with the reason, and back to 200 after.
    proxy.cut();
    support::wait_until_async(DEADLINE, "readyz 503 during the outage", || async move {
        matches!(http_get(wp, "/readyz").await, Some((503, body)) if body.contains("cassandra"))
    })
    .await;
    assert!(
        matches!(http_get(wp, "/healthz").await, Some((200, _))),
        "still alive"
    );
    // A record arriving meanwhile cannot be written: its partition is reported as stalled,
    // with the table and the error.
    let line = br#"{"timestamp":"2025-12-28T10:30:45.123456","source_ip":"192.168.1.100","destination_ip":"10.0.0.50","port":8080,"protocol":"TCP","bytes_sent":2048,"bytes_received":4096,"action":"ALLOW"}"#;
    support::produce(&raw, &[(None, line.to_vec())]).await;
    let stalled = format!("{valid}/");
    support::wait_until_async(DEADLINE, "readyz names the stalled partition", || {
        let stalled = stalled.clone();
        async move {
            matches!(http_get(wp, "/readyz").await, Some((503, body))
                if body.contains(&stalled) && body.contains("stalled: writes to `access_logs` failing"))
        }
    })
    .await;
    proxy.restore();
    support::wait_until_async(DEADLINE, "readyz 200 after the outage", || async move {
        matches!(http_get(wp, "/readyz").await, Some((200, _)))
    })
    .await;

    // Every metric the three services define is exported by them, and every metric the
    // Grafana dashboard and the Prometheus rules use is one of those definitions.
    let exported: std::collections::BTreeSet<String> =
        [body.clone(), scrape(rp).await, scrape(wp).await]
            .iter()
            .flat_map(|body| support::metric_names(body))
            .collect();
    let defined = defined_series();
    let silent: Vec<&String> = defined.iter().filter(|m| !exported.contains(*m)).collect();
    assert!(silent.is_empty(), "defined but not exported: {silent:?}");
    let used = used_metric_names();
    assert!(
        used.len() >= 15,
        "the dashboard and rules use the pipeline's metrics: {used:?}"
    );
    let undefined: Vec<&String> = used.iter().filter(|m| !defined.contains(*m)).collect();
    assert!(
        undefined.is_empty(),
        "used by dashboard/rules but defined by no service: {undefined:?}"
    );

    assert!(support::terminate(&mut reader).success());
    assert!(support::terminate(&mut writer).success());
}

/// The series of every metric the three services define (their `METRICS`).
fn defined_series() -> std::collections::BTreeSet<String> {
    let lists: Vec<&[pipeline_runtime::telemetry::Metric]> = std::iter::once(producer::METRICS)
        .chain(stream_reader::METRICS.iter().copied())
        .chain(cassandra_writer::metrics::METRICS.iter().copied())
        .collect();
    lists
        .into_iter()
        .flatten()
        .flat_map(pipeline_runtime::telemetry::Metric::series)
        .collect()
}

/// Metric names in the PromQL of the Grafana dashboard and the Prometheus rules.
fn used_metric_names() -> std::collections::BTreeSet<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("docker/grafana/provisioning/dashboards/pipeline.json"))
            .expect("dashboard file"),
    )
    .expect("the dashboard JSON parses");
    assert!(
        dashboard["panels"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        "dashboard has panels"
    );
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join("docker/prometheus-rules.yml")).expect("rules file"),
    )
    .expect("the rules YAML parses");
    for group in rules["groups"].as_sequence().into_iter().flatten() {
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            exprs.extend(rule["expr"].as_str().map(str::to_owned));
        }
    }
    let prometheus =
        std::fs::read_to_string(root.join("docker/prometheus.yml")).expect("prometheus.yml");
    for port in ["9101", "9102", "9103"] {
        assert!(
            prometheus.contains(&format!("port: {port}")),
            "prometheus scrapes {port}"
        );
    }
    exprs
        .iter()
        .flat_map(|e| e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|t| {
            [
                "producer_",
                "reader_",
                "writer_",
                "kafka_",
                "late_",
                "stalled_",
            ]
            .iter()
            .any(|p| t.starts_with(p))
        })
        .map(|t| t.to_owned())
        .collect()
}
