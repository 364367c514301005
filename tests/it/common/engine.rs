//! The real pipeline in this process — history, a Kafka-protocol broker on loopback, the
//! workers, the SQL engine — fed batch by batch and read through SQL once each batch is in.
//!
//! ```text
//! Live::start(history, 2 workers) ─► send(batch 1) ─► sql("SELECT …")  (waits for batch 1's offsets)
//!                                 ─► send(batch 2) ─► sql(…) …
//! ```
//!
//! Every read waits until the views reflect every message sent so far (read-your-writes), and
//! nothing more is sent meanwhile: what it answers is what the oracle holds after those
//! batches.

use std::path::Path;
use std::time::Duration;

use atelier_lambda::broker::Broker;
use atelier_lambda::config::Settings;
use atelier_lambda::run::{self, Running};
use atelier_lambda::serve::bound::MinOffsets;
use atelier_lambda::sql::read::Hold;
use atelier_lambda::sql::session::Session;
use atelier_lambda::sql::{Answer, SqlError};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Int64Type, TimeUnit, TimestampMicrosecondType, TimestampNanosecondType, UInt64Type,
};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::live::{producer, TOPIC};
use super::Message;

/// One value of an answer, as the tests compare them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum V {
    Null,
    Text(String),
    Int(i64),
    /// A decimal: its unscaled value and its scale (`Num(12345, 2)` is 123.45).
    Num(i128, i8),
    /// A timestamp, in seconds since the epoch.
    Ts(i64),
}

impl V {
    /// An amount in cents.
    pub fn cents(c: impl Into<i128>) -> V {
        V::Num(c.into(), 2)
    }

    /// As the answers' JSON shows it.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            V::Null => serde_json::Value::Null,
            V::Text(t) => t.as_str().into(),
            V::Int(n) => (*n).into(),
            V::Num(n, scale) => serde_json::from_str(&atelier_lambda::sql::answer::decimal_text(*n, *scale)).unwrap(),
            V::Ts(s) => {
                chrono::DateTime::from_timestamp(*s, 0).unwrap().format("%Y-%m-%dT%H:%M:%SZ").to_string().into()
            }
        }
    }

    /// Ordered as `ORDER BY` orders (ascending): NULL last.
    pub fn sort_cmp(&self, other: &V) -> std::cmp::Ordering {
        match (self, other) {
            (V::Null, V::Null) => std::cmp::Ordering::Equal,
            (V::Null, _) => std::cmp::Ordering::Greater,
            (_, V::Null) => std::cmp::Ordering::Less,
            (a, b) => a.cmp(b),
        }
    }
}

/// An answer's rows, as values.
pub fn rows(answer: &Answer) -> Vec<Vec<V>> {
    let mut out = Vec::new();
    for batch in &answer.batches {
        for row in 0..batch.num_rows() {
            out.push(batch.columns().iter().map(|column| value(column.as_ref(), row)).collect());
        }
    }
    out
}

fn value(column: &dyn Array, row: usize) -> V {
    if column.is_null(row) {
        return V::Null;
    }
    match column.data_type() {
        DataType::Utf8 => V::Text(column.as_string::<i32>().value(row).to_owned()),
        DataType::Utf8View => V::Text(column.as_string_view().value(row).to_owned()),
        DataType::LargeUtf8 => V::Text(column.as_string::<i64>().value(row).to_owned()),
        DataType::Int64 => V::Int(column.as_primitive::<Int64Type>().value(row)),
        DataType::UInt64 => V::Int(column.as_primitive::<UInt64Type>().value(row) as i64),
        DataType::Decimal128(_, scale) => V::Num(column.as_primitive::<Decimal128Type>().value(row), *scale),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            V::Ts(column.as_primitive::<TimestampMicrosecondType>().value(row).div_euclid(1_000_000))
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            V::Ts(column.as_primitive::<TimestampNanosecondType>().value(row).div_euclid(1_000_000_000))
        }
        other => panic!("a column of type {other} in a test's answer"),
    }
}

/// A pipeline of this process, its broker, and the offsets sent so far.
pub struct Live {
    running: Option<Running>,
    producer: BaseProducer,
    offsets: [i64; 3],
    session: Session,
    _broker: Broker,
}

impl Live {
    /// Starts a broker with the test topic (3 partitions) and a pipeline on `workers` workers
    /// that loads `history` then reads the topic; `chunk` identities per step fill a view.
    pub fn start(history: &Path, workers: usize, dir: &Path, chunk: usize) -> Live {
        let broker = Broker::start(0, TOPIC, 3).expect("a broker on loopback");
        let mut settings = Settings::default();
        settings.input.files = vec![history.to_owned()];
        settings.input.dead_letters = dir.join("dead_letters.jsonl");
        settings.dataflow.workers = workers;
        settings.dataflow.backfill_chunk = chunk;
        settings.kafka.brokers = broker.address();
        settings.kafka.topic = TOPIC.into();
        settings.kafka.fetch_wait_ms = 1;
        let running = run::start(&settings).expect("the pipeline starts");
        let producer = producer(&broker.address());
        let mut session = Session::default();
        session.wait = Some(Duration::from_secs(60));
        Live { running: Some(running), producer, offsets: [0; 3], session, _broker: broker }
    }

    /// Sends a batch of messages, each to its partition, and waits until the broker has them.
    pub fn send(&mut self, batch: &[Message]) {
        for m in batch {
            let mut record = BaseRecord::<str, str>::to(TOPIC).partition(m.partition).payload(m.body.as_str());
            if let Some(key) = &m.key {
                record = record.key(key.as_str());
            }
            self.producer.send(record).expect("queued");
            self.offsets[m.partition as usize] += 1;
        }
        self.producer.flush(Duration::from_secs(30)).expect("the broker took the batch");
    }

    /// Answers `text` once the views reflect every message sent.
    pub fn sql(&mut self, text: &str) -> Result<Answer, SqlError> {
        let sent = self.offsets.iter().enumerate().filter(|(_, o)| **o > 0).map(|(p, o)| (p as i32, *o)).collect();
        self.session.min_offsets = Some(MinOffsets(sent));
        let running = self.running.as_ref().expect("running until dropped");
        running.engine.execute_blocking(&mut self.session, text)
    }

    /// Creates `topic` with one partition on the broker.
    pub fn create_topic(&self, topic: &str) {
        self._broker.create_topic(topic, 1).expect("the broker creates the topic");
    }

    /// Sends one message to partition 0 of `topic` (no body: a tombstone) and waits until the
    /// broker has it.
    pub fn send_to(&mut self, topic: &str, key: Option<&str>, body: Option<&str>) {
        let mut record = BaseRecord::<str, str>::to(topic).partition(0);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(body) = body {
            record = record.payload(body);
        }
        self.producer.send(record).expect("queued");
        self.producer.flush(Duration::from_secs(30)).expect("the broker took the message");
    }

    /// Sends messages (a key, a body; no body: a tombstone) to partition 0 of `topic`, in
    /// order, and waits until the broker has them all.
    pub fn send_all_to(&mut self, topic: &str, messages: &[(Option<String>, Option<String>)]) {
        for (key, body) in messages {
            loop {
                let mut record = BaseRecord::<str, str>::to(topic).partition(0);
                if let Some(key) = key {
                    record = record.key(key.as_str());
                }
                if let Some(body) = body {
                    record = record.payload(body.as_str());
                }
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((error, _)) => {
                        let full = error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull);
                        assert!(full, "{error}");
                        self.producer.poll(Duration::from_millis(10));
                    }
                }
            }
        }
        self.producer.flush(Duration::from_secs(60)).expect("the broker took the messages");
    }

    /// Holds the latest complete time (a changefeed's hold), once the views reflect every
    /// message sent.
    pub fn hold(&mut self) -> std::sync::Arc<Hold> {
        let _ = self.rows("SELECT 1");
        let engine = self.running.as_ref().expect("running until dropped").engine.clone();
        block_on(async move { engine.hold().await }).expect("a time is held")
    }

    /// View `name`'s rows at a held time.
    pub fn rows_at(&self, name: &str, at: &std::sync::Arc<Hold>) -> Vec<Vec<V>> {
        let engine = self.running.as_ref().expect("running until dropped").engine.clone();
        let (name, at) = (name.to_owned(), std::sync::Arc::clone(at));
        rows(&block_on(async move { engine.rows_at(&name, &at).await }).unwrap_or_else(|e| panic!("{e}")))
    }

    /// View `name`'s changes between two held times, as a changefeed reads them (each row
    /// with its difference last); `None` when the view is read whole instead.
    pub fn changes(&self, name: &str, since: &std::sync::Arc<Hold>, at: &std::sync::Arc<Hold>) -> Option<Vec<Vec<V>>> {
        let engine = self.running.as_ref().expect("running until dropped").engine.clone();
        let (name, since, at) = (name.to_owned(), std::sync::Arc::clone(since), std::sync::Arc::clone(at));
        let changes = block_on(async move {
            let Some(plan) = engine.changes_plan(&name).await? else { return Ok(None) };
            engine.changes(&plan, &since, &at).await.map(Some)
        });
        changes.unwrap_or_else(|e: SqlError| panic!("{e}")).map(|answer| rows(&answer))
    }

    /// Whether view `name`'s changes between two held times, as a changefeed reads them, take
    /// its rows at the first to its rows at the second: `Ok(false)` when the view has no
    /// changes to read (its feeds read it whole); an error showing the difference.
    pub fn changes_fold(
        &self,
        name: &str,
        since: &std::sync::Arc<Hold>,
        at: &std::sync::Arc<Hold>,
    ) -> Result<bool, String> {
        let (before, after) = (self.rows_at(name, since), self.rows_at(name, at));
        let Some(changes) = self.changes(name, since, at) else { return Ok(false) };
        if folded(&before, &changes) == counted(&after) {
            return Ok(true);
        }
        Err(format!("view {name}: the changes {changes:?} from {before:?} do not make {after:?}"))
    }

    /// [`Live::sql`], which must answer.
    pub fn rows(&mut self, text: &str) -> Vec<Vec<V>> {
        match self.sql(text) {
            Ok(answer) => rows(&answer),
            Err(error) => panic!("{text}: {error} ({})", error.code()),
        }
    }
}

/// Rows as a multiset: each row → how many times it is there.
fn counted(rows: &[Vec<V>]) -> std::collections::BTreeMap<Vec<V>, i64> {
    let mut counts = std::collections::BTreeMap::new();
    for row in rows {
        *counts.entry(row.clone()).or_insert(0) += 1;
    }
    counts
}

/// `rows` with `changes` (each row with its difference last) applied.
fn folded(rows: &[Vec<V>], changes: &[Vec<V>]) -> std::collections::BTreeMap<Vec<V>, i64> {
    let mut counts = counted(rows);
    for change in changes {
        let (row, diff) = change.split_at(change.len().saturating_sub(1));
        let Some(V::Int(diff)) = diff.first() else { panic!("a difference that is no integer: {change:?}") };
        *counts.entry(row.to_vec()).or_insert(0) += diff;
    }
    counts.retain(|_, c| *c != 0);
    counts
}

/// Runs one of the engine's async calls from a test's thread.
fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(work)
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop();
            let _ = running.join();
        }
    }
}
