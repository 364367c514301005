//! History files: the batch layer's input.
//!
//! A history file is JSON lines (the workshop's `transactions.json`), a single JSON array of
//! objects, or CSV with the same column names (`.csv`). Files are read in parallel: a JSON
//! lines file is cut into one byte range per worker, each range starting at the first line
//! that begins inside it, so every line is read by exactly one worker and the file is never
//! parsed on one thread. Each worker counts the newlines before its range to name lines
//! exactly (`file:line`), which costs a fast scan and no parsing. JSON arrays and CSV files
//! (whose quoted cells may hold newlines) are read whole by one worker, one file per worker.
//!
//! ```no_run
//! use atelier_lambda::source::{history::HistoryFile, Record};
//! let files = HistoryFile::open_all(&["datasets/transactions.json".into()]).unwrap();
//! let progress = std::sync::atomic::AtomicU64::new(0);
//! files[0].read_share(0, 1, 1 << 20, &progress, &mut |record| {
//!     if let Record::Update(u) = record { println!("{u:?}") }
//!     std::ops::ControlFlow::Continue(())
//! }).unwrap();
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::value::RawValue;
use thiserror::Error;

use super::Record;
use crate::deadletter::DeadLetter;
use crate::event::{CsvColumns, Fields, Names, Position, Reason, Rejection};

/// Files smaller than this are read by one worker: splitting them costs more than it saves.
const SPLIT_THRESHOLD: u64 = 4 << 20;

/// A history file that cannot be read at all.
#[derive(Debug, Error)]
pub enum HistoryError {
    /// The file could not be opened or read.
    #[error("cannot read history file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a regular file (a directory, a FIFO, a device).
    #[error("history file {path} is {kind}, not a regular file; write the history to a file first")]
    NotAFile {
        /// The path.
        path: String,
        /// What it is.
        kind: &'static str,
    },
    /// A CSV file without the columns the event format needs.
    #[error("CSV history file {path} has no {column:?} column in its header")]
    MissingColumn {
        /// The file.
        path: String,
        /// The missing column.
        column: &'static str,
    },
}

/// How a history file is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    JsonLines,
    /// One JSON array of objects.
    JsonArray,
    /// CSV with a header naming the event columns.
    Csv,
}

/// One history file of the input list.
#[derive(Clone, Debug)]
pub struct HistoryFile {
    /// Where it is.
    pub path: PathBuf,
    /// How it is named in identities and dead letters: the path as given.
    pub label: String,
    /// Its place in the input list: a later file's versions replace an earlier one's.
    pub index: u32,
    /// Its format.
    pub format: Format,
    /// Its size in bytes.
    pub len: u64,
    /// JSON lines files at least this large are split over the workers.
    pub min_split_bytes: u64,
    /// Records in the file, estimated from the lines in its first 64 KiB.
    pub estimated_records: u64,
}

impl HistoryFile {
    /// Checks every file and detects its format; the same file named twice is read once.
    pub fn open_all(paths: &[PathBuf]) -> Result<Vec<HistoryFile>, HistoryError> {
        let mut files = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for path in paths {
            let label = path.display().to_string();
            let io = |source| HistoryError::Io { path: label.clone(), source };
            let canonical = path.canonicalize().map_err(io)?;
            if !seen.insert(canonical) {
                tracing::warn!(file = %label, "history file named twice; reading it once");
                continue;
            }
            let metadata = std::fs::metadata(path).map_err(io)?;
            if !metadata.is_file() {
                // A FIFO or a device would be read by several workers at once, or block forever
                // on an open that no writer answers: only regular files are history.
                return Err(HistoryError::NotAFile { path: label, kind: file_kind(&metadata) });
            }
            let len = metadata.len();
            let format = detect_format(path).map_err(io)?;
            let estimated_records = estimate_records(path, len).map_err(io)?;
            files.push(HistoryFile {
                path: path.clone(),
                label,
                index: files.len() as u32,
                format,
                len,
                min_split_bytes: SPLIT_THRESHOLD,
                estimated_records,
            });
        }
        Ok(files)
    }

    /// The byte range of this file that `worker` of `peers` reads (lines *starting* in it).
    pub fn share(&self, worker: usize, peers: usize) -> (u64, u64) {
        let whole = self.format != Format::JsonLines || self.len < self.min_split_bytes.max(1);
        if whole {
            let owner = self.index as usize % peers;
            return if worker == owner { (0, self.len) } else { (0, 0) };
        }
        let cut = |w: usize| (self.len as u128 * w as u128 / peers as u128) as u64;
        (cut(worker), cut(worker + 1))
    }

    /// Reads this worker's share of the file, handing every record to `emit`, which may stop
    /// the read (strict mode). Adds the bytes read to `progress`.
    pub fn read_share(
        &self,
        worker: usize,
        peers: usize,
        max_record_bytes: usize,
        progress: &AtomicU64,
        emit: &mut dyn FnMut(Record) -> ControlFlow<()>,
    ) -> Result<(), HistoryError> {
        let (start, end) = self.share(worker, peers);
        if start >= end {
            return Ok(());
        }
        let io = |source| HistoryError::Io { path: self.label.clone(), source };
        match self.format {
            Format::JsonLines => self.read_lines(start, end, max_record_bytes, progress, emit).map_err(io),
            Format::JsonArray => self.read_array(max_record_bytes, progress, emit).map_err(io),
            Format::Csv => self.read_csv(max_record_bytes, progress, emit),
        }
    }

    fn read_lines(
        &self,
        start: u64,
        end: u64,
        max_record_bytes: usize,
        progress: &AtomicU64,
        emit: &mut dyn FnMut(Record) -> ControlFlow<()>,
    ) -> std::io::Result<()> {
        let mut names = Names::default();
        let names = &mut names;
        let mut file = File::open(&self.path)?;
        let first = first_line_start(&mut file, start)?;
        let mut line_number = 1 + count_newlines(&mut file, first)?;
        // A byte-order mark (as some editors write) is not part of the first record: it is
        // skipped, but still counted in the first line's length, which starts at 0.
        let bom = if first == 0 && starts_with_bom(&mut file)? { BOM.len() } else { 0 };
        progress.fetch_add(bom as u64, Ordering::Relaxed);
        file.seek(SeekFrom::Start(first + bom as u64))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line_start = first;
        // A line that spans the reader's buffer is gathered here (at most `max + 1` bytes of
        // it: enough to know it is oversized), and `pending_len` counts all of its bytes.
        let mut pending: Vec<u8> = Vec::new();
        let mut pending_len = bom;
        let gather = |pending: &mut Vec<u8>, piece: &[u8]| {
            let room = (max_record_bytes + 1).saturating_sub(pending.len());
            pending.extend_from_slice(&piece[..piece.len().min(room)]);
        };
        let mut unreported = 0u64;
        let mut handle =
            |bytes: &[u8], len: usize, place: LinePlace| self.line(bytes, len, place, max_record_bytes, names, emit);
        while line_start < end {
            let place = LinePlace { offset: line_start, number: line_number };
            let buffer = reader.fill_buf()?;
            if buffer.is_empty() {
                // The last line has no newline.
                if pending_len > 0 {
                    let _ = handle(&pending, pending_len, place);
                }
                break;
            }
            let (taken, flow) = match memchr::memchr(b'\n', buffer) {
                Some(at) => {
                    let len = pending_len + at;
                    let flow = if pending_len == 0 {
                        handle(&buffer[..at], len, place)
                    } else {
                        gather(&mut pending, &buffer[..at]);
                        let flow = handle(&pending, len, place);
                        pending.clear();
                        pending_len = 0;
                        flow
                    };
                    line_start += len as u64 + 1;
                    line_number += 1;
                    (at + 1, flow)
                }
                None => {
                    gather(&mut pending, buffer);
                    pending_len += buffer.len();
                    (buffer.len(), ControlFlow::Continue(()))
                }
            };
            reader.consume(taken);
            unreported += taken as u64;
            if unreported > 1 << 20 {
                progress.fetch_add(unreported, Ordering::Relaxed);
                unreported = 0;
            }
            if flow.is_break() {
                break;
            }
        }
        progress.fetch_add(unreported, Ordering::Relaxed);
        Ok(())
    }

    /// Handles one line (`bytes` holds at most `max + 1` of its `len` bytes).
    fn line(
        &self,
        bytes: &[u8],
        len: usize,
        LinePlace { offset, number: line_number }: LinePlace,
        max_record_bytes: usize,
        names: &mut Names,
        emit: &mut dyn FnMut(Record) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return ControlFlow::Continue(());
        }
        let at = || format!("{}:{line_number}", self.label);
        let result = if len > max_record_bytes {
            Err(Rejection::new(Reason::Oversized, format!("line is {len} bytes, at most {max_record_bytes}")))
        } else {
            crate::event::parse_json_with(bytes, names)
                .and_then(|event| event.into_update(None, at, Position::in_file(self.index, offset)))
        };
        emit(Record::new(result, at, Position::in_file(self.index, offset), bytes))
    }

    fn read_array(
        &self,
        max_record_bytes: usize,
        progress: &AtomicU64,
        emit: &mut dyn FnMut(Record) -> ControlFlow<()>,
    ) -> std::io::Result<()> {
        let bytes = std::fs::read(&self.path)?;
        progress.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let text = match std::str::from_utf8(&bytes) {
            Ok(text) => text,
            Err(e) => {
                let line = 1 + memchr::memchr_iter(b'\n', &bytes[..e.valid_up_to()]).count();
                let letter = DeadLetter::new(
                    format!("{}:{line}", self.label),
                    Position::in_file(self.index, e.valid_up_to() as u64),
                    Rejection::new(Reason::InvalidUtf8, format!("{e}; the JSON array file is not read")),
                    &bytes[e.valid_up_to()..],
                );
                let _ = emit(Record::Refused(letter));
                return Ok(());
            }
        };
        let mut lines = LineCounter::default();
        let mut names = Names::default();
        let mut pos = skip_ws(text, text.strip_prefix(BOM).map_or(0, |_| BOM.len()));
        debug_assert_eq!(text.as_bytes().get(pos), Some(&b'['), "detect_format saw a '['");
        pos += 1;
        // Each element is named by its line and its index in the array (`file:3[7]`): several
        // elements may share a line, and an element's place must identify it alone.
        for element_index in 0.. {
            pos = skip_ws(text, pos);
            if text.as_bytes().get(pos) == Some(&b']') {
                return self.lines_after_array(text, pos + 1, &mut lines, max_record_bytes, &mut names, emit);
            }
            let line = lines.line_at(text, pos);
            let at = || format!("{}:{line}[{element_index}]", self.label);
            let mut values = serde_json::Deserializer::from_str(&text[pos..]).into_iter::<&RawValue>();
            let element = match values.next() {
                Some(Ok(raw)) => raw.get(),
                Some(Err(e)) => return self.array_broken(at(), pos, e.to_string(), &text.as_bytes()[pos..], emit),
                None => return self.array_broken(at(), pos, "the array is not closed".into(), b"", emit),
            };
            let element_start = pos;
            pos += values.byte_offset();
            let result = if element.len() > max_record_bytes {
                Err(Rejection::new(
                    Reason::Oversized,
                    format!("element is {} bytes, at most {max_record_bytes}", element.len()),
                ))
            } else {
                Fields::from_json(element)
                    .and_then(|fields| fields.validate_with(&mut names))
                    .and_then(|event| event.into_update(None, at, Position::in_file(self.index, element_start as u64)))
            };
            let flow =
                emit(Record::new(result, at, Position::in_file(self.index, element_start as u64), element.as_bytes()));
            if flow.is_break() {
                return Ok(());
            }
            pos = skip_ws(text, pos);
            match text.as_bytes().get(pos) {
                Some(b',') => pos += 1,
                Some(b']') => {
                    return self.lines_after_array(text, pos + 1, &mut lines, max_record_bytes, &mut names, emit)
                }
                _ => {
                    let line = lines.line_at(text, pos);
                    let at = format!("{}:{line}", self.label);
                    return self.array_broken(
                        at,
                        pos,
                        "expected ',' or ']' between elements".into(),
                        &text.as_bytes()[pos..],
                        emit,
                    );
                }
            }
        }
        unreachable!("the loop over elements returns")
    }

    /// What follows a JSON array's closing `]` is read as JSON lines (a file that starts with
    /// an array and goes on with events, one per line), never silently dropped.
    fn lines_after_array(
        &self,
        text: &str,
        mut pos: usize,
        lines: &mut LineCounter,
        max_record_bytes: usize,
        names: &mut Names,
        emit: &mut dyn FnMut(Record) -> ControlFlow<()>,
    ) -> std::io::Result<()> {
        while pos < text.len() {
            let end = memchr::memchr(b'\n', &text.as_bytes()[pos..]).map_or(text.len(), |n| pos + n);
            let bytes = &text.as_bytes()[pos..end];
            let place = LinePlace { offset: pos as u64, number: lines.line_at(text, pos) as u64 };
            if self.line(bytes, bytes.len(), place, max_record_bytes, names, emit).is_break() {
                break;
            }
            pos = end + 1;
        }
        Ok(())
    }

    /// A JSON array that stops being valid: its remainder becomes one dead letter.
    fn array_broken(
        &self,
        at: String,
        offset: usize,
        why: String,
        rest: &[u8],
        emit: &mut dyn FnMut(Record) -> ControlFlow<()>,
    ) -> std::io::Result<()> {
        let rejection = Rejection::new(Reason::InvalidJson, format!("{why}; the rest of the JSON array is not read"));
        let position = Position::in_file(self.index, offset as u64);
        let _ = emit(Record::Refused(DeadLetter::new(at, position, rejection, rest)));
        Ok(())
    }

    fn read_csv(
        &self,
        max_record_bytes: usize,
        progress: &AtomicU64,
        emit: &mut dyn FnMut(Record) -> ControlFlow<()>,
    ) -> Result<(), HistoryError> {
        let io = |source| HistoryError::Io { path: self.label.clone(), source };
        let file = File::open(&self.path).map_err(io)?;
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
        let header = reader.headers().map_err(|e| io(e.into()))?.clone();
        let columns = CsvColumns::from_header(&header);
        for column in ["customer", "amount"] {
            if !header.iter().any(|h| h.trim() == column) {
                return Err(HistoryError::MissingColumn { path: self.label.clone(), column });
            }
        }
        let mut raw = csv::ByteRecord::new();
        let mut names = Names::default();
        let mut last_byte = 0;
        loop {
            let line = reader.position().line();
            let at = || format!("{}:{line}", self.label);
            let read = reader.read_byte_record(&mut raw);
            let byte = reader.position().byte();
            progress.fetch_add(byte - last_byte, Ordering::Relaxed);
            last_byte = byte;
            let joined = || raw.iter().collect::<Vec<_>>().join(&b","[..]);
            let position = Position::in_file(self.index, raw.position().map_or(byte, |p| p.byte()));
            let result = match read {
                Ok(false) => return Ok(()),
                Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => return Err(io(e.into())),
                Err(e) => Err(Rejection::new(Reason::InvalidCsv, e.to_string())),
                Ok(true) if raw.as_slice().len() > max_record_bytes => Err(Rejection::new(
                    Reason::Oversized,
                    format!("row is {} bytes, at most {max_record_bytes}", raw.as_slice().len()),
                )),
                Ok(true) => match csv::StringRecord::from_byte_record(raw.clone()) {
                    Err(e) => Err(Rejection::new(Reason::InvalidUtf8, e.to_string())),
                    Ok(row) => Fields::from_csv(&row, &columns)
                        .validate_with(&mut names)
                        .and_then(|event| event.into_update(None, at, position)),
                },
            };
            let flow = emit(Record::new(result, at, position, &joined()));
            if flow.is_break() {
                return Ok(());
            }
        }
    }
}

/// Where a line starts: its byte offset and its number (from 1).
#[derive(Clone, Copy)]
struct LinePlace {
    offset: u64,
    number: u64,
}

/// `.csv` files are CSV; a file that opens with `[` followed by an object (or `]`) is a
/// JSON array of events; anything else is JSON lines (whose first line may itself be a bad
/// record such as `[1,2]`, which must become a dead letter, not change the format).
fn detect_format(path: &Path) -> std::io::Result<Format> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
        return Ok(Format::Csv);
    }
    let mut head = [0u8; 4096];
    let n = File::open(path)?.read(&mut head)?;
    let head = head[..n].strip_prefix(BOM.as_bytes()).unwrap_or(&head[..n]);
    let mut significant = head.iter().filter(|b| !b.is_ascii_whitespace());
    Ok(match (significant.next(), significant.next()) {
        (Some(b'['), Some(b'{' | b']') | None) => Format::JsonArray,
        _ => Format::JsonLines,
    })
}

/// What a path that is not a regular file is, in words.
fn file_kind(metadata: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = metadata.file_type();
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// The UTF-8 byte-order mark, accepted at the start of a JSON file as CSV readers accept it.
const BOM: &str = "\u{feff}";

/// Whether the file starts with [`BOM`] (the file's position is then anywhere).
fn starts_with_bom(file: &mut File) -> std::io::Result<bool> {
    let mut head = [0u8; 3];
    file.seek(SeekFrom::Start(0))?;
    let mut read = 0;
    while read < head.len() {
        match file.read(&mut head[read..])? {
            0 => break,
            n => read += n,
        }
    }
    Ok(head[..read] == *BOM.as_bytes())
}

/// Estimates the records of a file from the lines of its first 64 KiB.
fn estimate_records(path: &Path, len: u64) -> std::io::Result<u64> {
    let mut head = vec![0u8; 64 << 10];
    let n = File::open(path)?.read(&mut head)?;
    let lines = memchr::memchr_iter(b'\n', &head[..n]).count() as u64;
    Ok(if n == 0 { 0 } else { len * lines.max(1) / n as u64 })
}

/// The offset of the first line that starts at or after `start`.
fn first_line_start(file: &mut File, start: u64) -> std::io::Result<u64> {
    if start == 0 {
        return Ok(0);
    }
    file.seek(SeekFrom::Start(start - 1))?;
    let mut reader = BufReader::with_capacity(64 << 10, &mut *file);
    let mut skipped = Vec::new();
    let n = reader.read_until(b'\n', &mut skipped)?;
    Ok(start - 1 + n as u64)
}

/// How many newlines the file holds before `upto`.
fn count_newlines(file: &mut File, upto: u64) -> std::io::Result<u64> {
    file.seek(SeekFrom::Start(0))?;
    let mut block = vec![0u8; 1 << 20];
    let mut left = upto;
    let mut count = 0u64;
    while left > 0 {
        let want = left.min(block.len() as u64) as usize;
        let n = file.read(&mut block[..want])?;
        if n == 0 {
            break;
        }
        count += memchr::memchr_iter(b'\n', &block[..n]).count() as u64;
        left -= n as u64;
    }
    Ok(count)
}

fn skip_ws(text: &str, mut pos: usize) -> usize {
    let bytes = text.as_bytes();
    while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
        pos += 1;
    }
    pos
}

/// Turns increasing byte offsets into line numbers without rescanning.
#[derive(Default)]
struct LineCounter {
    offset: usize,
    newlines: usize,
}

impl LineCounter {
    fn line_at(&mut self, text: &str, pos: usize) -> usize {
        self.newlines += memchr::memchr_iter(b'\n', &text.as_bytes()[self.offset..pos]).count();
        self.offset = pos;
        self.newlines + 1
    }
}
