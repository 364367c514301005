//! Kafka sinks end to end: `lambda run --sink VIEW=TOPIC` with a Kafka-protocol broker, a
//! random stream (corrections, deletes, redeliveries, bad records), and the sink topics read
//! by an independent client, `kcat`: the last value of every key must equal the view — also
//! after `kill -9`, a restart, and more messages that make keys leave the view (tombstones).

use crate::common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::feed::*;
use common::live::*;
use common::temp_dir;
use rdkafka::producer::Producer;

/// A customer's key in a sink's topic: the key column as a JSON object.
fn key_of(customer: &str) -> String {
    serde_json::json!({ "customer": customer }).to_string()
}

/// View `name` over HTTP: its key column as the sink keys it (`{"customer":"Ali"}`) → the row.
fn http_view(run: &Run, name: &str, key: &str) -> BTreeMap<String, String> {
    let (status, body) = run.get(&format!("/v1/views/{name}"));
    assert_eq!(status, 200, "{body}");
    body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| (serde_json::json!({ key: row[key] }).to_string(), row.to_string()))
        .collect()
}

/// Waits until the sinks have delivered the views' time (`views_time`), then each topic,
/// read with kcat, must equal its view.
fn assert_topics_equal_views(run: &mut Run, broker: &str, views_time: u64, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, status) = run.get("/v1/status");
        let sinks = status["sinks"].as_array().cloned().unwrap_or_default();
        let done = sinks.len() == 2 && sinks.iter().all(|s| s["time"].as_u64().is_some_and(|t| t >= views_time));
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "{when}: the sinks never caught up: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let customers = http_view(run, "customers", "customer");
    assert!(!customers.is_empty());
    assert_eq!(kcat_view(broker, "customers-view"), customers, "{when}: the customers topic is the view");
    let big = http_view(run, "big", "customer");
    assert_eq!(kcat_view(broker, "big-view"), big, "{when}: a created view's topic is the view");
}

/// Forty customers of one order each (`Temp-{tag}{i}`), or the deletes of those orders; each
/// order routed by its id as the other messages are.
fn temporary(tag: &str, delete: bool) -> Vec<Sent> {
    (0..40)
        .map(|i| {
            let id = format!("temp-{tag}{i}");
            let partition = (id.bytes().map(u32::from).sum::<u32>() % 3) as i32;
            let payload = if delete {
                format!(r#"{{"id":"{id}","op":"delete"}}"#)
            } else {
                format!(r#"{{"id":"{id}","customer":"Temp-{tag}{i}","amount":500}}"#)
            };
            Sent { partition, key: None, payload: Some(payload) }
        })
        .collect()
}

fn send(producer: &rdkafka::producer::BaseProducer, messages: &[Sent]) {
    send_all(producer, messages);
    producer.flush(Duration::from_secs(10)).expect("the broker takes the messages");
}

#[test]
fn sink_topics_hold_the_views_through_kill_9() {
    if Command::new("kcat").arg("-V").output().is_err() {
        panic!("kcat is not installed: run ./test, which installs it");
    }
    let dir = temp_dir("sink-e2e");
    let state = dir.join("state");
    let broker = TestBroker::mock();
    let history = history(&dir, &random_history(200));
    let options = [
        "--state-dir",
        state.to_str().unwrap(),
        "--snapshot-every-ms",
        "200",
        "--sink",
        "customers=customers-view",
        "--sink",
        "big=big-view",
    ];
    // A sink needs its view: it is created first (and kept in the state directory), then the
    // run with both sinks starts.
    let mut run = Run::start(&broker.address(), &history, 2, &dir, &options[..6]);
    run.views_at(&BTreeMap::new());
    let (status, answer) =
        post_sql(&run.http, "CREATE VIEW big AS SELECT customer, sum(amount) AS total FROM transactions GROUP BY customer HAVING sum(amount) > 400");
    assert_eq!(status, 200, "{answer}");
    run.stop();
    let mut run = Run::start(&broker.address(), &history, 2, &dir, &options);
    run.views_at(&BTreeMap::new());

    let producer = producer(&broker.address());
    let mut first = random_messages(31, 300);
    first.extend(temporary("a", false));
    send(&producer, &first);
    let reading = run.views_at(&end_offsets(&first));
    assert_topics_equal_views(&mut run, &broker.address(), reading.time, "after the stream");
    assert!(kcat_view(&broker.address(), "customers-view").contains_key(&key_of("Temp-a0")));

    // kill -9, then messages that delete whole customers while the sink is down: the
    // restarted sink reads its topic back and tombstones them.
    let _ = run.child.kill();
    let _ = run.child.wait();
    let mut second = random_messages(32, 200);
    second.extend(temporary("a", true));
    send(&producer, &second);
    let mut run = Run::start(&broker.address(), &history, 2, &dir, &options);
    let mut all: Vec<Sent> = first.iter().chain(&second).cloned().collect();
    let reading = run.views_at(&end_offsets(&all));
    assert_topics_equal_views(&mut run, &broker.address(), reading.time, "after kill -9 and a restart");
    assert!(!kcat_view(&broker.address(), "customers-view").keys().any(|k| k.contains("\"Temp")), "tombstoned");

    // Keys that join and then leave the view while the sink runs.
    for delete in [false, true] {
        let batch = temporary("b", delete);
        send(&producer, &batch);
        all.extend(batch);
        let reading = run.views_at(&end_offsets(&all));
        assert_topics_equal_views(&mut run, &broker.address(), reading.time, "keys joining and leaving");
        let held = kcat_view(&broker.address(), "customers-view");
        assert_eq!(held.contains_key(&key_of("Temp-b0")), !delete);
    }
    run.stop();
}

/// The sink's status entry once its time has reached `time` (or `None` at the deadline).
fn sink_reaches(run: &Run, time: u64, within: Duration) -> Option<serde_json::Value> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let (_, status) = run.get("/v1/status");
        if let Some(sink) = status["sinks"].get(0).filter(|s| s["time"].as_u64().is_some_and(|t| t >= time)) {
            return Some(sink.clone());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn the_views_go_on_while_the_sinks_broker_is_away_and_the_sink_catches_up() {
    if Command::new("kcat").arg("-V").output().is_err() {
        panic!("kcat is not installed: run ./test, which installs it");
    }
    let dir = temp_dir("sink-away");
    let source = TestBroker::mock();
    let port = free_port();
    let sink_brokers = format!("127.0.0.1:{port}");
    let broker = lambda_broker(port, 2, "customers-view");
    let history = history(&dir, &random_history(100));
    let options = ["--sink", "customers=customers-view", "--sink-brokers", &sink_brokers];
    let mut run = Run::start(&source.address(), &history, 2, &dir, &options);
    let producer = producer(&source.address());
    let mut all = random_messages(41, 200);
    send(&producer, &all);
    let reading = run.views_at(&end_offsets(&all));
    assert!(sink_reaches(&run, reading.time, Duration::from_secs(60)).is_some(), "the sink never caught up");
    assert_eq!(kcat_view(&sink_brokers, "customers-view"), http_view(&run, "customers", "customer"));

    // The sink's broker goes away: the views go on reading and answering; the sink falls behind.
    drop(broker);
    let mut away = random_messages(42, 300);
    away.extend(temporary("x", false));
    send(&producer, &away);
    all.extend(away);
    let reading = run.views_at(&end_offsets(&all));
    let (status, top) = run.get("/v1/top?k=3");
    assert_eq!(status, 200, "the views answer while the sink's broker is away: {top}");
    assert!(sink_reaches(&run, reading.time, Duration::from_secs(2)).is_none(), "the sink cannot have delivered");

    // It comes back empty (this broker keeps nothing): the sink sees the topic start again,
    // reads it back and sends the whole view, the keys that joined meanwhile included.
    let _broker = lambda_broker(port, 2, "customers-view");
    let more = temporary("y", false);
    send(&producer, &more);
    all.extend(more);
    let reading = run.views_at(&end_offsets(&all));
    let sink = sink_reaches(&run, reading.time, Duration::from_secs(60));
    assert!(sink.is_some(), "the sink never caught up after its broker came back: {}", run.get("/v1/status").1);
    let held = kcat_view(&sink_brokers, "customers-view");
    assert_eq!(held, http_view(&run, "customers", "customer"), "the topic is the view again");
    assert!(held.contains_key(&key_of("Temp-x0")) && held.contains_key(&key_of("Temp-y0")));
    let (_, metrics) = run.get("/v1/status");
    assert!(metrics["sinks"][0]["messages"].as_u64().unwrap_or(0) > 0, "{metrics}");
    run.stop();
}
