//! Dead letters: every refused record, kept with its raw bytes, place and reason.
//!
//! Refused records never reach a view. Each one is appended as one JSON line to the
//! dead-letter file, and its reason is counted by the `dead_letters` view:
//!
//! ```text
//! {"source":"datasets/transactions.json:7","reason":"bad_amount","detail":"amount is a string, not a JSON number","raw":"{\"customer\":\"Ali\",\"amount\":\"12\"}"}
//! ```
//!
//! Raw bytes that are not UTF-8 are written as `raw_base64` instead of `raw`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;
use serde::Serialize;

use crate::event::{Position, Reason, Rejection};

/// The most raw bytes kept for one dead letter (the rest of an oversized record is cut).
pub const MAX_RAW_BYTES: usize = 64 * 1024;

/// How the source of a table's dead letter begins (`table NAME: PLACE`): a table's file and
/// topic are read again whole at every start.
pub const TABLE_LETTER_PREFIX: &str = "table ";

/// One refused record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Where it came from: `file:line` or `topic/partition/offset`.
    pub source: String,
    /// The same place, in source order (strict mode reports the earliest).
    pub position: Position,
    /// Why it was refused.
    pub rejection: Rejection,
    /// Its bytes, as read (at most [`MAX_RAW_BYTES`]).
    pub raw: Vec<u8>,
}

impl DeadLetter {
    /// A dead letter for `raw` at `source`.
    pub fn new(source: String, position: Position, rejection: Rejection, raw: &[u8]) -> Self {
        DeadLetter { source, position, rejection, raw: raw[..raw.len().min(MAX_RAW_BYTES)].to_vec() }
    }

    /// The reason, for counting.
    pub fn reason(&self) -> Reason {
        self.rejection.reason
    }

    /// The JSON line written to the dead-letter file (without the newline).
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Line<'a> {
            source: &'a str,
            reason: Reason,
            detail: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            raw: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            raw_base64: Option<String>,
        }
        let text = std::str::from_utf8(&self.raw).ok();
        let line = Line {
            source: &self.source,
            reason: self.rejection.reason,
            detail: &self.rejection.detail,
            raw: text,
            raw_base64: text.is_none().then(|| base64::engine::general_purpose::STANDARD.encode(&self.raw)),
        };
        serde_json::to_string(&line).expect("a dead letter always serializes")
    }
}

/// The dead-letter file, shared by every worker of this process.
pub struct DeadLetterFile {
    path: PathBuf,
    writer: Mutex<BufWriter<File>>,
    /// Set once [`DeadLetterFile::prepare`] has run (by the first worker to call it).
    prepared: std::sync::OnceLock<Result<(), String>>,
}

impl DeadLetterFile {
    /// Opens `path` for appending, creating it and its directory.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(DeadLetterFile {
            path: path.to_owned(),
            writer: Mutex::new(BufWriter::new(file)),
            prepared: std::sync::OnceLock::new(),
        })
    }

    /// Makes the file hold exactly the dead letters of what the run has admitted, before
    /// anything is written: a run that starts from the history starts the file afresh (it
    /// reads everything again); a run that resumes from a snapshot keeps the letters of what
    /// the snapshot holds and drops those of `topic`'s messages at or after the snapshot's
    /// next offsets (`partition → offset`), which it is about to read — and refuse — again.
    ///
    /// Every worker of the process calls this; the first one does it, the others wait.
    pub fn prepare(&self, resumed: Option<(&str, &BTreeMap<i32, i64>)>) -> std::io::Result<()> {
        let done = self.prepared.get_or_init(|| {
            let mut writer = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let prepared = match resumed {
                None => writer.flush().and_then(|()| writer.get_ref().set_len(0)),
                Some((topic, offsets)) => {
                    writer.flush().and_then(|()| self.drop_read_again(&mut writer, topic, offsets))
                }
            };
            prepared.map_err(|e| e.to_string())
        });
        done.clone().map_err(std::io::Error::other)
    }

    /// Rewrites the file without the letters of messages at or after `offsets`.
    fn drop_read_again(
        &self,
        writer: &mut BufWriter<File>,
        topic: &str,
        offsets: &BTreeMap<i32, i64>,
    ) -> std::io::Result<()> {
        let text = std::fs::read(&self.path)?;
        let read_again = |line: &[u8]| -> bool {
            #[derive(serde::Deserialize)]
            struct Source<'a> {
                #[serde(borrow)]
                source: std::borrow::Cow<'a, str>,
            }
            let Ok(Source { source }) = serde_json::from_slice::<Source>(line) else { return false };
            // A table's file and topic are read again whole at every start.
            if source.starts_with(TABLE_LETTER_PREFIX) {
                return true;
            }
            let Some((partition, offset)) = kafka_place(&source, topic) else { return false };
            offset >= offsets.get(&partition).copied().unwrap_or(0)
        };
        let kept: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').filter(|l| !read_again(l)).collect();
        let dropped = text.split_inclusive(|b| *b == b'\n').count() - kept.len();
        if dropped == 0 {
            return Ok(());
        }
        // The file is rewritten beside itself and renamed over: a crash leaves the old or the
        // new, never half of one.
        let temporary = self.path.with_extension("resume.tmp");
        {
            let mut out = BufWriter::new(File::create(&temporary)?);
            for line in &kept {
                out.write_all(line)?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        std::fs::rename(&temporary, &self.path)?;
        let file = OpenOptions::new().append(true).open(&self.path)?;
        *writer = BufWriter::new(file);
        tracing::info!(path = %self.path.display(), dropped, "dead letters of messages to be read again were removed");
        Ok(())
    }

    /// Appends one dead letter.
    pub fn write(&self, letter: &DeadLetter) -> std::io::Result<()> {
        let mut writer = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        writeln!(writer, "{}", letter.to_json())
    }

    /// Flushes what was written to the file.
    pub fn flush(&self) -> std::io::Result<()> {
        self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).flush()
    }

    /// Flushes what was written and waits until it is on disk.
    pub fn sync(&self) -> std::io::Result<()> {
        let mut writer = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        writer.flush()?;
        writer.get_ref().sync_data()
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The partition and offset of a dead letter's source, when it is a message of `topic`
/// (`topic/partition/offset`).
fn kafka_place(source: &str, topic: &str) -> Option<(i32, i64)> {
    let rest = source.strip_prefix(topic)?.strip_prefix('/')?;
    let (partition, offset) = rest.split_once('/')?;
    Some((partition.parse().ok()?, offset.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_text_or_base64() {
        let text =
            DeadLetter::new("f:1".into(), Position::in_file(0, 0), Rejection::new(Reason::InvalidJson, "x"), b"{oops");
        assert_eq!(text.to_json(), r#"{"source":"f:1","reason":"invalid_json","detail":"x","raw":"{oops"}"#);
        let bytes =
            DeadLetter::new("f:2".into(), Position::in_file(0, 6), Rejection::new(Reason::InvalidUtf8, "y"), b"\xff");
        assert_eq!(bytes.to_json(), r#"{"source":"f:2","reason":"invalid_utf8","detail":"y","raw_base64":"/w=="}"#);
    }
}
