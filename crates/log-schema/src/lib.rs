//! The wire contract of the IP-log pipeline.
//!
//! This crate is the only place that defines what travels over the pipeline's Kafka topics:
//!
//! * [`RawLog`]: the seed's eight-field JSON record on `ip_logs`;
//! * [`validate`]: strict validation of any payload into a [`ValidatedRecord`] (normalised,
//!   enriched, with a deterministic `event_id`) or a [`ValidationError`] with a stable
//!   [`ErrorKind`];
//! * [`ValidatedRecord`]: the payload of `ip_logs_validated`;
//! * [`DeadLetter`]: the payload of `ip_logs_dlq`;
//! * [`headers`]: the headers that give a re-submitted record its original identity;
//! * [`file_line`]: the identity of a line read from a file (fingerprint and byte offset);
//! * [`WindowStats`], [`TargetStats`] and [`Alert`]: the payloads of `ip_stats`,
//!   `ip_target_stats` and `ip_alerts`.
//!
//! Nothing here panics on input, whatever the bytes (property-tested).

mod analytics;
mod dlq;
mod enrich;
mod error;
pub mod file_line;
pub mod headers;
mod record;
mod validate;

pub use analytics::{ALERT_ID_NAMESPACE, Alert, AlertRule, Sweep, TargetStats, WindowStats};
pub use dlq::{
    DEFAULT_MAX_RAW_BYTES, DeadLetter, DeadLetterError, RawEncoding, Redrive, SourceRef,
};
pub use enrich::{IpClass, service_name};
pub use error::{ErrorKind, ValidationError};
pub use file_line::FileFingerprint;
pub use record::{
    Action, EventTime, Geo, RAW_FIELDS, RawLog, SourceOffset, TimestampStyle, ValidatedRecord,
    micros, parse_timestamp,
};
pub use validate::{EVENT_ID_NAMESPACE, Limits, Origin, validate};

/// Topic names used by the pipeline (defaults; every service can override them).
pub mod topics {
    /// Raw records from producers.
    pub const RAW: &str = "ip_logs";
    /// Validated, enriched records.
    pub const VALIDATED: &str = "ip_logs_validated";
    /// Dead letters.
    pub const DLQ: &str = "ip_logs_dlq";
    /// Per-IP window statistics.
    pub const STATS: &str = "ip_stats";
    /// Security alerts.
    pub const ALERTS: &str = "ip_alerts";
    /// Validated records again, keyed by destination IP (for the destination windows).
    pub const BY_DESTINATION: &str = "ip_logs_by_destination";
    /// Per-destination window statistics.
    pub const TARGET_STATS: &str = "ip_target_stats";
    /// All of them, for stack setup.
    pub const ALL: [&str; 7] = [
        RAW,
        VALIDATED,
        DLQ,
        STATS,
        ALERTS,
        BY_DESTINATION,
        TARGET_STATS,
    ];
}

#[cfg(test)]
mod tests;
