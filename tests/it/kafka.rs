//! The local broker speaks enough Kafka for the pipeline: produce, group consume, commit.

use std::time::Duration;

use rdkafka::{
    Message,
    consumer::{CommitMode, Consumer, StreamConsumer},
    producer::FutureRecord,
};

use crate::support::{self, DEADLINE};

#[tokio::test]
async fn consumer_group_receives_what_a_producer_sent() {
    let topic = support::unique("it_roundtrip");
    support::fresh_topics(&[&topic]).await;
    let producer = support::kafka().producer(&[]).expect("producer");
    let n = 200;
    for i in 0..n {
        let key = format!("10.0.0.{}", i % 7);
        let payload = format!("{{\"n\":{i}}}");
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
    }

    let group = support::unique("it_group");
    let consumer: StreamConsumer = support::kafka()
        .consumer(&group, rdkafka::consumer::DefaultConsumerContext, &[])
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut seen = std::collections::BTreeSet::new();
    let mut per_key_partition = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while seen.len() < n {
        let m = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} records arrived", seen.len()))
            .expect("message");
        let v: serde_json::Value =
            serde_json::from_slice(m.payload().expect("payload")).expect("json");
        seen.insert(v["n"].as_u64().expect("n"));
        let key = m.key().expect("key").to_vec();
        let p = *per_key_partition.entry(key).or_insert(m.partition());
        assert_eq!(p, m.partition(), "one key, one partition");
        consumer.store_offset_from_message(&m).expect("store");
    }
    assert_eq!(seen.len(), n);
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    assert_eq!(
        support::topic_size(&topic),
        n as i64,
        "high watermarks add up to what was sent"
    );
}
