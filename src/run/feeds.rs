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
//! A table of `connector = 'nexmark'` has neither: a thread runs the generator
//! ([`crate::table::nexmark`]) and its rows are admitted a few parts a turn, as a file's are,
//! until every event is in (`ended`).
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
use std::sync::mpsc::Receiver;

use crate::table::file::Decoded;
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
    /// Its file while it is being read: the thread's parts, and the request that waits for
    /// the whole file (`CREATE TABLE` answers once it is in).
    file: Option<(Receiver<FilePart>, Option<u64>)>,
    /// The generator's changes while it makes them (`connector = 'nexmark'`), in parts.
    generated: Option<Receiver<Vec<Upsert>>>,
}

/// What the thread reading a table's file sends.
enum FilePart {
    /// The next records.
    Records(Vec<Decoded>),
    /// The file is read through (or why not).
    Done(Result<(), String>),
}

/// Records of a file sent at once by its reading thread.
const FILE_PART: usize = 8_192;
/// Parts of a file admitted in one turn of the worker's loop, at most.
const FILE_PARTS_PER_TURN: usize = 4;

/// A table whose file is now in (with the request that waited for it).
pub struct Loaded {
    /// The table.
    pub table: u64,
    /// The request to answer.
    pub reply: Option<u64>,
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
    pub fn start(&mut self) {
        self.started = true;
        for feed in self.feeds.values_mut() {
            feed.load(&self.settings, None);
        }
    }

    /// Starts feeding the table `def`: reads its file (on a thread of its own; request
    /// `reply` is answered once it is in) and looks for its topic, read after the file.
    /// Returns whether a file is being read (the request is answered later).
    pub fn open(&mut self, def: TableDef, reply: Option<u64>) -> bool {
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
        let mut feed = Feed { def, progress, topic, file: None, generated: None };
        if self.started {
            feed.load(&self.settings, reply);
        }
        let loading = feed.file.is_some();
        self.feeds.insert(feed.def.id, feed);
        loading
    }

    /// Stops feeding table `id`.
    pub fn close(&mut self, id: u64) {
        if let Some(Feed { topic: Some(TopicFeed::Looking { stop, .. }), .. }) = self.feeds.remove(&id) {
            stop.store(true, Ordering::SeqCst);
        }
    }

    /// Admits every table's next records (of its file, then of its topic) at the dataflow's
    /// time; returns how many were read, and the tables whose file came in whole.
    pub fn poll(&mut self, dataflow: &mut Dataflow) -> (usize, Vec<Loaded>) {
        let (mut read, refused) = (0, self.refused());
        let mut loaded = Vec::new();
        for feed in self.feeds.values_mut() {
            read += feed.poll(&self.settings, dataflow, &mut loaded);
        }
        // So that a table's dead letters are in the file when its count shows them.
        if self.refused() > refused {
            if let Err(error) = self.settings.dead_letters.flush() {
                tracing::error!(%error, "cannot write the dead-letter file");
            }
        }
        (read, loaded)
    }

    fn refused(&self) -> u64 {
        self.feeds.values().map(|f| f.progress.refused).sum()
    }

    /// One turn of the worker's loop: admits the tables' next records, answers the requests
    /// that waited for a table's file, and returns every table's progress.
    pub(super) fn turn(
        &mut self,
        pipeline: &mut Dataflow,
        control: &mut crate::control::Control<super::Order, super::Answer>,
        shared: &super::Shared,
    ) -> Vec<TableProgress> {
        let (read, loaded) = self.poll(pipeline);
        if read > 0 {
            shared.metrics.records_read(crate::serve::metrics::Source::Table).inc_by(read as u64);
            shared.ticker.admitted(pipeline.time());
        }
        // A table whose file is in answers from now on (its last records enter at this time).
        for Loaded { table, reply } in loaded {
            let time = pipeline.time();
            if let Some(id) = reply {
                let part = Ok(crate::reading::Reading { time, ..Default::default() });
                if let Some(part) = shared.answering.deliver(id, part, control.peers()) {
                    control.answer(super::Answer::Read { id, part: part.map(Box::new) });
                }
            }
            control.answer(super::Answer::Installed { view: table, time });
        }
        if self.loading() {
            shared.ticker.keep_busy();
        }
        self.progress()
    }

    /// Whether a table's file is being read or its generator is making rows.
    pub fn loading(&self) -> bool {
        self.feeds.values().any(|f| f.file.is_some() || f.generated.is_some())
    }

    /// Every table's progress.
    pub fn progress(&self) -> Vec<TableProgress> {
        self.feeds.values().map(|f| f.progress.clone()).collect()
    }
}

impl Feed {
    /// Starts reading the table's file, if it has one, on a thread of its own (a file that
    /// blocks holds that thread, not the worker); `reply` waits for it.
    fn load(&mut self, settings: &FeedSettings, reply: Option<u64>) {
        if let Some(generated) = &self.def.generated {
            let (parts, receiver) = std::sync::mpsc::sync_channel(FILE_PARTS_PER_TURN);
            let changes = crate::table::nexmark::changes(&self.def, generated);
            let spawned = std::thread::Builder::new().name(format!("table-gen-{}", self.def.name)).spawn(move || {
                let mut part = Vec::with_capacity(FILE_PART);
                for change in changes {
                    part.push(change);
                    // A send fails once the table is dropped: the generating stops.
                    if part.len() == FILE_PART && parts.send(std::mem::take(&mut part)).is_err() {
                        return;
                    }
                }
                let _ = parts.send(part);
            });
            match spawned {
                Ok(_) => self.generated = Some(receiver),
                Err(error) => self.progress.waiting = Some(format!("cannot start the generator: {error}")),
            }
            return;
        }
        let Some(path) = self.def.path.clone() else { return };
        let (parts, receiver) = std::sync::mpsc::sync_channel(FILE_PARTS_PER_TURN);
        let (def, max_record_bytes) = (self.def.clone(), settings.max_record_bytes);
        let spawned = std::thread::Builder::new().name(format!("table-file-{}", def.name)).spawn(move || {
            let mut part = Vec::with_capacity(FILE_PART);
            let read = crate::table::file::read(&def, &path, max_record_bytes, &mut |decoded| {
                part.push(decoded);
                // A send fails once the table is dropped: the reading stops.
                part.len() < FILE_PART || parts.send(FilePart::Records(std::mem::take(&mut part))).is_ok()
            });
            let _ = parts.send(FilePart::Records(part));
            let _ = parts.send(FilePart::Done(read.map_err(|e| format!("cannot read {path}: {e}"))));
        });
        match spawned {
            Ok(_) => self.file = Some((receiver, reply)),
            Err(error) => self.progress.waiting = Some(format!("cannot read the file: {error}")),
        }
    }

    fn poll(&mut self, settings: &FeedSettings, dataflow: &mut Dataflow, loaded: &mut Vec<Loaded>) -> usize {
        // The file first, whole: a topic's change of a key comes after the file's row of it.
        if let Some((parts, reply)) = &self.file {
            let mut read = 0;
            for _ in 0..FILE_PARTS_PER_TURN {
                let part = match parts.try_recv() {
                    Ok(part) => part,
                    Err(std::sync::mpsc::TryRecvError::Empty) => return read,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        FilePart::Done(Err("the file's reader stopped".into()))
                    }
                };
                match part {
                    FilePart::Records(records) => {
                        read += records.len();
                        for d in records {
                            let (def, progress) = (&self.def, &mut self.progress);
                            take(
                                def,
                                d.change,
                                &d.place,
                                d.position,
                                &d.raw,
                                dataflow,
                                progress,
                                &settings.dead_letters,
                            );
                        }
                    }
                    FilePart::Done(result) => {
                        if let Err(error) = result {
                            tracing::error!(table = %self.def.name, %error, "cannot read the table's file");
                            self.progress.waiting = Some(error);
                        }
                        loaded.push(Loaded { table: self.def.id, reply: *reply });
                        self.file = None;
                        return read;
                    }
                }
            }
            return read;
        }
        if let Some(parts) = &self.generated {
            let mut read = 0;
            for _ in 0..FILE_PARTS_PER_TURN {
                match parts.try_recv() {
                    Ok(changes) => {
                        read += changes.len();
                        self.progress.records += changes.len() as u64;
                        for change in changes {
                            dataflow.tables.admit(self.def.id, change);
                        }
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        self.generated = None;
                        self.progress.ended = Some(dataflow.time());
                        break;
                    }
                }
            }
            return read;
        }
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
