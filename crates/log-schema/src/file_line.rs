//! The identity of a line read from a file (`producer --input FILE`): the file's fingerprint
//! and the line's byte offset in it.
//!
//! A file is known by its content, not its name or inode: its [`FileFingerprint`] is the first
//! 8 bytes of the SHA-256 of its first [`FINGERPRINT_BYTES`] bytes (decompressed, for a gzip
//! file; all of it when it is shorter and complete; the bytes it held, for a short file the
//! producer followed, which its saved position records). A line is then `file:<fingerprint>` at its
//! byte offset, carried in the [`crate::headers::ORIGIN`] header as
//! `file:<fingerprint>/0/<offset>`, so re-sending it (after a producer crash, a rotation, or
//! an import run twice) gives it the same `event_id` and the same Cassandra row, and the
//! windows count it once. `file:` cannot start a Kafka topic name (`:` is not allowed in one),
//! so a file origin never collides with a topic's.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// Bytes of a file's start that its fingerprint covers.
pub const FINGERPRINT_BYTES: usize = 1024;

/// What an [`crate::headers::ORIGIN`] topic of a file line starts with.
pub const FILE_ORIGIN_PREFIX: &str = "file:";

/// The fingerprint of an input file: its identity, whatever its name or inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileFingerprint(pub u64);

impl FileFingerprint {
    /// The fingerprint of a file whose first bytes are `start` (its first
    /// [`FINGERPRINT_BYTES`] bytes, or all of a shorter complete file; more are ignored).
    pub fn of(start: &[u8]) -> Self {
        let digest = Sha256::digest(&start[..start.len().min(FINGERPRINT_BYTES)]);
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Self(u64::from_be_bytes(first))
    }

    /// The origin "topic" of the lines of this file: `file:<fingerprint>`.
    pub fn origin_topic(self) -> String {
        format!("{FILE_ORIGIN_PREFIX}{self}")
    }

    /// The fingerprint an origin topic names, if it is a file's (`file:` and 16 hex digits).
    pub fn from_origin_topic(topic: &str) -> Option<Self> {
        topic.strip_prefix(FILE_ORIGIN_PREFIX)?.parse().ok()
    }
}

impl fmt::Display for FileFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Text that is not 16 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a file fingerprint is 16 lowercase hex digits, not {0:?}")]
pub struct BadFingerprint(pub String);

impl FromStr for FileFingerprint {
    type Err = BadFingerprint;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        hex.then(|| u64::from_str_radix(s, 16).ok())
            .flatten()
            .map(Self)
            .ok_or_else(|| BadFingerprint(s.to_owned()))
    }
}

impl Serialize for FileFingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FileFingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_covers_the_first_kibibyte_and_round_trips() {
        let a = vec![b'a'; 2000];
        let mut b = a.clone();
        b[1500] = b'b';
        assert_eq!(FileFingerprint::of(&a), FileFingerprint::of(&b));
        b[1000] = b'b';
        assert_ne!(FileFingerprint::of(&a), FileFingerprint::of(&b));
        // The first 8 bytes of SHA-256("abc"), big-endian.
        assert_eq!(FileFingerprint::of(b"abc").0, 0xba78_16bf_8f01_cfea);
        let fp = FileFingerprint(0x00ab_cdef_0123_4567);
        assert_eq!(fp.to_string(), "00abcdef01234567");
        assert_eq!(
            FileFingerprint::from_origin_topic(&fp.origin_topic()),
            Some(fp)
        );
        for bad in [
            "file:00ABCDEF01234567",
            "file:abc",
            "ip_logs",
            "file:+0abcdef01234567",
        ] {
            assert_eq!(FileFingerprint::from_origin_topic(bad), None, "{bad}");
        }
        let json = serde_json::to_string(&fp).expect("serialise");
        assert_eq!(json, "\"00abcdef01234567\"");
        assert_eq!(
            serde_json::from_str::<FileFingerprint>(&json).ok(),
            Some(fp)
        );
    }
}
