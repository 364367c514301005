//! The speed layer's source: Kafka partitions read by the timely workers themselves.
//!
//! Partitions are **assigned explicitly**, as Materialize and Flink do, not by a consumer
//! group rebalance: partition `p` belongs to worker `p % workers` (global worker indices, so
//! the rule holds across processes). Each worker reads its partitions from the offsets it is
//! given — the earliest, or a snapshot's — and tracks the next offset of each one. Offsets
//! are committed to the consumer group only so that standard Kafka tools show the lag; the
//! program itself never reads them back.
//!
//! A message becomes a [`Record`] by the same event rules as a history line
//! ([`crate::event`]), with Kafka's own conventions on top:
//!
//! | message | identity | effect |
//! |---|---|---|
//! | body with `id` | the id | upsert or delete |
//! | body without `id`, with a key | the key | upsert or delete |
//! | body without `id` or key | `topic/partition/offset` | upsert |
//! | key and a null body (tombstone) | the key | delete |
//! | null body and no key | — | dead letter `delete_without_id` |

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use thiserror::Error;

use super::Record;
use crate::deadletter::DeadLetter;
use crate::event::{parse_json_with, Change, Event, Names, Position, Reason, Rejection};

/// A Kafka source that cannot start.
#[derive(Debug, Error)]
pub enum KafkaSourceError {
    /// The client could not be created (bad configuration).
    #[error("cannot create a Kafka client for {brokers}: {source}")]
    Client {
        /// Bootstrap servers.
        brokers: String,
        /// The cause.
        source: KafkaError,
    },
    /// A partition now ends before the offset the views have read: its messages were lost
    /// and its offsets start again, so a new message cannot be told from an old one.
    #[error(
        "partition {partition} of {topic} now ends at offset {end}, before offset {next} that the views \
         have read: the topic was deleted and recreated, or its broker lost its data (a restarted \
         `lambda broker` keeps nothing). New messages would reuse the offsets of old ones, so reading \
         stops here rather than mistake them for redeliveries. Restart `lambda run` to rebuild the views \
         from the history and the topic as it is now (with --state-dir: give it a new directory)"
    )]
    Reset {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// Its high watermark now.
        end: i64,
        /// The next offset the views expected.
        next: i64,
    },
    /// The topic is not on the brokers.
    #[error("topic {topic:?} does not exist on {brokers}; create it (the workshop uses 3 partitions)")]
    NoTopic {
        /// The topic.
        topic: String,
        /// Bootstrap servers.
        brokers: String,
    },
}

/// Why a topic's partitions are not known.
#[derive(Debug)]
pub enum Lookup {
    /// The brokers did not answer (yet): try again.
    Unreachable(String),
    /// The brokers answered no: the topic does not exist, or no client can be made.
    Refused(KafkaSourceError),
}

/// The partitions of `topic`, asking the brokers once.
pub fn fetch_partitions(brokers: &str, topic: &str, timeout: Duration) -> Result<Vec<i32>, Lookup> {
    let consumer: BaseConsumer = base_config(brokers)
        .create()
        .map_err(|source| Lookup::Refused(KafkaSourceError::Client { brokers: brokers.into(), source }))?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout).map_err(|e| Lookup::Unreachable(e.to_string()))?;
    match metadata.topics().iter().find(|t| t.name() == topic) {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            Ok(t.partitions().iter().map(|p| p.id()).collect())
        }
        _ => Err(Lookup::Refused(KafkaSourceError::NoTopic { topic: topic.into(), brokers: brokers.into() })),
    }
}

/// The partitions of `topic`, or `Ok(None)` while the brokers cannot be reached.
pub fn partitions(brokers: &str, topic: &str, timeout: Duration) -> Result<Option<Vec<i32>>, KafkaSourceError> {
    match fetch_partitions(brokers, topic, timeout) {
        Ok(partitions) => Ok(Some(partitions)),
        Err(Lookup::Unreachable(error)) => {
            tracing::warn!(%brokers, %error, "Kafka brokers not reachable yet; retrying");
            Ok(None)
        }
        Err(Lookup::Refused(error)) => Err(error),
    }
}

/// The next offset to be written to each partition of `topic` (its high watermark).
pub fn end_offsets(brokers: &str, topic: &str, timeout: Duration) -> anyhow::Result<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer = base_config(brokers).create()?;
    let partitions =
        partitions(brokers, topic, timeout)?.ok_or_else(|| anyhow::anyhow!("Kafka at {brokers} is not reachable"))?;
    partitions.into_iter().map(|p| Ok((p, consumer.fetch_watermarks(topic, p, timeout)?.1))).collect()
}

/// The global worker (of `workers`) that reads `partition`.
pub fn owner(partition: i32, workers: usize) -> usize {
    (partition as usize) % workers
}

/// The partitions that global worker `worker` of `workers` reads.
pub fn assigned(all: &[i32], worker: usize, workers: usize) -> Vec<i32> {
    all.iter().copied().filter(|p| owner(*p, workers) == worker).collect()
}

/// The configuration every Kafka client of ours starts from.
pub fn base_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("log_level", "3")
        // A refused connection is retried quickly at first, then every 2 s at most.
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "2000");
    config
}

/// One worker's partitions of the topic.
pub struct PartitionReader {
    consumer: BaseConsumer,
    topic: String,
    next: BTreeMap<i32, i64>,
    /// Messages each partition dropped before we could read them (retention, eviction).
    skipped: BTreeMap<i32, i64>,
    /// When a skip was last said, per partition (said at most once a second).
    warned: BTreeMap<i32, std::time::Instant>,
    names: Names,
    max_record_bytes: usize,
    last_error: Option<String>,
}

impl PartitionReader {
    /// Reads `partitions` of `topic` from the given next offsets (absent: the earliest); the
    /// broker holds an empty fetch at most `fetch_wait_ms`.
    pub fn new(
        brokers: &str,
        group: &str,
        topic: &str,
        partitions: &[i32],
        from: &BTreeMap<i32, i64>,
        max_record_bytes: usize,
        fetch_wait_ms: u64,
    ) -> Result<Self, KafkaSourceError> {
        let consumer: BaseConsumer = base_config(brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // An offset out of range is never resolved silently: `poll` looks at what happened
            // (messages evicted, or the partition started again) and says so.
            .set("auto.offset.reset", "error")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
            .set("fetch.error.backoff.ms", "5")
            .set("fetch.queue.backoff.ms", "1")
            // How much librdkafka fetches ahead of the worker: its defaults (64 MiB, 100,000
            // messages a partition) held most of a 1M-message topic in memory at once (peak
            // 620 MB against 470 MB with these, at the same ingest rate; BENCHMARKS.md).
            .set("queued.max.messages.kbytes", "8192")
            .set("queued.min.messages", "10000")
            .set("allow.auto.create.topics", "false")
            .create()
            .map_err(|source| KafkaSourceError::Client { brokers: brokers.into(), source })?;
        // Every partition starts where the views expect it to: offset 0 (the whole topic), or
        // a snapshot's offset. If the broker no longer has that offset, the first fetch is out
        // of range, and `poll` says what happened instead of skipping silently. (Assigning
        // `Offset::Beginning` on an empty partition also made its first fetch wait ~500 ms.)
        let next: BTreeMap<i32, i64> = partitions.iter().map(|&p| (p, from.get(&p).copied().unwrap_or(0))).collect();
        let mut list = TopicPartitionList::new();
        for (&p, &offset) in &next {
            list.add_partition_offset(topic, p, Offset::Offset(offset)).expect("a fresh list accepts any partition");
        }
        consumer.assign(&list).map_err(|source| KafkaSourceError::Client { brokers: brokers.into(), source })?;
        Ok(PartitionReader {
            consumer,
            topic: topic.into(),
            next,
            skipped: BTreeMap::new(),
            warned: BTreeMap::new(),
            names: Names::default(),
            max_record_bytes,
            last_error: None,
        })
    }

    /// After librdkafka found an offset out of range: for each partition, messages evicted
    /// before we read them (the log now starts after our next offset) are skipped with a
    /// warning and counted; a partition that now ends before our next offset has started
    /// again, which is an error. Only those partitions are restarted: the others go on.
    ///
    /// The watermarks come from librdkafka's cache of the last fetch responses; only a
    /// partition that seems to have started again is asked about with a round trip. (Asking
    /// for every partition at every error made a reader that fell behind fall further.)
    fn offsets_out_of_range(&mut self) -> Result<(), KafkaSourceError> {
        let cached = self.watermarks();
        let mut restart = TopicPartitionList::new();
        let partitions: Vec<(i32, i64)> = self.next.iter().map(|(p, o)| (*p, *o)).collect();
        for (p, next) in partitions {
            let (mut low, mut high) = cached.get(&p).copied().unwrap_or((-1, -1));
            if low < 0 || high < next {
                match self.consumer.fetch_watermarks(&self.topic, p, Duration::from_secs(2)) {
                    Ok(marks) => (low, high) = marks,
                    Err(_) => continue, // unreachable now: the next error brings us back here
                }
            }
            if high < next {
                return Err(KafkaSourceError::Reset { topic: self.topic.clone(), partition: p, end: high, next });
            }
            if low > next {
                let lost = low - next;
                let skipped = self.skipped.entry(p).or_default();
                *skipped += lost;
                let said = self.warned.get(&p).is_some_and(|at| at.elapsed() < Duration::from_secs(1));
                if !said {
                    tracing::warn!(
                        topic = %self.topic,
                        partition = p,
                        from = next,
                        to = low - 1,
                        messages = lost,
                        skipped_so_far = *skipped,
                        "messages were removed from the topic (retention, or a full in-memory broker) before \
                         they could be read; the views cannot include them"
                    );
                    self.warned.insert(p, std::time::Instant::now());
                }
                self.next.insert(p, low);
                restart
                    .add_partition_offset(&self.topic, p, Offset::Offset(low))
                    .expect("a fresh list accepts any partition");
            }
        }
        // A partition stopped by the error cannot be sought ("erroneous state"): taking it
        // out of the assignment and in again at the offset restarts it.
        if restart.count() > 0 {
            let restarted =
                self.consumer.incremental_unassign(&restart).and_then(|()| self.consumer.incremental_assign(&restart));
            if let Err(error) = restarted {
                tracing::warn!(topic = %self.topic, %error, "cannot resume reading yet; retrying");
            }
        }
        Ok(())
    }

    /// Messages each partition dropped before they could be read.
    pub fn skipped(&self) -> &BTreeMap<i32, i64> {
        &self.skipped
    }

    /// Unparks `thread` whenever messages (or errors) arrive while none were waiting, so
    /// that a worker may park for long while the topic is quiet.
    pub fn wake_on_messages(&mut self, thread: std::thread::Thread) {
        self.consumer.set_nonempty_callback(move || thread.unpark());
    }

    /// The last error met, until reading resumes.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Hands every message available now (at most `max`) to `emit` as a record, waiting up to
    /// `wait` for the first. Returns how many messages were read, or why reading cannot go on.
    pub fn poll(
        &mut self,
        wait: Duration,
        max: usize,
        emit: &mut dyn FnMut(Record),
    ) -> Result<usize, KafkaSourceError> {
        let (topic, max_record_bytes) = (self.topic.clone(), self.max_record_bytes);
        let mut names = std::mem::take(&mut self.names);
        let read = self.poll_messages(wait, max, &mut |message| {
            emit(to_record(
                &topic,
                message.partition,
                message.offset,
                message.key,
                message.payload,
                max_record_bytes,
                &mut names,
            ))
        });
        self.names = names;
        read
    }

    /// Hands every message available now (at most `max`) to `emit` as it came, waiting up to
    /// `wait` for the first. Returns how many messages were read, or why reading cannot go on.
    pub fn poll_messages(
        &mut self,
        wait: Duration,
        max: usize,
        emit: &mut dyn FnMut(RawMessage<'_>),
    ) -> Result<usize, KafkaSourceError> {
        let mut read = 0;
        let mut timeout = wait;
        while read < max {
            let Some(result) = self.consumer.poll(timeout) else { break };
            timeout = Duration::ZERO;
            match result {
                Ok(message) => {
                    let (partition, offset) = (message.partition(), message.offset());
                    emit(RawMessage { partition, offset, key: message.key(), payload: message.payload() });
                    self.next.insert(partition, offset + 1);
                    read += 1;
                    if self.last_error.take().is_some() {
                        tracing::info!(topic = %self.topic, "Kafka reachable again; reading resumed");
                    }
                }
                Err(error) if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AutoOffsetReset) => {
                    self.offsets_out_of_range()?;
                    break;
                }
                Err(error) => {
                    // librdkafka reconnects by itself and resumes from our position; say so once.
                    let text = error.to_string();
                    if self.last_error.as_deref() != Some(text.as_str()) {
                        tracing::warn!(topic = %self.topic, %error, "Kafka error; retrying");
                        self.last_error = Some(text);
                    }
                    break;
                }
            }
        }
        Ok(read)
    }

    /// The next offset to read of each of this reader's partitions.
    pub fn next_offsets(&self) -> &BTreeMap<i32, i64> {
        &self.next
    }

    /// The high watermark (the offset after the newest message) of each of this reader's
    /// partitions, as of the last fetch response — cached by librdkafka, so this does not
    /// ask the broker. Partitions not fetched yet are absent.
    pub fn high_watermarks(&self) -> BTreeMap<i32, i64> {
        self.watermarks().into_iter().map(|(p, (_, high))| (p, high)).collect()
    }

    /// The low and high watermarks of each partition as of the last fetch response.
    fn watermarks(&self) -> BTreeMap<i32, (i64, i64)> {
        let topic = std::ffi::CString::new(self.topic.as_str()).expect("a topic name has no NUL byte");
        let mut marks = BTreeMap::new();
        for &p in self.next.keys() {
            let (mut low, mut high) = (-1i64, -1i64);
            // SAFETY: the client pointer is live for as long as `self.consumer`; librdkafka
            // only reads the topic name and writes the two integers.
            let code = unsafe {
                rdkafka::bindings::rd_kafka_get_watermark_offsets(
                    self.consumer.client().native_ptr(),
                    topic.as_ptr(),
                    p,
                    &mut low,
                    &mut high,
                )
            };
            if code == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0 {
                marks.insert(p, (low, high));
            }
        }
        marks
    }

    /// Commits the next offsets to the consumer group (so that Kafka tools show the lag).
    pub fn commit(&self) {
        let mut list = TopicPartitionList::new();
        for (&p, &o) in &self.next {
            list.add_partition_offset(&self.topic, p, Offset::Offset(o)).expect("a fresh list accepts any partition");
        }
        if let Err(error) = self.consumer.commit(&list, CommitMode::Async) {
            tracing::debug!(%error, "offset commit failed; the next one will carry the same offsets");
        }
    }
}

/// A message as read: where it is, its key and its body (none: a tombstone).
pub struct RawMessage<'a> {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its body.
    pub payload: Option<&'a [u8]>,
}

/// Turns one Kafka message into a record.
pub fn to_record(
    topic: &str,
    partition: i32,
    offset: i64,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    max_record_bytes: usize,
    names: &mut Names,
) -> Record {
    let at = || format!("{topic}/{partition}/{offset}");
    let position = Position::in_partition(partition, offset);
    // A binary key still identifies its message, in a namespace of its own.
    let key = key.map(crate::event::key_identity);
    let raw = payload.unwrap_or_default();
    let result = match payload {
        None => Ok(Event { id: None, change: Change::Delete }),
        Some(body) if body.len() > max_record_bytes => Err(Rejection::new(
            Reason::Oversized,
            format!("message is {} bytes, at most {max_record_bytes}", body.len()),
        )),
        Some(body) => parse_json_with(body, names),
    }
    .and_then(|event| event.into_update(key, at, position));
    Record::new(result, at, position, raw)
}

/// Produces dead letters to a Kafka topic as JSON, keyed by their source.
pub struct DeadLetterTopic {
    producer: BaseProducer,
    topic: String,
}

impl DeadLetterTopic {
    /// A producer of dead letters to `topic`.
    pub fn new(brokers: &str, topic: &str) -> Result<Self, KafkaSourceError> {
        let producer = base_config(brokers)
            .set("linger.ms", "5")
            .create()
            .map_err(|source| KafkaSourceError::Client { brokers: brokers.into(), source })?;
        Ok(DeadLetterTopic { producer, topic: topic.into() })
    }

    /// Queues one dead letter (delivery happens in the background).
    pub fn send(&self, letter: &DeadLetter) {
        let json = letter.to_json();
        let record = BaseRecord::to(&self.topic).key(&letter.source).payload(&json);
        if let Err((error, _)) = self.producer.send(record) {
            tracing::warn!(%error, topic = %self.topic, "cannot queue a dead letter for Kafka; it is in the dead-letter file");
        }
        self.producer.poll(Duration::ZERO);
    }

    /// Waits at most `wait` for queued dead letters to be delivered; says so if some are
    /// not (they are in the dead-letter file either way).
    pub fn flush(&self, wait: Duration) {
        if let Err(error) = self.producer.flush(wait) {
            tracing::error!(
                %error,
                topic = %self.topic,
                undelivered = self.producer.in_flight_count(),
                "dead letters not acknowledged by Kafka in time; they are in the dead-letter file"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Identity;

    fn record(key: Option<&[u8]>, payload: Option<&[u8]>) -> Record {
        to_record("orders", 2, 41, key, payload, 100, &mut Names::default())
    }

    fn identity(r: Record) -> (Identity, bool) {
        match r {
            Record::Update(u) => (u.identity, u.txn.is_some()),
            Record::Refused(d) => panic!("refused: {}", d.rejection),
        }
    }

    #[test]
    fn identities_follow_id_then_key_then_position() {
        let body = br#"{"customer":"Ali","amount":80}"#;
        assert_eq!(identity(record(None, Some(body))), (Identity::At("orders/2/41".into()), true));
        assert_eq!(identity(record(Some(b"k1"), Some(body))), (Identity::Id("k1".into()), true));
        let with_id = br#"{"id":"t9","customer":"Ali","amount":80}"#;
        assert_eq!(identity(record(Some(b"k1"), Some(with_id))), (Identity::Id("t9".into()), true));
        assert_eq!(identity(record(Some(&[0xff, 0x01]), Some(body))), (Identity::Id("\x000xff01".into()), true));
        // The text that spells the binary key's hex is another transaction, and so is the text
        // that spells its identity.
        assert_eq!(identity(record(Some(b"0xff01"), Some(body))), (Identity::Id("0xff01".into()), true));
        assert_eq!(identity(record(Some(b"\x000xff01"), Some(body))), (Identity::Id("\x00\x000xff01".into()), true));
        let with_nul_id = br#"{"id":"\u00000xff01","customer":"Ali","amount":80}"#;
        if let Record::Update(u) = record(None, Some(with_nul_id)) {
            assert_ne!(u.identity, Identity::Id("\x000xff01".into()), "an id never names a binary key");
        }
    }

    #[test]
    fn tombstones_delete_their_key() {
        assert_eq!(identity(record(Some(b"t9"), None)), (Identity::Id("t9".into()), false));
        let Record::Refused(letter) = record(None, None) else { panic!("a keyless tombstone is refused") };
        assert_eq!(letter.rejection.reason, Reason::DeleteWithoutId);
        assert_eq!(letter.source, "orders/2/41");
    }

    #[test]
    fn bad_messages_become_dead_letters() {
        let Record::Refused(letter) = record(None, Some(&[b'x'; 101])) else { panic!("oversized") };
        assert_eq!(letter.rejection.reason, Reason::Oversized);
        let Record::Refused(letter) = record(Some(b"k"), Some(b"{\"customer\":null}")) else { panic!("bad") };
        assert_eq!(letter.rejection.reason, Reason::MissingCustomer);
        assert_eq!(letter.position, Position::in_partition(2, 41));
    }

    #[test]
    fn partitions_spread_over_all_workers() {
        let all = [0, 1, 2, 3, 4];
        assert_eq!(assigned(&all, 0, 2), vec![0, 2, 4]);
        assert_eq!(assigned(&all, 1, 2), vec![1, 3]);
        assert_eq!(assigned(&all, 3, 4), vec![3]);
    }
}
