//! Settings: built-in defaults, then a TOML file (`--config`), then command-line options.
//!
//! Every setting is defined once, below, in `settings!` (`config/define.rs`): its section and name in
//! the TOML file, its type, its default, its documentation, its flag and the commands that
//! take it. The structs, their defaults, each command's flags (with the default in their
//! help) and the code that applies flags over a file all come from that one definition, and
//! `config/lambda.toml` is [`Settings::toml_document`] itself (a test checks it), so the
//! shipped file is documentation that can also be edited and passed with `--config`.

mod define;
pub mod flags;

use std::path::PathBuf;

use define::settings;

use crate::filter::{Filter, FilterError, Kind};

settings! {
    /// History input.
    [input] InputSettings {
        /// History files: JSON lines, one JSON array, or CSV (`.csv`) with the same column names.
        files: Vec<PathBuf> = vec![PathBuf::from("datasets/transactions.json")];
            flag "input" value "FILE" for [Batch, Run, Verify, Demo];
        /// Stop at the first bad record (naming file and line) instead of dead-lettering it.
        strict: bool = false;
            flag "strict" value "" for [Batch, Run, Verify, Demo];
        /// Records larger than this many bytes are refused as `oversized`.
        max_record_bytes: usize = 1 << 20;
            flag "max-record-bytes" value "BYTES" for [Batch, Run, Verify, Demo];
        /// The dead-letter file (JSON lines). Empty: `<batch.out>/dead_letters.jsonl` for
        /// `lambda batch`, `output/dead_letters.jsonl` for `lambda run`.
        dead_letters: PathBuf = PathBuf::new();
            flag "dead-letters" value "FILE" for [Batch, Run, Demo];
    }
    /// Workers and cluster.
    [dataflow] DataflowSettings {
        /// Worker threads per process; 0 = one per core.
        workers: usize = 0;
            flag "workers" short 'w' value "N" for [Batch, Run, Verify, Demo];
        /// Number of processes in a timely cluster.
        processes: usize = 1;
            flag "processes" value "N" for [Batch, Run];
        /// This process's index in the cluster, from 0.
        process: usize = 0;
            flag "process" value "I" for [Batch, Run];
        /// With processes > 1: a file with one `host:port` line per process (without it,
        /// 127.0.0.1:2101, :2102, ...).
        hostfile: Option<PathBuf> = None;
            flag "hostfile" value "FILE" example "config/hosts.txt" for [Batch, Run];
        /// How many identities of the version table a view created at run time is filled
        /// from per turn of a worker's loop (Kafka is read and reads are answered between
        /// turns; 0 counts as 1).
        backfill_chunk: usize = crate::dataflow::created::CreatedViews::CHUNK;
            flag "backfill-chunk" value "N" for [Run];
    }
    /// The workshop's exercises, as configuration.
    [filters] FilterSettings {
        /// Keep only transactions that pass, e.g. "amount >= 100" (fields: amount, customer,
        /// category). Empty: keep all.
        event: String = String::new();
            flag "event-filter" value "FILTER" for [Batch, Run, Verify, Demo];
        /// Show only customers that pass, e.g. "total > 200" (fields: total, count, min, max,
        /// avg, customer). Empty: show all.
        view: String = String::new();
            flag "view-filter" value "FILTER" for [Batch, Run, Verify, Demo];
    }
    /// What `lambda batch` writes and shows.
    [batch] BatchSettings {
        /// Where `lambda batch` writes every view as JSON lines and CSV.
        out: PathBuf = PathBuf::from("output/batch_view");
            flag "out" value "DIR" for [Batch];
        /// Rows of the customer table printed.
        show: usize = 20;
            flag "show" value "N" for [Batch];
        /// How many customers the `top` view keeps.
        top: usize = 10;
            flag "top" value "K" for [Batch, Run];
    }
    /// The Kafka speed layer.
    [kafka] KafkaSettings {
        /// Bootstrap servers.
        brokers: String = "localhost:9092".into();
            flag "brokers" value "HOST:PORT,..." for [Run, Verify, Produce];
        /// The topic of real-time orders.
        topic: String = "real-time-orders".into();
            flag "topic" value "TOPIC" for [Run, Verify, Produce];
        /// The consumer group offsets are committed to, only so that Kafka tools show the lag.
        group: String = "atelier-lambda".into();
            flag "group" value "GROUP" for [Run, Verify];
        /// Also produce every dead letter to this topic.
        dlq_topic: Option<String> = None;
            flag "dlq-topic" value "TOPIC" example "dead-letters" for [Run];
        /// Produce a view's changes to a topic, as keyed upserts and tombstones (a compacted
        /// topic's contract); repeatable.
        sinks: Vec<String> = Vec::new();
            flag "sink" value "VIEW=TOPIC" example "customers=customers-view" for [Run];
        /// The sinks' bootstrap servers, when they are not the ones the views read from.
        sink_brokers: Option<String> = None;
            flag "sink-brokers" value "HOST:PORT,..." example "localhost:9093" for [Run];
        /// How long the broker may hold a fetch that finds no message (librdkafka's
        /// `fetch.wait.max.ms`). Kafka answers as soon as a message arrives, so with a real
        /// broker a long wait (e.g. 500) costs no freshness and makes an idle run cheaper;
        /// librdkafka's mock broker (`lambda broker`) always waits it out, so there it is
        /// the floor of freshness.
        fetch_wait_ms: u64 = 5;
            flag "fetch-wait-ms" value "MS" for [Run];
    }
    /// The serving layer.
    [serve] ServeSettings {
        /// Serve the HTTP API on this address ("off" for none).
        http: String = "127.0.0.1:8080".into();
            flag "http" value "ADDR" for [Run, Demo];
        /// Write every view (as `lambda batch` does) and `as_of.json` to this directory while
        /// running, and once more at stop.
        views_out: Option<PathBuf> = None;
            flag "views-out" value "DIR" example "output/serving_view" for [Run];
        /// How often `views_out` is refreshed, in milliseconds.
        views_every_ms: u64 = 1000;
            flag "views-every-ms" value "MS" for [Run];
        /// Serve SQL over the Postgres protocol on this address ("off" for none): `psql -h
        /// 127.0.0.1 -p 6875 -U lambda lambda`.
        pg: String = "127.0.0.1:6875".into();
            flag "pg" value "ADDR" for [Run];
        /// Let the dashboard (`GET /` on the HTTP address) produce messages to the topic, for
        /// the workshop (`POST /v1/produce`); off unless given.
        dashboard_produce: bool = false;
            flag "dashboard-produce" value "" for [Run, Demo];
        /// The most rows a SQL query may return; a query that would return more is refused.
        max_rows: usize = 100_000;
            flag "max-rows" value "N" for [Run];
        /// How long a SQL query may take, in milliseconds, before it is cancelled.
        query_timeout_ms: u64 = 10_000;
            flag "query-timeout-ms" value "MS" for [Run];
        /// A file holding the one secret both front ends ask for: the Postgres password
        /// (SCRAM-SHA-256, any user name) and the HTTP bearer token. Without it the
        /// environment variable LAMBDA_PASSWORD is read. Without either, only loopback
        /// addresses may be served (see SECURITY.md).
        password_file: Option<PathBuf> = None;
            flag "password-file" value "FILE" example "secret.txt" for [Run, Demo];
        /// Serve an address other machines can reach without a secret: anyone who reaches it
        /// may read every view, create and drop views, and produce if the dashboard may.
        insecure_no_auth: bool = false;
            flag "insecure-no-auth" value "" for [Run, Demo];
    }
    /// Durable snapshots.
    [state] StateSettings {
        /// Where `lambda run` writes snapshots and resumes from the newest valid one (instead
        /// of re-reading the history files); `lambda batch` writes the views of the newest.
        dir: Option<PathBuf> = None;
            flag "state-dir" value "DIR" example "state" for [Batch, Run];
        /// How often `lambda run` writes a snapshot, in milliseconds (also at a clean stop).
        every_ms: u64 = 60_000;
            flag "snapshot-every-ms" value "MS" for [Run];
        /// When snapshots exist but none can be used (corrupt, or the history files changed
        /// since): "fail" with an error, or "rebuild" from the history files and the topic.
        on_invalid: OnInvalid = OnInvalid::Fail;
            flag "on-invalid-snapshot" value "fail|rebuild" for [Run];
    }
}

/// What to do when no snapshot can be used.
#[derive(Clone, Copy, Debug, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnInvalid {
    /// Stop with an error that says what is wrong.
    Fail,
    /// Rebuild from the history files and the whole topic.
    Rebuild,
}

impl std::str::FromStr for OnInvalid {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "fail" => Ok(OnInvalid::Fail),
            "rebuild" => Ok(OnInvalid::Rebuild),
            _ => Err("is neither fail nor rebuild".into()),
        }
    }
}

impl std::fmt::Display for OnInvalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OnInvalid::Fail => "fail",
            OnInvalid::Rebuild => "rebuild",
        })
    }
}

/// The commands that take settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandName {
    /// `lambda batch`
    Batch,
    /// `lambda run`
    Run,
    /// `lambda verify`
    Verify,
    /// `lambda demo`
    Demo,
    /// `lambda produce`
    Produce,
}

impl CommandName {
    /// Every command that takes settings.
    pub const ALL: [CommandName; 5] =
        [CommandName::Batch, CommandName::Run, CommandName::Verify, CommandName::Demo, CommandName::Produce];

    /// The command as typed.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandName::Batch => "batch",
            CommandName::Run => "run",
            CommandName::Verify => "verify",
            CommandName::Demo => "demo",
            CommandName::Produce => "produce",
        }
    }
}

/// One setting, described for the command line and the TOML document.
#[derive(Clone)]
pub struct Described {
    /// Its table in the TOML file.
    pub section: &'static str,
    /// Its key in that table.
    pub key: &'static str,
    /// Its command-line flag, without the dashes.
    pub flag: &'static str,
    /// A one-letter flag, if any.
    pub short: Option<char>,
    /// What the flag's value is called in `--help`.
    pub value_name: &'static str,
    /// What it does.
    pub help: String,
    /// Its default, as shown (none for a switch, an empty path or an absent value).
    pub default: Option<String>,
    /// A value to show, commented out, in the TOML document when there is no default.
    pub example: Option<&'static str>,
    /// The commands that take its flag.
    pub commands: &'static [CommandName],
    /// Sets the flag's arity for the setting's type.
    pub arg: fn(clap::Arg) -> clap::Arg,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML file is not valid.
    #[error("bad config file {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The cause.
        source: Box<toml::de::Error>,
    },
    /// A filter does not parse.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// The cluster options do not fit together.
    #[error("{0}")]
    Cluster(String),
    /// A setting's value is out of its range.
    #[error("{0}")]
    Invalid(String),
    /// An output would overwrite an input.
    #[error("{input} is an input, and {what} would write over it; choose another {option}")]
    OutputOverInput {
        /// The input file.
        input: String,
        /// Which output.
        what: String,
        /// The option that sets it.
        option: &'static str,
    },
}

/// Something a command writes: a file, or a directory it writes files into.
#[derive(Clone, Copy, Debug)]
pub enum Output<'a> {
    /// One file, set by `option`.
    File(&'a std::path::Path, &'static str),
    /// A directory whose files are written or removed, set by `option`.
    Dir(&'a std::path::Path, &'static str),
}

/// Refuses outputs that are, or hold, one of `inputs`: the program's own outputs must never
/// destroy its input (`--dead-letters h.jsonl` once truncated the history it was about to read).
pub fn refuse_outputs_over_inputs(inputs: &[PathBuf], outputs: &[Output<'_>]) -> Result<(), ConfigError> {
    for input in inputs {
        let Ok(input_real) = input.canonicalize() else { continue }; // a missing input is reported when read
        for output in outputs {
            let (path, option, is_dir) = match *output {
                Output::File(path, option) => (path, option, false),
                Output::Dir(path, option) => (path, option, true),
            };
            let out = resolved(path);
            let hit = if is_dir { input_real.starts_with(&out) } else { input_real == out };
            if hit {
                let what = if is_dir {
                    format!("{option} {} (a directory it writes into)", path.display())
                } else {
                    format!("{option} {}", path.display())
                };
                return Err(ConfigError::OutputOverInput { input: input.display().to_string(), what, option });
            }
        }
    }
    Ok(())
}

/// `path` made absolute with its existing part's links resolved, so that two spellings of
/// one file compare equal even when the file does not exist yet.
fn resolved(path: &std::path::Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_owned())
    };
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |p, part| p.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

impl Settings {
    /// The settings of `command`: the defaults, the TOML file `config` over them, then the
    /// flags given in `matches`; checked (see [`Settings::check`]).
    pub fn for_command(
        command: CommandName,
        config: Option<&std::path::Path>,
        matches: &clap::ArgMatches,
    ) -> Result<Settings, ConfigError> {
        let mut settings = match config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        settings.apply_flags(command, matches)?;
        settings.check()?;
        // Filters and cluster options are checked now, with a clear message, not in a worker.
        settings.event_filter()?;
        settings.view_filter()?;
        settings.timely_config()?;
        Ok(settings)
    }

    /// The TOML document of every setting with its default and what it does — what
    /// `config/lambda.toml` holds.
    pub fn toml_document() -> String {
        let defaults = toml::Value::try_from(Settings::default()).expect("the settings serialize to TOML");
        let mut out = String::from(
            "# atelier-lambda — every setting, with its default value.\n\
             # Use with `lambda <command> --config config/lambda.toml`; command-line flags win.\n\
             # (This file is `Settings::toml_document()` in src/config/mod.rs; a test keeps them equal.)\n",
        );
        let mut section = "";
        for setting in Settings::described() {
            if setting.section != section {
                section = setting.section;
                out.push_str(&format!("\n[{section}]\n"));
            }
            let flags: Vec<String> = setting.commands.iter().map(|c| c.as_str().to_owned()).collect();
            let help = format!("{} (--{} in {})", setting.help, setting.flag, flags.join(", "));
            for line in wrap(&help, 88) {
                out.push_str(&format!("# {line}\n"));
            }
            match defaults.get(section).and_then(|t| t.get(setting.key)) {
                Some(value) => out.push_str(&format!("{} = {value}\n", setting.key)),
                None => out.push_str(&format!("# {} = \"{}\"\n", setting.key, setting.example.unwrap_or(""))),
            }
        }
        out
    }

    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &std::path::Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::from_toml(&text)
            .map_err(|source| ConfigError::Parse { path: path.display().to_string(), source: Box::new(source) })
    }

    /// Parses TOML text over the defaults.
    pub fn from_toml(text: &str) -> Result<Settings, toml::de::Error> {
        toml::from_str(text)
    }

    /// The event filter, if one is set.
    pub fn event_filter(&self) -> Result<Option<Filter>, ConfigError> {
        parse_filter(&self.filters.event, Kind::Event)
    }

    /// The view filter, if one is set.
    pub fn view_filter(&self) -> Result<Option<Filter>, ConfigError> {
        parse_filter(&self.filters.view, Kind::View)
    }

    /// The SQL engine's limits.
    pub fn sql_limits(&self) -> crate::sql::Limits {
        crate::sql::Limits {
            max_rows: self.serve.max_rows,
            timeout: std::time::Duration::from_millis(self.serve.query_timeout_ms),
            ..crate::sql::Limits::default()
        }
    }

    /// The dead-letter file of `command`: as configured, else next to `lambda batch`'s
    /// output, or `output/dead_letters.jsonl` for the other commands.
    pub fn dead_letter_path(&self, command: CommandName) -> PathBuf {
        let path = match (&self.input.dead_letters, command) {
            (configured, _) if !configured.as_os_str().is_empty() => configured.clone(),
            (_, CommandName::Batch) => self.batch.out.join("dead_letters.jsonl"),
            _ => PathBuf::from("output/dead_letters.jsonl"),
        };
        self.per_process(path)
    }

    /// Each process writes the dead letters its workers meet: with several processes, one
    /// file each, side by side (`dead_letters.p1.jsonl`).
    fn per_process(&self, path: PathBuf) -> PathBuf {
        if self.dataflow.processes <= 1 {
            return path;
        }
        let stem = path.file_stem().map_or("dead_letters".into(), |s| s.to_string_lossy().into_owned());
        let extension = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
        path.with_file_name(format!("{stem}.p{}{extension}", self.dataflow.process))
    }

    /// Refuses values no run can use, with a message naming the option — rather than a run
    /// that never finishes (`--workers 1000` on two cores) or an option silently ignored.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |text: String| Err(ConfigError::Invalid(text));
        let d = &self.dataflow;
        if d.processes == 0 {
            return invalid("--processes must be at least 1".into());
        }
        let cores = cores();
        let most = most_workers(cores);
        if d.workers > most {
            return invalid(format!(
                "--workers {} is more than this machine can run well: it has {cores} core{}, and a process \
                 runs at most {most} workers ({WORKERS_PER_CORE} per core); 0 means one per core",
                d.workers,
                if cores == 1 { "" } else { "s" },
            ));
        }
        if self.batch.top == 0 {
            return invalid("--top must be at least 1".into());
        }
        if !(1..=60_000).contains(&self.kafka.fetch_wait_ms) {
            return invalid("--fetch-wait-ms must be between 1 and 60000".to_owned());
        }
        if self.state.every_ms < MIN_EVERY_MS {
            return invalid(format!("--snapshot-every-ms must be at least {MIN_EVERY_MS}"));
        }
        if self.serve.views_every_ms < MIN_EVERY_MS {
            return invalid(format!("--views-every-ms must be at least {MIN_EVERY_MS}"));
        }
        if self.serve.max_rows == 0 || self.serve.query_timeout_ms == 0 {
            return invalid("--max-rows and --query-timeout-ms must be at least 1".into());
        }
        if self.input.max_record_bytes == 0 {
            return invalid("--max-record-bytes must be at least 1".into());
        }
        Ok(())
    }

    /// Timely's configuration for these workers and processes.
    pub fn timely_config(&self) -> Result<timely::Config, ConfigError> {
        let d = &self.dataflow;
        let workers = if d.workers == 0 { cores() } else { d.workers };
        let communication = if d.processes <= 1 {
            if workers == 1 {
                timely::CommunicationConfig::Thread
            } else {
                timely::CommunicationConfig::Process(workers)
            }
        } else {
            let addresses = match &d.hostfile {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::Cluster(format!("cannot read host file {}: {e}", path.display())))?
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from)
                    .collect(),
                None => (0..d.processes).map(|i| format!("127.0.0.1:{}", 2101 + i)).collect::<Vec<_>>(),
            };
            if addresses.len() != d.processes {
                return Err(ConfigError::Cluster(format!(
                    "{} processes but the host file lists {} addresses",
                    d.processes,
                    addresses.len()
                )));
            }
            if d.process >= d.processes {
                return Err(ConfigError::Cluster(format!("process index {} is not below {}", d.process, d.processes)));
            }
            timely::CommunicationConfig::Cluster {
                threads: workers,
                process: d.process,
                addresses,
                report: false,
                zerocopy: false,
            }
        };
        Ok(timely::Config { communication, worker: timely::WorkerConfig::default() })
    }
}

/// Workers beyond this many per core only add coordination: timely's progress tracking
/// talks between every pair of workers (1000 workers never finished loading five records).
pub const WORKERS_PER_CORE: usize = 8;
/// The shortest period of snapshots and view files, in milliseconds.
const MIN_EVERY_MS: u64 = 10;

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The most workers a process may run on `cores` cores.
pub fn most_workers(cores: usize) -> usize {
    (cores * WORKERS_PER_CORE).max(16)
}

/// `text` cut into lines of at most `width` characters, at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("one line at least");
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(word.to_owned());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

fn parse_filter(text: &str, kind: Kind) -> Result<Option<Filter>, ConfigError> {
    if text.trim().is_empty() {
        Ok(None)
    } else {
        Ok(Some(Filter::parse(text, kind)?))
    }
}

#[cfg(test)]
mod tests;
