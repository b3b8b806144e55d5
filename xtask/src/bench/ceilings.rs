//! The ceilings each stage is measured against: a raw rdkafka producer, a Python
//! confluent-kafka producer, a raw consume → produce pass-through, a raw concurrent insert loop.

use std::{
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use log_schema::ValidatedRecord;
use pipeline_runtime::{cassandra::CassandraArgs, kafka::KafkaArgs};
use rdkafka::{
    Message,
    consumer::{BaseConsumer, Consumer},
    producer::{BaseRecord, Producer, ThreadedProducer},
};

/// Raw rdkafka producer: the same bytes and keys, same settings, no generation.
pub(super) fn raw_produce(
    kafka: &KafkaArgs,
    topic: &str,
    records: &[(Option<Vec<u8>>, Vec<u8>)],
    count: usize,
) -> anyhow::Result<f64> {
    let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> = kafka
        .producer_config(KafkaArgs::SOURCE_PRODUCER)?
        .create()?;
    let start = Instant::now();
    for (key, payload) in records.iter().cycle().take(count) {
        let mut r = BaseRecord::<[u8], [u8]>::to(topic).payload(payload);
        if let Some(k) = key {
            r = r.key(k);
        }
        let mut r = Some(r);
        while let Some(rec) = r.take() {
            if let Err((_, rec)) = producer.send(rec) {
                r = Some(rec);
                producer.poll(Duration::from_millis(1));
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

const PYTHON_PRODUCER: &str = r#"
import json, random, sys, time, ipaddress
from datetime import datetime
from confluent_kafka import Producer
broker, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
conf = {"bootstrap.servers": broker, "enable.idempotence": True, "acks": "all",
        "compression.type": "lz4", "linger.ms": 50, "batch.num.messages": 10000,
        "queue.buffering.max.messages": 500000}
if len(sys.argv) > 4 and sys.argv[4] == "mock":
    conf["test.mock.num.brokers"] = 1
p = Producer(conf)
rng = random.Random(42)
hosts = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(2000)]
ports = [443, 80, 22, 53, 8080, 3306, 5432, 6379]
start = time.time()
for i in range(n):
    rec = {"timestamp": datetime.utcnow().isoformat(), "source_ip": rng.choice(hosts),
           "destination_ip": rng.choice(hosts), "port": rng.choice(ports),
           "protocol": rng.choice(["TCP", "UDP", "ICMP"]), "bytes_sent": int(rng.lognormvariate(7, 1.5)),
           "bytes_received": int(rng.lognormvariate(8, 1.8)),
           "action": "DENY" if rng.random() < 0.05 else "ALLOW"}
    while True:
        try:
            p.produce(topic, key=rec["source_ip"], value=json.dumps(rec))
            break
        except BufferError:
            p.poll(0.001)
    p.poll(0)
p.flush(120)
print(n / (time.time() - start))
"#;

pub(super) fn python_produce(
    kafka: &KafkaArgs,
    topic: &str,
    n: u64,
    mock: bool,
) -> anyhow::Result<f64> {
    let python = crate::python_tool("confluent-kafka", "python")?;
    let out = Command::new(python)
        .args(["-c", PYTHON_PRODUCER, &kafka.brokers, topic, &n.to_string()])
        .args(mock.then_some("mock"))
        .output()
        .context("run the Python producer")?;
    if !out.status.success() {
        bail!(
            "Python producer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// Raw consume → produce pass-through: the reader's ceiling.
pub(super) fn raw_passthrough(
    kafka: &KafkaArgs,
    from: &str,
    to: &str,
    n: i64,
) -> anyhow::Result<f64> {
    // The stream-reader's consumer settings.
    let own: &[(&str, &str)] = &[
        ("group.id", "bench-passthrough"),
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "true"),
        ("fetch.wait.max.ms", "100"),
    ];
    let settings = [own, KafkaArgs::CONSUMER_MEMORY].concat();
    let consumer: BaseConsumer = kafka.config(&settings)?.create()?;
    consumer.subscribe(&[from])?;
    // The stream-reader's producer settings.
    let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
        kafka.producer_config(&[])?.create()?;
    let mut seen = 0;
    let mut start = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while seen < n && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            start.get_or_insert_with(Instant::now);
            let mut r =
                Some(BaseRecord::<[u8], [u8]>::to(to).payload(m.payload().unwrap_or_default()));
            if let Some(k) = m.key() {
                r = r.map(|r| r.key(k));
            }
            while let Some(rec) = r.take() {
                if let Err((_, rec)) = producer.send(rec) {
                    r = Some(rec);
                    producer.poll(Duration::from_millis(1));
                }
            }
            seen += 1;
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let start = start.context("the pass-through consumed nothing")?;
    Ok(seen as f64 / start.elapsed().as_secs_f64())
}

/// Raw concurrent prepared inserts of the same rows: the writer's ceiling.
pub(super) async fn raw_inserts(
    cql: &CassandraArgs,
    records: &[ValidatedRecord],
    concurrency: usize,
) -> anyhow::Result<f64> {
    let session = Arc::new(cql.connect().await?);
    let stmt = session
        .prepare(cassandra_writer::writer::insert_cql(&cql.keyspace))
        .await?;
    let start = Instant::now();
    let results: Vec<_> = futures::stream::iter(records.iter().map(|r| {
        let session = session.clone();
        let stmt = stmt.clone();
        async move {
            let v = cassandra_writer::writer::access_log_row(r);
            session.execute_unpaged(&stmt, v).await
        }
    }))
    .buffer_unordered(concurrency)
    .collect()
    .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if failed > 0 {
        bail!("{failed} raw inserts failed");
    }
    Ok(records.len() as f64 / start.elapsed().as_secs_f64())
}
