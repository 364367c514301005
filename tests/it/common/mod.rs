//! Shared test machinery: random inputs, and running them through the real dataflow.
#![allow(dead_code)]

pub mod engine;
pub mod feed;
pub mod live;

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use atelier_lambda::batch::{load_history, LoadShared};
use atelier_lambda::config::Settings;
use atelier_lambda::dataflow::{Dataflow, Time};
use atelier_lambda::deadletter::DeadLetterFile;
use atelier_lambda::event::{parse_json, Position, Reason, Rejection, Update};
use atelier_lambda::filter::Filter;
use atelier_lambda::oracle::Oracle;
use atelier_lambda::reading::Reading;
use atelier_lambda::source::history::HistoryFile;
use proptest::prelude::*;

/// One stream message: its partition, key, and body.
#[derive(Clone, Debug)]
pub struct Message {
    pub partition: i32,
    pub key: Option<String>,
    pub body: String,
    /// Which worker admits it (the "batching" across workers).
    pub worker: usize,
}

/// A JSON line: valid events of every shape, with ids from a small pool so that corrections,
/// deletes and duplicates are frequent, and bad records of every kind.
pub fn line() -> impl Strategy<Value = String> {
    let customer = prop::sample::select(vec!["Ali", "Sara", "Mounir", "Zoé", "Li"]);
    let id = prop::option::weighted(0.7, (0..12u32).prop_map(|i| format!("t{i}")));
    let amount = (-5_000i64..50_000).prop_map(atelier_lambda::amount::format_cents);
    let ts = prop::option::of((0i64..72).prop_map(|h| format!("2025-01-0{}T{:02}:30:00Z", 1 + h / 24, h % 24)));
    let category = prop::option::of(prop::sample::select(vec!["books", "food", "games"]));
    let good = (id.clone(), customer, amount, ts, category).prop_map(|(id, c, a, ts, cat)| {
        let mut fields = vec![format!(r#""customer":"{c}""#), format!(r#""amount":{a}"#)];
        if let Some(id) = id {
            fields.push(format!(r#""id":"{id}""#));
        }
        if let Some(ts) = ts {
            fields.push(format!(r#""ts":"{ts}""#));
        }
        if let Some(cat) = cat {
            fields.push(format!(r#""category":"{cat}""#));
        }
        format!("{{{}}}", fields.join(","))
    });
    let delete = id.prop_map(|id| match id {
        Some(id) => format!(r#"{{"id":"{id}","op":"delete"}}"#),
        None => r#"{"op":"delete"}"#.to_string(),
    });
    let bad = prop::sample::select(vec![
        r#"{"customer":"Ali","amount":"#,
        r#"{"customer":"","amount":5}"#,
        r#"{"amount":5}"#,
        r#"{"customer":"Ali","amount":"5"}"#,
        r#"{"customer":"Ali","amount":1.001}"#,
        r#"{"customer":"Ali","amount":1,"ts":"soon"}"#,
        r#"{"customer":"Ali","amount":1,"op":"merge"}"#,
        r#"[1,2,3]"#,
    ])
    .prop_map(String::from);
    prop_oneof![6 => good, 2 => delete, 1 => bad]
}

/// A stream message on one of three partitions, with an optional key.
pub fn message(workers: usize) -> impl Strategy<Value = Message> {
    (0..3i32, prop::option::weighted(0.3, (0..12u32).prop_map(|i| format!("t{i}"))), line(), 0..workers)
        .prop_map(|(partition, key, body, worker)| Message { partition, key, body, worker })
}

/// A stream message as a producer partitioning by identity sends it: every message naming an
/// identity (its `id`, else its key) goes to that identity's partition, so that the changes
/// of one transaction keep their order — Kafka orders nothing across partitions. Messages
/// without identity keep their random partition.
pub fn routed_message(workers: usize) -> impl Strategy<Value = Message> {
    message(workers).prop_map(|mut m| {
        let body: Option<serde_json::Value> = serde_json::from_str(&m.body).ok();
        let id = body.as_ref().and_then(|b| b.get("id")).and_then(|id| id.as_str()).map(str::to_owned);
        if let Some(identity) = id.or_else(|| m.key.clone()) {
            m.partition = (identity.bytes().map(u32::from).sum::<u32>() % 3) as i32;
        }
        m
    })
}

/// Parses a stream message the way a Kafka source does.
pub fn admit_message(m: &Message, offset: i64) -> Result<Update, (Reason, Rejection)> {
    parse_json(m.body.as_bytes())
        .and_then(|e| {
            e.into_update(
                m.key.clone(),
                || format!("real-time-orders/{}/{offset}", m.partition),
                Position::in_partition(m.partition, offset),
            )
        })
        .map_err(|r| (r.reason, r))
}

/// Runs a history file and then `batches` (one logical time each) through the dataflow on
/// `workers` workers, returning the merged reading at every time (0 = history).
///
/// After each batch the workers take `steps[i]` steps (0: the next time's records arrive
/// before this one is done); every time is read once all are complete.
pub fn run_dataflow(
    history: &Path,
    batches: &[Vec<Message>],
    steps: &[u8],
    workers: usize,
    event_filter: Option<Filter>,
    top_k: usize,
) -> Vec<Reading> {
    let steps = steps.to_vec();
    let (settings, files, dead, shared) = history_load(history);
    let batches = batches.to_vec();
    let results = Arc::new(Mutex::new(Vec::new()));
    let results_in = Arc::clone(&results);
    let config = timely::Config::process(workers);
    timely::execute(config, move |worker| {
        let mut pipeline = Dataflow::build(worker, event_filter.clone());
        load_history(worker, &mut pipeline, &files, &settings, &dead, &shared).unwrap();
        let end = feed(worker, &mut pipeline, &batches, &steps);
        let readings: Vec<Reading> =
            (0..end).map(|t| atelier_lambda::serve::query::read_everything(&mut pipeline.views, t, top_k)).collect();
        results_in.lock().unwrap().push(readings);
    })
    .unwrap()
    .join();
    let per_worker = std::mem::take(&mut *results.lock().unwrap());
    let times = per_worker[0].len();
    (0..times).map(|t| Reading::merge(per_worker.iter().map(|r| r[t].clone()), top_k)).collect()
}

/// Feeds `batches` to this worker's dataflow, one logical time each after the history's (the
/// messages of other workers only move the offsets), stepping `steps[i]` times after batch
/// `i`; then runs until every time is complete. Returns the end time.
pub fn feed(
    worker: &mut timely::worker::Worker,
    pipeline: &mut Dataflow,
    batches: &[Vec<Message>],
    steps: &[u8],
) -> Time {
    feed_with(worker, pipeline, batches, steps, &mut |_, _, _| {})
}

/// As [`feed`], calling `between(worker, dataflow, i)` once `i` batches are in (0: the
/// history only), and handing the upsert's changes to created views at every step.
pub fn feed_with(
    worker: &mut timely::worker::Worker,
    pipeline: &mut Dataflow,
    batches: &[Vec<Message>],
    steps: &[u8],
    between: &mut dyn FnMut(&mut timely::worker::Worker, &mut Dataflow, usize),
) -> Time {
    feed_from(worker, pipeline, batches, steps, [0; 3], between)
}

/// As [`feed_with`], the partitions' offsets starting at `offsets` (messages read before).
pub fn feed_from(
    worker: &mut timely::worker::Worker,
    pipeline: &mut Dataflow,
    batches: &[Vec<Message>],
    steps: &[u8],
    mut offsets: [i64; 3],
    between: &mut dyn FnMut(&mut timely::worker::Worker, &mut Dataflow, usize),
) -> Time {
    for (i, batch) in std::iter::once(&Vec::new()).chain(batches.iter()).enumerate() {
        for m in batch {
            let offset = offsets[m.partition as usize];
            offsets[m.partition as usize] += 1;
            if m.worker % worker.peers() != worker.index() {
                continue;
            }
            match admit_message(m, offset) {
                Ok(update) => pipeline.updates.send(update),
                Err((reason, _)) => pipeline.refused.update(reason, 1),
            }
            let previous = (offset > 0).then_some(offset);
            pipeline.move_offset(m.partition, previous, offset + 1);
        }
        pipeline.advance_to(i as Time + 1);
        for _ in 0..steps.get(i).copied().unwrap_or(0) {
            worker.step();
            let upserted = pipeline.upsert_frontier();
            pipeline.created.feed(upserted);
            pipeline.created.fill(&pipeline.latest.borrow(), |_, _| {});
        }
        between(worker, pipeline, i);
    }
    let end = pipeline.time();
    let probe = pipeline.probe.clone();
    while probe.less_than(&end) || pipeline.created.any_behind(end - 1) {
        worker.step();
        let upserted = pipeline.upsert_frontier();
        pipeline.created.feed(upserted);
        pipeline.created.fill(&pipeline.latest.borrow(), |_, _| {});
    }
    end
}

/// Admits history lines (as written by [`write_history`] to a file named `label`) to the
/// oracle at time 0.
pub fn admit_history(oracle: &mut Oracle, history_lines: &[String], label: &str) {
    let mut updates = Vec::new();
    let mut refused = Vec::new();
    let mut offset = 0u64;
    for (i, line) in history_lines.iter().enumerate() {
        let at = || format!("{label}:{}", i + 1);
        match parse_json(line.as_bytes()).and_then(|e| e.into_update(None, at, Position::in_file(0, offset))) {
            Ok(u) => updates.push(u),
            Err(r) => refused.push(r.reason),
        }
        offset += line.len() as u64 + 1;
    }
    oracle.admit(0, updates, refused);
}

/// The oracle's readings for the same input.
pub fn run_oracle(
    history_lines: &[String],
    label: &str,
    batches: &[Vec<Message>],
    event_filter: Option<&Filter>,
    top_k: usize,
) -> Vec<Reading> {
    let mut oracle = Oracle::new();
    admit_history(&mut oracle, history_lines, label);
    let mut readings = vec![oracle.reading(0, event_filter, top_k)];
    let mut offsets = [0i64; 3];
    for (i, batch) in batches.iter().enumerate() {
        let mut updates = Vec::new();
        let mut refused = Vec::new();
        for m in batch {
            let offset = offsets[m.partition as usize];
            offsets[m.partition as usize] += 1;
            match admit_message(m, offset) {
                Ok(u) => updates.push(u),
                Err((reason, _)) => refused.push(reason),
            }
            oracle.set_offset(m.partition, offset + 1);
        }
        let time = i as Time + 1;
        oracle.admit(time, updates, refused);
        readings.push(oracle.reading(time, event_filter, top_k));
    }
    readings
}

/// Writes history lines to a fresh file in a fresh directory.
pub fn write_history(dir: &Path, lines: &[String]) -> std::path::PathBuf {
    let path = dir.join("history.jsonl");
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    path
}

/// A fresh temporary directory under the target directory.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("atelier-lambda-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The oracle's live transactions at every logical time (0 = history) of the same input.
pub fn oracle_live(
    history_lines: &[String],
    label: &str,
    batches: &[Vec<Message>],
) -> Vec<(Vec<(String, atelier_lambda::event::Txn)>, Reading)> {
    let mut out = Vec::new();
    replay(history_lines, label, batches, |time, oracle| out.push((oracle.live(), oracle.reading(time, None, 1000))));
    out
}

/// The oracle after the history and every batch (batch `i` at time `i + 1`), `each` called
/// with it at every time from 0.
pub fn replay(
    history_lines: &[String],
    label: &str,
    batches: &[Vec<Message>],
    mut each: impl FnMut(Time, &Oracle),
) -> Oracle {
    let mut oracle = Oracle::new();
    admit_history(&mut oracle, history_lines, label);
    each(0, &oracle);
    let mut offsets = [0i64; 3];
    for (i, batch) in batches.iter().enumerate() {
        let (mut updates, mut refused) = (Vec::new(), Vec::new());
        for m in batch {
            let offset = offsets[m.partition as usize];
            offsets[m.partition as usize] += 1;
            match admit_message(m, offset) {
                Ok(u) => updates.push(u),
                Err((reason, _)) => refused.push(reason),
            }
            oracle.set_offset(m.partition, offset + 1);
        }
        oracle.admit(i as Time + 1, updates, refused);
        each(i as Time + 1, &oracle);
    }
    oracle
}

/// What a pipeline's history load needs for `history`: settings naming it, the file split even
/// when tiny (so that every test exercises the parallel reader), a dead-letter file beside
/// it, and the workers' shared load state.
fn history_load(history: &Path) -> (Settings, Vec<HistoryFile>, Arc<DeadLetterFile>, Arc<LoadShared>) {
    let mut settings = Settings::default();
    settings.input.files = vec![history.to_owned()];
    let mut files = HistoryFile::open_all(&settings.input.files).unwrap();
    for f in &mut files {
        f.min_split_bytes = 1;
    }
    let dead = Arc::new(DeadLetterFile::open(&history.with_extension("dead.jsonl")).unwrap());
    (settings, files, dead, Arc::new(LoadShared::default()))
}
