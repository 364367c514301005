//! Settings: built-in defaults, then a TOML file (`--config`), then command-line options.
//!
//! `config/lambda.toml` ships every default with a comment; the built-in values below are
//! the same (a test checks it), so the file is documentation that can also be edited.

use std::path::PathBuf;

use serde::Deserialize;

use crate::filter::{Filter, FilterError, Kind};

/// Every setting of the program.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// History input.
    pub input: InputSettings,
    /// Workers and cluster.
    pub dataflow: DataflowSettings,
    /// The workshop's exercises.
    pub filters: FilterSettings,
    /// `lambda batch` output.
    pub batch: BatchSettings,
    /// The Kafka speed layer.
    pub kafka: KafkaSettings,
    /// The serving layer.
    pub serve: ServeSettings,
    /// Durable snapshots.
    pub state: StateSettings,
}

/// Durable snapshots (`--state-dir`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StateSettings {
    /// Where snapshots are written and resumed from; none: no snapshots.
    pub dir: Option<PathBuf>,
    /// How often `lambda run` writes a snapshot, in milliseconds (also at a clean stop).
    pub every_ms: u64,
    /// What to do when snapshots exist but none can be used (corrupt, or the history files
    /// changed since): stop with an error, or rebuild from the history files and the topic.
    pub on_invalid: OnInvalid,
}

/// What to do when no snapshot can be used.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnInvalid {
    /// Stop with an error that says what is wrong.
    Fail,
    /// Rebuild from the history files and the whole topic.
    Rebuild,
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings { dir: None, every_ms: 60_000, on_invalid: OnInvalid::Fail }
    }
}

/// Where history comes from and how bad records are handled.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct InputSettings {
    /// History files (JSON lines, JSON array, or `.csv`).
    pub files: Vec<PathBuf>,
    /// Stop at the first bad record instead of dead-lettering it.
    pub strict: bool,
    /// Records larger than this are refused as `oversized`.
    pub max_record_bytes: usize,
    /// The dead-letter file (JSON lines). Empty: `<batch.out>/dead_letters.jsonl`.
    pub dead_letters: PathBuf,
}

/// How many workers, in how many processes.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DataflowSettings {
    /// Worker threads per process; 0 means one per core.
    pub workers: usize,
    /// Number of processes in the cluster.
    pub processes: usize,
    /// This process's index, from 0.
    pub process: usize,
    /// A file with one `host:port` line per process (needed when `processes > 1`).
    pub hostfile: Option<PathBuf>,
}

/// The workshop's exercises, as configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FilterSettings {
    /// Keep only transactions that pass, e.g. `amount >= 100`. Empty: keep all.
    pub event: String,
    /// Show only customers that pass, e.g. `total > 200`. Empty: show all.
    pub view: String,
}

/// What `lambda batch` writes.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BatchSettings {
    /// Output directory for the views.
    pub out: PathBuf,
    /// Rows of the customer table printed.
    pub show: usize,
    /// How many customers the `top` view keeps.
    pub top: usize,
}

/// The Kafka source.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers.
    pub brokers: String,
    /// The topic of real-time orders.
    pub topic: String,
    /// The consumer group offsets are committed to (for lag monitoring).
    pub group: String,
    /// A topic that dead letters are also produced to; empty for none.
    pub dlq_topic: Option<String>,
}

/// The serving layer.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServeSettings {
    /// HTTP listen address.
    pub http: String,
    /// `lambda run` writes every view and `as_of.json` here while it runs; none: not written.
    pub views_out: Option<PathBuf>,
    /// How often `views_out` is refreshed, in milliseconds.
    pub views_every_ms: u64,
}

impl Default for InputSettings {
    fn default() -> Self {
        InputSettings {
            files: vec![PathBuf::from("datasets/transactions.json")],
            strict: false,
            max_record_bytes: 1 << 20,
            dead_letters: PathBuf::new(),
        }
    }
}

impl Default for DataflowSettings {
    fn default() -> Self {
        DataflowSettings { workers: 0, processes: 1, process: 0, hostfile: None }
    }
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings { out: PathBuf::from("output/batch_view"), show: 20, top: 10 }
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: "localhost:9092".into(),
            topic: "real-time-orders".into(),
            group: "atelier-lambda".into(),
            dlq_topic: None,
        }
    }
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings { http: "127.0.0.1:8080".into(), views_out: None, views_every_ms: 1000 }
    }
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

    /// The dead-letter file: as configured, else next to the batch output.
    pub fn dead_letter_path(&self) -> PathBuf {
        let path = if self.input.dead_letters.as_os_str().is_empty() {
            self.batch.out.join("dead_letters.jsonl")
        } else {
            self.input.dead_letters.clone()
        };
        self.per_process(path)
    }

    /// The dead-letter file of `lambda run`: as configured, else `output/dead_letters.jsonl`.
    pub fn run_dead_letter_path(&self) -> PathBuf {
        let path = if self.input.dead_letters.as_os_str().is_empty() {
            PathBuf::from("output/dead_letters.jsonl")
        } else {
            self.input.dead_letters.clone()
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
        if self.state.every_ms < MIN_EVERY_MS {
            return invalid(format!("--snapshot-every-ms must be at least {MIN_EVERY_MS}"));
        }
        if self.serve.views_every_ms < MIN_EVERY_MS {
            return invalid(format!("--views-every-ms must be at least {MIN_EVERY_MS}"));
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

fn parse_filter(text: &str, kind: Kind) -> Result<Option<Filter>, ConfigError> {
    if text.trim().is_empty() {
        Ok(None)
    } else {
        Ok(Some(Filter::parse(text, kind)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_holds_exactly_the_defaults() {
        let shipped =
            Settings::from_file(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/lambda.toml")))
                .expect("config/lambda.toml parses");
        assert_eq!(shipped, Settings::default());
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(Settings::from_toml("[input]\nfiels = []").is_err());
    }

    #[test]
    fn cluster_options_are_checked() {
        let mut s = Settings::default();
        s.dataflow.processes = 2;
        s.dataflow.process = 2;
        assert!(s.timely_config().is_err());
    }
}
