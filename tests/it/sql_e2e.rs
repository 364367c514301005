//! SQL end to end: the real `lambda run` with a Kafka-protocol broker, asked with real
//! clients — `psql` over the Postgres protocol, HTTP `POST /v1/sql`, and the prompt — for the
//! workshop's exercises, at one logical time, and every class of error.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::live::*;
use common::temp_dir;
use rdkafka::producer::Producer;

#[test]
fn psql_http_and_the_prompt_answer_the_workshop_exercises() {
    let dir = temp_dir("sql-e2e");
    let broker = TestBroker::mock();
    let workshop = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/transactions.json");
    let pg = free_port();
    let mut run = Run::start(&broker.address(), &workshop, 2, &dir, &["--pg", &format!("127.0.0.1:{pg}")]);
    let messages: Vec<Sent> = atelier_lambda::demo::WORKSHOP_MESSAGES
        .iter()
        .enumerate()
        .map(|(i, m)| Sent { partition: i as i32, key: None, payload: Some(m.to_string()) })
        .collect();
    let producer = producer(&broker.address());
    send_all(&producer, &messages);
    producer.flush(Duration::from_secs(10)).unwrap();
    run.views_at(&end_offsets(&messages));

    // The workshop's two exercises, as one line of SQL each, over psql.
    let (out, err, ok) = psql(
        pg,
        &[
            "SELECT customer, sum(amount) FROM transactions WHERE amount >= 100 GROUP BY customer ORDER BY customer",
            "SELECT customer, total FROM customers WHERE total > 200 ORDER BY total DESC",
            "SHOW as_of",
        ],
    );
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        &lines[..2],
        ["Ali|320.00", "Mounir|350.00"],
        "amount >= 100 keeps 120, 200 of Ali and 150, 200 of Mounir: {out}"
    );
    assert_eq!(&lines[2..4], ["Ali|400.00", "Mounir|350.00"], "{out}");
    assert!(lines[4].contains("real-time-orders/0:1,real-time-orders/1:1,real-time-orders/2:1"), "{out}");

    // The same engine over HTTP, with the time and offsets it read at.
    let (status, body) = post_sql(&run.http, "SELECT * FROM customers WHERE customer = 'Ali'");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], serde_json::json!([["Ali", 400, 3, 80, 200, 133.33]]));
    assert_eq!(body["columns"][1], serde_json::json!({"name": "total", "type": "numeric"}));
    assert_eq!(body["as_of"]["offsets"]["real-time-orders/0"], 1);
    let (_, body) = post_sql(&run.http, "SELECT count(*), sum(amount), avg(amount) FROM transactions");
    assert_eq!(body["rows"], serde_json::json!([[8, 930, 116.25]]));

    // Joins: every transaction beside its customer's row, at one time.
    let (_, body) = post_sql(
        &run.http,
        "SELECT c.customer, c.total, count(*) AS n, sum(t.amount) AS s FROM customers c JOIN transactions t ON c.customer = t.customer GROUP BY c.customer, c.total ORDER BY 1",
    );
    assert_eq!(
        body["rows"],
        serde_json::json!([["Ali", 400, 3, 400], ["Mounir", 350, 2, 350], ["Sara", 180, 3, 180]]),
        "{body}"
    );

    // Every class of error, over psql (SQLSTATE in verbose mode) and HTTP.
    for (statement, code) in [
        ("SELEC 1", "42601"),
        ("SELECT * FROM nothing", "42P01"),
        ("SELECT nothing FROM customers", "42703"),
        ("INSERT INTO customers VALUES ('x')", "0A000"),
        ("SELECT * FROM customers WHERE customer > 5", "22P02"),
        ("SELECT customer FROM transactions GROUP BY category", "42803"),
    ] {
        let (status, body) = post_sql(&run.http, statement);
        assert_eq!((status, body["code"].as_str()), (400, Some(code)), "{statement}: {body}");
        let (_, err, _) = psql(pg, &["\\set VERBOSITY verbose", statement]);
        assert!(err.contains(&format!("ERROR:  {code}")), "{statement}: {err}");
    }
    let (_, body) = post_sql(&run.http, "SELEC 1");
    assert_eq!(body["position"], 1);
    // The pipeline goes on after errors.
    let (out, _, ok) = psql(pg, &["SELECT count(*) FROM customers"]);
    assert!(ok && out.trim() == "3", "{out}");
    // A NOTICE says what an answer reflects, as `SHOW as_of` does; `client_min_messages`
    // above NOTICE silences it.
    let (out, err, _) = psql(pg, &["SELECT count(*) FROM customers", "SHOW as_of"]);
    let (time, offsets) = out.lines().nth(1).and_then(|l| l.split_once('|')).expect("SHOW as_of: time|offsets");
    assert!(err.contains(&format!("NOTICE:  as_of: time {time}, offsets {offsets}")), "{out}\n{err}");
    let (_, err, _) = psql(pg, &["SET client_min_messages = warning", "SELECT count(*) FROM customers"]);
    assert!(!err.contains("NOTICE"), "{err}");
    run.stop();
}

#[test]
fn the_prompt_answers_sql_beside_its_commands() {
    let dir = temp_dir("sql-prompt");
    let broker = TestBroker::mock();
    let workshop = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/transactions.json");
    let mut child = prompt(&broker, &workshop, &dir);
    let commands = "SELECT * FROM customers WHERE total > 200;\nget Sara\nEXPLAIN SELECT * FROM customers WHERE customer = 'Ali'\nSELECT * FROM nope\nSHOW TABLES\nCREATE VIEW few AS SELECT customer, count(*) AS n FROM transactions GROUP BY customer;\nDROP VIEW few;\nquit\n";
    std::io::Write::write_all(child.0.stdin.as_mut().unwrap(), commands.as_bytes()).unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(child.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(child.0.wait().unwrap().success());
    for expected in [
        "|     Ali|  320|    2|120|200|160|",
        "(1 row) as of {\"offsets\":{\"real-time-orders/0\":0",
        "|    Sara|  140|",
        "LiveScan: customers [customer, total, count, min, max, avg], seek customer in ('Ali')",
        "ERROR 42P01: relation \"nope\" does not exist",
        "transactions",
        // A statement without rows says what it did, as psql does (not an empty table).
        "\nCREATE VIEW\n",
        "\nDROP VIEW\n",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[test]
fn a_driver_binds_parameters_over_the_extended_protocol() {
    let dir = temp_dir("sql-psycopg");
    let broker = TestBroker::mock();
    let workshop = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/transactions.json");
    let pg = free_port();
    let mut run = Run::start(&broker.address(), &workshop, 2, &dir, &["--pg", &format!("127.0.0.1:{pg}")]);
    run.views_at(&std::collections::BTreeMap::new());
    // psycopg prepares on the server: Parse with $1, Bind (an int in binary format, a string
    // as text), Describe, Execute; results come back typed (numeric → Decimal).
    let script = format!(
        r#"
import psycopg
with psycopg.connect("host=127.0.0.1 port={pg} user=lambda dbname=lambda") as c:
    print(c.execute("SELECT customer, total FROM customers WHERE total > %s ORDER BY total", (100,)).fetchall())
    print(c.execute("SELECT count(*), avg(amount) FROM transactions WHERE customer = %s", ("Ali",)).fetchall())
    try:
        c.execute("SELECT * FROM nope")
    except psycopg.Error as e:
        print(e.sqlstate)
"#
    );
    let out = Command::new("python3").arg("-c").arg(script).output().expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "psycopg is installed (./test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "[('Sara', Decimal('140.00')), ('Mounir', Decimal('150.00')), ('Ali', Decimal('320.00'))]",
            "[(2, Decimal('160.000000'))]",
            "42P01",
        ]
    );
    run.stop();
}
