//! `GET /metrics`: the pipeline in Prometheus' text format.
//!
//! Three kinds of numbers, kept apart on purpose:
//!
//! - **read from the views** at one logical time when scraped (like any other answer):
//!   `lambda_transactions`, `lambda_customers`, `lambda_dead_letters{reason}`,
//!   `lambda_next_offset{partition}`, `lambda_logical_time_ms`, and each created view's
//!   `lambda_view_rows{view}` (counted with SQL when scraped);
//! - **reported by every worker** with that read: `lambda_high_watermark{partition}` and
//!   `lambda_consumer_lag{partition}` (the high watermark less the next offset the views
//!   reflect);
//! - **counted by this process** as it goes: `lambda_records_read_total{source}` (history
//!   lines and Kafka messages read by its workers), and
//!   `lambda_query_duration_seconds{route}`, a histogram of HTTP answers, and each Kafka
//!   sink's `lambda_sink_messages_total{view,topic}` and `lambda_sink_lag_ms{view,topic}`
//!   (how far its last delivered change is behind the views' time).
//!
//! ```text
//! # TYPE lambda_consumer_lag gauge
//! lambda_consumer_lag{partition="real-time-orders/0"} 0
//! # TYPE lambda_query_duration_seconds histogram
//! lambda_query_duration_seconds_bucket{le="0.0001",route="/v1/customers/{customer}"} 9812
//! ```

use std::collections::BTreeMap;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::reading::Reading;

/// Label pairs of one series.
type Labels = Vec<(&'static str, String)>;

/// Query latency buckets: 25 µs doubling up to ~0.8 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_025, 2.0, 16))
}

/// Where a record came from, for `lambda_records_read_total`.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    /// A line of a history file.
    History,
    /// A Kafka message.
    Kafka,
    /// A record of a table (its file or its topic).
    Table,
}

/// Where reading Kafka stands, as the process that looks up the topic sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum KafkaState {
    /// Not looked up yet.
    #[default]
    Starting,
    /// The brokers do not answer: the history is served meanwhile.
    Unreachable(String),
    /// The topic's partitions are being read.
    Reading,
}

/// The process's metrics and what it counts outside the dataflow.
pub struct Metrics {
    registry: Registry,
    kafka_state: std::sync::Mutex<KafkaState>,
    kafka_reachable: Gauge,
    skipped: Family<Labels, Gauge>,
    records_read: Family<Labels, Counter>,
    query_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    transactions: Gauge,
    customers: Gauge,
    logical_time: Gauge,
    dead_letters: Family<Labels, Gauge>,
    next_offset: Family<Labels, Gauge>,
    high_watermark: Family<Labels, Gauge>,
    lag: Family<Labels, Gauge>,
    view_rows: Family<Labels, Gauge>,
    sink_messages: Family<Labels, Counter>,
    sink_lag: Family<Labels, Gauge>,
    sinks: std::sync::Mutex<BTreeMap<(String, String), SinkProgress>>,
}

/// Where a Kafka sink stands (see [`crate::serve::sink`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkProgress {
    /// The logical time of the last change the broker acknowledged.
    pub time: u64,
    /// Messages acknowledged (upserts and tombstones).
    pub messages: u64,
    /// The error it last met, until it delivers again.
    pub error: Option<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric, registered and at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("lambda");
        let records_read = Family::default();
        registry.register("records_read", "Records read: history lines and Kafka messages", records_read.clone());
        let query_seconds = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register("query_duration_seconds", "Time to answer an HTTP request, by route", query_seconds.clone());
        let transactions = Gauge::default();
        registry.register("transactions", "Live transactions in the views", transactions.clone());
        let customers = Gauge::default();
        registry.register("customers", "Customers with a live transaction", customers.clone());
        let logical_time = Gauge::default();
        registry.register("logical_time_ms", "The logical time the views were read at (Unix ms)", logical_time.clone());
        let dead_letters = Family::default();
        registry.register("dead_letters", "Refused records in the views, by reason", dead_letters.clone());
        let next_offset = Family::default();
        registry.register("next_offset", "Next Kafka offset the views reflect, by partition", next_offset.clone());
        let high_watermark = Family::default();
        registry.register(
            "high_watermark",
            "Offset after the newest message seen, by partition",
            high_watermark.clone(),
        );
        let lag = Family::default();
        registry.register("consumer_lag", "Messages on the topic not yet in the views, by partition", lag.clone());
        let kafka_reachable = Gauge::default();
        registry.register(
            "kafka_reachable",
            "1 while the topic is being read, 0 while Kafka cannot be reached",
            kafka_reachable.clone(),
        );
        let skipped = Family::default();
        registry.register(
            "kafka_skipped_messages",
            "Messages removed from the topic (retention, eviction) before they could be read, by partition",
            skipped.clone(),
        );
        let view_rows = Family::default();
        registry.register("view_rows", "Rows in each view created at run time (CREATE VIEW)", view_rows.clone());
        let sink_messages = Family::default();
        registry.register(
            "sink_messages",
            "Messages a Kafka sink delivered (upserts and tombstones), by view and topic",
            sink_messages.clone(),
        );
        let sink_lag = Family::default();
        registry.register(
            "sink_lag_ms",
            "How far a Kafka sink's last delivered change is behind the views, in logical ms",
            sink_lag.clone(),
        );
        Metrics {
            view_rows,
            sink_messages,
            sink_lag,
            sinks: std::sync::Mutex::default(),
            registry,
            kafka_state: std::sync::Mutex::default(),
            kafka_reachable,
            skipped,
            records_read,
            query_seconds,
            transactions,
            customers,
            logical_time,
            dead_letters,
            next_offset,
            high_watermark,
            lag,
        }
    }

    /// The counter of records read from `source` (cheap to clone, shared with the scrape).
    pub fn records_read(&self, source: Source) -> Counter {
        let name = match source {
            Source::History => "history",
            Source::Kafka => "kafka",
            Source::Table => "table",
        };
        self.records_read.get_or_create(&vec![("source", name.to_owned())]).clone()
    }

    /// Notes where reading Kafka stands.
    pub fn set_kafka_state(&self, state: KafkaState) {
        self.kafka_reachable.set(i64::from(state == KafkaState::Reading));
        *self.kafka_state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// Where reading Kafka stands.
    pub fn kafka_state(&self) -> KafkaState {
        self.kafka_state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records how long answering `route` took.
    pub fn observe_query(&self, route: &str, seconds: f64) {
        self.query_seconds.get_or_create(&vec![("route", route.to_owned())]).observe(seconds);
    }

    /// Notes how many rows each created view holds (and forgets dropped ones).
    pub fn set_view_rows(&self, views: &[(String, i64)]) {
        self.view_rows.clear();
        for (name, rows) in views {
            self.view_rows.get_or_create(&vec![("view", name.clone())]).set(*rows);
        }
    }

    /// Notes that the sink of `view` to `topic` delivered `messages` more, through `time`
    /// (or met `error`).
    pub fn sink_progress(&self, view: &str, topic: &str, time: Option<u64>, messages: u64, error: Option<String>) {
        let mut sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        let sink = sinks.entry((view.to_owned(), topic.to_owned())).or_default();
        if let Some(time) = time {
            sink.time = sink.time.max(time);
        }
        sink.messages += messages;
        sink.error = error;
        self.sink_messages
            .get_or_create(&vec![("view", view.to_owned()), ("topic", topic.to_owned())])
            .inc_by(messages);
    }

    /// Every sink: (view, topic) → where it stands.
    pub fn sinks(&self) -> BTreeMap<(String, String), SinkProgress> {
        self.sinks.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The text exposition, with the view numbers taken from `reading`.
    pub fn render(&self, reading: &Reading, topic: &str) -> String {
        self.transactions.set(reading.overall.count);
        self.customers.set(reading.customer_count);
        self.logical_time.set(reading.time as i64);
        for (reason, n) in &reading.dead_letters {
            self.dead_letters.get_or_create(&vec![("reason", reason.to_string())]).set(*n);
        }
        for (partition, skipped) in reading.skipped() {
            self.skipped.get_or_create(&vec![("partition", format!("{topic}/{partition}"))]).set(skipped);
        }
        for (partition, next, lag) in consumer_lag(&reading.offsets, &reading.high_watermarks()) {
            let labels = vec![("partition", format!("{topic}/{partition}"))];
            self.next_offset.get_or_create(&labels).set(next);
            if let Some(lag) = lag {
                self.lag.get_or_create(&labels).set(lag);
                self.high_watermark.get_or_create(&labels).set(next + lag);
            }
        }
        for ((view, topic), sink) in self.sinks() {
            let labels = vec![("view", view), ("topic", topic)];
            self.sink_lag.get_or_create(&labels).set(reading.time.saturating_sub(sink.time) as i64);
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// Each partition's next offset and its lag — the high watermark less the next offset, never
/// below zero (a watermark seen before the views caught up) — or `None` when no watermark is
/// known yet.
pub fn consumer_lag(offsets: &[(i32, i64)], marks: &BTreeMap<i32, i64>) -> Vec<(i32, i64, Option<i64>)> {
    offsets.iter().map(|&(p, next)| (p, next, marks.get(&p).map(|high| (high - next).max(0)))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::stats::Stats;
    use crate::event::Reason;
    use crate::reading::WorkerProgress;

    #[test]
    fn renders_views_counters_lag_and_latency() {
        let metrics = Metrics::new();
        metrics.records_read(Source::Kafka).inc_by(7);
        metrics.observe_query("/v1/top", 0.0003);
        let reading = Reading {
            time: 42,
            overall: Stats { count: 3, cents: 100 },
            customer_count: 2,
            dead_letters: vec![(Reason::BadAmount, 5)],
            offsets: vec![(0, 7), (1, 4), (2, 0)],
            workers: vec![
                WorkerProgress {
                    worker: 0,
                    process: 0,
                    partitions: vec![(0, Some(10)), (2, None)],
                    records: (3, 7),
                    ..Default::default()
                },
                WorkerProgress {
                    worker: 1,
                    process: 0,
                    partitions: vec![(1, Some(4))],
                    records: (0, 0),
                    ..Default::default()
                },
            ],
            ..Reading::default()
        };
        let text = metrics.render(&reading, "t");
        for line in [
            "lambda_records_read_total{source=\"kafka\"} 7",
            "lambda_transactions 3",
            "lambda_customers 2",
            "lambda_logical_time_ms 42",
            "lambda_dead_letters{reason=\"bad_amount\"} 5",
            "lambda_next_offset{partition=\"t/0\"} 7",
            "lambda_consumer_lag{partition=\"t/0\"} 3",
            "lambda_consumer_lag{partition=\"t/1\"} 0",
            "lambda_high_watermark{partition=\"t/0\"} 10",
            "lambda_query_duration_seconds_count{route=\"/v1/top\"} 1",
            "lambda_query_duration_seconds_bucket{le=\"0.0004\",route=\"/v1/top\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        // No watermark seen for partition 2: no lag is claimed for it.
        assert!(!text.contains("lambda_consumer_lag{partition=\"t/2\"}"), "{text}");
    }
}
