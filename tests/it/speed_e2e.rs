//! The speed layer end to end: the real `lambda` binary as a process, a Kafka-protocol
//! broker on loopback, and messages produced by real clients (kcat, librdkafka).

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atelier_lambda::broker::Broker;
use atelier_lambda::source::Record;
use common::live::*;
use common::temp_dir;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::Producer;
use rdkafka::Message as _;

#[test]
fn the_workshop_through_lambda_broker_and_kcat() {
    if Command::new("kcat").arg("-V").output().is_err() {
        panic!("kcat is not installed; ./test installs it");
    }
    let dir = temp_dir("kcat");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _broker = lambda_broker(port, 3, TOPIC);
    let brokers = format!("127.0.0.1:{port}");
    let workshop = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/transactions.json");
    let mut run = Run::start(&brokers, &workshop, 2, &dir, &[]);
    run.wait_for(&BTreeMap::new());
    assert!(view(&run.views, "customers.csv").contains("Ali,320,2"), "the batch view comes first");

    let mut kcat = Command::new("kcat")
        .args(["-P", "-b", &brokers, "-t", TOPIC])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat starts");
    std::io::Write::write_all(
        kcat.stdin.as_mut().unwrap(),
        b"{\"customer\":\"Ali\",\"amount\":80}\n{\"customer\":\"Mounir\",\"amount\":200}\n{\"customer\":\"Sara\",\"amount\":40}\n",
    )
    .unwrap();
    drop(kcat.stdin.take());
    assert!(kcat.wait().unwrap().success());

    // Each file is replaced on its own (customers.csv, then as_of.json): wait for both.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let customers = view(&run.views, "customers.csv");
        let as_of: serde_json::Value = serde_json::from_str(&view(&run.views, "as_of.json")).unwrap();
        let total: i64 = (0..3).map(|p| as_of["offsets"][format!("{TOPIC}/{p}")].as_i64().unwrap()).sum();
        if customers.contains("Ali,400,3") && total == 3 {
            assert!(customers.contains("Mounir,350,2"), "{customers}");
            assert!(customers.contains("Sara,180,3"), "{customers}");
            break;
        }
        assert!(Instant::now() < deadline, "the serving view never reached Ali 400 at 3 messages: {customers} {as_of}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = run.stop();
    assert!(log.contains("stopped cleanly"), "{log}");
}

#[test]
fn a_random_stream_equals_recomputation_on_the_mock_broker() {
    for (seed, workers) in [(1u64, 1usize), (2, 2), (3, 2)] {
        random_stream(TestBroker::mock(), seed, workers);
    }
}

#[test]
fn a_random_stream_equals_recomputation_on_tansu() {
    for (seed, workers) in [(4u64, 1usize), (5, 2)] {
        random_stream(TestBroker::tansu(), seed, workers);
    }
}

#[test]
fn the_workshop_through_tansu_and_lambda_produce() {
    let broker = TestBroker::tansu();
    let dir = temp_dir("tansu-golden");
    let workshop = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/transactions.json");
    let mut run = Run::start(&broker.address(), &workshop, 2, &dir, &[]);
    run.wait_for(&BTreeMap::new());
    let messages = dir.join("messages.jsonl");
    let (first, last) = atelier_lambda::demo::WORKSHOP_MESSAGES.split_at(2);
    std::fs::write(&messages, first.join("\n")).unwrap();
    let sent = lambda().args(["produce", "--brokers", &broker.address(), "--input"]).arg(&messages).output().unwrap();
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));
    // The last one piped, without --input: standard input is not a terminal, so it is read
    // (not 10,000 generated messages sent instead).
    let mut piped = lambda()
        .args(["produce", "--brokers", &broker.address()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut piped.stdin.take().unwrap(), format!("{}\n", last[0]).as_bytes()).unwrap();
    let sent = piped.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&sent.stderr);
    assert!(sent.status.success(), "{said}");
    assert!(said.contains("reading JSON lines from standard input") && said.contains("sent 1 messages"), "{said}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !view(&run.views, "customers.csv").contains("Ali,400,3") {
        assert!(Instant::now() < deadline, "no serving view on tansu: {}", view(&run.views, "customers.csv"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let customers = view(&run.views, "customers.csv");
    assert!(customers.contains("Mounir,350,2") && customers.contains("Sara,180,3"), "{customers}");
    run.stop();
}

fn random_stream(broker: TestBroker, seed: u64, workers: usize) {
    {
        let dir = temp_dir("random-stream");
        broker.create_topic("dead-letters", 1);
        let history_lines = random_history(40);
        let history_path = history(&dir, &history_lines);
        let messages = random_messages(seed, 150);
        let mut run = Run::start(&broker.address(), &history_path, workers, &dir, &["--dlq-topic", "dead-letters"]);
        let producer = producer(&broker.address());
        let (first, second) = messages.split_at(messages.len() / 2);
        send_all(&producer, first);
        producer.flush(Duration::from_secs(10)).unwrap();
        run.wait_for(&end_offsets(first));
        send_all(&producer, second);
        producer.flush(Duration::from_secs(10)).unwrap();
        run.wait_for(&end_offsets(&messages));
        let expected = expected_views(&history_lines, &history_path.display().to_string(), &messages, &dir);
        assert_same_views(&run.views, &expected);

        // Every refused message is a dead letter in the file and on the topic.
        let refused = records(&messages).iter().filter(|r| matches!(r, Record::Refused(_))).count();
        run.stop();
        let file = std::fs::read_to_string(dir.join("dead.jsonl")).unwrap();
        let from_kafka = file.lines().filter(|l| l.contains(&format!("\"source\":\"{TOPIC}/"))).count();
        assert_eq!(from_kafka, refused, "dead letters in the file (seed {seed})");
        assert!(refused > 0, "the stream has bad messages");
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker.address())
            .set("group.id", "dlq-check")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        let mut partitions = rdkafka::TopicPartitionList::new();
        partitions.add_partition_offset("dead-letters", 0, rdkafka::Offset::Beginning).unwrap();
        consumer.assign(&partitions).unwrap();
        let mut on_topic = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while on_topic < refused && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                let letter: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                assert!(letter["reason"].is_string() && letter["source"].is_string(), "{letter}");
                on_topic += 1;
            }
        }
        assert_eq!(on_topic, refused, "dead letters on the topic (seed {seed})");
    }
}

#[test]
fn a_broker_outage_loses_nothing_and_doubles_nothing() {
    let dir = temp_dir("outage");
    let broker = TestBroker::mock();
    let history_lines = vec![r#"{"id":"h1","customer":"Ali","amount":120}"#.to_string()];
    let history_path = history(&dir, &history_lines);
    let messages = random_messages(7, 120);
    let mut run = Run::start(&broker.address(), &history_path, 2, &dir, &[]);
    let producer = producer(&broker.address());
    let (before, rest) = messages.split_at(40);
    let (during, after) = rest.split_at(40);
    send_all(&producer, before);
    producer.flush(Duration::from_secs(10)).unwrap();
    run.wait_for(&end_offsets(before));

    broker.set_reachable(false);
    send_all(&producer, during); // queued by the producer while the broker is unreachable
    std::thread::sleep(Duration::from_secs(2));
    broker.set_reachable(true);
    send_all(&producer, after);
    producer.flush(Duration::from_secs(30)).unwrap();
    run.wait_for(&end_offsets(&messages));
    let expected = expected_views(&history_lines, &history_path.display().to_string(), &messages, &dir);
    assert_same_views(&run.views, &expected);
    let log = run.stop();
    assert!(log.contains("Kafka error; retrying"), "the outage is logged: {log}");
    assert!(log.contains("Kafka reachable again"), "the recovery is logged: {log}");
}

#[test]
fn a_failing_worker_stops_the_run_with_its_error() {
    // Strict mode makes the worker that meets the bad line fail; the others must not wait
    // for orders from it.
    let broker = Broker::start(0, TOPIC, 3).unwrap();
    let dir = temp_dir("failing-worker");
    let history = history(&dir, &[r#"{"customer":"Ali","amount":1}"#.into(), r#"{"customer":"","amount":1}"#.into()]);
    let mut child = lambda()
        .args(["run", "--brokers", &broker.address(), "--workers", "2", "--http", "off", "--pg", "off", "--strict"])
        .arg("--input")
        .arg(&history)
        .arg("--dead-letters")
        .arg(dir.join("dead.jsonl"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("lambda run hung after a worker failed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("strict mode: bad record") && err.contains(":2"), "{err}");
}

#[test]
fn a_missing_topic_is_a_clear_error() {
    let broker = Broker::start(0, "another-topic", 1).unwrap();
    let dir = temp_dir("no-topic");
    let out = lambda()
        .args(["run", "--brokers", &broker.address(), "--topic", "no-such-topic", "--workers", "1"])
        .arg("--input")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/transactions.json"))
        .arg("--dead-letters")
        .arg(dir.join("dead.jsonl"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("topic \"no-such-topic\" does not exist"), "{err}");
}

#[test]
fn kafka_unreachable_at_start_is_retried_until_it_comes() {
    let dir = temp_dir("late-broker");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let brokers = format!("127.0.0.1:{port}");
    let workshop = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/transactions.json");
    let mut run = Run::start(&brokers, &workshop, 2, &dir, &[]);
    std::thread::sleep(Duration::from_secs(3)); // nothing listens yet
    let broker = Broker::start(port, TOPIC, 3).unwrap();
    run.wait_for(&BTreeMap::new());
    let producer = producer(&broker.address());
    let messages: Vec<Sent> = atelier_lambda::demo::WORKSHOP_MESSAGES
        .iter()
        .enumerate()
        .map(|(i, m)| Sent { partition: i as i32, key: None, payload: Some(m.to_string()) })
        .collect();
    send_all(&producer, &messages);
    producer.flush(Duration::from_secs(10)).unwrap();
    run.wait_for(&end_offsets(&messages));
    let customers = view(&run.views, "customers.csv");
    assert!(customers.contains("Ali,400,3") && customers.contains("Sara,180,3"), "{customers}");
    let log = run.stop();
    assert!(log.contains("not reachable yet; serving the history meanwhile"), "the wait is logged: {log}");
}
