//! Scale-out end to end: one dataflow over two `lambda run` processes of two workers each on
//! 127.0.0.1 (timely's cluster mode), against a single-process run and a from-scratch
//! recomputation.

use crate::common;

use std::time::Duration;

use common::feed::*;
use common::live::*;
use common::temp_dir;
use rdkafka::producer::Producer;

/// `POST /v1/sql` of `statement` to `run`: the JSON answer.
fn sql(run: &Run, statement: &str) -> serde_json::Value {
    post_sql(&run.http, statement).1
}

/// The time of process 0's views now.
fn from_cluster_time(run: &Run) -> u64 {
    run.get("/v1/top").1["as_of"]["time"].as_u64().expect("a time")
}

/// A created view over the cluster answers what the same ad-hoc query answers.
fn assert_view_exact(run: &Run, when: &str) {
    let view = sql(run, "SELECT * FROM per_customer ORDER BY 1");
    let adhoc = sql(run, "SELECT customer, count(*), max(amount) FROM transactions GROUP BY customer ORDER BY 1");
    assert!(view["rows"].as_array().is_some_and(|r| !r.is_empty()), "{when}: {view}");
    assert_eq!(view["rows"], adhoc["rows"], "{when}");
}

#[test]
fn two_processes_of_two_workers_answer_like_one_process_and_the_recomputation() {
    let dir = temp_dir("cluster");
    let broker = TestBroker::mock();
    let history_lines = random_history(60);
    let history_path = history(&dir, &history_lines);
    let messages = random_messages(17, 200);
    let hosts = hostfile(&dir);

    let sink = |_: &std::path::Path| vec!["--sink".to_owned(), "customers=cluster-customers".to_owned()];
    let mut cluster = start_cluster_with(&broker, &history_path, &dir, &hosts, sink).into_iter();
    let (mut first, second) = (cluster.next().unwrap(), cluster.next().unwrap());
    let alone_dir = dir.join("alone");
    std::fs::create_dir_all(&alone_dir).unwrap();
    let mut alone = Run::start(&broker.address(), &history_path, 2, &alone_dir, &[]);

    // A changefeed of the cluster's customers, open before the stream.
    first.views_at(&Default::default());
    let feed = Subscriber::open(&first.http, "/v1/subscribe?view=customers", &[]);
    assert_eq!(feed.status, 200, "{}", feed.error);

    let producer = producer(&broker.address());
    send_all(&producer, &messages);
    producer.flush(Duration::from_secs(10)).unwrap();
    let end = end_offsets(&messages);

    // Read-your-writes over the cluster: the bound of every message, at once.
    let bound: Vec<String> = end.iter().map(|(p, o)| format!("{TOPIC}/{p}:{o}")).collect();
    let (code, top) = first.get(&format!("/v1/top?min_offsets={}", bound.join(",")));
    assert_eq!(code, 200, "{top}");
    assert!(end.iter().all(|(p, o)| top["as_of"]["offsets"][format!("{TOPIC}/{p}")] == *o), "{top}");

    // Process 0 answers for the whole cluster, at one time, with every key.
    let mut from_cluster = first.views_at(&end);
    let mut from_one_process = alone.views_at(&end);
    let expected = expected_reading(&history_lines, "", &messages, 10);
    from_cluster.time = expected.time;
    from_one_process.time = expected.time;
    assert_eq!(from_cluster, expected, "the cluster's views differ from the recomputation");
    assert_eq!(from_cluster, from_one_process, "the cluster and one process answer alike");
    for (name, row) in &expected.customers {
        let path: String = name.bytes().map(|b| format!("%{b:02X}")).collect();
        let (code, answer) = first.get(&format!("/v1/customers/{path}"));
        assert_eq!((code, answer["count"].as_i64()), (200, Some(row.count)), "{name}: {answer}");
    }

    // The feed folds to the recomputation's customers (partition 2 is read by process 1).
    let mut folded = Folded::default();
    while !folded.reached(&end) {
        let (kind, _, data) = feed.next(Duration::from_secs(30));
        folded.apply(&kind, &data);
    }
    let fed: Vec<(String, i64)> = folded
        .rows()
        .iter()
        .map(|text| {
            let row: serde_json::Value = serde_json::from_str(text).unwrap();
            (row["customer"].as_str().unwrap().to_owned(), row["count"].as_i64().unwrap())
        })
        .collect();
    let mut fed = fed;
    fed.sort();
    let counts: Vec<(String, i64)> = expected.customers.iter().map(|(c, r)| (c.clone(), r.count)).collect();
    assert_eq!(fed, counts, "a changefeed over the cluster folds to the recomputation");

    // The sink of the cluster's customers, read with kcat, is the view.
    let views_time = from_cluster_time(&first);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, status) = first.get("/v1/status");
        if status["sinks"][0]["time"].as_u64() >= Some(views_time) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the sink never caught up: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, view) = first.get("/v1/views/customers");
    let rows: std::collections::BTreeMap<String, String> = view["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (serde_json::json!({ "customer": r["customer"] }).to_string(), r.to_string()))
        .collect();
    assert_eq!(kcat_view(&broker.address(), "cluster-customers"), rows, "the sink topic is the view");

    // SQL over the cluster: every worker of both processes scans its share at one time.
    for statement in [
        "SELECT customer, count(*), sum(amount), min(amount), max(amount) FROM transactions GROUP BY customer ORDER BY customer",
        "SELECT * FROM customers ORDER BY customer",
        "SELECT category, count(*) FROM transactions GROUP BY category ORDER BY category",
    ] {
        let (clustered, single) = (sql(&first, statement), sql(&alone, statement));
        assert!(clustered["rows"].is_array(), "{clustered}");
        assert_eq!(clustered["rows"], single["rows"], "{statement}");
    }
    let by_customer = sql(&first, "SELECT customer, count(*) FROM transactions GROUP BY customer ORDER BY customer");
    let counted: Vec<(String, i64)> = by_customer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_owned(), r[1].as_i64().unwrap()))
        .collect();
    let expected_counts: Vec<(String, i64)> = expected.customers.iter().map(|(c, r)| (c.clone(), r.count)).collect();
    assert_eq!(counted, expected_counts, "SQL over the cluster equals the recomputation");

    // Every worker of every process, with the partitions it reads: p % 4 workers.
    let (_, status) = first.get("/v1/status");
    assert_eq!(status["processes"], 2, "{status}");
    let workers = status["workers"].as_array().unwrap();
    let owned: Vec<(i64, i64, usize)> = workers
        .iter()
        .map(|w| {
            let (worker, process) = (w["worker"].as_i64().unwrap(), w["process"].as_i64().unwrap());
            (worker, process, w["partitions"].as_array().unwrap().len())
        })
        .collect();
    assert_eq!(owned, vec![(0, 0, 1), (1, 0, 1), (2, 1, 1), (3, 1, 0)], "{status}");
    assert_eq!(workers[2]["partitions"][0], format!("{TOPIC}/2"));

    // A stop asked of process 1 stops process 0 too, cleanly; each consumed only its own.
    let log_second = second.stop();
    let log_first = first.stop_after_peer();
    assert!(log_first.contains("stopping every process"), "{log_first}");
    let consumed = |log: &str| -> Vec<String> {
        log.lines().filter(|l| l.contains("stopping; next offsets")).map(|l| l.to_string()).collect()
    };
    let (of_first, of_second) = (consumed(&log_first), consumed(&log_second));
    assert!(of_first.iter().all(|l| !l.contains("2: ")), "process 0 read only partitions 0 and 1: {of_first:?}");
    assert!(
        of_second.iter().all(|l| l.contains("{2: ") && !l.contains("0: ")),
        "process 1 read partition 2: {of_second:?}"
    );
    alone.stop();
}

#[test]
fn when_a_process_dies_the_other_stops_and_names_it() {
    let dir = temp_dir("cluster-death");
    let broker = TestBroker::mock();
    let history_path = history(&dir, &random_history(20));
    let hosts = hostfile(&dir);
    let mut runs = start_cluster(&broker, &history_path, &dir, &hosts);
    runs[0].views_at(&end_offsets(&[]));
    let _ = runs[1].child.kill(); // SIGKILL
    let _ = runs[1].child.wait();

    let first = &mut runs[0];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = first.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "process 0 went on without process 1");
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = first.stderr();
    assert!(!status.success(), "{log}");
    assert!(log.contains("process 1 of the cluster is gone"), "{log}");
}

#[test]
fn batch_over_two_processes_writes_what_one_process_writes() {
    let dir = temp_dir("cluster-batch");
    let history_lines = random_history(80);
    let history_path = history(&dir, &history_lines);
    let hosts = hostfile(&dir);
    let batch = |out: &str, cluster: &[&str]| {
        lambda()
            .args(["batch", "--workers", "2"])
            .args(cluster)
            .arg("--input")
            .arg(&history_path)
            .arg("--out")
            .arg(dir.join(out))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let processes: Vec<_> = ["1", "0"]
        .iter()
        .map(|i| batch(&format!("out{i}"), &["--processes", "2", "--process", i, "--hostfile", &hosts]))
        .collect();
    for process in processes {
        let out = process.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let alone = batch("alone", &[]).wait_with_output().unwrap();
    assert!(alone.status.success());
    assert_same_views(&dir.join("out0"), &dir.join("alone"));
    let expected = expected_views(&history_lines, "", &[], &dir);
    assert_same_views(&dir.join("out0"), &expected);
    assert!(!dir.join("out1").join("customers.jsonl").exists(), "only process 0 writes the views");
}

/// Starts a cluster of two processes of two workers, each with its own state directory
/// (process 0 writes the snapshots; process 1 only takes part).
fn start_cluster_with_state(
    broker: &TestBroker,
    history: &std::path::Path,
    dir: &std::path::Path,
    hosts: &str,
) -> Vec<Run> {
    start_cluster_with(broker, history, dir, hosts, |process_dir| {
        let state = process_dir.join("state").display().to_string();
        vec!["--state-dir".into(), state, "--snapshot-every-ms".into(), "30".into()]
    })
}

#[test]
fn a_cluster_with_snapshots_resumes_after_a_crash_and_a_stop() {
    let dir = temp_dir("cluster-state");
    let broker = TestBroker::mock();
    let history_lines = random_history(60);
    let history_path = history(&dir, &history_lines);
    let messages = random_messages(23, 240);
    let (first_half, second_half) = messages.split_at(120);
    let hosts = hostfile(&dir);
    let producer = producer(&broker.address());
    let expected = |sent: &[Sent]| expected_reading(&history_lines, "", sent, 10);
    let exact = |run: &mut Run, sent: &[Sent], when: &str, with_view: bool| {
        let mut live = run.views_at(&end_offsets(sent));
        live.time = 1;
        let created: Vec<String> = std::mem::take(&mut live.created).into_iter().map(|v| v.name).collect();
        assert_eq!(live, expected(sent), "{when}");
        assert_eq!(created, if with_view { vec!["per_customer"] } else { vec![] }, "{when}");
        if with_view {
            assert_view_exact(run, when);
        }
    };

    let mut cluster = start_cluster_with_state(&broker, &history_path, &dir, &hosts);
    send_all(&producer, first_half);
    producer.flush(Duration::from_secs(10)).unwrap();
    exact(&mut cluster[0], first_half, "before the crash", false);
    // A view created on process 0 is installed on every worker of both processes, and kept.
    let created = sql(
        &cluster[0],
        "CREATE VIEW per_customer AS SELECT customer, count(*) AS n, max(amount) AS top FROM transactions GROUP BY customer",
    );
    assert!(created.get("error").is_none(), "{created}");
    exact(&mut cluster[0], first_half, "with a created view", true);
    std::thread::sleep(Duration::from_millis(200)); // a few snapshots
    let _ = cluster[1].child.kill(); // SIGKILL: process 0 stops on its own
    let _ = cluster[1].child.wait();
    let _ = cluster[0].child.wait();
    drop(cluster);

    let mut cluster = start_cluster_with_state(&broker, &history_path, &dir, &hosts);
    exact(&mut cluster[0], first_half, "resumed after the crash", true);
    send_all(&producer, second_half);
    producer.flush(Duration::from_secs(10)).unwrap();
    exact(&mut cluster[0], &messages, "after the rest of the stream", true);
    let mut cluster = cluster.into_iter();
    let (first, second) = (cluster.next().unwrap(), cluster.next().unwrap());
    let log = first.stop(); // a clean stop takes a last snapshot
    second.stop_after_peer();
    assert!(log.contains("resuming from a snapshot"), "{log}");
    assert!(log.contains("snapshot written"), "{log}");

    let mut cluster = start_cluster_with_state(&broker, &history_path, &dir, &hosts);
    exact(&mut cluster[0], &messages, "resumed after a clean stop", true);
    assert!(!dir.join("p1/state").exists() || atelier_lambda::state::list(&dir.join("p1/state")).unwrap().is_empty());
}
