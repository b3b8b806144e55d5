//! What the writer does with one record: decode it, write its row (or dead-letter it).

use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use chrono::{DateTime, Utc};
use log_schema::{
    Alert, DeadLetter, Origin, TargetStats, ValidatedRecord, ValidationError, WindowStats,
};
use pipeline_runtime::observe;
use pipeline_runtime::transaction::Delivery;
use scylla::statement::prepared::PreparedStatement;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    config::WriterArgs,
    dead_letter::Dlq,
    execute::{WriteError, execute},
    metrics::E2E_LATENCY_SECONDS,
    rows::access_log_row,
    shared::{Deferred, Outcome, Shared},
};

/// A decoded record of one of the writer's input topics.
enum Input {
    Log(Box<ValidatedRecord>),
    Stats(Box<WindowStats>),
    Target(Box<TargetStats>),
    Alert(Box<Alert>),
}

fn decode(args: &WriterArgs, topic: &str, payload: &[u8]) -> Result<Input, ValidationError> {
    if topic == args.stats_topic {
        WindowStats::from_json(payload).map(|s| Input::Stats(Box::new(s)))
    } else if topic == args.target_stats_topic {
        TargetStats::from_json(payload).map(|s| Input::Target(Box::new(s)))
    } else if topic == args.alerts_topic {
        Alert::from_json(payload).map(|a| Input::Alert(Box::new(a)))
    } else {
        ValidatedRecord::from_json(payload).map(|r| Input::Log(Box::new(r)))
    }
}

pub(crate) async fn handle(
    shared: &Shared,
    payload: &[u8],
    key: Option<&[u8]>,
    origin: &Origin<'_>,
) -> anyhow::Result<Outcome> {
    let input = match decode(&shared.args, origin.topic, payload) {
        Ok(input) => input,
        Err(error) => {
            if let Some(suppressed) = shared.logs.allow() {
                warn!(%error, topic = origin.topic, partition = origin.partition, offset = origin.offset, suppressed, "cannot decode record");
            }
            let deferred = dead_letter(shared, &error, payload, key, origin).await?;
            return Ok(Outcome::DeadLettered(deferred));
        }
    };
    // Named (`topic/partition`) only when its writes stall: no allocation per record.
    let source = (origin.topic, origin.partition);
    let result = match &input {
        Input::Log(r) => write_log(shared, r, source).await,
        Input::Stats(w) => {
            let day = w.window_start.date_naive();
            let by_ip = (
                w.source_ip.to_string(),
                day,
                w.window_start,
                w.window_end,
                w.events,
                w.bytes_sent,
                w.bytes_received,
                w.distinct_ports,
                w.distinct_destinations,
                w.denied,
                w.first_seen,
                w.last_seen,
                w.distinct_capped,
                w.sources_capped,
            );
            let total = w.bytes_sent.saturating_add(w.bytes_received);
            let top = (
                w.window_start,
                w.events,
                w.source_ip.to_string(),
                total,
                w.denied,
                w.distinct_ports,
                w.sources_capped,
            );
            let geo = w.source_geo.clone().unwrap_or_default();
            let asn = geo.asn.map(i64::from);
            let by_country = geo.country.as_deref().map(|country| {
                (
                    w.window_start,
                    country,
                    w.events,
                    w.source_ip.to_string(),
                    total,
                    w.denied,
                    asn,
                    geo.as_org.as_deref(),
                )
            });
            let by_asn = asn.map(|asn| {
                (
                    w.window_start,
                    asn,
                    w.events,
                    w.source_ip.to_string(),
                    total,
                    w.denied,
                    geo.as_org.as_deref(),
                    geo.country.as_deref(),
                )
            });
            let (a, b, c, d) = tokio::join!(
                execute(
                    shared,
                    &shared.statements.stats_by_ip,
                    &by_ip,
                    ("ip_stats_by_ip", source)
                ),
                execute(
                    shared,
                    &shared.statements.top_talkers,
                    &top,
                    ("top_talkers_by_minute", source)
                ),
                async {
                    match &by_country {
                        Some(row) => {
                            execute(
                                shared,
                                &shared.statements.top_by_country,
                                row,
                                ("top_talkers_by_country_minute", source),
                            )
                            .await
                        }
                        None => Ok(()),
                    }
                },
                async {
                    match &by_asn {
                        Some(row) => {
                            execute(
                                shared,
                                &shared.statements.top_by_asn,
                                row,
                                ("top_talkers_by_asn_minute", source),
                            )
                            .await
                        }
                        None => Ok(()),
                    }
                },
            );
            a.and(b).and(c).and(d)
        }
        Input::Target(t) => {
            let by_ip = (
                t.destination_ip.to_string(),
                t.window_start.date_naive(),
                t.window_start,
                t.window_end,
                t.events,
                t.bytes_sent,
                t.bytes_received,
                t.distinct_sources,
                t.distinct_ports,
                t.denied,
                t.first_seen,
                t.last_seen,
                t.distinct_capped,
                t.targets_capped,
            );
            let top = (
                t.window_start,
                t.events,
                t.destination_ip.to_string(),
                t.distinct_sources,
                t.bytes_sent.saturating_add(t.bytes_received),
                t.denied,
                t.targets_capped,
            );
            let (a, b) = tokio::join!(
                execute(
                    shared,
                    &shared.statements.target_stats,
                    &by_ip,
                    ("target_stats_by_ip", source)
                ),
                execute(
                    shared,
                    &shared.statements.top_targets,
                    &top,
                    ("top_targets_by_minute", source)
                ),
            );
            a.and(b)
        }
        Input::Alert(a) => {
            let (address, statement, table) = match (a.source_ip, a.destination_ip) {
                (Some(ip), _) => (ip, &shared.statements.alerts, "alerts"),
                (None, ip) => (
                    ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()),
                    &shared.statements.target_alerts,
                    "target_alerts",
                ),
            };
            let row = (
                address.to_string(),
                a.window_start.date_naive(),
                a.window_start,
                a.alert_id,
                a.rule.as_str(),
                a.window_end,
                a.value,
                a.threshold,
                a.summary.as_str(),
                scylla::value::MaybeUnset::from_option(a.list.as_deref()),
            );
            execute(shared, statement, &row, (table, source)).await
        }
    };
    match result {
        Ok(()) => Ok(Outcome::Written),
        Err(WriteError::Rejected(message)) => {
            let error = ValidationError::write_rejected(message);
            if let Some(suppressed) = shared.logs.allow() {
                warn!(%error, topic = origin.topic, partition = origin.partition, offset = origin.offset, suppressed, "row rejected by Cassandra");
            }
            let deferred = dead_letter(shared, &error, payload, key, origin).await?;
            Ok(Outcome::DeadLettered(deferred))
        }
        Err(WriteError::GaveUp(e)) => {
            Err(anyhow::Error::new(*e).context("write failed after all retries"))
        }
        Err(WriteError::Refused(table, e)) => Err(anyhow::Error::new(*e).context(format!(
            "Cassandra refuses this user's writes to `{}.{table}`: grant MODIFY on the keyspace \
             or fix CASSANDRA_USERNAME / CASSANDRA_PASSWORD",
            shared.args.cassandra.keyspace
        ))),
    }
}

async fn write_log(
    shared: &Shared,
    r: &ValidatedRecord,
    source: (&str, i32),
) -> Result<(), WriteError> {
    let values = access_log_row(r);
    execute(
        shared,
        &shared.statements.access_logs,
        &values,
        ("access_logs", source),
    )
    .await?;
    shared.stats.written.fetch_add(1, Relaxed);
    let e2e = (Utc::now() - r.timestamp).to_std().unwrap_or_default();
    metrics::histogram!(E2E_LATENCY_SECONDS.name).record(e2e.as_secs_f64());
    Ok(())
}

async fn dead_letter(
    shared: &Shared,
    error: &ValidationError,
    payload: &[u8],
    key: Option<&[u8]>,
    origin: &Origin<'_>,
) -> anyhow::Result<Option<Deferred>> {
    let dead_letter = DeadLetter::new(
        error,
        payload,
        origin,
        failed_at(),
        shared.args.dlq_max_raw_bytes,
    );
    let mut envelope = dead_letter.to_json();
    if envelope.len() > shared.dlq_max_envelope {
        // The DLQ topic would refuse it: the payload stays on the input topic at `origin`.
        envelope = dead_letter.without_raw().to_json();
    }
    if shared.args.delivery == Delivery::ExactlyOnce {
        return Ok(Some(Deferred {
            envelope,
            key: key.map(<[u8]>::to_vec),
            kind: error.kind,
        }));
    }
    let producer = shared.producer.get();
    let dlq = Dlq {
        producer: &producer,
        topic: &shared.args.dlq_topic,
        setting: "WRITER_DLQ_TOPIC",
        backoff: shared.args.backoff(),
        logs: &shared.logs,
    };
    crate::dead_letter::produce(dlq, &envelope, key, error.kind).await?;
    shared.stats.dead_lettered.fetch_add(1, Relaxed);
    Ok(None)
}

fn failed_at() -> DateTime<Utc> {
    Utc::now()
}

/// Readiness of Cassandra, independent of traffic: a cheap read every 2 s.
pub(crate) async fn probe_cassandra(
    shared: Arc<Shared>,
    probe: PreparedStatement,
    readiness: observe::Readiness,
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {
                let state = match tokio::time::timeout(Duration::from_secs(2), shared.session.execute_unpaged(&probe, &[])).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("probe failed: {e}")),
                    Err(_) => Err("probe timed out".to_owned()),
                };
                readiness.set("cassandra", state);
            }
        }
    }
}
