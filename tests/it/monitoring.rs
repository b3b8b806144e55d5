//! What monitoring sees: a real Prometheus (Debian's package) with the shipped configuration and
//! rules scraping the three running services, a fired rule reaching a webhook through a real
//! Alertmanager with the shipped configuration, and readiness of an idle group member.

use std::path::PathBuf;

use serde_json::Value;

use crate::support::{self, DEADLINE, http_get};

/// A binary of Debian's package `package`: `$env`, else `name` on the PATH (`.ci/run` installs
/// the package). Missing is a failure with a message, never a skip.
fn binary(env: &str, name: &str, package: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no {name} binary: install Debian's `{package}` package (bash .ci/run does) or \
                 set {env}"
            )
        })
}

fn prometheus_binary() -> PathBuf {
    binary("IT_PROMETHEUS", "prometheus", "prometheus")
}

/// `docker/prometheus.yml` as shipped, with each job's DNS discovery (compose service names)
/// replaced by the local address of that service, the Alertmanager's (compose's
/// `alertmanager:9093`) by 127.0.0.1:`alertmanager`, and the rules file at its real path.
fn local_config(ports: &[(&str, u16)], alertmanager: u16) -> serde_yaml_ng::Value {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("docker/prometheus.yml")).expect("prometheus.yml");
    let mut config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("yaml");
    let rules = root.join("docker/prometheus-rules.yml");
    let rules = rules.canonicalize().expect("rules file");
    config["global"]["scrape_interval"] = "1s".into();
    config["global"]["evaluation_interval"] = "1s".into();
    config["rule_files"] = serde_yaml_ng::Value::Sequence(vec![rules.display().to_string().into()]);
    let managers = &mut config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"];
    assert_eq!(
        managers.as_sequence().map(Vec::len),
        Some(1),
        "one Alertmanager"
    );
    *managers = serde_yaml_ng::Value::Sequence(vec![format!("127.0.0.1:{alertmanager}").into()]);
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

/// The three services on fresh topics and a fresh keyspace, each serving its metrics on a port
/// of its own: (producer, stream-reader, cassandra-writer).
struct Pipeline {
    producer: support::Service,
    reader: support::Service,
    writer: support::Service,
    ports: (u16, u16, u16),
}

impl Pipeline {
    async fn start(prefix: &str, rate: u32) -> Self {
        let keyspace = support::fresh_keyspace().await;
        let t = crate::reader::topics(prefix).await;
        let ports = (
            support::free_port(),
            support::free_port(),
            support::free_port(),
        );
        let metrics = |port: u16| format!("127.0.0.1:{port}");
        let producer = support::spawn_service(
            "producer",
            &format!("{prefix}-producer"),
            &[
                ("PRODUCER_TOPIC", t.input.clone()),
                ("PRODUCER_RATE", rate.to_string()),
                ("METRICS_ADDR", metrics(ports.0)),
            ],
        );
        let reader = support::spawn_service(
            "stream-reader",
            &format!("{prefix}-reader"),
            &t.env(&[("METRICS_ADDR", metrics(ports.1))]),
        );
        let writer = support::spawn_service(
            "cassandra-writer",
            &format!("{prefix}-writer"),
            &[
                ("CASSANDRA_KEYSPACE", keyspace),
                (
                    "WRITER_GROUP_ID",
                    support::unique(&format!("it_{prefix}_writer")),
                ),
                ("WRITER_INPUT_TOPIC", t.validated.clone()),
                ("WRITER_DLQ_TOPIC", t.dlq.clone()),
                ("WRITER_STATS_TOPIC", t.stats.clone()),
                ("WRITER_ALERTS_TOPIC", t.alerts.clone()),
                ("METRICS_ADDR", metrics(ports.2)),
            ],
        );
        Self {
            producer,
            reader,
            writer,
            ports,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_every_service_and_evaluates_the_shipped_rules() {
    // Alive until the end: dropping it stops the services.
    let pipeline = Pipeline::start("prom", 200).await;
    let (pp, rp, wp) = pipeline.ports;

    let dir = support::scratch_dir("prometheus");
    // No Alertmanager runs here: what the rules fire is not this test's subject.
    let config = local_config(
        &[
            ("producer", pp),
            ("stream-reader", rp),
            ("cassandra-writer", wp),
        ],
        support::free_port(),
    );
    let (prometheus, port) = prometheus(&dir, &config).await;

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

/// `docker/alertmanager.yml` as shipped, with its webhook pointed at 127.0.0.1:`hook`.
fn local_alertmanager_config(hook: u16) -> serde_yaml_ng::Value {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text =
        std::fs::read_to_string(root.join("docker/alertmanager.yml")).expect("alertmanager.yml");
    let mut config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("yaml");
    let receivers = config["receivers"].as_sequence_mut().expect("receivers");
    assert_eq!(receivers.len(), 1, "one receiver");
    let hooks = receivers[0]["webhook_configs"]
        .as_sequence_mut()
        .expect("a webhook receiver");
    assert_eq!(hooks.len(), 1, "one webhook");
    hooks[0]["url"] = format!("http://127.0.0.1:{hook}/alerts").into();
    config
}

/// A webhook receiver: every request body it gets, as JSON, on the channel; answers 200.
async fn webhook() -> (u16, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (send, receive) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let send = send.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // Headers, then Content-Length bytes of body.
                let body = loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let length = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        break body.to_owned();
                    }
                };
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                if let Ok(json) = serde_json::from_str(&body) {
                    let _ = send.send(json);
                }
            });
        }
    });
    (port, receive)
}

/// Stops a child process when dropped, even when the test panics.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a server `binary` with `args(port)` on a free port and waits until it answers
/// `/-/ready` there (Prometheus and Alertmanager both serve it). A port can be taken between
/// [`support::free_port`] and the server's bind (by a service of a test running beside): the
/// server then exits, or another server answers without `/-/ready`, and it starts again on
/// another port.
async fn serve(
    binary: PathBuf,
    args: impl Fn(u16) -> Vec<String>,
    dir: &std::path::Path,
    name: &str,
) -> (Kill, u16) {
    for attempt in 1..=5 {
        let port = support::free_port();
        let mut server = start(
            binary.clone(),
            &args(port),
            dir,
            &format!("{name}-{attempt}"),
        );
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while tokio::time::Instant::now() < deadline {
            if server.0.try_wait().ok().flatten().is_some() {
                break;
            }
            if matches!(http_get(port, "/-/ready").await, Some((200, _))) {
                return (server, port);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        drop(server);
    }
    panic!(
        "{name} did not get ready on any of 5 free ports (logs in {})",
        dir.display()
    );
}

/// Prometheus with `config` (written to `dir/prometheus.yml`), its data in `dir`, on a free
/// port: the process and its port.
async fn prometheus(dir: &std::path::Path, config: &serde_yaml_ng::Value) -> (Kill, u16) {
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, serde_yaml_ng::to_string(config).expect("yaml")).expect("write");
    serve(
        prometheus_binary(),
        |port| {
            vec![
                format!("--config.file={}", path.display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
            ]
        },
        dir,
        "prometheus",
    )
    .await
}

/// Starts `binary` with `args`, its output in `dir/<name>.log`.
fn start(binary: PathBuf, args: &[String], dir: &std::path::Path, name: &str) -> Kill {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
    let child = std::process::Command::new(&binary)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
    Kill(child)
}

/// The operational alerting path as shipped: the services run, Prometheus scrapes them with
/// the shipped rules and sends what fires to Alertmanager with the shipped route, which calls
/// the webhook. The producer dies; `TargetDown` (its `for: 1m` as shipped) must reach the
/// webhook, firing, for the producer's job, and for no service that still runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_service_that_dies_reaches_the_webhook_as_target_down() {
    let Pipeline {
        producer,
        reader: _reader,
        writer: _writer,
        ports: (pp, rp, wp),
    } = Pipeline::start("alert", 100).await;

    let (hook, mut received) = webhook().await;
    let dir = support::scratch_dir("alerting");
    let am_config = dir.join("alertmanager.yml");
    std::fs::write(
        &am_config,
        serde_yaml_ng::to_string(&local_alertmanager_config(hook)).expect("yaml"),
    )
    .expect("write");
    let (_alertmanager, am_port) = serve(
        binary(
            "IT_ALERTMANAGER",
            "prometheus-alertmanager",
            "prometheus-alertmanager",
        ),
        |port| {
            vec![
                format!("--config.file={}", am_config.display()),
                format!("--storage.path={}", dir.join("am-data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                // A single instance: no gossip port.
                "--cluster.listen-address=".to_owned(),
            ]
        },
        &dir,
        "alertmanager",
    )
    .await;
    let config = local_config(
        &[
            ("producer", pp),
            ("stream-reader", rp),
            ("cassandra-writer", wp),
        ],
        am_port,
    );
    let (_prometheus, port) = prometheus(&dir, &config).await;
    // Prometheus found the Alertmanager and every service is up.
    support::wait_until_async(
        DEADLINE,
        "prometheus scrapes the three services and knows the alertmanager",
        || async move {
            let targets = api(port, "/api/v1/targets").await;
            let managers = api(port, "/api/v1/alertmanagers").await;
            let (Some(targets), Some(managers)) = (targets, managers) else {
                return false;
            };
            let active = targets["data"]["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            active.len() == 3
                && active.iter().all(|t| t["health"] == "up")
                && managers["data"]["activeAlertmanagers"]
                    .as_array()
                    .is_some_and(|a| a.len() == 1)
        },
    )
    .await;

    drop(producer);
    // Down for `for: 1m`, then the route's group_wait (10 s): well within 3 minutes.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(180);
    let mut seen = Vec::new();
    let fired = loop {
        let next = tokio::time::timeout_at(deadline, received.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no TargetDown for the producer reached the webhook in 3 minutes; it got: \
                     {seen:#?}"
                )
            })
            .expect("webhook open");
        let alerts = next["alerts"].as_array().cloned().unwrap_or_default();
        for a in &alerts {
            assert!(
                a["labels"]["alertname"] != "TargetDown" || a["labels"]["job"] == "producer",
                "only the producer is down: {a:#}"
            );
        }
        seen.push(next.clone());
        if let Some(a) = alerts.iter().find(|a| {
            a["labels"]["alertname"] == "TargetDown"
                && a["labels"]["job"] == "producer"
                && a["status"] == "firing"
        }) {
            break a.clone();
        }
    };
    assert_eq!(fired["labels"]["severity"], "critical", "{fired:#}");
    assert!(
        fired["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("producer at 127.0.0.1:")),
        "{fired:#}"
    );
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
