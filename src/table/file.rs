//! A table's file read into changes: CSV with a header (`.csv`), a JSON array, or JSON lines —
//! each record decoded by the table's columns ([`super::decode`]) or refused, with its place
//! (`customers.csv:3`, `customers.json[2]`) for the dead letter. Reading is the caller's to
//! schedule: the worker that feeds a table runs it on a thread of its own and admits the
//! changes a part per turn ([`crate::run::feeds`]), so a large file never stops the stream.

use super::{decode, TableDef, Upsert, MAX_FILE_BYTES};
use crate::event::{Position, Reason, Rejection};

/// A record of a table's file, decoded or refused.
pub struct Decoded {
    /// The change, or why not.
    pub change: Result<Upsert, Rejection>,
    /// Where: `path:line` or `path[index]`.
    pub place: String,
    /// The same, in order.
    pub position: Position,
    /// Its bytes (the dead letter's).
    pub raw: Vec<u8>,
}

/// Reads `path` for table `def`, handing each record to `emit` until it says stop (false);
/// a record over `max_record_bytes` is refused as oversized.
pub fn read(
    def: &TableDef,
    path: &str,
    max_record_bytes: usize,
    emit: &mut dyn FnMut(Decoded) -> bool,
) -> std::io::Result<()> {
    let size = std::fs::metadata(path)?.len();
    if size > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!("{size} bytes, at most {MAX_FILE_BYTES}")));
    }
    let bytes = std::fs::read(path)?;
    // Files are not partitions: their positions are numbered apart from Kafka's.
    let position = |line: usize| Position::in_file(u32::MAX >> 1, line as u64);
    let oversized =
        |len: usize| Rejection::new(Reason::Oversized, format!("record is {len} bytes, at most {max_record_bytes}"));
    let cut = |raw: &[u8]| raw[..raw.len().min(max_record_bytes)].to_vec();
    if path.to_lowercase().ends_with(".csv") {
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes.as_slice());
        let headers: Vec<String> = reader.headers().map_err(std::io::Error::other)?.iter().map(String::from).collect();
        for (i, record) in reader.records().enumerate() {
            let line = i + 2;
            let (change, raw) = match record {
                Ok(record) => {
                    let raw = record.iter().collect::<Vec<_>>().join(",").into_bytes();
                    if raw.len() > max_record_bytes {
                        (Err(oversized(raw.len())), cut(&raw))
                    } else {
                        (decode::csv(def, &headers, &record), raw)
                    }
                }
                Err(error) => (Err(Rejection::new(Reason::InvalidCsv, error.to_string())), Vec::new()),
            };
            if !emit(Decoded { change, place: format!("{path}:{line}"), position: position(line), raw }) {
                return Ok(());
            }
        }
        return Ok(());
    }
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim_start_matches('\u{feff}');
    if text.trim_start().starts_with('[') {
        match serde_json::from_str::<Vec<serde_json::Value>>(text) {
            Ok(values) => {
                for (i, value) in values.iter().enumerate() {
                    let raw = value.to_string().into_bytes();
                    let change = if raw.len() > max_record_bytes {
                        Err(oversized(raw.len()))
                    } else {
                        decode::object(def, value)
                    };
                    let raw = cut(&raw);
                    if !emit(Decoded { change, place: format!("{path}[{i}]"), position: position(i), raw }) {
                        return Ok(());
                    }
                }
            }
            Err(error) => {
                let change = Err(Rejection::new(Reason::InvalidJson, format!("not a JSON array: {error}")));
                emit(Decoded { change, place: path.to_owned(), position: position(0), raw: Vec::new() });
            }
        }
        return Ok(());
    }
    for (i, line) in text.as_bytes().split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let change = if line.len() > max_record_bytes {
            Err(oversized(line.len()))
        } else {
            decode::json(def, Some(line), None)
        };
        let decoded = Decoded { change, place: format!("{path}:{}", i + 1), position: position(i + 1), raw: cut(line) };
        if !emit(decoded) {
            return Ok(());
        }
    }
    Ok(())
}
