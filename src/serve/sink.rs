//! Kafka sinks: `--sink VIEW=TOPIC` hands a view to the next system as a compacted topic.
//!
//! Each sink follows its view's changefeed (see [`crate::serve::feed`]) and produces, for every
//! key the changes touch, the key's row as an upsert — key = the view's key column as a JSON
//! object (`{"customer":"Ali"}`, `{"category":null}`; `{}` for a view of one row), value = the
//! row as JSON plus its logical `time` — or a tombstone (no value) when the key left the view:
//!
//! ```text
//! {"customer":"Ali"}   {"customer":"Ali","total":400,"count":3,...,"time":1764000000123}
//! {"customer":"Sara"}  (tombstone)
//! ```
//!
//! A key is JSON so that no two groups share one: the NULL category and a category named
//! `null` are `{"category":null}` and `{"category":"null"}`. (A topic written with another
//! key format, by an older build, is set right at start: its keys are not the view's, so they
//! are tombstoned and the view's written anew.)
//!
//! Messages are produced in time order once a time is complete, by an idempotent producer.
//! The contract is a compacted topic's: the last value of every key equals the view. At start
//! the sink reads its topic back to learn what it holds, so that after a crash (or a stop while
//! keys left the view) it sends only the differences — tombstones included — and never leaves
//! a stale key behind. While the broker is away the views go on; the sink falls behind, then
//! catches up from the view's rows when it is back. Its progress is in `/v1/status` (`sinks`)
//! and `/metrics` (`lambda_sink_lag_ms`, `lambda_sink_messages_total`).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Map, Value};

use crate::config::Settings;
use crate::serve::feed::{Event, Feeds, Row, SubscribeError};
use crate::serve::Serving;

/// How long to wait before trying again after an error.
const RETRY: Duration = Duration::from_secs(1);
/// The longest reading the sink's topic back may take.
const READ_BACK: Duration = Duration::from_secs(60);

/// One sink: a view and the topic it goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkSpec {
    /// The view, built-in or created.
    pub view: String,
    /// The topic.
    pub topic: String,
}

impl SinkSpec {
    /// Parses `VIEW=TOPIC`.
    pub fn parse(text: &str) -> anyhow::Result<SinkSpec> {
        match text.split_once('=') {
            Some((view, topic)) if !view.trim().is_empty() && !topic.trim().is_empty() => {
                Ok(SinkSpec { view: view.trim().to_owned(), topic: topic.trim().to_owned() })
            }
            _ => bail!("--sink {text:?} is not VIEW=TOPIC (like customers=customers-view)"),
        }
    }
}

/// Starts every sink of `settings` on a runtime of their own (none when there is none); they
/// run until it is dropped. They follow their views through `feeds`.
pub fn start(settings: &Settings, serving: &Serving, feeds: &Feeds) -> anyhow::Result<Option<tokio::runtime::Runtime>> {
    let specs = settings.kafka.sinks.iter().map(|s| SinkSpec::parse(s)).collect::<anyhow::Result<Vec<_>>>()?;
    if specs.is_empty() {
        return Ok(None);
    }
    for spec in &specs {
        if spec.topic == settings.kafka.topic {
            bail!("--sink {}={}: that is the topic the views read; choose another", spec.view, spec.topic);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sink")
        .enable_all()
        .build()
        .context("cannot start the sinks' runtime")?;
    // A sink of a view that is not there is a mistake in the command line: refused at start.
    for spec in &specs {
        if let Err(error) = feeds.engine().view_key(&spec.view) {
            bail!("--sink {}={}: {} (see SHOW VIEWS)", spec.view, spec.topic, error);
        }
    }
    let brokers = settings.kafka.sink_brokers.clone().unwrap_or_else(|| settings.kafka.brokers.clone());
    for spec in specs {
        let producer = new_producer(&brokers)
            .with_context(|| format!("cannot create the producer of --sink {}={}", spec.view, spec.topic))?;
        let sink = Sink {
            spec,
            brokers: brokers.clone(),
            feeds: feeds.clone(),
            producer,
            serving: serving.clone(),
            delivered: Mutex::default(),
            logged: Mutex::default(),
        };
        tracing::info!(view = %sink.spec.view, topic = %sink.spec.topic, "sinking a view to Kafka");
        runtime.spawn(sink.run());
    }
    Ok(Some(runtime))
}

/// An idempotent producer to `brokers` that never gives up on a message: while the broker
/// is away, the sink waits (and falls behind the views, which go on).
fn new_producer(brokers: &str) -> rdkafka::error::KafkaResult<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "0")
        .set("linger.ms", "2")
        .set("log_level", "3")
        .create()
}

struct Sink {
    spec: SinkSpec,
    brokers: String,
    feeds: Feeds,
    producer: FutureProducer,
    serving: Serving,
    /// The offset of the last message delivered to each partition since the topic was last
    /// read back: a delivery at or below it means the topic's log started again (the topic
    /// was deleted and created again, or the broker lost its data), so what the sink believes
    /// the topic holds is wrong.
    delivered: Mutex<HashMap<i32, i64>>,
    /// The last error logged, and when: the same error is logged again at most every
    /// [`LOG_AGAIN`].
    logged: Mutex<Option<(String, Instant)>>,
}

/// How often a sink logs the same error again while it retries.
const LOG_AGAIN: Duration = Duration::from_secs(60);

/// Why a sink stopped following its view.
enum Stop {
    /// Something that passes (the broker, a refused message): try again.
    Retry(String),
    /// The view was dropped: the sink ends.
    ViewGone(String),
}

/// Key → the row as JSON text (without `time`).
type Held = HashMap<String, String>;

impl Sink {
    async fn run(mut self) {
        loop {
            let sent = self.read_back().await;
            let mut sent = sent;
            let error = match self.follow(&mut sent).await {
                Ok(never) => match never {},
                Err(Stop::Retry(error)) => error,
                Err(Stop::ViewGone(error)) => {
                    tracing::warn!(view = %self.spec.view, topic = %self.spec.topic, %error, "the sink's view is gone; the sink stops");
                    let status = format!("stopped: {error}");
                    self.serving.metrics().sink_progress(&self.spec.view, &self.spec.topic, None, 0, Some(status));
                    return;
                }
            };
            self.failed(error);
            tokio::time::sleep(RETRY).await;
            if let Some((code, reason)) = self.producer.client().fatal_error() {
                // An idempotent producer stops for good on some errors (a broker that lost its
                // data refuses its sequence numbers): start a new one.
                tracing::warn!(view = %self.spec.view, ?code, %reason, "a new producer for the sink");
                match new_producer(&self.brokers) {
                    Ok(producer) => self.producer = producer,
                    Err(error) => self.failed(format!("cannot create a new producer: {error}")),
                }
            }
        }
    }

    /// What the sink's topic holds, read back until that succeeds (it is the only way to know
    /// which keys to tombstone after a restart, or after the topic started again).
    async fn read_back(&self) -> Held {
        loop {
            let (brokers, topic) = (self.brokers.clone(), self.spec.topic.clone());
            match tokio::task::spawn_blocking(move || read_back(&brokers, &topic)).await {
                Ok(Ok(held)) => {
                    let keys = held.len();
                    tracing::info!(view = %self.spec.view, topic = %self.spec.topic, keys, "the sink's topic read back");
                    self.delivered.lock().unwrap_or_else(|p| p.into_inner()).clear();
                    return held;
                }
                Ok(Err(error)) => self.failed(format!("cannot read the sink's topic back: {error:#}")),
                Err(error) => self.failed(format!("cannot read the sink's topic back: {error}")),
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    fn failed(&self, error: String) {
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        if logged.as_ref().is_none_or(|(last, at)| *last != error || at.elapsed() >= LOG_AGAIN) {
            tracing::warn!(view = %self.spec.view, topic = %self.spec.topic, %error, "the sink waits and tries again");
            *logged = Some((error.clone(), Instant::now()));
        }
        drop(logged);
        self.serving.metrics().sink_progress(&self.spec.view, &self.spec.topic, None, 0, Some(error));
    }

    /// Follows the view from its current rows until an error (the feed ended, the broker
    /// refused a message, the topic started again); `sent` is what the topic holds.
    async fn follow(&self, sent: &mut Held) -> Result<std::convert::Infallible, Stop> {
        let gone = |error: &crate::sql::SqlError| error.code() == "42P01";
        let mut subscription = match self.feeds.subscribe(&self.spec.view, None, None).await {
            Ok(subscription) => subscription,
            Err(SubscribeError::View(error)) if gone(&error) => return Err(Stop::ViewGone(error.to_string())),
            Err(other) => return Err(Stop::Retry(other.to_string())),
        };
        let column = subscription.key_column.clone();
        let key = |row: &Row| Sink::key(row, column.as_deref());
        let mut current: HashMap<String, Arc<Row>> = HashMap::new();
        loop {
            let Some(event) = subscription.next().await else { return Err(Stop::Retry("the feed closed".into())) };
            let touched: BTreeSet<String> = match &*event {
                Event::Snapshot { rows, .. } => {
                    current = rows.iter().map(|row| (key(row), Arc::clone(row))).collect();
                    current.keys().chain(sent.keys()).cloned().collect()
                }
                Event::Changes { changes, .. } => {
                    for change in changes.iter().filter(|c| c.diff < 0) {
                        let key = key(&change.row);
                        if current.get(&key).is_some_and(|row| row.values == change.row.values) {
                            current.remove(&key);
                        }
                    }
                    for change in changes.iter().filter(|c| c.diff > 0) {
                        current.insert(key(&change.row), Arc::clone(&change.row));
                    }
                    changes.iter().map(|c| key(&c.row)).collect()
                }
                Event::Progress { time, .. } => {
                    self.serving.metrics().sink_progress(&self.spec.view, &self.spec.topic, Some(*time), 0, None);
                    continue;
                }
                Event::End { reason } => {
                    return Err(match self.feeds.engine().view_key(&self.spec.view) {
                        Err(error) if gone(&error) => Stop::ViewGone(error.to_string()),
                        _ => Stop::Retry(reason.clone()),
                    })
                }
            };
            let time = event.time().expect("a snapshot or changes have a time");
            self.deliver(sent, &current, touched, time).await.map_err(Stop::Retry)?;
        }
    }

    /// Produces what the topic lacks for the `touched` keys, and waits for the broker.
    async fn deliver(
        &self,
        sent: &mut Held,
        current: &HashMap<String, Arc<Row>>,
        touched: BTreeSet<String>,
        time: u64,
    ) -> Result<(), String> {
        let mut pending = Vec::new();
        for key in touched {
            let row = current.get(&key).map(|row| (Value::Object(row.values.clone()).to_string(), row));
            if row.as_ref().map(|(text, _)| text) == sent.get(&key) {
                continue;
            }
            let value = row.as_ref().map(|(_, row)| {
                let mut values: Map<String, Value> = row.values.clone();
                values.insert("time".into(), time.into());
                Value::Object(values).to_string()
            });
            let mut record = FutureRecord::<str, str>::to(&self.spec.topic).key(key.as_str());
            if let Some(value) = value.as_deref() {
                record = record.payload(value);
            }
            let delivery = loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => break delivery,
                    // The local queue is full (the broker is slow or away): wait for room.
                    Err((_, back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            };
            pending.push((key, row.map(|(text, _)| text), delivery));
        }
        let messages = pending.len() as u64;
        for (key, text, delivery) in pending {
            match delivery.await {
                Ok(Ok(rdkafka::producer::future_producer::Delivery { partition, offset, .. })) => {
                    let last = self.delivered.lock().unwrap_or_else(|p| p.into_inner()).insert(partition, offset);
                    if last.is_some_and(|last| offset <= last) {
                        return Err(format!(
                            "partition {partition} of the topic starts again (a message went to offset {offset}, \
                             after {}): reading the topic back and sending what it lacks",
                            last.unwrap_or_default()
                        ));
                    }
                    match text {
                        Some(text) => sent.insert(key, text),
                        None => sent.remove(&key),
                    }
                }
                Ok(Err((error, _))) => return Err(format!("the broker refused a message: {error}")),
                Err(_) => return Err("the producer went away".into()),
            };
        }
        self.serving.metrics().sink_progress(&self.spec.view, &self.spec.topic, Some(time), messages, None);
        Ok(())
    }

    /// A row's key as the topic's message key: a JSON object of the view's key column,
    /// `{"customer":"Ali"}` — so that the NULL group (`{"category":null}`) and a group named
    /// `null` (`{"category":"null"}`) are two keys — and `{}` for a view of one row.
    fn key(row: &Row, column: Option<&str>) -> String {
        match (&row.key, column) {
            (Some(key), Some(column)) => json!({ column: key }).to_string(),
            _ => "{}".to_owned(),
        }
    }
}

/// What `topic` holds: each key's last value (its `time` left out), tombstoned keys gone.
fn read_back(brokers: &str, topic: &str) -> anyhow::Result<Held> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "atelier-lambda-sink")
        .set("enable.auto.commit", "false")
        .set("log_level", "3")
        .create()
        .context("cannot create a consumer")?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).context("no metadata")?;
    let mut ends = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition.id(), Duration::from_secs(10))
            .with_context(|| format!("no watermarks for {topic}/{}", partition.id()))?;
        if high > low {
            ends.insert(partition.id(), high);
            assignment.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
        }
    }
    let mut held = Held::new();
    if ends.is_empty() {
        return Ok(held);
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + READ_BACK;
    while !ends.is_empty() {
        if Instant::now() > deadline {
            bail!("{topic} could not be read to its end in {} s", READ_BACK.as_secs());
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
        let message = message?;
        if let Some(key) = message.key().map(|k| String::from_utf8_lossy(k).into_owned()) {
            match message.payload().and_then(|p| serde_json::from_slice::<Map<String, Value>>(p).ok()) {
                Some(mut row) => {
                    row.remove("time");
                    held.insert(key, Value::Object(row).to_string());
                }
                None => {
                    held.remove(&key);
                }
            }
        }
        if ends.get(&message.partition()).is_some_and(|end| message.offset() + 1 >= *end) {
            ends.remove(&message.partition());
        }
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_are_view_equals_topic() {
        let spec = SinkSpec::parse("customers=customers-view").unwrap();
        assert_eq!((spec.view.as_str(), spec.topic.as_str()), ("customers", "customers-view"));
        for bad in ["customers", "=t", "v=", ""] {
            assert!(SinkSpec::parse(bad).is_err(), "{bad:?}");
        }
    }
}
