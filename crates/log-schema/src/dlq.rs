//! The dead-letter envelope: the payload of `ip_logs_dlq`.

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    error::{ErrorKind, ValidationError},
    record::micros,
    validate::Origin,
};

/// Default budget for the encoded `raw` field: a DLQ record then stays well under Kafka's
/// default 1 MiB `message.max.bytes`.
pub const DEFAULT_MAX_RAW_BYTES: usize = 512 * 1024;

/// How `raw` holds the original payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawEncoding {
    /// The payload was UTF-8 and is stored as is.
    Utf8,
    /// The payload was not UTF-8 and is stored base64-encoded (standard alphabet, padded).
    Base64,
}

/// The error part of a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterError {
    /// Stable error kind.
    pub kind: ErrorKind,
    /// Offending field, if any.
    pub field: Option<String>,
    /// Human-readable reason.
    pub message: String,
}

/// Kafka coordinates of the rejected record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRef {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Marks a dead letter of a re-submitted record: which redrive (0 for a replayed copy), and the
/// original coordinates (see [`crate::headers`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redrive {
    /// 1 for the first redrive of the original, and so on; 0 for a replayed copy.
    pub attempt: u32,
    /// Coordinates of the original record (the identity its `event_id` derives from).
    pub origin: SourceRef,
}

/// A rejected record with the reason and the original bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Why it was rejected.
    pub error: DeadLetterError,
    /// The original payload (possibly truncated, see `raw_truncated`).
    pub raw: String,
    /// How `raw` is encoded.
    pub raw_encoding: RawEncoding,
    /// True when `raw` holds only a prefix of the payload because the whole would not fit.
    #[serde(default)]
    pub raw_truncated: bool,
    /// Size of the original payload in bytes.
    pub raw_size: usize,
    /// Where it came from.
    pub source: SourceRef,
    /// When it was rejected.
    #[serde(with = "micros")]
    pub failed_at: DateTime<Utc>,
    /// Set when the rejected record was re-submitted (a redrive or a replay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redrive: Option<Redrive>,
}

impl DeadLetter {
    /// Wraps a rejected payload. `max_raw_bytes` bounds the *encoded* `raw` text (after JSON
    /// escaping or base64), so the envelope always fits the DLQ topic; a longer payload is
    /// kept as a prefix with `raw_truncated = true`, never dropped.
    pub fn new(
        error: &ValidationError,
        raw: &[u8],
        origin: &Origin<'_>,
        failed_at: DateTime<Utc>,
        max_raw_bytes: usize,
    ) -> Self {
        let (text, raw_encoding, raw_truncated) = match std::str::from_utf8(raw) {
            Ok(s) => {
                let cut = utf8_prefix_len(s, max_raw_bytes);
                (s[..cut].to_owned(), RawEncoding::Utf8, cut < s.len())
            }
            Err(_) => {
                let keep = raw.len().min(max_raw_bytes / 4 * 3);
                (
                    BASE64.encode(&raw[..keep]),
                    RawEncoding::Base64,
                    keep < raw.len(),
                )
            }
        };
        Self {
            error: DeadLetterError {
                kind: error.kind,
                field: error.field.map(str::to_owned),
                message: error.message.clone(),
            },
            raw: text,
            raw_encoding,
            raw_truncated,
            raw_size: raw.len(),
            source: SourceRef {
                topic: origin.topic.to_owned(),
                partition: origin.partition,
                offset: origin.offset,
            },
            failed_at,
            redrive: None,
        }
    }

    /// The same dead letter marked as the result of a redrive.
    pub fn redriven(mut self, redrive: Option<Redrive>) -> Self {
        self.redrive = redrive;
        self
    }

    /// Coordinates of the original record: where a redriven record first came from, else
    /// [`DeadLetter::source`]. Redrives re-submit under this identity.
    pub fn origin(&self) -> &SourceRef {
        self.redrive.as_ref().map_or(&self.source, |r| &r.origin)
    }

    /// Which redrive produced this dead letter (0 for an original one).
    pub fn attempt(&self) -> u32 {
        self.redrive.as_ref().map_or(0, |r| r.attempt)
    }

    /// The same dead letter without its payload (`raw` empty, `raw_truncated` set when there
    /// was one; `raw_size` and the source coordinates still say what and where it was): for a
    /// dead letter that the DLQ topic cannot take whole.
    pub fn without_raw(mut self) -> Self {
        self.raw.clear();
        self.raw_truncated = self.raw_size > 0;
        self
    }

    /// The original bytes (or their kept prefix when `raw_truncated`).
    pub fn raw_bytes(&self) -> Result<Vec<u8>, ValidationError> {
        match self.raw_encoding {
            RawEncoding::Utf8 => Ok(self.raw.as_bytes().to_vec()),
            RawEncoding::Base64 => BASE64.decode(&self.raw).map_err(|e| {
                ValidationError::new(
                    ErrorKind::InvalidType,
                    Some("raw"),
                    format!("bad base64: {e}"),
                )
            }),
        }
    }

    /// Serialises the envelope.
    pub fn to_json(&self) -> Vec<u8> {
        // Plain strings and numbers: serialising into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses an envelope read back from the DLQ topic.
    pub fn from_json(payload: &[u8]) -> Result<Self, ValidationError> {
        serde_json::from_slice(payload).map_err(|e| {
            ValidationError::new(
                ErrorKind::MalformedJson,
                None,
                format!("not a dead letter: {e}"),
            )
        })
    }
}

/// Length in bytes of the longest prefix of `s`, cut at a character boundary, whose JSON
/// string escaping takes at most `budget` bytes.
fn utf8_prefix_len(s: &str, budget: usize) -> usize {
    if s.len().saturating_mul(6) <= budget {
        return s.len();
    }
    let mut used = 0usize;
    for (i, c) in s.char_indices() {
        let cost = match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        };
        if used + cost > budget {
            return i;
        }
        used += cost;
    }
    s.len()
}
