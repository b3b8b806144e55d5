//! The documented error type of the contract.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a record was rejected. The snake_case names (`as_str`, serde) are stable: they appear in
/// the dead-letter topic, in metrics labels and in dashboards, so a variant is never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The payload is not valid UTF-8.
    NotUtf8,
    /// The payload is not syntactically valid JSON (this includes duplicate keys and nesting
    /// deeper than the parser's recursion limit).
    MalformedJson,
    /// The payload is JSON, but not an object.
    NotObject,
    /// The payload is larger than `max_record_bytes`.
    TooLarge,
    /// One of the eight required fields is absent or `null`.
    MissingField,
    /// A field holds a JSON value of the wrong type (for example a string where an integer
    /// belongs, or `8080.0` for a port).
    InvalidType,
    /// `source_ip` or `destination_ip` is not an IPv4 or IPv6 address.
    InvalidIp,
    /// `port` is an integer outside `0..=65535`.
    PortOutOfRange,
    /// `bytes_sent` or `bytes_received` is an integer outside `0..=i64::MAX`.
    BytesOutOfRange,
    /// `timestamp` is not RFC 3339 nor the naive ISO form `YYYY-MM-DDTHH:MM:SS[.ffffff]`.
    InvalidTimestamp,
    /// `timestamp` lies more than `max_future_skew` ahead of the processing time.
    TimestampInFuture,
    /// `protocol` is not 1–16 characters of `[A-Za-z0-9-]`.
    InvalidProtocol,
    /// `action` is not one of ALLOW, DENY, DROP, REJECT (case-insensitive).
    InvalidAction,
    /// Cassandra rejected the row as invalid (a non-retryable write error).
    WriteRejected,
    /// Kafka refused the stream-reader's output for this record for good (larger than the
    /// producer's `message.max.bytes`, or rejected by the broker as an invalid record).
    OutputRejected,
    /// The writer's alert hand-off could not deliver the alert to its webhook: the webhook
    /// refused it, or kept failing for `WRITER_WEBHOOK_MAX_ATTEMPTS` calls.
    AlertUndelivered,
}

impl ErrorKind {
    /// Every kind, in declaration order (for metrics pre-registration and tests).
    pub const ALL: [ErrorKind; 16] = [
        ErrorKind::NotUtf8,
        ErrorKind::MalformedJson,
        ErrorKind::NotObject,
        ErrorKind::TooLarge,
        ErrorKind::MissingField,
        ErrorKind::InvalidType,
        ErrorKind::InvalidIp,
        ErrorKind::PortOutOfRange,
        ErrorKind::BytesOutOfRange,
        ErrorKind::InvalidTimestamp,
        ErrorKind::TimestampInFuture,
        ErrorKind::InvalidProtocol,
        ErrorKind::InvalidAction,
        ErrorKind::WriteRejected,
        ErrorKind::OutputRejected,
        ErrorKind::AlertUndelivered,
    ];

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotUtf8 => "not_utf8",
            ErrorKind::MalformedJson => "malformed_json",
            ErrorKind::NotObject => "not_object",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::MissingField => "missing_field",
            ErrorKind::InvalidType => "invalid_type",
            ErrorKind::InvalidIp => "invalid_ip",
            ErrorKind::PortOutOfRange => "port_out_of_range",
            ErrorKind::BytesOutOfRange => "bytes_out_of_range",
            ErrorKind::InvalidTimestamp => "invalid_timestamp",
            ErrorKind::TimestampInFuture => "timestamp_in_future",
            ErrorKind::InvalidProtocol => "invalid_protocol",
            ErrorKind::InvalidAction => "invalid_action",
            ErrorKind::WriteRejected => "write_rejected",
            ErrorKind::OutputRejected => "output_rejected",
            ErrorKind::AlertUndelivered => "alert_undelivered",
        }
    }

    /// True for the kinds the validator gives a record; false for the kinds a delivery failure
    /// gives (`write_rejected`, `output_rejected`, `alert_undelivered`).
    pub fn is_validation(self) -> bool {
        !matches!(
            self,
            ErrorKind::WriteRejected | ErrorKind::OutputRejected | ErrorKind::AlertUndelivered
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected record: what is wrong, in which field, and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}{}: {message}", field.map(|f| format!(" in `{f}`")).unwrap_or_default())]
pub struct ValidationError {
    /// The machine-readable reason.
    pub kind: ErrorKind,
    /// The offending field, where there is one.
    pub field: Option<&'static str>,
    /// What was wrong, for people.
    pub message: String,
}

impl ValidationError {
    /// A new error (for decoders of this crate's types).
    pub(crate) fn new(
        kind: ErrorKind,
        field: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            field,
            message: message.into(),
        }
    }

    pub(crate) fn field(kind: ErrorKind, field: &'static str, message: impl Into<String>) -> Self {
        Self::new(kind, Some(field), message)
    }

    /// A write that Cassandra refused for good (used by the writer for its dead letters).
    pub fn write_rejected(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::WriteRejected, None, message)
    }

    /// An alert its webhook did not take (used by the writer's alert hand-off).
    pub fn alert_undelivered(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlertUndelivered, None, message)
    }

    /// An output Kafka refused for good (used by the stream-reader for its dead letters).
    pub fn output_rejected(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::OutputRejected, None, message)
    }
}
