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
//! Because the commands are ordered and the coordinator never compacts past a time it has
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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use timely::worker::Worker;

use crate::batch::{load_history, load_snapshot, LoadCounts, LoadShared};
use crate::config::{Output, Settings};
use crate::control::Control;
use crate::dataflow::snapshot::Shard;
use crate::dataflow::{Pipeline, Time};
use crate::deadletter::DeadLetterFile;
use crate::filter::Filter;
use crate::serve::metrics::{KafkaState, Metrics, Source};
use crate::serve::query::{Reading, WorkerProgress};
use crate::source::history::HistoryFile;
use crate::source::kafka::{self, DeadLetterTopic, PartitionReader};
use crate::source::Record;
use crate::state::{Fingerprint, Snapshot};

/// How long an idle worker parks before looking at its partitions again. A busy dataflow
/// never parks (timely unparks a worker as soon as another sends it data); blocking in the
/// Kafka poll instead would delay every exchange between workers by this much.
const IDLE_PARK: Duration = Duration::from_millis(1);
/// The most messages admitted at one logical time by one worker.
const POLL_MAX: usize = 50_000;
/// How often the coordinator lets the traces compact.
const COMPACT_EVERY: Duration = Duration::from_millis(100);
/// How often offsets are committed to the consumer group.
const COMMIT_EVERY: Duration = Duration::from_secs(1);
/// How often a worker notes its partitions' high watermarks (for the consumer lag).
const WATERMARKS_EVERY: Duration = Duration::from_millis(50);
/// The longest a clean stop waits for its last snapshot.
const FINAL_SNAPSHOT_WAIT: Duration = Duration::from_secs(120);

pub use crate::serve::query::Scope;

/// A request to read at the latest complete time.
struct ReadRequest {
    scope: Scope,
    reply: Reply,
}

/// Where the workers send their shares of a read: a thread waiting on a channel (the
/// prompt, `--views-out`), or an async task (an HTTP request) — which then waits without
/// holding a thread, and wakes without a hop through a pool of blocking threads.
#[derive(Clone)]
enum Reply {
    Thread(Sender<Reading>),
    Task(tokio::sync::mpsc::UnboundedSender<Reading>),
    /// The snapshot writer, for a snapshot's offsets and dead-letter counts.
    Writer(Sender<ToWriter>),
}

impl Reply {
    fn send(&self, part: Reading) {
        // A reader that gave up (timed out) no longer listens; that is not an error here.
        let _ = match self {
            Reply::Thread(sender) => sender.send(part).map_err(drop),
            Reply::Task(sender) => sender.send(part).map_err(drop),
            Reply::Writer(sender) => sender.send(ToWriter::Totals(part)).map_err(drop),
        };
    }
}

/// Reads being answered: request id → where the parts go, and how many came.
#[derive(Default)]
struct Answering(Mutex<HashMap<u64, (Reply, usize)>>);

impl Answering {
    fn expect(&self, id: u64, reply: Reply) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(id, (reply, 0));
    }

    /// Hands a part over if read `id` is answered from this process; gives it back if not.
    fn deliver(&self, id: u64, part: Reading, workers: usize) -> Option<Reading> {
        let mut answering = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some((reply, parts)) = answering.get_mut(&id) else { return Some(part) };
        reply.send(part);
        *parts += 1;
        if *parts == workers {
            answering.remove(&id);
        }
        None
    }
}

/// What the snapshot writer gathers: every worker's shard and share of the totals at `T`.
enum ToWriter {
    Shard { worker: usize, shard: ShardData },
    Totals(Reading),
}

/// A worker's shard: frozen in this process, or encoded by another and sent over.
enum ShardData {
    Frozen(Shard),
    Encoded { time: Time, bytes: Vec<u8>, versions: u64 },
}

impl ShardData {
    fn time(&self) -> Time {
        match self {
            ShardData::Frozen(shard) => shard.time,
            ShardData::Encoded { time, .. } => *time,
        }
    }
}

/// A shard encoded in another process than the writer's.
struct EncodedShard {
    worker: usize,
    time: Time,
    bytes: Vec<u8>,
    versions: u64,
}

/// Snapshot duties of a process: process 0 writes the files; the others encode their
/// workers' shards and send them to worker 0.
struct Snapshots {
    /// Process 0: the writer. Other processes: the encoder of their workers' shards.
    to_writer: Option<Sender<ToWriter>>,
    to_encoder: Option<Mutex<Sender<(usize, Shard)>>>,
    /// Shards another process's encoder has finished: (worker, time, bytes, versions).
    encoded: Mutex<Vec<EncodedShard>>,
    /// The time of the newest snapshot finished (written, or failed and logged).
    finished: Arc<AtomicU64>,
    every: Duration,
}

/// What the coordinator tells every worker, in order, over the control plane
/// ([`crate::control`]): serializable, since workers may be in other processes.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Command {
    /// Read your share of `scope` at `time` once your views are complete through it, and
    /// answer request `id`.
    Read {
        id: u64,
        time: Time,
        scope: Scope,
    },
    Compact(Time),
    Snapshot(Time),
    /// The first order: where the cluster starts. With `snapshot`, process 0's workers load
    /// the snapshot (its versions reach their workers through the dataflow) and nobody loads
    /// the history; every partition starts at `offsets` (absent: the earliest).
    Start {
        snapshot: bool,
        offsets: Vec<(i32, i64)>,
    },
    /// The topic's partitions, found once Kafka answered: every worker starts reading its own.
    Partitions(Vec<i32>),
    /// Stop: read no more Kafka; a last snapshot may follow.
    Stop,
    /// Close the inputs and exit.
    Exit,
}

/// What workers tell the coordinator.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Answer {
    /// A worker's share of read `id`.
    Read { id: u64, part: Box<Reading> },
    /// A worker's process was asked to stop (a signal, an error): stop everyone.
    StopAsked { worker: usize },
    /// A worker has asked its upsert for the snapshot at `time`.
    Registered { time: Time },
    /// A worker has taken the topic's partitions: its offsets are in the views from `time`.
    PartitionsTaken { time: Time },
    /// A worker of another process sends its encoded shard of the snapshot at `time`.
    Shard { worker: usize, time: Time, bytes: Vec<u8>, versions: u64 },
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
    requests: Mutex<Option<Receiver<ReadRequest>>>,
    /// Reads ordered and not fully answered (kept in worker 0's process): where the parts
    /// go, and how many came. Workers of that process hand their parts over directly;
    /// others send them to worker 0 over the control plane.
    answering: Answering,
    worker_0: Arc<WorkerZeroThread>,
    metrics: Arc<Metrics>,
    /// The snapshot to start from instead of the history files.
    resume: Option<Snapshot>,
    snapshots: Option<Snapshots>,
    /// Set when a worker failed: a stop then takes no last snapshot.
    failed: AtomicBool,
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

/// Worker 0's thread, to wake it when a read request arrives: an idle worker parks up to
/// [`IDLE_PARK`], which would otherwise add to every answer's latency. (The other workers
/// get their orders over timely's channels, which wake them.)
#[derive(Default)]
struct WorkerZeroThread(OnceLock<Thread>);

impl WorkerZeroThread {
    fn wake(&self) {
        if let Some(thread) = self.0.get() {
            thread.unpark();
        }
    }
}

/// A running pipeline: its serving handle, and the workers to wait for.
pub struct Running {
    /// Reads the views.
    pub serving: Serving,
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

/// Reads the views of a running pipeline from any thread.
#[derive(Clone)]
pub struct Serving {
    requests: Sender<ReadRequest>,
    workers: usize,
    worker_0: Arc<WorkerZeroThread>,
    metrics: Arc<Metrics>,
}

impl Serving {
    /// Every view at the latest time all of them are complete through, or `None` if the
    /// pipeline stopped or did not answer within `timeout`.
    pub fn read(&self, top_k: usize, timeout: Duration) -> Option<Reading> {
        self.read_scope(Scope::Everything { top_k }, timeout)
    }

    /// Reads what `scope` covers at the latest complete time.
    pub fn read_scope(&self, scope: Scope, timeout: Duration) -> Option<Reading> {
        let (reply, replies) = channel();
        self.request(&scope, Reply::Thread(reply))?;
        let deadline = Instant::now() + timeout;
        let mut parts = Vec::with_capacity(self.workers);
        while parts.len() < self.workers {
            let left = deadline.checked_duration_since(Instant::now())?;
            match replies.recv_timeout(left) {
                Ok(part) => parts.push(part),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
        Some(Reading::merge_scope(parts, &scope))
    }

    /// Reads what `scope` covers at the latest complete time, from an async task.
    pub async fn read_scope_async(&self, scope: Scope, timeout: Duration) -> Option<Reading> {
        let (reply, mut replies) = tokio::sync::mpsc::unbounded_channel();
        self.request(&scope, Reply::Task(reply))?;
        let parts = async {
            let mut parts = Vec::with_capacity(self.workers);
            while parts.len() < self.workers {
                parts.push(replies.recv().await?);
            }
            Some(parts)
        };
        let parts = tokio::time::timeout(timeout, parts).await.ok()??;
        Some(Reading::merge_scope(parts, &scope))
    }

    /// Hands a read to the coordinator, waking it if it is parked.
    fn request(&self, scope: &Scope, reply: Reply) -> Option<()> {
        self.requests.send(ReadRequest { scope: scope.clone(), reply }).ok()?;
        self.worker_0.wake();
        Some(())
    }

    /// How many workers answer reads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The process's metrics: records read, high watermarks, query latencies.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Reads until `done` accepts the reading (e.g. offsets reached a target), or times out.
    pub fn read_until(&self, top_k: usize, timeout: Duration, done: impl Fn(&Reading) -> bool) -> Option<Reading> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let reading = self.read(top_k, left)?;
            if done(&reading) {
                return Some(reading);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
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
    let dead_path = settings.run_dead_letter_path();
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
    let (request_sender, requests) = channel();
    let worker_0 = Arc::new(WorkerZeroThread::default());
    let snapshots = match &settings.state.dir {
        None => None,
        Some(_) if settings.dataflow.process != 0 => {
            // Encodes this process's shards off the worker threads, for worker 0's writer.
            let (to_encoder, shards) = channel::<(usize, Shard)>();
            let snapshots = Snapshots {
                to_writer: None,
                to_encoder: Some(Mutex::new(to_encoder)),
                encoded: Mutex::default(),
                finished: Arc::default(),
                every: Duration::from_millis(settings.state.every_ms.max(10)),
            };
            Some((snapshots, Some(shards)))
        }
        Some(dir) => {
            let history = match &resume {
                Some(snapshot) => snapshot.meta.history.clone(),
                None => settings.input.files.iter().map(|f| crate::state::fingerprint(f)).collect::<Result<_, _>>()?,
            };
            let (to_writer, from_workers) = channel();
            let finished = Arc::new(AtomicU64::new(0));
            let writer = Writer {
                dir: dir.clone(),
                topic: settings.kafka.topic.clone(),
                history,
                workers,
                finished: Arc::clone(&finished),
                // Resumed: what the snapshot holds is already on disk.
                last_offsets: resume.as_ref().map(|s| s.meta.offsets.clone()),
                dead_letters: Arc::clone(&dead_letters),
            };
            std::thread::Builder::new()
                .name("snapshot-writer".into())
                .spawn(move || writer.run(from_workers))
                .context("cannot start the snapshot writer")?;
            let snapshots = Snapshots {
                to_writer: Some(to_writer),
                to_encoder: None,
                encoded: Mutex::default(),
                finished,
                every: Duration::from_millis(settings.state.every_ms.max(10)),
            };
            Some((snapshots, None))
        }
    };
    let (snapshots, encoder_input) = match snapshots {
        Some((snapshots, input)) => (Some(snapshots), input),
        None => (None, None),
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
        worker_0: Arc::clone(&worker_0),
        metrics: Arc::clone(&metrics),
        resume,
        snapshots,
        failed: AtomicBool::new(false),
    });
    if let Some(shards) = encoder_input {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("snapshot-encoder".into())
            .spawn(move || {
                for (worker, shard) in shards {
                    // Process 0 writes the snapshot once it has every shard: this process's
                    // dead letters of the records in it must be on disk by then.
                    if let Err(error) = shared.dead_letters.sync() {
                        tracing::error!(%error, "cannot write the dead letters to disk");
                    }
                    let mut bytes = Vec::new();
                    let versions = crate::dataflow::snapshot::encode(&shard.versions, &mut bytes)
                        .expect("encoding into memory cannot fail");
                    drop(shard.versions); // let the worker fold its changes back in
                    let encoded = &shared.snapshots.as_ref().expect("an encoder has snapshots").encoded;
                    let shard = EncodedShard { worker, time: shard.time, bytes, versions };
                    encoded.lock().unwrap_or_else(|p| p.into_inner()).push(shard);
                }
            })
            .context("cannot start the snapshot encoder")?;
    }
    let guards = timely::execute(config, move |worker| {
        let result = run_worker(worker, &shared).map_err(|e| format!("{e:#}"));
        if let Err(error) = &result {
            // One worker failing stops them all, so the failure is reported, not waited on.
            tracing::error!(worker = worker.index(), %error, "worker failed; stopping the pipeline");
            shared.failed.store(true, Ordering::SeqCst);
            shared.stop.store(true, Ordering::SeqCst);
        }
        result
    })
    .map_err(|e| anyhow::anyhow!("cannot start the workers: {e}"))?;
    let serving = Serving { requests: request_sender, workers, worker_0, metrics };
    Ok(Running { serving, stop, _state: state_lock, guards: Some(guards) })
}

fn now_ms() -> Time {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_millis() as Time)
}

/// One worker's life: history (or a snapshot), then Kafka until asked to stop.
fn run_worker(worker: &mut Worker, shared: &Shared) -> anyhow::Result<WorkerReport> {
    let settings = &shared.settings;
    // Timely runs each worker on its own thread: this one.
    if worker.index() == 0 {
        let _ = shared.worker_0.0.set(std::thread::current());
    }
    let mut pipeline = Pipeline::build(worker, shared.event_filter.clone());
    let mut control = Control::<Command, Answer>::build(worker);
    let mut pending: VecDeque<Command> = VecDeque::new();

    // Where the cluster starts: worker 0's first order.
    if worker.index() == 0 {
        let offsets = shared.resume.as_ref().map(|s| s.meta.offsets.clone()).unwrap_or_default();
        control.order(Command::Start { snapshot: shared.resume.is_some(), offsets });
    }
    let (from_snapshot, start_offsets) = loop {
        control.send();
        worker.step_or_park(Some(IDLE_PARK));
        pending.extend(control.orders());
        if let Some(Command::Start { snapshot, offsets }) = pending.pop_front() {
            break (snapshot, offsets);
        }
        anyhow::ensure!(!shared.failed.load(Ordering::SeqCst), "another worker failed before the start");
    };
    // Before any dead letter is written: a fresh start writes them afresh; a resume drops
    // those of the messages it will read again, which would otherwise be there twice.
    let resumed_at: BTreeMap<i32, i64> = start_offsets.iter().copied().collect();
    shared
        .dead_letters
        .prepare(from_snapshot.then_some((settings.kafka.topic.as_str(), &resumed_at)))
        .with_context(|| format!("cannot prepare the dead-letter file {}", shared.dead_letters.path().display()))?;
    let local_workers = worker.peers() / settings.dataflow.processes.max(1);
    let initial = match (&shared.resume, from_snapshot) {
        (Some(snapshot), _) => {
            load_snapshot(worker, &mut pipeline, snapshot, (worker.index() % local_workers, local_workers))?
        }
        // Process 0 resumes the cluster: the versions reach this worker through the dataflow.
        (None, true) => LoadCounts::default(),
        (None, false) => {
            load_history(worker, &mut pipeline, &shared.files, settings, &shared.dead_letters, &shared.load)?
        }
    };
    let mut report = WorkerReport { history: initial, ..WorkerReport::default() };
    // A snapshot's versions are not history records read (none is, on a resume).
    let history_read = if from_snapshot { 0 } else { report.history.records + report.history.refused };
    shared.metrics.records_read(Source::History).inc_by(history_read);
    let messages_read = shared.metrics.records_read(Source::Kafka);
    pipeline.advance_to(now_ms().max(1));

    let k = &settings.kafka;
    // The partitions this worker will read are known once Kafka answers (a `Partitions`
    // order); until then the history is served, and a snapshot's offsets are what it reflects.
    let (index, peers) = (worker.index(), worker.peers());
    let mut mine: Vec<i32> = Vec::new();
    let mut reader: Option<PartitionReader> = None;
    let mut admitted: BTreeMap<i32, i64> =
        resumed_at.iter().filter(|(p, _)| kafka::owner(**p, peers) == index).map(|(p, o)| (*p, *o)).collect();
    for (&p, &offset) in &admitted {
        pipeline.move_offset(p, None, offset);
    }
    let dead_letter_topic = match &k.dlq_topic {
        Some(topic) if !topic.is_empty() => Some(DeadLetterTopic::new(&k.brokers, topic)?),
        _ => None,
    };

    let mut coordinator = (index == 0).then(|| Coordinator {
        requests: shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .expect("worker 0 takes the requests"),
        workers: peers,
        waiting: Vec::new(),
        next_id: 0,
        compacted: 0,
        last_compaction: Instant::now(),
        schedule: SnapshotSchedule { last: Instant::now(), in_flight: None, hold: None, last_one: None, registered: 0 },
        stop_ordered: false,
        exit_ordered: false,
        partitions_ordered: false,
        partitions_taken: (0, 0),
        reads_from: None,
    });
    let mut progress = WorkerProgress {
        worker: index,
        process: settings.dataflow.process,
        records: (history_read, 0),
        ..WorkerProgress::default()
    };
    let mut last_commit = Instant::now();
    let mut last_watermarks = Instant::now();
    // Set by the coordinator's Stop, which every worker of every process receives in order.
    let mut stopping = false;
    let mut stop_asked = false;

    loop {
        // A worker of this process failed (worker 0 perhaps): no order may come any more, and
        // the dataflow cannot go on without it.
        if shared.failed.load(Ordering::SeqCst) {
            break;
        }
        // This process was asked to stop: worker 0 orders everyone to; another worker asks it.
        if shared.stop.load(Ordering::SeqCst) && !stop_asked {
            stop_asked = true;
            match coordinator.as_mut() {
                Some(coordinator) => coordinator.order_stop(&mut control),
                None => control.answer(Answer::StopAsked { worker: index }),
            }
        }
        if let Some(reader) = reader.as_mut().filter(|_| !stopping) {
            let read = reader.poll(Duration::ZERO, POLL_MAX, &mut |record| match record {
                Record::Update(update) => pipeline.updates.send(update),
                Record::Refused(letter) => {
                    pipeline.refuse(&letter);
                    if let Err(error) = shared.dead_letters.write(&letter) {
                        tracing::error!(%error, "cannot write a dead letter to the file");
                    }
                    if let Some(topic) = &dead_letter_topic {
                        topic.send(&letter);
                    }
                }
            })? as u64;
            report.messages += read;
            messages_read.inc_by(read);
            for (&partition, &next) in reader.next_offsets() {
                let previous = admitted.insert(partition, next);
                if previous != Some(next) {
                    pipeline.move_offset(partition, previous, next);
                }
            }
            if last_commit.elapsed() >= COMMIT_EVERY {
                reader.commit();
                // So that `tail -f` shows dead letters within a second (a snapshot also
                // writes them to disk first).
                if let Err(error) = shared.dead_letters.flush() {
                    tracing::error!(%error, "cannot write the dead-letter file");
                }
                last_commit = Instant::now();
            }
            if last_watermarks.elapsed() >= WATERMARKS_EVERY {
                let marks = reader.high_watermarks();
                progress.partitions = mine.iter().map(|p| (*p, marks.get(p).copied())).collect();
                progress.skipped = reader.skipped().iter().map(|(p, n)| (*p, *n)).collect();
                progress.kafka_error = reader.last_error().map(String::from);
                last_watermarks = Instant::now();
            }
            progress.records.1 = report.messages;
        }
        let now = now_ms();
        let held = coordinator.as_ref().is_some_and(|c| c.schedule.hold.is_some());
        if now > pipeline.time() && !held {
            pipeline.advance_to(now);
        }
        worker.step_or_park(Some(IDLE_PARK));
        if let Some(coordinator) = coordinator.as_mut() {
            for answer in control.answers() {
                coordinator.receive(answer, &mut control, &shared.answering, shared.snapshots.as_ref());
            }
            coordinator.tick(pipeline.complete_through(), &mut control, &shared.answering);
            if !coordinator.partitions_ordered {
                match shared.partitions.take() {
                    Some(Ok(partitions)) => {
                        coordinator.partitions_ordered = true;
                        control.order(Command::Partitions(partitions));
                    }
                    Some(Err(error)) => anyhow::bail!(error),
                    // Unreachable: serve the history meanwhile.
                    None if shared.partitions.answered() => {
                        coordinator.reads_from.get_or_insert(0);
                    }
                    None => {}
                }
            }
            match &shared.snapshots {
                Some(snapshots) => {
                    let answering = &shared.answering;
                    coordinator.snapshot_duties(snapshots, pipeline.time(), stopping, &mut control, answering);
                }
                None if stopping => coordinator.order_exit(&mut control),
                None => {}
            }
        }
        pending.extend(control.orders());
        let told = serve(&mut pending, &mut pipeline, &mut control, &shared.answering, &progress);
        if told.snapshot {
            // Dead letters sent to Kafka before the snapshot are not read again after it.
            if let Some(topic) = &dead_letter_topic {
                topic.flush();
            }
        }
        if let Some(partitions) = told.partitions {
            mine = kafka::assigned(&partitions, index, peers);
            for &p in &mine {
                if let std::collections::btree_map::Entry::Vacant(entry) = admitted.entry(p) {
                    // Without a snapshot every partition is read from its first offset.
                    entry.insert(0);
                    pipeline.move_offset(p, None, 0);
                }
            }
            progress.partitions = mine.iter().map(|p| (*p, None)).collect();
            control.answer(Answer::PartitionsTaken { time: pipeline.time() });
            if !mine.is_empty() && !stopping {
                let from: BTreeMap<i32, i64> = mine.iter().map(|p| (*p, admitted[p])).collect();
                reader = Some(PartitionReader::new(
                    &k.brokers,
                    &k.group,
                    &k.topic,
                    &mine,
                    &from,
                    settings.input.max_record_bytes,
                )?);
            }
        }
        if told.stop {
            stopping = true;
            // Every process learns of the stop, also those that were not signalled.
            shared.stop.store(true, Ordering::SeqCst);
        }
        if let Some(snapshots) = &shared.snapshots {
            hand_over_shards(index, snapshots, &mut pipeline, &mut control);
        }
        control.send();
        if told.exit {
            break;
        }
    }

    // Stop: admit nothing more, let the dataflow finish what it holds.
    if let Some(reader) = reader {
        reader.commit();
        report.offsets = reader.next_offsets().clone();
        tracing::info!(worker = index, offsets = ?report.offsets, "stopping; next offsets");
        close_within(reader, "the Kafka consumer");
    }
    if let Some(topic) = dead_letter_topic {
        topic.flush();
        close_within(topic, "the dead-letter producer");
    }
    shared.dead_letters.flush().context("cannot flush the dead-letter file")?;
    let (_views, probe, _latest) = pipeline.close();
    worker.step_while(|| !probe.done());
    Ok(report)
}

/// How long a stop waits for a Kafka client to close.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// Drops a Kafka client on a thread of its own and waits for it at most [`CLOSE_WAIT`]:
/// librdkafka's close waits for the group coordinator, which an unreachable broker never
/// answers — that made a stop hang forever. A client not closed in time is left behind; the
/// process is about to end anyway.
fn close_within<T: Send + 'static>(client: T, what: &'static str) {
    let (closed, done) = channel();
    let spawned = std::thread::Builder::new().name("kafka-close".into()).spawn(move || {
        drop(client);
        let _ = closed.send(());
    });
    if spawned.is_ok() && done.recv_timeout(CLOSE_WAIT).is_err() {
        tracing::warn!("{what} did not close within {} s (Kafka unreachable?); leaving it", CLOSE_WAIT.as_secs());
    }
}

/// A worker's captured shard goes to the writer (process 0) or to this process's encoder,
/// whose finished encodings go to worker 0 over the control plane.
fn hand_over_shards(
    worker: usize,
    snapshots: &Snapshots,
    pipeline: &mut Pipeline,
    control: &mut Control<Command, Answer>,
) {
    if let Some(shard) = pipeline.snapshots.take() {
        if let Some(writer) = &snapshots.to_writer {
            let _ = writer.send(ToWriter::Shard { worker, shard: ShardData::Frozen(shard) });
        } else if let Some(encoder) = &snapshots.to_encoder {
            let _ = encoder.lock().unwrap_or_else(|p| p.into_inner()).send((worker, shard));
        }
    }
    let mut encoded = snapshots.encoded.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(at) = encoded.iter().position(|e| e.worker == worker) {
        let EncodedShard { worker, time, bytes, versions } = encoded.remove(at);
        control.answer(Answer::Shard { worker, time, bytes, versions });
    }
}

/// What the orders carried out told a worker to do next.
#[derive(Default)]
struct Told {
    stop: bool,
    exit: bool,
    /// A snapshot was registered.
    snapshot: bool,
    /// The topic's partitions, to start reading.
    partitions: Option<Vec<i32>>,
}

/// Carries out the commands whose time has come, in order.
fn serve(
    pending: &mut VecDeque<Command>,
    pipeline: &mut Pipeline,
    control: &mut Control<Command, Answer>,
    answering: &Answering,
    progress: &WorkerProgress,
) -> Told {
    let mut told = Told::default();
    while let Some(command) = pending.front() {
        match command {
            Command::Read { time, .. } if pipeline.probe.less_equal(time) => break,
            _ => {}
        }
        match pending.pop_front().expect("front exists") {
            Command::Read { id, time, scope } => {
                let (worker, workers) = (control.index(), control.peers());
                let mut part = Reading::read_scope(&mut pipeline.views, time, &scope.share(worker, workers));
                if matches!(scope, Scope::Everything { .. } | Scope::Totals) {
                    part.workers = vec![progress.clone()];
                }
                if let Some(part) = answering.deliver(id, part, workers) {
                    control.answer(Answer::Read { id, part: Box::new(part) });
                }
            }
            Command::Compact(time) => pipeline.views.compact_to(time),
            Command::Snapshot(time) => {
                pipeline.snapshots.request(time);
                control.answer(Answer::Registered { time });
                told.snapshot = true;
            }
            Command::Partitions(partitions) => told.partitions = Some(partitions),
            Command::Start { .. } => {} // taken before the loop
            Command::Stop => told.stop = true,
            Command::Exit => told.exit = true,
        }
    }
    told
}

/// Worker 0's duties: turn read requests into timed reads, forward the answers, let the
/// traces compact, take snapshots, and order the stop.
struct Coordinator {
    requests: Receiver<ReadRequest>,
    /// Every worker of every process.
    workers: usize,
    /// Requests that arrived before anything was complete.
    waiting: Vec<ReadRequest>,
    next_id: u64,
    compacted: Time,
    last_compaction: Instant,
    schedule: SnapshotSchedule,
    stop_ordered: bool,
    exit_ordered: bool,
    /// Whether the topic's partitions were ordered to every worker.
    partitions_ordered: bool,
    /// Workers that took the partitions, and the latest time one put its offsets in.
    partitions_taken: (usize, Time),
    /// Reads are answered at times from this one: none until Kafka has answered (or failed
    /// to) once, so that the first answers of a run whose Kafka is up already reflect the
    /// topic; then the time every worker's offsets are in the views.
    reads_from: Option<Time>,
}

/// Worker 0's view of the snapshots.
struct SnapshotSchedule {
    /// When the last one was asked for.
    last: Instant,
    /// The time of the one being taken.
    in_flight: Option<Time>,
    /// Set while worker 0 holds its input at this time, until every worker has registered
    /// the snapshot at it.
    hold: Option<Time>,
    /// A clean stop's last snapshot: its time, and when it was asked for.
    last_one: Option<(Time, Instant)>,
    /// Workers that registered the snapshot in flight.
    registered: usize,
}

impl Coordinator {
    /// Orders a read of `scope` at `time` from every worker; their parts go to `reply`.
    fn order_read(
        &mut self,
        control: &mut Control<Command, Answer>,
        answering: &Answering,
        time: Time,
        scope: Scope,
        reply: Reply,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        answering.expect(id, reply);
        control.order(Command::Read { id, time, scope });
    }

    /// Takes an answer from a worker.
    fn receive(
        &mut self,
        answer: Answer,
        control: &mut Control<Command, Answer>,
        answering: &Answering,
        snapshots: Option<&Snapshots>,
    ) {
        match answer {
            Answer::Registered { time } => {
                let s = &mut self.schedule;
                if s.hold == Some(time) {
                    s.registered += 1;
                    if s.registered == self.workers {
                        s.hold = None;
                    }
                }
            }
            Answer::Shard { worker, time, bytes, versions } => {
                if let Some(writer) = snapshots.and_then(|s| s.to_writer.as_ref()) {
                    let shard = ShardData::Encoded { time, bytes, versions };
                    let _ = writer.send(ToWriter::Shard { worker, shard });
                }
            }
            Answer::PartitionsTaken { time } => {
                let (taken, latest) = &mut self.partitions_taken;
                *taken += 1;
                *latest = (*latest).max(time);
                if *taken == self.workers {
                    // Reads already answered while Kafka was unreachable keep their times;
                    // later ones reflect every partition.
                    self.reads_from = Some(*latest);
                }
            }
            Answer::Read { id, part } => {
                if answering.deliver(id, *part, self.workers).is_some() {
                    tracing::warn!(id, "an answer to a read nobody waits for");
                }
            }
            Answer::StopAsked { worker } => {
                tracing::info!(worker, "a worker's process was asked to stop; stopping every process");
                self.order_stop(control);
            }
        }
    }

    /// Orders every worker to stop (once).
    fn order_stop(&mut self, control: &mut Control<Command, Answer>) {
        if !self.stop_ordered {
            self.stop_ordered = true;
            control.order(Command::Stop);
        }
    }

    /// Orders every worker to close its inputs and exit (once).
    fn order_exit(&mut self, control: &mut Control<Command, Answer>) {
        if !self.exit_ordered {
            self.exit_ordered = true;
            control.order(Command::Exit);
        }
    }

    /// Asks for a snapshot when one is due (or for a stop's last one), holds worker 0's input
    /// at its time until every worker has registered it, and notes when it is written.
    fn snapshot_duties(
        &mut self,
        snapshots: &Snapshots,
        input_time: Time,
        stopping: bool,
        control: &mut Control<Command, Answer>,
        answering: &Answering,
    ) {
        let finished = snapshots.finished.load(Ordering::SeqCst);
        let s = &mut self.schedule;
        if s.in_flight.is_some_and(|t| finished >= t) {
            s.in_flight = None;
        }
        if stopping {
            if let Some((time, asked)) = s.last_one {
                if finished >= time {
                    self.order_exit(control);
                } else if asked.elapsed() > FINAL_SNAPSHOT_WAIT {
                    tracing::error!(time, "the last snapshot did not finish in time; stopping without it");
                    self.order_exit(control);
                }
                return;
            }
        }
        let due = if stopping { true } else { s.last.elapsed() >= snapshots.every };
        if !due || s.in_flight.is_some() {
            return;
        }
        // Worker 0's input is at `input_time` and held there until every upsert is asked, so
        // none can have passed it: each will capture exactly the records at times <= it.
        let time = input_time;
        s.registered = 0;
        s.hold = Some(time);
        s.in_flight = Some(time);
        s.last = Instant::now();
        if stopping {
            s.last_one = Some((time, Instant::now()));
        }
        // The order matters: a worker's read waits for time to pass `time`, which the hold
        // prevents until every worker has registered the snapshot.
        control.order(Command::Snapshot(time));
        let writer = snapshots.to_writer.clone().expect("worker 0's process writes the snapshots");
        self.order_read(control, answering, time, Scope::Totals, Reply::Writer(writer));
    }

    fn tick(&mut self, complete: Option<Time>, control: &mut Control<Command, Answer>, answering: &Answering) {
        self.waiting.extend(self.requests.try_iter());
        let Some(complete) = complete else { return };
        if self.reads_from.is_some_and(|from| complete >= from) {
            for request in std::mem::take(&mut self.waiting) {
                self.order_read(control, answering, complete, request.scope, request.reply);
            }
        }
        if complete > self.compacted && self.last_compaction.elapsed() >= COMPACT_EVERY {
            control.order(Command::Compact(complete));
            self.compacted = complete;
            self.last_compaction = Instant::now();
        }
    }
}

/// The snapshot writer's thread: gathers each snapshot's parts and writes the file, so that
/// the workers never wait for the disk.
struct Writer {
    dir: std::path::PathBuf,
    /// This process's dead letters: on disk before a snapshot says their records were read.
    dead_letters: Arc<DeadLetterFile>,
    topic: String,
    history: Vec<Fingerprint>,
    workers: usize,
    finished: Arc<AtomicU64>,
    /// The offsets of the newest snapshot on disk: every change to the versions comes with
    /// a move of some offset (the history is loaded once, at the start), so equal offsets
    /// mean an equal snapshot, not worth writing again.
    last_offsets: Option<Vec<(i32, i64)>>,
}

/// One snapshot's parts, as they arrive.
#[derive(Default)]
struct Parts {
    shards: BTreeMap<usize, ShardData>,
    totals: Vec<Reading>,
}

impl Writer {
    fn run(mut self, parts: Receiver<ToWriter>) {
        let mut gathering: BTreeMap<Time, Parts> = BTreeMap::new();
        for part in parts {
            let time = match part {
                ToWriter::Shard { worker, shard } => {
                    let time = shard.time();
                    gathering.entry(time).or_default().shards.insert(worker, shard);
                    time
                }
                ToWriter::Totals(reading) => {
                    let time = reading.time;
                    gathering.entry(time).or_default().totals.push(reading);
                    time
                }
            };
            let complete =
                gathering.get(&time).is_some_and(|p| p.shards.len() == self.workers && p.totals.len() == self.workers);
            if complete {
                let parts = gathering.remove(&time).expect("just looked at it");
                self.write(time, parts);
                self.finished.fetch_max(time, Ordering::SeqCst);
            }
        }
    }

    fn write(&mut self, time: Time, parts: Parts) {
        let started = Instant::now();
        let totals = Reading::merge_scope(parts.totals, &Scope::Totals);
        if self.last_offsets.as_ref() == Some(&totals.offsets) {
            tracing::debug!(time, "nothing admitted since the last snapshot; not written again");
            return;
        }
        let offsets = totals.offsets.clone();
        // Once the snapshot is on disk, a restart never reads its records again: their dead
        // letters must be on disk first (the other processes write theirs before they send
        // their shards).
        if let Err(error) = self.dead_letters.sync() {
            tracing::error!(%error, time, "cannot write the dead letters to disk; the snapshot waits for the next period");
            return;
        }
        // How long capturing held the workers of this process (the others' are not known here).
        let pause = parts
            .shards
            .values()
            .filter_map(|s| match s {
                ShardData::Frozen(shard) => Some(shard.pause),
                ShardData::Encoded { .. } => None,
            })
            .max()
            .unwrap_or_default();
        let shards: Vec<ShardData> = parts.shards.into_values().collect();
        let meta = crate::state::Meta {
            time,
            topic: self.topic.clone(),
            offsets: totals.offsets,
            dead_letters: totals.dead_letters,
            history: self.history.clone(),
            shards: Vec::new(),
        };
        let mut versions = 0;
        let written = crate::state::write(&self.dir, meta, shards.len(), |i, out| {
            let n = match &shards[i] {
                ShardData::Frozen(shard) => crate::dataflow::snapshot::encode(&shard.versions, out)?,
                ShardData::Encoded { bytes, versions, .. } => out.write_all(bytes).map(|()| *versions)?,
            };
            versions += n;
            Ok(n)
        });
        // Let go of the frozen versions at once: the workers fold their changes back in.
        drop(shards);
        match written {
            Ok((path, bytes)) => {
                self.last_offsets = Some(offsets);
                tracing::info!(
                    path = %path.display(),
                    time,
                    versions,
                    bytes,
                    write_ms = started.elapsed().as_millis() as u64,
                    longest_worker_pause_ms = pause.as_secs_f64() * 1000.0,
                    "snapshot written"
                )
            }
            Err(error) => tracing::error!(%error, time, "cannot write a snapshot; the previous ones are kept"),
        }
    }
}
