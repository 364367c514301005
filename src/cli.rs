//! The command line of the `lambda` binary.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{CommandName, Settings};

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
    /// Run one of Nexmark's queries as a view over the generator's streams in this process,
    /// time it until it reflects every event, and check it against DataFusion over the same
    /// events (exit 1 on differences).
    Nexmark(NexmarkArgs),
}

/// Options of `lambda nexmark`.
#[derive(Debug, Args)]
pub struct NexmarkArgs {
    /// The query: q0, q1, q2, q3, q4, q5, q7, q8, q9, q17, q18, q19, q20.
    #[arg(long)]
    pub query: String,
    /// Events of the three streams (people, auctions, bids: 1:3:46).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// The fraction of bids re-sent later with a new price (the same id).
    #[arg(long, default_value_t = 0.0)]
    pub corrections: f64,
    /// The fraction of bids deleted later.
    #[arg(long, default_value_t = 0.0)]
    pub deletes: f64,
    /// The generator's seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Dataflow workers.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Time only: do not recompute the query to check the view.
    #[arg(long)]
    pub no_verify: bool,
    /// Print the statements that make the query a view (the three tables read from
    /// `kafka`, the topics of their names, or from `nexmark`, the generator), one a line, and
    /// exit.
    #[arg(long, value_name = "CONNECTOR")]
    pub print_sql: Option<String>,
}

/// Options of `lambda verify` (and the settings of the run it checks).
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Shared options: give the same history files, filters and config as the live run.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The live run's HTTP API. [default: the `serve.http` setting, 127.0.0.1:8080]
    #[arg(long, value_name = "URL")]
    pub live: Option<String>,
    /// Compare the `top` view over this many customers (default: all of them).
    #[arg(long, default_value_t = 10_000_000)]
    pub top: usize,
}

/// Options of `lambda run` beyond its settings.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Run the interactive prompt even when standard input is not a terminal (commands are
    /// then read line by line; the end of input quits).
    #[arg(long)]
    pub repl: bool,
}

/// Options of `lambda demo` beyond its settings.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Keep the demo running afterwards, with the HTTP API and the dashboard (`GET /`) on
    /// `--http`, until Ctrl-C.
    #[arg(long)]
    pub serve: bool,
}

/// Options of `lambda broker`.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Port on 127.0.0.1 (0: any free port, printed at start).
    #[arg(long, default_value_t = 9092)]
    pub port: u16,
    /// Partitions of the topic, from 1 to 10000.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub partitions: i32,
    /// The topic to create.
    #[arg(long, default_value = "real-time-orders")]
    pub topic: String,
    /// More topics to create (e.g. a dead-letter topic), with the same partitions.
    #[arg(long = "also", value_name = "TOPIC")]
    pub also: Vec<String>,
}

/// Options of `lambda produce` beyond its settings (`--brokers`, `--topic`).
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// JSON lines to send; "-" for standard input. Without it: standard input when it is a
    /// pipe or a file (`cat orders.jsonl | lambda produce`), else generated load.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Send generated load, even when standard input is not a terminal (any of the
    /// generator's options below says the same).
    #[arg(long, conflicts_with = "input")]
    pub generate: bool,
    /// Messages per second (default: as fast as possible for a file, 1000 when generating).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds of generated load [default: 10].
    #[arg(long)]
    pub duration: Option<f64>,
    /// Generated load: distinct customers [default: 10000].
    #[arg(long)]
    pub customers: Option<u64>,
    /// Generated load: fraction of messages that correct an earlier id [default: 0].
    #[arg(long)]
    pub corrections: Option<f64>,
    /// Generated load: random seed [default: 2].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Generated load: id prefix (different from the history's, so ids do not collide)
    /// [default: s].
    #[arg(long)]
    pub id_prefix: Option<String>,
    /// Generated load: at most this many distinct ids; once issued, every message corrects
    /// or deletes one of them (a bounded key set, for long runs).
    #[arg(long)]
    pub ids: Option<u64>,
    /// Send the Nexmark streams instead: this many events (people, auctions and bids, 1:3:46)
    /// as JSON to the topics `person`, `auction` and `bid`, as fast as the broker takes them;
    /// `--corrections` re-sends that fraction of bids with a new price, `--deletes` deletes
    /// that fraction, `--seed` [default: 1].
    #[arg(long, value_name = "EVENTS", conflicts_with_all = ["input", "generate"])]
    pub nexmark: Option<u64>,
    /// With `--nexmark`: the fraction of bids deleted (`"op":"delete"`) [default: 0].
    #[arg(long, requires = "nexmark")]
    pub deletes: Option<f64>,
}

/// What `lambda produce` sends.
#[derive(Debug, PartialEq)]
pub enum ProduceSource {
    /// The lines of a file, or of standard input (`-`).
    Lines(PathBuf),
    /// Generated load.
    Generated,
    /// The Nexmark streams, this many events.
    Nexmark(u64),
}

impl ProduceArgs {
    /// Where the messages come from: `--input`; else generated load when asked for (by
    /// `--generate` or a generator option); else standard input when something is piped or
    /// redirected into it — `printf ... | lambda produce` sends what is piped, not 10,000
    /// generated messages; else (a terminal, or `/dev/null` as a background job in a script
    /// or a container without `-i` has) generated load.
    pub fn source(&self, stdin: StdinKind) -> ProduceSource {
        let asked_to_generate = self.generate
            || self.duration.is_some()
            || self.customers.is_some()
            || self.corrections.is_some()
            || self.seed.is_some()
            || self.id_prefix.is_some()
            || self.ids.is_some();
        if let Some(events) = self.nexmark {
            return ProduceSource::Nexmark(events);
        }
        match &self.input {
            Some(path) => ProduceSource::Lines(path.clone()),
            None if asked_to_generate || stdin == StdinKind::Other => ProduceSource::Generated,
            None => ProduceSource::Lines(PathBuf::from("-")),
        }
    }
}

/// What standard input is, as far as `lambda produce` cares.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StdinKind {
    /// A pipe, a file or a socket: lines someone means to send.
    Fed,
    /// A terminal, `/dev/null`, or unknown.
    Other,
}

impl StdinKind {
    /// This process's standard input.
    pub fn of_this_process() -> StdinKind {
        use std::os::fd::AsFd;
        use std::os::unix::fs::FileTypeExt;
        let file = std::io::stdin().as_fd().try_clone_to_owned().map(std::fs::File::from);
        match file.and_then(|f| f.metadata()).map(|m| m.file_type()) {
            Ok(kind) if kind.is_fifo() || kind.is_file() || kind.is_socket() => StdinKind::Fed,
            _ => StdinKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn produce(args: &[&str]) -> ProduceArgs {
        let cli = Cli::try_parse_from([&["lambda", "produce"], args].concat()).unwrap();
        match cli.command {
            Command::Produce(args) => args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn produce_reads_what_is_piped_and_generates_otherwise() {
        use ProduceSource::*;
        use StdinKind::*;
        let stdin = || Lines(PathBuf::from("-"));
        assert_eq!(produce(&[]).source(Fed), stdin());
        assert_eq!(produce(&["--rate", "100"]).source(Fed), stdin(), "--rate paces a pipe too");
        assert_eq!(produce(&[]).source(Other), Generated, "a terminal or /dev/null");
        assert_eq!(produce(&["--generate"]).source(Fed), Generated);
        assert_eq!(produce(&["--duration", "3"]).source(Fed), Generated);
        assert_eq!(produce(&["--input", "f.jsonl"]).source(Other), Lines(PathBuf::from("f.jsonl")));
        assert!(Cli::try_parse_from(["lambda", "produce", "--generate", "--input", "f"]).is_err());
    }
}

/// Options shared by the commands that take settings; the settings' own flags are added to
/// each command from their one definition ([`crate::config`]).
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// A TOML settings file (config/lambda.toml lists every setting and its default).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Options of `lambda batch` beyond its settings.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
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

/// The command line, parsed: the command, and its settings (defaults, then `--config`, then
/// the flags).
pub fn parse() -> Result<(Command, Option<Settings>), crate::config::ConfigError> {
    let cli = crate::config::flags::with_setting_flags(<Cli as clap::CommandFactory>::command());
    let matches = cli.get_matches();
    let parsed = <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let (name, sub) = matches.subcommand().expect("clap requires a command");
    let command_name = CommandName::ALL.into_iter().find(|c| c.as_str() == name);
    let config = match &parsed.command {
        Command::Batch(a) => a.common.config.as_deref(),
        Command::Run(a) => a.common.config.as_deref(),
        Command::Demo(a) => a.common.config.as_deref(),
        Command::Produce(a) => a.common.config.as_deref(),
        Command::Verify(a) => a.common.config.as_deref(),
        Command::Broker(_) | Command::Gen(_) | Command::Nexmark(_) => None,
    };
    let settings = command_name.map(|c| Settings::for_command(c, config, sub)).transpose()?;
    Ok((parsed.command, settings))
}
