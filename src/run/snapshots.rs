//! Snapshot duties of a process while the pipeline runs: process 0 writes the files; the
//! other processes encode their workers' shards and send them to worker 0.
//!
//! ```text
//! process 0:  its workers' frozen shards ─┐
//!             a Totals read at T ─────────┼─► writer thread: gathers T's parts, writes the file
//! process i:  shards ─► encoder thread ─► worker ─(control plane)─► worker 0 ─┘
//! ```
//!
//! The writer never makes a worker wait for the disk: a worker's shard is its version table
//! frozen (shared, not copied; [`crate::dataflow::snapshot`]), encoded on the writer's thread
//! straight into the file ([`crate::state`]). With one process, each worker also hands over
//! its views' groups captured at the snapshot's time ([`super::capture`]); once the snapshot
//! is on disk the writer keeps them beside it ([`crate::state::kept`]) for the next start.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::capture::CapturedViews;
use crate::dataflow::snapshot::Shard;
use crate::dataflow::Time;
use crate::deadletter::DeadLetterFile;
use crate::reading::{ReadScope, Reading};
use crate::serve::serving::{Part, Reply};
use crate::state::{Fingerprint, Meta};

/// A shard encoded in a process other than the writer's, sent to it over the control plane.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EncodedShard {
    /// The worker whose versions it holds.
    pub worker: usize,
    /// The snapshot's logical time.
    pub time: Time,
    /// The shard's bytes ([`crate::state::shard`]).
    pub bytes: Vec<u8>,
    /// How many versions it holds.
    pub versions: u64,
}

/// What the snapshot writer gathers: every worker's shard and share of the totals at `T`.
enum ToWriter {
    /// A shard of this process, frozen.
    Frozen { worker: usize, shard: Shard },
    /// A shard of another process, encoded.
    Encoded(EncodedShard),
    /// A worker's share of the Totals read at `T` (offsets and dead-letter counts).
    Totals(Box<Part>),
    /// A worker's views captured at `T`, kept once the snapshot is on disk.
    Views(CapturedViews),
}

/// A process's side of the snapshots.
pub struct Snapshots {
    /// Process 0: the writer. Other processes: the encoder of their workers' shards.
    to_writer: Option<Sender<ToWriter>>,
    to_encoder: Option<Mutex<Sender<(usize, Shard)>>>,
    /// Shards this process's encoder has finished, for their workers to send on.
    encoded: Arc<Mutex<Vec<EncodedShard>>>,
    /// The time of the newest snapshot finished (written, or failed and logged).
    pub finished: Arc<AtomicU64>,
    /// The time of the newest snapshot on disk (0: none), which a clean stop keeps the views'
    /// state for ([`crate::state::kept`]).
    pub on_disk: Arc<AtomicU64>,
    /// How often a snapshot is taken.
    pub every: Duration,
}

/// What process 0's writer needs to know.
pub struct WriterSettings {
    /// The state directory.
    pub dir: std::path::PathBuf,
    /// The topic the offsets are of.
    pub topic: String,
    /// The history files the state was first built from.
    pub history: Vec<Fingerprint>,
    /// Every worker of every process: the parts of one snapshot.
    pub workers: usize,
    /// The time and offsets of the snapshot resumed from, already on disk.
    pub resumed: Option<(Time, Vec<(i32, i64)>)>,
    /// This process's dead letters: on disk before a snapshot says their records were read.
    pub dead_letters: Arc<DeadLetterFile>,
}

impl Snapshots {
    /// Process 0's side: starts the writer thread.
    pub fn writer(settings: WriterSettings, every: Duration) -> anyhow::Result<Snapshots> {
        let (to_writer, parts) = channel();
        let finished = Arc::new(AtomicU64::new(0));
        let (resumed_time, resumed) = settings.resumed.map_or((0, None), |(time, offsets)| (time, Some(offsets)));
        let on_disk = Arc::new(AtomicU64::new(resumed_time));
        let writer = Writer {
            dir: settings.dir,
            dead_letters: settings.dead_letters,
            topic: settings.topic,
            history: settings.history,
            workers: settings.workers,
            finished: Arc::clone(&finished),
            on_disk: Arc::clone(&on_disk),
            last_offsets: resumed,
            views: BTreeMap::new(),
            resolved: None,
            kept: BTreeMap::new(),
        };
        std::thread::Builder::new()
            .name("snapshot-writer".into())
            .spawn(move || writer.run(parts))
            .context("cannot start the snapshot writer")?;
        Ok(Snapshots {
            to_writer: Some(to_writer),
            to_encoder: None,
            encoded: Arc::default(),
            finished,
            on_disk,
            every,
        })
    }

    /// Another process's side: starts the thread that encodes its workers' shards, once its
    /// dead letters are on disk (process 0 writes the snapshot when it has every shard).
    pub fn encoder(dead_letters: Arc<DeadLetterFile>, every: Duration) -> anyhow::Result<Snapshots> {
        let (to_encoder, shards) = channel::<(usize, Shard)>();
        let encoded: Arc<Mutex<Vec<EncodedShard>>> = Arc::default();
        let done = Arc::clone(&encoded);
        std::thread::Builder::new()
            .name("snapshot-encoder".into())
            .spawn(move || {
                yield_to_the_workers();
                for (worker, shard) in shards {
                    if let Err(error) = dead_letters.sync() {
                        tracing::error!(%error, "cannot write the dead letters to disk");
                    }
                    let mut bytes = Vec::new();
                    let versions = crate::state::shard::encode(&shard.versions, &mut bytes)
                        .expect("encoding into memory cannot fail");
                    drop(shard.versions); // let the worker fold its changes back in
                    let encoded = EncodedShard { worker, time: shard.time, bytes, versions };
                    done.lock().unwrap_or_else(|p| p.into_inner()).push(encoded);
                }
            })
            .context("cannot start the snapshot encoder")?;
        Ok(Snapshots {
            to_writer: None,
            to_encoder: Some(Mutex::new(to_encoder)),
            encoded,
            finished: Arc::default(),
            on_disk: Arc::default(),
            every,
        })
    }

    /// Whether this process writes the snapshots.
    pub fn writes(&self) -> bool {
        self.to_writer.is_some()
    }

    /// Where worker 0 sends the Totals read of a snapshot.
    pub fn totals_reply(&self) -> Reply {
        let writer = self.to_writer.clone().expect("worker 0's process writes the snapshots");
        Reply::Call(Arc::new(move |part| {
            let _ = writer.send(ToWriter::Totals(Box::new(part)));
        }))
    }

    /// A worker's captured shard: to the writer (process 0) or to this process's encoder.
    pub fn captured(&self, worker: usize, shard: Shard) {
        if let Some(writer) = &self.to_writer {
            let _ = writer.send(ToWriter::Frozen { worker, shard });
        } else if let Some(encoder) = &self.to_encoder {
            let _ = encoder.lock().unwrap_or_else(|p| p.into_inner()).send((worker, shard));
        }
    }

    /// A worker's views captured for a snapshot (this process writes the snapshots).
    pub fn views_captured(&self, views: CapturedViews) {
        if let Some(writer) = &self.to_writer {
            let _ = writer.send(ToWriter::Views(views));
        }
    }

    /// A shard this process's encoder has finished for `worker`, to send to worker 0.
    pub fn encoded_for(&self, worker: usize) -> Option<EncodedShard> {
        let mut encoded = self.encoded.lock().unwrap_or_else(|p| p.into_inner());
        let at = encoded.iter().position(|e| e.worker == worker)?;
        Some(encoded.remove(at))
    }

    /// A shard another process sent (worker 0 hands it to the writer).
    pub fn received(&self, shard: EncodedShard) {
        if let Some(writer) = &self.to_writer {
            let _ = writer.send(ToWriter::Encoded(shard));
        }
    }
}

/// The snapshot writer's thread: gathers each snapshot's parts and writes the file, so that
/// the workers never wait for the disk.
struct Writer {
    dir: std::path::PathBuf,
    dead_letters: Arc<DeadLetterFile>,
    topic: String,
    history: Vec<Fingerprint>,
    workers: usize,
    finished: Arc<AtomicU64>,
    on_disk: Arc<AtomicU64>,
    /// The offsets of the newest snapshot on disk: every change to the versions comes with
    /// a move of some offset (the history is loaded once, at the start), so equal offsets
    /// mean an equal snapshot, not worth writing again.
    last_offsets: Option<Vec<(i32, i64)>>,
    /// Views captured for snapshots not finished yet, by time.
    views: BTreeMap<Time, Vec<CapturedViews>>,
    /// The newest snapshot finished, and the time of the snapshot on disk that holds the same
    /// versions (itself; an earlier one when nothing changed since; `None`: not written).
    resolved: Option<(Time, Option<Time>)>,
    /// What each worker's views file holds (the snapshot's time, the views): a snapshot with
    /// nothing new is not written again, nor are its views.
    kept: BTreeMap<usize, (Time, Vec<u64>)>,
}

/// One worker's shard as the writer holds it.
enum ShardData {
    Frozen(Shard),
    Encoded(EncodedShard),
}

/// One snapshot's parts, as they arrive.
#[derive(Default)]
struct Parts {
    shards: BTreeMap<usize, ShardData>,
    totals: Vec<Reading>,
    /// A worker could not read its totals: this snapshot is not written.
    failed: bool,
}

impl Writer {
    fn run(mut self, parts: Receiver<ToWriter>) {
        yield_to_the_workers();
        let mut gathering: BTreeMap<Time, Parts> = BTreeMap::new();
        for part in parts {
            let time = match part {
                ToWriter::Frozen { worker, shard } => {
                    let time = shard.time;
                    gathering.entry(time).or_default().shards.insert(worker, ShardData::Frozen(shard));
                    time
                }
                ToWriter::Encoded(shard) => {
                    let time = shard.time;
                    gathering.entry(time).or_default().shards.insert(shard.worker, ShardData::Encoded(shard));
                    time
                }
                ToWriter::Totals(part) if part.is_ok() => {
                    let reading = (*part).expect("matched as Ok");
                    let time = reading.time;
                    gathering.entry(time).or_default().totals.push(reading);
                    time
                }
                ToWriter::Totals(part) => {
                    let error = part.expect_err("the Ok case is matched above");
                    // Which snapshot it was is not known; the oldest one gathering is waiting.
                    tracing::error!(%error, "a worker could not read its totals for a snapshot");
                    let Some(mut oldest) = gathering.first_entry() else { continue };
                    oldest.get_mut().failed = true;
                    *oldest.key()
                }
                ToWriter::Views(views) => {
                    self.views_arrived(views);
                    continue;
                }
            };
            let parts = gathering.get(&time);
            let complete = parts.is_some_and(|p| p.shards.len() == self.workers && p.totals.len() == self.workers);
            if parts.is_some_and(|p| p.failed) || complete {
                let parts = gathering.remove(&time).expect("just looked at it");
                let on_disk = if parts.failed { None } else { self.write(time, parts) };
                self.resolved = Some((time, on_disk));
                // Views captured for this snapshot are kept now; those of earlier ones never.
                let mut ready = self.views.split_off(&(time + 1));
                std::mem::swap(&mut ready, &mut self.views);
                for views in ready.into_values().flatten() {
                    self.views_arrived(views);
                }
                self.finished.fetch_max(time, Ordering::SeqCst);
            }
        }
    }

    /// Views captured at `views.time`: kept beside the snapshot on disk that holds the same
    /// versions, once that snapshot is finished; dropped if a newer one is on disk by then.
    fn views_arrived(&mut self, views: CapturedViews) {
        match self.resolved {
            Some((time, _)) if time < views.time => self.views.entry(views.time).or_default().push(views),
            None => self.views.entry(views.time).or_default().push(views),
            Some((time, Some(on_disk))) if time == views.time => {
                if self.on_disk.load(Ordering::SeqCst) == on_disk {
                    self.keep_views(on_disk, views);
                }
            }
            Some(_) => {} // not written, or an older snapshot's
        }
    }

    /// Encodes a worker's captured views and writes them beside the snapshot at `on_disk`.
    fn keep_views(&mut self, on_disk: Time, views: CapturedViews) {
        let started = Instant::now();
        let CapturedViews { worker, build, sections, .. } = views;
        let ids: Vec<u64> = sections.iter().map(|s| s.0).collect();
        if self.kept.get(&worker) == Some(&(on_disk, ids.clone())) {
            return;
        }
        let header =
            crate::state::kept::Header { time: on_disk, worker, workers: self.workers, build, sections: ids.clone() };
        let sections: Vec<(u64, crate::state::kept::Encode)> =
            sections.into_iter().map(|(id, encode)| (id, encode as crate::state::kept::Encode)).collect();
        match crate::state::kept::write(&self.dir, &header, sections) {
            Ok(path) => {
                self.kept.insert(worker, (on_disk, ids));
                tracing::debug!(
                    path = %path.display(),
                    ms = started.elapsed().as_millis() as u64,
                    "the views' state is kept beside the snapshot"
                )
            }
            Err(error) => tracing::warn!(%error, "cannot keep the views' state beside the snapshot"),
        }
    }

    /// Writes the snapshot at `time`, unless it holds what the one on disk does. Returns the
    /// time of the snapshot on disk with these versions (`None`: none, it could not be written).
    fn write(&mut self, time: Time, parts: Parts) -> Option<Time> {
        let started = Instant::now();
        let totals = Reading::merge_scope(parts.totals, &ReadScope::Totals);
        if self.last_offsets.as_ref() == Some(&totals.offsets) {
            tracing::debug!(time, "nothing admitted since the last snapshot; not written again");
            return Some(self.on_disk.load(Ordering::SeqCst));
        }
        let offsets = totals.offsets.clone();
        // Once the snapshot is on disk, a restart never reads its records again: their dead
        // letters must be on disk first (the other processes write theirs before they send
        // their shards).
        if let Err(error) = self.dead_letters.sync() {
            tracing::error!(%error, time, "cannot write the dead letters to disk; the snapshot waits for the next period");
            return None;
        }
        // How long capturing held the workers of this process (the others' are not known here).
        let pause = parts
            .shards
            .values()
            .filter_map(|s| match s {
                ShardData::Frozen(shard) => Some(shard.pause),
                ShardData::Encoded(_) => None,
            })
            .max()
            .unwrap_or_default();
        let shards: Vec<ShardData> = parts.shards.into_values().collect();
        let by_dimension = totals.totals_by_dimension();
        let meta = Meta {
            time,
            topic: self.topic.clone(),
            offsets: totals.offsets,
            dead_letters: totals.dead_letters,
            history: self.history.clone(),
            shards: Vec::new(),
            totals: Some(by_dimension),
        };
        let mut versions = 0;
        let written = crate::state::write(&self.dir, meta, shards.len(), |i, out| {
            let n = match &shards[i] {
                ShardData::Frozen(shard) => crate::state::shard::encode(&shard.versions, out)?,
                ShardData::Encoded(shard) => out.write_all(&shard.bytes).map(|()| shard.versions)?,
            };
            versions += n;
            Ok(n)
        });
        // Let go of the frozen versions at once: the workers fold their changes back in.
        drop(shards);
        match written {
            Ok((path, bytes)) => {
                self.last_offsets = Some(offsets);
                self.on_disk.store(time, Ordering::SeqCst);
                tracing::info!(
                    path = %path.display(),
                    time,
                    versions,
                    bytes,
                    write_ms = started.elapsed().as_millis() as u64,
                    longest_worker_pause_ms = pause.as_secs_f64() * 1000.0,
                    "snapshot written"
                );
                Some(time)
            }
            Err(error) => {
                tracing::error!(%error, time, "cannot write a snapshot; the previous ones are kept");
                None
            }
        }
    }
}

/// Lowers this thread's scheduling priority (nice 10): a snapshot can wait a little, the
/// workers cannot. On 2 cores, encoding half a gigabyte and the views' state at normal
/// priority took turns with the workers and put its time into the freshness of messages.
fn yield_to_the_workers() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid takes no argument; setpriority with PRIO_PROCESS and a thread id
        // changes only that thread's niceness (Linux's threads are scheduled one by one).
        let changed = unsafe {
            let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, thread, 10)
        };
        if changed != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "the snapshot thread keeps its priority");
        }
    }
}
