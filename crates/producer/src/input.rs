//! Replay input: lines of bytes from a file, a gzip file or stdin, optionally followed as the
//! file grows and rotates (`tail -F`).
//!
//! Lines are bytes, not text: a line that is not UTF-8 is sent as it is (the stream-reader
//! dead-letters it as `not_utf8` with its bytes base64-encoded). A line longer than the bound is
//! sent as its first `max_line_bytes` bytes and counted as truncated, never dropped silently.
//! A trailing `\r` is removed with the `\n`; empty lines carry no record and are skipped.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use flate2::read::MultiGzDecoder;

/// The two bytes every gzip member starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// One line read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A line is in the buffer; `truncated` when it was longer than the bound.
    Line {
        /// The line was cut to the bound.
        truncated: bool,
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
    /// Bytes of a line whose end has not been written yet (following).
    partial: Vec<u8>,
    partial_truncated: bool,
}

impl std::fmt::Debug for Lines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines")
            .field("max_line_bytes", &self.max_line_bytes)
            .field("follow", &self.follow)
            .finish_non_exhaustive()
    }
}

/// The followed file: its path and the identity of the file currently open.
#[derive(Debug)]
struct Followed {
    path: PathBuf,
    id: FileId,
    /// Bytes read from the open file.
    position: u64,
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

impl Lines {
    /// Opens `input` (`-` = stdin). Gzip input (by its magic bytes) is decompressed; `follow`
    /// needs a plain-text file.
    pub fn open(input: &str, follow: bool, max_line_bytes: usize) -> anyhow::Result<Self> {
        let max_line_bytes = max_line_bytes.max(1);
        if input == "-" {
            if follow {
                bail!("--follow needs a file path, not stdin (stdin is read until it ends)");
            }
            let reader =
                Self::decompressed(BufReader::new(Box::new(io::stdin()) as Box<dyn Read + Send>))
                    .context("read stdin")?;
            return Ok(Self::new(reader, max_line_bytes, None));
        }
        let path = Path::new(input);
        let file = File::open(path).with_context(|| format!("open {input}"))?;
        let id = file_id(&file.metadata().with_context(|| format!("stat {input}"))?);
        let mut reader = BufReader::new(Box::new(file) as Box<dyn Read + Send>);
        let gzip = reader
            .fill_buf()
            .with_context(|| format!("read {input}"))?
            .starts_with(&GZIP_MAGIC);
        if follow {
            if gzip {
                bail!("--follow reads a growing plain-text file; {input} is gzip-compressed");
            }
            let followed = Followed {
                path: path.to_owned(),
                id,
                position: 0,
            };
            return Ok(Self::new(Box::new(reader), max_line_bytes, Some(followed)));
        }
        let reader = Self::decompressed(reader).with_context(|| format!("read {input}"))?;
        Ok(Self::new(reader, max_line_bytes, None))
    }

    fn new(
        reader: Box<dyn BufRead + Send>,
        max_line_bytes: usize,
        follow: Option<Followed>,
    ) -> Self {
        Self {
            reader,
            max_line_bytes,
            follow,
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
    /// switching to a rotated file's successor, if the path now names another file).
    pub fn next_line(&mut self, line: &mut Vec<u8>) -> io::Result<Next> {
        loop {
            line.clear();
            match self.read_until_newline()? {
                Some(truncated) => {
                    std::mem::swap(line, &mut self.partial);
                    self.partial.clear();
                    self.partial_truncated = false;
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if line.is_empty() && !truncated {
                        continue;
                    }
                    return Ok(Next::Line { truncated });
                }
                None if self.follow.is_some() => {
                    if self.reopen_if_rotated()? {
                        continue;
                    }
                    return Ok(Next::Pending);
                }
                None => {
                    // The last line of a finished input needs no newline.
                    if self.partial.is_empty() {
                        return Ok(Next::End);
                    }
                    let truncated = self.partial_truncated;
                    std::mem::swap(line, &mut self.partial);
                    self.partial_truncated = false;
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    return Ok(Next::Line { truncated });
                }
            }
        }
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
            if let Some(f) = self.follow.as_mut() {
                f.position += used as u64;
            }
            if done.is_some() {
                return Ok(Some(self.partial_truncated));
            }
        }
    }

    /// At the end of a followed file: if its path now names another file (rotated by rename)
    /// or the file shrank (truncated in place), start reading the path's file from its start.
    fn reopen_if_rotated(&mut self) -> io::Result<bool> {
        let Some(f) = self.follow.as_mut() else {
            return Ok(false);
        };
        let meta = match std::fs::metadata(&f.path) {
            Ok(m) => m,
            // Between a rename and the new file's creation: keep waiting.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let id = file_id(&meta);
        if id == f.id && meta.len() >= f.position {
            return Ok(false);
        }
        // A line the old file never finished is sent as it is.
        let file = File::open(&f.path)?;
        f.id = file_id(&file.metadata()?);
        f.position = 0;
        self.reader = Box::new(BufReader::new(file));
        tracing::info!(path = %f.path.display(), "input rotated; reading the new file");
        Ok(true)
    }
}

fn newline_at(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| *b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(input: &str, max: usize) -> Vec<(Vec<u8>, bool)> {
        let mut lines = Lines::open(input, false, max).expect("open");
        let mut out = Vec::new();
        let mut line = Vec::new();
        loop {
            match lines.next_line(&mut line).expect("read") {
                Next::Line { truncated } => out.push((line.clone(), truncated)),
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
        assert!(Lines::open(gz.to_str().expect("utf8"), true, 32).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
