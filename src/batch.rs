//! The batch layer: load the history as the dataflow's initial collection (time 0).
//!
//! [`load_history`] is what every worker runs to feed its share of the history files into
//! its [`Dataflow`]; `lambda batch` ([`run`]) runs it, waits for time 0 to complete, reads
//! every view and writes it out. `lambda run` uses the same loader before turning to Kafka.

use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use timely::worker::Worker;

use crate::config::{CommandName, Output, Settings};
use crate::control::Control;
use crate::dataflow::versions::Stored;
use crate::dataflow::{Dataflow, Time};
use crate::deadletter::{DeadLetter, DeadLetterFile};
use crate::event::Position;
use crate::reading::Reading;
use crate::source::history::{HistoryError, HistoryFile};
use crate::source::Record;
use crate::state::shard::{decode, read};
use crate::state::Snapshot;

/// How often (in records) a loading worker lets the dataflow run, so that data flows on
/// instead of piling up in the input.
const STEP_EVERY: usize = 4096;

/// Counts a record in, and every [`STEP_EVERY`] records lets the dataflow run.
fn step_now_and_then(since_step: &mut usize, worker: &mut Worker, pipeline: &mut Dataflow) {
    *since_step += 1;
    if *since_step == STEP_EVERY {
        *since_step = 0;
        pipeline.step(worker);
    }
}

/// State shared by the workers of one process while they load.
#[derive(Default)]
pub struct LoadShared {
    /// Bytes read so far, for the progress bar.
    pub progress: AtomicU64,
    /// Set by the first worker that stops in strict mode, so that the others stop too.
    pub stop: AtomicBool,
}

/// What one worker loaded.
#[derive(Clone, Debug, Default)]
pub struct LoadCounts {
    /// Records that entered the dataflow.
    pub records: u64,
    /// Records refused.
    pub refused: u64,
}

/// Why loading stopped.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// Strict mode met a bad record.
    #[error("strict mode: bad record at {}: {}", .0.source, .0.rejection)]
    Strict(Box<DeadLetter>),
    /// The dead-letter file could not be written.
    #[error("cannot write dead letters to {path}: {source}")]
    DeadLetters {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A snapshot's shard did not decode.
    #[error(transparent)]
    Snapshot(#[from] crate::state::shard::DecodeError),
    /// The views' state kept beside the snapshot, found whole by every worker, could not be
    /// put back (its groups do not add up).
    #[error("the views' state kept in the state directory cannot be put back: {0}; remove its views-*.bin files to compute the views again")]
    KeptViews(String),
}

/// Feeds this worker's share of a snapshot into the pipeline at its current time, instead
/// of the history, and, on worker 0, the dead-letter counts. Counts the versions as records.
///
/// When every worker of the cluster reads, and the snapshot was written by as many
/// workers, shard `i` holds exactly the identities worker `i` owns: each worker restores
/// its shard straight into its version table and hands the views its live transactions
/// (no routing, no upsert: nothing to decide, every identity is there once). Otherwise each
/// version goes in as the update that restores it, which the upsert routes to its
/// identity's worker, so any number of workers, in any number of processes, can resume
/// any snapshot.
///
/// `(index, readers)`: this worker's index among the workers that read the snapshot —
/// those of the process that has it — and how many they are.
///
/// On that direct path, with `kept` — the state directory and what the views' state depends
/// on ([`crate::state::kept::build`]) — the views' state kept beside this snapshot (with
/// the snapshot itself, or by a clean stop) is put back, if every worker kept it (see
/// [`crate::state::kept`]), and the live transactions are not handed to the views at all.
pub fn load_snapshot(
    worker: &mut Worker,
    pipeline: &mut Dataflow,
    snapshot: &Snapshot,
    (index, readers): (usize, usize),
    kept: Option<(&std::path::Path, &str)>,
) -> Result<LoadCounts, LoadError> {
    // Room for this worker's identities at once, and a little more for the stream's first
    // new ones: growing the version table copies it (a third of a restart's time went to
    // one such copy). On the direct path below they are exactly its shard's; otherwise
    // identities are spread evenly over the workers by hash, give or take a little.
    // Reserved and untouched, the room costs no memory. The counts are the metadata's word:
    // a version takes more than a byte of the shards, so no more than their bytes are
    // believed (a damaged count then fails the read, not the allocation).
    let direct = readers == worker.peers() && snapshot.shards() == readers;
    let bytes: u64 = (0..snapshot.shards()).map(|s| snapshot.shard(s).len() as u64).sum();
    let mine = match snapshot.meta.shards.get(index) {
        Some(shard) if direct => shard.versions,
        _ => snapshot.versions() / worker.peers() as u64,
    }
    .min(bytes);
    pipeline.latest.borrow_mut().reserve((mine + mine / 64) as usize);
    let mut counts = LoadCounts::default();
    let mut since_step = 0;
    if direct {
        let views_kept = match kept {
            Some((dir, build)) => put_views_back(pipeline, snapshot, (index, readers), dir, build)?,
            None => false,
        };
        let (latest, time) = (Rc::clone(&pipeline.latest), pipeline.time());
        counts.records = read(
            snapshot.shard(index),
            &mut |names| latest.borrow_mut().restore_names(names),
            &mut |identity, stored| {
                // Admitted now, as the upsert would have stored it.
                let stored = Stored { time, ..stored };
                // With the views' state put back, they need not see the transactions. (The
                // table is let go before the worker steps: the upsert borrows it then.)
                let txn = latest.borrow_mut().restore(identity, stored, !views_kept);
                if let Some(txn) = txn {
                    pipeline.restored(txn);
                    step_now_and_then(&mut since_step, worker, pipeline);
                }
            },
        )?;
        latest.borrow_mut().restored();
    } else {
        for shard in (0..snapshot.shards()).filter(|s| s % readers == index) {
            counts.records += decode(snapshot.shard(shard), &mut |_time, update| {
                pipeline.updates.send(update);
                step_now_and_then(&mut since_step, worker, pipeline);
            })?;
        }
    }
    if index == 0 {
        for (reason, n) in &snapshot.meta.dead_letters {
            pipeline.refused.update(*reason, *n as isize);
            counts.refused += *n as u64;
        }
    }
    Ok(counts)
}

/// Puts back the views' state kept beside `snapshot`, if every worker of the
/// cluster kept it for the views this run has: this worker's groups of the `customers` view
/// and of each created `GROUP BY` view, and (worker 0) the totals. Returns whether it did.
fn put_views_back(
    pipeline: &mut Dataflow,
    snapshot: &Snapshot,
    (index, readers): (usize, usize),
    dir: &std::path::Path,
    build: &str,
) -> Result<bool, LoadError> {
    use crate::state::kept;
    let Some(totals) = &snapshot.meta.totals else { return Ok(false) };
    let mut sections = pipeline.created.kept_ids();
    sections.push(kept::CUSTOMERS);
    let Some(mine) = kept::usable(dir, snapshot.meta.time, (index, readers), build, &sections) else {
        return Ok(false);
    };
    for (id, bytes) in mine.sections().filter(|(id, _)| sections.contains(id)) {
        let groups = match id {
            kept::CUSTOMERS => pipeline.state.customers.borrow_mut().restore(bytes),
            view => match pipeline.created.get_mut(view).and_then(|v| v.kept.as_ref()) {
                Some(view) => view.groups.borrow_mut().restore(bytes),
                None => unreachable!("the sections read are the installed views' and the customers'"),
            },
        };
        groups.map_err(|e| LoadError::KeptViews(e.to_string()))?;
    }
    if index == 0 {
        pipeline.state.totals.borrow_mut().extend(totals.iter().cloned());
    }
    tracing::info!(worker = index, time = snapshot.meta.time, "the views' state kept with the snapshot is put back");
    Ok(true)
}

/// Feeds this worker's share of `files` into the pipeline at its current time.
pub fn load_history(
    worker: &mut Worker,
    pipeline: &mut Dataflow,
    files: &[HistoryFile],
    settings: &Settings,
    dead_letters: &DeadLetterFile,
    shared: &LoadShared,
) -> Result<LoadCounts, LoadError> {
    let (index, peers) = (worker.index(), worker.peers());
    // Identities are spread evenly over the workers by hash.
    let expected: u64 = files.iter().map(|f| f.estimated_records).sum();
    pipeline.latest.borrow_mut().reserve((expected / peers as u64) as usize);
    let mut counts = LoadCounts::default();
    let mut failure: Option<LoadError> = None;
    let mut since_step = 0;
    for file in files {
        file.read_share(index, peers, settings.input.max_record_bytes, &shared.progress, &mut |record| {
            match record {
                Record::Update(update) => {
                    counts.records += 1;
                    pipeline.updates.send(update);
                }
                Record::Refused(letter) if settings.input.strict => {
                    failure = Some(LoadError::Strict(Box::new(letter)));
                    shared.stop.store(true, Ordering::Relaxed);
                }
                Record::Refused(letter) => {
                    counts.refused += 1;
                    pipeline.refused.update(letter.reason(), 1);
                    if let Err(source) = dead_letters.write(&letter) {
                        failure =
                            Some(LoadError::DeadLetters { path: dead_letters.path().display().to_string(), source });
                        shared.stop.store(true, Ordering::Relaxed);
                    }
                }
            }
            step_now_and_then(&mut since_step, worker, pipeline);
            if shared.stop.load(Ordering::Relaxed) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        if failure.is_some() || shared.stop.load(Ordering::Relaxed) {
            break;
        }
    }
    dead_letters
        .flush()
        .map_err(|source| LoadError::DeadLetters { path: dead_letters.path().display().to_string(), source })?;
    match failure {
        Some(error) => Err(error),
        None => Ok(counts),
    }
}

/// One worker's share of a batch run, gathered by worker 0 (across processes).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Share {
    reading: Reading,
    records: u64,
    refused: u64,
    /// Why loading failed: the bad record's position (strict mode; the earliest wins), and
    /// the message.
    failure: Option<(Position, String)>,
}

/// What `lambda batch` computed.
pub struct BatchOutcome {
    /// Every view at time 0, merged over the workers.
    pub reading: Reading,
    /// Records loaded and refused, over all workers.
    pub counts: LoadCounts,
    /// Wall time of loading and computing the views.
    pub elapsed: Duration,
}

/// Runs the batch layer: every worker loads its share, then every view is read at time 0.
/// With a state directory, the share is of the newest snapshot, not of the history files.
/// Over several processes, worker 0 gathers every worker's share of the views: process 0
/// returns the outcome, the others `None`.
pub fn run(settings: &Settings) -> anyhow::Result<Option<BatchOutcome>> {
    let started = Instant::now();
    // Process 0 reads the snapshot; its versions reach every worker through the dataflow.
    let from_state = settings.state.dir.is_some();
    let snapshot = match &settings.state.dir {
        None => None,
        Some(_) if settings.dataflow.process != 0 => None,
        Some(dir) => {
            let (found, rejected) = crate::state::newest_valid(dir)?;
            for (_, error) in &rejected {
                tracing::error!(%error, "snapshot unusable; trying the previous one");
            }
            let snapshot = found.with_context(|| format!("no usable snapshot in {}", dir.display()))?;
            tracing::info!(
                snapshot = %snapshot.path.display(),
                time = snapshot.meta.time,
                versions = snapshot.versions(),
                "batch views of the newest snapshot"
            );
            Some(Arc::new(snapshot))
        }
    };
    let files = if from_state { Vec::new() } else { HistoryFile::open_all(&settings.input.files)? };
    let processes = settings.dataflow.processes.max(1);
    let event_filter = settings.event_filter()?;
    let top_k = settings.batch.top;
    let dead_path = settings.dead_letter_path(CommandName::Batch);
    crate::config::refuse_outputs_over_inputs(
        &settings.input.files,
        &[Output::File(&dead_path, "--dead-letters"), Output::Dir(&settings.batch.out, "--out")],
    )?;
    // A batch run recomputes everything: its dead letters start afresh.
    if dead_path.exists() {
        std::fs::remove_file(&dead_path).with_context(|| format!("cannot replace {}", dead_path.display()))?;
    }
    let dead_letters =
        Arc::new(DeadLetterFile::open(&dead_path).with_context(|| format!("cannot open {}", dead_path.display()))?);
    let shared = Arc::new(LoadShared::default());
    let bar = progress_bar(files.iter().map(|f| f.len).sum());
    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (bar, shared, done) = (bar.clone(), Arc::clone(&shared), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                bar.set_position(shared.progress.load(Ordering::Relaxed));
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let settings_for_workers = settings.clone();
    let (dead_for_workers, shared_for_workers) = (Arc::clone(&dead_letters), Arc::clone(&shared));
    // The views' state `lambda run` kept beside the snapshot, used as a restart uses it.
    let kept_dir = settings.state.dir.clone().filter(|_| processes <= 1);
    let build = crate::state::kept::build(event_filter.as_ref());
    let guards = crate::cluster::execute(settings.timely_config()?, move |worker| {
        let mut pipeline = Dataflow::build(worker, event_filter.clone());
        let mut control = Control::<(), Share>::build(worker);
        let loaded = match &snapshot {
            Some(snapshot) => {
                let local = worker.peers() / processes;
                let kept = kept_dir.as_deref().map(|dir| (dir, build.as_str()));
                load_snapshot(worker, &mut pipeline, snapshot, (worker.index() % local, local), kept)
            }
            None if from_state => Ok(LoadCounts::default()),
            None => load_history(
                worker,
                &mut pipeline,
                &files,
                &settings_for_workers,
                &dead_for_workers,
                &shared_for_workers,
            ),
        };
        let (mut views, probe, _) = pipeline.close();
        let history_done: Time = 1;
        worker.step_while(|| probe.less_than(&history_done));
        let reading = crate::serve::query::read_everything(&mut views, 0, top_k);
        let share = match loaded {
            Ok(counts) => Share { reading, records: counts.records, refused: counts.refused, failure: None },
            Err(error) => {
                let at = match &error {
                    LoadError::Strict(letter) => letter.position,
                    _ => Position { source: u32::MAX, seq: u64::MAX },
                };
                Share { reading, records: 0, refused: 0, failure: Some((at, error.to_string())) }
            }
        };
        // Every share goes to worker 0; it says when it has them all, so that no process
        // leaves before its share has arrived.
        control.answer(share);
        control.send();
        let mut shares = Vec::new();
        let mut done = false;
        while !done {
            worker.step_or_park(Some(Duration::from_millis(1)));
            shares.extend(control.answers());
            if worker.index() == 0 && shares.len() == worker.peers() {
                control.order(());
            }
            control.send();
            done = !control.orders().is_empty();
        }
        shares
    })
    .map_err(|e| anyhow::anyhow!("cannot start the workers: {e}"))?;
    let results = guards.join();
    done.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    bar.finish_and_clear();

    let mut shares = Vec::new();
    for result in results {
        shares.extend(result.map_err(|e| anyhow::anyhow!("a worker failed: {e}"))?);
    }
    if shares.is_empty() {
        return Ok(None); // not process 0: worker 0 has the shares
    }
    // In strict mode each worker stops at the first bad record of its share; the earliest
    // of those is the first bad record of the whole input.
    if let Some((_, error)) = shares.iter().filter_map(|s| s.failure.clone()).min() {
        anyhow::bail!(error);
    }
    let counts =
        LoadCounts { records: shares.iter().map(|s| s.records).sum(), refused: shares.iter().map(|s| s.refused).sum() };
    let reading = Reading::merge(shares.into_iter().map(|s| s.reading), top_k);
    Ok(Some(BatchOutcome { reading, counts, elapsed: started.elapsed() }))
}

/// A progress bar over `total` bytes on a terminal; hidden otherwise.
fn progress_bar(total: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() || total < (64 << 20) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "loading history {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("the progress template is valid"),
    );
    bar
}

/// `lambda batch`: the batch layer alone — prints the customer table as Spark's `show()`
/// does, writes every view to the output directory, and says what it did.
pub fn command(settings: &Settings) -> anyhow::Result<()> {
    use std::io::Write;
    let view_filter = settings.view_filter()?;
    let Some(outcome) = run(settings)? else {
        eprintln!(
            "process {} loaded its share; process 0 writes the views of the whole cluster",
            settings.dataflow.process
        );
        return Ok(());
    };
    let table = crate::output::customers_table(&outcome.reading, view_filter.as_ref(), settings.batch.show);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(table.as_bytes()).and_then(|()| stdout.flush()).context("cannot write to standard output")?;
    let written = crate::output::write_views(&settings.batch.out, &outcome.reading, view_filter.as_ref(), None)?;
    eprintln!(
        "batch view at time 0: {} records, {} customers, {} refused ({}) in {:.3} s; {} files in {}",
        outcome.counts.records,
        outcome.reading.customer_count,
        outcome.counts.refused,
        settings.dead_letter_path(CommandName::Batch).display(),
        outcome.elapsed.as_secs_f64(),
        written.len(),
        settings.batch.out.display(),
    );
    Ok(())
}
