//! Read-your-writes end to end: `lambda produce` (the real binary) writes a correction and
//! prints where it landed; the very next read — over HTTP, psql and a changefeed — asks for
//! at least that position and must never answer stale. A bound the views cannot reach is a
//! 504 (57014 over SQL) saying how far they got; a malformed one a 400.

use crate::common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::feed::*;
use common::live::*;
use common::temp_dir;

/// `lambda produce` of one line: the bound it prints.
fn produce(brokers: &str, line: &str) -> String {
    let mut child = lambda()
        .args(["produce", "--brokers", brokers, "--input", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lambda produce starts");
    child.stdin.take().unwrap().write_all(format!("{line}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let bound = stdout.trim().strip_prefix("min_offsets=").unwrap_or_else(|| panic!("a bound: {stdout:?}"));
    assert!(bound.starts_with(&format!("{TOPIC}/")), "{bound}");
    bound.to_owned()
}

#[test]
fn a_read_after_a_write_never_answers_stale() {
    let dir = temp_dir("read-your-writes-e2e");
    let broker = TestBroker::mock();
    let history = history(&dir, &random_history(50));
    let pg = free_port();
    let address = format!("127.0.0.1:{pg}");
    let mut run = Run::start(&broker.address(), &history, 2, &dir, &["--pg", &address]);
    run.views_at(&Default::default());

    // One transaction, corrected again and again: its amount is the write's number.
    for i in 1..=6 {
        let bound = produce(&broker.address(), &format!(r#"{{"id":"rw","customer":"Writer","amount":{i}}}"#));
        let path = match i % 3 {
            0 => format!("/v1/customers/Writer?min_offsets={bound}"),
            1 => format!("/v1/views/customers/Writer?min_offsets={bound}&timeout_ms=10000"),
            _ => format!("/v1/views?min_offsets={bound}"),
        };
        let (status, body) = run.get(&path);
        assert_eq!(status, 200, "{path}: {body}");
        let total = match i % 3 {
            0 => body["total"].clone(),
            1 => body["row"]["total"].clone(),
            _ => body["customers"].as_array().unwrap().iter().find(|c| c["customer"] == "Writer").unwrap()["total"]
                .clone(),
        };
        assert_eq!(total.to_string(), i.to_string(), "{path}: the write {i} is read back at once: {body}");
    }

    // Over psql: a session sets the bound, and its next read waits for it.
    let bound = produce(&broker.address(), r#"{"id":"rw","customer":"Writer","amount":70}"#);
    let set = format!("SET min_offsets = '{bound}'");
    let (out, err, ok) = psql(pg, &[&set, "SELECT total FROM customers WHERE customer = 'Writer'"]);
    assert!(ok && out.lines().last() == Some("70.00"), "psql reads its write: {out:?} {err}");

    // And a changefeed's first rows.
    let bound = produce(&broker.address(), r#"{"id":"rw","customer":"Writer","amount":80}"#);
    let feed =
        Subscriber::open(&run.http, &format!("/v1/subscribe?view=customers&key=Writer&min_offsets={bound}"), &[]);
    assert_eq!(feed.status, 200, "{}", feed.error);
    let (kind, _, snapshot) = feed.next(Duration::from_secs(10));
    assert_eq!((kind.as_str(), snapshot["rows"][0]["total"].to_string()), ("snapshot", "80".into()), "{snapshot}");

    // A read asked for a write not made yet waits for it (a read that did not wait would
    // answer 80 at once).
    let (partition, offset) = bound.rsplit_once(':').unwrap();
    let next = format!("{partition}:{}", offset.parse::<i64>().unwrap() + 1);
    let http = run.http.clone();
    let started = Instant::now();
    let path = format!("/v1/customers/Writer?min_offsets={next}");
    let reader = std::thread::spawn(move || http_get(&http, &path));
    std::thread::sleep(Duration::from_millis(300));
    let written = produce(&broker.address(), r#"{"id":"rw","customer":"Writer","amount":90}"#);
    assert_eq!(written, next, "the write lands where the read waits");
    let (status, body) = reader.join().unwrap();
    assert_eq!((status, body["total"].to_string()), (200, "90".into()), "{body}");
    assert!(started.elapsed() >= Duration::from_millis(300));

    // A bound beyond the stream: 504 after the timeout, with how far the views got.
    let far = format!("{TOPIC}/0:1000000");
    let started = Instant::now();
    let (status, body) = run.get(&format!("/v1/top?min_offsets={far}&timeout_ms=300"));
    assert_eq!(status, 504, "{body}");
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited the timeout");
    assert!(body["as_of"]["offsets"].is_object(), "{body}");
    let (_, err, _) =
        psql(pg, &["SET timeout_ms = 200", &format!("SET min_offsets = '{far}'"), "SELECT 1 FROM overall"]);
    assert!(err.contains("did not reach min_offsets"), "{err}");

    // Malformed: 400, and the same over SQL.
    for bad in ["real-time-orders/0", "other/0:1", "real-time-orders/x:1"] {
        let (status, body) = run.get(&format!("/v1/top?min_offsets={bad}"));
        assert_eq!(status, 400, "{bad}: {body}");
    }
    assert_eq!(run.get(&format!("/v1/top?min_offsets={far}&timeout_ms=soon")).0, 400);
    let (_, err, _) = psql(pg, &["SET min_offsets = 'nowhere/0:1'"]);
    assert!(err.contains("not read here"), "{err}");
    run.stop();
}
