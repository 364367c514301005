//! Where a table's rows come from: its file, read whole when the table is installed, then its
//! topic, read from the first offset — by global worker 0 alone, which admits each change at
//! its current time (the dataflow spreads the rows over the workers by key).
//!
//! ```text
//! CREATE TABLE … WITH (path = 'customers.csv', topic = 'customer-info')
//! install (time 40):  customers.csv → every record admitted at 40 (the last per key wins)
//!                     a thread looks for the topic's partitions, once a second while it does not exist
//! each turn after:    the topic's new messages → admitted at the worker's time
//! ```
//!
//! A record that does not fit the table is a dead letter whose source names the table
//! (`table customer_info: customer-info/0/17`), counted by the table's feed in `/v1/status`
//! (not in the `dead_letters` relation, whose counts the snapshots keep). At every
//! start the file and the topic are read again whole: a table's rows are not in the
//! snapshots, so its letters of an earlier run are dropped from the dead-letter file rather
//! than written twice.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::dataflow::Dataflow;
use crate::deadletter::{DeadLetter, DeadLetterFile, TABLE_LETTER_PREFIX as LETTER_PREFIX};
use crate::event::{Position, Reason, Rejection};
use crate::source::kafka::{self, Lookup, PartitionReader};
use crate::table::{decode, TableDef, TableProgress, Upsert};

/// The most messages of one table's topic admitted in one turn of the worker's loop.
const POLL_MAX: usize = 50_000;
/// How often a table whose topic is missing looks for it again.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// What [`TableFeeds`] needs to read topics and write dead letters.
#[derive(Clone)]
pub struct FeedSettings {
    /// Kafka's bootstrap servers.
    pub brokers: String,
    /// The consumer group its offsets are committed to (suffixed with the table's name).
    pub group: String,
    /// The largest record taken.
    pub max_record_bytes: usize,
    /// How long the broker may hold an empty fetch.
    pub fetch_wait_ms: u64,
    /// Where dead letters go.
    pub dead_letters: Arc<DeadLetterFile>,
}

/// The tables' feeds on worker 0.
pub struct TableFeeds {
    settings: FeedSettings,
    feeds: BTreeMap<u64, Feed>,
    /// Whether the run has started: until then files wait (their dead letters would go to a
    /// file not yet prepared).
    started: bool,
}

struct Feed {
    def: TableDef,
    progress: TableProgress,
    topic: Option<TopicFeed>,
}

enum TopicFeed {
    /// A thread looks for the topic's partitions.
    Looking { found: Arc<Mutex<Looked>>, stop: Arc<AtomicBool> },
    /// Reading its partitions.
    Reading(Box<PartitionReader>),
}

#[derive(Default)]
struct Looked {
    partitions: Option<Vec<i32>>,
    waiting: Option<String>,
}

impl TableFeeds {
    /// No feed yet.
    pub fn new(settings: FeedSettings) -> Self {
        TableFeeds { settings, feeds: BTreeMap::new(), started: false }
    }

    /// The run has started: the files of the tables installed before are read now.
    pub fn start(&mut self, dataflow: &mut Dataflow) {
        self.started = true;
        for feed in self.feeds.values_mut() {
            feed.load(&self.settings, dataflow);
        }
    }

    /// Starts feeding the table `def`, installed in `dataflow`: reads its file now, at the
    /// dataflow's time, and starts looking for its topic.
    pub fn open(&mut self, def: TableDef, dataflow: &mut Dataflow) {
        let progress = TableProgress { name: def.name.clone(), ..TableProgress::default() };
        let topic = def.topic.clone().map(|topic| {
            let found = Arc::new(Mutex::new(Looked::default()));
            let stop = Arc::new(AtomicBool::new(false));
            let (brokers, looked, stopped) = (self.settings.brokers.clone(), Arc::clone(&found), Arc::clone(&stop));
            let spawned = std::thread::Builder::new()
                .name(format!("table-{}", def.name))
                .spawn(move || look_for(&brokers, &topic, &looked, &stopped));
            if let Err(error) = spawned {
                found.lock().unwrap_or_else(|p| p.into_inner()).waiting = Some(format!("cannot start: {error}"));
            }
            TopicFeed::Looking { found, stop }
        });
        let mut feed = Feed { def, progress, topic };
        if self.started {
            feed.load(&self.settings, dataflow);
        }
        self.feeds.insert(feed.def.id, feed);
    }

    /// Stops feeding table `id`.
    pub fn close(&mut self, id: u64) {
        if let Some(Feed { topic: Some(TopicFeed::Looking { stop, .. }), .. }) = self.feeds.remove(&id) {
            stop.store(true, Ordering::SeqCst);
        }
    }

    /// Admits every table's new messages at the dataflow's time; returns how many were read.
    pub fn poll(&mut self, dataflow: &mut Dataflow) -> usize {
        let (mut read, refused) = (0, self.refused());
        for feed in self.feeds.values_mut() {
            read += feed.poll(&self.settings, dataflow);
        }
        // So that a table's dead letters are in the file when its count shows them.
        if self.refused() > refused {
            if let Err(error) = self.settings.dead_letters.flush() {
                tracing::error!(%error, "cannot write the dead-letter file");
            }
        }
        read
    }

    fn refused(&self) -> u64 {
        self.feeds.values().map(|f| f.progress.refused).sum()
    }

    /// Every table's progress.
    pub fn progress(&self) -> Vec<TableProgress> {
        self.feeds.values().map(|f| f.progress.clone()).collect()
    }
}

impl Feed {
    /// Reads the table's file, if it has one.
    fn load(&mut self, settings: &FeedSettings, dataflow: &mut Dataflow) {
        let Some(path) = &self.def.path else { return };
        if let Err(error) = load_file(&self.def, path, dataflow, &mut self.progress, &settings.dead_letters) {
            tracing::error!(table = %self.def.name, path, %error, "cannot read the table's file");
            self.progress.waiting = Some(format!("cannot read {path}: {error}"));
        }
    }

    fn poll(&mut self, settings: &FeedSettings, dataflow: &mut Dataflow) -> usize {
        let Some(topic) = &mut self.topic else { return 0 };
        if let TopicFeed::Looking { found, .. } = topic {
            let partitions = {
                let mut looked = found.lock().unwrap_or_else(|p| p.into_inner());
                match looked.partitions.take() {
                    Some(partitions) => partitions,
                    None => {
                        self.progress.waiting = looked.waiting.clone();
                        return 0;
                    }
                }
            };
            let name = self.def.topic.as_deref().unwrap_or_default();
            let group = format!("{}-table-{}", settings.group, self.def.name);
            let from = partitions.iter().map(|p| (*p, 0)).collect();
            match PartitionReader::new(
                &settings.brokers,
                &group,
                name,
                &partitions,
                &from,
                settings.max_record_bytes,
                settings.fetch_wait_ms,
            ) {
                Ok(mut reader) => {
                    reader.wake_on_messages(std::thread::current());
                    self.progress.waiting = None;
                    *topic = TopicFeed::Reading(Box::new(reader));
                }
                Err(error) => {
                    self.progress.waiting = Some(error.to_string());
                    return 0;
                }
            }
        }
        let TopicFeed::Reading(reader) = topic else { return 0 };
        let (def, progress) = (&self.def, &mut self.progress);
        let topic_name = def.topic.as_deref().unwrap_or_default();
        let polled = reader.poll_messages(Duration::ZERO, POLL_MAX, &mut |message| {
            let place = format!("{topic_name}/{}/{}", message.partition, message.offset);
            let position = Position::in_partition(message.partition, message.offset);
            let decoded = match message.payload {
                Some(body) if body.len() > settings.max_record_bytes => Err(Rejection::new(
                    Reason::Oversized,
                    format!("message is {} bytes, at most {}", body.len(), settings.max_record_bytes),
                )),
                body => decode::json(def, body, message.key),
            };
            let raw = message.payload.unwrap_or_default();
            take(def, decoded, &place, position, raw, dataflow, progress, &settings.dead_letters);
        });
        match polled {
            Ok(read) => {
                progress.offsets = reader.next_offsets().clone();
                progress.waiting = reader.last_error().map(String::from);
                read
            }
            Err(error) => {
                progress.waiting = Some(error.to_string());
                0
            }
        }
    }
}

/// Admits a decoded record, or writes and counts its dead letter.
#[allow(clippy::too_many_arguments)]
fn take(
    def: &TableDef,
    decoded: Result<Upsert, Rejection>,
    place: &str,
    position: Position,
    raw: &[u8],
    dataflow: &mut Dataflow,
    progress: &mut TableProgress,
    dead_letters: &DeadLetterFile,
) {
    match decoded {
        Ok(upsert) => {
            dataflow.tables.admit(def.id, upsert);
            progress.records += 1;
        }
        Err(rejection) => {
            let letter = DeadLetter::new(format!("{LETTER_PREFIX}{}: {place}", def.name), position, rejection, raw);
            // Counted by the table's feed (`/v1/status`), not in `dead_letters`: those counts
            // are kept in snapshots, and a table's records are read again at every start.
            if let Err(error) = dead_letters.write(&letter) {
                tracing::error!(%error, "cannot write a dead letter to the file");
            }
            progress.refused += 1;
        }
    }
}

/// Reads the table's file: CSV with a header (`.csv`), a JSON array, or JSON lines.
fn load_file(
    def: &TableDef,
    path: &str,
    dataflow: &mut Dataflow,
    progress: &mut TableProgress,
    dead_letters: &DeadLetterFile,
) -> std::io::Result<()> {
    let size = std::fs::metadata(path)?.len();
    if size > crate::table::MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!("{size} bytes, at most {}", crate::table::MAX_FILE_BYTES)));
    }
    let bytes = std::fs::read(path)?;
    // Files are not partitions: their positions are numbered apart from Kafka's.
    let position = |line: usize| Position::in_file(u32::MAX >> 1, line as u64);
    if path.to_lowercase().ends_with(".csv") {
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes.as_slice());
        let headers: Vec<String> = reader.headers().map_err(std::io::Error::other)?.iter().map(String::from).collect();
        for (i, record) in reader.records().enumerate() {
            let line = i + 2;
            let (decoded, raw) = match record {
                Ok(record) => {
                    let raw = record.iter().collect::<Vec<_>>().join(",").into_bytes();
                    (decode::csv(def, &headers, &record), raw)
                }
                Err(error) => (Err(Rejection::new(Reason::InvalidCsv, error.to_string())), Vec::new()),
            };
            take(def, decoded, &format!("{path}:{line}"), position(line), &raw, dataflow, progress, dead_letters);
        }
        return Ok(());
    }
    let text = String::from_utf8_lossy(&bytes);
    if text.trim_start().starts_with('[') {
        match serde_json::from_str::<Vec<serde_json::Value>>(&text) {
            Ok(values) => {
                for (i, value) in values.iter().enumerate() {
                    let raw = value.to_string().into_bytes();
                    let place = format!("{path}[{i}]");
                    take(def, decode::object(def, value), &place, position(i), &raw, dataflow, progress, dead_letters);
                }
            }
            Err(error) => {
                let rejection = Err(Rejection::new(Reason::InvalidJson, format!("not a JSON array: {error}")));
                take(def, rejection, path, position(0), &[], dataflow, progress, dead_letters);
            }
        }
        return Ok(());
    }
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let decoded = decode::json(def, Some(line), None);
        take(def, decoded, &format!("{path}:{}", i + 1), position(i + 1), line, dataflow, progress, dead_letters);
    }
    Ok(())
}

/// Looks for `topic`'s partitions until it finds them or is stopped, saying meanwhile why not.
fn look_for(brokers: &str, topic: &str, looked: &Mutex<Looked>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let waiting = match kafka::fetch_partitions(brokers, topic, Duration::from_secs(2)) {
            Ok(partitions) => {
                looked.lock().unwrap_or_else(|p| p.into_inner()).partitions = Some(partitions);
                return;
            }
            Err(Lookup::Unreachable(error)) => format!("waiting for Kafka at {brokers}: {error}"),
            Err(Lookup::Refused(_)) => format!("waiting for topic {topic:?}: it does not exist yet"),
        };
        looked.lock().unwrap_or_else(|p| p.into_inner()).waiting = Some(waiting);
        std::thread::sleep(LOOK_EVERY);
    }
}
