//! Changefeed benchmark through the real binary: `lambda run` (release) reading from
//! `lambda broker` (its own process), `subscribers` SSE clients on `GET /v1/subscribe?view=customers` over real TCP,
//! and a producer at a steady rate.
//!
//! ```text
//! cargo build --release && cargo run --release --example feed_bench -- --subscribers 1 --rate 10000 --seconds 10
//! cargo run --release --example feed_bench -- --subscribers 200 --rate 10000 --seconds 10
//! ```
//!
//! - **produce → SSE latency**: every 10 ms one *probe* message creates a new customer
//!   `probe-N`; the time from handing it to the producer to the arrival, at one subscriber,
//!   of the `changes` event that adds `probe-N`. The other messages (customers `c0`..`c999`,
//!   corrections of a bounded id set) are the load.
//! - **proof of work**: every probe must be seen by every subscriber, and the customers view
//!   at the end must hold every customer produced (`probes + 1000 + the workshop's 3`).
//! - **ingest cost**: then a burst of `--burst` messages as fast as the producer goes; the
//!   time until `/v1/status` reflects its last offsets, and the CPU `lambda run` used.
//!
//! Everything shares the machine's cores (the producer and the subscribers run in this process,
//! the broker in its own): say so when quoting the figures.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const TOPIC: &str = "real-time-orders";

/// For each timed event: how far behind the wall clock its logical time was on arrival (ms).
static BEHIND: Mutex<Vec<f64>> = Mutex::new(Vec::new());

#[derive(Parser)]
struct Args {
    /// SSE clients following the customers view.
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// Messages per second of the steady phase.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds of the steady phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Messages of the burst phase.
    #[arg(long, default_value_t = 200_000)]
    burst: u64,
    /// The producer's `linger.ms`: how long it may wait to batch messages into one request
    /// (librdkafka sends one request per partition and batch: with 1 ms and 12 partitions the
    /// mock broker falls behind at 10k/s — messages reached any consumer, kcat too, up to
    /// 1.3 s late — where 5 ms keeps kcat's p99 at 13 ms).
    #[arg(long, default_value_t = 5)]
    linger_ms: u32,
    /// The binary under test.
    #[arg(long, default_value = "target/release/lambda")]
    lambda: PathBuf,
    /// The view followed: `customers`, or any other name for a view created first as the
    /// same per-customer question in SQL (`CREATE VIEW name AS SELECT customer, count(*),
    /// sum(amount) ... GROUP BY customer`).
    #[arg(long, default_value = "customers")]
    view: String,
    /// The `SELECT` of the view created (with `--view` other than `customers`); its rows must
    /// have a `customer` column.
    #[arg(
        long,
        default_value = "SELECT customer, count(*) AS count, sum(amount) AS total FROM transactions GROUP BY customer"
    )]
    select: String,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `lambda run`, killed when dropped.
struct Run(Child);

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(address: &str, path: &str) -> Option<serde_json::Value> {
    let mut stream = TcpStream::connect(address).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

/// Runs a SQL statement over `POST /v1/sql`; its answer's status line and body.
fn post_sql(address: &str, statement: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(address)?;
    write!(
        stream,
        "POST /v1/sql HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/sql\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{statement}",
        statement.len()
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    anyhow::ensure!(text.starts_with("HTTP/1.1 200"), "{statement}: {text}");
    Ok(text)
}

/// Probe number → when its event arrived.
type Arrivals = Arc<Mutex<Vec<(u64, Instant)>>>;

/// Opens an SSE client; each `changes` event's probe keys are timed by `seen` (when given),
/// and counted in `probes`.
fn subscribe(address: &str, view: &str, probes: Arc<AtomicU64>, seen: Option<Arrivals>) {
    let mut stream = TcpStream::connect(address).expect("the HTTP API");
    write!(stream, "GET /v1/subscribe?view={view} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    std::thread::spawn(move || {
        let reader = BufReader::with_capacity(1 << 16, stream);
        for line in reader.lines() {
            let Ok(line) = line else { return };
            let Some(data) = line.strip_prefix("data: ") else { continue };
            if !data.contains("probe-") {
                continue;
            }
            let at = Instant::now();
            // Only the fields looked at are parsed (the rows are skipped): 200 clients share
            // this machine's two cores with the server, and parsing every row into a
            // `serde_json::Value` took both of them (the clients used 176% CPU, `lambda run`
            // 20%), so that the figures measured the clients.
            let Ok(event) = serde_json::from_str::<ChangesIn>(data) else { continue };
            if seen.is_some() {
                let now =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
                let behind = now - event.time.unwrap_or(now);
                BEHIND.lock().unwrap().push(behind as f64);
            }
            for change in &event.changes {
                // A view without a key (a compiled one) names the customer in its row.
                let key =
                    change.key.as_deref().or(change.row.as_ref().and_then(|r| r.customer.as_deref())).unwrap_or("");
                if let (Some(n), 1) = (key.strip_prefix("probe-"), change.diff) {
                    probes.fetch_add(1, Ordering::Relaxed);
                    if let (Some(seen), Ok(n)) = (&seen, n.parse::<u64>()) {
                        seen.lock().unwrap().push((n, at));
                    }
                }
            }
        }
    });
}

/// What a client reads of a `changes` event.
#[derive(serde::Deserialize)]
struct ChangesIn<'a> {
    time: Option<i64>,
    #[serde(default, borrow)]
    changes: Vec<ChangeIn<'a>>,
}

/// What a client reads of a change: its key (a customer's name here) and its diff.
#[derive(serde::Deserialize)]
struct ChangeIn<'a> {
    #[serde(borrow)]
    key: Option<std::borrow::Cow<'a, str>>,
    diff: i64,
    #[serde(default, borrow)]
    row: Option<RowIn<'a>>,
}

/// What a client reads of a change's row: its customer.
#[derive(serde::Deserialize)]
struct RowIn<'a> {
    #[serde(default, borrow)]
    customer: Option<std::borrow::Cow<'a, str>>,
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let broker_port = free_port()?.to_string();
    let brokers = format!("127.0.0.1:{broker_port}");
    let _broker = Run(Command::new(&args.lambda)
        .args(["broker", "--port", &broker_port, "--partitions", "12", "--topic", TOPIC])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?);
    let http = format!("127.0.0.1:{}", free_port()?);
    let run = Run(Command::new(&args.lambda)
        .args(["run", "--brokers", &brokers, "--workers", "2", "--http", &http, "--pg", "off"])
        .args(["--input", "datasets/transactions.json"])
        .arg("--dead-letters")
        .arg(std::env::temp_dir().join(format!("feed-bench-{}.jsonl", std::process::id())))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?);
    let pid = run.0.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&http, "/v1/status").is_none_or(|s| s["kafka"]["state"] != "reading") {
        anyhow::ensure!(Instant::now() < deadline, "lambda run did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }

    let probes_seen = Arc::new(AtomicU64::new(0));
    let timed = Arc::new(Mutex::new(Vec::new()));
    if args.view != "customers" {
        post_sql(&http, &format!("CREATE VIEW {} AS {}", args.view, args.select))?;
    }
    for i in 0..args.subscribers {
        subscribe(&http, &args.view, Arc::clone(&probes_seen), (i == 0).then(|| Arc::clone(&timed)));
    }
    std::thread::sleep(Duration::from_millis(500));

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", args.linger_ms.to_string())
        .set("log_level", "3")
        .create()?;
    let send = |producer: &BaseProducer, key: &str, value: &str| loop {
        match producer.send(BaseRecord::to(TOPIC).key(key).payload(value)) {
            Ok(()) => break,
            Err(_) => {
                producer.poll(Duration::from_millis(1));
            }
        }
    };

    // Steady phase, with probes.
    let cpu_before = cpu_ticks(pid);
    let start = Instant::now();
    let total = args.rate * args.seconds;
    let mut sent_at = Vec::new();
    let mut probe = 0u64;
    let mut produced_customers = std::collections::BTreeSet::new();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / args.rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            producer.poll(Duration::ZERO);
            std::thread::sleep(wait);
        }
        if i % (args.rate / 100).max(1) == 0 {
            let value = format!(r#"{{"id":"probe{probe}","customer":"probe-{probe}","amount":1}}"#);
            sent_at.push(Instant::now());
            send(&producer, &format!("probe{probe}"), &value);
            probe += 1;
        } else {
            let id = format!("t{}", i % 50_000);
            produced_customers.insert(i % 1000);
            let value = format!(r#"{{"id":"{id}","customer":"c{}","amount":{}}}"#, i % 1000, i % 97 + 1);
            send(&producer, &id, &value);
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30))?;
    let steady_cpu = (cpu_ticks(pid) - cpu_before) as f64 / 100.0 / start.elapsed().as_secs_f64();
    let expected = probe * args.subscribers as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while probes_seen.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut latencies: Vec<f64> = timed
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(n, at)| sent_at.get(*n as usize).map(|sent| (*at - *sent).as_secs_f64() * 1000.0))
        .collect();
    latencies.sort_by(f64::total_cmp);
    let customers = get(&http, "/v1/status").map_or(0, |s| s["customers"].as_u64().unwrap_or(0));
    println!(
        "subscribers {}: steady {} msg/s for {} s; probes {probe}, seen by the subscribers {} of {expected}; \
         customers in the view {customers} (expected {})",
        args.subscribers,
        args.rate,
        args.seconds,
        probes_seen.load(Ordering::Relaxed),
        probe + produced_customers.len() as u64 + 3
    );
    println!(
        "  produce -> SSE event: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} timed); lambda run CPU {:.0}% of a core",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        latencies.len(),
        steady_cpu * 100.0
    );

    let mut behind = BEHIND.lock().unwrap().clone();
    behind.sort_by(f64::total_cmp);
    println!(
        "  event time -> arrival: p50 {:.1} ms, p99 {:.1} ms ({} events)",
        percentile(&behind, 0.5),
        percentile(&behind, 0.99),
        behind.len()
    );

    // Burst phase: as fast as the producer goes; until the views reflect it.
    let cpu_before = cpu_ticks(pid);
    let start = Instant::now();
    for i in 0..args.burst {
        let id = format!("b{}", i % 100_000);
        let value = format!(r#"{{"id":"{id}","customer":"c{}","amount":{}}}"#, i % 1000, i % 89 + 1);
        send(&producer, &id, &value);
        if i % 1000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(60))?;
    let ends: Vec<(String, i64)> = (0..12)
        .map(|p| {
            let (_, high) = producer.client().fetch_watermarks(TOPIC, p, Duration::from_secs(10)).unwrap();
            (format!("{TOPIC}/{p}"), high)
        })
        .collect();
    loop {
        let status = get(&http, "/v1/top?k=1").unwrap_or_default();
        if ends.iter().all(|(p, o)| status["as_of"]["offsets"][p].as_i64() >= Some(*o)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let seconds = start.elapsed().as_secs_f64();
    let burst_cpu = (cpu_ticks(pid) - cpu_before) as f64 / 100.0;
    println!(
        "  burst of {} messages: in the views after {seconds:.2} s = {:.0} msg/s; lambda run CPU {burst_cpu:.2} s",
        args.burst,
        args.burst as f64 / seconds
    );
    drop(run);
    Ok(())
}
