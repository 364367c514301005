//! The state directory: durable snapshots that a restart resumes from.
//!
//! A snapshot is what the batch layer of a Lambda architecture produces: everything admitted
//! so far, folded and compacted — the latest version of every transaction (tombstones too,
//! so that a redelivered old message cannot bring a deleted one back), the dead-letter
//! counts, and the next Kafka offset of every partition, all as of one logical time. A
//! restart loads it as its initial collection instead of the history files and seeks every
//! partition to its offsets.
//!
//! One file per snapshot, `snapshot-<time>.snap`, written in one pass (the shards are
//! encoded straight into the file, so the meta, with their lengths and checksums, comes last):
//!
//! ```text
//! "ALSNAP\r\n"  u32 format
//! shard 0 bytes  shard 1 bytes  ...
//! meta (JSON)  u32 meta length  u32 CRC-32 of meta  "ALSNAPND"
//! ```
//!
//! Written to a temporary file, fsynced, renamed into place, and the directory fsynced, so a
//! crash leaves either the whole new snapshot or none of it; the newest two are kept. A
//! snapshot that is truncated or whose checksums do not match is reported and skipped, and
//! the previous one is used.
//!
//! Beside the newest snapshot, the views' state as of its time is kept ([`kept`]),
//! which a restart puts back instead of computing the views from the versions again.

pub mod kept;
pub mod shard;

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::{OnInvalid, Settings};
use crate::dataflow::rows::Dimension;
use crate::dataflow::stats::Stats;
use crate::dataflow::Time;
use crate::event::Reason;

/// The format written by this version; files of another format are refused, not guessed at.
pub const FORMAT: u32 = 2;
const MAGIC: &[u8; 8] = b"ALSNAP\r\n";
const END: &[u8; 8] = b"ALSNAPND";
/// Head: magic and format. Tail: meta length, meta checksum, end magic.
const HEAD: usize = 12;
const TAIL: usize = 16;
/// How many snapshots are kept.
const KEEP: usize = 2;

/// What a snapshot says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The logical time it reflects: every record admitted at a time `<= time`.
    pub time: Time,
    /// The topic its offsets are of.
    pub topic: String,
    /// Kafka partition → next offset to read.
    pub offsets: Vec<(i32, i64)>,
    /// Refused records by reason.
    pub dead_letters: Vec<(Reason, i64)>,
    /// The history files it was first built from.
    pub history: Vec<Fingerprint>,
    /// The encoded versions, one shard per worker that held them.
    pub shards: Vec<ShardMeta>,
    /// The totals of the `overall`, `categories` and `hourly` views at `time`, put back by a
    /// restart that also finds the other views' state kept ([`kept`]); absent in snapshots
    /// of earlier versions.
    #[serde(default)]
    pub totals: Option<Vec<(Dimension, Stats)>>,
}

/// Where a shard is and how to check it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    /// How many versions it holds.
    pub versions: u64,
    /// Its length in bytes.
    pub bytes: u64,
    /// CRC-32 of its bytes.
    pub crc32: u32,
}

/// A history file as it was, to notice that it changed: its path, length, and a CRC-32 of
/// its first and last MiB (a whole-file checksum would cost a restart a full read).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The path as given.
    pub path: String,
    /// Length in bytes.
    pub bytes: u64,
    /// CRC-32 of the first and the last MiB.
    pub ends_crc32: u32,
}

/// Why a snapshot cannot be used.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a snapshot at all.
    #[error("{0}: not a snapshot file")]
    NotASnapshot(String),
    /// Written by another version of the format.
    #[error("{path}: snapshot format {found}, this program reads format {FORMAT}")]
    Format {
        /// The file.
        path: String,
        /// Its format.
        found: u32,
    },
    /// Shorter or longer than its meta says (a crash during a copy, a truncation).
    #[error("{path}: {actual} bytes where the snapshot needs {expected} (truncated?)")]
    Length {
        /// The file.
        path: String,
        /// What the meta adds up to.
        expected: u64,
        /// What is there.
        actual: u64,
    },
    /// A checksum does not match: the bytes changed after they were written.
    #[error("{path}: checksum of {what} does not match (corrupted)")]
    Checksum {
        /// The file.
        path: String,
        /// Which part.
        what: String,
    },
    /// The meta is not what this program writes.
    #[error("{path}: unreadable meta: {source}")]
    Meta {
        /// The file.
        path: String,
        /// The cause.
        source: serde_json::Error,
    },
}

/// A snapshot read and checked: its meta and each shard's bytes.
#[derive(Debug)]
pub struct Snapshot {
    /// The file it came from.
    pub path: PathBuf,
    /// What it says about itself.
    pub meta: Meta,
    /// The file, mapped: read from the page cache as it is, never copied.
    bytes: memmap2::Mmap,
    /// (start, end) of each shard in `bytes`.
    ranges: Vec<(usize, usize)>,
}

impl Snapshot {
    /// The encoded versions of shard `i` (see [`shard::decode`]).
    pub fn shard(&self, i: usize) -> &[u8] {
        let (start, end) = self.ranges[i];
        &self.bytes[start..end]
    }

    /// How many shards it has.
    pub fn shards(&self) -> usize {
        self.ranges.len()
    }

    /// How many versions it holds in all.
    pub fn versions(&self) -> u64 {
        self.meta.shards.iter().fold(0u64, |all, s| all.saturating_add(s.versions))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io { path: path.display().to_string(), source }
}

fn file_name(time: Time) -> String {
    format!("snapshot-{time:020}.snap")
}

/// Counts and checksums what passes through it.
struct Summing<W> {
    inner: W,
    bytes: u64,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a snapshot of `shards` shards into `dir` atomically — `encode(i, out)` writes
/// shard `i` and returns how many versions it holds — then removes all but the newest two.
/// Returns the new file's path and size.
pub fn write(
    dir: &Path,
    mut meta: Meta,
    shards: usize,
    mut encode: impl FnMut(usize, &mut dyn Write) -> std::io::Result<u64>,
) -> Result<(PathBuf, u64), SnapshotError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(file_name(meta.time));
    let temporary = dir.join(format!(".{}.tmp", file_name(meta.time)));
    let file = std::io::BufWriter::with_capacity(1 << 20, File::create(&temporary).map_err(io(&temporary))?);
    let mut out = Summing { inner: file, bytes: 0, crc: crc32fast::Hasher::new() };
    out.write_all(MAGIC).and_then(|()| out.write_all(&FORMAT.to_le_bytes())).map_err(io(&temporary))?;
    meta.shards.clear();
    for i in 0..shards {
        let (start, crc_before) = (out.bytes, std::mem::take(&mut out.crc));
        let versions = encode(i, &mut out).map_err(io(&temporary))?;
        let crc32 = std::mem::replace(&mut out.crc, crc_before).finalize();
        meta.shards.push(ShardMeta { versions, bytes: out.bytes - start, crc32 });
    }
    let meta_bytes = serde_json::to_vec(&meta).expect("a snapshot's meta serializes");
    let mut tail = meta_bytes.clone();
    tail.extend((meta_bytes.len() as u32).to_le_bytes());
    tail.extend(crc(&meta_bytes).to_le_bytes());
    tail.extend(END);
    out.write_all(&tail).map_err(io(&temporary))?;
    let size = out.bytes;
    let file = out.inner.into_inner().map_err(|e| io(&temporary)(e.into_error()))?;
    file.sync_all().map_err(io(&temporary))?;
    drop(file);
    std::fs::rename(&temporary, &path).map_err(io(&path))?;
    // The rename is durable only once the directory is.
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    for old in list(dir)?.into_iter().skip(KEEP) {
        if let Err(error) = std::fs::remove_file(&old) {
            tracing::warn!(path = %old.display(), %error, "cannot remove an old snapshot");
        }
    }
    Ok((path, size))
}

fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// The snapshots in `dir`, newest first (temporary files of an interrupted write are not
/// snapshots). A missing directory has none.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, SnapshotError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("snapshot-") && name.ends_with(".snap")
        })
        .collect();
    found.sort();
    found.reverse();
    Ok(found)
}

/// Reads and checks one snapshot file.
pub fn read(path: &Path) -> Result<Snapshot, SnapshotError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(io(path))?;
    // SAFETY: snapshot files are written once under a temporary name and renamed into place,
    // never modified; one removed by rotation while mapped stays readable until unmapped.
    let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(io(path))?;
    if bytes.len() < HEAD || &bytes[..8] != MAGIC {
        return Err(SnapshotError::NotASnapshot(name));
    }
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let found = word(8);
    if found != FORMAT {
        return Err(SnapshotError::Format { path: name, found });
    }
    // A write cut short lacks the end magic: a truncation, said as such.
    let truncated = |expected: u64| SnapshotError::Length { path: name.clone(), expected, actual: bytes.len() as u64 };
    if bytes.len() < HEAD + TAIL || &bytes[bytes.len() - 8..] != END {
        return Err(truncated(bytes.len() as u64 + 1));
    }
    let tail = bytes.len() - TAIL;
    let meta_len = word(tail) as usize;
    let meta_start =
        tail.checked_sub(meta_len).filter(|s| *s >= HEAD).ok_or_else(|| truncated((HEAD + meta_len + TAIL) as u64))?;
    let meta_bytes = &bytes[meta_start..tail];
    if crc(meta_bytes) != word(tail + 4) {
        return Err(SnapshotError::Checksum { path: name, what: "the meta".into() });
    }
    let meta: Meta =
        serde_json::from_slice(meta_bytes).map_err(|source| SnapshotError::Meta { path: name.clone(), source })?;
    let expected = (HEAD + meta_len + TAIL) as u64 + meta.shards.iter().map(|s| s.bytes).sum::<u64>();
    if bytes.len() as u64 != expected {
        return Err(truncated(expected));
    }
    let mut ranges = Vec::with_capacity(meta.shards.len());
    let mut at = HEAD;
    for (i, shard) in meta.shards.iter().enumerate() {
        let end = at + shard.bytes as usize;
        if crc(&bytes[at..end]) != shard.crc32 {
            return Err(SnapshotError::Checksum { path: name, what: format!("shard {i}") });
        }
        ranges.push((at, end));
        at = end;
    }
    Ok(Snapshot { path: path.to_owned(), meta, bytes, ranges })
}

/// The newest snapshot in `dir` that reads and checks, and what was wrong with the newer
/// ones (each reported, never silently skipped).
pub fn newest_valid(dir: &Path) -> Result<(Option<Snapshot>, Rejected), SnapshotError> {
    let mut rejected = Vec::new();
    for path in list(dir)? {
        match read(&path) {
            Ok(snapshot) => return Ok((Some(snapshot), rejected)),
            Err(error) => rejected.push((path, error)),
        }
    }
    Ok((None, rejected))
}

/// Snapshot files passed over, each with what is wrong with it.
pub type Rejected = Vec<(PathBuf, SnapshotError)>;

/// Moves an unusable snapshot aside (`<name>.corrupt`): it is kept for inspection, but no
/// longer counts among the snapshots, so that keeping "the newest two" keeps two usable ones.
fn move_aside(path: &Path) {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".corrupt");
    match std::fs::rename(path, &aside) {
        Ok(()) => {
            tracing::warn!(from = %path.display(), to = %Path::new(&aside).display(), "unusable snapshot moved aside")
        }
        Err(error) => tracing::error!(path = %path.display(), %error, "cannot move an unusable snapshot aside"),
    }
}

/// What `lambda run` starts from when it has a state directory: the newest snapshot that
/// reads, checks, and was built from the same history files as given now — or `None` to
/// build from the history files (an empty directory; or, with `on_invalid = rebuild`, when
/// no snapshot can be used). Every snapshot passed over is logged with the reason.
pub fn resume_point(settings: &Settings) -> anyhow::Result<Option<Snapshot>> {
    let Some(dir) = &settings.state.dir else { return Ok(None) };
    remove_interrupted_writes(dir);
    let (found, rejected) = newest_valid(dir)?;
    for (_, error) in &rejected {
        tracing::error!(%error, "snapshot unusable; trying the previous one");
    }
    // Unusable snapshots are moved aside once the run goes on without them — never when it
    // stops to ask, so that the next start asks again rather than rebuilding unasked.
    if found.is_some() || settings.state.on_invalid == OnInvalid::Rebuild {
        for (path, _) in &rejected {
            move_aside(path);
        }
    }
    let problem = match found {
        None if rejected.is_empty() => {
            tracing::info!(dir = %dir.display(), "no snapshot yet: building from the history files");
            return Ok(None);
        }
        None => format!("no usable snapshot in {} ({} unusable)", dir.display(), rejected.len()),
        Some(snapshot) => {
            let now: Vec<Fingerprint> =
                settings.input.files.iter().map(|f| fingerprint(f)).collect::<Result<_, _>>()?;
            // The same contents under another path (relative, absolute, a copy) are the same.
            let contents = |f: &[Fingerprint]| f.iter().map(|f| (f.bytes, f.ends_crc32)).collect::<Vec<_>>();
            if contents(&now) == contents(&snapshot.meta.history) && snapshot.meta.topic == settings.kafka.topic {
                return Ok(Some(snapshot));
            }
            let show = |files: &[Fingerprint]| {
                files.iter().map(|f| format!("{} ({} bytes)", f.path, f.bytes)).collect::<Vec<_>>().join(", ")
            };
            format!(
                "{} was built from other inputs than given now: history [{}] and topic {:?} then, \
                 history [{}] and topic {:?} now (a history file changed?)",
                snapshot.path.display(),
                show(&snapshot.meta.history),
                snapshot.meta.topic,
                show(&now),
                settings.kafka.topic
            )
        }
    };
    match settings.state.on_invalid {
        OnInvalid::Fail => anyhow::bail!(
            "{problem}; to rebuild the views from the history files and the whole topic instead, \
             run with --on-invalid-snapshot rebuild"
        ),
        OnInvalid::Rebuild => {
            tracing::warn!("{problem}; rebuilding from the history files and the whole topic");
            Ok(None)
        }
    }
}

/// Removes the temporary files of writes a crash interrupted (never snapshots or kept views
/// themselves).
fn remove_interrupted_writes(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if (name.starts_with(".snapshot-") || name.starts_with(".views-")) && name.ends_with(".tmp") {
            tracing::info!(path = %path.display(), "removing the remains of an interrupted snapshot write");
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// A state directory held by this process: no other `lambda run` writes or prunes its
/// snapshots while this is alive (the lock is the operating system's, so it goes with the
/// process, however it ends).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Takes `dir` for this process: creates it, checks that files can be written in it, and
/// takes an exclusive lock on `dir/LOCK`, refusing with a clear message if another process
/// holds it.
pub fn lock(dir: &Path) -> anyhow::Result<StateLock> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    // A read-only directory would otherwise fail every snapshot, once per period, forever.
    let probe = dir.join(".write-check");
    File::create(&probe)
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::remove_file(&probe))
        .with_context(|| format!("cannot write in the state directory {}", dir.display()))?;
    let path = dir.join("LOCK");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() { String::new() } else { format!(" (process {holder})") };
            anyhow::bail!(
                "another lambda run{who} is using the state directory {}; stop it first, or give this one \
                 another --state-dir",
                dir.display()
            );
        }
        Err(std::fs::TryLockError::Error(error)) => {
            return Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
    // Who holds it, for the message another process would print.
    let _ = file.set_len(0).and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(StateLock { _file: file })
}

/// The fingerprint of a history file now.
pub fn fingerprint(path: &Path) -> Result<Fingerprint, SnapshotError> {
    use std::io::{Seek, SeekFrom};
    const END: u64 = 1 << 20;
    let mut file = File::open(path).map_err(io(path))?;
    let bytes = file.metadata().map_err(io(path))?.len();
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; END.min(bytes) as usize];
    file.read_exact(&mut buffer).map_err(io(path))?;
    hasher.update(&buffer);
    if bytes > END {
        let tail = END.min(bytes - END);
        file.seek(SeekFrom::Start(bytes - tail)).map_err(io(path))?;
        buffer.resize(tail as usize, 0);
        file.read_exact(&mut buffer).map_err(io(path))?;
        hasher.update(&buffer);
    }
    Ok(Fingerprint { path: path.display().to_string(), bytes, ends_crc32: hasher.finalize() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(time: Time) -> Meta {
        Meta {
            time,
            topic: "t".into(),
            offsets: vec![(0, 5), (1, 0)],
            dead_letters: vec![(Reason::BadAmount, 2)],
            history: vec![],
            shards: vec![],
            totals: None,
        }
    }

    /// Stands for an encoded shard: only the bytes and their checksum matter here.
    fn shard(byte: u8) -> Vec<u8> {
        vec![byte; 5]
    }

    /// Writes a snapshot of the given stand-in shards.
    fn write_shards(dir: &Path, meta: Meta, shards: &[Vec<u8>]) -> (PathBuf, u64) {
        write(dir, meta, shards.len(), |i, out| out.write_all(&shards[i]).map(|()| 1)).unwrap()
    }

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("atelier-lambda-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn keeps_the_newest_two_and_reads_them_back() {
        let dir = dir("keep");
        for time in [10, 20, 30] {
            write_shards(&dir, meta(time), &[shard(1), shard(2)]);
        }
        let names: Vec<_> = list(&dir).unwrap().iter().map(|p| p.file_name().unwrap().to_owned()).collect();
        assert_eq!(names, [file_name(30), file_name(20)].map(std::ffi::OsString::from));
        let snapshot = read(&list(&dir).unwrap()[0]).unwrap();
        assert_eq!(snapshot.meta.time, 30);
        assert_eq!(snapshot.meta.offsets, vec![(0, 5), (1, 0)]);
        assert_eq!((snapshot.shards(), snapshot.shard(1), snapshot.versions()), (2, shard(2).as_slice(), 2));
    }

    #[test]
    fn a_damaged_newest_snapshot_is_reported_and_the_previous_used() {
        let dir = dir("damaged");
        write_shards(&dir, meta(10), &[shard(1)]);
        let (newest, _) = write_shards(&dir, meta(20), &[shard(2)]);
        let good = std::fs::read(&newest).unwrap();

        // A flipped byte in a shard, in the meta; a truncation; a stray temporary file.
        let mut flipped = good.clone();
        flipped[HEAD + 1] ^= 1;
        let mut meta_flipped = good.clone();
        meta_flipped[HEAD + 5 + 3] ^= 0x20;
        for (damaged, expected) in [
            (flipped, "checksum of shard 0"),
            (meta_flipped, "checksum of the meta"),
            (good[..good.len() - 2].to_vec(), "truncated"),
            (good[..10].to_vec(), "not a snapshot"),
        ] {
            std::fs::write(&newest, &damaged).unwrap();
            std::fs::write(dir.join(".snapshot-x.tmp"), b"half").unwrap();
            let (snapshot, rejected) = newest_valid(&dir).unwrap();
            assert_eq!(snapshot.expect("the previous one").meta.time, 10);
            assert_eq!(rejected.len(), 1);
            assert!(rejected[0].1.to_string().contains(expected), "{}", rejected[0].1);
        }
        std::fs::remove_file(&newest).unwrap();
        std::fs::write(list(&dir).unwrap()[0].clone(), b"ALSNAP\r\n\x09\0\0\0\0\0\0\0").unwrap();
        let (snapshot, rejected) = newest_valid(&dir).unwrap();
        assert!(snapshot.is_none());
        assert!(rejected[0].1.to_string().contains("format 9"), "{}", rejected[0].1);
    }

    #[test]
    fn fingerprints_notice_a_changed_file() {
        let dir = dir("fingerprint");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.jsonl");
        std::fs::write(&path, "{\"customer\":\"Ali\",\"amount\":1}\n").unwrap();
        let before = fingerprint(&path).unwrap();
        assert_eq!(before, fingerprint(&path).unwrap());
        std::fs::write(&path, "{\"customer\":\"Ali\",\"amount\":2}\n").unwrap();
        assert_ne!(before, fingerprint(&path).unwrap());
    }
}
