//! `lambda run`: the whole pipeline — history, then Kafka, served while it runs.
//!
//! Every worker loads its share of the history at logical time 0 (the batch layer), then
//! loops: read what its Kafka partitions have (the speed layer), admit it at a new logical
//! time — the current Unix time in milliseconds — and let the dataflow run. Workers advance
//! their inputs even when their partitions are idle, so that the views' frontier keeps
//! moving and fresh data becomes readable within milliseconds.
//!
//! Reading the views (the serving layer) goes through worker 0, the coordinator. A
//! [`Serving`] handle sends it a request; it picks the time to read — the latest time every
//! view is complete through — and sends every worker, in order on one channel each:
//!
//! ```text
//! Read { time: T, .. }   each worker reads its shard at T once its probe has passed T,
//!                        and replies; the handle merges the shards
//! Compact(C)             each worker lets its traces forget distinctions before C
//! ```
//!
//! Because the orders are ordered and the coordinator never compacts past a time it has
//! asked to read, every read is exact; because it compacts every 100 ms, memory and read
//! cost do not grow with the number of times.
//!
//! With a state directory, the coordinator also takes **snapshots** (see
//! [`crate::dataflow::snapshot`] and [`crate::state`]), at its own input's time `T`:
//!
//! ```text
//! Snapshot(T)            each worker asks its upsert for its versions as of T, and says so;
//!                        worker 0 holds its input at T until all have, so no upsert can
//!                        have passed T before it was asked
//! Read { time: T, .. }   the offsets and dead-letter counts at T, for the snapshot's meta
//! ```
//!
//! Each upsert encodes its versions as its frontier passes T; a writer thread gathers the
//! shards and the reading, and writes the file while the workers go on. A restart loads
//! the newest valid snapshot instead of the history and resumes every partition at its
//! offsets. On a clean stop, the workers stop reading Kafka, take a last snapshot, then exit.

//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`start`]: opening the inputs, the state directory and the threads; [`Running`] |
//! | `worker.rs` | one worker's loop: load, poll Kafka, carry out the orders, stop |
//! | `coordinator.rs` | worker 0's duties: read times, compaction, snapshots, the stop |
//! | `feeds.rs` | worker 0 reads the tables' files and topics |
//! | `snapshots.rs` | the snapshot writer and the other processes' shard encoders |
//! | `session.rs` | `lambda run` as a command: HTTP, the prompt, view files, the stop |

pub mod capture;
pub mod coordinator;
pub mod feeds;
pub mod session;
pub mod snapshots;
mod ticker;
mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::batch::{LoadCounts, LoadShared};
use crate::config::{CommandName, Output, Settings};
use crate::dataflow::Time;
use crate::deadletter::DeadLetterFile;
use crate::filter::Filter;
use crate::reading::{ReadScope, Reading};
use crate::serve::metrics::{KafkaState, Metrics};
use crate::serve::serving::{Answering, ReadError, ReadRequest, Serving, Waker};
use crate::source::history::HistoryFile;
use crate::source::kafka;
use crate::state::Snapshot;
use snapshots::{EncodedShard, Snapshots, WriterSettings};

/// What the coordinator tells every worker, in order, over the control plane
/// ([`crate::control`]): serializable, since workers may be in other processes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Order {
    /// Read your share of `scope` at `time` once your views are complete through it, and
    /// answer request `id`.
    Read {
        /// The request.
        id: u64,
        /// The logical time to read at.
        time: Time,
        /// What to read.
        scope: ReadScope,
    },
    /// Let the traces forget the distinctions between times before this one.
    Compact(Time),
    /// Capture your versions as of this time, for a snapshot.
    Snapshot(Time),
    /// The first order: where the cluster starts. With `snapshot`, process 0's workers load
    /// the snapshot (its versions reach their workers through the dataflow) and nobody loads
    /// the history; every partition starts at `offsets` (absent: the earliest).
    Start {
        /// Whether the cluster resumes from a snapshot.
        snapshot: bool,
        /// Partition → the next offset to read.
        offsets: Vec<(i32, i64)>,
    },
    /// The topic's partitions, found once Kafka answered: every worker starts reading its own.
    Partitions(Vec<i32>),
    /// Install a created view, and answer request `id` with the time it is exact from here.
    Install {
        /// The request.
        id: u64,
        /// What to keep of the view.
        def: Box<crate::dataflow::created::Maintained>,
    },
    /// Open scan `id`: if you are one of `workers`, send your share of `spec` at `time` (once
    /// your views are complete through it).
    Scan {
        /// The scan.
        id: u64,
        /// The statement's time, pinned.
        time: Time,
        /// What to read.
        spec: Box<crate::compute::scan::ScanSpec>,
        /// The workers whose shares are read.
        workers: Vec<usize>,
    },
    /// Scan `id`'s reader has gone: stop it.
    EndScan(u64),
    /// Install a table (worker 0 also starts feeding it), and answer request `id` with the
    /// time it answers from.
    CreateTable {
        /// The request.
        id: u64,
        /// The table.
        def: Box<crate::table::TableDef>,
    },
    /// Remove a table, and answer request `id`.
    DropTable {
        /// The request.
        id: u64,
        /// The table's id.
        table: u64,
    },
    /// Remove a created view, and answer request `id`.
    DropView {
        /// The request.
        id: u64,
        /// The view's id.
        view: u64,
    },
    /// Stop: read no more Kafka; a last snapshot may follow.
    Stop,
    /// Close the inputs and exit.
    Exit,
}

/// What workers tell the coordinator.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Answer {
    /// A worker's share of read `id`, or why it has none.
    Read {
        /// The request.
        id: u64,
        /// The share.
        part: Result<Box<Reading>, ReadError>,
    },
    /// A worker's process was asked to stop (a signal, an error): stop everyone.
    StopAsked {
        /// The worker.
        worker: usize,
    },
    /// A worker has asked its upsert for the snapshot at `time`.
    Registered {
        /// The snapshot's time.
        time: Time,
    },
    /// A worker has installed a created view and filled its part, exact from `time` on.
    Installed {
        /// The view's id.
        view: u64,
        /// The first time its part of the view is exact at.
        time: Time,
    },
    /// A worker has taken the topic's partitions: its offsets are in the views from `time`.
    PartitionsTaken {
        /// Its input's time when it took them.
        time: Time,
    },
    /// A worker of another process sends its encoded shard of a snapshot.
    Shard(EncodedShard),
    /// A worker of another process sends a part of its share of scan `id`.
    Scan {
        /// The scan.
        id: u64,
        /// The worker.
        worker: usize,
        /// The part.
        wire: crate::compute::scan::Wire,
    },
}

/// Everything the workers of one process share.
struct Shared {
    settings: Settings,
    event_filter: Option<Filter>,
    files: Vec<HistoryFile>,
    /// The topic's partitions once Kafka has answered (process 0 looks; worker 0 orders).
    partitions: Arc<Discovery>,
    dead_letters: Arc<DeadLetterFile>,
    load: LoadShared,
    stop: Arc<AtomicBool>,
    /// Read requests, taken by worker 0.
    requests: Mutex<Option<Receiver<ReadRequest>>>,
    /// Reads ordered and not fully answered (kept in worker 0's process).
    answering: Answering,
    worker_0: Arc<Waker>,
    metrics: Arc<Metrics>,
    /// The snapshot to start from instead of the history files.
    resume: Option<Snapshot>,
    snapshots: Option<Snapshots>,
    /// Set when a worker failed: a stop then takes no last snapshot.
    failed: AtomicBool,
    /// Views created in an earlier run, to install again before any read.
    restore: Mutex<crate::sql::Restored>,
    /// The views created at run time (process 0's).
    catalog: Arc<Mutex<crate::sql::catalog::Catalog>>,
    /// Where this process's workers send their shares of scans.
    outlets: Arc<crate::compute::scan::Outlets>,
    /// When the workers move the logical time on.
    ticker: ticker::Ticker,
}

/// The topic's partitions, looked up on a thread of its own so that the pipeline loads and
/// serves its history while Kafka cannot be reached: `None` until found; an error (the topic
/// does not exist) stops the pipeline.
#[derive(Default)]
struct Discovery {
    found: Mutex<Option<Result<Vec<i32>, String>>>,
    /// Set once the brokers answered, or failed to, a first time.
    first_answer: AtomicBool,
}

impl Discovery {
    /// Looks for the partitions until found, refused, or `stop` is set.
    fn look(&self, brokers: &str, topic: &str, metrics: &Metrics, stop: &AtomicBool) {
        let mut said = None;
        while !stop.load(Ordering::SeqCst) {
            let found = match kafka::fetch_partitions(brokers, topic, Duration::from_secs(2)) {
                Ok(partitions) => Ok(partitions),
                Err(kafka::Lookup::Refused(error)) => Err(error.to_string()),
                Err(kafka::Lookup::Unreachable(error)) => {
                    if said.as_ref() != Some(&error) {
                        tracing::warn!(%brokers, %error, "Kafka not reachable yet; serving the history meanwhile, and retrying");
                        said = Some(error.clone());
                    }
                    metrics.set_kafka_state(KafkaState::Unreachable(error));
                    self.first_answer.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            };
            if let Ok(partitions) = &found {
                tracing::info!(%brokers, %topic, partitions = partitions.len(), "reading Kafka");
                metrics.set_kafka_state(KafkaState::Reading);
            }
            *self.found.lock().unwrap_or_else(|p| p.into_inner()) = Some(found);
            self.first_answer.store(true, Ordering::SeqCst);
            return;
        }
    }

    fn take(&self) -> Option<Result<Vec<i32>, String>> {
        self.found.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Whether the brokers answered, or failed to, at least once.
    fn answered(&self) -> bool {
        self.first_answer.load(Ordering::SeqCst)
    }
}

/// A running pipeline: its serving handle, and the workers to wait for.
pub struct Running {
    /// Reads the views.
    pub serving: Serving,
    /// Answers SQL over them.
    pub engine: crate::sql::Engine,
    stop: Arc<AtomicBool>,
    /// The state directory, held for as long as the pipeline runs.
    _state: Option<crate::state::StateLock>,
    /// Taken by [`Running::join`]; dropped (which waits for the workers) otherwise.
    guards: Option<timely::communication::WorkerGuards<Result<WorkerReport, String>>>,
}

/// What a worker did, reported when it stops.
#[derive(Debug, Default, Clone)]
pub struct WorkerReport {
    /// History records loaded and refused.
    pub history: LoadCounts,
    /// Kafka messages read.
    pub messages: u64,
    /// The next offset of each partition this worker read.
    pub offsets: BTreeMap<i32, i64>,
}

impl Running {
    /// Asks every worker to stop: they admit nothing more, finish what they hold, and return.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Whether the pipeline was asked to stop, or stopped itself because a worker failed.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// A flag that stops the pipeline when set (for signal handlers).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Waits for every worker to stop; returns their reports.
    pub fn join(mut self) -> anyhow::Result<Vec<WorkerReport>> {
        let guards = self.guards.take().expect("joined once: join takes the pipeline by value");
        let mut reports = Vec::new();
        for result in guards.join() {
            let report = result.map_err(|e| anyhow::anyhow!("a worker failed: {e}"))?;
            reports.push(report.map_err(|e| anyhow::anyhow!(e))?);
        }
        Ok(reports)
    }
}

/// Dropping a running pipeline (an error, a panic in the caller) stops its workers rather
/// than leaving them to run — or the drop to wait for them — forever.
impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Starts the pipeline: history, then Kafka. Returns once the workers are running.
pub fn start(settings: &Settings) -> anyhow::Result<Running> {
    let dead_path = settings.dead_letter_path(CommandName::Run);
    let mut outputs = vec![Output::File(&dead_path, "--dead-letters")];
    outputs.extend(settings.serve.views_out.as_deref().map(|d| Output::Dir(d, "--views-out")));
    outputs.extend(settings.state.dir.as_deref().map(|d| Output::Dir(d, "--state-dir")));
    crate::config::refuse_outputs_over_inputs(&settings.input.files, &outputs)?;
    // Process 0 writes the snapshots of the whole cluster: it alone holds the directory.
    let state_lock = match &settings.state.dir {
        Some(dir) if settings.dataflow.process == 0 => Some(crate::state::lock(dir)?),
        _ => None,
    };
    // Process 0 decides where the cluster starts, and tells the others (Command::Start).
    let resume = if settings.dataflow.process == 0 { crate::state::resume_point(settings)? } else { None };
    let files = match &resume {
        Some(snapshot) => {
            tracing::info!(
                snapshot = %snapshot.path.display(),
                time = snapshot.meta.time,
                versions = snapshot.versions(),
                offsets = ?snapshot.meta.offsets,
                "resuming from a snapshot; the history files are not re-read"
            );
            Vec::new()
        }
        None => HistoryFile::open_all(&settings.input.files)?,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let metrics = Arc::new(Metrics::new());
    let partitions = Arc::new(Discovery::default());
    if settings.dataflow.process == 0 {
        let (partitions, metrics, stop) = (Arc::clone(&partitions), Arc::clone(&metrics), Arc::clone(&stop));
        let (brokers, topic) = (settings.kafka.brokers.clone(), settings.kafka.topic.clone());
        std::thread::Builder::new()
            .name("kafka-partitions".into())
            .spawn(move || partitions.look(&brokers, &topic, &metrics, &stop))
            .context("cannot start looking for the topic's partitions")?;
    }
    let dead_letters =
        Arc::new(DeadLetterFile::open(&dead_path).with_context(|| format!("cannot open {}", dead_path.display()))?);
    let config = settings.timely_config()?;
    // Every worker of every process: worker indices (and so partitions and reads) are global.
    let workers = match &config.communication {
        timely::CommunicationConfig::Thread => 1,
        timely::CommunicationConfig::Process(n) | timely::CommunicationConfig::ProcessBinary(n) => *n,
        timely::CommunicationConfig::Cluster { threads, addresses, .. } => threads * addresses.len(),
    };
    let worker_0 = Arc::new(Waker::default());
    // Views created at run time: process 0 keeps their definitions (in the state directory
    // too) and orders them installed at start; the other processes learn them by the orders.
    let dir = settings.state.dir.as_deref().filter(|_| settings.dataflow.process == 0);
    let catalog = Arc::new(Mutex::new(crate::sql::catalog::Catalog::open(dir)?));
    let (serving, requests) = Serving::new(workers, Arc::clone(&worker_0), Arc::clone(&metrics));
    // The SQL engine plans the views kept by an earlier run again: what the workers keep of
    // them is installed at start.
    let (engine, restore) =
        crate::sql::Engine::new(serving.clone(), &settings.kafka.topic, settings.sql_limits(), Arc::clone(&catalog))?;
    if !restore.views.is_empty() || !restore.tables.is_empty() {
        let (views, tables) = (restore.views.len(), restore.tables.len());
        tracing::info!(views, tables, "views and tables created earlier are installed again");
    }
    let every = Duration::from_millis(settings.state.every_ms);
    let snapshots = match &settings.state.dir {
        None => None,
        // The other processes encode their workers' shards for process 0's writer.
        Some(_) if settings.dataflow.process != 0 => Some(Snapshots::encoder(Arc::clone(&dead_letters), every)?),
        Some(dir) => {
            let history = match &resume {
                Some(snapshot) => snapshot.meta.history.clone(),
                None => settings.input.files.iter().map(|f| crate::state::fingerprint(f)).collect::<Result<_, _>>()?,
            };
            let writer = WriterSettings {
                dir: dir.clone(),
                topic: settings.kafka.topic.clone(),
                history,
                workers,
                // Resumed: what the snapshot holds is already on disk.
                resumed: resume.as_ref().map(|s| (s.meta.time, s.meta.offsets.clone())),
                dead_letters: Arc::clone(&dead_letters),
            };
            Some(Snapshots::writer(writer, every)?)
        }
    };
    let shared = Arc::new(Shared {
        event_filter: settings.event_filter()?,
        settings: settings.clone(),
        files,
        partitions,
        dead_letters,
        load: LoadShared::default(),
        stop: Arc::clone(&stop),
        requests: Mutex::new(Some(requests)),
        answering: Answering::default(),
        worker_0,
        metrics,
        resume,
        snapshots,
        failed: AtomicBool::new(false),
        restore: Mutex::new(restore),
        catalog,
        outlets: Arc::clone(serving.outlets()),
        ticker: ticker::Ticker::new(settings.dataflow.processes > 1),
    });
    let guards = crate::cluster::execute(config, move |worker| {
        let result = worker::run_worker(worker, &shared).map_err(|e| format!("{e:#}"));
        if let Err(error) = &result {
            // One worker failing stops them all, so the failure is reported, not waited on.
            tracing::error!(worker = worker.index(), %error, "worker failed; stopping the pipeline");
            shared.failed.store(true, Ordering::SeqCst);
            shared.stop.store(true, Ordering::SeqCst);
        }
        result
    })
    .map_err(|e| anyhow::anyhow!("cannot start the workers: {e}"))?;
    Ok(Running { serving, engine, stop, _state: state_lock, guards: Some(guards) })
}

/// The current Unix time in milliseconds: the logical time of what is admitted now.
fn now_ms() -> Time {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_millis() as Time)
}
