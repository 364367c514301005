//! Speed-layer benchmarks, in one process with the in-process broker (which shares the
//! machine's cores with the pipeline: say so when quoting these figures).
//!
//! ```text
//! cargo run --release --example speed_bench -- ingest --messages 2000000
//! cargo run --release --example speed_bench -- freshness --rate 10000 --seconds 10
//! cargo run --release --example speed_bench -- correction --history h10m.jsonl --samples 50
//! cargo run --release --example speed_bench -- lookup --customers 100000 --rate 10000 --seconds 20
//! ```
//!
//! - `ingest`: the topic is filled first; then the pipeline reads it from the start, and the
//!   rate is messages / time until the views reflect the last offset.
//! - `freshness`: messages are produced at a steady rate; for each one, the time from handing
//!   it to the producer to the first read in which the views reflect its offset (reads of
//!   the offsets view, about every 0.5 ms).
//! - `correction`: after the history is loaded, one correction of an existing id at a time;
//!   the time until the views reflect it.
//! - `lookup`: the serving layer in-process: point lookups of random customers through
//!   [`Serving::read`] (the path HTTP and the prompt use, without HTTP), by `clients`
//!   threads one after the other, while messages are produced at a steady rate; latency of
//!   each lookup and lookups per second.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use atelier_lambda::broker::Broker;
use atelier_lambda::config::Settings;
use atelier_lambda::gen::{GenOptions, Generator};
use atelier_lambda::produce::{produce, Pace};
use atelier_lambda::reading::ReadScope as Scope;
use atelier_lambda::run::{self, Running};
use atelier_lambda::serve::Serving;
use clap::{Parser, Subcommand};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const TOPIC: &str = "real-time-orders";

/// The allocator `lambda` itself uses (src/main.rs): without it this benchmark measured the
/// system allocator (~10% of its samples in glibc's malloc and free).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    what: What,
    /// Worker threads.
    #[arg(long, default_value_t = 2, global = true)]
    workers: usize,
    /// Partitions of the topic. The in-process broker keeps at most 5 MiB per partition
    /// (older messages are dropped), so a pre-filled topic needs enough of them.
    #[arg(long, default_value_t = 3, global = true)]
    partitions: i32,
    /// The benchmark producer's `linger.ms`. With 0, each message is a message set of its
    /// own, and the in-process broker searches a partition's sets one by one on every fetch.
    #[arg(long, default_value_t = 0, global = true)]
    linger_ms: u64,
    /// An outside broker to use instead of the in-process one (e.g. tansu, started by
    /// hand), whose topic `real-time-orders` has `--partitions` partitions and is empty.
    #[arg(long, global = true)]
    brokers: Option<String>,
}

#[derive(Subcommand)]
enum What {
    Ingest {
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
    },
    Freshness {
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// A history to load first (default: none).
        #[arg(long)]
        history: Option<PathBuf>,
        /// Write a snapshot this often (into a fresh temporary state directory) while measuring.
        #[arg(long)]
        snapshot_every_ms: Option<u64>,
    },
    Correction {
        #[arg(long)]
        history: PathBuf,
        #[arg(long, default_value_t = 50)]
        samples: usize,
    },
    Lookup {
        /// Distinct customers in the history (and in the produced messages).
        #[arg(long, default_value_t = 100_000)]
        customers: u64,
        /// History rows (generated).
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Messages produced per second while looking up.
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// Threads looking up, each one lookup at a time.
        #[arg(long, default_value_t = 1)]
        clients: usize,
    },
}

/// Looks up random customers until `until`; returns each lookup's latency in ms and how
/// many customers were found.
fn look_up(serving: &Serving, customers: u64, seed: u64, until: Instant) -> (Vec<f64>, u64) {
    let mut state = seed;
    let (mut latencies, mut found) = (Vec::new(), 0);
    while Instant::now() < until {
        // SplitMix64 step: a cheap, well-spread random customer.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let name = format!("customer-{:06}", (z ^ (z >> 31)) % customers);
        let at = Instant::now();
        let reading = serving.read(Scope::Customer(name), Duration::from_secs(10)).expect("an answer");
        latencies.push(at.elapsed().as_secs_f64() * 1000.0);
        found += reading.customers.len() as u64;
    }
    (latencies, found)
}

fn start(brokers: &str, history: PathBuf, workers: usize) -> Running {
    start_with(brokers, history, workers, |_| {})
}

/// The same, with `more` settings.
fn start_with(brokers: &str, history: PathBuf, workers: usize, more: impl FnOnce(&mut Settings)) -> Running {
    let mut settings = Settings::default();
    settings.kafka.brokers = brokers.to_owned();
    settings.input.files = vec![history];
    settings.input.dead_letters = std::env::temp_dir().join("speed-bench-dead.jsonl");
    settings.dataflow.workers = workers;
    more(&mut settings);
    run::start(&settings).expect("the pipeline starts")
}

fn empty_history() -> PathBuf {
    let path = std::env::temp_dir().join("speed-bench-empty.jsonl");
    std::fs::write(&path, "").unwrap();
    path
}

fn offsets(running: &Running) -> BTreeMap<i32, i64> {
    let reading = running.serving.read(Scope::Offsets, Duration::from_secs(30)).expect("the pipeline answers");
    reading.offsets.into_iter().collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{name}: n={} p50={:.2} ms p90={:.2} ms p99={:.2} ms max={:.2} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        percentile(&ms, 0.99),
        ms[ms.len() - 1]
    );
}

fn producer(brokers: &str, linger_ms: u64) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", linger_ms.to_string())
        .create()
        .unwrap()
}

/// Sends, waiting for room when the producer's queue is full.
fn send(producer: &BaseProducer, mut record: BaseRecord<'_, str, str>) {
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(1));
            }
            Err((error, _)) => panic!("cannot send: {error}"),
        }
    }
}

fn main() {
    let args = Args::parse();
    // The in-process broker, unless an outside one is given (kept alive until the end).
    let own = args.brokers.is_none().then(|| Broker::start(0, TOPIC, args.partitions).unwrap());
    let address = args.brokers.clone().unwrap_or_else(|| own.as_ref().expect("started").address());
    let partitions = args.partitions;
    match args.what {
        What::Ingest { messages } => {
            let options =
                GenOptions { rows: messages, corrections: 0.1, id_prefix: "s".into(), ..GenOptions::default() };
            let filled = Instant::now();
            produce(&address, TOPIC, Generator::new(&options), Pace::Flat, || false).unwrap();
            println!("topic filled with {messages} messages in {:.2} s", filled.elapsed().as_secs_f64());
            // From the pipeline's start: it begins reading the topic as soon as its (empty)
            // history is loaded.
            let started = Instant::now();
            let running = start(&address, empty_history(), args.workers);
            let mut last = 0;
            loop {
                let read: i64 = offsets(&running).values().sum();
                if read as u64 >= messages {
                    break;
                }
                if read != last {
                    last = read;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let secs = started.elapsed().as_secs_f64();
            let full = running.engine.read_all_blocking(10).unwrap();
            let admitted = full.overall.count + full.dead_letters.iter().map(|(_, n)| n).sum::<i64>();
            println!("views at that time: {} live transactions, {admitted} including dead letters", full.overall.count);
            println!(
                "ingest: {messages} messages in {secs:.2} s = {:.0} messages/s ({} workers)",
                messages as f64 / secs,
                args.workers
            );
            running.stop();
            running.join().unwrap();
        }
        What::Freshness { rate, seconds, history, snapshot_every_ms } => {
            let state = std::env::temp_dir().join(format!("speed-bench-state-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&state);
            let loading = Instant::now();
            let running = start_with(&address, history.unwrap_or_else(empty_history), args.workers, |s| {
                if let Some(every) = snapshot_every_ms {
                    s.state.dir = Some(state.clone());
                    s.state.every_ms = every;
                }
            });
            offsets(&running);
            println!("loaded in {:.2} s", loading.elapsed().as_secs_f64());
            let producer = producer(&address, args.linger_ms);
            // One message per partition first, seen by the views before the clock starts: an
            // idempotent producer's first messages wait ~500 ms for its producer id and the
            // topic's metadata, which is not the pipeline's latency (the first message after
            // a load is measured by `correction`).
            for p in 0..partitions {
                let warm = format!(r#"{{"id":"warm-{p}","customer":"warm","amount":1}}"#);
                send(&producer, BaseRecord::to(TOPIC).partition(p).payload(&warm));
            }
            while offsets(&running).len() < partitions as usize || offsets(&running).values().any(|o| *o < 1) {
                producer.poll(Duration::from_millis(1));
            }
            let total = (rate * seconds) as u64;
            let mut lines = Generator::new(&GenOptions { rows: total, id_prefix: "f".into(), ..GenOptions::default() });
            // Sent but not yet seen, per partition, in offset order.
            let mut sent: BTreeMap<i32, VecDeque<(i64, Instant)>> =
                (0..partitions).map(|p| (p, VecDeque::new())).collect();
            let mut next_offset = vec![1i64; partitions as usize];
            let mut latencies = Vec::new();
            let started = Instant::now();
            let mut produced = 0u64;
            while produced < total || sent.values().any(|q| !q.is_empty()) {
                let due = ((started.elapsed().as_secs_f64() * rate) as u64).min(total);
                while produced < due {
                    let line = lines.next().expect("enough lines");
                    let partition = (produced % partitions as u64) as i32;
                    let wanted = Instant::now();
                    send(&producer, BaseRecord::to(TOPIC).partition(partition).payload(&line));
                    sent.get_mut(&partition).unwrap().push_back((next_offset[partition as usize], wanted));
                    next_offset[partition as usize] += 1;
                    produced += 1;
                }
                producer.poll(Duration::ZERO);
                let now_offsets = offsets(&running);
                let now = Instant::now();
                for (p, queue) in sent.iter_mut() {
                    let next = now_offsets.get(p).copied().unwrap_or(0);
                    while queue.front().is_some_and(|(o, _)| *o < next) {
                        let (_, at) = queue.pop_front().unwrap();
                        latencies.push(now.duration_since(at).as_secs_f64() * 1000.0);
                    }
                }
                std::thread::sleep(Duration::from_micros(500));
                assert!(started.elapsed().as_secs_f64() < seconds + 60.0, "messages never became readable");
            }
            let achieved = total as f64 / started.elapsed().as_secs_f64();
            report(
                &format!("freshness at {rate:.0}/s (achieved {achieved:.0}/s, {} workers)", args.workers),
                latencies,
            );
            if snapshot_every_ms.is_some() {
                let written = std::fs::read_dir(&state).map_or(0, |d| d.count());
                println!("snapshot directory entries at the end: {written}");
            }
            running.stop();
            running.join().unwrap();
            let _ = std::fs::remove_dir_all(&state);
        }
        What::Lookup { customers, rows, rate, seconds, clients } => {
            let history = std::env::temp_dir().join(format!("speed-bench-{rows}-{customers}.jsonl"));
            let options = GenOptions { rows, customers, corrections: 0.1, ..GenOptions::default() };
            let text: String = Generator::new(&options).map(|line| line + "\n").collect();
            std::fs::write(&history, text).unwrap();
            let running = start(&address, history, args.workers);
            let loading = Instant::now();
            offsets(&running);
            println!(
                "history of {rows} rows, {customers} customers loaded in {:.2} s",
                loading.elapsed().as_secs_f64()
            );
            let stop_producing = std::sync::atomic::AtomicBool::new(false);
            let stream =
                GenOptions { rows: u64::MAX, customers, corrections: 0.1, id_prefix: "s".into(), seed: 9, ..options };
            let (latencies, found, produced, secs) = std::thread::scope(|scope| {
                let producing = scope.spawn(|| {
                    let stop = || stop_producing.load(std::sync::atomic::Ordering::SeqCst);
                    produce(&address, TOPIC, Generator::new(&stream), Pace::PerSecond(rate), stop).unwrap().sent
                });
                std::thread::sleep(Duration::from_secs(1)); // the stream is flowing
                let started = Instant::now();
                let until = started + Duration::from_secs_f64(seconds);
                let lookups: Vec<_> = (0..clients)
                    .map(|c| {
                        let serving = running.serving.clone();
                        scope.spawn(move || look_up(&serving, customers, c as u64 + 1, until))
                    })
                    .collect();
                let (mut latencies, mut found) = (Vec::new(), 0);
                for lookup in lookups {
                    let (l, f) = lookup.join().unwrap();
                    latencies.extend(l);
                    found += f;
                }
                let secs = started.elapsed().as_secs_f64();
                stop_producing.store(true, std::sync::atomic::Ordering::SeqCst);
                (latencies, found, producing.join().unwrap(), secs)
            });
            let full = running.serving.read(Scope::Totals, Duration::from_secs(30)).unwrap();
            println!(
                "{} lookups in {secs:.1} s = {:.0} lookups/s, {found} found; {produced} messages produced \
                 ({:.0}/s), {} live transactions at the end",
                latencies.len(),
                latencies.len() as f64 / secs,
                produced as f64 / (secs + 1.0),
                full.overall.count
            );
            report(&format!("in-process lookup ({clients} clients, {} workers)", args.workers), latencies);
            running.stop();
            running.join().unwrap();
        }
        What::Correction { history, samples } => {
            // Made and connected before the load: an idempotent producer's first message
            // otherwise waits for its producer id and the topic's metadata (~500 ms with the
            // mock broker), which is not the pipeline's latency.
            let producer = producer(&address, args.linger_ms);
            Producer::client(&producer)
                .fetch_metadata(Some(TOPIC), Duration::from_secs(10))
                .expect("the topic metadata");
            let loading = Instant::now();
            let running = start(&address, history.clone(), args.workers);
            offsets(&running);
            println!("history {} loaded in {:.2} s", history.display(), loading.elapsed().as_secs_f64());
            let mut latencies = Vec::new();
            for i in 0..samples {
                let line =
                    format!(r#"{{"id":"t{}","customer":"customer-000001","amount":{}.25}}"#, i * 7919 % 900, i + 1);
                let before: i64 = offsets(&running).values().sum();
                let at = Instant::now();
                send(&producer, BaseRecord::to(TOPIC).partition(i as i32 % partitions).payload(&line));
                producer.poll(Duration::ZERO);
                while offsets(&running).values().sum::<i64>() <= before {
                    producer.poll(Duration::ZERO);
                    std::thread::sleep(Duration::from_micros(200));
                }
                latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                std::thread::sleep(Duration::from_millis(20));
            }
            println!("first correction after the load: {:.2} ms", latencies[0]);
            report(&format!("correction on {} ({} workers)", history.display(), args.workers), latencies);
            running.stop();
            running.join().unwrap();
        }
    }
}
