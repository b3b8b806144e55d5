//! What monitoring sees: a real Prometheus (Debian's package) with the shipped configuration and
//! rules scraping the three running services, and readiness of an idle group member.

use std::path::PathBuf;

use serde_json::Value;

use crate::support::{self, DEADLINE, http_get};

/// The Prometheus binary: `IT_PROMETHEUS`, else `prometheus` on the PATH (Debian's package;
/// `.ci/run` installs it). Missing is a failure with a message, never a skip.
fn prometheus_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("IT_PROMETHEUS") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("prometheus"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no prometheus binary: install Debian's `prometheus` package (bash .ci/run does) \
                 or set IT_PROMETHEUS"
            )
        })
}

/// `docker/prometheus.yml` as shipped, with each job's DNS discovery (compose service names)
/// replaced by the local address of that service, and the rules file at its real path.
fn local_config(ports: &[(&str, u16)]) -> serde_yaml_ng::Value {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("docker/prometheus.yml")).expect("prometheus.yml");
    let mut config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("yaml");
    let rules = root.join("docker/prometheus-rules.yml");
    let rules = rules.canonicalize().expect("rules file");
    config["global"]["scrape_interval"] = "1s".into();
    config["global"]["evaluation_interval"] = "1s".into();
    config["rule_files"] = serde_yaml_ng::Value::Sequence(vec![rules.display().to_string().into()]);
    let jobs = config["scrape_configs"]
        .as_sequence_mut()
        .expect("scrape_configs");
    assert_eq!(jobs.len(), ports.len(), "one scrape job per service");
    for job in jobs.iter_mut() {
        let name = job["job_name"].as_str().expect("job_name").to_owned();
        let port = ports
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("a scrape job for an unknown service: {name}"))
            .1;
        let mapping = job.as_mapping_mut().expect("job");
        assert!(
            mapping.remove("dns_sd_configs").is_some(),
            "{name} discovers its targets by DNS"
        );
        let target = serde_yaml_ng::Value::from(format!("127.0.0.1:{port}"));
        let mut static_config = serde_yaml_ng::Mapping::new();
        static_config.insert(
            "targets".into(),
            serde_yaml_ng::Value::Sequence(vec![target]),
        );
        mapping.insert(
            "static_configs".into(),
            serde_yaml_ng::Value::Sequence(vec![static_config.into()]),
        );
    }
    config
}

async fn api(port: u16, path: &str) -> Option<Value> {
    let (status, body) = http_get(port, path).await?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_every_service_and_evaluates_the_shipped_rules() {
    let keyspace = support::fresh_keyspace().await;
    let t = crate::reader::topics("prom").await;
    let (pp, rp, wp) = (
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );
    let _producer = support::spawn_service(
        "producer",
        "prom-producer",
        &[
            ("PRODUCER_TOPIC", t.input.clone()),
            ("PRODUCER_RATE", "200".into()),
            ("METRICS_ADDR", format!("127.0.0.1:{pp}")),
        ],
    );
    let _reader = support::spawn_service(
        "stream-reader",
        "prom-reader",
        &t.env(&[("METRICS_ADDR", format!("127.0.0.1:{rp}"))]),
    );
    let _writer = support::spawn_service(
        "cassandra-writer",
        "prom-writer",
        &[
            ("CASSANDRA_KEYSPACE", keyspace),
            ("WRITER_GROUP_ID", support::unique("it_prom_writer")),
            ("WRITER_INPUT_TOPIC", t.validated.clone()),
            ("WRITER_DLQ_TOPIC", t.dlq.clone()),
            ("WRITER_STATS_TOPIC", t.stats.clone()),
            ("WRITER_ALERTS_TOPIC", t.alerts.clone()),
            ("METRICS_ADDR", format!("127.0.0.1:{wp}")),
        ],
    );

    let dir = support::scratch_dir("prometheus");
    let config = local_config(&[
        ("producer", pp),
        ("stream-reader", rp),
        ("cassandra-writer", wp),
    ]);
    let config_path = dir.join("prometheus.yml");
    std::fs::write(
        &config_path,
        serde_yaml_ng::to_string(&config).expect("yaml"),
    )
    .expect("write");
    let port = support::free_port();
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
    let prometheus = std::process::Command::new(prometheus_binary())
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    /// Stops Prometheus when the test ends, even when it panics.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let prometheus = Kill(prometheus);

    // Every target of the shipped jobs is scraped and up.
    support::wait_until_async(
        DEADLINE,
        "prometheus scrapes the three services",
        || async move {
            let Some(targets) = api(port, "/api/v1/targets").await else {
                return false;
            };
            let active = targets["data"]["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            active.len() == 3 && active.iter().all(|t| t["health"] == "up")
        },
    )
    .await;
    // Every shipped rule is loaded and evaluated without error.
    let shipped: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/prometheus-rules.yml"),
        )
        .expect("rules"),
    )
    .expect("yaml");
    let shipped_rules = shipped["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .map(|g| g["rules"].as_sequence().expect("rules").len())
        .sum::<usize>();
    support::wait_until_async(DEADLINE, "the shipped rules evaluated", || async move {
        let Some(rules) = api(port, "/api/v1/rules").await else {
            return false;
        };
        let evaluated: Vec<Value> = rules["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        evaluated.len() == shipped_rules
            && evaluated.iter().all(|r| {
                r["health"] == "ok"
                    && r["lastEvaluation"]
                        .as_str()
                        .is_some_and(|t| !t.starts_with("0001-"))
            })
    })
    .await;
    // The data the rules and the dashboard read is there: records flowed through all three.
    for (metric, job) in [
        ("producer_records_delivered_total", "producer"),
        ("reader_records_consumed_total", "stream-reader"),
        ("writer_rows_written_total", "cassandra-writer"),
    ] {
        let query =
            format!("/api/v1/query?query=sum(%7Bjob%3D%22{job}%22%2C__name__%3D%22{metric}%22%7D)");
        support::wait_until_async(DEADLINE, metric, || {
            let query = query.clone();
            async move {
                api(port, &query).await.is_some_and(|v| {
                    v["data"]["result"][0]["value"][1]
                        .as_str()
                        .and_then(|s| s.parse::<f64>().ok())
                        .is_some_and(|n| n > 0.0)
                })
            }
        })
        .await;
    }
    drop(prometheus);
    let _ = std::fs::remove_dir_all(dir);
}

/// More readers than partitions: the one without partitions is a standby in the group, and
/// ready (a deployment scaled past the partition count must not fail its readiness wait).
#[tokio::test(flavor = "multi_thread")]
async fn a_group_member_without_partitions_is_ready() {
    let input = support::unique("it_standby_in");
    let out = support::unique("it_standby_out");
    support::kafka()
        .ensure_topics(&[&input], 1, 1)
        .await
        .expect("one-partition topic");
    support::fresh_topics(&[&out]).await;
    let group = support::unique("it_standby_group");
    let ports = [support::free_port(), support::free_port()];
    let _readers: Vec<support::Service> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            support::spawn_service(
                "stream-reader",
                &format!("standby-{i}-{group}"),
                &[
                    ("READER_GROUP_ID", group.clone()),
                    ("READER_ANALYTICS_GROUP_ID", format!("{group}_analytics")),
                    ("READER_INPUT_TOPIC", input.clone()),
                    ("READER_VALIDATED_TOPIC", out.clone()),
                    ("READER_DLQ_TOPIC", out.clone()),
                    ("READER_STATS_TOPIC", out.clone()),
                    ("READER_ALERTS_TOPIC", out.clone()),
                    ("METRICS_ADDR", format!("127.0.0.1:{port}")),
                ],
            )
        })
        .collect();
    // The second member's join moves the partition (a rebalance): wait until it has settled
    // with one member holding it, then both must be ready.
    support::wait_until_async(DEADLINE, "one member holds the partition", || {
        let input = input.clone();
        async move { assigned(ports, &input).await == [0.0, 1.0] }
    })
    .await;
    for port in ports {
        support::wait_until_async(DEADLINE, "both members ready", || async move {
            matches!(http_get(port, "/readyz").await, Some((200, _)))
        })
        .await;
    }
    assert_eq!(
        assigned(ports, &input).await,
        [0.0, 1.0],
        "one member holds the partition once both are ready"
    );
}

/// The `kafka_assigned_partitions` gauges of `topic` on the services behind `ports`, sorted.
async fn assigned(ports: [u16; 2], topic: &str) -> Vec<f64> {
    let mut v = Vec::new();
    for port in ports {
        let Some((_, body)) = http_get(port, "/metrics").await else {
            return Vec::new();
        };
        v.push(support::metric(
            &body,
            "kafka_assigned_partitions",
            &[("topic", topic)],
        ));
    }
    v.sort_by(f64::total_cmp);
    v
}
