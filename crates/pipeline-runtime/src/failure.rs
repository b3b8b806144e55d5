//! What a failed produce means, and what a consume loop does about it.
//!
//! Three classes, decided from librdkafka's error code:
//!
//! * **Retriable** — the broker is down, a leader is moving, the local queue is full, a request
//!   timed out: back off and send again, without limit.
//! * **Record** — this one record can never be accepted, whatever the broker's state: it is
//!   larger than the producer's `message.max.bytes` (librdkafka checks that when the record is
//!   handed over), or the broker rejected it as an invalid record. The service dead-letters it
//!   with the reason and continues.
//! * **Environment** — no record can succeed until an operator acts: the topic does not exist
//!   (and the broker does not create it), the client is not authorized, the configuration is
//!   invalid, the idempotent producer hit a fatal error, or the topic's `max.message.bytes` is
//!   below the producer's `message.max.bytes` (the broker checks whole batches, so this says
//!   nothing about one record). The service stops with an error that names the topic and the
//!   setting to fix, committing nothing past what it finished.
//!
//! [`Stalls`] reports partitions whose retriable failures go on, through `/readyz` and the
//! [`STALLED_PARTITIONS`] gauge (which the `PartitionStalled` alerting rule watches).

use std::collections::BTreeMap;

use rdkafka::{error::KafkaError, types::RDKafkaErrorCode};

use crate::{
    observe::Readiness,
    telemetry::{Metric, MetricKind},
};

/// Gauge: input partitions whose work keeps failing.
pub const STALLED_PARTITIONS: Metric = Metric {
    name: "stalled_partitions",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "Input partitions whose work keeps failing with retriable errors (readiness check `progress`)",
};

/// The metrics of [`Stalls`].
pub const METRICS: &[Metric] = &[STALLED_PARTITIONS];

/// The class of a failed produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProduceFailure {
    /// Send again after a backoff.
    Retriable,
    /// This record can never be accepted: dead-letter it (the reason says why).
    Record(String),
    /// Nothing can be produced until an operator acts: stop (the reason says what to fix).
    Environment(String),
}

/// Where a failure was reported: when the record was handed to librdkafka (its own checks), or
/// in a delivery report (the broker's answer, or a local timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportedAt {
    /// `send`/`send_result` returned the error.
    Send,
    /// The delivery report carried the error.
    Delivery,
}

/// Classifies a failed produce to `topic`.
pub fn classify_produce(error: &KafkaError, topic: &str, at: ReportedAt) -> ProduceFailure {
    use RDKafkaErrorCode as C;
    let Some(code) = error.rdkafka_error_code() else {
        return ProduceFailure::Retriable;
    };
    match code {
        C::MessageSizeTooLarge if at == ReportedAt::Send => ProduceFailure::Record(format!(
            "the record is larger than the producer's message.max.bytes ({error})"
        )),
        C::MessageSizeTooLarge | C::MessageBatchTooLarge => ProduceFailure::Environment(format!(
            "topic `{topic}` refuses batches the producer builds ({error}): its \
             max.message.bytes is below the producer's message.max.bytes; raise the topic's \
             max.message.bytes or lower message.max.bytes in KAFKA_OPTIONS"
        )),
        C::InvalidRecord | C::InvalidTimestamp => {
            ProduceFailure::Record(format!("topic `{topic}` rejected the record ({error})"))
        }
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition | C::UnknownTopicId => {
            ProduceFailure::Environment(format!(
                "topic `{topic}` does not exist ({error}): create it (see docker/kafka-init) or \
                 fix the topic setting"
            ))
        }
        C::InvalidTopic => ProduceFailure::Environment(format!(
            "`{topic}` is not a valid topic name ({error}): fix the topic setting"
        )),
        C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed => ProduceFailure::Environment(format!(
            "not authorized to produce to topic `{topic}` ({error}): grant WRITE on it to this \
             principal (KAFKA_SASL_USERNAME / the client certificate)"
        )),
        C::Authentication | C::SaslAuthenticationFailed => ProduceFailure::Environment(format!(
            "the broker refused this client's credentials ({error}): check KAFKA_SASL_* / \
             KAFKA_SSL_*"
        )),
        C::InvalidConfig | C::PolicyViolation | C::InvalidArgument | C::InvalidRequiredAcks => {
            ProduceFailure::Environment(format!(
                "producing to `{topic}` fails on configuration ({error}): check KAFKA_OPTIONS and \
                 the topic's configuration"
            ))
        }
        C::Fatal => ProduceFailure::Environment(format!(
            "the idempotent producer hit a fatal error ({error}); restart the service"
        )),
        _ => ProduceFailure::Retriable,
    }
}

/// Partitions whose work keeps failing with retriable errors, reported by the `progress`
/// readiness check (`/readyz` answers 503 with each partition and its last error).
#[derive(Debug)]
pub struct Stalls {
    readiness: Readiness,
    failing: BTreeMap<String, String>,
}

impl Stalls {
    /// Readiness check name.
    pub const CHECK: &'static str = "progress";

    /// Declares the `progress` check, passing.
    pub fn new(readiness: Readiness) -> Self {
        readiness.set(Self::CHECK, Ok(()));
        metrics::gauge!(STALLED_PARTITIONS.name).set(0.0);
        Self {
            readiness,
            failing: BTreeMap::new(),
        }
    }

    /// Work of `source` (e.g. `ip_logs/2`) failed again with `reason`.
    pub fn failing(&mut self, source: String, reason: String) {
        self.failing.insert(source, reason);
        self.publish();
    }

    /// Work of `source` succeeded: it no longer stalls.
    pub fn recovered(&mut self, source: &str) {
        if !self.failing.is_empty() && self.failing.remove(source).is_some() {
            self.publish();
        }
    }

    /// True when nothing stalls (cheap: call on every success).
    pub fn is_clear(&self) -> bool {
        self.failing.is_empty()
    }

    fn publish(&self) {
        metrics::gauge!(STALLED_PARTITIONS.name).set(self.failing.len() as f64);
        let state = if self.failing.is_empty() {
            Ok(())
        } else {
            Err(self
                .failing
                .iter()
                .map(|(source, reason)| format!("{source} stalled: {reason}"))
                .collect::<Vec<_>>()
                .join("; "))
        };
        self.readiness.set(Self::CHECK, state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn produce_error(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::MessageProduction(code)
    }

    #[test]
    fn classes() {
        use ProduceFailure as F;
        let class = |code, at| match classify_produce(&produce_error(code), "t", at) {
            F::Retriable => "retriable",
            F::Record(_) => "record",
            F::Environment(_) => "environment",
        };
        use RDKafkaErrorCode as C;
        use ReportedAt::{Delivery, Send};
        assert_eq!(class(C::QueueFull, Send), "retriable");
        assert_eq!(class(C::MessageTimedOut, Delivery), "retriable");
        assert_eq!(class(C::NotLeaderForPartition, Delivery), "retriable");
        assert_eq!(class(C::BrokerTransportFailure, Delivery), "retriable");
        assert_eq!(class(C::MessageSizeTooLarge, Send), "record");
        assert_eq!(class(C::MessageSizeTooLarge, Delivery), "environment");
        assert_eq!(class(C::InvalidRecord, Delivery), "record");
        assert_eq!(class(C::UnknownTopicOrPartition, Delivery), "environment");
        assert_eq!(class(C::UnknownTopic, Send), "environment");
        assert_eq!(class(C::TopicAuthorizationFailed, Delivery), "environment");
        assert_eq!(class(C::Fatal, Delivery), "environment");
        let F::Environment(reason) = classify_produce(
            &produce_error(C::UnknownTopicOrPartition),
            "ip_logs_validated",
            Delivery,
        ) else {
            panic!("environment");
        };
        assert!(
            reason.contains("`ip_logs_validated` does not exist"),
            "{reason}"
        );
    }

    #[test]
    fn stalls_fail_readiness_until_recovered() {
        let readiness = Readiness::default();
        let mut stalls = Stalls::new(readiness.clone());
        assert!(readiness.status().is_ok());
        stalls.failing("ip_logs/2".into(), "broker down".into());
        let status = readiness.status().expect_err("stalled");
        assert!(
            status.contains("ip_logs/2 stalled: broker down"),
            "{status}"
        );
        stalls.recovered("ip_logs/1");
        assert!(readiness.status().is_err());
        stalls.recovered("ip_logs/2");
        assert!(readiness.status().is_ok() && stalls.is_clear());
    }
}
