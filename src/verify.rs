//! `verify`: the Lambda promise made checkable.
//!
//! Takes a live reading (every view at one logical time, with the Kafka offsets it reflects),
//! re-reads the same inputs — the history files, and each partition from its earliest offset
//! up to the reading's next offset — recomputes every view from scratch with the separate,
//! plain [`Oracle`], and lists the differences.
//!
//! Kafka orders messages only within a partition, so the recomputation admits all messages
//! as one batch; it equals the live views whenever the versions of one transaction share a
//! partition — which Kafka's partitioning by key (our producer keys messages by `id`)
//! ensures.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Settings;
use crate::event::{Names, Reason, Update};
use crate::oracle::{differences, Oracle};
use crate::serve::query::Reading;
use crate::source::history::HistoryFile;
use crate::source::kafka::to_record;
use crate::source::Record;

/// What a verification compared.
#[derive(Debug)]
pub struct Verification {
    /// History records and Kafka messages re-read.
    pub history_records: u64,
    /// Kafka messages re-read.
    pub messages: u64,
    /// The differences between the live views and the recomputation; empty when equal.
    pub differences: Vec<String>,
}

/// Records gathered for one admission to the oracle.
#[derive(Default)]
struct Batch {
    updates: Vec<Update>,
    refused: Vec<Reason>,
}

impl Batch {
    fn add(&mut self, record: Record) {
        match record {
            Record::Update(u) => self.updates.push(u),
            Record::Refused(d) => self.refused.push(d.reason()),
        }
    }

    fn take(&mut self) -> (Vec<Update>, Vec<Reason>) {
        (std::mem::take(&mut self.updates), std::mem::take(&mut self.refused))
    }
}

/// Recomputes every view over the inputs `live` reflects and compares.
pub fn verify(settings: &Settings, live: &Reading, top_k: usize) -> anyhow::Result<Verification> {
    let mut oracle = Oracle::new();
    let mut batch = Batch::default();
    let files = HistoryFile::open_all(&settings.input.files)?;
    let progress = AtomicU64::new(0);
    let mut history_records = 0;
    for file in &files {
        file.read_share(0, 1, settings.input.max_record_bytes, &progress, &mut |record| {
            history_records += 1;
            batch.add(record);
            ControlFlow::Continue(())
        })?;
    }
    let (updates, refused) = batch.take();
    oracle.admit(0, updates, refused);

    let mut messages = 0;
    if live.offsets.iter().any(|(_, o)| *o > 0) {
        let k = &settings.kafka;
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &k.brokers)
            .set("group.id", format!("{}-verify", k.group))
            .set("enable.auto.commit", "false")
            .set("log_level", "3")
            .create()
            .context("cannot create a Kafka consumer to verify")?;
        let mut list = TopicPartitionList::new();
        for (p, _) in &live.offsets {
            list.add_partition_offset(&k.topic, *p, Offset::Beginning).expect("a fresh list accepts any partition");
        }
        consumer.assign(&list).context("cannot read the topic to verify")?;
        let mut left: BTreeMap<i32, i64> = live.offsets.iter().copied().filter(|(_, o)| *o > 0).collect();
        let mut names = Names::default();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !left.is_empty() {
            anyhow::ensure!(Instant::now() < deadline, "could not re-read the topic up to {left:?} within a minute");
            let Some(result) = consumer.poll(Duration::from_millis(100)) else { continue };
            let message = result.context("cannot re-read the topic")?;
            let (p, o) = (message.partition(), message.offset());
            let Some(end) = left.get(&p).copied() else { continue };
            if o < end {
                messages += 1;
                let record = to_record(
                    &k.topic,
                    p,
                    o,
                    message.key(),
                    message.payload(),
                    settings.input.max_record_bytes,
                    &mut names,
                );
                batch.add(record);
            }
            if o + 1 >= end {
                left.remove(&p);
            }
        }
    }
    let (updates, refused) = batch.take();
    oracle.admit(1, updates, refused);
    for (p, o) in &live.offsets {
        oracle.set_offset(*p, *o);
    }
    let expected = oracle.reading(live.time, settings.event_filter()?.as_ref(), top_k);
    Ok(Verification { history_records, messages, differences: differences(live, &expected) })
}
