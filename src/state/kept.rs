//! The views' state kept beside a snapshot, so that a restart puts the views back instead
//! of recomputing them from every live transaction.
//!
//! A snapshot holds the versions; the views are a function of them, but computing them again
//! from 9M transactions is most of a restart (the groups of the `customers` view and of each
//! view created with `GROUP BY`, and the totals). With every snapshot each worker's groups,
//! captured at the snapshot's time ([`crate::run::capture`]), are written by the snapshot
//! writer into `views-<time>-<worker>.bin` once the snapshot is on disk; at a clean stop
//! each worker writes them itself for the last snapshot, if they hold exactly the records of
//! its time (and the file is not there yet). The totals are in the snapshot itself. A
//! restart uses the files only if every worker has one, each matching the snapshot's time,
//! the number of workers, this build's hashing (which decides where each group lives) and
//! the views installed; otherwise the views are computed from the versions as before. The
//! files of older snapshots are removed when a newer one's are written.
//!
//! ```text
//! "ALVIEWS\n"  u32 header length  header (JSON)  u32 CRC-32 of the header
//! for each section (the customers view, then each created view by id):
//!     u64 id  u64 length  bytes (see crate::dataflow::groups)  u32 CRC-32 of the bytes
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dataflow::Time;

const MAGIC: &[u8; 8] = b"ALVIEWS\n";

/// The section of the `customers` view (created views' ids count up from 1).
pub const CUSTOMERS: u64 = u64::MAX;

/// What a kept state must match to be used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The snapshot's logical time.
    pub time: Time,
    /// The worker that kept it.
    pub worker: usize,
    /// How many workers there were.
    pub workers: usize,
    /// This build and the settings the views depend on ([`build`]).
    pub build: String,
    /// The sections' ids, in order.
    pub sections: Vec<u64>,
}

/// What the views' state depends on besides the versions: the program's version, where its
/// hashing puts a group (a group lives on the worker its key hashes to), and the filter the
/// views are computed through.
pub fn build(filter: Option<&crate::filter::Filter>) -> String {
    use differential_dataflow::Hashable;
    let probe = crate::dataflow::created::GroupKey::Text("probe".into()).hashed();
    format!("{} {:x} {:x} filter {filter:?}", env!("CARGO_PKG_VERSION"), "probe".hashed(), probe)
}

fn file_name(time: Time, worker: usize) -> String {
    format!("views-{time:020}-{worker}.bin")
}

fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// A section's bytes, handed to a sink piece by piece (streamed into the file: a worker's
/// groups are tens of megabytes, which a buffer would take as many fresh pages for).
pub type Encode<'a> = Box<dyn FnOnce(&mut dyn FnMut(&[u8])) + 'a>;

/// A section of bytes already in memory.
pub fn bytes(bytes: &[u8]) -> Encode<'_> {
    Box::new(move |sink| sink(bytes))
}

/// Writes `sections` (id, encoding) as `header.worker`'s kept state, atomically, and removes
/// the files of older snapshots.
pub fn write(dir: &Path, header: &Header, sections: Vec<(u64, Encode<'_>)>) -> std::io::Result<PathBuf> {
    use std::io::{Seek, SeekFrom, Write};
    use std::sync::atomic::{AtomicU64, Ordering};
    // The snapshot writer and a stopping worker may write the same file at once: each
    // writes its own temporary file, and either rename leaves a whole file.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(file_name(header.time, header.worker));
    let write = WRITES.fetch_add(1, Ordering::Relaxed);
    let temporary = dir.join(format!(".{}.{write}.tmp", file_name(header.time, header.worker)));
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&temporary)?);
    let head = serde_json::to_vec(header).expect("a header serializes");
    out.write_all(MAGIC)?;
    out.write_all(&(head.len() as u32).to_le_bytes())?;
    out.write_all(&head)?;
    out.write_all(&crc(&head).to_le_bytes())?;
    for (id, encode) in sections {
        out.write_all(&id.to_le_bytes())?;
        // The length is known once the section is written: written then, in its place.
        let length_at = out.stream_position()?;
        out.write_all(&0u64.to_le_bytes())?;
        let (mut length, mut crc, mut failed) = (0u64, crc32fast::Hasher::new(), None);
        encode(&mut |piece: &[u8]| {
            if failed.is_none() {
                length += piece.len() as u64;
                crc.update(piece);
                failed = out.write_all(piece).err();
            }
        });
        if let Some(error) = failed {
            return Err(error);
        }
        out.write_all(&crc.finalize().to_le_bytes())?;
        let end = out.stream_position()?;
        out.seek(SeekFrom::Start(length_at))?;
        out.write_all(&length.to_le_bytes())?;
        out.seek(SeekFrom::Start(end))?;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, &path)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all())?;
    // Files of older snapshots are of no use any more, nor what a crash left half written.
    // (Those of this one may be being written by the other workers; none is newer: the
    // snapshot writer keeps only the newest snapshot's.)
    for (stale, time) in files(dir) {
        if time < header.time {
            let _ = std::fs::remove_file(stale);
        }
    }
    Ok(path)
}

/// Every kept-state file in `dir`, finished or temporary, with its snapshot's time.
fn files(dir: &Path) -> Vec<(PathBuf, Time)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let time_of = |name: &str| {
        let rest = name.strip_prefix('.').unwrap_or(name).strip_prefix("views-")?;
        rest.get(..20)?.parse::<Time>().ok()
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter_map(|p| {
            let time = p.file_name().and_then(|n| n.to_str()).and_then(time_of)?;
            Some((p, time))
        })
        .collect()
}

/// One worker's kept state, mapped and checked.
pub struct Kept {
    /// Its header.
    pub header: Header,
    /// The file, mapped (read from the page cache, not copied).
    bytes: memmap2::Mmap,
    /// Each section's id and where its bytes are.
    ranges: Vec<(u64, std::ops::Range<usize>)>,
}

impl Kept {
    /// Its sections: (id, bytes), in order.
    pub fn sections(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.ranges.iter().map(|(id, range)| (*id, &self.bytes[range.clone()]))
    }
}

/// Maps and checks worker `worker`'s kept state for the snapshot at `time`: `None` if there
/// is none, or it is damaged (said in the log).
pub fn read(dir: &Path, time: Time, worker: usize) -> Option<Kept> {
    let path = dir.join(file_name(time, worker));
    let file = std::fs::File::open(&path).ok()?;
    // SAFETY: these files are written once under a temporary name and renamed into place,
    // never modified; one removed by a later stop while mapped stays readable until unmapped.
    let bytes = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let kept = parse(bytes);
    if kept.is_none() {
        tracing::warn!(path = %path.display(), "the views' kept state is damaged; the views are computed again");
    }
    kept
}

fn parse(bytes: memmap2::Mmap) -> Option<Kept> {
    let mut at = MAGIC.len();
    let mut take = |n: usize| -> Option<std::ops::Range<usize>> {
        let range = at..at.checked_add(n).filter(|end| *end <= bytes.len())?;
        at = range.end;
        Some(range)
    };
    let u32_in = |r: std::ops::Range<usize>| u32::from_le_bytes(bytes[r].try_into().expect("4 bytes"));
    let u64_in = |r: std::ops::Range<usize>| u64::from_le_bytes(bytes[r].try_into().expect("8 bytes"));
    if !bytes.starts_with(MAGIC) {
        return None;
    }
    let length = u32_in(take(4)?) as usize;
    let head = take(length)?;
    if u32_in(take(4)?) != crc(&bytes[head.clone()]) {
        return None;
    }
    let header: Header = serde_json::from_slice(&bytes[head]).ok()?;
    let mut ranges = Vec::with_capacity(header.sections.len());
    for &expected in &header.sections {
        let id = u64_in(take(8)?);
        let length = usize::try_from(u64_in(take(8)?)).ok()?;
        let section = take(length)?;
        if id != expected || u32_in(take(4)?) != crc(&bytes[section.clone()]) {
            return None;
        }
        ranges.push((id, section));
    }
    (at == bytes.len()).then_some(Kept { header, bytes, ranges })
}

/// Whether worker `worker`'s file for the snapshot at `time` is there, intact, and usable
/// by a restart with `workers` workers, `build` and `sections` (so a stop need not write it
/// again).
pub fn holds(dir: &Path, time: Time, (worker, workers): (usize, usize), build: &str, sections: &[u64]) -> bool {
    read(dir, time, worker).is_some_and(|kept| kept.matches(time, (worker, workers), build, sections))
}

/// This worker's kept state for the snapshot at `time`, if every one of `workers` workers
/// kept its state for it, each file intact, matching `build` and holding every one of the
/// `sections` this run needs (others, such as the views `lambda batch` does not keep, are
/// left unread). Every worker asks the same question of the same files, so all of them
/// decide alike.
pub fn usable(
    dir: &Path,
    time: Time,
    (worker, workers): (usize, usize),
    build: &str,
    sections: &[u64],
) -> Option<Kept> {
    let mut mine = None;
    for w in 0..workers {
        let kept = read(dir, time, w).filter(|k| k.matches(time, (w, workers), build, sections))?;
        if w == worker {
            mine = Some(kept);
        }
    }
    mine
}

impl Kept {
    /// Whether it was kept for the snapshot at `time` by worker `worker` of `workers`, with
    /// `build`, and holds every one of `sections`.
    fn matches(&self, time: Time, (worker, workers): (usize, usize), build: &str, sections: &[u64]) -> bool {
        let h = &self.header;
        let holds = sections.iter().all(|s| h.sections.contains(s));
        h.time == time && h.worker == worker && h.workers == workers && h.build == build && holds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(worker: usize) -> Header {
        Header { time: 7, worker, workers: 2, build: build(None), sections: vec![3, CUSTOMERS] }
    }

    #[test]
    fn kept_state_is_used_only_when_whole_and_matching() {
        let amount_over_1 = crate::filter::Filter::parse("amount > 1", crate::filter::Kind::Event).unwrap();
        let dir = std::env::temp_dir().join(format!("kept-views-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sections: Vec<(u64, Vec<u8>)> = vec![(3, vec![1, 2, 3]), (CUSTOMERS, vec![9; 100])];
        let encoded = || sections.iter().map(|(id, b)| (*id, bytes(b))).collect::<Vec<_>>();
        write(&dir, &header(0), encoded()).unwrap();
        assert!(usable(&dir, 7, (0, 2), &build(None), &[3, CUSTOMERS]).is_none(), "worker 1 kept nothing yet");
        write(&dir, &header(1), encoded()).unwrap();
        assert!(usable(&dir, 7, (0, 2), &build(None), &[3, CUSTOMERS]).is_some());
        let read_back: Vec<(u64, Vec<u8>)> =
            read(&dir, 7, 1).unwrap().sections().map(|(id, b)| (id, b.to_vec())).collect();
        assert_eq!(read_back, sections);
        assert!(usable(&dir, 8, (0, 2), &build(None), &[3, CUSTOMERS]).is_none(), "another snapshot");
        assert!(usable(&dir, 7, (0, 2), &build(Some(&amount_over_1)), &[3, CUSTOMERS]).is_none(), "another filter");
        assert!(usable(&dir, 7, (0, 2), &build(None), &[3, 4, CUSTOMERS]).is_none(), "a view created since");
        assert!(usable(&dir, 7, (0, 2), &build(None), &[CUSTOMERS]).is_some(), "the customers alone (lambda batch)");
        // One byte changed anywhere is found.
        let path = dir.join(file_name(7, 1));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 10;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(usable(&dir, 7, (0, 2), &build(None), &[3, CUSTOMERS]).is_none(), "a damaged file");
        assert!(holds(&dir, 7, (0, 2), &build(None), &[3]) && !holds(&dir, 7, (0, 2), &build(None), &[4]));
        assert!(!holds(&dir, 7, (0, 3), &build(None), &[3]), "kept by 2 workers, not 3");
        // A newer snapshot's files remove an older snapshot's, every worker's, and what a
        // crash left half written; never a newer one's.
        std::fs::write(dir.join(format!(".{}.5.tmp", file_name(8, 0))), b"half").unwrap();
        write(&dir, &Header { time: 10, ..header(1) }, encoded()).unwrap();
        write(&dir, &Header { time: 9, ..header(0) }, encoded()).unwrap();
        assert!(read(&dir, 9, 0).is_some() && read(&dir, 10, 1).is_some());
        let left: Vec<Time> = files(&dir).into_iter().map(|(_, t)| t).collect();
        assert!(left.iter().all(|t| *t >= 9), "{left:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
