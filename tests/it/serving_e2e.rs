//! The serving layer end to end: the real `lambda` binary's HTTP API, its prompt with piped
//! commands, and `lambda verify`, with a Kafka-protocol broker on loopback.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::live::*;
use common::temp_dir;
use rdkafka::producer::Producer;

#[test]
fn the_http_api_answers_from_the_views() {
    let dir = temp_dir("http");
    let broker = TestBroker::mock();
    let history_lines: Vec<String> = [
        r#"{"id":"h1","customer":"Ali","amount":120,"ts":"2025-01-01T10:15:00Z","category":"books"}"#,
        r#"{"id":"h2","customer":"Sara","amount":90.5,"ts":"2025-01-01T11:15:00Z"}"#,
        r#"{"customer":"","amount":1}"#,
    ]
    .map(String::from)
    .to_vec();
    let history_path = history(&dir, &history_lines);
    let mut run = Run::start(&broker.address(), &history_path, 2, &dir, &[]);
    run.wait_for(&BTreeMap::new());
    let messages = vec![
        Sent { partition: 0, key: None, payload: Some(r#"{"customer":"Ali","amount":80}"#.into()) },
        Sent { partition: 1, key: Some("h2".into()), payload: Some(r#"{"customer":"Sara","amount":50.25}"#.into()) },
    ];
    let producer = producer(&broker.address());
    send_all(&producer, &messages);
    producer.flush(Duration::from_secs(10)).unwrap();
    let end = end_offsets(&messages);
    let deadline = Instant::now() + Duration::from_secs(30);
    let ali = loop {
        let (code, body) = run.get("/v1/customers/Ali");
        if code == 200 && body["total"] == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "Ali never reached 200: {code} {body}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(ali["count"], 2);
    assert_eq!(ali["min"], 80);
    assert_eq!(ali["avg"], 100);
    for (p, o) in &end {
        assert!(ali["as_of"]["offsets"][format!("{TOPIC}/{p}")].as_i64().unwrap() >= *o, "{ali}");
    }
    assert!(ali["as_of"]["time"].as_u64().unwrap() > 0);

    let (code, sara) = run.get("/v1/customers/Sara");
    assert_eq!(code, 200);
    assert_eq!(sara["total"].to_string(), "50.25", "exact amounts, and the correction by key replaced 90.5");
    let (code, missing) = run.get("/v1/customers/Nobody");
    assert_eq!(code, 404);
    assert!(missing["error"].as_str().unwrap().contains("Nobody"));

    let (_, page) = run.get("/v1/customers?limit=1");
    assert_eq!(page["customers"][0]["customer"], "Ali");
    assert_eq!(page["next"], "Ali");
    let (_, page) = run.get("/v1/customers?limit=1&after=Ali");
    assert_eq!(page["customers"][0]["customer"], "Sara");
    let (code, bad) = run.get("/v1/customers?limit=lots");
    assert_eq!(code, 400);
    assert!(bad["error"].as_str().unwrap().contains("limit"));

    let (_, top) = run.get("/v1/top?k=1");
    assert_eq!(top["top"].as_array().unwrap().len(), 1);
    assert_eq!(top["top"][0]["customer"], "Ali");
    let (_, categories) = run.get("/v1/categories");
    assert!(categories["categories"].as_array().unwrap().iter().any(|c| c["category"] == "books" && c["total"] == 120));
    let (_, hourly) = run.get("/v1/hourly?from=2025-01-01T10&to=2025-01-01T10");
    assert_eq!(hourly["hourly"].as_array().unwrap().len(), 1, "{hourly}");
    assert_eq!(hourly["hourly"][0]["hour"], "2025-01-01T10:00:00Z");
    let (code, _) = run.get("/v1/hourly?from=someday");
    assert_eq!(code, 400);
    let (_, status) = run.get("/v1/status");
    assert_eq!(status["transactions"], 3);
    assert_eq!(status["customers"], 2);
    assert_eq!(status["dead_letters"]["empty_customer"], 1);
    assert_eq!(status["processes"], 1);
    let workers = status["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{status}");
    assert_eq!(workers[1]["partitions"], serde_json::json!([format!("{TOPIC}/1")]), "p % workers: {status}");
    assert!(status["as_of"]["time"].as_u64().unwrap() >= ali["as_of"]["time"].as_u64().unwrap(), "{status}");
    let partition_0 = &status["partitions"][format!("{TOPIC}/0")];
    assert_eq!(partition_0["next_offset"], 1, "{status}");
    assert_eq!(status["records_read"]["history"], 3, "{status}");
    assert_eq!(status["records_read"]["kafka"], 2, "{status}");
    let (code, _) = run.get("/healthz");
    assert_eq!(code, 200);

    // Every view at one time.
    let (code, views) = run.get("/v1/views?k=1");
    assert_eq!(code, 200);
    assert_eq!(views["customers"].as_array().unwrap().len(), 2, "{views}");
    assert_eq!(views["top"].as_array().unwrap().len(), 1, "{views}");
    assert_eq!(views["overall"]["total"].to_string(), "250.25", "{views}");
    assert_eq!(views["customer_count"], 2);
    let (code, _) = run.get("/v1/views?k=0");
    assert_eq!(code, 400);

    // The consumer lag comes from the high watermarks the workers see (noted every 50 ms).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, status) = run.get("/v1/status");
        let partition = &status["partitions"][format!("{TOPIC}/1")];
        if partition["lag"] == 0 && partition["high_watermark"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no lag reported: {status}");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Prometheus: view numbers, records read, lag, and the latency of the answers above.
    let (code, metrics) = run.get("/metrics");
    assert_eq!(code, 200);
    let metrics = metrics.as_str().expect("text, not JSON").to_owned();
    for line in [
        "lambda_transactions 3",
        "lambda_customers 2",
        "lambda_dead_letters{reason=\"empty_customer\"} 1",
        "lambda_records_read_total{source=\"kafka\"} 2",
        "lambda_next_offset{partition=\"real-time-orders/1\"} 1",
        "lambda_consumer_lag{partition=\"real-time-orders/1\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in:\n{metrics}");
    }
    let answered = metrics
        .lines()
        .find_map(|l| l.strip_prefix("lambda_query_duration_seconds_count{route=\"/v1/customers/{customer}\"} "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(answered.is_some_and(|n| n >= 3), "customer lookups are timed:\n{metrics}");
    run.stop();
}

#[test]
fn the_prompt_answers_piped_commands() {
    let dir = temp_dir("prompt");
    let broker = TestBroker::mock();
    let workshop = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/transactions.json");
    let mut child = prompt(&broker, &workshop, &dir);
    let commands =
        "help\nget Ali\nget Nobody\ntop 2\ncategories\nhourly\nstats\nhourly soon\ntop many\nfrobnicate\nquit\n";
    std::io::Write::write_all(child.0.stdin.as_mut().unwrap(), commands.as_bytes()).unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(child.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(child.0.wait().unwrap().success(), "quit stops the pipeline cleanly");
    for expected in [
        "get <customer>",
        "|     Ali|  320|    2|120|200|160|",
        "no customer \"Nobody\"",
        "|   1|     Ali|  320|",
        "|   2|  Mounir|  150|",
        "transactions  5",
        "customers     3",
        "records read  5 history, 0 Kafka",
        "consumer lag  0: ",
        "usage: hourly",
        "usage: top",
        "unknown command \"frobnicate\"",
        "as of {\"offsets\":{\"real-time-orders/0\":0",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("logical time  0\n"), "stats reads at a real logical time:\n{out}");
}

#[test]
fn verify_in_the_prompt_passes_and_can_fail() {
    use std::io::{BufRead, Write};
    let dir = temp_dir("verify");
    let broker = TestBroker::mock();
    let history_lines = vec![
        r#"{"id":"h1","customer":"Ali","amount":120}"#.to_string(),
        r#"{"id":"h2","customer":"Sara","amount":90}"#.to_string(),
    ];
    let history_path = history(&dir, &history_lines);
    let mut child = prompt(&broker, &history_path, &dir);
    let mut stdin = child.0.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let mut verify = |stdin: &mut std::process::ChildStdin| -> String {
        writeln!(stdin, "verify").unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "the prompt ended early");
            if line.starts_with("verify:") {
                let mut text = line.clone();
                // Differences follow, indented.
                if line.contains("differences") {
                    let mut more = String::new();
                    while stdout.read_line(&mut more).unwrap() > 0 && more.starts_with("  ") {
                        text.push_str(&more);
                        more.clear();
                    }
                }
                return text;
            }
        }
    };
    let producer = producer(&broker.address());
    let messages = vec![
        Sent {
            partition: 0,
            key: Some("h1".into()),
            payload: Some(r#"{"id":"h1","customer":"Ali","amount":80}"#.into()),
        },
        Sent { partition: 1, key: None, payload: Some(r#"{"customer":"Mounir","amount":200}"#.into()) },
        Sent { partition: 2, key: None, payload: Some("not json".into()) },
    ];
    send_all(&producer, &messages);
    producer.flush(Duration::from_secs(10)).unwrap();

    let healthy = verify(&mut stdin);
    assert!(healthy.contains("every view equals a from-scratch recomputation over 2 history records"), "{healthy}");

    // The views were built from the old file; verify re-reads the new one and must object.
    std::fs::write(&history_path, "{\"id\":\"h1\",\"customer\":\"Ali\",\"amount\":999}\n").unwrap();
    let broken = verify(&mut stdin);
    assert!(broken.contains("differences"), "{broken}");
    assert!(broken.contains("Sara") || broken.contains("Ali"), "{broken}");
    writeln!(stdin, "quit").unwrap();
    assert!(child.0.wait().unwrap().success());
}

#[test]
fn lambda_verify_passes_on_a_live_run_and_fails_on_other_input() {
    let dir = temp_dir("verify-cli");
    let broker = TestBroker::mock();
    let history_lines = random_history(40);
    let history_path = history(&dir, &history_lines);
    let messages = random_messages(11, 150);
    let mut run = Run::start(&broker.address(), &history_path, 2, &dir, &[]);
    let producer = producer(&broker.address());
    send_all(&producer, &messages);
    producer.flush(Duration::from_secs(10)).unwrap();
    run.wait_for(&end_offsets(&messages));

    // Over HTTP, every view equals the recomputation (corrections, deletes, tombstones, bad
    // records, 2 workers).
    let (_, views) = run.get("/v1/views?k=10");
    let mut live = atelier_lambda::verify::reading_from_views(&views, TOPIC).unwrap();
    let expected = expected_reading(&history_lines, "", &messages, 10);
    live.time = expected.time;
    assert_eq!(live, expected);
    assert!(!expected.customers.is_empty() && !expected.dead_letters.is_empty(), "a meaningful stream");
    // Point lookups are routed to the worker that owns the customer: each one answers.
    for (name, row) in &expected.customers {
        let path: String = name.bytes().map(|b| format!("%{b:02X}")).collect();
        let (code, answer) = run.get(&format!("/v1/customers/{path}"));
        assert_eq!(code, 200, "{name}: {answer}");
        assert_eq!((answer["customer"].as_str(), answer["count"].as_i64()), (Some(name.as_str()), Some(row.count)));
        assert_eq!(cents(&answer["total"]) as i128, row.total, "{name}: {answer}");
    }

    let verify = |input: &Path, live: &str| {
        lambda()
            .args(["verify", "--live", live, "--brokers", &broker.address()])
            .arg("--input")
            .arg(input)
            .output()
            .expect("lambda verify runs")
    };
    let out = verify(&history_path, &run.http);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("every view equals a from-scratch recomputation over 40 history records"), "{stdout}");

    // The live views were fed the whole file; verify re-reads only half of it: it must object.
    let other_dir = temp_dir("verify-cli-other");
    let half = history(&other_dir, &history_lines[..20]);
    let out = verify(&half, &run.http);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("differences between the live views and a recomputation"), "{stdout}");

    // Nothing to verify against: a clear error and its own exit code.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = verify(&history_path, &format!("127.0.0.1:{port}"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot verify"), "{out:?}");
    run.stop();
}

/// The exact cents of an amount in an answer.
fn cents(value: &serde_json::Value) -> i64 {
    atelier_lambda::amount::parse_cents(&value.to_string()).expect("an amount")
}

/// Checks that one answer of `/v1/views` is one state of the input: every view agrees with
/// every other. Returns its time and how many messages it reflects.
fn assert_not_torn(views: &serde_json::Value) -> (u64, i64) {
    let customers = views["customers"].as_array().unwrap();
    let overall = &views["overall"];
    let sum: i64 = customers.iter().map(|c| cents(&c["total"])).sum();
    let count: i64 = customers.iter().map(|c| c["count"].as_i64().unwrap()).sum();
    assert_eq!(sum, cents(&overall["total"]), "customers' totals and the overall total differ: {overall}");
    assert_eq!(count, overall["count"].as_i64().unwrap(), "transaction counts differ");
    assert_eq!(customers.len() as i64, views["customer_count"].as_i64().unwrap(), "customer counts differ");
    let categories = views["categories"].as_array().unwrap();
    let by_category: i64 = categories.iter().map(|c| cents(&c["total"])).sum();
    assert_eq!(by_category, sum, "categories and customers differ");
    let largest = customers.iter().map(|c| cents(&c["total"])).max();
    assert_eq!(views["top"].as_array().unwrap().first().map(|t| cents(&t["total"])), largest, "top is stale");
    let offsets = views["as_of"]["offsets"].as_object().unwrap();
    (views["as_of"]["time"].as_u64().unwrap(), offsets.values().map(|o| o.as_i64().unwrap()).sum())
}

#[test]
fn parallel_readers_never_see_a_torn_state_while_ingesting() {
    let dir = temp_dir("torn");
    let broker = TestBroker::mock();
    let history_lines = random_history(200);
    let history_path = history(&dir, &history_lines);
    let mut run = Run::start(&broker.address(), &history_path, 2, &dir, &[]);
    run.wait_for(&BTreeMap::new());
    // Generated load with corrections (and deletes among them) by the real producer command.
    let mut produce = Killed(
        lambda()
            .args(["produce", "--brokers", &broker.address(), "--rate", "3000", "--duration", "3"])
            .args(["--customers", "300", "--corrections", "0.3", "--seed", "5"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let producing = std::sync::atomic::AtomicBool::new(true);
    let seen: Vec<Vec<(u64, i64)>> = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..6)
            .map(|_| {
                scope.spawn(|| {
                    let mut seen = Vec::new();
                    while producing.load(std::sync::atomic::Ordering::SeqCst) {
                        let (code, views) = run.get("/v1/views?k=3");
                        assert_eq!(code, 200, "{views}");
                        seen.push(assert_not_torn(&views));
                    }
                    seen
                })
            })
            .collect();
        assert!(produce.0.wait().unwrap().success(), "lambda produce succeeds");
        std::thread::sleep(Duration::from_millis(300));
        producing.store(false, std::sync::atomic::Ordering::SeqCst);
        readers.into_iter().map(|r| r.join().expect("a reader saw a torn state")).collect()
    });
    for answers in &seen {
        // One client's answers never go back in time, nor in the stream.
        assert!(answers.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1), "{answers:?}");
    }
    let all: Vec<&(u64, i64)> = seen.iter().flatten().collect();
    let times: std::collections::BTreeSet<u64> = all.iter().map(|(t, _)| *t).collect();
    let (fewest, most) = (all.iter().map(|a| a.1).min().unwrap(), all.iter().map(|a| a.1).max().unwrap());
    assert!(times.len() >= 10, "the readers saw the views change while ingesting: {} times", times.len());
    assert!(fewest < most && most >= 9_000, "read during ingestion of 9000 messages: {fewest}..{most}");
    run.stop();
}
