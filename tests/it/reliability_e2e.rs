//! Reliability end to end: nothing is lost silently. Each test is a bug a hostile user found
//! (issue 10), driven through the real `lambda` binary: the input that lost data, the fault
//! that hung a stop, the option that was accepted silently.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use atelier_lambda::broker::Broker;
use common::live::*;
use common::temp_dir;
use rdkafka::producer::{BaseProducer, Producer};

/// `lambda args...` run to its end.
fn lambda_output(args: &[&str]) -> Output {
    lambda().args(args).stdin(Stdio::null()).output().expect("lambda runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect()
}

/// Sends `messages` and waits until the broker has them.
fn send(producer: &BaseProducer, messages: &[Sent]) {
    send_all(producer, messages);
    producer.flush(Duration::from_secs(10)).expect("the broker takes the messages");
}

fn message(partition: i32, body: &str) -> Sent {
    Sent { partition, key: None, payload: Some(body.to_owned()) }
}

/// Waits until `done` holds, or fails saying `what`.
fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, then the time the process took to exit and its status.
fn terminate(run: &mut Run) -> (Duration, std::process::ExitStatus) {
    let asked = Instant::now();
    let _ = Command::new("kill").args(["-TERM", &run.child.id().to_string()]).status();
    let deadline = asked + Duration::from_secs(20);
    loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            return (asked.elapsed(), status);
        }
        assert!(Instant::now() < deadline, "lambda run did not stop within 20 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_element_of_a_compact_json_array_is_its_own_transaction() {
    let dir = temp_dir("compact-array");
    let input = dir.join("p.json");
    // One line, three objects: they once shared the identity `p.json:1` and replaced each other.
    std::fs::write(
        &input,
        r#"[{"customer": "a", "amount": 1}, {"customer": "b", "amount": 2}, {"customer": "a", "amount": 5}]"#,
    )
    .unwrap();
    let out = dir.join("out");
    let o = lambda_output(&["batch", "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        lines(&out.join("customers.csv")),
        ["customer,total,count,min,max,avg", "a,6,2,1,5,3", "b,2,1,2,2,2"],
        "every element counts"
    );
}

#[test]
fn lines_after_a_json_array_are_read_too() {
    let dir = temp_dir("after-array");
    let input = dir.join("mixed.json");
    std::fs::write(&input, "[{\"customer\":\"a\",\"amount\":1}]\n{\"customer\":\"b\",\"amount\":2}\n{\"customer\":\n")
        .unwrap();
    let out = dir.join("out");
    let o = lambda_output(&["batch", "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(lines(&out.join("customers.csv")), ["customer,total,count,min,max,avg", "a,1,1,1,1,1", "b,2,1,2,2,2"]);
    let letters = lines(&out.join("dead_letters.jsonl"));
    assert_eq!(letters.len(), 1, "the broken last line is a dead letter, not dropped: {letters:?}");
    assert!(letters[0].contains("mixed.json:3") && letters[0].contains("invalid_json"), "{letters:?}");
}

#[test]
fn a_byte_order_mark_does_not_spoil_the_first_record() {
    let dir = temp_dir("bom");
    let lines_path = dir.join("h.jsonl");
    std::fs::write(&lines_path, "\u{feff}{\"customer\":\"a\",\"amount\":1}\n{\"customer\":\"b\",\"amount\":2}\n")
        .unwrap();
    let array_path = dir.join("h.json");
    std::fs::write(&array_path, "\u{feff}[{\"customer\":\"c\",\"amount\":3}]").unwrap();
    let out = dir.join("out");
    let o = lambda_output(&[
        "batch",
        "--input",
        lines_path.to_str().unwrap(),
        array_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(lines(&out.join("customers.csv")).len(), 4, "a, b and c");
    assert!(lines(&out.join("dead_letters.jsonl")).is_empty());
}

#[test]
fn no_output_may_write_over_an_input() {
    let dir = temp_dir("output-over-input");
    let input = dir.join("h.jsonl");
    let text = "{\"customer\":\"a\",\"amount\":1}\n";
    std::fs::write(&input, text).unwrap();
    let i = input.to_str().unwrap();
    let parent = dir.to_str().unwrap();
    for (args, option) in [
        (vec!["batch", "--input", i, "--dead-letters", i], "--dead-letters"),
        (vec!["batch", "--input", i, "--out", parent], "--out"),
        (vec!["run", "--input", i, "--dead-letters", i, "--http", "off", "--pg", "off"], "--dead-letters"),
        (vec!["run", "--input", i, "--views-out", parent, "--http", "off", "--pg", "off"], "--views-out"),
        (vec!["run", "--input", i, "--state-dir", parent, "--http", "off", "--pg", "off"], "--state-dir"),
    ] {
        let o = lambda_output(&args);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(stderr(&o).contains("is an input") && stderr(&o).contains(option), "{args:?}: {}", stderr(&o));
        assert_eq!(std::fs::read_to_string(&input).unwrap(), text, "{args:?} touched the input");
    }
}

#[test]
fn absurd_options_are_refused_with_a_reason() {
    let started = Instant::now();
    for (args, says) in [
        (vec!["batch", "--workers", "1000"], "core"),
        (vec!["batch", "--processes", "0"], "--processes must be at least 1"),
        (vec!["batch", "--top", "0"], "--top must be at least 1"),
        (vec!["run", "--snapshot-every-ms", "0"], "--snapshot-every-ms must be at least"),
        (vec!["run", "--fetch-wait-ms", "0"], "--fetch-wait-ms must be between 1 and 60000"),
        (vec!["run", "--workers", "1000", "--brokers", "127.0.0.1:1"], "core"),
    ] {
        let o = lambda_output(&args);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
    assert!(started.elapsed() < Duration::from_secs(30), "refusals are immediate");
}

#[test]
fn a_fifo_is_refused_rather_than_waited_on() {
    let dir = temp_dir("fifo");
    let fifo = dir.join("pipe");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let o = lambda_output(&["batch", "--input", fifo.to_str().unwrap(), "--out", dir.join("out").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("FIFO"), "{}", stderr(&o));
}

#[test]
fn errors_name_their_cause_once() {
    let o = lambda_output(&["batch", "--config", "/nonexistent/lambda.toml"]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    let o = lambda_output(&["batch", "--input", "/nonexistent/h.jsonl"]);
    assert_eq!(stderr(&o).matches("No such file").count(), 1, "{}", stderr(&o));
}

/// The snapshot files of `state`, newest first.
fn snapshots(state: &Path) -> Vec<std::path::PathBuf> {
    atelier_lambda::state::list(state).unwrap()
}

/// The newest snapshot's offsets, if one reads.
fn newest_offsets(state: &Path) -> Option<BTreeMap<i32, i64>> {
    let newest = snapshots(state).into_iter().next()?;
    atelier_lambda::state::read(&newest).ok().map(|s| s.meta.offsets.into_iter().collect())
}

#[test]
fn dead_letters_survive_kill_9_exactly_once() {
    let dir = temp_dir("dead-kill");
    let state = dir.join("state");
    let broker = TestBroker::mock();
    let history_path = history(&dir, &["{\"customer\":\"Ali\",\"amount\":1}".to_owned()]);
    let producer = producer(&broker.address());
    let options = ["--state-dir", state.to_str().unwrap(), "--snapshot-every-ms", "50"];
    let dead = dir.join("dead.jsonl");

    // Bad and good messages; a snapshot covers them; kill -9 at once (the letters were once
    // only in a buffer that a kill loses, and the snapshot meant they were never read again).
    let mut sent: Vec<Sent> = Vec::new();
    let first: Vec<Sent> = (0..12)
        .map(|i| message(i % 3, if i % 2 == 0 { "{\"customer\":1}" } else { "{\"customer\":\"B\",\"amount\":2}" }))
        .collect();
    let mut run = Run::start(&broker.address(), &history_path, 2, &dir, &options);
    send(&producer, &first);
    sent.extend(first);
    let covered = end_offsets(&sent);
    wait_until("a snapshot covers the first messages", Duration::from_secs(60), || {
        newest_offsets(&state).is_some_and(|o| covered.iter().all(|(p, n)| o.get(p) == Some(n)))
    });
    let _ = run.child.kill();
    let _ = run.child.wait();
    assert_eq!(lines(&dead).len(), 6, "every dead letter the snapshot counts is on disk");

    // More bad messages, read and written to the file (it is flushed every second) but in no
    // snapshot, then kill -9 again: the restart reads them again and must not write their
    // letters twice.
    let rarely = ["--state-dir", state.to_str().unwrap(), "--snapshot-every-ms", "600000"];
    let mut run = Run::start(&broker.address(), &history_path, 2, &dir, &rarely);
    let second: Vec<Sent> = (0..9).map(|i| message(i % 3, "not json")).collect();
    send(&producer, &second);
    sent.extend(second);
    run.views_at(&end_offsets(&sent));
    wait_until("the second letters are in the file", Duration::from_secs(10), || lines(&dead).len() == 15);
    let _ = run.child.kill();
    let _ = run.child.wait();

    let mut run = Run::start(&broker.address(), &history_path, 2, &dir, &rarely);
    let reading = run.views_at(&end_offsets(&sent));
    run.stop();
    let letters = lines(&dead);
    let counted: i64 = reading.dead_letters.iter().map(|(_, n)| n).sum();
    assert_eq!(counted, 15);
    assert_eq!(letters.len(), 15, "one line per dead letter, none lost, none twice: {letters:#?}");
    let places: std::collections::BTreeSet<_> = letters
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["source"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(places.len(), 15, "each message's letter once");
}

#[test]
fn snapshot_retention_keeps_two_usable_snapshots_and_moves_bad_ones_aside() {
    let dir = temp_dir("retention");
    let state = dir.join("state");
    let broker = TestBroker::mock();
    let history_path = history(&dir, &["{\"customer\":\"Ali\",\"amount\":1}".to_owned()]);
    let producer = producer(&broker.address());
    let options = ["--state-dir", state.to_str().unwrap(), "--snapshot-every-ms", "60000"];
    let mut sent = Vec::new();
    // Two runs, each stopped cleanly: two snapshots.
    for round in 0..2 {
        let mut run = Run::start(&broker.address(), &history_path, 2, &dir, &options);
        let batch: Vec<Sent> =
            (0..3).map(|i| message(i, &format!("{{\"customer\":\"C{round}\",\"amount\":1}}"))).collect();
        send(&producer, &batch);
        sent.extend(batch);
        run.views_at(&end_offsets(&sent));
        run.stop();
    }
    let files = snapshots(&state);
    assert_eq!(files.len(), 2);
    // The newest is cut short: the next run falls back to the older one, and moves the
    // damaged one aside.
    let damaged = files[0].clone();
    let bytes = std::fs::read(&damaged).unwrap();
    std::fs::write(&damaged, &bytes[..bytes.len() / 2]).unwrap();
    let mut run = Run::start(&broker.address(), &history_path, 2, &dir, &options);
    let batch: Vec<Sent> = (0..3).map(|i| message(i, "{\"customer\":\"C2\",\"amount\":1}")).collect();
    send(&producer, &batch);
    sent.extend(batch);
    run.views_at(&end_offsets(&sent));
    let err = run.stop();
    assert!(err.contains("moved aside"), "{err}");
    let mut aside = damaged.as_os_str().to_owned();
    aside.push(".corrupt");
    assert!(Path::new(&aside).exists(), "the damaged snapshot is kept aside for inspection");
    let files = snapshots(&state);
    assert_eq!(files.len(), 2, "{files:?}");
    for file in &files {
        atelier_lambda::state::read(file).unwrap_or_else(|e| panic!("{} is kept but unusable: {e}", file.display()));
    }
}

#[test]
fn a_second_run_on_the_same_state_directory_is_refused() {
    let dir = temp_dir("state-lock");
    let state = dir.join("state");
    let broker = TestBroker::mock();
    let history_path = history(&dir, &["{\"customer\":\"Ali\",\"amount\":1}".to_owned()]);
    let options = ["--state-dir", state.to_str().unwrap()];
    let mut first = Run::start(&broker.address(), &history_path, 1, &dir, &options);
    first.views_at(&BTreeMap::new());
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let mut second = Run::start(&broker.address(), &history_path, 1, &other, &options);
    let status = second.child.wait().unwrap();
    let err = second.stderr();
    assert!(!status.success());
    assert!(err.contains("another lambda run") && err.contains(&first.child.id().to_string()), "{err}");
    first.stop();
}

#[test]
fn a_read_only_state_directory_is_refused_at_start() {
    let dir = temp_dir("state-readonly");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let history_path = history(&dir, &["{\"customer\":\"Ali\",\"amount\":1}".to_owned()]);
    // A file where the directory should be is refused the same way, also as root (for whom
    // permission bits do not stop a write).
    let not_a_dir = dir.join("plain-file");
    std::fs::write(&not_a_dir, "x").unwrap();
    let started = Instant::now();
    let o = lambda_output(&[
        "run",
        "--input",
        history_path.to_str().unwrap(),
        "--brokers",
        "127.0.0.1:1",
        "--http",
        "off",
        "--state-dir",
        not_a_dir.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("state directory"), "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn kafka_unreachable_at_start_serves_the_history_and_stops_at_once() {
    let dir = temp_dir("unreachable-start");
    let history_path = history(&dir, &["{\"customer\":\"Ali\",\"amount\":120}".to_owned()]);
    let mut run = Run::start("127.0.0.1:1", &history_path, 2, &dir, &[]);
    // The history is served with no offsets yet, and the status says why.
    wait_until("the history is served", Duration::from_secs(30), || {
        std::net::TcpStream::connect(&run.http).is_ok() && run.get("/v1/customers/Ali").0 == 200
    });
    let (_, ali) = run.get("/v1/customers/Ali");
    assert_eq!(ali["total"], 120);
    assert_eq!(ali["as_of"]["offsets"], serde_json::json!({}));
    wait_until("the status says Kafka is unreachable", Duration::from_secs(10), || {
        run.get("/v1/status").1["kafka"]["state"] == "unreachable"
    });
    let (code, ready) = run.get("/readyz");
    assert_eq!(code, 503, "{ready}");
    let (stopped_in, status) = terminate(&mut run);
    assert!(status.success(), "{}", run.stderr());
    assert!(stopped_in < Duration::from_secs(5), "a stop took {stopped_in:?}");
}

#[test]
fn kafka_going_away_mid_run_does_not_hang_a_stop() {
    let dir = temp_dir("unreachable-mid");
    let broker = TestBroker::mock();
    let history_path = history(&dir, &["{\"customer\":\"Ali\",\"amount\":120}".to_owned()]);
    let producer = producer(&broker.address());
    let mut run = Run::start(&broker.address(), &history_path, 2, &dir, &[]);
    let sent = vec![message(0, "{\"customer\":\"Ali\",\"amount\":80}")];
    send(&producer, &sent);
    run.views_at(&end_offsets(&sent));
    broker.set_reachable(false);
    std::thread::sleep(Duration::from_secs(2));
    let (stopped_in, status) = terminate(&mut run);
    assert!(status.success(), "{}", run.stderr());
    assert!(stopped_in < Duration::from_secs(8), "a stop took {stopped_in:?}");
}

#[test]
fn a_topic_that_starts_again_stops_the_pipeline_loudly() {
    let dir = temp_dir("topic-reset");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let brokers = format!("127.0.0.1:{port}");
    let broker = lambda_broker(port, 3, TOPIC);
    let history_path = history(&dir, &["{\"customer\":\"Ali\",\"amount\":120}".to_owned()]);
    let mut run = Run::start(&brokers, &history_path, 2, &dir, &[]);
    let before: Vec<Sent> = (0..6).map(|i| message(i % 3, "{\"customer\":\"Old\",\"amount\":1}")).collect();
    send(&producer(&brokers), &before);
    run.views_at(&end_offsets(&before));
    // `lambda broker` stopped and started again on the same port: every partition starts
    // again at offset 0, and new messages take the offsets of old ones.
    drop(broker);
    let _broker = lambda_broker(port, 3, TOPIC);
    let after: Vec<Sent> = (0..4).map(|i| message(i % 3, "{\"customer\":\"New\",\"amount\":1}")).collect();
    send(&producer(&brokers), &after);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "new messages at old offsets were taken for redeliveries, silently");
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = run.stderr();
    assert!(!status.success(), "{err}");
    assert!(err.contains("deleted and recreated"), "{err}");
}

#[test]
fn messages_evicted_before_they_are_read_are_counted_and_said() {
    let dir = temp_dir("evicted");
    // One partition, more than librdkafka's mock keeps (its newest 5 MiB).
    let broker = Broker::start(0, TOPIC, 1).unwrap();
    let producer = producer(&broker.address());
    let total = 120_000i64;
    for i in 0..total {
        let body = format!("{{\"customer\":\"c{}\",\"amount\":1,\"note\":\"{:0>60}\"}}", i % 50, i);
        let mut record = rdkafka::producer::BaseRecord::<str, str>::to(TOPIC).partition(0).payload(&body);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let history_path = history(&dir, &["{\"customer\":\"Ali\",\"amount\":120}".to_owned()]);
    let mut run = Run::start(&broker.address(), &history_path, 2, &dir, &[]);
    let reading = run.views_at(&[(0, total)].into());
    let (_, status) = run.get("/v1/status");
    let skipped = status["partitions"][format!("{TOPIC}/0")]["skipped"].as_i64().unwrap();
    assert!(skipped > 0, "{status}");
    assert_eq!(reading.overall.count, 1 + total - skipped, "every message not skipped is in the views");
    let (_, metrics) = run.get("/metrics");
    assert!(metrics
        .as_str()
        .unwrap()
        .contains(&format!("lambda_kafka_skipped_messages{{partition=\"{TOPIC}/0\"}} {skipped}")));
    let err = run.stop();
    assert!(err.contains("removed from the topic") && err.contains(&format!("messages={skipped}")), "{err}");
}

#[test]
fn http_errors_are_json_and_a_resume_reads_no_history() {
    let dir = temp_dir("json-errors");
    let state = dir.join("state");
    let broker = TestBroker::mock();
    let history_path = history(&dir, &["{\"customer\":\"Ali\",\"amount\":120}".to_owned()]);
    let options = ["--state-dir", state.to_str().unwrap()];
    let mut run = Run::start(&broker.address(), &history_path, 2, &dir, &options);
    run.views_at(&BTreeMap::new());
    let (code, body) = run.get("/v1/customers/%FF");
    assert_eq!(code, 400);
    assert!(body["error"].is_string(), "{body}");
    let (_, status) = run.get("/v1/status");
    assert_eq!(status["records_read"]["history"], 1);
    run.stop();
    // Resumed from the snapshot: no history record is read.
    let mut run = Run::start(&broker.address(), &history_path, 2, &dir, &options);
    run.views_at(&BTreeMap::new());
    let (_, status) = run.get("/v1/status");
    assert_eq!(status["records_read"]["history"], 0, "{status}");
    assert_eq!(status["transactions"], 1);
    run.stop();
}
