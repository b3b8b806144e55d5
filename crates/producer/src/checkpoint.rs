//! The read position of `--input FILE`, saved so that a restart continues where the last
//! acknowledged line ended (like Filebeat's registry or Vector's file checkpoints).
//!
//! [`Acks`] follows the lines in the order they were read: each line sent waits for its
//! delivery report, a line that carries no record (empty, or skipped by `--format`) is done at
//! once, and the position is the end of the longest run of done lines from the start. So a
//! saved position never passes a line Kafka has not acknowledged, whatever order the reports
//! come in. [`Store`] writes it atomically (a temporary file, fsync, rename, fsync of the
//! directory), one file per input path in `--checkpoint-dir`.
//!
//! After a SIGKILL the lines between the saved position and what Kafka had acknowledged are
//! sent again: they carry the same identity ([`crate::input::LinePos`]), so they rewrite the
//! same rows and the windows count them once.

use std::{
    collections::VecDeque,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use anyhow::Context as _;
use log_schema::FileFingerprint;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::input::{LinePos, Resume};

/// A line read: its position, when it was sent (µs since the producer's epoch), and whether
/// it is done (acknowledged, or carried no record).
#[derive(Debug, Clone, Copy)]
struct Entry {
    at: LinePos,
    sent_at_us: u64,
    done: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Sequence number of `entries[0]`.
    front: u64,
    entries: VecDeque<Entry>,
    /// End of the last line of the done run from the start.
    acked: Option<Resume>,
    /// A line Kafka did not take after the client's retries: the position cannot pass it.
    stuck: Option<String>,
}

/// The lines in flight and the acknowledged position; shared with the delivery reports.
#[derive(Debug, Default)]
pub struct Acks {
    state: Mutex<State>,
}

impl Acks {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts from a saved position.
    pub fn starting_at(resume: Option<Resume>) -> Self {
        let acks = Self::default();
        acks.lock().acked = resume;
        acks
    }

    /// A line is sent now; returns its sequence number (the delivery opaque).
    pub fn sent(&self, at: LinePos, sent_at_us: u64) -> u64 {
        let mut s = self.lock();
        s.entries.push_back(Entry {
            at,
            sent_at_us,
            done: false,
        });
        s.front + s.entries.len() as u64 - 1
    }

    /// A line that carries no record was read.
    pub fn skipped(&self, at: LinePos) {
        let mut s = self.lock();
        s.entries.push_back(Entry {
            at,
            sent_at_us: 0,
            done: true,
        });
        advance(&mut s);
    }

    /// Line `seq` was acknowledged, or refused for good (a record no broker state can accept,
    /// counted as failed): either way it no longer holds the position back. Returns when it
    /// was sent.
    pub fn delivered(&self, seq: u64) -> Option<u64> {
        let mut s = self.lock();
        let index = usize::try_from(seq.checked_sub(s.front)?).ok()?;
        let entry = s.entries.get_mut(index)?;
        entry.done = true;
        let sent = entry.sent_at_us;
        advance(&mut s);
        Some(sent)
    }

    /// Line `seq` failed after the client's retries (a timeout, an outage): the position
    /// stays before it, and the run stops with `reason`.
    pub fn failed(&self, seq: u64, reason: String) -> Option<u64> {
        let mut s = self.lock();
        let index = usize::try_from(seq.checked_sub(s.front)?).ok()?;
        let sent = s.entries.get(index)?.sent_at_us;
        s.stuck.get_or_insert(reason);
        Some(sent)
    }

    /// The acknowledged position.
    pub fn acked(&self) -> Option<Resume> {
        self.lock().acked
    }

    /// Why the position cannot advance any more, if it cannot.
    pub fn stuck(&self) -> Option<String> {
        self.lock().stuck.clone()
    }
}

fn advance(s: &mut State) {
    while s.entries.front().is_some_and(|e| e.done) {
        if let Some(e) = s.entries.pop_front() {
            s.front += 1;
            s.acked = Some(Resume {
                file: e.at.file,
                fingerprint_bytes: e.at.fingerprint_bytes,
                offset: e.at.end,
            });
        }
    }
}

/// What a checkpoint file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Saved {
    /// The input path as given.
    input: String,
    /// Fingerprint of the file the position is in.
    file: FileFingerprint,
    /// How many of the file's first bytes the fingerprint covers (fewer than 1,024 for a file
    /// followed while it was short).
    #[serde(default = "full_fingerprint")]
    fingerprint_bytes: usize,
    /// Byte offset after the last acknowledged line.
    offset: u64,
}

fn full_fingerprint() -> usize {
    log_schema::file_line::FINGERPRINT_BYTES
}

/// The checkpoint file of one input path.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
    input: String,
    saved: Option<Resume>,
}

impl Store {
    /// The checkpoint of `input` in `dir`: `<file name>.<hash of the absolute path>.json`.
    pub fn new(dir: &Path, input: &str) -> anyhow::Result<Self> {
        let absolute = std::path::absolute(input).with_context(|| format!("resolve {input}"))?;
        let digest = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
        let name = absolute
            .file_name()
            .map_or_else(|| "input".into(), |n| n.to_string_lossy().into_owned());
        let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            path: dir.join(format!("{name}.{hash}.json")),
            input: absolute.to_string_lossy().into_owned(),
            saved: None,
        })
    }

    /// The checkpoint file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved position, if there is one. A checkpoint that cannot be read is an error that
    /// names the file (delete it, or pass --from-start, to start over).
    pub fn load(&mut self) -> anyhow::Result<Option<Resume>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("read checkpoint {}", self.path.display()));
            }
        };
        let saved: Saved = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "checkpoint {} is not one this producer wrote: delete it or pass --from-start",
                self.path.display()
            )
        })?;
        let resume = Resume {
            file: saved.file,
            fingerprint_bytes: saved.fingerprint_bytes,
            offset: saved.offset,
        };
        self.saved = Some(resume);
        Ok(Some(resume))
    }

    /// Saves `position` atomically, if it changed.
    pub fn save(&mut self, position: Option<Resume>) -> anyhow::Result<()> {
        let Some(position) = position else {
            return Ok(());
        };
        if self.saved == Some(position) {
            return Ok(());
        }
        let saved = Saved {
            input: self.input.clone(),
            file: position.file,
            fingerprint_bytes: position.fingerprint_bytes,
            offset: position.offset,
        };
        let write = || -> std::io::Result<()> {
            let dir = self.path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            let tmp = self.path.with_extension("json.tmp");
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&serde_json::to_vec_pretty(&saved)?)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().with_context(|| format!("save checkpoint {}", self.path.display()))?;
        self.saved = Some(position);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: u64, end: u64) -> LinePos {
        LinePos {
            file: FileFingerprint(7),
            fingerprint_bytes: 1024,
            start,
            end,
        }
    }

    #[test]
    fn the_position_never_passes_an_unacknowledged_line() {
        let acks = Acks::starting_at(None);
        let a = acks.sent(at(0, 10), 1);
        let b = acks.sent(at(10, 20), 2);
        acks.skipped(at(20, 21));
        let c = acks.sent(at(21, 30), 3);
        assert_eq!(acks.acked(), None);
        assert_eq!(acks.delivered(b), Some(2));
        assert_eq!(acks.acked(), None, "a is still in flight");
        acks.delivered(a);
        assert_eq!(
            acks.acked().map(|r| r.offset),
            Some(21),
            "a, b and the skipped line"
        );
        assert_eq!(acks.failed(c, "timed out".into()), Some(3));
        assert_eq!(acks.acked().map(|r| r.offset), Some(21));
        assert_eq!(acks.stuck().as_deref(), Some("timed out"));
        assert_eq!(acks.delivered(99), None);
    }

    #[test]
    fn a_checkpoint_round_trips_and_a_foreign_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("producer-checkpoint-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = Store::new(&dir, "some/access.log").expect("store");
        assert!(
            store
                .path()
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("access.log."))
        );
        assert_eq!(store.load().expect("load"), None);
        let r = Resume {
            file: FileFingerprint(0xabc),
            fingerprint_bytes: 300,
            offset: 4096,
        };
        store.save(Some(r)).expect("save");
        let mut again = Store::new(&dir, "some/access.log").expect("store");
        assert_eq!(again.load().expect("load"), Some(r));
        std::fs::write(again.path(), b"{}").expect("write");
        let error = format!("{:#}", again.load().expect_err("foreign"));
        assert!(error.contains("--from-start"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
