//! The serving handle: how any thread (the prompt, an HTTP request, `--views-out`) asks the
//! running dataflow for a reading, and gets each worker's share back.
//!
//! ```text
//! Serving::read(scope) ──request──► worker 0 (the coordinator) picks the time T every view
//!                                   is complete through, orders every worker to read at T
//! each worker ──its share at T──► Answering ──► the waiting thread or task, which merges
//! ```
//!
//! A read fails with a [`ReadError`] saying why — the pipeline stopped, it did not answer in
//! time, or a worker found its views could not be read exactly at `T` — never with a
//! reading that mixes times.

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::compute::scan::{Outlets, ScanPart, ScanSpec};
use crate::dataflow::created::Maintained;
use crate::dataflow::Time;
pub use crate::reading::ReadError;
use crate::reading::{ReadScope, Reading};
use crate::serve::metrics::Metrics;

/// One worker's share of a read, or why it has none.
pub type Part = Result<Reading, ReadError>;

/// A request to the coordinator, and where the workers' answers go.
pub struct ReadRequest {
    /// What is asked.
    pub what: Request,
    /// Where the workers' shares go.
    pub reply: Reply,
}

/// What a request asks the coordinator for.
pub enum Request {
    /// Read what the scope covers at the latest complete time.
    Read(ReadScope),
    /// Read what the scope covers at a time a statement pinned.
    ReadAt(Time, ReadScope),
    /// Pin the latest complete time for a statement (no trace compacts past it until it is
    /// unpinned), and read the offsets at it.
    Pin,
    /// Let a statement's time go.
    Unpin(Time),
    /// Scan a relation at a pinned time: every worker in `workers` sends its share to the
    /// channels opened for scan `id`.
    Scan {
        /// The scan.
        id: u64,
        /// The statement's time.
        time: Time,
        /// What to read.
        spec: Box<ScanSpec>,
        /// The workers whose shares are read.
        workers: Vec<usize>,
    },
    /// Install a created view on every worker (each answers the time it is exact from).
    Install(Box<Maintained>),
    /// Remove a created view from every worker.
    Drop(u64),
    /// Install a table on every worker (each answers the time it answers from).
    CreateTable(Box<crate::table::TableDef>),
    /// Remove a table from every worker.
    DropTable(u64),
}

/// Where the workers send their shares of a read: a thread waiting on a channel (the
/// prompt, `--views-out`), an async task (an HTTP request) — which then waits without
/// holding a thread, and wakes without a hop through a pool of blocking threads — or a
/// function (the snapshot writer's).
#[derive(Clone)]
pub enum Reply {
    /// A thread waiting on a channel.
    Thread(Sender<Part>),
    /// An async task waiting on a channel.
    Task(tokio::sync::mpsc::UnboundedSender<Part>),
    /// A function called with each share.
    Call(Arc<dyn Fn(Part) + Send + Sync>),
}

impl Reply {
    fn send(&self, part: Part) {
        // A reader that gave up (timed out) no longer listens; that is not an error here.
        let _ = match self {
            Reply::Thread(sender) => sender.send(part).map_err(drop),
            Reply::Task(sender) => sender.send(part).map_err(drop),
            Reply::Call(call) => {
                call(part);
                Ok(())
            }
        };
    }
}

/// Reads being answered: request id → where the parts go, and how many came. Kept in the
/// process of worker 0, whose workers hand their parts over directly; workers of other
/// processes send theirs to worker 0 over the control plane.
#[derive(Default)]
pub struct Answering(Mutex<HashMap<u64, (Reply, usize)>>);

impl Answering {
    /// Expects `workers` parts of read `id`, for `reply`.
    pub fn expect(&self, id: u64, reply: Reply) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(id, (reply, 0));
    }

    /// Hands a part over if read `id` is answered from this process; gives it back if not.
    pub fn deliver(&self, id: u64, part: Part, workers: usize) -> Option<Part> {
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

/// Worker 0's thread, to wake it when a read request arrives: an idle worker parks for a
/// millisecond, which would otherwise add to every answer's latency. (The other workers get
/// their orders over timely's channels, which wake them.) And the other way: worker 0 says
/// here when the time every view is complete through moves on, which reads that wait for
/// input positions wait for (see [`crate::serve::bound`]).
#[derive(Default)]
pub struct Waker {
    thread: OnceLock<Thread>,
    complete: std::sync::atomic::AtomicU64,
    advanced: tokio::sync::Notify,
}

impl Waker {
    /// Called on worker 0's thread: the thread to wake.
    pub fn register(&self) {
        let _ = self.thread.set(std::thread::current());
    }

    fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    /// Called by worker 0: every view is complete through `time`.
    pub fn advanced(&self, time: Time) {
        if self.complete.fetch_max(time, std::sync::atomic::Ordering::AcqRel) < time {
            self.advanced.notify_waiters();
        }
    }

    /// The latest time every view is known complete through.
    pub fn complete(&self) -> Time {
        self.complete.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Resolves once [`Waker::advanced`] moves the time on (a future made before the move
    /// sees it, even if it is polled after).
    pub fn moved(&self) -> tokio::sync::futures::Notified<'_> {
        self.advanced.notified()
    }
}

/// Reads the views of a running pipeline from any thread.
#[derive(Clone)]
pub struct Serving {
    requests: Sender<ReadRequest>,
    workers: usize,
    worker_0: Arc<Waker>,
    /// The newest offsets read for waiting readers, shared by all of them.
    pub(crate) positions: Arc<crate::serve::bound::Positions>,
    metrics: Arc<Metrics>,
    first: Arc<std::sync::OnceLock<Reading>>,
    /// Where the workers of this process send their shares of scans.
    outlets: Arc<Outlets>,
    next_scan: Arc<std::sync::atomic::AtomicU64>,
}

impl Serving {
    /// A handle whose requests go to `requests` (worker 0's), answered by `workers` workers.
    /// Returns the receiving end, for worker 0.
    pub fn new(workers: usize, worker_0: Arc<Waker>, metrics: Arc<Metrics>) -> (Serving, Receiver<ReadRequest>) {
        let (requests, received) = channel();
        let (first, positions, outlets, next_scan) = (Arc::default(), Arc::default(), Arc::default(), Arc::default());
        (Serving { requests, workers, worker_0, positions, metrics, first, outlets, next_scan }, received)
    }

    /// The first reading of every view since the start: the batch layer — the history (or
    /// the snapshot resumed from) before the stream moved the views, as the dashboard shows it.
    pub fn first_reading(&self) -> Option<&Reading> {
        self.first.get()
    }

    /// Keeps `reading` as the first one (if none is kept yet).
    pub fn keep_first(&self, reading: Reading) {
        let _ = self.first.set(reading);
    }

    /// Reads what `scope` covers at the latest complete time.
    pub fn read(&self, scope: ReadScope, timeout: Duration) -> Result<Reading, ReadError> {
        let parts = self.ask(Request::Read(scope.clone()), timeout)?;
        Ok(Reading::merge_scope(parts, &scope))
    }

    /// Installs a created view on every worker; returns the time it answers from (the
    /// latest of the workers').
    pub async fn install(&self, def: Maintained, timeout: Duration) -> Result<Time, ReadError> {
        let parts = self.ask_async(Request::Install(Box::new(def)), timeout).await?;
        Ok(parts.iter().map(|p| p.time).max().unwrap_or(0))
    }

    /// Installs a table on every worker (worker 0 reads its file first); returns the time it
    /// answers from.
    pub async fn create_table(&self, def: crate::table::TableDef, timeout: Duration) -> Result<Time, ReadError> {
        let parts = self.ask_async(Request::CreateTable(Box::new(def)), timeout).await?;
        Ok(parts.iter().map(|p| p.time).max().unwrap_or(0))
    }

    /// Removes a table from every worker.
    pub async fn drop_table(&self, id: u64, timeout: Duration) -> Result<(), ReadError> {
        self.ask_async(Request::DropTable(id), timeout).await.map(drop)
    }

    /// Removes a created view from every worker.
    pub async fn drop_view(&self, id: u64, timeout: Duration) -> Result<(), ReadError> {
        self.ask_async(Request::Drop(id), timeout).await.map(drop)
    }

    /// Pins the latest time every view is complete through for a statement: until
    /// [`Serving::unpin`], no trace compacts past it. Returns the offsets at that time (the
    /// reading's time is the time pinned).
    pub async fn pin(&self, timeout: Duration) -> Result<Reading, ReadError> {
        let (reply, mut replies) = tokio::sync::mpsc::unbounded_channel();
        self.request(Request::Pin, Reply::Task(reply))?;
        let parts = async {
            let mut parts = Vec::with_capacity(self.workers);
            while parts.len() < self.workers {
                parts.push(replies.recv().await.ok_or(ReadError::Stopped)??);
            }
            Ok(parts)
        };
        match tokio::time::timeout(timeout, parts).await {
            Ok(parts) => Ok(Reading::merge_scope(parts?, &ReadScope::Offsets)),
            Err(_) => {
                // The coordinator pins the time when it answers, however late: the pin is let go
                // as soon as its first part says which time it was.
                let serving = self.clone();
                tokio::spawn(async move {
                    if let Some(Ok(part)) = replies.recv().await {
                        serving.unpin(part.time);
                    }
                });
                Err(ReadError::Timeout)
            }
        }
    }

    /// Lets a pinned time go.
    pub fn unpin(&self, time: Time) {
        let _ = self.request(Request::Unpin(time), Reply::Call(Arc::new(drop)));
    }

    /// Reads what `scope` covers at `time`, which a statement has pinned.
    pub async fn read_at(&self, time: Time, scope: ReadScope, timeout: Duration) -> Result<Reading, ReadError> {
        let parts = self.ask_async(Request::ReadAt(time, scope.clone()), timeout).await?;
        Ok(Reading::merge_scope(parts, &scope))
    }

    /// Asks `workers` for their shares of `spec` at `time` (pinned); the channels their
    /// batches come by, in the order of `workers`.
    pub fn scan(
        &self,
        time: Time,
        spec: ScanSpec,
        workers: &[usize],
    ) -> Result<Vec<tokio::sync::mpsc::Receiver<ScanPart>>, ReadError> {
        let id = self.next_scan.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let receivers = self.outlets.open(id, workers);
        let request = Request::Scan { id, time, spec: Box::new(spec), workers: workers.to_vec() };
        self.request(request, Reply::Call(Arc::new(drop)))?;
        Ok(receivers)
    }

    /// Where the workers of this process send their shares of scans.
    pub fn outlets(&self) -> &Arc<Outlets> {
        &self.outlets
    }

    /// Hands `what` to the coordinator and gathers every worker's answer, from an async task.
    async fn ask_async(&self, what: Request, timeout: Duration) -> Result<Vec<Reading>, ReadError> {
        let (reply, mut replies) = tokio::sync::mpsc::unbounded_channel();
        self.request(what, Reply::Task(reply))?;
        let parts = async {
            let mut parts = Vec::with_capacity(self.workers);
            while parts.len() < self.workers {
                parts.push(replies.recv().await.ok_or(ReadError::Stopped)??);
            }
            Ok(parts)
        };
        tokio::time::timeout(timeout, parts).await.map_err(|_| ReadError::Timeout)?
    }

    /// Hands `what` to the coordinator and gathers every worker's answer.
    fn ask(&self, what: Request, timeout: Duration) -> Result<Vec<Reading>, ReadError> {
        let (reply, replies) = channel();
        self.request(what, Reply::Thread(reply))?;
        let deadline = Instant::now() + timeout;
        let mut parts = Vec::with_capacity(self.workers);
        while parts.len() < self.workers {
            let left = deadline.checked_duration_since(Instant::now()).ok_or(ReadError::Timeout)?;
            match replies.recv_timeout(left) {
                Ok(part) => parts.push(part?),
                Err(RecvTimeoutError::Timeout) => return Err(ReadError::Timeout),
                Err(RecvTimeoutError::Disconnected) => return Err(ReadError::Stopped),
            }
        }
        Ok(parts)
    }

    /// Reads what `scope` covers at the latest complete time, from an async task.
    pub async fn read_async(&self, scope: ReadScope, timeout: Duration) -> Result<Reading, ReadError> {
        let parts = self.ask_async(Request::Read(scope.clone()), timeout).await?;
        Ok(Reading::merge_scope(parts, &scope))
    }

    /// Hands a read to the coordinator, waking it if it is parked.
    fn request(&self, what: Request, reply: Reply) -> Result<(), ReadError> {
        self.requests.send(ReadRequest { what, reply }).map_err(|_| ReadError::Stopped)?;
        self.worker_0.wake();
        Ok(())
    }

    /// Worker 0's side of the handle: where it says the views moved on.
    pub fn worker_0(&self) -> &Waker {
        &self.worker_0
    }

    /// How many workers answer reads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The process's metrics: records read, high watermarks, query latencies.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
