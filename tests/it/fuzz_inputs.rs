//! Fuzzing the input paths on stable Rust: the record parsers (JSON lines, a JSON array,
//! CSV, Kafka messages with keys and tombstones) and the snapshot decoder, over random bytes
//! and random mutations of a checked-in corpus (`tests/fuzz-corpus/`).
//!
//! The properties: never a panic; every record of the input comes out as a transaction or a
//! dead letter with a reason (counted independently of the parser: one per non-blank line,
//! one per CSV row); snapshot decoding never trusts a length (a corrupt length is an error,
//! not an allocation or a read past the end).
//!
//! `FUZZ_CASES` sets how many cases each target runs (default 600, what CI runs in a few
//! seconds); for a longer session: `FUZZ_CASES=200000 cargo test --release --test fuzz_inputs`.

use crate::common;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use atelier_lambda::event::Names;
use atelier_lambda::source::history::{Format, HistoryFile};
use atelier_lambda::source::kafka::to_record;
use atelier_lambda::source::Record;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn corpus(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus").join(kind);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "the corpus {} is empty", dir.display());
    seeds
}

fn runner() -> TestRunner {
    let cases = std::env::var("FUZZ_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(600);
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
}

/// One change to a byte string.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
    Repeat(usize, usize),
}

/// Bytes that fuzz parsers well: structure characters, digits, quotes, newlines, high bytes.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => prop::sample::select(b"{}[]\",:\n\r\\ -.0123456789eEnulltrfa\xef\xbb\xbf\xff\xc3".to_vec()),
        1 => any::<u8>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), interesting_byte()).prop_map(|(at, b)| Mutation::Flip(at, b)),
        2 => (any::<usize>(), prop::collection::vec(interesting_byte(), 1..16)).prop_map(|(at, b)| Mutation::Insert(at, b)),
        2 => (any::<usize>(), 1..32usize).prop_map(|(at, n)| Mutation::Remove(at, n)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), 1..64usize).prop_map(|(at, n)| Mutation::Repeat(at, n)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        let at = |i: usize| if len == 0 { 0 } else { i % (len + 1) };
        match m {
            Mutation::Flip(i, b) if len > 0 => bytes[i % len] = *b,
            Mutation::Flip(..) => bytes.push(0),
            Mutation::Insert(i, new) => {
                let i = at(*i);
                bytes.splice(i..i, new.iter().copied());
            }
            Mutation::Remove(i, n) => {
                let i = at(*i);
                bytes.drain(i..(i + n).min(len));
            }
            Mutation::Truncate(i) => bytes.truncate(at(*i)),
            Mutation::Repeat(i, n) => {
                let i = at(*i);
                let piece = bytes[i..(i + n).min(len)].to_vec();
                bytes.splice(i..i, piece);
            }
        }
    }
    bytes
}

/// A corpus seed with random mutations, or plain random bytes.
fn fuzzed(seeds: Vec<(String, Vec<u8>)>) -> impl Strategy<Value = (String, Vec<u8>)> {
    let mutated = (prop::sample::select(seeds), prop::collection::vec(mutation(), 0..8))
        .prop_map(|((name, bytes), mutations)| (name, mutate(bytes, &mutations)));
    let random = prop::collection::vec(interesting_byte(), 0..400).prop_map(|b| ("random".to_owned(), b));
    prop_oneof![3 => mutated, 1 => random]
}

/// Every record of `path` read by `peers` workers (the file split into byte ranges), or the
/// error that refused the whole file.
fn read_file(path: &Path, peers: usize) -> (Format, Result<Vec<Record>, String>) {
    let mut files = HistoryFile::open_all(&[path.to_owned()]).unwrap();
    files[0].min_split_bytes = 1;
    let progress = AtomicU64::new(0);
    let mut records = Vec::new();
    for worker in 0..peers {
        let read = files[0].read_share(worker, peers, 4096, &progress, &mut |r| {
            records.push(r);
            ControlFlow::Continue(())
        });
        if let Err(error) = read {
            return (files[0].format, Err(error.to_string()));
        }
    }
    (files[0].format, Ok(records))
}

/// Lines a JSON-lines reader must account for: every line with a byte other than ASCII
/// whitespace, once a leading byte-order mark is set aside.
fn significant_lines(bytes: &[u8]) -> usize {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    bytes.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)).count()
}

fn write_case(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn history_files_never_panic_and_account_for_every_line() {
    let dir = common::temp_dir("fuzz-history");
    let seeds = corpus("records");
    runner()
        .run(&fuzzed(seeds), |(name, bytes)| {
            let extension = if name.ends_with(".csv") { "csv" } else { "jsonl" };
            let path = write_case(&dir, &format!("case.{extension}"), &bytes);
            let (format, one) = read_file(&path, 1);
            let (_, three) = read_file(&path, 3);
            let (one, three) = match (one, three) {
                (Ok(one), Ok(three)) => (one, three),
                (Err(error), _) | (_, Err(error)) => {
                    // Only a CSV header can refuse a whole file, with a clear error.
                    prop_assert_eq!(format, Format::Csv, "a whole file refused: {}", error);
                    prop_assert!(error.contains("header") || error.contains("record 0"), "{}", error);
                    return Ok(());
                }
            };
            prop_assert_eq!(one.len(), three.len(), "splitting the file changes nothing");
            for record in &one {
                if let Record::Refused(letter) = record {
                    prop_assert!(!letter.rejection.detail.is_empty(), "a dead letter says why");
                }
            }
            match format {
                Format::JsonLines => {
                    prop_assert_eq!(one.len(), significant_lines(&bytes), "one record or dead letter per line")
                }
                Format::Csv => {
                    // An independent count of the rows: the csv crate's own reader.
                    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes.as_slice());
                    if reader.headers().is_ok() {
                        let rows = reader.byte_records().count();
                        prop_assert_eq!(one.len(), rows, "one record or dead letter per CSV row");
                    }
                }
                Format::JsonArray => {
                    prop_assert!(!one.is_empty() || significant_lines(&bytes) <= 1, "an array yields something")
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn kafka_messages_never_panic() {
    let seeds = corpus("records");
    let lines: Vec<(String, Vec<u8>)> = seeds
        .iter()
        .flat_map(|(name, bytes)| bytes.split(|b| *b == b'\n').map(move |l| (name.clone(), l.to_vec())))
        .collect();
    let message = (fuzzed(lines), prop::option::of(prop::collection::vec(any::<u8>(), 0..12)), any::<bool>());
    runner()
        .run(&message, |((_, payload), key, tombstone)| {
            let payload = (!tombstone).then_some(payload.as_slice());
            let record = to_record("orders", 1, 7, key.as_deref(), payload, 256, &mut Names::default());
            match record {
                Record::Update(update) => {
                    prop_assert!(payload.is_some() || update.txn.is_none(), "a tombstone deletes");
                }
                Record::Refused(letter) => prop_assert_eq!(letter.source, "orders/1/7"),
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn snapshot_files_and_shards_never_panic_nor_trust_lengths() {
    let dir = common::temp_dir("fuzz-snapshots");
    let seeds = corpus("snapshots");
    // The shards of the seed snapshots, for the shard decoder.
    let mut shards = Vec::new();
    for (name, bytes) in &seeds {
        let path = write_case(&dir, "seed.snap", bytes);
        let snapshot = atelier_lambda::state::read(&path).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        for i in 0..snapshot.shards() {
            shards.push((format!("{name}#{i}"), snapshot.shard(i).to_vec()));
        }
    }
    runner()
        .run(&fuzzed(seeds), |(_, bytes)| {
            let path = write_case(&dir, "case.snap", &bytes);
            // A damaged file is an error; one that still reads has checksums that match.
            if let Ok(snapshot) = atelier_lambda::state::read(&path) {
                for i in 0..snapshot.shards() {
                    let _ = atelier_lambda::state::shard::decode(snapshot.shard(i), &mut |_, _| {});
                }
            }
            Ok(())
        })
        .unwrap();
    runner()
        .run(&fuzzed(shards), |(_, bytes)| {
            let mut seen = 0u64;
            if let Ok(count) = atelier_lambda::state::shard::decode(&bytes, &mut |_, _| seen += 1) {
                prop_assert_eq!(count, seen, "a decoded shard says how many versions it gave");
            }
            Ok(())
        })
        .unwrap();
}
