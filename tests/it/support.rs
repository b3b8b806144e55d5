//! Shared helpers: server addresses, fresh topics and keyspaces, reading topics back.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use cassandra_writer::MigrateArgs;
use pipeline_runtime::{cassandra::CassandraArgs, kafka::KafkaArgs, telemetry::TelemetryArgs};
use rdkafka::{
    ClientConfig, Message,
    consumer::{BaseConsumer, Consumer},
};
use scylla::client::session::Session;

/// Generous deadline for anything asynchronous to show up.
pub const DEADLINE: Duration = Duration::from_secs(60);

fn required_env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn kafka_broker() -> String {
    required_env("IT_KAFKA_BROKER", "127.0.0.1:9092")
}

pub fn cassandra_nodes() -> String {
    required_env("IT_CASSANDRA_NODES", "127.0.0.1:9042")
}

pub fn kafka() -> KafkaArgs {
    KafkaArgs::new(kafka_broker())
}

/// Cassandra args for a keyspace, configured for the development server.
pub fn cassandra(keyspace: &str) -> CassandraArgs {
    let mut args = CassandraArgs::new(cassandra_nodes(), keyspace);
    args.await_schema_agreement = false;
    args.consistency = pipeline_runtime::cassandra::ConsistencyArg::One;
    args
}

/// A name unique to this test run: `<prefix>_<pid>_<counter>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates fresh topics (3 partitions); fails loudly when no broker answers.
pub async fn fresh_topics(names: &[&str]) {
    kafka()
        .ensure_topics(names, 3, 1)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot create topics on the Kafka-API broker at {} ({e:#}); \
             run the integration tests with `cargo xtask test`",
                kafka_broker()
            )
        });
}

/// A fresh keyspace with every migration applied; returns its name.
pub async fn fresh_keyspace() -> String {
    let keyspace = unique("it");
    let args = MigrateArgs {
        cassandra: cassandra(&keyspace),
        telemetry: TelemetryArgs {
            log_format: pipeline_runtime::telemetry::LogFormat::Text,
        },
        replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".into(),
    };
    cassandra_writer::migrate(&args).await.unwrap_or_else(|e| {
        panic!(
            "cannot migrate a keyspace on the CQL server at {} ({e:#}); \
             run the integration tests with `cargo xtask test`",
            cassandra_nodes()
        )
    });
    keyspace
}

pub async fn session(keyspace: &str) -> Session {
    cassandra(keyspace).connect().await.expect("CQL session")
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// Reads every partition of `topic` from the beginning until `expected` records arrived (or
/// the deadline passes, then returns what it has). Uses assign(), not a group.
pub fn read_topic(topic: &str, expected: usize, deadline: Duration) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_broker())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
                .expect("tpl");
        }
    }
    consumer.assign(&tpl).expect("assign");
    let end = Instant::now() + deadline;
    let mut out = Vec::new();
    while out.len() < expected && Instant::now() < end {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(Read {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
            }),
            Some(Err(e)) => panic!("consume error on {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// Sum of the high watermarks of a topic.
pub fn topic_size(topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_broker())
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    md.topics()
        .iter()
        .flat_map(|t| t.partitions())
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .expect("wm")
                .1
        })
        .sum()
}
