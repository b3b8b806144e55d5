//! Secrets never show up in `--help`, logs, status lines or error messages.

use std::{process::Command, time::Duration};

use crate::support::{self, DEADLINE};

const SECRET: &str = "s3cr3t-Pa55w0rd-7f3a9c";

fn log_of(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../target/it-logs/{name}.log"));
    std::fs::read_to_string(path).expect("service log")
}

#[test]
fn help_never_prints_secret_values() {
    for bin in ["producer", "stream-reader", "cassandra-writer"] {
        let out = Command::new(support::bin(bin))
            .arg("--help")
            .env("KAFKA_SASL_PASSWORD", SECRET)
            .env("KAFKA_SSL_KEY_PASSWORD", SECRET)
            .env("KAFKA_OPTIONS", format!("sasl.password={SECRET}"))
            .env("CASSANDRA_PASSWORD", SECRET)
            .output()
            .expect("run --help");
        let text = all_output(&out);
        assert!(out.status.success(), "{bin} --help");
        assert!(
            text.contains("KAFKA_SASL_PASSWORD"),
            "{bin} documents its secret options"
        );
        assert!(
            !text.contains(SECRET),
            "{bin} --help printed a secret:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_with_secrets_never_logs_them() {
    let keyspace = support::fresh_keyspace().await;
    let topics: Vec<String> = ["valid", "dlq", "stats", "alerts"]
        .iter()
        .map(|t| support::unique(&format!("it_sec_{t}")))
        .collect();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    support::fresh_topics(&refs).await;
    let secret_file = std::env::temp_dir().join(support::unique("cassandra_password"));
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("secret file");
    let log = support::unique("it_sec_writer");
    let mut writer = support::spawn_service(
        "cassandra-writer",
        &log,
        &[
            ("RUST_LOG", "debug,librdkafka=debug".into()),
            (
                "KAFKA_OPTIONS",
                format!("debug=conf;sasl.password={SECRET}"),
            ),
            ("KAFKA_SASL_USERNAME", "pipeline".into()),
            ("KAFKA_SASL_PASSWORD", SECRET.into()),
            ("CASSANDRA_USERNAME", "pipeline".into()),
            ("CASSANDRA_PASSWORD_FILE", secret_file.display().to_string()),
            ("CASSANDRA_KEYSPACE", keyspace),
            ("WRITER_GROUP_ID", support::unique("it_sec")),
            ("WRITER_INPUT_TOPIC", topics[0].clone()),
            ("WRITER_DLQ_TOPIC", topics[1].clone()),
            ("WRITER_STATS_TOPIC", topics[2].clone()),
            ("WRITER_ALERTS_TOPIC", topics[3].clone()),
            ("WRITER_STATUS_INTERVAL_SECS", "1".into()),
        ],
    );
    support::wait_until(
        DEADLINE,
        "the writer started and printed status lines",
        || log_of(&log).matches("status").count() >= 3,
    )
    .await;
    assert!(support::terminate(&mut writer).success());
    let text = log_of(&log);
    assert!(
        text.contains("cassandra-writer started"),
        "the run really happened"
    );
    assert!(!text.contains(SECRET), "a secret leaked into the log");

    // Error paths: an unreachable Cassandra, and a missing secret file.
    for (name, env) in [
        (
            "unreachable",
            vec![
                ("CASSANDRA_NODES", "127.0.0.1:1".to_owned()),
                ("CASSANDRA_PASSWORD", SECRET.to_owned()),
            ],
        ),
        (
            "no-file",
            vec![(
                "CASSANDRA_PASSWORD_FILE",
                "/nonexistent/cassandra_password".to_owned(),
            )],
        ),
    ] {
        let out = Command::new(support::bin("cassandra-writer"))
            .env("CASSANDRA_USERNAME", "pipeline")
            .env("CASSANDRA_CONNECT_TIMEOUT_MS", "1000")
            .env("METRICS_ADDR", "127.0.0.1:0")
            .envs(env)
            .output()
            .expect("run");
        let text = all_output(&out);
        assert!(!out.status.success(), "{name}: fails");
        assert!(
            text.contains("cassandra-writer: "),
            "{name}: one clear error line:\n{text}"
        );
        assert!(
            !text.contains(SECRET),
            "{name}: a secret leaked into the error"
        );
        if name == "no-file" {
            assert!(
                text.contains("/nonexistent/cassandra_password"),
                "names the file:\n{text}"
            );
        }
    }
    let _ = std::fs::remove_file(secret_file);
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// Everything a finished process printed, stdout then stderr.
fn all_output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The documented `KAFKA_SECURITY_PROTOCOL=sasl_ssl` (README, docker/README.md, compose) and
/// the spellings people copy from Kafka's documentation are one value for every service, and
/// so are the other enumerated settings; an unknown value names the setting and the choices.
#[test]
fn every_service_takes_enumerated_settings_as_users_spell_them() {
    use clap::Parser as _;
    use pipeline_runtime::kafka::config::SecurityProtocol;
    use pipeline_runtime::transaction::Delivery;
    for spelling in ["sasl_ssl", "SASL_SSL", "sasl-ssl"] {
        let flags = [
            "--kafka-security-protocol",
            spelling,
            "--log-format",
            "JSON",
        ];
        let reader = stream_reader::ReaderArgs::try_parse_from(
            ["stream-reader", "--delivery", "EXACTLY_ONCE"]
                .into_iter()
                .chain(flags),
        )
        .expect(spelling);
        assert_eq!(reader.kafka.security_protocol, SecurityProtocol::SaslSsl);
        assert_eq!(reader.delivery, Delivery::ExactlyOnce);
        let writer = cassandra_writer::Cli::try_parse_from(
            [
                "cassandra-writer",
                "--delivery",
                "exactly_once",
                "--cassandra-consistency",
                "LOCAL_QUORUM",
            ]
            .into_iter()
            .chain(flags),
        )
        .expect(spelling)
        .writer;
        assert_eq!(writer.kafka.security_protocol, SecurityProtocol::SaslSsl);
        assert_eq!(writer.delivery, Delivery::ExactlyOnce);
        let producer = producer::Cli::try_parse_from(
            [
                "producer",
                "--scenario",
                "PORT_SCAN",
                "--format",
                "SEED_JSON",
            ]
            .into_iter()
            .chain(flags),
        )
        .expect(spelling)
        .producer;
        assert_eq!(producer.kafka.security_protocol, SecurityProtocol::SaslSsl);
    }
    let error = stream_reader::ReaderArgs::try_parse_from([
        "stream-reader",
        "--kafka-security-protocol",
        "tls",
    ])
    .expect_err("tls is not a protocol")
    .to_string();
    assert!(
        error.contains("KAFKA_SECURITY_PROTOCOL") && error.contains("sasl-ssl"),
        "{error}"
    );
}
