//! Re-submission of records: an idempotent `acks=all` producer, rate-limited, with a bounded
//! number of deliveries awaited at once; every failed delivery is counted and reported.

use futures::{StreamExt as _, stream::FuturesUnordered};
use governor::DefaultDirectRateLimiter;
use pipeline_runtime::kafka::KafkaArgs;
use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    producer::{DeliveryFuture, FutureProducer, FutureRecord},
};

/// Deliveries awaited at once.
const WINDOW: usize = 10_000;

/// Sends records and keeps count of their deliveries.
pub(crate) struct Sender {
    producer: FutureProducer,
    limiter: Option<DefaultDirectRateLimiter>,
    pending: FuturesUnordered<DeliveryFuture>,
    /// Records delivered.
    pub delivered: u64,
    /// Records Kafka refused (after the producer's own retries).
    pub failed: u64,
    /// Bytes of the payloads sent.
    pub bytes: u64,
    /// The first failure, for the summary.
    pub first_error: Option<String>,
}

impl Sender {
    /// A sender with `kafka`'s producer settings, at most `rate` records/s (0 = unlimited).
    pub fn new(kafka: &KafkaArgs, rate: u32) -> anyhow::Result<Self> {
        Ok(Self {
            producer: kafka.producer(&[])?,
            limiter: super::limiter(rate),
            pending: FuturesUnordered::new(),
            delivered: 0,
            failed: 0,
            bytes: 0,
            first_error: None,
        })
    }

    /// Queues one record (waiting for the rate limiter, or for deliveries when the producer's
    /// queue is full).
    pub async fn send(&mut self, mut record: FutureRecord<'_, [u8], [u8]>) -> anyhow::Result<()> {
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        let size = record.payload.map_or(0, <[u8]>::len) as u64;
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    self.pending.push(delivery);
                    self.bytes += size;
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    if !self.settle_one().await {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
        if self.pending.len() >= WINDOW {
            self.settle_one().await;
        }
        Ok(())
    }

    /// Waits for every queued record's delivery.
    pub async fn settle(&mut self) {
        while self.settle_one().await {}
    }

    async fn settle_one(&mut self) -> bool {
        let Some(outcome) = self.pending.next().await else {
            return false;
        };
        match outcome {
            Ok(Ok(_)) => self.delivered += 1,
            Ok(Err((error, _))) => self.fail(error.to_string()),
            Err(_) => self.fail("the producer was dropped".into()),
        }
        true
    }

    fn fail(&mut self, error: String) {
        self.failed += 1;
        self.first_error.get_or_insert(error);
    }
}
