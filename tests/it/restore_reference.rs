//! A snapshot restores the views and the version table exactly, whatever the number of
//! workers that wrote it and that read it: read by as many workers, each worker puts its own
//! shard straight into its table (indexed at once); read by another number, every version
//! is routed through the upsert. Either way, corrections and deletes after the restart must
//! find the versions they replace — checked against the oracle over the whole input. With
//! the views' state kept — as a clean stop keeps it, or captured with a snapshot taken in the
//! middle of the stream, while later times go on — the same workers put it back instead of
//! computing the views from the versions, and the views then go on alike.

use crate::common;

use std::sync::{Arc, Mutex};

use atelier_lambda::batch::{load_history, load_snapshot};
use atelier_lambda::dataflow::Dataflow;
use atelier_lambda::reading::Reading;
use atelier_lambda::state::{self, Meta};
use common::*;
use proptest::prelude::*;

/// The parts of a reading a snapshot restores and the stream then changes (offsets and
/// dead letters are the run's to restore, not the shards').
fn views(r: &Reading) -> impl PartialEq + std::fmt::Debug {
    (r.customers.clone(), r.top.clone(), r.categories.clone(), r.hourly.clone(), r.overall, r.customer_count)
}

/// A worker's index, its shard's bytes and how many versions they hold.
type EncodedShard = (usize, Vec<u8>, u64);

/// What the views' state depends on, as `lambda run` says it (no event filter).
fn build() -> String {
    state::kept::build(None)
}

/// Whether, and how, the views' state is kept beside the snapshot.
#[derive(Clone, Copy, Debug)]
enum Keep {
    No,
    /// As a clean stop: after every batch, as of the last one's time.
    AtStop,
    /// Captured with a snapshot registered once this many batches are in (at the time of
    /// the next one), the batches after it going on meanwhile.
    WithSnapshot(usize),
}

fn check(
    history: Vec<String>,
    before: Vec<Vec<Message>>,
    after: Vec<Vec<Message>>,
    steps: Vec<u8>,
    (writers, readers): (usize, usize),
    keep: Keep,
) -> Result<(), TestCaseError> {
    let dir = temp_dir("restore");
    let path = write_history(&dir, &history);
    let state_dir = dir.join("state");
    std::fs::create_dir_all(&state_dir).unwrap();
    // The batches the snapshot holds: batch `i` is admitted at time `i + 1`.
    let held = match keep {
        Keep::WithSnapshot(i) => i + 1,
        _ => before.len(),
    };
    let time = held as u64;
    let totals: Arc<Mutex<Vec<Reading>>> = Arc::default();
    let (kept_dir, totals_in) = (state_dir.clone(), Arc::clone(&totals));

    // Run the history and the first batches on `writers` workers; each encodes its shard.
    let shards: Arc<Mutex<Vec<EncodedShard>>> = Arc::default();
    let (into, before_in, steps_in, history_in) = (Arc::clone(&shards), before.clone(), steps.clone(), path.clone());
    timely::execute(timely::Config::process(writers), move |worker| {
        let mut settings = atelier_lambda::config::Settings::default();
        settings.input.files = vec![history_in.clone()];
        let files = atelier_lambda::source::history::HistoryFile::open_all(&settings.input.files).unwrap();
        let dead = Arc::new(
            atelier_lambda::deadletter::DeadLetterFile::open(
                &history_in.with_extension(format!("{}.dead", worker.index())),
            )
            .unwrap(),
        );
        let mut pipeline = Dataflow::build(worker, None);
        load_history(worker, &mut pipeline, &files, &settings, &dead, &Arc::default()).unwrap();
        // As `lambda run` registers a snapshot: the upsert's versions and the groups, asked
        // before the worker steps again.
        feed_with(worker, &mut pipeline, &before_in, &steps_in, &mut |_, pipeline, i| {
            if matches!(keep, Keep::WithSnapshot(at) if at == i) {
                pipeline.snapshots.request(time);
                pipeline.state.customers.borrow_mut().request_capture(time);
            }
        });
        let frozen = match keep {
            Keep::WithSnapshot(_) => pipeline.snapshots.take().expect("the frontier has passed the snapshot").versions,
            _ => pipeline.latest.borrow_mut().freeze(),
        };
        let mut bytes = Vec::new();
        let versions = state::shard::encode(&frozen, &mut bytes).unwrap();
        into.lock().unwrap().push((worker.index(), bytes, versions));
        // The customers view's groups as of the snapshot's time, beside it, and the totals at
        // that time (in the snapshot's meta).
        totals_in.lock().unwrap().push(atelier_lambda::serve::query::read_everything(&mut pipeline.views, time, 5));
        let mut groups = Vec::new();
        let kept = match keep {
            Keep::No => false,
            Keep::AtStop => pipeline.state.customers.borrow_mut().encode_as_of(time, &mut groups),
            Keep::WithSnapshot(_) => {
                let captured = pipeline.state.customers.borrow_mut().take_capture();
                captured.expect("captured").expect("exactly at the time").encode(&mut |b| groups.extend_from_slice(b));
                true
            }
        };
        if !matches!(keep, Keep::No) {
            assert!(kept, "held through {time}");
            let (worker, workers) = (worker.index(), worker.peers());
            let sections = vec![state::kept::CUSTOMERS];
            let header = state::kept::Header { time, worker, workers, build: build(), sections };
            state::kept::write(&kept_dir, &header, vec![(state::kept::CUSTOMERS, state::kept::bytes(&groups))])
                .unwrap();
        }
    })
    .unwrap()
    .join();
    let mut shards = std::mem::take(&mut *shards.lock().unwrap());
    shards.sort_by_key(|(i, _, _)| *i);
    let totals = Reading::merge(std::mem::take(&mut *totals.lock().unwrap()), 5).totals_by_dimension();
    let meta = Meta {
        time,
        topic: "t".into(),
        offsets: Vec::new(),
        dead_letters: Vec::new(),
        history: Vec::new(),
        shards: Vec::new(),
        totals: Some(totals),
    };
    let (file, _) = state::write(&dir.join("state"), meta, shards.len(), |i, out| {
        out.write_all(&shards[i].1)?;
        Ok(shards[i].2)
    })
    .unwrap();
    let snapshot = Arc::new(state::read(&file).unwrap());

    // Restart on `readers` workers from the snapshot, then the later batches (offsets go on).
    let mut offsets = [0i64; 3];
    for m in before[..held].iter().flatten() {
        offsets[m.partition as usize] += 1;
    }
    // The kept state is put back only by as many workers as kept it.
    let usable = state::kept::usable(&state_dir, time, (0, readers), &build(), &[state::kept::CUSTOMERS]).is_some();
    prop_assert_eq!(usable, !matches!(keep, Keep::No) && readers == writers);
    let readings: Arc<Mutex<Vec<Reading>>> = Arc::default();
    // What the snapshot does not hold is read again after the restart.
    let after_in: Vec<Vec<Message>> = before[held..].iter().chain(&after).cloned().collect();
    let into = Arc::clone(&readings);
    timely::execute(timely::Config::process(readers), move |worker| {
        let mut pipeline = Dataflow::build(worker, None);
        let (index, peers) = (worker.index(), worker.peers());
        let build = build();
        load_snapshot(worker, &mut pipeline, &snapshot, (index, peers), Some((&state_dir, &build))).unwrap();
        let end = feed_from(worker, &mut pipeline, &after_in, &steps, offsets, &mut |_, _, _| {});
        let reading = atelier_lambda::serve::query::read_everything(&mut pipeline.views, end - 1, 5);
        into.lock().unwrap().push(reading);
    })
    .unwrap()
    .join();
    let live = Reading::merge(std::mem::take(&mut *readings.lock().unwrap()), 5);

    let all: Vec<Vec<Message>> = before.into_iter().chain(after).collect();
    let expected = run_oracle(&history, &path.display().to_string(), &all, None, 5);
    let _ = std::fs::remove_dir_all(&dir);
    let expected = expected.last().expect("the oracle reads time 0 at least");
    prop_assert_eq!(views(&live), views(expected), "{} writers, {} readers", writers, readers);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn a_snapshot_restores_the_views_for_any_workers(
        history in prop::collection::vec(line(), 0..60),
        before in prop::collection::vec(prop::collection::vec(message(3), 0..12), 0..4),
        after in prop::collection::vec(prop::collection::vec(message(3), 0..12), 1..4),
        steps in prop::collection::vec(0u8..4, 6),
        writers in prop::sample::select(vec![1usize, 2, 3]),
        readers in prop::sample::select(vec![1usize, 2, 3]),
        keep in 0u8..3,
        at in any::<prop::sample::Index>(),
    ) {
        let keep = match keep {
            0 => Keep::No,
            2 if !before.is_empty() => Keep::WithSnapshot(at.index(before.len())),
            _ => Keep::AtStop,
        };
        check(history, before, after, steps, (writers, readers), keep)?;
    }
}

/// As many readers as writers (each worker restores its own shard) and not.
#[test]
fn both_ways_of_restoring_are_exercised() {
    let history: Vec<String> =
        (0..40).map(|i| format!(r#"{{"id":"h{}","customer":"c{}","amount":{}}}"#, i % 25, i % 7, i + 1)).collect();
    let message = |i: usize, body: String| Message { partition: (i % 3) as i32, key: None, body, worker: i };
    // Corrections and deletes of history ids after the restart.
    let after = vec![(0..20)
        .map(|i| match i % 4 {
            0 => message(i, format!(r#"{{"id":"h{i}","op":"delete"}}"#)),
            _ => message(i, format!(r#"{{"id":"h{i}","customer":"c{}","amount":{}}}"#, i % 5, 1000 + i)),
        })
        .collect()];
    for (writers, readers) in [(2, 2), (3, 3), (2, 1), (1, 3)] {
        for keep in [Keep::No, Keep::AtStop] {
            check(history.clone(), Vec::new(), after.clone(), vec![1; 4], (writers, readers), keep).unwrap();
        }
    }
    // A snapshot in the middle of the stream, its views captured while later times go on.
    let (before, after) = after[0].split_at(12);
    let (before, after) = (vec![before[..6].to_vec(), before[6..].to_vec()], vec![after.to_vec()]);
    for workers in [1, 2, 3] {
        check(history.clone(), before.clone(), after.clone(), vec![0; 4], (workers, workers), Keep::WithSnapshot(0))
            .unwrap();
    }
}
