//! The `lambda` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use atelier_lambda::cli::{BatchArgs, BrokerArgs, Cli, Command, DemoArgs, GenArgs, ProduceArgs, RunArgs, VerifyArgs};
use atelier_lambda::produce::{produce, Pace};
use atelier_lambda::{batch, broker, demo, gen, output, run};
use clap::Parser;

/// Parsing and the dataflow allocate many small strings; mimalloc does that much faster.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mimalloc.h` (between `eager_commit_delay` = 14 and
/// `use_numa_nodes` = 16, which libmimalloc-sys names); the crate versions are pinned.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// By default mimalloc hands freed pages back to the OS after 10 ms, and the dataflow's
/// exchange buffers then fault them back in: 205k page faults for a 10M-row load, against
/// 11k with a one-second delay (and 13% less CPU).
fn keep_freed_pages_a_while() {
    // SAFETY: sets a plain integer option; mimalloc reads it when it next purges.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000) };
}

/// What is logged unless `RUST_LOG` says otherwise. librdkafka's own error callback repeats
/// every connection failure many times a second; our Kafka source logs each new error once,
/// and when reading resumes (`RUST_LOG=rdkafka=info` shows librdkafka's lines again).
const DEFAULT_LOG: &str = "warn,atelier_lambda=info,lambda=info,rdkafka=off";

fn main() -> ExitCode {
    keep_freed_pages_a_while();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Batch(args) => run_batch(&args),
        Command::Run(args) => run_pipeline(&args),
        Command::Demo(args) => run_demo(&args),
        Command::Broker(args) => run_broker(&args),
        Command::Produce(args) => run_produce(&args),
        Command::Gen(args) => run_gen(&args),
        Command::Verify(args) => return run_verify(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once: our errors often already quote
/// their cause (`cannot read config file x: No such file`), which `{:#}` would repeat.
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

fn run_batch(args: &BatchArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let view_filter = settings.view_filter()?;
    let Some(outcome) = batch::run(&settings)? else {
        eprintln!(
            "process {} loaded its share; process 0 writes the views of the whole cluster",
            settings.dataflow.process
        );
        return Ok(());
    };
    print_or_fail(&output::customers_table(&outcome.reading, view_filter.as_ref(), settings.batch.show))?;
    let written = output::write_views(&settings.batch.out, &outcome.reading, view_filter.as_ref())?;
    eprintln!(
        "batch view at time 0: {} records, {} customers, {} refused ({}) in {:.3} s; {} files in {}",
        outcome.counts.records,
        outcome.reading.customer_count,
        outcome.counts.refused,
        settings.dead_letter_path().display(),
        outcome.elapsed.as_secs_f64(),
        written.len(),
        settings.batch.out.display(),
    );
    Ok(())
}

/// Prints to standard output; a closed pipe is an error to report, not a panic.
fn print_or_fail(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).context("cannot write to standard output")
}

/// A flag set by Ctrl-C or SIGTERM.
fn interrupted() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = Arc::clone(&flag);
    ctrlc::set_handler(move || set.store(true, Ordering::SeqCst)).context("cannot install the Ctrl-C handler")?;
    Ok(flag)
}

/// When a process of the cluster dies, timely's threads that talk to it panic, and this
/// process's workers cannot go on (timely has no in-flight recovery). Say which process is
/// gone and stop, instead of leaving the rest of the cluster waiting forever.
fn stop_when_a_peer_dies(this: usize) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let name = std::thread::current().name().unwrap_or("").to_owned();
        let peer = name.strip_prefix("timely:recv-").or_else(|| name.strip_prefix("timely:send-"));
        if let Some(peer) = peer {
            let what = info.payload().downcast_ref::<String>().map_or("connection lost", String::as_str);
            tracing::error!(
                "process {peer} of the cluster is gone ({}); process {this} stops too: restart every process",
                what.lines().last().unwrap_or(what)
            );
            std::process::exit(3);
        }
        default(info);
    }));
}

fn run_pipeline(args: &RunArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    if settings.dataflow.processes > 1 {
        stop_when_a_peer_dies(settings.dataflow.process);
    }
    let interrupted = interrupted()?;
    let running = run::start(&settings)?;
    // Reads are coordinated by worker 0, so process 0 serves for the whole cluster.
    let serves = settings.dataflow.process == 0;
    let _http = if serves { serve_http(&settings, &running)? } else { None };
    if !serves {
        tracing::info!(
            process = settings.dataflow.process,
            processes = settings.dataflow.processes,
            "running; process 0 serves the views of the whole cluster"
        );
    }
    tracing::info!("running; Ctrl-C to stop");
    let view_filter = settings.view_filter()?;
    let views_every = Duration::from_millis(settings.serve.views_every_ms);
    let views_out = settings.serve.views_out.clone();
    let write_views = |reading: &atelier_lambda::serve::query::Reading| -> anyhow::Result<()> {
        if let Some(dir) = &views_out {
            output::write_views(dir, reading, view_filter.as_ref())?;
            output::write_as_of(dir, reading, &settings.kafka.topic)?;
        }
        Ok(())
    };
    if serves && (args.repl || std::io::IsTerminal::is_terminal(&std::io::stdin())) {
        // The prompt runs here; the views are still written, by a thread.
        let (serving, stopped) = (running.serving.clone(), running.stop_flag());
        let done = || interrupted.load(Ordering::SeqCst) || stopped.load(Ordering::SeqCst);
        std::thread::scope(|scope| {
            if views_out.is_some() {
                scope.spawn(|| {
                    while !done() {
                        if let Some(r) = serving.read(settings.batch.top, Duration::from_secs(5)) {
                            if let Err(error) = write_views(&r) {
                                tracing::error!(%error, "cannot write the views");
                            }
                        }
                        std::thread::sleep(views_every);
                    }
                });
            }
            atelier_lambda::serve::repl::prompt(&serving, &settings, done);
            interrupted.store(true, Ordering::SeqCst);
        });
    }
    let mut last_report = Instant::now();
    let mut last_write = Instant::now() - views_every;
    while !interrupted.load(Ordering::SeqCst) && !running.stopping() {
        std::thread::sleep(Duration::from_millis(10));
        if serves && views_out.is_some() && last_write.elapsed() >= views_every {
            last_write = Instant::now();
            if let Some(r) = running.serving.read(settings.batch.top, Duration::from_secs(5)) {
                write_views(&r)?;
            }
        }
        if serves && last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            if let Some(r) = running.serving.read(settings.batch.top, Duration::from_secs(5)) {
                tracing::info!(
                    time = r.time,
                    customers = r.customer_count,
                    transactions = r.overall.count,
                    total = %atelier_lambda::amount::format_cents(r.overall.cents),
                    offsets = ?r.offsets,
                    "views"
                );
            }
        }
    }
    tracing::info!("stopping");
    if serves {
        if let Some(r) = running.serving.read(settings.batch.top, Duration::from_secs(5)) {
            write_views(&r)?;
        }
    }
    running.stop();
    let reports = running.join()?;
    let messages: u64 = reports.iter().map(|r| r.messages).sum();
    let offsets: std::collections::BTreeMap<i32, i64> = reports.iter().flat_map(|r| r.offsets.clone()).collect();
    tracing::info!(messages, ?offsets, dead_letters = %settings.run_dead_letter_path().display(), "stopped cleanly");
    Ok(())
}

/// `lambda verify`: exit 0 when equal, 1 on differences, 2 when it cannot verify.
fn run_verify(args: &VerifyArgs) -> ExitCode {
    let verified = args.settings().map_err(anyhow::Error::from).and_then(|(settings, live)| {
        let reading = atelier_lambda::verify::fetch_live(&live, &settings.kafka.topic, args.top)?;
        eprintln!("verifying the views at logical time {} (offsets {:?}) from {live}", reading.time, reading.offsets);
        let verification = atelier_lambda::verify::verify(&settings, &reading, args.top)?;
        Ok(verification)
    });
    match verified {
        Err(error) => {
            eprintln!("error: cannot verify: {}", describe(&error));
            ExitCode::from(2)
        }
        Ok(v) => {
            print!("{}", v.report());
            if v.differences.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Starts the HTTP API on its own small runtime, unless `--http off`.
fn serve_http(
    settings: &atelier_lambda::config::Settings,
    running: &run::Running,
) -> anyhow::Result<Option<tokio::runtime::Runtime>> {
    let address = settings.serve.http.trim();
    if address.is_empty() || address == "off" {
        return Ok(None);
    }
    let address: std::net::SocketAddr =
        address.parse().with_context(|| format!("--http {address:?} is not an address like 127.0.0.1:8080"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("http")
        .enable_all()
        .build()
        .context("cannot start the HTTP runtime")?;
    let listener = runtime
        .block_on(atelier_lambda::serve::http::bind(address))
        .with_context(|| format!("cannot serve HTTP on {address} (in use? choose another with --http)"))?;
    let bound = listener.local_addr()?;
    let router = atelier_lambda::serve::http::router(running.serving.clone(), settings.kafka.topic.clone());
    runtime.spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "the HTTP server stopped");
        }
    });
    tracing::info!(address = %bound, "serving HTTP");
    Ok(Some(runtime))
}

fn run_demo(args: &DemoArgs) -> anyhow::Result<()> {
    let settings = args.common.settings()?;
    print_or_fail(&demo::demo(&settings)?)?;
    Ok(())
}

fn run_broker(args: &BrokerArgs) -> anyhow::Result<()> {
    let interrupted = interrupted()?;
    let broker = broker::Broker::start(args.port, &args.topic, args.partitions)?;
    for topic in &args.also {
        broker.create_topic(topic, args.partitions)?;
    }
    // Whoever started us may stop reading our output; that must not stop the broker.
    let mut stdout = std::io::stdout();
    let _ = writeln!(
        stdout,
        "Kafka-protocol broker listening on {} with topic {} ({} partitions)",
        broker.address(),
        args.topic,
        args.partitions
    );
    let _ = writeln!(
        stdout,
        "in memory only: each partition keeps its newest 5 MiB (librdkafka's mock cluster \
         cannot keep more; use more partitions for larger loads), and all is lost at stop; Ctrl-C to stop"
    );
    let _ = stdout.flush();
    while !interrupted.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn run_produce(args: &ProduceArgs) -> anyhow::Result<()> {
    let mut settings = atelier_lambda::config::Settings::default();
    args.kafka.apply(&mut settings);
    let interrupted = interrupted()?;
    let stop = || interrupted.load(Ordering::SeqCst);
    let (brokers, topic) = (&settings.kafka.brokers, &settings.kafka.topic);
    let sent = match &args.input {
        Some(path) => {
            let pace = args.rate.map_or(Pace::Flat, Pace::PerSecond);
            let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(std::io::BufReader::new(
                    std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?,
                ))
            };
            let lines = reader.lines().map_while(Result::ok).filter(|l| !l.trim().is_empty());
            produce(brokers, topic, lines, pace, stop)?
        }
        None => {
            let rate = args.rate.unwrap_or(1000.0);
            let options = gen::GenOptions {
                rows: (rate * args.duration).ceil() as u64,
                customers: args.customers,
                corrections: args.corrections,
                seed: args.seed,
                id_prefix: args.id_prefix.clone(),
                ..gen::GenOptions::default()
            };
            produce(brokers, topic, gen::Generator::new(&options), Pace::PerSecond(rate), stop)?
        }
    };
    eprintln!("sent {sent} messages to {topic} at {brokers}");
    Ok(())
}

fn run_gen(args: &GenArgs) -> anyhow::Result<()> {
    let options = gen::GenOptions {
        rows: args.rows,
        customers: args.customers,
        skew: args.skew,
        corrections: args.corrections,
        deletes: args.deletes,
        bad: args.bad,
        seed: args.seed,
        id_prefix: args.id_prefix.clone(),
        csv: args.out.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")),
    };
    if args.out.as_os_str() == "-" {
        gen::generate(&options, &mut std::io::stdout().lock())?;
    } else {
        let mut file = std::fs::File::create(&args.out)?;
        gen::generate(&options, &mut file)?;
    }
    Ok(())
}
