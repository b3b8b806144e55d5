//! Sending one dead letter to the DLQ topic, acknowledged, with the writer's retry policy: the
//! one place both the row writes ([`crate::write`]) and the alert hand-off
//! ([`crate::webhook`]) produce their dead letters through. Imports no other module of the
//! writer but [`crate::metrics`].

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use log_schema::ErrorKind;
use pipeline_runtime::{
    failure::{ProduceFailure, ReportedAt, classify_produce},
    telemetry::LogLimiter,
};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tracing::warn;

use crate::metrics::DEAD_LETTERS;

/// Where and how a dead letter is sent.
#[derive(Clone, Copy)]
pub(crate) struct Dlq<'a> {
    pub producer: &'a FutureProducer,
    /// The DLQ topic.
    pub topic: &'a str,
    /// The setting that names it, for errors.
    pub setting: &'static str,
    pub backoff: ExponentialBuilder,
    pub logs: &'a LogLimiter,
}

/// Produces `envelope` and waits for its acknowledgement, retrying what can succeed later.
/// An error means the dead letter can never be produced (the topic is missing, no permission,
/// the record refused): the caller stops without committing past its record.
pub(crate) async fn produce(
    dlq: Dlq<'_>,
    envelope: &[u8],
    key: Option<&[u8]>,
    kind: ErrorKind,
) -> anyhow::Result<()> {
    let Dlq {
        producer,
        topic,
        setting,
        backoff,
        logs,
    } = dlq;
    let send = || async {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(envelope);
        if let Some(k) = key {
            record = record.key(k);
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
    };
    let retriable = |e: &rdkafka::error::KafkaError| {
        classify_produce(e, topic, ReportedAt::Delivery) == ProduceFailure::Retriable
    };
    send.retry(backoff)
        .when(retriable)
        .notify(|error, _| {
            if let Some(suppressed) = logs.allow() {
                warn!(%error, suppressed, "dead-letter produce failed, retrying");
            }
        })
        .await
        .map_err(
            |e| match classify_produce(&e, topic, ReportedAt::Delivery) {
                ProduceFailure::Record(reason) | ProduceFailure::Environment(reason) => {
                    anyhow::anyhow!("cannot produce to `{topic}` ({setting}): {reason}")
                }
                ProduceFailure::Retriable => anyhow::Error::new(e)
                    .context(format!("cannot produce to `{topic}` ({setting})")),
            },
        )?;
    metrics::counter!(DEAD_LETTERS.name, "kind" => kind.as_str()).increment(1);
    Ok(())
}
