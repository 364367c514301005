//! Worker 0's duties: turn read requests into timed reads, forward the answers, let the
//! traces compact, take snapshots, and order the stop.
//!
//! The coordinator picks every read's time: the latest time all views are complete through
//! on worker 0 — each worker then waits until its own views have passed it. Because orders
//! reach every worker in the order given, and the coordinator never orders a compaction past
//! a time it has ordered a read at before, every read is exact:
//!
//! ```text
//! order: Read { id 7, time 105 }   Compact(105)   Read { id 8, time 112 }
//! worker: reads at 105 once its probe passed 105, then compacts to 105, then reads at 112
//! ```
//!
//! A worker still checks, before it reads, that its traces can be read at the time (see
//! [`crate::serve::query::read`]), and answers an error rather than a wrong reading.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use super::snapshots::Snapshots;
use super::{Answer, Order};
use crate::compute::scan::{Outlets, ScanPart, Wire};
use crate::control::Control;
use crate::dataflow::created::Maintained;
use crate::dataflow::Time;
use crate::reading::ReadScope;
use crate::serve::serving::{Answering, ReadRequest, Reply, Request};

/// How often the coordinator lets the traces compact.
const COMPACT_EVERY: Duration = Duration::from_millis(100);
/// The longest a clean stop waits for its last snapshot.
const FINAL_SNAPSHOT_WAIT: Duration = Duration::from_secs(120);

/// Worker 0's state as the coordinator.
pub struct Coordinator {
    requests: Receiver<ReadRequest>,
    /// Every worker of every process.
    workers: usize,
    /// Requests not ordered yet: nothing complete, or reads held (see `reads_from`).
    waiting: Vec<ReadRequest>,
    next_id: u64,
    compacted: Time,
    last_compaction: Instant,
    /// Snapshots: when asked, in flight, held.
    pub schedule: SnapshotSchedule,
    stop_ordered: bool,
    exit_ordered: bool,
    /// Whether the topic's partitions were ordered to every worker.
    pub partitions_ordered: bool,
    /// Workers that took the partitions, and the latest time one put its offsets in.
    partitions_taken: (usize, Time),
    /// Reads are answered at times from this one: none until Kafka has answered (or failed
    /// to) once, so that the first answers of a run whose Kafka is up already reflect the
    /// topic; then the time every worker's offsets are in the views; then, after a view is
    /// created, the time it is exact from in every worker.
    pub reads_from: Option<Time>,
    /// Views created at run time being installed: id → workers that have not filled their
    /// part yet (a scan of one waits on each worker until its part is filled).
    installing: std::collections::BTreeMap<u64, usize>,
    /// The times statements read at, pinned: time → how many. No trace compacts past the
    /// earliest (see `sql/read.rs`).
    pins: std::collections::BTreeMap<Time, usize>,
    /// The shares of scans that workers of other processes send: the channel to the reader,
    /// and the parts it had no room for yet.
    remote: std::collections::HashMap<(u64, usize), Remote>,
}

/// A remote worker's share of a scan, on its way to the reader.
struct Remote {
    sender: Option<tokio::sync::mpsc::Sender<ScanPart>>,
    queued: std::collections::VecDeque<ScanPart>,
    ended: bool,
}

/// Worker 0's view of the snapshots.
#[derive(Debug)]
pub struct SnapshotSchedule {
    /// When the last one was asked for.
    last: Instant,
    /// The time of the one being taken.
    in_flight: Option<Time>,
    /// Set while worker 0 holds its input at this time, until every worker has registered
    /// the snapshot at it.
    pub hold: Option<Time>,
    /// A clean stop's last snapshot: its time, and when it was asked for.
    last_one: Option<(Time, Instant)>,
    /// Workers that registered the snapshot in flight.
    registered: usize,
}

impl Coordinator {
    /// Whether the coordinator waits for a time to complete (reads, installs, a snapshot,
    /// the stop): then every worker must keep moving its time on.
    pub fn waits(&self) -> bool {
        !self.waiting.is_empty()
            || !self.installing.is_empty()
            || self.schedule.in_flight.is_some()
            || self.schedule.hold.is_some()
            || self.schedule.last_one.is_some()
            || self.stop_ordered
    }

    /// A coordinator of `workers` workers, taking read requests from `requests`.
    pub fn new(requests: Receiver<ReadRequest>, workers: usize) -> Self {
        Coordinator {
            requests,
            workers,
            waiting: Vec::new(),
            next_id: 0,
            compacted: 0,
            last_compaction: Instant::now(),
            schedule: SnapshotSchedule {
                last: Instant::now(),
                in_flight: None,
                hold: None,
                last_one: None,
                registered: 0,
            },
            stop_ordered: false,
            exit_ordered: false,
            partitions_ordered: false,
            partitions_taken: (0, 0),
            reads_from: None,
            installing: Default::default(),
            pins: Default::default(),
            remote: Default::default(),
        }
    }

    /// A new request id, whose parts go to `reply`.
    fn next_request(&mut self, answering: &Answering, reply: Reply) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        answering.expect(id, reply);
        id
    }

    /// Orders the install of views kept in the state directory (at start), each worker's
    /// time going to `reply`.
    pub fn restore(
        &mut self,
        control: &mut Control<Order, Answer>,
        answering: &Answering,
        def: Maintained,
        reply: Reply,
    ) {
        let id = self.next_request(answering, reply);
        self.installing.insert(def.id, self.workers);
        control.order(Order::Install { id, def: Box::new(def) });
    }

    /// Orders the install of a table kept in the state directory (at start, after the start
    /// order: its file and topic are read again).
    pub fn restore_table(
        &mut self,
        control: &mut Control<Order, Answer>,
        answering: &Answering,
        def: crate::table::TableDef,
        reply: Reply,
    ) {
        let id = self.next_request(answering, reply);
        control.order(Order::CreateTable { id, def: Box::new(def) });
    }

    /// Orders a read of `scope` at `time` from every worker; their parts go to `reply`.
    pub fn order_read(
        &mut self,
        control: &mut Control<Order, Answer>,
        answering: &Answering,
        time: Time,
        scope: ReadScope,
        reply: Reply,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        answering.expect(id, reply);
        control.order(Order::Read { id, time, scope });
    }

    /// Takes an answer from a worker.
    pub fn receive(
        &mut self,
        answer: Answer,
        control: &mut Control<Order, Answer>,
        answering: &Answering,
        snapshots: Option<&Snapshots>,
        outlets: &Outlets,
    ) {
        if let Answer::Scan { id, worker, .. } = &answer {
            // The channel is taken out of the process's outlets when the first part comes.
            let (id, worker) = (*id, *worker);
            self.remote.entry((id, worker)).or_insert_with(|| Remote {
                sender: outlets.take(id, worker),
                queued: Default::default(),
                ended: false,
            });
        }
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
            Answer::Shard(shard) => {
                if let Some(snapshots) = snapshots {
                    snapshots.received(shard);
                }
            }
            Answer::Installed { view, time } => {
                if let Some(left) = self.installing.get_mut(&view) {
                    *left -= 1;
                    if *left == 0 {
                        self.installing.remove(&view);
                    }
                }
                // Reads wait until every worker's part of the new view is exact.
                self.reads_from = Some(self.reads_from.unwrap_or(0).max(time));
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
                if answering.deliver(id, part.map(|p| *p), self.workers).is_some() {
                    tracing::warn!(id, "an answer to a read nobody waits for");
                }
            }
            Answer::Scan { id, worker, wire } => self.remote_part(id, worker, wire, control),
            Answer::StopAsked { worker } => {
                tracing::info!(worker, "a worker's process was asked to stop; stopping every process");
                self.order_stop(control);
            }
        }
    }

    /// Orders every worker to stop (once).
    pub fn order_stop(&mut self, control: &mut Control<Order, Answer>) {
        if !self.stop_ordered {
            self.stop_ordered = true;
            control.order(Order::Stop);
        }
    }

    /// Orders every worker to close its inputs and exit (once).
    pub fn order_exit(&mut self, control: &mut Control<Order, Answer>) {
        if !self.exit_ordered {
            self.exit_ordered = true;
            control.order(Order::Exit);
        }
    }

    /// Asks for a snapshot when one is due (or for a stop's last one), holds worker 0's input
    /// at its time until every worker has registered it, and notes when it is written.
    pub fn snapshot_duties(
        &mut self,
        snapshots: &Snapshots,
        input_time: Time,
        stopping: bool,
        control: &mut Control<Order, Answer>,
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
        let due = stopping || s.last.elapsed() >= snapshots.every;
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
        control.order(Order::Snapshot(time));
        self.order_read(control, answering, time, ReadScope::Totals, snapshots.totals_reply());
    }

    /// A part of a remote worker's share of scan `id`: queued for its reader.
    fn remote_part(&mut self, id: u64, worker: usize, wire: Wire, control: &mut Control<Order, Answer>) {
        let Some(remote) = self.remote.get_mut(&(id, worker)) else { return };
        match wire {
            Wire::Batch(bytes) => match crate::compute::scan::from_ipc(&bytes) {
                Ok(batch) => remote.queued.push_back(ScanPart::Batch(batch)),
                Err(error) => {
                    tracing::error!(id, worker, %error, "a scan's batch did not decode");
                    remote.queued.push_back(ScanPart::Failed(crate::reading::ReadError::Stopped));
                }
            },
            Wire::Failed(error) => remote.queued.push_back(ScanPart::Failed(error)),
            Wire::End => remote.ended = true,
        }
        self.forward(control);
    }

    /// Hands the remote workers' queued parts to their readers, as far as their channels take
    /// them; orders a scan ended whose reader has gone.
    pub fn forward(&mut self, control: &mut Control<Order, Answer>) {
        let mut gone = Vec::new();
        self.remote.retain(|(id, _), remote| {
            while let Some(part) = remote.queued.pop_front() {
                let Some(sender) = &remote.sender else { break };
                match sender.try_send(part) {
                    Ok(()) => {}
                    Err(tokio::sync::mpsc::error::TrySendError::Full(part)) => {
                        remote.queued.push_front(part);
                        return true;
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                        gone.push(*id);
                        return false;
                    }
                }
            }
            let keep = !(remote.ended && remote.queued.is_empty()) && remote.sender.is_some();
            if remote.sender.is_none() {
                gone.push(*id);
            }
            keep
        });
        gone.sort_unstable();
        gone.dedup();
        for id in gone {
            control.order(Order::EndScan(id));
        }
    }

    /// Orders the waiting reads and pins at `complete`, the latest time worker 0's views are
    /// complete through, and every `COMPACT_EVERY` a compaction to it — or to the earliest time
    /// a statement has pinned, if earlier.
    pub fn tick(&mut self, complete: Option<Time>, control: &mut Control<Order, Answer>, answering: &Answering) {
        // Installs, drops, scans and reads at pinned times are ordered at once; reads and
        // pins wait for a complete time.
        for request in self.requests.try_iter().collect::<Vec<_>>() {
            match request.what {
                Request::Install(def) => {
                    let id = self.next_request(answering, request.reply);
                    self.installing.insert(def.id, self.workers);
                    control.order(Order::Install { id, def });
                }
                Request::CreateTable(def) => {
                    let id = self.next_request(answering, request.reply);
                    control.order(Order::CreateTable { id, def });
                }
                Request::DropTable(table) => {
                    let id = self.next_request(answering, request.reply);
                    control.order(Order::DropTable { id, table });
                }
                Request::Drop(view) => {
                    // A view dropped while it fills: no worker will say it is filled.
                    self.installing.remove(&view);
                    let id = self.next_request(answering, request.reply);
                    control.order(Order::DropView { id, view });
                }
                Request::Scan { id, time, spec, workers } => control.order(Order::Scan { id, time, spec, workers }),
                Request::ReadAt(time, scope) => self.order_read(control, answering, time, scope, request.reply),
                Request::Unpin(time) => {
                    if let Some(count) = self.pins.get_mut(&time) {
                        *count -= 1;
                        if *count == 0 {
                            self.pins.remove(&time);
                        }
                    }
                }
                Request::Read(_) | Request::Pin => self.waiting.push(request),
            }
        }
        let Some(complete) = complete else { return };
        if self.reads_from.is_some_and(|from| complete >= from) {
            for request in std::mem::take(&mut self.waiting) {
                let scope = match request.what {
                    Request::Read(scope) => scope,
                    Request::Pin => {
                        *self.pins.entry(complete).or_default() += 1;
                        ReadScope::Offsets
                    }
                    _ => unreachable!("only reads and pins wait"),
                };
                self.order_read(control, answering, complete, scope, request.reply);
            }
        }
        let floor = self.pins.keys().next().map_or(complete, |pinned| complete.min(*pinned));
        if floor > self.compacted && self.last_compaction.elapsed() >= COMPACT_EVERY {
            control.order(Order::Compact(floor));
            self.compacted = floor;
            self.last_compaction = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests;
