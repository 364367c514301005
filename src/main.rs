//! The `lambda` binary: parses the command line and hands over to the library.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use atelier_lambda::cli::{self, BrokerArgs, Command, ProduceArgs, VerifyArgs};
use atelier_lambda::config::Settings;
use atelier_lambda::produce::{produce, Pace};
use atelier_lambda::{batch, broker, demo, gen, run, verify};

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
    let (command, settings) = match cli::parse() {
        Ok(parsed) => parsed,
        Err(error) => return fail(&error.into()),
    };
    let settings = settings.unwrap_or_default();
    let result = match command {
        Command::Batch(_) => batch::command(&settings),
        Command::Run(args) => interrupted().and_then(|stop| {
            let prompt = args.repl || std::io::IsTerminal::is_terminal(&std::io::stdin());
            if settings.dataflow.processes > 1 {
                run::session::stop_when_a_peer_dies(settings.dataflow.process);
            }
            run::session::run(&settings, stop, prompt)
        }),
        Command::Demo(args) if args.serve => interrupted().and_then(|stop| demo::demo_and_serve(&settings, &stop)),
        Command::Demo(_) => demo::demo(&settings).and_then(|text| print_or_fail(&text)),
        Command::Broker(args) => run_broker(&args),
        Command::Produce(args) => run_produce(&args, &settings),
        Command::Gen(args) => gen::command(&args),
        Command::Verify(args) => return run_verify(&args, &settings),
        Command::Nexmark(args) => return run_nexmark(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", describe(error));
    ExitCode::FAILURE
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

/// `lambda nexmark`: one line of figures; exit 1 when the view differs from the
/// recomputation, 2 when it cannot run.
fn run_nexmark(args: &cli::NexmarkArgs) -> ExitCode {
    use atelier_lambda::nexmark::bench::{self, Bench};
    use atelier_lambda::nexmark::generator::Options;
    let options = Options {
        events: args.events,
        corrections: args.corrections,
        deletes: args.deletes,
        seed: args.seed,
        ..Options::default()
    };
    if let Some(connector) = &args.print_sql {
        return match bench::statements(&args.query, connector, &options) {
            Ok(statements) => {
                print_or_fail(&(statements.join("\n") + "\n")).map_or_else(|e| fail(&e), |()| ExitCode::SUCCESS)
            }
            Err(error) => fail(&error),
        };
    }
    let bench = Bench { query: args.query.clone(), options, workers: args.workers, verify: !args.no_verify };
    match bench::run(&bench) {
        Err(error) => {
            eprintln!("error: {}", describe(&error));
            ExitCode::from(2)
        }
        Ok(measured) => {
            println!("{}", measured.line(&bench));
            if measured.differences.is_some_and(|d| d > 0) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

/// `lambda verify`: exit 0 when equal, 1 on differences, 2 when it cannot verify.
fn run_verify(args: &VerifyArgs, settings: &Settings) -> ExitCode {
    let live = args.live.clone().unwrap_or_else(|| settings.serve.http.clone());
    let verified = verify::fetch_live(&live, &settings.kafka.topic, args.top).and_then(|reading| {
        eprintln!("verifying the views at logical time {} (offsets {:?}) from {live}", reading.time, reading.offsets);
        verify::verify(settings, &reading, args.top)
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
        "in memory only: each partition keeps its newest 5 MiB (librdkafka's mock cluster cannot keep \
         more; use more partitions for larger loads), and all is lost at stop; Ctrl-C to stop"
    );
    let _ = stdout.flush();
    while !interrupted.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn run_produce(args: &ProduceArgs, settings: &Settings) -> anyhow::Result<()> {
    let interrupted = interrupted()?;
    let stop = || interrupted.load(Ordering::SeqCst);
    let (brokers, topic) = (&settings.kafka.brokers, &settings.kafka.topic);
    let source = args.source(cli::StdinKind::of_this_process());
    let sent = match source {
        cli::ProduceSource::Lines(path) => {
            let pace = args.rate.map_or(Pace::Flat, Pace::PerSecond);
            let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
                if args.input.is_none() {
                    eprintln!(
                        "reading JSON lines from standard input (a pipe or a file); \
                         --generate sends generated load instead"
                    );
                }
                Box::new(std::io::stdin().lock())
            } else {
                let file = std::fs::File::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
                Box::new(std::io::BufReader::new(file))
            };
            let lines = reader.lines().map_while(Result::ok).filter(|l| !l.trim().is_empty());
            produce(brokers, topic, lines, pace, stop)?
        }
        cli::ProduceSource::Generated => {
            let rate = args.rate.unwrap_or(1000.0);
            let defaults = gen::GenOptions::default();
            let options = gen::GenOptions {
                rows: (rate * args.duration.unwrap_or(10.0)).ceil() as u64,
                customers: args.customers.unwrap_or(10_000),
                corrections: args.corrections.unwrap_or(0.0),
                seed: args.seed.unwrap_or(2),
                id_prefix: args.id_prefix.clone().unwrap_or_else(|| "s".to_owned()),
                ids: args.ids,
                ..defaults
            };
            eprintln!(
                "sending {} generated messages ({} customers) at {rate}/s; give --input FILE or pipe JSON lines to send yours",
                options.rows, options.customers
            );
            produce(brokers, topic, gen::Generator::new(&options), Pace::PerSecond(rate), stop)?
        }
        cli::ProduceSource::Nexmark(events) => return produce_nexmark(args, brokers, events, &stop),
    };
    eprintln!("sent {} messages to {topic} at {brokers}; to read them back at once:", sent.sent);
    if !sent.next_offsets.is_empty() {
        // Ready to paste: `?min_offsets=...` over HTTP, `SET min_offsets = '...'` over SQL.
        println!("min_offsets={}", atelier_lambda::serve::bound::MinOffsets(sent.next_offsets).display(topic));
    }
    Ok(())
}

/// `lambda produce --nexmark EVENTS`: each stream to its topic, the three at once.
fn produce_nexmark(
    args: &ProduceArgs,
    brokers: &str,
    events: u64,
    stop: &(dyn Fn() -> bool + Sync),
) -> anyhow::Result<()> {
    use atelier_lambda::nexmark::generator::Options;
    let options = Options {
        events,
        seed: args.seed.unwrap_or(1),
        corrections: args.corrections.unwrap_or(0.0),
        deletes: args.deletes.unwrap_or(0.0),
        ..Options::default()
    };
    eprintln!("sending {events} Nexmark events to the topics person, auction and bid at {brokers}");
    let mut bounds = Vec::new();
    for (stream, sent) in atelier_lambda::nexmark::send::to_topics(brokers, options, stop)? {
        eprintln!("sent {} messages to {}", sent.sent, stream.name());
        if !sent.next_offsets.is_empty() {
            bounds.push(atelier_lambda::serve::bound::MinOffsets(sent.next_offsets).display(stream.name()));
        }
    }
    if !bounds.is_empty() {
        println!("min_offsets={}", bounds.join(","));
    }
    Ok(())
}
