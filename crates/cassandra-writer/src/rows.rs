//! What the writer writes: the prepared statements and the bound values of each table's rows.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use log_schema::ValidatedRecord;
use scylla::{client::session::Session, statement::prepared::PreparedStatement};

/// Span of event time one `access_logs` partition holds, per source IP (docs/data-model.md "Data model":
/// chosen from the measured row size so that a source at 5 % of 10,000 logs/s stays well under
/// Cassandra's 100 MB partition guidance).
pub const BUCKET_SECS: i64 = 600;

/// The `bucket` of an event at `t`: `t` floored to [`BUCKET_SECS`] since the epoch (UTC).
pub fn bucket(t: DateTime<Utc>) -> DateTime<Utc> {
    let ms = t.timestamp_millis();
    let width = BUCKET_SECS * 1_000;
    DateTime::from_timestamp_millis(ms - ms.rem_euclid(width)).unwrap_or(t)
}

/// The statement the writer binds every row to (keyspace from config, values bound).
pub fn insert_cql(keyspace: &str) -> String {
    format!(
        "INSERT INTO {keyspace}.access_logs (source_ip, bucket, timestamp, event_id, \
         destination_ip, port, protocol, bytes_sent, bytes_received, action, denied, created_at, ingested_at, total_bytes, \
         source_ip_class, destination_ip_class, service, source_country, source_city, \
         source_asn, source_as_org, destination_country, destination_city, destination_asn, \
         destination_as_org, source_threats, destination_threats) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
}

/// The prepared writes.
pub(crate) struct Statements {
    pub(crate) access_logs: PreparedStatement,
    pub(crate) stats_by_ip: PreparedStatement,
    pub(crate) top_talkers: PreparedStatement,
    pub(crate) top_by_country: PreparedStatement,
    pub(crate) top_by_asn: PreparedStatement,
    pub(crate) alerts: PreparedStatement,
    pub(crate) target_stats: PreparedStatement,
    pub(crate) top_targets: PreparedStatement,
    pub(crate) target_alerts: PreparedStatement,
}

impl Statements {
    pub(crate) async fn prepare(session: &Session, ks: &str) -> anyhow::Result<Self> {
        let prepare = |cql: String| async move {
            session
                .prepare(cql.clone())
                .await
                .with_context(|| format!("prepare {cql}"))
        };
        Ok(Self {
            access_logs: prepare(insert_cql(ks)).await?,
            stats_by_ip: prepare(format!(
                "INSERT INTO {ks}.ip_stats_by_ip (source_ip, day, window_start, window_end, events, \
                 bytes_sent, bytes_received, distinct_ports, distinct_destinations, denied, \
                 first_seen, last_seen, distinct_capped, sources_capped) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .await?,
            top_talkers: prepare(format!(
                "INSERT INTO {ks}.top_talkers_by_minute (window_start, events, source_ip, \
                 total_bytes, denied, distinct_ports, sources_capped) VALUES (?, ?, ?, ?, ?, ?, ?)"
            ))
            .await?,
            top_by_country: prepare(format!(
                "INSERT INTO {ks}.top_talkers_by_country_minute (window_start, country, events, \
                 source_ip, total_bytes, denied, asn, as_org) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .await?,
            top_by_asn: prepare(format!(
                "INSERT INTO {ks}.top_talkers_by_asn_minute (window_start, asn, events, \
                 source_ip, total_bytes, denied, as_org, country) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .await?,
            alerts: prepare(format!(
                "INSERT INTO {ks}.alerts (source_ip, day, window_start, alert_id, rule, \
                 window_end, value, threshold, summary, list) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .await?,
            target_stats: prepare(format!(
                "INSERT INTO {ks}.target_stats_by_ip (destination_ip, day, window_start, \
                 window_end, events, bytes_sent, bytes_received, distinct_sources, distinct_ports, \
                 denied, first_seen, last_seen, distinct_capped, targets_capped) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .await?,
            top_targets: prepare(format!(
                "INSERT INTO {ks}.top_targets_by_minute (window_start, events, destination_ip, \
                 distinct_sources, total_bytes, denied, targets_capped) VALUES (?, ?, ?, ?, ?, ?, ?)"
            ))
            .await?,
            target_alerts: prepare(format!(
                "INSERT INTO {ks}.target_alerts (destination_ip, day, window_start, alert_id, rule, \
                 window_end, value, threshold, summary, list) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .await?,
        })
    }
}

/// The bound values of [`insert_cql`] for a record (`created_at` = now), by column name.
#[derive(Debug, scylla::SerializeRow)]
pub struct AccessLogRow<'a> {
    source_ip: String,
    bucket: DateTime<Utc>,
    timestamp: DateTime<Utc>,
    event_id: uuid::Uuid,
    destination_ip: String,
    port: i32,
    protocol: &'a str,
    bytes_sent: i64,
    bytes_received: i64,
    action: &'a str,
    denied: bool,
    created_at: DateTime<Utc>,
    ingested_at: DateTime<Utc>,
    total_bytes: i64,
    source_ip_class: &'a str,
    destination_ip_class: &'a str,
    service: Unset<&'a str>,
    source_country: Unset<&'a str>,
    source_city: Unset<&'a str>,
    source_asn: Unset<i64>,
    source_as_org: Unset<&'a str>,
    destination_country: Unset<&'a str>,
    destination_city: Unset<&'a str>,
    destination_asn: Unset<i64>,
    destination_as_org: Unset<&'a str>,
    source_threats: Unset<&'a Vec<String>>,
    destination_threats: Unset<&'a Vec<String>>,
}

/// An absent value is left unset, not bound to null: a null would write a tombstone per
/// absent cell (nine per row without GeoIP databases).
type Unset<T> = scylla::value::MaybeUnset<T>;

/// A list of names, unset when empty (an empty set is a null: a tombstone).
fn unset_if_empty(names: &Vec<String>) -> Unset<&Vec<String>> {
    Unset::from_option((!names.is_empty()).then_some(names))
}

/// The row of `r` in `access_logs` (`created_at` = now).
pub fn access_log_row(r: &ValidatedRecord) -> AccessLogRow<'_> {
    let (s, d) = (r.source_geo.as_ref(), r.destination_geo.as_ref());
    AccessLogRow {
        source_ip: r.source_ip.to_string(),
        bucket: bucket(r.timestamp),
        timestamp: r.timestamp,
        event_id: r.event_id,
        destination_ip: r.destination_ip.to_string(),
        port: i32::from(r.port),
        protocol: r.protocol.as_str(),
        bytes_sent: r.bytes_sent,
        bytes_received: r.bytes_received,
        action: r.action.as_str(),
        denied: r.action.is_denied(),
        created_at: Utc::now(),
        ingested_at: r.ingested_at,
        total_bytes: r.total_bytes,
        source_ip_class: r.source_ip_class.as_str(),
        destination_ip_class: r.destination_ip_class.as_str(),
        service: Unset::from_option(r.service.as_deref()),
        source_country: Unset::from_option(s.and_then(|g| g.country.as_deref())),
        source_city: Unset::from_option(s.and_then(|g| g.city.as_deref())),
        source_asn: Unset::from_option(s.and_then(|g| g.asn).map(i64::from)),
        source_as_org: Unset::from_option(s.and_then(|g| g.as_org.as_deref())),
        destination_country: Unset::from_option(d.and_then(|g| g.country.as_deref())),
        destination_city: Unset::from_option(d.and_then(|g| g.city.as_deref())),
        destination_asn: Unset::from_option(d.and_then(|g| g.asn).map(i64::from)),
        destination_as_org: Unset::from_option(d.and_then(|g| g.as_org.as_deref())),
        source_threats: unset_if_empty(&r.source_threats),
        destination_threats: unset_if_empty(&r.destination_threats),
    }
}
