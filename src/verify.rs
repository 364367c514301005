//! `verify`: the Lambda promise made checkable.
//!
//! Takes a live reading (every view at one logical time, with the Kafka offsets it reflects),
//! re-reads the same inputs — the history files, and each partition from its earliest offset
//! up to the reading's next offset — recomputes every view from scratch with the separate,
//! plain [`Oracle`], and lists the differences.
//!
//! The live reading comes from this process (the prompt's `verify`) or from another one over
//! HTTP (`lambda verify`, which reads `GET /v1/views` back with [`reading_from_views`]).
//!
//! Kafka orders messages only within a partition, so the recomputation admits all messages
//! as one batch; it equals the live views whenever the versions of one transaction share a
//! partition — which Kafka's partitioning by key (our producer keys messages by `id`)
//! ensures.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::amount::{parse_cents, parse_total_cents};
use crate::config::Settings;
use crate::dataflow::rows::CustomerRow;
use crate::dataflow::stats::Stats;
use crate::event::{parse_hour_bound, Names, Reason, Update};
use crate::oracle::{differences, Oracle};
use crate::reading::Reading;
use crate::source::history::HistoryFile;
use crate::source::kafka::to_record;
use crate::source::Record;

/// What a verification compared.
#[derive(Debug)]
pub struct Verification {
    /// History records re-read (refused ones included).
    pub history_records: u64,
    /// Kafka messages re-read.
    pub messages: u64,
    /// Views created at run time, compared too.
    pub created_views: usize,
    /// Views created at run time that read a table, not compared (the recomputation does not
    /// read tables' files and topics).
    pub not_compared: Vec<String>,
    /// The differences between the live views and the recomputation; empty when equal.
    pub differences: Vec<String>,
}

impl Verification {
    /// What was found, for people: one line when equal, else one line per difference.
    pub fn report(&self) -> String {
        if self.differences.is_empty() {
            let created = match self.created_views {
                0 => String::new(),
                n => format!(" ({n} created at run time among them)"),
            };
            let mut text = format!(
                "verify: every view{created} equals a from-scratch recomputation over {} history records and {} Kafka messages\n",
                self.history_records, self.messages
            );
            if !self.not_compared.is_empty() {
                text.push_str(&format!(
                    "verify: not compared (they read tables, which verify does not recompute): {}\n",
                    self.not_compared.join(", ")
                ));
            }
            return text;
        }
        let mut text =
            format!("verify: {} differences between the live views and a recomputation:\n", self.differences.len());
        for difference in &self.differences {
            text.push_str(&format!("  {difference}\n"));
        }
        text
    }
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
        let consumer: BaseConsumer = crate::source::kafka::base_config(&k.brokers)
            .set("group.id", format!("{}-verify", k.group))
            .set("enable.auto.commit", "false")
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
    let mut found = differences(live, &expected);
    let (created, not_compared) = oracle
        .created_views(&live.created, &expected, &settings.kafka.topic)
        .map_err(|e| anyhow::anyhow!("cannot recompute the created views: {e}"))?;
    let compared: Vec<_> = live.created.iter().filter(|v| !not_compared.contains(&v.name)).cloned().collect();
    found.extend(crate::oracle::created_differences(&compared, &created));
    Ok(Verification { history_records, messages, created_views: compared.len(), not_compared, differences: found })
}

/// Reads the live views of a running `lambda run` from its HTTP API (`base`, e.g.
/// `http://127.0.0.1:8080`): every view at one logical time, `top` cut to `top_k`.
pub fn fetch_live(base: &str, topic: &str, top_k: usize) -> anyhow::Result<Reading> {
    let base = base.trim_end_matches('/');
    let base = if base.contains("://") { base.to_owned() } else { format!("http://{base}") };
    let url = format!("{base}/v1/views?k={top_k}");
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(120))).build().into();
    let body = agent
        .get(&url)
        .call()
        .with_context(|| format!("cannot read the live views at {url} (is `lambda run` serving there?)"))?
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_string()
        .with_context(|| format!("cannot read the answer of {url}"))?;
    let json: serde_json::Value = serde_json::from_str(&body).with_context(|| format!("{url} did not answer JSON"))?;
    reading_from_views(&json, topic).with_context(|| format!("{url} did not answer the views"))
}

/// The [`Reading`] that a `GET /v1/views` answer shows (the inverse of
/// [`crate::serve::http::views_json`]).
pub fn reading_from_views(json: &serde_json::Value, topic: &str) -> anyhow::Result<Reading> {
    use serde_json::Value;
    fn field<'a>(v: &'a Value, name: &str) -> anyhow::Result<&'a Value> {
        v.get(name).with_context(|| format!("no {name:?} in {v}"))
    }
    fn int(v: &Value, name: &str) -> anyhow::Result<i64> {
        field(v, name)?.as_i64().with_context(|| format!("{name:?} is not a whole number in {v}"))
    }
    fn text<'a>(v: &'a Value, name: &str) -> anyhow::Result<&'a str> {
        field(v, name)?.as_str().with_context(|| format!("{name:?} is not text in {v}"))
    }
    fn cents(v: &Value, name: &str) -> anyhow::Result<i64> {
        let number = field(v, name)?.to_string();
        parse_cents(&number).with_context(|| format!("{name:?} is not an amount in {v}"))
    }
    fn rows(v: &Value, name: &str) -> anyhow::Result<Vec<Value>> {
        field(v, name)?.as_array().cloned().with_context(|| format!("{name:?} is not a list"))
    }
    fn total(v: &Value, name: &str) -> anyhow::Result<i128> {
        let number = field(v, name)?.to_string();
        parse_total_cents(&number).with_context(|| format!("{name:?} is not a total in {v}"))
    }
    fn sums(v: &Value) -> anyhow::Result<Stats> {
        Ok(Stats { count: int(v, "count")?, cents: total(v, "total")? })
    }

    let as_of = field(json, "as_of")?;
    let time = field(as_of, "time")?.as_u64().context("as_of.time is not a logical time")?;
    let mut offsets = Vec::new();
    for (name, offset) in field(as_of, "offsets")?.as_object().context("as_of.offsets is not an object")? {
        let partition = name
            .strip_prefix(topic)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|p| p.parse::<i32>().ok())
            .with_context(|| format!("offset of {name:?}, not a partition of {topic:?}"))?;
        offsets.push((partition, offset.as_i64().with_context(|| format!("offset of {name} is not a number"))?));
    }
    offsets.sort();
    let mut dead_letters = Vec::new();
    for (name, n) in field(json, "dead_letters")?.as_object().context("dead_letters is not an object")? {
        let reason = Reason::ALL.into_iter().find(|r| r.as_str() == name);
        let Some(reason) = reason else { bail!("unknown dead-letter reason {name:?}") };
        dead_letters.push((reason, n.as_i64().with_context(|| format!("count of {name} is not a number"))?));
    }
    dead_letters.sort();
    let created = match json.get("created") {
        Some(created) => serde_json::from_value(created.clone()).context("\"created\" is not a list of views")?,
        None => Vec::new(),
    };
    Ok(Reading {
        created,
        time,
        customers: rows(json, "customers")?
            .iter()
            .map(|c| {
                let row = CustomerRow {
                    total: total(c, "total")?,
                    count: int(c, "count")?,
                    min: cents(c, "min")?,
                    max: cents(c, "max")?,
                };
                Ok((text(c, "customer")?.to_owned(), row))
            })
            .collect::<anyhow::Result<_>>()?,
        top: rows(json, "top")?
            .iter()
            .map(|t| Ok((text(t, "customer")?.to_owned(), total(t, "total")?)))
            .collect::<anyhow::Result<_>>()?,
        categories: rows(json, "categories")?
            .iter()
            .map(|c| Ok((field(c, "category")?.as_str().map(str::to_owned), sums(c)?)))
            .collect::<anyhow::Result<_>>()?,
        hourly: rows(json, "hourly")?
            .iter()
            .map(|h| {
                let hour = text(h, "hour")?;
                Ok((parse_hour_bound(hour).with_context(|| format!("{hour:?} is not an hour"))?, sums(h)?))
            })
            .collect::<anyhow::Result<_>>()?,
        overall: sums(field(json, "overall")?)?,
        customer_count: int(json, "customer_count")?,
        dead_letters,
        offsets,
        workers: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::http::views_json;

    /// What `lambda verify` reads back over HTTP is exactly the reading that was served.
    #[test]
    fn views_json_reads_back_to_the_same_reading() {
        let row = |total: i128, count, min, max| CustomerRow { total, count, min, max };
        // Totals past 64 bits of cents, as the views keep them (128 bits).
        let huge = i128::from(i64::MAX) * 3;
        let reading = Reading {
            time: 1_732_000_000_123,
            customers: vec![
                ("Ali".into(), row(40_000, 2, 15_000, 25_000)),
                ("Big".into(), row(huge, 3, i64::MAX, i64::MAX)),
                ("Zoé".into(), row(5_025, 1, 5_025, 5_025)),
            ],
            top: vec![("Big".into(), huge), ("Ali".into(), 40_000), ("Zoé".into(), 5_025)],
            categories: vec![
                (None, Stats { count: 1, cents: 5_025 }),
                (Some("food".into()), Stats { count: 2, cents: 40_000 }),
            ],
            hourly: vec![(483_000, Stats { count: 3, cents: 45_025 })],
            overall: Stats { count: 3, cents: 45_025 },
            customer_count: 3,
            dead_letters: vec![(Reason::InvalidJson, 2), (Reason::BadAmount, 1)],
            offsets: vec![(0, 12), (1, 0), (2, 7)],
            workers: Vec::new(),
            created: vec![crate::reading::CreatedRows {
                name: "big".into(),
                definition: "CREATE VIEW big AS SELECT * FROM customers WHERE total > 100".into(),
                columns: vec!["customer".into(), "total".into()],
                rows: vec![vec!["Ali".into(), serde_json::from_str("400.00").unwrap()]],
            }],
        };
        let json = views_json(&reading, "real-time-orders");
        let mut expected = reading.clone();
        expected.dead_letters.sort();
        assert_eq!(reading_from_views(&json, "real-time-orders").unwrap(), expected);
        assert!(reading_from_views(&json, "another-topic").is_err(), "offsets of another topic are refused");
    }
}
