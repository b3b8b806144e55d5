//! Routing one record: validate it, send its output, and what a failed or refused output
//! becomes.

use std::sync::{Arc, atomic::Ordering::Relaxed};

use chrono::{DateTime, Utc};
use log_schema::{DeadLetter, ErrorKind, Origin, Redrive, SourceOffset, ValidationError, validate};
use pipeline_runtime::{
    failure::{ProduceFailure, ReportedAt, classify_produce},
    kafka::complete_and_store,
};
use tracing::warn;

use crate::metrics::{
    IN_FLIGHT, INVALID_RECORDS, OUTPUTS_REJECTED, PRODUCE_LATENCY_SECONDS, PRODUCE_RETRIES,
    RECORDS_CONSUMED, RECORDS_OUT,
};
use crate::outputs::{Landed, Out};

use super::{Owner, Reader};

impl Reader {
    /// Validates one record that reached Kafka at `arrived` and sends its output.
    pub(super) fn on_message(
        &mut self,
        partition: i32,
        offset: i64,
        payload: &[u8],
        key: Option<&[u8]>,
        identity: Option<Redrive>,
        arrived: DateTime<Utc>,
    ) {
        let topic = self.topics.input.clone();
        let origin = Origin {
            topic: &topic,
            partition,
            offset,
        };
        // A re-submitted record (redrive, replay) takes the identity of its original.
        let original = identity.as_ref().map_or(origin, |r| Origin {
            topic: &r.origin.topic,
            partition: r.origin.partition,
            offset: r.origin.offset,
        });
        // The record's own Kafka timestamp, not the wall clock, bounds its future skew and is
        // its `ingested_at`: a reprocessed record is judged exactly as the first time.
        let (outs, kind) = match validate(payload, &original, arrived, &self.limits) {
            Ok(mut record) => {
                if original.topic != origin.topic && record.source.is_none_or(|s| s.file.is_none())
                {
                    // The windows deduplicate by offsets of this topic, or by file line.
                    record.source = Some(SourceOffset {
                        partition,
                        offset,
                        file: None,
                    });
                }
                record.source_geo = self.geo.lookup(record.source_ip);
                record.destination_geo = self.geo.lookup(record.destination_ip);
                if self.threats.configured() {
                    let lists = self.threats.current();
                    record.source_threats = lists.names(lists.lookup(record.source_ip));
                    record.destination_threats = lists.names(lists.lookup(record.destination_ip));
                }
                let payload = record.to_json();
                let mut outs = Vec::with_capacity(2);
                if let Some(topic) = &self.topics.by_destination {
                    // The same bytes keyed by destination, for the destination windows.
                    outs.push(Out {
                        topic: topic.clone(),
                        key: Some(record.destination_ip.to_string().into_bytes()),
                        payload: payload.clone(),
                    });
                }
                outs.insert(
                    0,
                    Out {
                        topic: self.topics.validated.clone(),
                        key: Some(record.source_ip.to_string().into_bytes()),
                        payload,
                    },
                );
                (outs, None)
            }
            Err(error) => {
                let dl = DeadLetter::new(
                    &error,
                    payload,
                    &origin,
                    Utc::now(),
                    self.args.dlq_max_raw_bytes,
                )
                .redriven(identity);
                let out = Out {
                    topic: self.topics.dlq.clone(),
                    key: key.map(<[u8]>::to_vec),
                    payload: dl.to_json(),
                };
                (vec![out], Some(error.kind))
            }
        };
        self.stats.consumed.fetch_add(1, Relaxed);
        metrics::counter!(RECORDS_CONSUMED.name).increment(1);
        let paired = outs.len() == 2;
        match &mut self.batch {
            Some(batch) => {
                if let Err(error) = batch.begin() {
                    return self.transaction_failed(error);
                }
                batch.record(partition, offset);
            }
            None => self.tracker.lock().begin(&topic, partition, offset),
        }
        for (i, out) in outs.into_iter().enumerate() {
            let owner = Owner {
                partition,
                offset,
                kind,
                paired,
                copy: i == 1,
            };
            let refused = self
                .batch
                .as_mut()
                .and_then(|b| b.refused.get(&(partition, offset, owner.copy)).cloned());
            // Backpressure counts outputs: each finishes once.
            self.flow.started(&self.consumer);
            metrics::gauge!(IN_FLIGHT.name).set(self.flow.in_flight() as f64);
            match refused {
                // Kafka refused this output for good in an aborted transaction: send what the
                // at-least-once mode would have sent after the refusals.
                Some((reason, times)) => {
                    let mut next = Ok((out, owner));
                    for _ in 0..times {
                        next = next
                            .and_then(|(out, owner)| self.rejection(out, owner, reason.clone()));
                    }
                    match next {
                        Ok((out, owner)) => self.send(out, owner, 0),
                        Err(topic) => self.fail(&topic, &reason),
                    }
                }
                None => self.send(out, owner, 0),
            }
        }
    }

    /// The topic setting of an output topic, for error messages.
    pub(super) fn setting_of(&self, topic: &str) -> &'static str {
        let t = &self.topics;
        [
            (Some(&t.validated), "READER_VALIDATED_TOPIC"),
            (Some(&t.dlq), "READER_DLQ_TOPIC"),
            (t.by_destination.as_ref(), "READER_DESTINATION_TOPIC"),
        ]
        .into_iter()
        .find_map(|(name, setting)| name.is_some_and(|n| **n == *topic).then_some(setting))
        .unwrap_or("the topic settings")
    }

    /// A produce failed: retried, dead-lettered or fatal, by its class.
    pub(super) fn on_failed(
        &mut self,
        error: &rdkafka::error::KafkaError,
        out: Out,
        owner: Owner,
        attempt: u32,
        at: ReportedAt,
    ) {
        if let Some(batch) = &mut self.batch {
            // In a transaction a failed output is not sent again: the transaction aborts and
            // the record is processed again after the rollback.
            match classify_produce(error, &out.topic, at) {
                ProduceFailure::Environment(reason) => return self.fail(&out.topic, &reason),
                ProduceFailure::Record(reason) => {
                    let refused = batch
                        .refused
                        .entry((owner.partition, owner.offset, owner.copy))
                        .or_insert((reason.clone(), 0));
                    refused.1 += 1;
                    batch.doom(format!("output refused for good: {reason}"));
                }
                ProduceFailure::Retriable => batch.doom(error.to_string()),
            }
            self.flow.finished(&self.consumer);
            return;
        }
        match classify_produce(error, &out.topic, at) {
            ProduceFailure::Retriable => self.retry(error, out, owner, attempt),
            ProduceFailure::Record(reason) => self.reject(out, owner, reason),
            ProduceFailure::Environment(reason) => self.fail(&out.topic, &reason),
        }
    }

    /// Kafka refused `out` for good. A validated record becomes an `output_rejected` dead letter
    /// (its payload: the validated record, which can be redriven to the validated topic); a
    /// dead letter is sent again without its payload; anything else stops the service.
    pub(super) fn reject(&mut self, out: Out, owner: Owner, reason: String) {
        match self.rejection(out, owner, reason.clone()) {
            Ok((out, owner)) => self.send(out, owner, 0),
            Err(topic) => self.fail(&topic, &reason),
        }
    }

    /// The dead letter that replaces an output Kafka refused for good, or the refused topic
    /// when there is none (a dead letter already without payload).
    pub(super) fn rejection(
        &self,
        out: Out,
        owner: Owner,
        reason: String,
    ) -> Result<(Out, Owner), Arc<str>> {
        metrics::counter!(OUTPUTS_REJECTED.name).increment(1);
        if let Some(suppressed) = self.retry_log.allow() {
            warn!(topic = %out.topic, reason, suppressed, "output refused for good; dead-lettering it");
        }
        let dead_letter = match owner.kind {
            None => {
                let origin = Origin {
                    topic: &self.topics.input,
                    partition: owner.partition,
                    offset: owner.offset,
                };
                let error = ValidationError::output_rejected(reason);
                DeadLetter::new(
                    &error,
                    &out.payload,
                    &origin,
                    Utc::now(),
                    self.args.dlq_max_raw_bytes,
                )
            }
            Some(_) => match DeadLetter::from_json(&out.payload) {
                Ok(dl) if !dl.raw.is_empty() => dl.without_raw(),
                _ => return Err(out.topic),
            },
        };
        let owner = Owner {
            kind: Some(dead_letter.error.kind),
            ..owner
        };
        let out = Out {
            topic: self.topics.dlq.clone(),
            key: out.key,
            payload: dead_letter.to_json(),
        };
        Ok((out, owner))
    }

    /// No output to `topic` can succeed: stop the loop with an error naming the setting.
    pub(super) fn fail(&mut self, topic: &str, reason: &str) {
        if self.fatal.is_none() {
            let setting = self.setting_of(topic);
            self.fatal = Some(anyhow::anyhow!(
                "cannot produce to `{topic}` ({setting}): {reason}"
            ));
        }
    }

    /// Hands one output to librdkafka; a record librdkafka cannot take now (queue full) is
    /// classified like a failed delivery.
    pub(super) fn send(&mut self, out: Out, owner: Owner, attempt: u32) {
        if let Err((error, out, owner)) = self.outputs.send(out, owner, attempt) {
            self.on_failed(&error, out, owner, attempt, ReportedAt::Send);
        }
    }

    /// Schedules `out` to be sent again after the backoff delay of its `attempt`; from the
    /// third attempt on, its partition is reported as stalled.
    pub(super) fn retry(
        &mut self,
        error: &dyn std::fmt::Display,
        out: Out,
        owner: Owner,
        attempt: u32,
    ) {
        self.stats.retries.fetch_add(1, Relaxed);
        metrics::counter!(PRODUCE_RETRIES.name).increment(1);
        if attempt >= 2 {
            self.stalls.failing(
                format!("{}/{}", self.topics.input, owner.partition),
                format!(
                    "produce to `{}` failing ({} attempts): {error}",
                    out.topic,
                    attempt + 1
                ),
            );
        }
        let topic = out.topic.clone();
        let delay = self.outputs.retry_later(out, owner, attempt);
        if let Some(suppressed) = self.retry_log.allow() {
            warn!(%error, %topic, attempt, retry_in_ms = delay.as_millis() as u64, suppressed, "produce failed, retrying");
        }
    }

    /// A delivery report: finishes its record when acknowledged, otherwise retries it.
    pub(super) fn on_landed(&mut self, landed: Landed<Owner>) {
        let Landed {
            owner,
            attempt,
            sent_at,
            out,
            report,
        } = landed;
        match report {
            Ok(Ok(_)) => {
                metrics::histogram!(PRODUCE_LATENCY_SECONDS.name)
                    .record(sent_at.elapsed().as_secs_f64());
                if !self.stalls.is_clear() {
                    self.stalls
                        .recovered(&format!("{}/{}", self.topics.input, owner.partition));
                }
                self.on_done(owner);
            }
            Ok(Err((error, _))) => {
                self.on_failed(&error, out, owner, attempt, ReportedAt::Delivery);
            }
            Err(canceled) => {
                // librdkafka dropped the report (the message was never reported on): its
                // outcome is unknown, so it is a failed delivery, sent again.
                self.retry(
                    &format!("delivery report lost ({canceled})"),
                    out,
                    owner,
                    attempt,
                );
            }
        }
    }

    /// Bookkeeping once a record's output is acknowledged (both, for a paired record); stores
    /// the partition's new commit offset when its contiguous acknowledged progress advanced.
    pub(super) fn on_done(&mut self, owner: Owner) {
        self.flow.finished(&self.consumer);
        metrics::gauge!(IN_FLIGHT.name).set(self.flow.in_flight() as f64);
        let owner = if owner.paired {
            // One slot per output: the record finishes once both its validated output and its
            // copy landed (an output of an earlier read of the record, still retried after a
            // revocation, fills the same slot). Halves of a partition that left stay until
            // their other half lands, if ever: a few records per revocation.
            let key = (owner.partition, owner.offset);
            let slots = self.halves.entry(key).or_default();
            slots[usize::from(owner.copy)] = Some(owner);
            match *slots {
                // The record counts as what became of its validated output.
                [Some(validated), Some(_)] => {
                    self.halves.remove(&key);
                    validated
                }
                _ => return,
            }
        } else {
            owner
        };
        if self.batch.is_some() {
            self.uncommitted.push(owner.kind);
            return;
        }
        self.count_output(owner.kind);
        complete_and_store(
            &self.tracker,
            &self.consumer,
            &self.args.input_topic,
            owner.partition,
            owner.offset,
        );
    }

    /// Counts one output that is final (acknowledged, or committed in exactly-once mode).
    pub(super) fn count_output(&self, kind: Option<ErrorKind>) {
        match kind {
            None => {
                metrics::counter!(RECORDS_OUT.name, "output" => "validated").increment(1);
                self.stats.valid.fetch_add(1, Relaxed);
            }
            Some(kind) => {
                metrics::counter!(RECORDS_OUT.name, "output" => "dlq").increment(1);
                metrics::counter!(INVALID_RECORDS.name, "kind" => kind.as_str()).increment(1);
                self.stats.count_invalid(kind);
                self.stats.invalid.fetch_add(1, Relaxed);
            }
        }
    }
}
