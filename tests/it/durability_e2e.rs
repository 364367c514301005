//! Durability end to end: the real `lambda run` killed with SIGKILL at random moments and
//! restarted from its snapshots, and damaged snapshots, against a from-scratch
//! recomputation of the whole history and stream.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use atelier_lambda::reading::Reading;
use common::live::*;
use common::temp_dir;
use rdkafka::producer::{BaseProducer, Producer};

/// The options of a run with snapshots every `every_ms`.
fn with_state(state: &Path, every_ms: u64) -> Vec<String> {
    vec!["--state-dir".into(), state.display().to_string(), "--snapshot-every-ms".into(), every_ms.to_string()]
}

fn start(broker: &TestBroker, history: &Path, dir: &Path, options: &[String]) -> Run {
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    Run::start(&broker.address(), history, 2, dir, &options)
}

/// Sends `messages` and waits until the broker has them.
fn send(producer: &BaseProducer, messages: &[Sent]) {
    send_all(producer, messages);
    producer.flush(Duration::from_secs(10)).expect("the broker takes the messages");
}

/// Asserts that the live views equal the recomputation over the history and `sent`.
fn assert_exact(run: &mut Run, history_lines: &[String], sent: &[Sent], when: &str) {
    let mut live = run.views_at(&end_offsets(sent));
    let expected: Reading = expected_reading(history_lines, "", sent, 10);
    live.time = expected.time;
    assert_eq!(live, expected, "{when}: the views differ from the recomputation");
}

fn temporary_files(state: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(state) else { return Vec::new() };
    entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "tmp")).collect()
}

/// Kills `run` with SIGKILL as soon as a snapshot is being written (a temporary file
/// exists); returns whether it was still being written when the process died.
fn kill_during_a_snapshot_write(run: &mut Run, state: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(writing) = temporary_files(state).into_iter().next() {
            let _ = run.child.kill();
            let _ = run.child.wait();
            return writing.exists();
        }
    }
    let _ = run.child.kill();
    let _ = run.child.wait();
    false
}

#[test]
fn kill_9_at_random_moments_loses_nothing_and_counts_nothing_twice() {
    let dir = temp_dir("crash");
    let state = dir.join("state");
    let broker = TestBroker::mock();
    let history_lines = random_history(60);
    let history_path = history(&dir, &history_lines);
    let messages = random_messages(21, 420);
    let producer = producer(&broker.address());
    let options = with_state(&state, 20);
    let mut seed = 0x5EED_u64;
    let mut random_ms = |below: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % below
    };

    let mut sent = 0;
    let (mut kills, mut during_writes) = (0, 0);
    for (cycle, chunk) in messages.chunks(30).enumerate() {
        let mut run = start(&broker, &history_path, &dir, &options);
        // Right after each restart: exact for everything sent so far.
        assert_exact(&mut run, &history_lines, &messages[..sent], &format!("restart {cycle}"));
        if cycle % 3 == 2 {
            // Messages trickle in, so that a snapshot is written every 20 ms (one with
            // nothing new is skipped), and the process dies in the middle of one.
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    for message in chunk {
                        send(&producer, std::slice::from_ref(message));
                        std::thread::sleep(Duration::from_millis(3));
                    }
                });
                during_writes += usize::from(kill_during_a_snapshot_write(&mut run, &state));
            });
            sent += chunk.len();
        } else {
            send(&producer, chunk);
            sent += chunk.len();
            std::thread::sleep(Duration::from_millis(random_ms(150)));
            let _ = run.child.kill();
            let _ = run.child.wait();
        }
        kills += 1;
    }
    assert!(kills >= 10, "{kills} kills");
    eprintln!("kills during a snapshot write: {during_writes} of {}", kills / 3);
    assert!(during_writes >= 1, "no kill landed during a snapshot write");

    let mut run = start(&broker, &history_path, &dir, &options);
    assert_exact(&mut run, &history_lines, &messages, "after the last restart");
    let log = run.stop();
    assert!(log.contains("resuming from a snapshot"), "restarts resume from snapshots: {log}");
}

/// A clean run that leaves two snapshots of `sent` behind.
fn two_snapshots(broker: &TestBroker, history: &Path, dir: &Path, state: &Path, sent: &[Sent]) {
    let producer = producer(&broker.address());
    let (first, second) = sent.split_at(sent.len() / 2);
    let mut run = start(broker, history, dir, &with_state(state, 60_000));
    send(&producer, first);
    run.views_at(&end_offsets(first));
    run.stop(); // the stop writes a snapshot
    let mut run = start(broker, history, dir, &with_state(state, 60_000));
    send(&producer, second);
    run.views_at(&end_offsets(sent));
    run.stop();
    let snapshots = atelier_lambda::state::list(state).unwrap();
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");
}

#[test]
fn a_damaged_snapshot_is_reported_and_the_previous_one_used() {
    for damage in ["truncate", "flip a byte"] {
        let dir = temp_dir("damaged");
        let state = dir.join("state");
        let broker = TestBroker::mock();
        let history_lines = random_history(40);
        let history_path = history(&dir, &history_lines);
        let messages = random_messages(5, 200);
        let (sent, rest) = messages.split_at(120);
        two_snapshots(&broker, &history_path, &dir, &state, sent);

        let newest = atelier_lambda::state::list(&state).unwrap()[0].clone();
        let mut bytes = std::fs::read(&newest).unwrap();
        match damage {
            "truncate" => bytes.truncate(bytes.len() - 7),
            _ => {
                let middle = bytes.len() / 2; // in a shard's versions
                bytes[middle] ^= 0x10;
            }
        }
        std::fs::write(&newest, &bytes).unwrap();

        // The previous snapshot is older: the stream after it is read again, by identity.
        let mut run = start(&broker, &history_path, &dir, &with_state(&state, 60_000));
        assert_exact(&mut run, &history_lines, sent, damage);
        send(&producer(&broker.address()), rest);
        assert_exact(&mut run, &history_lines, &messages, damage);
        let log = run.stop();
        assert!(log.contains("snapshot unusable"), "{damage}: the damage is reported: {log}");
        assert!(log.contains(if damage == "truncate" { "truncated" } else { "corrupted" }), "{log}");
    }
}

#[test]
fn with_no_usable_snapshot_it_stops_or_rebuilds_as_asked() {
    let dir = temp_dir("no-usable");
    let state = dir.join("state");
    let broker = TestBroker::mock();
    let history_lines = random_history(40);
    let history_path = history(&dir, &history_lines);
    let messages = random_messages(9, 100);
    two_snapshots(&broker, &history_path, &dir, &state, &messages);
    for snapshot in atelier_lambda::state::list(&state).unwrap() {
        std::fs::write(&snapshot, b"ALSNAP\r\n but not really").unwrap();
    }

    // `lambda run` that is expected to refuse to start: its standard error.
    let refused = || {
        let out = lambda()
            .args(["run", "--brokers", &broker.address(), "--http", "off", "--pg", "off", "--workers", "1"])
            .arg("--input")
            .arg(&history_path)
            .arg("--state-dir")
            .arg(&state)
            .arg("--dead-letters")
            .arg(dir.join("dead.jsonl"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{err}");
        err
    };
    let err = refused();
    assert!(err.contains("no usable snapshot") && err.contains("--on-invalid-snapshot rebuild"), "{err}");

    let mut options = with_state(&state, 60_000);
    options.extend(["--on-invalid-snapshot".to_string(), "rebuild".to_string()]);
    let mut run = start(&broker, &history_path, &dir, &options);
    assert_exact(&mut run, &history_lines, &messages, "rebuilt from history and topic");
    run.stop();

    // A changed history file is noticed rather than silently ignored.
    std::fs::write(&history_path, "{\"id\":\"h1\",\"customer\":\"Ali\",\"amount\":1}\n").unwrap();
    let err = refused();
    assert!(err.contains("a history file changed"), "{err}");
}

/// Written by two workers, the snapshot is restored straight into the version tables by two
/// workers, and routed by identity by one or three: the views are the same either way.
#[test]
fn batch_writes_the_views_of_the_newest_snapshot_with_any_number_of_workers() {
    let dir = temp_dir("batch-state");
    let state = dir.join("state");
    let broker = TestBroker::mock();
    // More live versions than a worker loads between two steps of its dataflow (4,096).
    let generated = dir.join("generated.jsonl");
    let status = lambda().args(["gen", "--rows", "12000", "--corrections", "0.1", "--out"]).arg(&generated).status();
    assert!(status.unwrap().success(), "lambda gen");
    let history_lines: Vec<String> = std::fs::read_to_string(&generated).unwrap().lines().map(String::from).collect();
    let history_path = history(&dir, &history_lines);
    let messages = random_messages(3, 80);
    two_snapshots(&broker, &history_path, &dir, &state, &messages);
    let expected = expected_views(&history_lines, "", &messages, &dir);
    for workers in ["2", "1", "3", "2 without the kept views"] {
        if workers.ends_with("kept views") {
            for kept in std::fs::read_dir(&state).unwrap().map(|e| e.unwrap().path()) {
                if kept.extension().is_some_and(|e| e == "bin") {
                    std::fs::remove_file(kept).unwrap();
                }
            }
        }
        let (workers, label) = (&workers[..1], workers);
        let out_dir = dir.join(format!("batch-{}", label.len()));
        let out = lambda()
            .args(["batch", "--workers", workers, "--state-dir"])
            .arg(&state)
            .arg("--out")
            .arg(&out_dir)
            .arg("--dead-letters")
            .arg(dir.join("batch-dead.jsonl"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{label} workers: {err}");
        assert_same_views(&out_dir, &expected);
        // The last stop kept the views' state of its 2 workers: 2 workers put it back.
        assert_eq!(err.contains("is put back"), label == "2", "{label} workers: {err}");
    }
}

#[test]
fn a_clean_stop_keeps_the_views_state_and_the_restart_puts_it_back_exactly() {
    let dir = temp_dir("durability-kept-views");
    let state = dir.join("state");
    let broker = TestBroker::mock();
    let history_lines = random_history(300);
    let history = history(&dir, &history_lines);
    // No periodic snapshot: the stop's is the one on disk.
    let options = with_state(&state, 3_600_000);
    let producer = producer(&broker.address());
    let mut run = start(&broker, &history, &dir, &options);
    let first = random_messages(21, 300);
    send(&producer, &first);
    assert_exact(&mut run, &history_lines, &first, "before the stop");
    let err = run.stop();
    assert!(err.contains("the views' state is kept for the next start"), "{err}");

    // Put back, then corrected and deleted by messages about the ids before the stop.
    let mut run = start(&broker, &history, &dir, &options);
    assert_exact(&mut run, &history_lines, &first, "put back at the restart");
    let second = random_messages(22, 300);
    send(&producer, &second);
    let all: Vec<Sent> = first.iter().chain(&second).cloned().collect();
    assert_exact(&mut run, &history_lines, &all, "after the messages that follow the restart");
    let err = run.stop();
    assert!(err.contains("the views' state kept with the snapshot is put back"), "{err}");
    assert!(err.contains("the views' state is kept for the next start"), "{err}");

    // Another number of workers cannot use it (a group lives where its key hashes to): the
    // views are computed from the versions, and agree.
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    let mut run = Run::start(&broker.address(), &history, 3, &dir, &options);
    assert_exact(&mut run, &history_lines, &all, "computed again on 3 workers");
    let err = run.stop();
    assert!(!err.contains("is put back"), "{err}");
}

#[test]
fn a_crash_restart_puts_back_the_views_kept_with_the_last_snapshot() {
    let dir = temp_dir("durability-crash-kept-views");
    let state = dir.join("state");
    let broker = TestBroker::mock();
    let history_lines = random_history(300);
    let history = history(&dir, &history_lines);
    let options = with_state(&state, 100);
    let producer = producer(&broker.address());
    let mut run = start(&broker, &history, &dir, &options);
    let first = random_messages(41, 300);
    send(&producer, &first);
    assert_exact(&mut run, &history_lines, &first, "before the crash");
    // Nothing more comes: after a few periods the newest snapshot stays the newest (one with
    // nothing new is not written), with every worker's views beside it.
    std::thread::sleep(Duration::from_millis(400));
    wait_for_kept_views(&state, 2, 1);
    let _ = run.child.kill();
    let _ = run.child.wait();

    // Put back without a clean stop, then corrected and deleted by later messages.
    let mut run = start(&broker, &history, &dir, &options);
    assert_exact(&mut run, &history_lines, &first, "put back after kill -9");
    let second = random_messages(42, 300);
    send(&producer, &second);
    let all: Vec<Sent> = first.iter().chain(&second).cloned().collect();
    assert_exact(&mut run, &history_lines, &all, "after the messages that follow the restart");
    let err = run.stop();
    assert!(err.contains("the views' state kept with the snapshot is put back"), "{err}");
}

#[test]
fn clean_stops_in_the_middle_of_a_stream_keep_the_views_exact() {
    let dir = temp_dir("durability-stops-mid-stream");
    let state = dir.join("state");
    let broker = TestBroker::mock();
    let history_lines = random_history(300);
    let history = history(&dir, &history_lines);
    let options = with_state(&state, 3_600_000);
    let sent = random_messages(31, 1200);
    // The stream goes on while the run is stopped and started again: each stop keeps the
    // views' state as of its snapshot, whatever had been admitted at later times or not.
    let streaming = {
        let (address, sent) = (broker.address(), sent.clone());
        std::thread::spawn(move || {
            let producer = producer(&address);
            for chunk in sent.chunks(40) {
                send(&producer, chunk);
                std::thread::sleep(Duration::from_millis(15));
            }
        })
    };
    let mut logs = String::new();
    for _ in 0..3 {
        let run = start(&broker, &history, &dir, &options);
        std::thread::sleep(Duration::from_millis(120));
        logs += &run.stop();
    }
    streaming.join().expect("the producer sends everything");
    let mut run = start(&broker, &history, &dir, &options);
    assert_exact(&mut run, &history_lines, &sent, "after three stops in the middle of the stream");
    logs += &run.stop();
    assert!(logs.contains("the views' state kept with the snapshot is put back"), "{logs}");
}
