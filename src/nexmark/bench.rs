//! `lambda nexmark`: one of Nexmark's queries ([`super::queries`]) as a view over the three
//! tables fed by the generator in process ([`crate::table::nexmark`]), timed from the tables'
//! creation until the view reflects every event, then checked against the same `SELECT` run
//! by DataFusion alone over the events applied in order ([`super::oracle`]).
//!
//! ```text
//! $ lambda nexmark --query q3 --events 10000000 --corrections 0.1 --deletes 0.02
//! q3: 10000000 events (+1012345 corrections and deletes) in 8.41 s on 2 workers: 1189060 events/s, …
//! ```
//!
//! The pipeline is the real one (`run::start`: workers, arrangements, the view compiled from
//! its plan); the view is created right after the tables, a few milliseconds into their
//! stream — what came before is its backfill, the rest it maintains as it comes. The run is
//! done once the views are complete through the time the last table's last change entered at
//! (every generator through: `ended`). The answer and the recomputation are compared as multisets of
//! rows (numbers by value: an integer sum is a `numeric` here and an `Int64` there).

use std::time::{Duration, Instant};

use anyhow::Context;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType, TimestampNanosecondType};
use datafusion::arrow::record_batch::RecordBatch;

use super::generator::Options;
use super::oracle::Applied;
use super::queries::QUERIES;
use super::Stream;
use crate::config::Settings;

/// What to run.
#[derive(Clone, Debug)]
pub struct Bench {
    /// A query of [`QUERIES`], by name.
    pub query: String,
    /// The generator's options (the whole run's: each table takes its stream).
    pub options: Options,
    /// Dataflow workers.
    pub workers: usize,
    /// Check the view against the recomputation.
    pub verify: bool,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Changes the tables took: the events, their corrections and deletes.
    pub changes: u64,
    /// From the first `CREATE TABLE` until the view reflected every event.
    pub seconds: f64,
    /// CPU time of the whole process over the same span (workers, generators, everything).
    pub cpu_seconds: f64,
    /// The process's peak resident memory at the end of the span.
    pub peak_bytes: u64,
    /// The view's rows.
    pub rows: usize,
    /// Rows that differ from the recomputation (in either), if it was checked.
    pub differences: Option<usize>,
}

impl Measured {
    /// One line of figures: events per second; per core as Nexmark counts it — the events over
    /// the CPU-seconds the process used (its "cores" are the CPU used, not the cores there
    /// are); CPU per million events; peak memory; the check.
    pub fn line(&self, bench: &Bench) -> String {
        let events = bench.options.events;
        let rate = events as f64 / self.seconds;
        let per_core = events as f64 / self.cpu_seconds.max(1e-9);
        let checked = match self.differences {
            None => "not checked".to_owned(),
            Some(0) => "equal to the recomputation".to_owned(),
            Some(d) => format!("{d} rows DIFFER from the recomputation"),
        };
        format!(
            "{}: {events} events (+{} corrections and deletes) in {:.2} s on {} workers: {:.0} events/s, \
             {:.0} per core ({:.2} cores used), {:.2} CPU-s per million events, peak {} MiB; {} rows, {checked}",
            bench.query,
            self.changes.saturating_sub(events),
            self.seconds,
            bench.workers,
            rate,
            per_core,
            self.cpu_seconds / self.seconds,
            self.cpu_seconds / (events as f64 / 1e6),
            self.peak_bytes >> 20,
            self.rows,
        )
    }
}

/// Runs `bench` on a pipeline of its own (an empty history, a broker in this process whose
/// topic nobody writes) and measures it.
pub fn run(bench: &Bench) -> anyhow::Result<Measured> {
    let statements = statements(&bench.query, "nexmark", &bench.options)?;
    let dir = std::env::temp_dir().join(format!("lambda-nexmark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let history = dir.join("history.jsonl");
    std::fs::write(&history, "").with_context(|| format!("cannot write {}", history.display()))?;
    let mut settings = Settings::default();
    let broker = crate::broker::Broker::start(0, &settings.kafka.topic, 1)?;
    settings.kafka.brokers = broker.address();
    settings.input.files = vec![history];
    settings.input.dead_letters = dir.join("dead_letters.jsonl");
    settings.dataflow.workers = bench.workers;
    let measured = measure(bench, &statements, &settings);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    measured
}

/// The statements that make `query` a view over the three tables read from `connector`:
/// `nexmark` (the generator in process, as `options` say) or `kafka` (the topics named as the
/// tables) — the three `CREATE TABLE`s, then `CREATE VIEW`, one a line.
pub fn statements(query: &str, connector: &str, options: &Options) -> anyhow::Result<Vec<String>> {
    let select = select(query)?;
    let mut out = Vec::new();
    for stream in Stream::ALL {
        let with = match connector {
            "nexmark" => format!(
                "connector = 'nexmark', events = {}, corrections = {}, deletes = {}, seed = {}",
                options.events, options.corrections, options.deletes, options.seed
            ),
            "kafka" => format!("connector = 'kafka', topic = '{}', format = 'json'", stream.name()),
            other => anyhow::bail!("connector {other:?}: 'nexmark' or 'kafka'"),
        };
        out.push(stream.create_table(&with));
    }
    out.push(format!("CREATE VIEW {query} AS {select}"));
    Ok(out)
}

/// The `SELECT` of query `name`.
fn select(name: &str) -> anyhow::Result<&'static str> {
    QUERIES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s).with_context(|| {
        let names: Vec<&str> = QUERIES.iter().map(|(n, _)| *n).collect();
        format!("no query {name:?}: {}", names.join(", "))
    })
}

fn measure(bench: &Bench, statements: &[String], settings: &Settings) -> anyhow::Result<Measured> {
    let options = bench.options;
    let running = crate::run::start(settings)?;
    let unlimited =
        crate::sql::Limits { max_rows: usize::MAX, max_bytes: usize::MAX, timeout: Duration::from_secs(3600) };
    let engine = running.engine.with_limits(unlimited);
    let mut session = crate::sql::session::Session::default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (cpu_before, started) = (cpu_seconds(), Instant::now());
    for statement in statements {
        engine.execute_blocking(&mut session, statement)?;
    }
    // The time the last table's last change entered at, once every generator is through.
    let last = loop {
        let status = running.serving.read(crate::reading::ReadScope::Totals, Duration::from_secs(60))?;
        let tables: Vec<_> = status.workers.iter().flat_map(|w| &w.tables).collect();
        if let Some(stuck) = tables.iter().find(|t| t.waiting.is_some()) {
            anyhow::bail!("table {}: {}", stuck.name, stuck.waiting.as_deref().unwrap_or_default());
        }
        let ended: Vec<Option<u64>> = tables.iter().map(|t| t.ended).collect();
        if ended.len() == Stream::ALL.len() && ended.iter().all(Option::is_some) {
            break ended.into_iter().flatten().max().unwrap_or_default();
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let hold = loop {
        let hold = runtime.block_on(engine.hold())?;
        if hold.time() >= last {
            break hold;
        }
        drop(hold);
        std::thread::sleep(Duration::from_millis(1));
    };
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = cpu_seconds() - cpu_before;
    let peak_bytes = peak_bytes();
    let status = running.serving.read(crate::reading::ReadScope::Totals, Duration::from_secs(60))?;
    let changes = status.workers.iter().flat_map(|w| &w.tables).map(|t| t.records).sum();
    let answer = runtime.block_on(engine.rows_at(&bench.query, &hold))?;
    drop(hold);
    let ours = fingerprints(&answer.batches);
    drop(answer);
    running.stop();
    let _ = running.join();
    let differences = if bench.verify {
        let oracle = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let batches = oracle.block_on(Applied::new(options).query(select(&bench.query)?))?;
        Some(differences(&ours, &fingerprints(&batches)))
    } else {
        None
    };
    Ok(Measured { changes, seconds, cpu_seconds, peak_bytes, rows: ours.len(), differences })
}

/// Each row's fingerprint (a 128-bit hash of its values, numbers by value), sorted.
fn fingerprints(batches: &[RecordBatch]) -> Vec<u128> {
    use std::hash::{Hash, Hasher};
    let mut out = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let (mut low, mut high) = (std::hash::DefaultHasher::new(), std::hash::DefaultHasher::new());
            0x9E37_79B9_u32.hash(&mut high);
            for column in batch.columns() {
                let value = canonical(column.as_ref(), row);
                value.hash(&mut low);
                value.hash(&mut high);
            }
            out.push(u128::from(low.finish()) | (u128::from(high.finish()) << 64));
        }
    }
    out.sort_unstable();
    out
}

/// How many rows are in one sorted multiset and not the other.
fn differences(a: &[u128], b: &[u128]) -> usize {
    let (mut i, mut j, mut differ) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Equal => (i, j) = (i + 1, j + 1),
            std::cmp::Ordering::Less => (i, differ) = (i + 1, differ + 1),
            std::cmp::Ordering::Greater => (j, differ) = (j + 1, differ + 1),
        }
    }
    differ + (a.len() - i) + (b.len() - j)
}

/// A value as text both engines agree on: a number by its value (`5`, `4822.388`), a
/// timestamp by its microseconds, text as it is.
fn canonical(column: &dyn Array, row: usize) -> String {
    if column.is_null(row) {
        return "NULL".into();
    }
    let trimmed = |text: String| {
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            text
        }
    };
    match column.data_type() {
        DataType::Float64 | DataType::Float32 => {
            let text = datafusion::arrow::util::display::array_value_to_string(column, row).unwrap_or_default();
            trimmed(format!("{:.6}", text.parse::<f64>().unwrap_or(f64::NAN)))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            column.as_primitive::<TimestampMicrosecondType>().value(row).to_string()
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            (column.as_primitive::<TimestampNanosecondType>().value(row) / 1000).to_string()
        }
        ty if ty.is_numeric() => {
            trimmed(datafusion::arrow::util::display::array_value_to_string(column, row).unwrap_or_default())
        }
        _ => datafusion::arrow::util::display::array_value_to_string(column, row).unwrap_or_default(),
    }
}

/// CPU time this process has used, user and system.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// This process's peak resident memory (`VmHWM`).
fn peak_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_querys_statements_are_the_three_tables_then_the_view() {
        let options = Options { events: 500, corrections: 0.1, ..Options::default() };
        let kafka = statements("q5", "kafka", &options).unwrap();
        assert_eq!(kafka.len(), 4);
        assert!(kafka[2].starts_with("CREATE TABLE bid") && kafka[2].contains("topic = 'bid'"), "{}", kafka[2]);
        assert!(kafka[3].starts_with("CREATE VIEW q5 AS WITH counts AS"), "{}", kafka[3]);
        let generated = statements("q0", "nexmark", &options).unwrap();
        assert!(generated[0].contains("connector = 'nexmark', events = 500, corrections = 0.1"), "{}", generated[0]);
        assert!(statements("q6", "kafka", &options).unwrap_err().to_string().contains("no query \"q6\""));
        assert!(statements("q0", "s3", &options).unwrap_err().to_string().contains("'nexmark' or 'kafka'"));
    }

    #[test]
    fn multisets_differ_by_the_rows_in_one_and_not_the_other() {
        assert_eq!(differences(&[1, 2, 2, 3], &[1, 2, 2, 3]), 0);
        assert_eq!(differences(&[1, 2, 2, 3], &[1, 2, 3]), 1);
        assert_eq!(differences(&[1, 2, 3], &[0, 2, 4]), 4);
    }
}
