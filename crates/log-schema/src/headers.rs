//! Kafka headers of re-submitted records (`producer dlq redrive`, `producer replay`).
//!
//! A re-submitted record keeps its identity: its [`ORIGIN`] header names the coordinates of
//! the record it re-submits (the first one, for a record re-submitted again), and the
//! stream-reader derives the `event_id` and the `source` of its output from them instead of
//! from where the copy sits, so a Cassandra row is rewritten, never duplicated. A redrive also
//! carries its [`REDRIVE_ATTEMPT`]; a copy that is still invalid is dead-lettered again with
//! both, so an operator sees it as a redrive and nothing redrives it by itself.

use crate::{dlq::SourceRef, file_line::FileFingerprint};

/// Header: `topic/partition/offset` of the record this one re-submits, or
/// `file:<fingerprint>/0/<byte offset>` of the file line a record carries
/// ([`crate::file_line`]).
pub const ORIGIN: &str = "x-origin";
/// Header: which redrive of the original this is (decimal, from 1).
pub const REDRIVE_ATTEMPT: &str = "x-redrive-attempt";

/// A header value that is not what its name promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad `{header}` header {value:?}: {reason}")]
pub struct HeaderError {
    /// Header name.
    pub header: &'static str,
    /// The value, lossily decoded.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl SourceRef {
    /// The origin of the line at byte `offset` of the file with fingerprint `file`.
    pub fn file_line(file: FileFingerprint, offset: u64) -> Self {
        Self {
            topic: file.origin_topic(),
            partition: 0,
            offset: i64::try_from(offset).unwrap_or(i64::MAX),
        }
    }

    /// The fingerprint of the file this origin is a line of, if it is one.
    pub fn file(&self) -> Option<FileFingerprint> {
        FileFingerprint::from_origin_topic(&self.topic)
    }

    /// The [`ORIGIN`] header value: `topic/partition/offset` (Kafka topic names have no `/`).
    pub fn to_header(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }

    /// Parses an [`ORIGIN`] header value.
    pub fn from_header(value: &[u8]) -> Result<Self, HeaderError> {
        let bad = |reason| HeaderError {
            header: ORIGIN,
            value: String::from_utf8_lossy(value).into_owned(),
            reason,
        };
        let text = std::str::from_utf8(value).map_err(|_| bad("not UTF-8"))?;
        let mut parts = text.rsplitn(3, '/');
        let (Some(offset), Some(partition), Some(topic)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected topic/partition/offset"));
        };
        let valid_topic = !topic.is_empty()
            && topic.len() <= 249
            && topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        let file_line = FileFingerprint::from_origin_topic(topic).is_some() && partition == "0";
        if !valid_topic && !file_line {
            return Err(bad(
                "not a Kafka topic name nor a file line (file:<fingerprint>/0)",
            ));
        }
        let partition: i32 = partition.parse().map_err(|_| bad("bad partition"))?;
        let offset: i64 = offset.parse().map_err(|_| bad("bad offset"))?;
        if partition < 0 || offset < 0 {
            return Err(bad("negative partition or offset"));
        }
        Ok(Self {
            topic: topic.to_owned(),
            partition,
            offset,
        })
    }
}

/// Parses a [`REDRIVE_ATTEMPT`] header value.
pub fn parse_attempt(value: &[u8]) -> Result<u32, HeaderError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| HeaderError {
            header: REDRIVE_ATTEMPT,
            value: String::from_utf8_lossy(value).into_owned(),
            reason: "expected a positive integer",
        })
}

/// The identity the headers of a record give it: `None` for an ordinary record, else the
/// original coordinates and the redrive attempt (0 for a replayed copy). A record whose
/// headers are present but malformed gets the error (the stream-reader then treats it as an
/// ordinary record and counts it).
pub fn resubmitted(
    origin: Option<&[u8]>,
    attempt: Option<&[u8]>,
) -> Result<Option<crate::Redrive>, HeaderError> {
    let Some(origin) = origin else {
        return Ok(None);
    };
    Ok(Some(crate::Redrive {
        origin: SourceRef::from_header(origin)?,
        attempt: attempt.map(parse_attempt).transpose()?.unwrap_or(0),
    }))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn origin_round_trips_and_rejects_garbage() {
        let s = SourceRef {
            topic: "ip_logs.v2-x".into(),
            partition: 3,
            offset: 12_345,
        };
        assert_eq!(
            SourceRef::from_header(s.to_header().as_bytes()),
            Ok(s.clone())
        );
        let line = SourceRef::file_line(FileFingerprint(0xfeed), 1234);
        assert_eq!(line.to_header(), "file:000000000000feed/0/1234");
        assert_eq!(
            SourceRef::from_header(line.to_header().as_bytes()),
            Ok(line.clone())
        );
        assert_eq!(line.file(), Some(FileFingerprint(0xfeed)));
        assert_eq!(s.file(), None);
        for bad in [
            &b"file:000000000000feed/1/1234"[..],
            b"file:feed/0/1234",
            &b""[..],
            b"ip_logs/1",
            b"/1/2",
            b"ip logs/1/2",
            b"ip_logs/-1/2",
            b"ip_logs/1/x",
            b"\xff/1/2",
        ] {
            assert!(SourceRef::from_header(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_attempt(b"2"), Ok(2));
        assert!(parse_attempt(b"0").is_err());
        assert_eq!(resubmitted(None, Some(b"1")), Ok(None));
        let r = resubmitted(Some(b"t/0/5"), None).unwrap().unwrap();
        assert_eq!((r.attempt, r.origin.offset), (0, 5));
    }

    proptest! {
        #[test]
        fn headers_never_panic(origin: Vec<u8>, attempt: Vec<u8>) {
            let _ = resubmitted(Some(&origin), Some(&attempt));
        }
    }
}
