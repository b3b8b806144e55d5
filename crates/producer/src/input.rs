//! Replay input: lines of bytes from a file, a gzip file or stdin, optionally followed as the
//! file grows and rotates (`tail -F`).
//!
//! Lines are bytes, not text: a line that is not UTF-8 is sent as it is (the stream-reader
//! dead-letters it as `not_utf8` with its bytes base64-encoded). A line longer than the bound is
//! sent as its first `max_line_bytes` bytes and counted as truncated, never dropped silently.
//! A trailing `\r` is removed with the `\n`; empty lines carry no record and are skipped.
//!
//! Every line of a file has an identity ([`LinePos`]): the file's fingerprint
//! ([`log_schema::file_line`]) and the line's byte offset. A followed file is fingerprinted
//! once it holds [`FINGERPRINT_BYTES`] bytes, once it was rotated away (complete), or once its
//! first line waited `fingerprint_wait` for more: then over the bytes it holds, a number a
//! saved position records. [`Lines::open`] resumes at a saved position ([`Resume`]): in the same
//! file, or, when the path was rotated meanwhile, in the rotated file (found by its
//! fingerprint next to the path) before the path's new file.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read, Seek as _, SeekFrom},
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use flate2::read::MultiGzDecoder;
use log_schema::{FileFingerprint, file_line::FINGERPRINT_BYTES};
use tracing::{info, warn};

/// The two bytes every gzip member starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Where a line sits: its file and the byte offsets of its start and of the byte after its
/// line ending (where the next line starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinePos {
    /// The file's fingerprint.
    pub file: FileFingerprint,
    /// How many of the file's first bytes the fingerprint covers.
    pub fingerprint_bytes: usize,
    /// Byte offset of the line's first byte.
    pub start: u64,
    /// Byte offset just after the line (and its `\n`).
    pub end: u64,
}

/// A saved read position: everything before `offset` in the file `file` was sent and
/// acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The file's fingerprint.
    pub file: FileFingerprint,
    /// How many of the file's first bytes the fingerprint covers.
    pub fingerprint_bytes: usize,
    /// Byte offset to continue from.
    pub offset: u64,
}

/// One line read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A line is in the buffer; `truncated` when it was longer than the bound; `at` is its
    /// identity (none for stdin).
    Line {
        /// The line was cut to the bound.
        truncated: bool,
        /// Where the line sits.
        at: Option<LinePos>,
    },
    /// No complete line yet (following a file): ask again later.
    Pending,
    /// The input ended.
    End,
}

/// A source of input lines.
pub struct Lines {
    reader: Box<dyn BufRead + Send>,
    max_line_bytes: usize,
    follow: Option<Followed>,
    /// The fingerprint of the file being read and the bytes it covers: `None` for stdin, or
    /// for a followed file too short to have one yet.
    fingerprint: Option<(FileFingerprint, usize)>,
    /// How long a followed file's complete first line waits for the file to reach
    /// [`FINGERPRINT_BYTES`] before it is fingerprinted over fewer.
    fingerprint_wait: std::time::Duration,
    /// Since when the open file has been too short to fingerprint.
    short_since: Option<std::time::Instant>,
    /// Bytes consumed from the current file (decompressed).
    consumed: u64,
    /// Offset of the first byte of `partial`.
    line_start: u64,
    /// Bytes of a line whose end has not been written yet (following).
    partial: Vec<u8>,
    partial_truncated: bool,
}

impl std::fmt::Debug for Lines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines")
            .field("max_line_bytes", &self.max_line_bytes)
            .field("follow", &self.follow)
            .field("fingerprint", &self.fingerprint)
            .field("consumed", &self.consumed)
            .finish_non_exhaustive()
    }
}

/// The followed path and the file currently open.
#[derive(Debug)]
struct Followed {
    path: PathBuf,
    /// The open file (a second handle: its size and first bytes).
    file: File,
    id: FileId,
    /// Rotated files to read after the open one, oldest first, before the path's file (a
    /// restart that finds its saved position in a rotated file).
    backlog: std::collections::VecDeque<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

fn file_id(meta: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt as _;
    FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

/// Up to `max` of the first bytes of a plain file.
fn start_of(file: &File, max: usize) -> io::Result<Vec<u8>> {
    let mut start = vec![0u8; max];
    let mut read = 0;
    while read < start.len() {
        match file.read_at(&mut start[read..], read as u64) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    start.truncate(read);
    Ok(start)
}

/// The fingerprint of a plain file as it is now, if it has one: it holds
/// [`FINGERPRINT_BYTES`] bytes, or `complete` says it will not grow.
fn fingerprint_of(file: &File, complete: bool) -> io::Result<Option<(FileFingerprint, usize)>> {
    let start = start_of(file, FINGERPRINT_BYTES)?;
    Ok((start.len() == FINGERPRINT_BYTES || complete)
        .then(|| (FileFingerprint::of(&start), start.len())))
}

/// Whether the first `bytes` bytes of a plain file have the fingerprint `wanted`.
fn starts_as(file: &File, wanted: FileFingerprint, bytes: usize) -> io::Result<bool> {
    let start = start_of(file, bytes.min(FINGERPRINT_BYTES))?;
    Ok(start.len() == bytes && FileFingerprint::of(&start) == wanted)
}

/// The first [`FINGERPRINT_BYTES`] bytes of a complete input stream (decompressed).
fn stream_start(reader: impl Read) -> io::Result<Vec<u8>> {
    let mut start = Vec::with_capacity(FINGERPRINT_BYTES);
    reader
        .take(FINGERPRINT_BYTES as u64)
        .read_to_end(&mut start)?;
    Ok(start)
}

impl Lines {
    /// Opens `input` (`-` = stdin). Gzip input (by its magic bytes) is decompressed; `follow`
    /// needs a plain-text file. With `resume`, continues after the saved position when it is
    /// in this file (or, following, in the file the path was rotated to).
    pub fn open(
        input: &str,
        follow: bool,
        max_line_bytes: usize,
        resume: Option<Resume>,
        fingerprint_wait: std::time::Duration,
    ) -> anyhow::Result<Self> {
        let max_line_bytes = max_line_bytes.max(1);
        if input == "-" {
            if follow {
                bail!("--follow needs a file path, not stdin (stdin is read until it ends)");
            }
            let reader =
                Self::decompressed(BufReader::new(Box::new(io::stdin()) as Box<dyn Read + Send>))
                    .context("read stdin")?;
            return Ok(Self::new(
                reader,
                max_line_bytes,
                None,
                None,
                fingerprint_wait,
            ));
        }
        let path = Path::new(input);
        let file = File::open(path).with_context(|| format!("open {input}"))?;
        let mut magic = [0u8; 2];
        let gzip = file
            .read_at(&mut magic, 0)
            .with_context(|| format!("read {input}"))?
            == 2
            && magic == GZIP_MAGIC;
        if follow {
            if gzip {
                bail!("--follow reads a growing plain-text file; {input} is gzip-compressed");
            }
            return Self::follow(path, file, max_line_bytes, resume, fingerprint_wait)
                .with_context(|| format!("read {input}"));
        }
        let open = || -> io::Result<Box<dyn BufRead + Send>> {
            let file = File::open(path)?;
            Self::decompressed(BufReader::new(Box::new(file) as Box<dyn Read + Send>))
        };
        let start = stream_start(open()?).with_context(|| format!("read {input}"))?;
        // The saved position's fingerprint, if it covers this file's first bytes (it may cover
        // fewer: a file followed while it was short); else this file's own.
        let saved = resume.filter(|r| {
            start.len() >= r.fingerprint_bytes
                && FileFingerprint::of(&start[..r.fingerprint_bytes]) == r.file
        });
        let fingerprint = saved.map_or_else(
            || (FileFingerprint::of(&start), start.len()),
            |r| (r.file, r.fingerprint_bytes),
        );
        let new = |reader| {
            Self::new(
                reader,
                max_line_bytes,
                None,
                Some(fingerprint),
                fingerprint_wait,
            )
        };
        let mut lines = new(open()?);
        if let Some(r) = saved {
            // Decompressed bytes cannot be sought: read past them.
            let skipped = io::copy(&mut (&mut lines.reader).take(r.offset), &mut io::sink())
                .with_context(|| format!("read {input}"))?;
            if skipped < r.offset {
                warn!(
                    input,
                    offset = r.offset,
                    size = skipped,
                    "the saved position is past the end of the file: reading it from its start"
                );
                lines = new(open()?);
            } else {
                lines.consumed = r.offset;
                lines.line_start = r.offset;
                info!(input, offset = r.offset, file = %r.file, "resuming at the saved position");
            }
        } else if let Some(r) = resume {
            info!(input, saved = %r.file, file = %fingerprint.0, "the saved position is of another file: reading this one from its start");
        }
        Ok(lines)
    }

    /// Follows `path` (open as `file`), resuming as [`Lines::open`] says.
    fn follow(
        path: &Path,
        mut file: File,
        max_line_bytes: usize,
        resume: Option<Resume>,
        fingerprint_wait: std::time::Duration,
    ) -> io::Result<Self> {
        let mut offset = 0;
        let mut fingerprint = fingerprint_of(&file, false)?;
        let mut backlog = std::collections::VecDeque::new();
        if let Some(r) = resume {
            if starts_as(&file, r.file, r.fingerprint_bytes)? {
                fingerprint = Some((r.file, r.fingerprint_bytes));
                if file.metadata()?.len() >= r.offset {
                    offset = r.offset;
                } else {
                    warn!(path = %path.display(), offset = r.offset, "the followed file is shorter than the saved position (truncated): reading it from its start");
                }
            } else if let Some(mut rotated) = rotated_since(path, r)? {
                // Rotated since the position was saved: finish that file, then the files
                // rotated after it, then the path's file.
                let (first, found) = rotated.remove(0);
                info!(path = %path.display(), rotated = %first.display(), offset = r.offset, then = rotated.len(), "resuming in a rotated file");
                file = found;
                fingerprint = Some((r.file, r.fingerprint_bytes));
                offset = r.offset.min(file.metadata()?.len());
                backlog.extend(rotated.into_iter().map(|(p, _)| p));
            } else {
                warn!(path = %path.display(), saved = %r.file, "the file of the saved position is gone (not the path, nor a rotated file next to it): reading the path's file from its start");
            }
        }
        file.seek(SeekFrom::Start(offset))?;
        let followed = Followed {
            path: path.to_owned(),
            file: file.try_clone()?,
            id: file_id(&file.metadata()?),
            backlog,
        };
        let reader = Box::new(BufReader::new(file));
        let mut lines = Self::new(
            reader,
            max_line_bytes,
            Some(followed),
            fingerprint,
            fingerprint_wait,
        );
        lines.consumed = offset;
        lines.line_start = offset;
        Ok(lines)
    }

    fn new(
        reader: Box<dyn BufRead + Send>,
        max_line_bytes: usize,
        follow: Option<Followed>,
        fingerprint: Option<(FileFingerprint, usize)>,
        fingerprint_wait: std::time::Duration,
    ) -> Self {
        Self {
            reader,
            max_line_bytes,
            follow,
            fingerprint,
            fingerprint_wait,
            short_since: None,
            consumed: 0,
            line_start: 0,
            partial: Vec::new(),
            partial_truncated: false,
        }
    }

    /// The reader itself, or a gzip decoder over it when it starts with the gzip magic.
    fn decompressed(
        mut reader: BufReader<Box<dyn Read + Send>>,
    ) -> io::Result<Box<dyn BufRead + Send>> {
        if reader.fill_buf()?.starts_with(&GZIP_MAGIC) {
            Ok(Box::new(BufReader::new(MultiGzDecoder::new(reader))))
        } else {
            Ok(Box::new(reader))
        }
    }

    /// Reads the next non-empty line into `line` (cleared first), without its line ending.
    /// Blocking; following a file, returns [`Next::Pending`] at its current end (after
    /// switching to a rotated file's successor, if the path now names another file), and
    /// while the file is too short to be fingerprinted.
    pub fn next_line(&mut self, line: &mut Vec<u8>) -> io::Result<Next> {
        loop {
            line.clear();
            if self.fingerprint.is_none()
                && let Some(f) = &self.follow
            {
                // Not fingerprinted yet: only once it holds enough bytes, or was rotated away
                // (then it is complete), or its first line waited long enough.
                let start = start_of(&f.file, FINGERPRINT_BYTES)?;
                let since = *self.short_since.get_or_insert_with(std::time::Instant::now);
                let waited = start.contains(&b'\n') && since.elapsed() >= self.fingerprint_wait;
                if start.len() == FINGERPRINT_BYTES || waited || self.path_moved_on()? {
                    self.fingerprint = Some((FileFingerprint::of(&start), start.len()));
                    self.short_since = None;
                } else {
                    return Ok(Next::Pending);
                }
            }
            match self.read_until_newline()? {
                Some(truncated) => {
                    let at = self.take_line(line);
                    if line.is_empty() && !truncated {
                        continue;
                    }
                    return Ok(Next::Line { truncated, at });
                }
                None if self.follow.is_some() => {
                    if !self.path_moved_on()? {
                        return Ok(Next::Pending);
                    }
                    // The file is complete: a line it never finished is sent as it is, then
                    // the next file is read.
                    if !self.partial.is_empty() {
                        let truncated = self.partial_truncated;
                        let at = self.take_line(line);
                        return Ok(Next::Line { truncated, at });
                    }
                    self.next_file()?;
                }
                None => {
                    // The last line of a finished input needs no newline.
                    if self.partial.is_empty() {
                        return Ok(Next::End);
                    }
                    let truncated = self.partial_truncated;
                    let at = self.take_line(line);
                    return Ok(Next::Line { truncated, at });
                }
            }
        }
    }

    /// Moves the finished line from `partial` into `line` (without `\r`), and says where it
    /// was.
    fn take_line(&mut self, line: &mut Vec<u8>) -> Option<LinePos> {
        std::mem::swap(line, &mut self.partial);
        self.partial.clear();
        self.partial_truncated = false;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let at = self.fingerprint.map(|(file, fingerprint_bytes)| LinePos {
            file,
            fingerprint_bytes,
            start: self.line_start,
            end: self.consumed,
        });
        self.line_start = self.consumed;
        at
    }

    /// Appends to `partial` up to the next `\n` (keeping at most `max_line_bytes`). Returns
    /// `Some(truncated)` when a newline ended the line, `None` at the end of the input.
    fn read_until_newline(&mut self) -> io::Result<Option<bool>> {
        loop {
            let available = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(None);
            }
            let (chunk, done) = match newline_at(available) {
                Some(i) => (&available[..i], Some(i + 1)),
                None => (available, None),
            };
            let room = self.max_line_bytes.saturating_sub(self.partial.len());
            if chunk.len() > room {
                self.partial_truncated = true;
            }
            self.partial
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
            let used = done.unwrap_or(available.len());
            self.reader.consume(used);
            self.consumed += used as u64;
            if done.is_some() {
                return Ok(Some(self.partial_truncated));
            }
        }
    }

    /// Whether the open file is complete: rotated files wait to be read after it, or the
    /// followed path now names another file, or the open file shrank (truncated in place).
    fn path_moved_on(&self) -> io::Result<bool> {
        let Some(f) = &self.follow else {
            return Ok(false);
        };
        if !f.backlog.is_empty() {
            return Ok(true);
        }
        let meta = match std::fs::metadata(&f.path) {
            Ok(m) => m,
            // Between a rename and the new file's creation: keep waiting.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        Ok(file_id(&meta) != f.id || f.file.metadata()?.len() < self.consumed)
    }

    /// Opens the next file to read: the oldest rotated file waiting, or the path's file, from
    /// its start.
    fn next_file(&mut self) -> io::Result<()> {
        let Some(f) = self.follow.as_mut() else {
            return Ok(());
        };
        let (path, complete) = match f.backlog.pop_front() {
            Some(rotated) => (rotated, true),
            None => (f.path.clone(), false),
        };
        let file = File::open(&path)?;
        f.id = file_id(&file.metadata()?);
        f.file = file.try_clone()?;
        self.fingerprint = if complete {
            fingerprint_of(&file, true)?
        } else {
            None
        };
        self.short_since = None;
        self.reader = Box::new(BufReader::new(file));
        self.consumed = 0;
        self.line_start = 0;
        info!(path = %path.display(), "reading the next file");
        Ok(())
    }
}

/// The files next to `path` whose names start with the path's file name (`access.log.1`,
/// `access.log-20261207`), from the one whose fingerprint is `wanted` (where a rotation put
/// the file of a saved position) to the newest, ordered by modification time: the files to
/// read before the path's, oldest first. `None` when no such file has that fingerprint.
fn rotated_since(path: &Path, wanted: Resume) -> io::Result<Option<Vec<(PathBuf, File)>>> {
    let (Some(name), dir) = (path.file_name(), path.parent()) else {
        return Ok(None);
    };
    let dir = match dir {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = name.to_string_lossy();
    let mut rotated = Vec::new();
    for entry in std::fs::read_dir(dir)?.filter_map(Result::ok) {
        let n = entry.file_name();
        let n = n.to_string_lossy();
        if n.len() <= name.len() || !n.starts_with(&*name) {
            continue;
        }
        let Ok(file) = File::open(entry.path()) else {
            continue;
        };
        let meta = file.metadata()?;
        let mut magic = [0u8; 2];
        let gzip = file.read_at(&mut magic, 0)? == 2 && magic == GZIP_MAGIC;
        if !meta.is_file() || gzip {
            continue;
        }
        rotated.push((meta.modified()?, entry.path(), file));
    }
    rotated.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut found = None;
    for (i, (_, _, file)) in rotated.iter().enumerate() {
        if starts_as(file, wanted.file, wanted.fingerprint_bytes)? {
            found = Some(i);
            break;
        }
    }
    Ok(found.map(|i| {
        rotated
            .into_iter()
            .skip(i)
            .map(|(_, path, file)| (path, file))
            .collect()
    }))
}

fn newline_at(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| *b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long enough that the tests' short files wait for their first KiB.
    const WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

    fn lines_of(input: &str, max: usize) -> Vec<(Vec<u8>, bool)> {
        let mut lines = Lines::open(input, false, max, None, WAIT).expect("open");
        let mut out = Vec::new();
        let mut line = Vec::new();
        loop {
            match lines.next_line(&mut line).expect("read") {
                Next::Line { truncated, .. } => out.push((line.clone(), truncated)),
                Next::End => return out,
                Next::Pending => panic!("not following"),
            }
        }
    }

    #[test]
    fn bytes_as_they_are_bounded_and_gzip() {
        let dir = std::env::temp_dir().join(format!("producer-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let content: Vec<u8> = [
            b"first\r\n".as_slice(),
            b"\n",
            b"caf\xe9 \xff\xfe not utf-8\n",
            &[b'x'; 40],
            b"\nlast without newline",
        ]
        .concat();
        let want = vec![
            (b"first".to_vec(), false),
            (b"caf\xe9 \xff\xfe not utf-8".to_vec(), false),
            (vec![b'x'; 32], true),
            (b"last without newline".to_vec(), false),
        ];
        let plain = dir.join("plain.log");
        std::fs::write(&plain, &content).expect("write");
        assert_eq!(lines_of(plain.to_str().expect("utf8"), 32), want);

        let gz = dir.join("log.gz");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, &content).expect("compress");
        std::fs::write(&gz, encoder.finish().expect("finish")).expect("write");
        assert_eq!(lines_of(gz.to_str().expect("utf8"), 32), want);
        assert!(Lines::open(gz.to_str().expect("utf8"), true, 32, None, WAIT).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Lines of `lines` until it is pending, with their identities.
    fn drain(lines: &mut Lines) -> Vec<(String, LinePos)> {
        let mut out = Vec::new();
        let mut line = Vec::new();
        loop {
            match lines.next_line(&mut line).expect("read") {
                Next::Line { at, .. } => out.push((
                    String::from_utf8(line.clone()).expect("utf8"),
                    at.expect("a file line has an identity"),
                )),
                Next::Pending => return out,
                Next::End => panic!("following never ends"),
            }
        }
    }

    /// `n` numbered lines of ~100 bytes, from `first`.
    fn numbered(first: usize, n: usize) -> String {
        (first..first + n)
            .map(|i| format!("line {i:05} {}\n", "x".repeat(90)))
            .collect()
    }

    /// A fresh directory for one test.
    fn fresh_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("producer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn a_restart_resumes_in_the_rotated_files_in_order_with_stable_identities() {
        let dir = fresh_dir("follow");
        let path = dir.join("access.log");
        let input = path.to_str().expect("utf8");
        let append = |text: &str| {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .expect("open");
            f.write_all(text.as_bytes()).expect("append");
        };
        // Too short to be fingerprinted: nothing yet.
        append(&numbered(0, 5));
        let mut lines = Lines::open(input, true, 4096, None, WAIT).expect("open");
        assert!(drain(&mut lines).is_empty());
        append(&numbered(5, 20));
        let first = drain(&mut lines);
        assert_eq!(first.len(), 25);
        let fp = FileFingerprint::of(&std::fs::read(&path).expect("read")[..FINGERPRINT_BYTES]);
        assert!(first.iter().all(|(_, at)| at.file == fp));
        assert_eq!(first[1].1.start, first[0].1.end);
        // The position after line 9 is saved; then the file is rotated twice while the
        // producer is down, with a partial last line in the middle file.
        let saved = Resume {
            file: fp,
            fingerprint_bytes: FINGERPRINT_BYTES,
            offset: first[9].1.end,
        };
        drop(lines);
        std::fs::rename(&path, dir.join("access.log.2")).expect("rotate");
        std::thread::sleep(std::time::Duration::from_millis(20));
        append(&numbered(25, 15));
        append("partial");
        std::fs::rename(&path, dir.join("access.log.1")).expect("rotate");
        std::thread::sleep(std::time::Duration::from_millis(20));
        append(&numbered(40, 15));
        let mut lines = Lines::open(input, true, 4096, Some(saved), WAIT).expect("open");
        let resumed = drain(&mut lines);
        let texts: Vec<&str> = resumed.iter().map(|(t, _)| t.as_str()).collect();
        let mut want: Vec<String> = (10..55)
            .map(|i| format!("line {i:05} {}", "x".repeat(90)))
            .collect();
        want.insert(30, "partial".into());
        assert_eq!(texts, want);
        // The lines after the saved position keep the identity they had.
        assert_eq!(&resumed[..15], &first[10..]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_short_file_is_sent_after_the_wait_and_resumed_by_the_bytes_it_was_fingerprinted_over() {
        let dir = fresh_dir("short");
        let path = dir.join("quiet.log");
        let input = path.to_str().expect("utf8");
        std::fs::write(&path, numbered(0, 3)).expect("write");
        let mut lines =
            Lines::open(input, true, 4096, None, std::time::Duration::ZERO).expect("open");
        let first = drain(&mut lines);
        assert_eq!(first.len(), 3, "sent without waiting for 1 KiB");
        let short = std::fs::read(&path).expect("read");
        assert_eq!(first[0].1.fingerprint_bytes, short.len());
        assert_eq!(first[0].1.file, FileFingerprint::of(&short));
        // The file grows past 1 KiB; a restart after line 1 resumes in it, same identities.
        {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open");
            f.write_all(numbered(3, 20).as_bytes()).expect("append");
        }
        let saved = Resume {
            file: first[0].1.file,
            fingerprint_bytes: short.len(),
            offset: first[1].1.end,
        };
        drop(lines);
        let mut lines = Lines::open(input, true, 4096, Some(saved), WAIT).expect("open");
        let resumed = drain(&mut lines);
        assert_eq!(resumed.len(), 21);
        assert_eq!(resumed[0], first[2]);
        // Imported (not followed) with the same saved position: the same identities too.
        let mut lines = Lines::open(input, false, 4096, Some(saved), WAIT).expect("open");
        let mut line = Vec::new();
        match lines.next_line(&mut line).expect("read") {
            Next::Line { at, .. } => assert_eq!(at, Some(first[2].1)),
            other => panic!("expected a line, got {other:?}"),
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
