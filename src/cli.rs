//! The command line of the `lambda` binary.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Settings;

/// A Lambda architecture (batch, speed, serving) as one differential dataflow.
#[derive(Debug, Parser)]
#[command(name = "lambda", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Batch layer only: load the history, print the customer table, write every view, exit.
    Batch(BatchArgs),
    /// The whole pipeline: history, then Kafka, until interrupted (Ctrl-C or SIGTERM).
    Run(RunArgs),
    /// Zero set-up: an in-process broker, the shipped history, the workshop's three messages.
    Demo(DemoArgs),
    /// An in-process Kafka-protocol broker alone, for working without Docker.
    Broker(BrokerArgs),
    /// Send JSON lines to the topic: from a file, standard input, or generated at a rate.
    Produce(ProduceArgs),
    /// Write a deterministic synthetic history (JSON lines, or CSV for a `.csv` output).
    Gen(GenArgs),
    /// Recompute every view from scratch over the inputs a running `lambda run` reflects
    /// (the same history files, the topic up to its offsets), compare, exit 1 on differences.
    Verify(VerifyArgs),
}

/// Options of `lambda verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Shared options: give the same history files, filters and config as the live run.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Kafka.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The live run's HTTP API. [default: the `--http` address, 127.0.0.1:8080]
    #[arg(long, value_name = "URL")]
    pub live: Option<String>,
    /// Compare the `top` view over this many customers (default: all of them).
    #[arg(long, default_value_t = 10_000_000)]
    pub top: usize,
}

impl VerifyArgs {
    /// Settings for `lambda verify`, and the live run's address.
    pub fn settings(&self) -> Result<(Settings, String), crate::config::ConfigError> {
        let mut s = self.common.settings()?;
        self.kafka.apply(&mut s);
        let live = self.live.clone().unwrap_or_else(|| s.serve.http.clone());
        Ok((s, live))
    }
}

/// Where Kafka is.
#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Bootstrap servers. [default: localhost:9092]
    #[arg(long, value_name = "HOST:PORT,...")]
    pub brokers: Option<String>,
    /// The topic of real-time orders. [default: real-time-orders]
    #[arg(long)]
    pub topic: Option<String>,
}

/// Options of `lambda run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Kafka.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Consumer group that offsets are committed to (so Kafka tools show the lag).
    #[arg(long)]
    pub group: Option<String>,
    /// Also produce every dead letter to this topic.
    #[arg(long, value_name = "TOPIC")]
    pub dlq_topic: Option<String>,
    /// Write every view (as `lambda batch` does) and `as_of.json` to this directory,
    /// refreshed while running and once more at stop.
    #[arg(long, value_name = "DIR")]
    pub views_out: Option<PathBuf>,
    /// How often `--views-out` is refreshed, in milliseconds. [default: 1000]
    #[arg(long, value_name = "MS")]
    pub views_every_ms: Option<u64>,
    /// Serve the HTTP API on this address ("off" for none). [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Run the interactive prompt even when standard input is not a terminal (commands are
    /// then read line by line; the end of input quits).
    #[arg(long)]
    pub repl: bool,
    /// With --state-dir: write a snapshot this often, in milliseconds. [default: 60000]
    #[arg(long, value_name = "MS")]
    pub snapshot_every_ms: Option<u64>,
    /// With --state-dir, when snapshots exist but none can be used (corrupt, or the history
    /// files changed): stop with an error, or rebuild from history and topic. [default: fail]
    #[arg(long, value_name = "WHAT")]
    pub on_invalid_snapshot: Option<crate::config::OnInvalid>,
}

/// Options of `lambda demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Options of `lambda broker`.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Port on 127.0.0.1 (0: any free port, printed at start).
    #[arg(long, default_value_t = 9092)]
    pub port: u16,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// The topic to create.
    #[arg(long, default_value = "real-time-orders")]
    pub topic: String,
    /// More topics to create (e.g. a dead-letter topic), with the same partitions.
    #[arg(long = "also", value_name = "TOPIC")]
    pub also: Vec<String>,
}

/// Options of `lambda produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Kafka.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// JSON lines to send; "-" for standard input. Without it, generated load is sent.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Messages per second (default: as fast as possible for a file, 1000 when generating).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds of generated load.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Generated load: distinct customers.
    #[arg(long, default_value_t = 10_000)]
    pub customers: u64,
    /// Generated load: fraction of messages that correct an earlier id.
    #[arg(long, default_value_t = 0.0)]
    pub corrections: f64,
    /// Generated load: random seed.
    #[arg(long, default_value_t = 2)]
    pub seed: u64,
    /// Generated load: id prefix (different from the history's, so ids do not collide).
    #[arg(long, default_value = "s")]
    pub id_prefix: String,
}

/// Options shared by the commands that run the dataflow.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// A TOML settings file (see config/lambda.toml for every setting and its default).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// History files: JSON lines, a JSON array, or CSV. [default: datasets/transactions.json]
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Worker threads per process (0: one per core).
    #[arg(long, short = 'w')]
    pub workers: Option<usize>,
    /// Number of processes in a timely cluster.
    #[arg(long)]
    pub processes: Option<usize>,
    /// This process's index in the cluster, from 0.
    #[arg(long)]
    pub process: Option<usize>,
    /// A file with one host:port line per process.
    #[arg(long, value_name = "FILE")]
    pub hostfile: Option<PathBuf>,
    /// Stop at the first bad record, naming file and line, instead of dead-lettering it.
    #[arg(long)]
    pub strict: bool,
    /// Keep only transactions that pass, e.g. "amount >= 100".
    #[arg(long, value_name = "FILTER")]
    pub event_filter: Option<String>,
    /// Show only customers that pass, e.g. "total > 200".
    #[arg(long, value_name = "FILTER")]
    pub view_filter: Option<String>,
    /// The dead-letter file (JSON lines).
    #[arg(long, value_name = "FILE")]
    pub dead_letters: Option<PathBuf>,
    /// Records larger than this are refused as oversized.
    #[arg(long, value_name = "BYTES")]
    pub max_record_bytes: Option<usize>,
    /// Durable snapshots: `run` writes them here and resumes from the newest; `batch` writes
    /// the views of the newest.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Options of `lambda batch`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Output directory for the views. [default: output/batch_view]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Rows of the customer table to print.
    #[arg(long)]
    pub show: Option<usize>,
    /// How many customers the top view keeps.
    #[arg(long)]
    pub top: Option<usize>,
}

/// Options of `lambda gen`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// Number of rows.
    #[arg(long, default_value_t = 100_000)]
    pub rows: u64,
    /// Number of distinct customers.
    #[arg(long, default_value_t = 10_000)]
    pub customers: u64,
    /// Zipf exponent of the customer distribution (0 = uniform).
    #[arg(long, default_value_t = 1.1)]
    pub skew: f64,
    /// Fraction of rows that correct an earlier id.
    #[arg(long, default_value_t = 0.0)]
    pub corrections: f64,
    /// Fraction of corrections that are deletes.
    #[arg(long, default_value_t = 0.1)]
    pub deletes: f64,
    /// Fraction of rows malformed on purpose (dead letters).
    #[arg(long, default_value_t = 0.0)]
    pub bad: f64,
    /// Random seed: the same seed gives the same file.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Prefix of generated ids.
    #[arg(long, default_value = "t")]
    pub id_prefix: String,
    /// Output file; "-" for standard output.
    #[arg(long, default_value = "-")]
    pub out: PathBuf,
}

impl CommonArgs {
    /// Settings from `--config` (or the defaults) with these options applied over them.
    pub fn settings(&self) -> Result<Settings, crate::config::ConfigError> {
        let mut s = match &self.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        if !self.input.is_empty() {
            s.input.files = self.input.clone();
        }
        if let Some(w) = self.workers {
            s.dataflow.workers = w;
        }
        if let Some(p) = self.processes {
            s.dataflow.processes = p;
        }
        if let Some(p) = self.process {
            s.dataflow.process = p;
        }
        if self.hostfile.is_some() {
            s.dataflow.hostfile = self.hostfile.clone();
        }
        s.input.strict |= self.strict;
        if let Some(f) = &self.event_filter {
            s.filters.event = f.clone();
        }
        if let Some(f) = &self.view_filter {
            s.filters.view = f.clone();
        }
        if let Some(d) = &self.dead_letters {
            s.input.dead_letters = d.clone();
        }
        if let Some(m) = self.max_record_bytes {
            s.input.max_record_bytes = m;
        }
        if self.state_dir.is_some() {
            s.state.dir = self.state_dir.clone();
        }
        // Check filters and cluster options now, with a clear message, not inside a worker.
        s.check()?;
        s.event_filter()?;
        s.view_filter()?;
        s.timely_config()?;
        Ok(s)
    }
}

impl KafkaArgs {
    /// Applies these options to `settings`.
    pub fn apply(&self, settings: &mut Settings) {
        if let Some(b) = &self.brokers {
            settings.kafka.brokers = b.clone();
        }
        if let Some(t) = &self.topic {
            settings.kafka.topic = t.clone();
        }
    }
}

impl RunArgs {
    /// Settings for `lambda run`.
    pub fn settings(&self) -> Result<Settings, crate::config::ConfigError> {
        let mut s = self.common.settings()?;
        self.kafka.apply(&mut s);
        if let Some(g) = &self.group {
            s.kafka.group = g.clone();
        }
        if self.dlq_topic.is_some() {
            s.kafka.dlq_topic = self.dlq_topic.clone();
        }
        if let Some(http) = &self.http {
            s.serve.http = http.clone();
        }
        if self.views_out.is_some() {
            s.serve.views_out = self.views_out.clone();
        }
        if let Some(ms) = self.views_every_ms {
            s.serve.views_every_ms = ms;
        }
        if let Some(ms) = self.snapshot_every_ms {
            s.state.every_ms = ms;
        }
        if let Some(what) = self.on_invalid_snapshot {
            s.state.on_invalid = what;
        }
        s.check()?;
        Ok(s)
    }
}

impl BatchArgs {
    /// Settings for `lambda batch`.
    pub fn settings(&self) -> Result<Settings, crate::config::ConfigError> {
        let mut s = self.common.settings()?;
        if let Some(out) = &self.out {
            s.batch.out = out.clone();
        }
        if let Some(n) = self.show {
            s.batch.show = n;
        }
        if let Some(k) = self.top {
            s.batch.top = k;
        }
        s.check()?;
        Ok(s)
    }
}
