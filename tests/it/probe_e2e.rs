//! The defects a hostile probe of the release binary found (issue 25), each driven through the
//! real `lambda` binary: the input or the load that spun, raced, collided, hung or was taken
//! silently — and what it does now.

use crate::common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::live::*;
use common::temp_dir;
use rdkafka::producer::Producer;

/// CPU seconds (user + system) process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("a running process");
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// The share of a core process `pid` uses over `during`.
fn cpu_share(pid: u32, during: Duration) -> f64 {
    let before = cpu_seconds(pid);
    std::thread::sleep(during);
    (cpu_seconds(pid) - before) / during.as_secs_f64()
}

fn workshop() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/transactions.json")
}

/// `lambda run` with its stderr in `dir/stderr.txt`, through `sh` (for `ulimit`) when
/// `shell_prefix` is given.
fn run_logged(broker: &TestBroker, history: &Path, dir: &Path, extra: &[&str], shell_prefix: Option<&str>) -> Killed {
    let mut args: Vec<String> =
        vec!["run".into(), "--brokers".into(), broker.address(), "--workers".into(), "2".into()];
    args.extend(["--input".into(), history.display().to_string()]);
    args.extend(["--dead-letters".into(), dir.join("dead.jsonl").display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let binary = env!("CARGO_BIN_EXE_lambda");
    let mut command = match shell_prefix {
        Some(prefix) => {
            let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
            let mut c = Command::new("sh");
            c.arg("-c").arg(format!("{prefix}; exec '{binary}' {}", quoted.join(" ")));
            c
        }
        None => {
            let mut c = Command::new(binary);
            c.args(&args);
            c
        }
    };
    command
        .env_remove("LAMBDA_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.txt")).unwrap());
    Killed(command.spawn().expect("lambda run starts"))
}

#[test]
fn out_of_file_descriptors_the_postgres_server_neither_spins_nor_floods_the_log() {
    let dir = temp_dir("probe-fds");
    let broker = TestBroker::mock();
    let pg = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let run = run_logged(&broker, &workshop(), &dir, &["--http", &http, "--pg", &pg], Some("ulimit -n 256"));
    wait_listening(&pg, "the Postgres protocol");
    wait_listening(&http, "the HTTP API");
    // What the process costs before (a debug build under a loaded test machine is not idle):
    // the flood's cost is measured against it.
    let before = cpu_share(run.0.id(), Duration::from_secs(2));
    // More connections than the process may hold files: accepts fail with EMFILE.
    let held: Vec<std::net::TcpStream> = (0..300).filter_map(|_| std::net::TcpStream::connect(&pg).ok()).collect();
    assert!(held.len() >= 250, "the connections were made: {}", held.len());
    std::thread::sleep(Duration::from_millis(500));
    let log_before = std::fs::metadata(dir.join("stderr.txt")).unwrap().len();
    let share = cpu_share(run.0.id(), Duration::from_secs(3));
    let logged = std::fs::metadata(dir.join("stderr.txt")).unwrap().len() - log_before;
    assert!(
        share < before + 0.25,
        "the accept loop spins: {:.0}% of a core ({:.0}% before the flood)",
        share * 100.0,
        before * 100.0
    );
    assert!(logged < 16 * 1024, "the log grew by {logged} bytes in 3 s");
    drop(held);
    // Once files are free again, it serves.
    let port: u16 = pg.rsplit(':').next().unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (out, err, ok) = psql(port, &["SELECT count(*) FROM customers"]);
        if ok && out.trim() == "3" {
            break;
        }
        assert!(Instant::now() < deadline, "psql never got an answer again: {err}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn of_concurrent_creations_of_one_name_in_any_case_exactly_one_succeeds_and_restarts_work() {
    let dir = temp_dir("probe-race");
    let broker = TestBroker::mock();
    let state = dir.join("state");
    let state_arg = state.display().to_string();
    let mut run = Run::start(&broker.address(), &workshop(), 2, &dir, &["--state-dir", &state_arg]);
    run.views_at(&Default::default());
    let names = ["race", "RACE", "Race", "rAcE", "race", "RACE", "raCE", "racE"];
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let http = &run.http;
        let posts: Vec<_> = names
            .iter()
            .map(|name| {
                scope.spawn(move || {
                    let statement = format!(
                        "CREATE VIEW {name} AS SELECT customer, count(*) AS n FROM transactions GROUP BY customer"
                    );
                    post_sql(http, &statement).0
                })
            })
            .collect();
        posts.into_iter().map(|p| p.join().unwrap()).collect()
    });
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "exactly one creation succeeds: {statuses:?}");
    let (_, shown) = post_sql(&run.http, "SHOW VIEWS");
    let created = shown["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("SHOW VIEWS: {shown}"))
        .iter()
        .filter(|r| r[1] == "created")
        .count();
    assert_eq!(created, 1, "{shown}");
    run.stop();
    // The state directory it wrote starts again.
    let run = Run::start(&broker.address(), &workshop(), 2, &dir, &["--state-dir", &state_arg]);
    wait_listening(&run.http, "the restarted run");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = post_sql(&run.http, "SELECT count(*) FROM race");
        if status == 200 {
            assert_eq!(body["rows"], serde_json::json!([[3]]));
            break;
        }
        assert!(Instant::now() < deadline, "the view never came back: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    run.stop();
}

#[test]
fn a_view_name_that_cannot_be_a_file_is_refused_and_the_view_files_stay_whole() {
    let dir = temp_dir("probe-long-name");
    let broker = TestBroker::mock();
    let mut run = Run::start(&broker.address(), &workshop(), 1, &dir, &[]);
    run.views_at(&Default::default());
    let long = "v".repeat(300);
    let (status, body) = post_sql(
        &run.http,
        &format!("CREATE VIEW {long} AS SELECT customer, count(*) AS n FROM transactions GROUP BY customer"),
    );
    assert_eq!((status, body["code"].as_str()), (400, Some("42622")), "{body}");
    let longest = "w".repeat(63);
    let (status, body) = post_sql(
        &run.http,
        &format!("CREATE VIEW {longest} AS SELECT customer, count(*) AS n FROM transactions GROUP BY customer"),
    );
    assert_eq!(status, 200, "{body}");
    // The files of one write are of one time: as_of.json and overall keep being written.
    let first = std::fs::read_to_string(run.views.join("as_of.json")).unwrap_or_default();
    let producer = producer(&broker.address());
    let sent = [Sent { partition: 0, key: None, payload: Some(r#"{"customer":"Ali","amount":1}"#.into()) }];
    send_all(&producer, &sent);
    producer.flush(Duration::from_secs(10)).unwrap();
    let as_of = run.wait_for(&end_offsets(&sent));
    assert_ne!(as_of.to_string(), first);
    let overall = std::fs::read_to_string(run.views.join("overall.jsonl")).unwrap();
    assert!(overall.contains(r#""count":6"#), "overall is of the same time: {overall}");
    assert!(run.views.join(format!("created/{longest}.csv")).exists());
}

#[test]
fn thousands_of_waiting_reads_cost_one_reader_and_a_missing_partition_is_a_400() {
    let dir = temp_dir("probe-waits");
    let broker = TestBroker::mock();
    let mut run = Run::start(&broker.address(), &workshop(), 2, &dir, &[]);
    run.views_at(&Default::default());
    let pid = run.child.id();
    let idle = cpu_share(pid, Duration::from_secs(2));
    // 800 reads waiting for an offset the topic will not reach within their timeout.
    let request = "GET /v1/customers/Ali?min_offsets=real-time-orders/0:1000000&timeout_ms=6000 HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut waiting: Vec<std::net::TcpStream> = Vec::new();
    for _ in 0..800 {
        let mut stream = std::net::TcpStream::connect(&run.http).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        waiting.push(stream);
    }
    std::thread::sleep(Duration::from_millis(500));
    let busy = cpu_share(pid, Duration::from_secs(3));
    assert!(busy < idle + 0.15, "waiting reads cost {:.0}% of a core (idle: {:.0}%)", busy * 100.0, idle * 100.0);
    // They end as the 504 they are, saying how far the views got.
    let mut first = [0u8; 12];
    waiting[0].set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    waiting[0].read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 504");
    drop(waiting);

    let started = Instant::now();
    let (status, body) = run.get("/v1/customers/Ali?min_offsets=real-time-orders/7:1&timeout_ms=5000");
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("partition 7"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(2), "said at once, not after the wait");
    let (status, body) = run.get("/v1/customers/Ali?timeout_ms=forever");
    assert_eq!(status, 400, "a malformed wait is refused even without a bound: {body}");
}

#[test]
fn views_larger_than_max_rows_are_followed_by_key_and_a_too_large_read_is_a_400() {
    let dir = temp_dir("probe-max-rows");
    let broker = TestBroker::mock();
    let lines: Vec<String> = (0..12).map(|i| format!(r#"{{"customer":"c{i:02}","amount":{}}}"#, i + 1)).collect();
    let history = history(&dir, &lines);
    let mut run = Run::start(&broker.address(), &history, 2, &dir, &["--max-rows", "5", "--top", "3"]);
    run.views_at(&Default::default());
    let (status, body) = run.get("/v1/views/customers");
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("5"), "{body}");
    let (status, body) = run.get("/v1/top");
    assert_eq!(status, 200);
    assert_eq!(body["top"].as_array().unwrap().len(), 3, "--top is the default k: {body}");

    // A changefeed of the whole view, and of one key of it.
    for (path, rows) in [("/v1/subscribe?view=customers&key=c07", 1), ("/v1/subscribe?view=customers", 12)] {
        let subscriber = common::feed::Subscriber::open(&run.http, path, &[]);
        let (kind, _, data) = subscriber.next(Duration::from_secs(20));
        assert_eq!(kind, "snapshot", "{path}: {data}");
        assert_eq!(data["rows"].as_array().unwrap().len(), rows, "{path}: {data}");
    }
}

#[test]
fn a_cancel_request_ends_a_subscribe_over_the_postgres_protocol() {
    let dir = temp_dir("probe-cancel");
    let broker = TestBroker::mock();
    let pg = free_port();
    let _run = run_logged(&broker, &workshop(), &dir, &["--http", "off", "--pg", &format!("127.0.0.1:{pg}")], None);
    wait_listening(&format!("127.0.0.1:{pg}"), "the Postgres protocol");
    let script = format!(
        r#"
import threading, time, psycopg
with psycopg.connect("host=127.0.0.1 port={pg} user=lambda dbname=lambda", autocommit=True) as c:
    rows = 0
    threading.Timer(1.5, c.cancel).start()
    started = time.time()
    try:
        with c.cursor().copy("COPY (SUBSCRIBE customers) TO STDOUT") as copy:
            for row in copy.rows():
                rows += 1
        print("ended without an error")
    except psycopg.errors.QueryCanceled as e:
        print("cancelled after", rows, "rows in", round(time.time() - started, 1), "s")
    c.execute("SELECT count(*) FROM customers")
    print("the connection goes on")
"#
    );
    // `timeout`: a cancel that is not heard would hang the test, not fail it.
    let out = Command::new("timeout").args(["60", "python3", "-c", &script]).output().expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("cancelled after 3 rows"), "{stdout}");
    assert!(stdout.contains("the connection goes on"), "{stdout}");
}

#[test]
fn the_piped_prompt_says_a_line_is_not_utf8_and_takes_a_statement_over_lines() {
    let dir = temp_dir("probe-prompt");
    let broker = TestBroker::mock();
    let mut child = prompt(&broker, &workshop(), &dir);
    let mut input: Vec<u8> = b"get Ali\n".to_vec();
    input.extend_from_slice(b"get \xff\xfe\n");
    input.extend_from_slice(
        b"SELECT customer, total\n  FROM customers\n WHERE total > 145\n ORDER BY total DESC;\nget Sara\nquit\n",
    );
    child.0.stdin.as_mut().unwrap().write_all(&input).unwrap();
    let mut out = String::new();
    child.0.stdout.as_mut().unwrap().read_to_string(&mut out).unwrap();
    assert!(child.0.wait().unwrap().success());
    assert!(out.contains("line 2 is not UTF-8"), "{out}");
    assert!(out.contains("(2 rows)"), "the statement over four lines is one: {out}");
    assert!(out.contains("|    Sara|  140|"), "the lines after it are answered: {out}");
    assert!(!out.contains("ERROR"), "{out}");
}

#[test]
fn a_sink_of_a_view_that_is_not_there_is_refused_at_start() {
    let dir = temp_dir("probe-sink");
    let broker = TestBroker::mock();
    let mut run =
        run_logged(&broker, &workshop(), &dir, &["--http", "off", "--pg", "off", "--sink", "nosuchview=x"], None);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = run.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "lambda run started with a sink of no view");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let stderr = std::fs::read_to_string(dir.join("stderr.txt")).unwrap();
    assert!(stderr.contains("--sink nosuchview=x") && stderr.contains("nosuchview"), "{stderr}");
    assert!(!stderr.contains("SqlError {"), "no Debug dump: {stderr}");
}

#[test]
fn the_in_process_broker_refuses_a_topic_of_no_partition() {
    // `timeout`: a broker that starts anyway would serve for ever.
    let out = Command::new("timeout")
        .args(["20", env!("CARGO_BIN_EXE_lambda"), "broker", "--port", "0", "--partitions", "0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("partitions"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_client_that_sends_its_headers_slowly_is_let_go() {
    let dir = temp_dir("probe-slow-loris");
    let broker = TestBroker::mock();
    let http = format!("127.0.0.1:{}", free_port());
    let _run = run_logged(&broker, &workshop(), &dir, &["--http", &http, "--pg", "off"], None);
    wait_listening(&http, "the HTTP API");
    let mut stream = std::net::TcpStream::connect(&http).unwrap();
    stream.write_all(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n").unwrap();
    let started = Instant::now();
    // A header byte every second, never the end of the headers.
    let closed = loop {
        std::thread::sleep(Duration::from_secs(1));
        if stream.write_all(b"X").is_err() || started.elapsed() > Duration::from_secs(25) {
            break started.elapsed();
        }
        stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 64];
        let read = stream.read(&mut byte);
        stream.set_nonblocking(false).unwrap();
        // Anything but "nothing yet" is the server letting go: an end, an answer, a reset.
        if !matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
            break started.elapsed();
        }
    };
    assert!(closed <= Duration::from_secs(15), "the connection stayed open {closed:?}");
}

#[test]
fn csv_cells_a_spreadsheet_would_run_are_quoted_and_the_lowest_amount_is_taken() {
    let dir = temp_dir("probe-csv");
    let history = dir.join("h.jsonl");
    std::fs::write(
        &history,
        concat!(
            r#"{"customer":"=HYPERLINK(\"http://evil.example\",\"x\")","amount":1}"#,
            "\n",
            r#"{"customer":"low","amount":-92233720368547758.08}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let o = lambda()
        .args(["batch", "--input", history.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(out.join("customers.csv")).unwrap();
    assert!(csv.contains("\"'=HYPERLINK("), "{csv}");
    assert!(csv.contains("low,-92233720368547758.08,1,"), "i64::MIN cents is an amount: {csv}");
    let dead = std::fs::read_to_string(out.join("dead_letters.jsonl")).unwrap_or_default();
    assert!(dead.is_empty(), "{dead}");
}

#[test]
fn the_null_group_and_a_group_named_null_are_two_keys_of_a_sink() {
    let dir = temp_dir("probe-sink-keys");
    let broker = TestBroker::mock();
    let lines = [
        r#"{"id":"t1","customer":"a","amount":1}"#.to_owned(),
        r#"{"id":"t2","customer":"b","amount":2,"category":"null"}"#.to_owned(),
    ];
    let history = history(&dir, &lines);
    broker.create_topic("categories-view", 1);
    let mut run = Run::start(&broker.address(), &history, 2, &dir, &["--sink", "categories=categories-view"]);
    run.views_at(&Default::default());
    let held = |want: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let held = common::feed::kcat_view(&broker.address(), "categories-view");
            if held.len() == want {
                return held;
            }
            assert!(Instant::now() < deadline, "the topic never held {want} keys: {held:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let both = held(2);
    assert!(both.contains_key(r#"{"category":null}"#) && both.contains_key(r#"{"category":"null"}"#), "{both:?}");
    // The NULL group leaves: its tombstone deletes it alone.
    let producer = producer(&broker.address());
    let sent = [Sent { partition: 0, key: None, payload: Some(r#"{"id":"t1","op":"delete"}"#.into()) }];
    send_all(&producer, &sent);
    producer.flush(Duration::from_secs(10)).unwrap();
    run.views_at(&end_offsets(&sent));
    let left = held(1);
    assert!(left.contains_key(r#"{"category":"null"}"#), "{left:?}");
}
