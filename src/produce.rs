//! `lambda produce`: send JSON lines to the topic — from a file, from standard input, or
//! generated at a steady rate.
//!
//! Each line is one message value, sent as it is (bad lines included: the pipeline must
//! dead-letter them, not the producer). The message key is the event's `id` when it has
//! one, so that all versions of a transaction land in one partition, in order.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use crate::event::{Field, Fields};

/// How lines are paced.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// As fast as the broker takes them.
    Flat,
    /// At most this many per second, spread evenly.
    PerSecond(f64),
}

/// What was sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Produced {
    /// How many messages.
    pub sent: u64,
    /// Partition → the offset after the last message delivered there: the read-your-writes
    /// bound of what was sent (see [`crate::serve::bound`]).
    pub next_offsets: BTreeMap<i32, i64>,
}

/// Notes where each delivered message landed.
#[derive(Default)]
struct Deliveries(Mutex<BTreeMap<i32, i64>>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(message) = result {
            let mut next = self.0.lock().unwrap_or_else(|p| p.into_inner());
            let at = next.entry(message.partition()).or_insert(0);
            *at = (*at).max(message.offset() + 1);
        }
    }
}

/// Sends `lines` to `topic`; says how many were sent and where they landed. `stop` ends it
/// early.
pub fn produce(
    brokers: &str,
    topic: &str,
    lines: impl Iterator<Item = String>,
    pace: Pace,
    stop: impl Fn() -> bool,
) -> anyhow::Result<Produced> {
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // One request per partition and batch: at 10k/s over 12 partitions, 1 ms made
        // librdkafka's mock broker fall up to 1.3 s behind (seen by kcat); 5 ms keeps a
        // reader's p99 at ~13 ms.
        .set("linger.ms", "5")
        .set("log_level", "3")
        .create_with_context(Deliveries::default())
        .with_context(|| format!("cannot create a Kafka producer for {brokers}"))?;
    let started = Instant::now();
    let mut sent = 0u64;
    for line in lines {
        if stop() {
            break;
        }
        if let Pace::PerSecond(rate) = pace {
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                producer.poll(Duration::ZERO);
                std::thread::sleep(wait);
            }
        }
        let key = key_of(&line);
        loop {
            let mut record = BaseRecord::<str, str>::to(topic).payload(line.as_str());
            if let Some(key) = key.as_deref() {
                record = record.key(key);
            }
            match producer.send(record) {
                Ok(()) => break,
                // The local queue is full: let deliveries drain, then try again.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(10));
                }
                Err((error, _)) => return Err(error).context(format!("cannot send to topic {topic}")),
            }
        }
        sent += 1;
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).with_context(|| format!("messages to {topic} were not all delivered"))?;
    let next_offsets = producer.context().0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(Produced { sent, next_offsets })
}

/// The `id` of a JSON line, if it is an object with one.
pub fn key_of(line: &str) -> Option<String> {
    match Fields::from_json(line).ok()?.id {
        Field::Text(id) => Some(id.into_owned()),
        Field::Number(id) => Some(id.to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_ids() {
        assert_eq!(key_of(r#"{"id":"t1","customer":"Ali","amount":1}"#).as_deref(), Some("t1"));
        assert_eq!(key_of(r#"{"id":7,"op":"delete"}"#).as_deref(), Some("7"));
        assert_eq!(key_of(r#"{"customer":"Ali","amount":1}"#), None);
        assert_eq!(key_of("not json"), None);
    }
}
