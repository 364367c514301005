//! One worker's life: where the cluster starts, its share of the history (or of a
//! snapshot), then its Kafka partitions, admitted at the worker's logical time — the Unix
//! time in milliseconds of its last advance, which [`super::ticker`] paces — until the stop.
//! Between polls it carries out the coordinator's orders, in the order given (see
//! [`super::coordinator`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use timely::worker::Worker;

use super::capture::{CapturedViews, Captures, ViewsCapture};
use super::coordinator::Coordinator;
use super::ticker;
use super::{now_ms, Answer, Order, Shared, WorkerReport};
use crate::batch::{load_history, load_snapshot, LoadCounts};
use crate::control::Control;
use crate::dataflow::Dataflow;
use crate::reading::{ReadScope, Reading, WorkerProgress};
use crate::serve::metrics::Source;
use crate::serve::query;
use crate::serve::serving::{Answering, Part, Reply};
use crate::source::kafka::{self, DeadLetterTopic, PartitionReader};
use crate::source::Record;

/// The most messages admitted at one logical time by one worker.
const POLL_MAX: usize = 50_000;
/// How often offsets are committed to the consumer group (and dead letters flushed).
const COMMIT_EVERY: Duration = Duration::from_secs(1);
/// How often a worker notes its partitions' high watermarks (for the consumer lag).
const WATERMARKS_EVERY: Duration = Duration::from_millis(50);

/// One worker's life: history (or a snapshot), then Kafka until asked to stop.
pub(super) fn run_worker(worker: &mut Worker, shared: &Shared) -> anyhow::Result<WorkerReport> {
    let settings = &shared.settings;
    // Timely runs each worker on its own thread: this one.
    if worker.index() == 0 {
        shared.worker_0.register();
    }
    shared.ticker.register();
    let mut pipeline = Dataflow::build(worker, shared.event_filter.clone());
    pipeline.created.count_arranged(worker);
    pipeline.created.set_chunk(settings.dataflow.backfill_chunk);
    let mut control = Control::<Order, Answer>::build(worker);
    let mut pending: VecDeque<Order> = VecDeque::new();

    let (index, peers) = (worker.index(), worker.peers());
    let mut coordinator = (index == 0).then(|| {
        let requests = shared.requests.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut coordinator = Coordinator::new(requests.expect("worker 0 takes the requests"), peers);
        // Views of an earlier run are installed again before the history (or the snapshot)
        // is loaded: empty then, they take in the load as it flows, in the same steps as the
        // other views, instead of replaying every live transaction after it.
        let restored = std::mem::take(&mut *shared.restore.lock().unwrap_or_else(|p| p.into_inner()));
        // Tables first: a view may read one. Their files are read once the run has started
        // (`TableFeeds::start`), their topics from the first offset.
        for def in restored.tables {
            let ignore = Reply::Call(Arc::new(drop));
            coordinator.restore_table(&mut control, &shared.answering, def, ignore);
        }
        for def in restored.views {
            let (catalog, id) = (Arc::clone(&shared.catalog), def.id);
            let reply = Reply::Call(Arc::new(move |part: Part| {
                if let Ok(part) = part {
                    catalog.lock().unwrap_or_else(|p| p.into_inner()).created_at(id, part.time);
                }
            }));
            coordinator.restore(&mut control, &shared.answering, def, reply);
        }
        // Where the cluster starts: worker 0's first order after those.
        let offsets = shared.resume.as_ref().map(|s| s.meta.offsets.clone()).unwrap_or_default();
        control.order(Order::Start { snapshot: shared.resume.is_some(), offsets });
        coordinator
    });
    // Worker 0 feeds the tables: their files and topics.
    let mut feeds = (index == 0).then(|| {
        super::feeds::TableFeeds::new(super::feeds::FeedSettings {
            brokers: settings.kafka.brokers.clone(),
            group: settings.kafka.group.clone(),
            max_record_bytes: settings.input.max_record_bytes,
            fetch_wait_ms: settings.kafka.fetch_wait_ms,
            dead_letters: Arc::clone(&shared.dead_letters),
        })
    });
    let (from_snapshot, start_offsets) = loop {
        control.send();
        worker.step_or_park(Some(ticker::BUSY_PARK));
        // Views created at run time get the upsert's changes of the step.
        let upserted = pipeline.upsert_frontier();
        pipeline.created.feed(upserted);
        pending.extend(control.orders());
        // Only installs (of the tables and views restored above) come before the start.
        let start = pending.iter().position(|o| matches!(o, Order::Start { .. })).unwrap_or(pending.len());
        let mut before: VecDeque<Order> = pending.drain(..start).collect();
        let progress = WorkerProgress::default();
        carry_out(worker, &mut before, &mut pipeline, &mut control, &shared.answering, &progress, feeds.as_mut());
        if let Some(Order::Start { snapshot, offsets }) = pending.pop_front() {
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
    // The views' state a clean stop keeps is put back only where it was kept: one process.
    let build = crate::state::kept::build(shared.event_filter.as_ref());
    let kept_dir = settings.state.dir.as_deref().filter(|_| settings.dataflow.processes <= 1);
    let initial = match (&shared.resume, from_snapshot) {
        (Some(snapshot), _) => {
            let kept = kept_dir.map(|dir| (dir, build.as_str()));
            load_snapshot(worker, &mut pipeline, snapshot, (worker.index() % local_workers, local_workers), kept)?
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
    // The tables installed before the start read their files now (their dead letters after
    // the file was prepared).
    if let Some(feeds) = feeds.as_mut() {
        feeds.start();
    }

    let k = &settings.kafka;
    // The partitions this worker will read are known once Kafka answers (a `Partitions`
    // order); until then the history is served, and a snapshot's offsets are what it reflects.
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

    let mut progress = WorkerProgress {
        worker: index,
        process: settings.dataflow.process,
        records: (history_read, 0),
        ..WorkerProgress::default()
    };
    let mut last_commit = Instant::now();
    let mut last_watermarks = Instant::now();
    let mut last_advance = Instant::now();
    // Set by the coordinator's Stop, which every worker of every process receives in order.
    let mut stopping = false;
    // The views' state being captured for the last snapshot registered.
    let mut capturing: Option<ViewsCapture> = None;
    // The statements' scans open on this worker.
    let mut scans = crate::compute::scan::Scans::default();
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
            if read > 0 {
                shared.ticker.admitted(pipeline.time());
            }
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
        if let Some(feeds) = feeds.as_mut().filter(|_| !stopping) {
            progress.tables = feeds.turn(&mut pipeline, &mut control, shared);
        }
        let now = now_ms();
        let held = coordinator.as_ref().is_some_and(|c| c.schedule.hold.is_some());
        let ticking = shared.ticker.ticking(pipeline.time(), last_advance);
        if now > pipeline.time() && !held && ticking {
            pipeline.advance_to(now);
            last_advance = Instant::now();
        }
        worker.step_or_park(Some(shared.ticker.park(ticking)));
        // Views created at run time get the upsert's changes of the step; those being filled
        // read their next part of the version table.
        let upserted = pipeline.upsert_frontier();
        pipeline.created.feed(upserted);
        let filled = |view, time| control.answer(Answer::Installed { view, time });
        if pipeline.created.fill(&pipeline.latest.borrow(), filled) {
            shared.ticker.keep_busy();
        }
        if let Some(coordinator) = coordinator.as_mut() {
            for answer in control.answers() {
                coordinator.receive(
                    answer,
                    &mut control,
                    &shared.answering,
                    shared.snapshots.as_ref(),
                    &shared.outlets,
                );
            }
            coordinator.forward(&mut control);
            let complete = pipeline.complete_through();
            coordinator.tick(complete, &mut control, &shared.answering);
            if let Some(complete) = complete {
                shared.worker_0.advanced(complete);
            }
            if coordinator.waits() {
                shared.ticker.keep_busy();
            }
            if !coordinator.partitions_ordered {
                match shared.partitions.take() {
                    Some(Ok(partitions)) => {
                        coordinator.partitions_ordered = true;
                        control.order(Order::Partitions(partitions));
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
        let told =
            carry_out(worker, &mut pending, &mut pipeline, &mut control, &shared.answering, &progress, feeds.as_mut());
        for (id, scan) in told.scans {
            scans.open(id, index, scan.0, scan.1, &shared.outlets);
        }
        for id in told.ended {
            scans.end(id);
        }
        // Statements' scans: a slice of this worker's time each turn, between its own steps.
        if scans.any() {
            for (id, wire) in scans.step(&mut pipeline, crate::compute::scan::SLICE) {
                control.answer(Answer::Scan { id, worker: index, wire });
            }
            shared.ticker.keep_busy();
        }
        if let Some(time) = told.snapshot {
            // Dead letters sent to Kafka before the snapshot are not read again after it.
            if let Some(topic) = &dead_letter_topic {
                topic.flush(Duration::from_secs(5));
            }
            // The views' state goes with it (before the worker steps: no view has passed
            // `time` yet). The last one, at a stop, is kept from the views themselves.
            if kept_dir.is_some() && !stopping && !told.stop {
                // The previous request is forgotten first (dropping it cancels what it asked).
                drop(capturing.take());
                capturing = ViewsCapture::request(&pipeline, time);
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
                let mut partitions = PartitionReader::new(
                    &k.brokers,
                    &k.group,
                    &k.topic,
                    &mine,
                    &from,
                    settings.input.max_record_bytes,
                    k.fetch_wait_ms,
                )?;
                partitions.wake_on_messages(std::thread::current());
                reader = Some(partitions);
            }
        }
        if told.stop {
            stopping = true;
            // Every process learns of the stop, also those that were not signalled.
            shared.stop.store(true, Ordering::SeqCst);
        }
        if let Some(snapshots) = &shared.snapshots {
            if let Some(shard) = pipeline.snapshots.take() {
                snapshots.captured(index, shard);
            }
            if let Some(capture) = capturing.as_mut() {
                match capture.poll() {
                    Captures::Waiting => {}
                    Captures::Done(sections) => {
                        let (time, build) = (capture.time(), build.clone());
                        snapshots.views_captured(CapturedViews { worker: index, time, build, sections });
                        capturing = None;
                    }
                    Captures::Refused => capturing = None,
                }
            }
            if let Some(encoded) = snapshots.encoded_for(index) {
                control.answer(Answer::Shard(encoded));
            }
        }
        if ticking {
            control.send();
        } else {
            control.send_idle();
        }
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
        // A slow broker gets longer at the stop: nothing comes after it.
        topic.flush(Duration::from_secs(30));
        close_within(topic, "the dead-letter producer");
    }
    shared.dead_letters.flush().context("cannot flush the dead-letter file")?;
    let state = pipeline.state.clone();
    let (_views, probe, created) = pipeline.close();
    worker.step_while(|| !probe.done());
    // The created views take the last of the upsert's changes, then finish too.
    let created = created.close();
    worker.step_while(|| created.iter().any(|view| !view.probe.done()));
    if let (Some(dir), Some(snapshots)) = (kept_dir, &shared.snapshots) {
        let time = snapshots.on_disk.load(Ordering::SeqCst);
        let failed = shared.failed.load(Ordering::SeqCst);
        if time > 0 && !failed {
            keep_views(dir, time, (index, peers), &build, &state, &created);
        }
    }
    Ok(report)
}

/// Writes this worker's views' state as of the snapshot at `time` ([`crate::state::kept`]),
/// unless the views hold records of a later time (then a restart computes them again).
fn keep_views(
    dir: &std::path::Path,
    time: crate::dataflow::Time,
    (worker, workers): (usize, usize),
    build: &str,
    state: &crate::dataflow::views::ViewState,
    created: &[crate::dataflow::created::ClosedView],
) {
    use crate::state::kept;
    let started = Instant::now();
    let ids: Vec<u64> = created.iter().map(|v| v.id).chain([kept::CUSTOMERS]).collect();
    if created.iter().all(|v| v.filled) && kept::holds(dir, time, (worker, workers), build, &ids) {
        // Kept with that snapshot already (captured then; nothing was admitted since).
        tracing::info!(worker, time, "the views' state is kept for the next start (with the last snapshot)");
        return;
    }
    for view in created {
        if !view.filled {
            tracing::info!(worker, view = view.id, "a view was still being filled; the views' state is not kept");
            return;
        }
        if !view.groups.borrow().exact_as_of(time) {
            tracing::info!(
                worker,
                view = view.id,
                time,
                "a view changed after the last snapshot; its state is not kept"
            );
            return;
        }
    }
    if !state.customers.borrow().exact_as_of(time) {
        tracing::info!(worker, time, "the views changed after the last snapshot; their state is not kept");
        return;
    }
    let mut sections: Vec<(u64, kept::Encode)> = Vec::new();
    for view in created {
        sections.push((view.id, Box::new(|sink| view.groups.borrow_mut().encode(sink))));
    }
    sections.push((kept::CUSTOMERS, Box::new(|sink| state.customers.borrow_mut().encode(sink))));
    let header = kept::Header { time, worker, workers, build: build.to_owned(), sections: ids };
    match kept::write(dir, &header, sections) {
        Ok(path) => tracing::info!(
            path = %path.display(),
            ms = started.elapsed().as_millis() as u64,
            "the views' state is kept for the next start"
        ),
        Err(error) => tracing::warn!(%error, "cannot keep the views' state; the next start computes them again"),
    }
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

/// What the orders carried out told a worker to do next.
#[derive(Default)]
pub(super) struct Told {
    stop: bool,
    exit: bool,
    /// A snapshot was registered, at this time.
    snapshot: Option<crate::dataflow::Time>,
    /// The topic's partitions, to start reading.
    partitions: Option<Vec<i32>>,
    /// Scans to open on this worker: id → time and what to read.
    scans: Vec<(u64, (crate::dataflow::Time, crate::compute::scan::ScanSpec))>,
    /// Scans whose readers have gone.
    ended: Vec<u64>,
}

/// Carries out the orders whose time has come, in order: a read waits until this worker's
/// views are complete through its time.
pub(super) fn carry_out(
    worker: &mut Worker,
    pending: &mut VecDeque<Order>,
    pipeline: &mut Dataflow,
    control: &mut Control<Order, Answer>,
    answering: &Answering,
    progress: &WorkerProgress,
    mut feeds: Option<&mut super::feeds::TableFeeds>,
) -> Told {
    let mut told = Told::default();
    while let Some(command) = pending.front() {
        match command {
            Order::Read { time, .. } if pipeline.probe.less_equal(time) => break,
            _ => {}
        }
        match pending.pop_front().expect("front exists") {
            Order::Read { id, time, scope } => {
                let (me, workers) = (control.index(), control.peers());
                let mut part = query::read(pipeline, time, &scope.share(me, workers), (me, workers));
                if let (Ok(part), ReadScope::Everything { .. } | ReadScope::Totals) = (&mut part, &scope) {
                    part.workers =
                        vec![WorkerProgress { arranged: pipeline.created.arranged(worker), ..progress.clone() }];
                }
                if let Some(part) = answering.deliver(id, part, workers) {
                    control.answer(Answer::Read { id, part: part.map(Box::new) });
                }
            }
            Order::Compact(time) => {
                pipeline.views.compact_to(time);
                pipeline.created.compact_to(time);
                pipeline.tables.compact_to(time);
                // A view being filled reads the table as of its start: its undo must stay.
                let keep = pipeline.created.filling_since().map_or(time, |since| since.min(time));
                pipeline.latest.borrow_mut().forget_before(keep);
            }
            Order::Snapshot(time) => {
                pipeline.snapshots.request(time);
                control.answer(Answer::Registered { time });
                told.snapshot = Some(time);
            }
            Order::Partitions(partitions) => told.partitions = Some(partitions),
            Order::Install { id, def } => {
                // The view is exact from the upsert's frontier on: what it has applied is in
                // the version table now, and what it applies next comes through the tap.
                let frontier = pipeline.upsert_frontier().unwrap_or(pipeline.time());
                let versions = pipeline.latest.borrow();
                let view = def.id;
                let from = pipeline.created.install(worker, *def, &versions, frontier, &mut pipeline.tables);
                drop(versions);
                let part = Ok(Reading { time: from, ..Reading::default() });
                if let Some(part) = answering.deliver(id, part, control.peers()) {
                    control.answer(Answer::Read { id, part: part.map(Box::new) });
                }
                // The coordinator holds reads of the view until every worker has filled its
                // part (at once here when the table was empty).
                if !pipeline.created.is_filling(view) {
                    control.answer(Answer::Installed { view, time: from });
                }
            }
            Order::Scan { id, time, spec, workers } => {
                if workers.contains(&control.index()) {
                    told.scans.push((id, (time, *spec)));
                }
            }
            Order::EndScan(id) => told.ended.push(id),
            Order::CreateTable { id, def } => {
                // Installed at the worker's time; worker 0 reads its file now, at that time:
                // the table answers with the whole file from then on.
                let (time, table) = (pipeline.time(), def.id);
                pipeline.tables.install(worker, (*def).clone(), time);
                // Worker 0 answers once the table's file is in (read on a thread of its own).
                let later = feeds.as_deref_mut().is_some_and(|feeds| feeds.open(*def, Some(id)));
                if !later {
                    let part = Ok(Reading { time, ..Reading::default() });
                    if let Some(part) = answering.deliver(id, part, control.peers()) {
                        control.answer(Answer::Read { id, part: part.map(Box::new) });
                    }
                    control.answer(Answer::Installed { view: table, time });
                }
            }
            Order::DropTable { id, table } => {
                if let Some(feeds) = feeds.as_deref_mut() {
                    feeds.close(table);
                }
                pipeline.tables.remove(worker, table);
                let part = Ok(Reading { time: pipeline.time(), ..Reading::default() });
                if let Some(part) = answering.deliver(id, part, control.peers()) {
                    control.answer(Answer::Read { id, part: part.map(Box::new) });
                }
            }
            Order::DropView { id, view } => {
                pipeline.created.remove(worker, view);
                let part = Ok(Reading { time: pipeline.time(), ..Reading::default() });
                if let Some(part) = answering.deliver(id, part, control.peers()) {
                    control.answer(Answer::Read { id, part: part.map(Box::new) });
                }
            }
            Order::Start { .. } => {} // taken before the loop
            Order::Stop => told.stop = true,
            Order::Exit => told.exit = true,
        }
    }
    told
}
