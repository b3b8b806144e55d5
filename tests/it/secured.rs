//! The secured cluster (`cargo xtask test` starts it after the other tests: 3 Kafka nodes on
//! SASL_SSL with SCRAM-SHA-512 and ACLs, 3 Cassandra nodes with TLS, passwords and roles).
//!
//! Each service is started with the documented settings and one thing wrong: a bad password,
//! a CA that did not sign the servers' certificates, a missing ACL, a missing Cassandra
//! permission. Each must end at start-up with one line naming the setting to fix, having
//! consumed and committed nothing. The roles' least privilege is checked against the server:
//! the writer cannot create or drop tables, the analyst cannot write.
//!
//! xtask allows the services topics, groups and transactional ids by prefix for these tests
//! (`sec_raw_…` written by `producer`, read by `stream-reader`; `sec_valid_…`, …); a name
//! outside them has no ACL.

use std::{
    path::PathBuf,
    process::ExitStatus,
    time::{Duration, Instant},
};

use pipeline_runtime::{
    cassandra::CassandraArgs,
    kafka::{KafkaArgs, SecurityProtocol},
};
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::support::{self, DEADLINE};

/// The secured cluster xtask started, from `IT_SECURED_*`.
struct Secured {
    dir: PathBuf,
    brokers: String,
    nodes: String,
}

fn secured() -> Secured {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: these tests need the secured cluster that \
                 `cargo xtask test` starts"
            )
        })
    };
    Secured {
        dir: PathBuf::from(var("IT_SECURED_DIR")),
        brokers: var("IT_SECURED_KAFKA_BROKER"),
        nodes: var("IT_SECURED_CASSANDRA_NODES"),
    }
}

impl Secured {
    fn ca(&self) -> String {
        self.dir.join("tls/ca.pem").display().to_string()
    }

    fn untrusted_ca(&self) -> String {
        self.dir.join("tls/untrusted-ca.pem").display().to_string()
    }

    fn kafka_password_file(&self, user: &str) -> String {
        self.dir
            .join(format!("secrets/kafka-{user}"))
            .display()
            .to_string()
    }

    fn cql_password_file(&self, role: &str) -> String {
        self.dir
            .join(format!("secrets/cql-{role}"))
            .display()
            .to_string()
    }

    /// The documented settings of a service running as Kafka user `user` and, for the
    /// writer, Cassandra role `role`.
    fn env(&self, user: &str, role: Option<&str>) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("KAFKA_BROKER", self.brokers.clone()),
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL".to_owned()),
            ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512".to_owned()),
            ("KAFKA_SASL_USERNAME", user.to_owned()),
            ("KAFKA_SASL_PASSWORD_FILE", self.kafka_password_file(user)),
            ("KAFKA_SSL_CA_LOCATION", self.ca()),
            ("CASSANDRA_NODES", self.nodes.clone()),
            ("CASSANDRA_LOCAL_DC", "datacenter1".to_owned()),
        ];
        if let Some(role) = role {
            env.extend([
                ("CASSANDRA_TLS", "true".to_owned()),
                ("CASSANDRA_TLS_CA_FILE", self.ca()),
                ("CASSANDRA_USERNAME", role.to_owned()),
                ("CASSANDRA_PASSWORD_FILE", self.cql_password_file(role)),
            ]);
        }
        env
    }

    /// The writer's settings as docs/security.md's "The secured cluster" lists them, with the dev
    /// stack's addresses and files replaced by this cluster's.
    fn readme_settings(&self) -> Vec<(&'static str, String)> {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/security.md"),
        )
        .expect("docs/security.md");
        let block = readme
            .split("- **The services' settings**")
            .nth(1)
            .and_then(|rest| rest.split("```sh").nth(1))
            .and_then(|rest| rest.split("```").next())
            .expect("docs/security.md lists the services' settings in a sh block");
        let dev = "target/local-stack/dev-cluster-secure/";
        let dir = format!("{}/", self.dir.display());
        let documented: std::collections::BTreeMap<&str, &str> = block
            .lines()
            .filter_map(|l| l.trim().split_once('='))
            .collect();
        let tested = self.env("cassandra-writer", Some("cassandra_writer"));
        assert_eq!(
            documented.keys().copied().collect::<Vec<_>>(),
            tested
                .iter()
                .map(|(k, _)| *k)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>(),
            "docs/security.md's settings vs the tests'"
        );
        tested
            .into_iter()
            .map(|(key, value)| {
                let readme = match key {
                    "KAFKA_BROKER" | "CASSANDRA_NODES" => value.clone(),
                    _ => documented[key].replace(dev, &dir),
                };
                assert_eq!(readme, value, "docs/security.md's {key}");
                (key, readme)
            })
            .collect()
    }

    fn kafka(&self, user: &str) -> KafkaArgs {
        let mut k = KafkaArgs::new(self.brokers.clone());
        k.security_protocol = SecurityProtocol::SaslSsl;
        k.sasl_mechanism = Some("SCRAM-SHA-512".into());
        k.sasl_username = Some(user.into());
        k.sasl_password_file = Some(self.kafka_password_file(user).into());
        k.ssl_ca_location = Some(self.ca().into());
        k
    }

    fn cql(&self, keyspace: &str, role: &str) -> CassandraArgs {
        let mut c = CassandraArgs::new(self.nodes.clone(), keyspace);
        c.local_dc = Some("datacenter1".into());
        c.tls = true;
        c.tls_ca_file = Some(self.ca().into());
        c.username = Some(role.into());
        c.password_file = Some(self.cql_password_file(role).into());
        c
    }

    /// Fresh topics (3 partitions, 3 replicas), created by the admin user.
    async fn topics(&self, names: &[&str]) {
        self.kafka("admin")
            .ensure_topics(names, 3, 3)
            .await
            .expect("create topics on the secured cluster");
    }

    /// `count` valid records on `topic`, sent by the admin user.
    async fn fill(&self, topic: &str, count: usize) {
        let producer = self.kafka("admin").producer(&[]).expect("producer");
        let line = r#"{"timestamp":"2025-01-01 10:00:00","source_ip":"10.0.0.1","destination_ip":"10.0.0.2","port":443,"protocol":"TCP","bytes_sent":10,"bytes_received":20,"action":"ALLOW"}"#;
        for _ in 0..count {
            producer
                .send(
                    rdkafka::producer::FutureRecord::<(), str>::to(topic).payload(line),
                    Duration::from_secs(60),
                )
                .await
                .expect("record delivered");
        }
    }

    /// A keyspace migrated by the migrator role, granted to the writer with `write` (SELECT and
    /// MODIFY) or else only SELECT.
    async fn keyspace(&self, write: bool) -> String {
        let keyspace = support::unique("sec");
        let (grant_write_to, grant_read_to) = if write {
            (vec!["cassandra_writer".to_owned()], vec![])
        } else {
            (vec![], vec!["cassandra_writer".to_owned()])
        };
        let args = cassandra_writer::MigrateArgs {
            replication: "{'class': 'NetworkTopologyStrategy', 'datacenter1': 3}".into(),
            grant_write_to,
            grant_read_to,
            ..support::migrate_args(self.cql(&keyspace, "pipeline_migrator"))
        };
        cassandra_writer::migrate(&args)
            .await
            .expect("migrate as the migrator role");
        keyspace
    }

    /// Committed offsets of `group` on `topic` (read by the admin user).
    fn committed(&self, group: &str, topic: &str) -> usize {
        let consumer: BaseConsumer = self
            .kafka("admin")
            .config(&[("group.id", group)])
            .expect("config")
            .create()
            .expect("consumer");
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..3 {
            tpl.add_partition(topic, p);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
                Ok(c) => {
                    return c
                        .elements()
                        .iter()
                        .filter(|e| matches!(e.offset(), rdkafka::Offset::Offset(_)))
                        .count();
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("committed({group}): {e}; asking again");
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => panic!("committed({group}, {topic}): {e}"),
            }
        }
    }

    /// Records on `topic` (read_uncommitted, by the admin user).
    fn size(&self, topic: &str) -> i64 {
        let consumer: BaseConsumer = self
            .kafka("admin")
            .config(&[("group.id", "sec-size")])
            .expect("config")
            .create()
            .expect("consumer");
        (0..3)
            .map(|p| {
                let (lo, hi) = consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .expect("watermarks");
                hi - lo
            })
            .sum()
    }
}

/// The names of one test's pipeline, inside the prefixes xtask allowed.
struct Names {
    raw: String,
    valid: String,
    dlq: String,
    stats: String,
    alerts: String,
    by_destination: String,
    target_stats: String,
    reader_group: String,
    writer_group: String,
}

impl Names {
    fn new() -> Self {
        let u = support::unique("t");
        Self {
            raw: format!("sec_raw_{u}"),
            valid: format!("sec_valid_{u}"),
            dlq: format!("sec_dlq_{u}"),
            stats: format!("sec_stats_{u}"),
            alerts: format!("sec_alerts_{u}"),
            by_destination: format!("sec_bydest_{u}"),
            target_stats: format!("sec_targets_{u}"),
            reader_group: format!("sec_reader_{u}"),
            writer_group: format!("sec_writer_{u}"),
        }
    }

    fn all(&self) -> [&str; 7] {
        [
            &self.raw,
            &self.valid,
            &self.dlq,
            &self.stats,
            &self.alerts,
            &self.by_destination,
            &self.target_stats,
        ]
    }

    fn reader_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("READER_INPUT_TOPIC", self.raw.clone()),
            ("READER_VALIDATED_TOPIC", self.valid.clone()),
            ("READER_DLQ_TOPIC", self.dlq.clone()),
            ("READER_STATS_TOPIC", self.stats.clone()),
            ("READER_ALERTS_TOPIC", self.alerts.clone()),
            ("READER_GROUP_ID", self.reader_group.clone()),
            (
                "READER_ANALYTICS_GROUP_ID",
                format!("{}_analytics", self.reader_group),
            ),
            // The destination windows' topics and group are part of the least privilege.
            ("READER_DESTINATION_WINDOWS", "true".to_owned()),
            ("READER_DESTINATION_TOPIC", self.by_destination.clone()),
            ("READER_TARGET_STATS_TOPIC", self.target_stats.clone()),
            (
                "READER_TARGETS_GROUP_ID",
                format!("{}_targets", self.reader_group),
            ),
        ]
    }

    fn writer_env(&self, keyspace: &str) -> Vec<(&'static str, String)> {
        vec![
            ("WRITER_INPUT_TOPIC", self.valid.clone()),
            ("WRITER_STATS_TOPIC", self.stats.clone()),
            ("WRITER_ALERTS_TOPIC", self.alerts.clone()),
            ("WRITER_TARGET_STATS_TOPIC", self.target_stats.clone()),
            ("WRITER_DLQ_TOPIC", self.dlq.clone()),
            ("WRITER_GROUP_ID", self.writer_group.clone()),
            ("CASSANDRA_KEYSPACE", keyspace.to_owned()),
        ]
    }
}

/// Runs `bin` with `env` until it exits (at most [`DEADLINE`]); returns its status and the
/// last line it printed.
async fn run_to_exit(bin: &str, env: Vec<(&'static str, String)>) -> (ExitStatus, String) {
    let log = support::unique(&format!("secured-{bin}"));
    let mut service = support::spawn_service(bin, &log, &env);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = service.try_wait() {
            break status;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{bin} still runs after {DEADLINE:?}: it should have stopped at start-up \
             (target/it-logs/{log}.log)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../target/it-logs/{log}.log")),
    )
    .expect("service log");
    let last = text.lines().last().unwrap_or_default().to_owned();
    (status, last)
}

/// `env` with `key` replaced by `value` (or removed when `None`).
fn with(
    mut env: Vec<(&'static str, String)>,
    key: &'static str,
    value: Option<String>,
) -> Vec<(&'static str, String)> {
    env.retain(|(k, _)| *k != key);
    if let Some(v) = value {
        env.push((key, v));
    }
    env
}

/// Asserts the service ended at start-up with one error line that names `setting`.
fn assert_ended_naming(bin: &str, (status, last): &(ExitStatus, String), setting: &str) {
    assert!(!status.success(), "{bin} exited with success: {last}");
    assert!(
        last.starts_with(&format!("{bin}: ")) && last.contains(setting),
        "{bin}'s last line should be its error naming {setting}: {last}"
    );
}

#[tokio::test]
async fn a_bad_kafka_password_ends_every_service_at_startup_having_consumed_nothing() {
    let s = secured();
    let n = Names::new();
    s.topics(&n.all()).await;
    s.fill(&n.raw, 20).await;
    let keyspace = s.keyspace(true).await;
    let wrong = |env| {
        let env = with(env, "KAFKA_SASL_PASSWORD_FILE", None);
        with(env, "KAFKA_SASL_PASSWORD", Some("not-the-password".into()))
    };
    let mut reader = s.env("stream-reader", None);
    reader.extend(n.reader_env());
    let out = run_to_exit("stream-reader", wrong(reader)).await;
    assert_ended_naming("stream-reader", &out, "KAFKA_SASL_PASSWORD");
    let mut writer = s.env("cassandra-writer", Some("cassandra_writer"));
    writer.extend(n.writer_env(&keyspace));
    let out = run_to_exit("cassandra-writer", wrong(writer)).await;
    assert_ended_naming("cassandra-writer", &out, "KAFKA_SASL_PASSWORD");
    let mut producer = s.env("producer", None);
    producer.extend([
        ("PRODUCER_TOPIC", n.raw.clone()),
        ("PRODUCER_COUNT", "5".into()),
    ]);
    let out = run_to_exit("producer", wrong(producer)).await;
    assert_ended_naming("producer", &out, "KAFKA_SASL_PASSWORD");
    assert_eq!(s.committed(&n.reader_group, &n.raw), 0, "reader committed");
    assert_eq!(
        s.committed(&n.writer_group, &n.valid),
        0,
        "writer committed"
    );
    assert_eq!(s.size(&n.raw), 20, "the producer sent nothing");
    assert_eq!(s.size(&n.valid) + s.size(&n.dlq), 0, "the reader produced");
}

#[tokio::test]
async fn a_ca_that_did_not_sign_the_brokers_ends_the_reader_at_startup() {
    let s = secured();
    let n = Names::new();
    s.topics(&n.all()).await;
    s.fill(&n.raw, 20).await;
    let mut env = s.env("stream-reader", None);
    env.extend(n.reader_env());
    let env = with(env, "KAFKA_SSL_CA_LOCATION", Some(s.untrusted_ca()));
    let out = run_to_exit("stream-reader", env).await;
    assert_ended_naming("stream-reader", &out, "KAFKA_SSL_CA_LOCATION");
    assert_eq!(s.committed(&n.reader_group, &n.raw), 0);
    assert_eq!(s.size(&n.valid) + s.size(&n.dlq), 0);
}

#[tokio::test]
async fn a_missing_topic_acl_ends_the_writer_at_startup() {
    let s = secured();
    let n = Names::new();
    s.topics(&n.all()).await;
    // Outside every prefix the writer may read.
    let unlisted = support::unique("sec_unlisted");
    s.topics(&[&unlisted]).await;
    s.fill(&unlisted, 20).await;
    let keyspace = s.keyspace(true).await;
    let mut env = s.env("cassandra-writer", Some("cassandra_writer"));
    env.extend(n.writer_env(&keyspace));
    let env = with(env, "WRITER_INPUT_TOPIC", Some(unlisted.clone()));
    let out = run_to_exit("cassandra-writer", env).await;
    assert_ended_naming("cassandra-writer", &out, &unlisted);
    assert!(out.1.contains("ACLs"), "{}", out.1);
    assert_eq!(s.committed(&n.writer_group, &unlisted), 0);
}

#[tokio::test]
async fn a_missing_group_acl_ends_the_reader_at_startup() {
    let s = secured();
    let n = Names::new();
    s.topics(&n.all()).await;
    s.fill(&n.raw, 20).await;
    let mut env = s.env("stream-reader", None);
    env.extend(n.reader_env());
    let group = support::unique("unlisted_group");
    let env = with(env, "READER_GROUP_ID", Some(group.clone()));
    let out = run_to_exit("stream-reader", env).await;
    assert_ended_naming("stream-reader", &out, "READER_GROUP_ID");
    assert!(out.1.contains(&group), "{}", out.1);
    assert_eq!(s.size(&n.valid) + s.size(&n.dlq), 0);
}

#[tokio::test]
async fn a_bad_cassandra_password_or_ca_ends_the_writer_at_startup() {
    let s = secured();
    let n = Names::new();
    s.topics(&n.all()).await;
    let keyspace = s.keyspace(true).await;
    let mut env = s.env("cassandra-writer", Some("cassandra_writer"));
    env.extend(n.writer_env(&keyspace));
    let bad_password = with(
        with(env.clone(), "CASSANDRA_PASSWORD_FILE", None),
        "CASSANDRA_PASSWORD",
        Some("not-the-password".into()),
    );
    let out = run_to_exit("cassandra-writer", bad_password).await;
    assert_ended_naming("cassandra-writer", &out, "CASSANDRA_PASSWORD");
    let untrusted = with(env, "CASSANDRA_TLS_CA_FILE", Some(s.untrusted_ca()));
    let out = run_to_exit("cassandra-writer", untrusted).await;
    assert_ended_naming("cassandra-writer", &out, "CASSANDRA_TLS_CA_FILE");
    assert_eq!(s.committed(&n.writer_group, &n.valid), 0);
}

#[tokio::test]
async fn a_writer_role_without_modify_ends_at_startup_having_consumed_nothing() {
    let s = secured();
    let n = Names::new();
    s.topics(&n.all()).await;
    s.fill(&n.valid, 20).await;
    // SELECT only.
    let keyspace = s.keyspace(false).await;
    let mut env = s.env("cassandra-writer", Some("cassandra_writer"));
    env.extend(n.writer_env(&keyspace));
    let out = run_to_exit("cassandra-writer", env).await;
    assert_ended_naming("cassandra-writer", &out, "CASSANDRA_USERNAME");
    assert!(out.1.contains("MODIFY"), "{}", out.1);
    assert_eq!(s.committed(&n.writer_group, &n.valid), 0);
}

#[tokio::test]
async fn the_writer_cannot_change_the_schema_and_the_analyst_cannot_write() {
    let s = secured();
    let keyspace = s.keyspace(true).await;
    let writer = s
        .cql(&keyspace, "cassandra_writer")
        .connect()
        .await
        .expect("the writer logs in");
    for ddl in [
        format!("CREATE TABLE {keyspace}.extra (k int PRIMARY KEY)"),
        format!("DROP TABLE {keyspace}.access_logs"),
        format!("ALTER TABLE {keyspace}.access_logs WITH comment = 'x'"),
        format!("DROP KEYSPACE {keyspace}"),
    ] {
        let err = writer
            .query_unpaged(ddl.as_str(), &[])
            .await
            .expect_err(&ddl);
        assert!(
            format!("{err}").contains("Unauthorized")
                || format!("{err:?}").contains("Unauthorized"),
            "{ddl}: {err}"
        );
    }
    let analyst = s
        .cql(&keyspace, "analyst")
        .connect()
        .await
        .expect("the analyst logs in");
    // Migrate grants the analysts nothing unless asked: this keyspace is not theirs to read.
    let insert =
        format!("INSERT INTO {keyspace}.schema_migrations (version, name) VALUES (999, 'x')");
    let err = analyst
        .query_unpaged(insert.as_str(), &[])
        .await
        .expect_err("the analyst cannot write");
    assert!(format!("{err:?}").contains("Unauthorized"), "{err}");
}

#[tokio::test]
async fn the_pipeline_and_the_operator_tools_run_as_their_users() {
    let s = secured();
    let n = Names::new();
    s.topics(&n.all()).await;
    let keyspace = s.keyspace(true).await;
    let mut reader = s.env("stream-reader", None);
    reader.extend(n.reader_env());
    let _reader =
        support::spawn_service("stream-reader", &support::unique("secured-reader"), &reader);
    // The writer with the settings docs/security.md documents, on this cluster's addresses and files.
    let mut writer = s.readme_settings();
    writer.extend(n.writer_env(&keyspace));
    let _writer = support::spawn_service(
        "cassandra-writer",
        &support::unique("secured-writer"),
        &writer,
    );
    let mut producer = s.env("producer", None);
    producer.extend([
        ("PRODUCER_TOPIC", n.raw.clone()),
        ("PRODUCER_COUNT", "200".into()),
        ("PRODUCER_RATE", "0".into()),
        ("PRODUCER_INVALID_RATIO", "0.1".into()),
    ]);
    let (status, last) = run_to_exit("producer", producer).await;
    assert!(status.success(), "producer: {last}");
    // Every record ends as a row or a dead letter.
    let session = s
        .cql(&keyspace, "cassandra_writer")
        .connect()
        .await
        .expect("session");
    let count = format!("SELECT count(*) FROM {keyspace}.access_logs");
    let deadline = Instant::now() + DEADLINE;
    let (rows, dead) = loop {
        let rows: i64 = session
            .query_unpaged(count.as_str(), &[])
            .await
            .expect("count rows")
            .into_rows_result()
            .expect("rows")
            .single_row::<(i64,)>()
            .expect("one row")
            .0;
        let dead = s.size(&n.dlq);
        if rows + dead >= 200 || Instant::now() > deadline {
            break (rows, dead);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(rows + dead, 200, "rows {rows} + dead letters {dead}");
    assert!(dead > 0, "the invalid records are dead letters");
    // The operator reads the DLQ with its own user (ACL: read the DLQ, groups `producer-…`).
    let mut operator = s.env("operator", None);
    operator.push(("DLQ_TOPIC", n.dlq.clone()));
    let out = std::process::Command::new(support::bin("producer"))
        .args(["dlq", "stats"])
        .envs(operator.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("producer dlq stats");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dlq stats as operator: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&dead.to_string()),
        "dlq stats counts {dead}: {text}"
    );
}

/// The value of `key` in a `server.properties`.
fn property(properties: &str, key: &str) -> String {
    properties
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("server.properties has no {key}"))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn the_compose_files_run_the_versions_and_replication_of_this_cluster() {
    let s = secured();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let yaml = |rel: &str| -> serde_yaml_ng::Value {
        let text = std::fs::read_to_string(root.join(rel)).expect(rel);
        let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect(rel);
        doc.apply_merge().expect("merge keys");
        doc
    };
    let local = yaml("docker-compose.yml");
    let cluster = yaml("docker/compose.cluster.yml");
    let image = |doc: &serde_yaml_ng::Value, service: &str| -> String {
        doc["services"][service]["image"]
            .as_str()
            .unwrap_or_else(|| panic!("{service} has an image"))
            .to_owned()
    };
    // Versions: what this cluster's servers report.
    let kafka_log = std::fs::read_to_string(s.dir.join("kafka1.log")).expect("kafka1.log");
    let kafka_version = kafka_log
        .lines()
        .find_map(|l| l.split("Kafka version: ").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .expect("Kafka logs its version")
        .to_owned();
    let session = s
        .cql("system", "pipeline_admin")
        .connect()
        .await
        .expect("admin");
    let (cassandra_version,) = session
        .query_unpaged("SELECT release_version FROM system.local", &[])
        .await
        .expect("release_version")
        .into_rows_result()
        .expect("rows")
        .single_row::<(String,)>()
        .expect("one row");
    let kafka_image = format!("apache/kafka:{kafka_version}");
    let cassandra_image = format!("cassandra:{cassandra_version}");
    for (doc, name, services, expected) in [
        (
            &local,
            "docker-compose.yml",
            &["kafka", "kafka-init"][..],
            &kafka_image,
        ),
        (
            &local,
            "docker-compose.yml",
            &["cassandra", "cqlsh"],
            &cassandra_image,
        ),
        (
            &cluster,
            "docker/compose.cluster.yml",
            &["kafka-1", "kafka-2", "kafka-3"],
            &kafka_image,
        ),
        (
            &cluster,
            "docker/compose.cluster.yml",
            &["cassandra-1", "cassandra-2", "cassandra-3"],
            &cassandra_image,
        ),
    ] {
        for svc in services {
            assert_eq!(&image(doc, svc), expected, "{name} {svc}");
        }
    }
    // Replication: the brokers' settings of this cluster, and of the cluster example.
    let properties =
        std::fs::read_to_string(s.dir.join("kafka1-conf/server.properties")).expect("properties");
    for key in [
        "default.replication.factor",
        "min.insync.replicas",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
    ] {
        let env = format!("KAFKA_{}", key.replace('.', "_").to_uppercase());
        for broker in ["kafka-1", "kafka-2", "kafka-3"] {
            let value = &cluster["services"][broker]["environment"][env.as_str()];
            let value = value
                .as_u64()
                .map(|v| v.to_string())
                .or_else(|| value.as_str().map(str::to_owned))
                .unwrap_or_else(|| panic!("{broker} sets {env}"));
            assert_eq!(value, property(&properties, key), "{broker} {env}");
        }
    }
    // The pipeline's topics and keyspace, as xtask created them, and as the example's
    // cluster.env asks kafka-init and cassandra-migrate to.
    let cluster_env =
        std::fs::read_to_string(root.join("docker/cluster.env")).expect("cluster.env");
    let setting = |key: &str| {
        cluster_env
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("cluster.env sets {key}"))
            .trim_matches('"')
            .to_owned()
    };
    let admin = s.kafka("admin").admin().expect("admin");
    let md = admin
        .inner()
        .fetch_metadata(Some("ip_logs"), Duration::from_secs(10))
        .expect("metadata");
    let replicas = md.topics()[0].partitions()[0].replicas().len();
    assert_eq!(setting("KAFKA_TOPIC_REPLICATION"), replicas.to_string());
    let (replication,) = session
        .query_unpaged(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = 'ip_logs'",
            &[],
        )
        .await
        .expect("keyspace")
        .into_rows_result()
        .expect("rows")
        .single_row::<(std::collections::HashMap<String, String>,)>()
        .expect("one row");
    let expected = setting("CASSANDRA_REPLICATION");
    assert!(
        replication["class"].ends_with("NetworkTopologyStrategy")
            && expected.contains("'NetworkTopologyStrategy'")
            && expected.contains(&format!("'datacenter1': {}", replication["datacenter1"])),
        "cluster.env CASSANDRA_REPLICATION {expected} vs the cluster's {replication:?}"
    );
    assert_eq!(setting("CASSANDRA_LOCAL_DC"), "datacenter1");
}
