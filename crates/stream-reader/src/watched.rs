//! Files the stream-reader re-reads when they change (the GeoIP databases, the threat lists):
//! a change is a new modification time, size or inode, checked on a timer off the runtime's
//! workers.

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use tokio_util::sync::CancellationToken;

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// As at the last check.
    Same,
    /// The file is not there (any more).
    Gone,
    /// New, or changed since the last check.
    Changed,
}

/// A file and its (modification time, size, inode) at the last check.
#[derive(Debug)]
pub(crate) struct WatchedFile {
    path: PathBuf,
    seen: Mutex<Option<(SystemTime, u64, u64)>>,
}

impl WatchedFile {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            seen: Mutex::new(None),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Compares the file with the last check (the first check of a present file: `Changed`).
    pub(crate) fn check(&self) -> Change {
        let stamp = std::fs::metadata(&self.path).ok().map(|m| {
            // The inode too: a file renamed over the old one with the same size and time
            // (`cp -p`) is still a change.
            #[cfg(unix)]
            let inode = std::os::unix::fs::MetadataExt::ino(&m);
            #[cfg(not(unix))]
            let inode = 0;
            (
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                m.len(),
                inode,
            )
        });
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if stamp == *seen {
            return Change::Same;
        }
        *seen = stamp;
        if stamp.is_some() {
            Change::Changed
        } else {
            Change::Gone
        }
    }
}

/// Runs `check` on a blocking thread every `interval` (at least 100 ms) until `stop`.
pub(crate) fn every(
    interval: Duration,
    stop: CancellationToken,
    check: impl Fn() + Clone + Send + 'static,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let _ = tokio::task::spawn_blocking(check.clone()).await;
        }
    });
}
