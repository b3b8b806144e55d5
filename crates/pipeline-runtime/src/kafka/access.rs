//! The start-up check of a service's Kafka access, before it consumes anything: the brokers
//! accept its TLS settings and credentials, its ACLs let it see every topic it uses and use
//! each of its consumer groups. A failure ends the service with one line naming the setting
//! to fix; brokers that do not answer at all are not a failure here (the service waits for
//! them as before, and its readiness says so).
//!
//! What it proves: every topic is described (a topic without any ACL for the user is refused
//! there) and every group's committed offsets can be read (which needs Describe on the group).
//! Not covered: an ACL that allows reading a topic but not writing it, or Describe without
//! Read (Kafka's metadata does not tell): the first produce or the group join is refused, and
//! the service stops before committing anything.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::bail;
use rdkafka::{
    ClientContext, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer, ConsumerContext},
    error::KafkaError,
    types::{RDKafkaErrorCode, RDKafkaRespErr},
};
use tracing::warn;

use super::KafkaArgs;

/// How long the check waits for the brokers to answer before it lets the service start
/// without it (and wait for them as it always did).
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// A consumer group a service uses, and the setting that names it.
#[derive(Debug, Clone, Copy)]
pub struct Group<'a> {
    /// The group id.
    pub id: &'a str,
    /// Its setting, e.g. `READER_GROUP_ID`.
    pub setting: &'static str,
}

/// Collects the client-level errors librdkafka reports (authentication, TLS).
#[derive(Debug, Default, Clone)]
struct Errors(Arc<Mutex<Vec<(RDKafkaErrorCode, String)>>>);

impl ClientContext for Errors {
    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(code) = error.rdkafka_error_code() {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((code, reason.to_owned()));
        }
    }
}

impl ConsumerContext for Errors {}

impl Errors {
    /// Serves `client`'s queue for a moment: librdkafka reports client-level errors through
    /// it.
    fn collect(client: &BaseConsumer<Errors>) {
        for _ in 0..5 {
            let _ = client.poll(Duration::from_millis(50));
        }
    }

    /// Whether the group coordinator refused the group.
    fn group_denied(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|(code, _)| *code == RDKafkaErrorCode::GroupAuthorizationFailed)
    }

    /// The first authentication or TLS failure reported, as the error the service ends with.
    fn fatal(&self, args: &KafkaArgs) -> Option<anyhow::Error> {
        let errors = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        errors.iter().find_map(|(code, reason)| match code {
            RDKafkaErrorCode::Authentication => Some(anyhow::anyhow!(
                "Kafka rejected the credentials of user `{}` (KAFKA_SASL_USERNAME, \
                 KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE, KAFKA_SASL_MECHANISM): {reason}",
                args.sasl_username.as_deref().unwrap_or("")
            )),
            RDKafkaErrorCode::SSL => Some(anyhow::anyhow!(
                "the TLS handshake with the Kafka brokers failed (KAFKA_SSL_CA_LOCATION must \
                 hold the CA that signed the brokers' certificates; KAFKA_SECURITY_PROTOCOL \
                 must match the listener): {reason}"
            )),
            _ => None,
        })
    }
}

/// Checks that the brokers accept this client and that its ACLs allow it `topics` and
/// `groups`. Blocks (call it off the async workers, e.g. with [`crate::run_blocking`]).
pub fn check(args: &KafkaArgs, topics: &[&str], groups: &[Group<'_>]) -> anyhow::Result<()> {
    let user = args.sasl_username.as_deref().unwrap_or("ANONYMOUS");
    let errors = Errors::default();
    let client: BaseConsumer<Errors> = args
        .config(&[
            ("group.id", "access-check"),
            ("allow.auto.create.topics", "false"),
        ])?
        .create_with_context(errors.clone())?;
    let started = Instant::now();
    let mut first_partitions = Vec::new();
    for topic in topics {
        let metadata = loop {
            match client.fetch_metadata(Some(topic), Duration::from_secs(2)) {
                Ok(m) => break m,
                Err(e) => {
                    Errors::collect(&client);
                    if let Some(fatal) = errors.fatal(args) {
                        return Err(fatal);
                    }
                    if started.elapsed() > ANSWER_WITHIN {
                        warn!(error = %e, "the Kafka brokers do not answer: access not checked");
                        return Ok(());
                    }
                }
            }
        };
        let Some(t) = metadata.topics().first() else {
            bail!("the brokers returned no metadata for topic `{topic}`");
        };
        match t.error() {
            None => {}
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) => bail!(
                "Kafka's ACLs do not let user `{user}` use topic `{topic}` (KAFKA_SASL_USERNAME): \
                 allow it Read or Write, and Describe, on the topic"
            ),
            // A missing topic is the service's own concern (it reports it as before).
            Some(_) => {}
        }
        if let Some(p) = t.partitions().first() {
            first_partitions.push((topic.to_string(), p.id()));
        }
    }
    let Some((topic, partition)) = first_partitions.first() else {
        return Ok(());
    };
    for group in groups {
        let group_errors = Errors::default();
        let probe: BaseConsumer<Errors> = args
            .config(&[("group.id", group.id)])?
            .create_with_context(group_errors.clone())?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, *partition, Offset::Invalid)?;
        let result = probe.committed_offsets(tpl, Duration::from_secs(10));
        Errors::collect(&probe);
        let denied = group_errors.group_denied()
            || matches!(
                result,
                Err(KafkaError::OffsetFetch(
                    RDKafkaErrorCode::GroupAuthorizationFailed
                ))
            );
        if denied {
            bail!(
                "Kafka's ACLs do not let user `{user}` use consumer group `{}` ({}): allow it \
                 Read on the group",
                group.id,
                group.setting
            );
        }
        if let Err(e) = result {
            if let Some(fatal) = group_errors.fatal(args) {
                return Err(fatal);
            }
            warn!(error = %e, group = group.id, "cannot check access to the consumer group");
        }
    }
    Ok(())
}
