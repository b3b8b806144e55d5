//! Strict validation and enrichment of raw records.

use std::{borrow::Cow, net::IpAddr, time::Duration};

use chrono::{DateTime, SubsecRound, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::{
    enrich::{IpClass, service_name},
    error::{ErrorKind, ValidationError},
    record::{Action, SourceOffset, ValidatedRecord, parse_timestamp},
};

/// Namespace of the UUIDv5 event ids derived from Kafka coordinates.
pub const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c0f_52a8_3e1d_4b8e_9a57_2f4d_1c3b_9e01);

/// Where a record came from: its Kafka coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
}

impl Origin<'_> {
    /// The deterministic UUIDv5 of `topic/partition/offset`.
    pub fn event_id(&self) -> Uuid {
        let name = format!("{}/{}/{}", self.topic, self.partition, self.offset);
        Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes())
    }
}

/// Limits of the validator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted payload in bytes (default 64 KiB).
    pub max_record_bytes: usize,
    /// How far ahead of processing time an event timestamp may lie (default 5 min).
    pub max_future_skew: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_record_bytes: 64 * 1024,
            max_future_skew: Duration::from_secs(300),
        }
    }
}

/// The eight fields plus the optional `event_id`, borrowed from the payload. Unknown fields are
/// ignored (duplicates of unknown keys too); a duplicate of one of these keys is a syntax error
/// (serde rejects it); `null` reads as absent.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow)]
    source_ip: Option<&'a RawValue>,
    #[serde(borrow)]
    destination_ip: Option<&'a RawValue>,
    #[serde(borrow)]
    port: Option<&'a RawValue>,
    #[serde(borrow)]
    protocol: Option<&'a RawValue>,
    #[serde(borrow)]
    bytes_sent: Option<&'a RawValue>,
    #[serde(borrow)]
    bytes_received: Option<&'a RawValue>,
    #[serde(borrow)]
    action: Option<&'a RawValue>,
    #[serde(borrow)]
    event_id: Option<&'a RawValue>,
}

/// Validates and enriches one payload.
///
/// `now` is when the record reached Kafka (the stream-reader passes the raw record's Kafka
/// timestamp, so a reprocessed record is judged the same): it bounds the future skew and
/// becomes `ingested_at`.
/// Never panics, whatever the bytes.
pub fn validate(
    payload: &[u8],
    origin: &Origin<'_>,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<ValidatedRecord, ValidationError> {
    if payload.len() > limits.max_record_bytes {
        return Err(ValidationError::new(
            ErrorKind::TooLarge,
            None,
            format!(
                "payload is {} bytes, the limit is {} bytes",
                payload.len(),
                limits.max_record_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(payload).map_err(|e| {
        ValidationError::new(
            ErrorKind::NotUtf8,
            None,
            format!("payload is not UTF-8: {e}"),
        )
    })?;
    let fields = parse_object(text)?;

    let timestamp_raw = required(fields.timestamp, "timestamp")?;
    let timestamp_text = string(timestamp_raw, "timestamp")?;
    let timestamp = parse_timestamp(&timestamp_text)
        .ok_or_else(|| {
            ValidationError::field(
                ErrorKind::InvalidTimestamp,
                "timestamp",
                format!(
                    "{:?} is neither RFC 3339 nor YYYY-MM-DDTHH:MM:SS[.ffffff]",
                    truncate(&timestamp_text)
                ),
            )
        })?
        .trunc_subsecs(6);
    let skew = chrono::Duration::from_std(limits.max_future_skew).unwrap_or(chrono::Duration::MAX);
    if now
        .checked_add_signed(skew)
        .is_some_and(|latest| timestamp > latest)
    {
        return Err(ValidationError::field(
            ErrorKind::TimestampInFuture,
            "timestamp",
            format!(
                "{timestamp_text:?} is more than {}s ahead of processing time",
                limits.max_future_skew.as_secs()
            ),
        ));
    }

    let source_ip = ip(required(fields.source_ip, "source_ip")?, "source_ip")?;
    let destination_ip = ip(
        required(fields.destination_ip, "destination_ip")?,
        "destination_ip",
    )?;
    let port = integer(
        required(fields.port, "port")?,
        "port",
        65_535,
        ErrorKind::PortOutOfRange,
    )?;
    let protocol = protocol(required(fields.protocol, "protocol")?)?;
    let bytes_sent = integer(
        required(fields.bytes_sent, "bytes_sent")?,
        "bytes_sent",
        i64::MAX as i128,
        ErrorKind::BytesOutOfRange,
    )?;
    let bytes_received = integer(
        required(fields.bytes_received, "bytes_received")?,
        "bytes_received",
        i64::MAX as i128,
        ErrorKind::BytesOutOfRange,
    )?;
    let action_text = string(required(fields.action, "action")?, "action")?;
    let action: Action = action_text.parse().map_err(|()| {
        ValidationError::field(
            ErrorKind::InvalidAction,
            "action",
            format!(
                "{:?} is not one of ALLOW, DENY, DROP, REJECT",
                truncate(&action_text)
            ),
        )
    })?;

    let event_id = fields
        .event_id
        .and_then(|raw| serde_json::from_str::<Cow<'_, str>>(raw.get()).ok())
        .and_then(|s| Uuid::parse_str(&s).ok())
        .unwrap_or_else(|| origin.event_id());

    // The range checks above make these conversions lossless.
    let port = port as u16;
    let bytes_sent = bytes_sent as i64;
    let bytes_received = bytes_received as i64;
    let service = service_name(&protocol, port).map(str::to_owned);
    Ok(ValidatedRecord {
        event_id,
        timestamp,
        source_ip,
        destination_ip,
        port,
        protocol,
        bytes_sent,
        bytes_received,
        action,
        total_bytes: bytes_sent.saturating_add(bytes_received),
        source_ip_class: IpClass::of(source_ip),
        destination_ip_class: IpClass::of(destination_ip),
        service,
        ingested_at: now.trunc_subsecs(6),
        source_geo: None,
        destination_geo: None,
        source_threats: Vec::new(),
        destination_threats: Vec::new(),
        source: Some(SourceOffset {
            partition: origin.partition,
            offset: origin.offset,
            file: crate::FileFingerprint::from_origin_topic(origin.topic),
        }),
    })
}

fn parse_object(text: &str) -> Result<Fields<'_>, ValidationError> {
    let trimmed = text.trim_start_matches([' ', '\t', '\n', '\r']);
    if !trimmed.starts_with('{') {
        if trimmed.is_empty() {
            return Err(ValidationError::new(
                ErrorKind::MalformedJson,
                None,
                "payload is empty",
            ));
        }
        return match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => Err(ValidationError::new(
                ErrorKind::NotObject,
                None,
                format!("payload is JSON {}, not an object", json_type(trimmed)),
            )),
            Err(e) => Err(malformed(&e)),
        };
    }
    serde_json::from_str::<Fields<'_>>(text).map_err(|e| malformed(&e))
}

fn malformed(e: &serde_json::Error) -> ValidationError {
    ValidationError::new(
        ErrorKind::MalformedJson,
        None,
        format!("payload is not valid JSON: {e}"),
    )
}

fn required<'a>(
    raw: Option<&'a RawValue>,
    field: &'static str,
) -> Result<&'a RawValue, ValidationError> {
    raw.ok_or_else(|| {
        ValidationError::field(
            ErrorKind::MissingField,
            field,
            "required field is missing or null",
        )
    })
}

fn json_type(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'"') => "string",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        Some(b'[') => "array",
        Some(b'{') => "object",
        _ => "number",
    }
}

fn string<'a>(raw: &'a RawValue, field: &'static str) -> Result<Cow<'a, str>, ValidationError> {
    let text = raw.get();
    if !text.starts_with('"') {
        return Err(ValidationError::field(
            ErrorKind::InvalidType,
            field,
            format!("expected a string, found a {}", json_type(text)),
        ));
    }
    // Borrow when there are no escapes, allocate only when there are.
    if let Ok(s) = serde_json::from_str::<&str>(text) {
        return Ok(Cow::Borrowed(s));
    }
    serde_json::from_str::<String>(text)
        .map(Cow::Owned)
        .map_err(|e| ValidationError::field(ErrorKind::InvalidType, field, e.to_string()))
}

fn integer(
    raw: &RawValue,
    field: &'static str,
    max: i128,
    range_kind: ErrorKind,
) -> Result<i128, ValidationError> {
    let text = raw.get();
    let kind = json_type(text);
    if kind != "number" {
        return Err(ValidationError::field(
            ErrorKind::InvalidType,
            field,
            format!("expected an integer, found a {kind}"),
        ));
    }
    if text.contains(['.', 'e', 'E']) {
        return Err(ValidationError::field(
            ErrorKind::InvalidType,
            field,
            format!("expected an integer, found {}", truncate(text)),
        ));
    }
    match text.parse::<i128>() {
        Ok(v) if (0..=max).contains(&v) => Ok(v),
        _ => Err(ValidationError::field(
            range_kind,
            field,
            format!("{} is outside 0..={max}", truncate(text)),
        )),
    }
}

fn ip(raw: &RawValue, field: &'static str) -> Result<IpAddr, ValidationError> {
    let text = string(raw, field)?;
    text.parse::<IpAddr>().map_err(|_| {
        ValidationError::field(
            ErrorKind::InvalidIp,
            field,
            format!("{:?} is not an IPv4 or IPv6 address", truncate(&text)),
        )
    })
}

fn protocol(raw: &RawValue) -> Result<String, ValidationError> {
    let text = string(raw, "protocol")?;
    let ok = (1..=16).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !ok {
        return Err(ValidationError::field(
            ErrorKind::InvalidProtocol,
            "protocol",
            format!(
                "{:?} is not 1-16 characters of [A-Za-z0-9-]",
                truncate(&text)
            ),
        ));
    }
    Ok(text.to_ascii_uppercase())
}

/// Keeps error messages short whatever the input: at most 64 characters of it.
fn truncate(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(64) {
        Some((i, _)) => Cow::Owned(format!("{}…", &s[..i])),
        None => Cow::Borrowed(s),
    }
}
