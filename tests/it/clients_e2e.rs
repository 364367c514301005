//! The users' own tools against the real `lambda run`, over the Postgres protocol: psql's
//! meta-commands, SQLAlchemy's `connect()` and `inspect()`, pandas' `read_sql`, psycopg's
//! typed parameters, and the catalog queries Grafana, DBeaver and Metabase send when they
//! connect and browse (`tests/clients/clients.py` drives the Python ones); and the 18 everyday
//! queries of a new user answered as DuckDB answers them over the same live rows
//! (`tests/clients/duckdb_compare.py`).

use crate::common;

use std::path::Path;
use std::process::Command;

use common::live::*;
use common::temp_dir;

/// psql in its default (aligned) format, as a user sees it.
fn psql_shown(port: u16, command: &str) -> (String, String) {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "lambda", "-d", "lambda", "-X", "-c", command])
        .output()
        .expect("psql is installed (./test installs it)");
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn psql_sqlalchemy_pandas_and_the_bi_tools_connect_and_browse() {
    let dir = temp_dir("clients-e2e");
    let broker = TestBroker::mock();
    let workshop = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/transactions.json");
    let pg = free_port();
    let mut run = Run::start(&broker.address(), &workshop, 2, &dir, &["--pg", &format!("127.0.0.1:{pg}")]);
    run.views_at(&std::collections::BTreeMap::new());
    let (status, body) = post_sql(
        &run.http,
        "CREATE VIEW spenders AS SELECT customer, sum(amount) AS total FROM transactions GROUP BY customer",
    );
    assert_eq!(status, 200, "{body}");

    // psql's meta-commands.
    let (dt, err) = psql_shown(pg, "\\dt");
    assert!(dt.contains("public | transactions | table"), "\\dt: {dt}{err}");
    let (dv, err) = psql_shown(pg, "\\dv");
    for view in ["categories", "customers", "dead_letters", "hourly", "offsets", "overall", "spenders"] {
        assert!(dv.contains(&format!("public | {view}")), "\\dv lists {view}: {dv}{err}");
    }
    assert!(!dv.contains("information_schema") && !dv.contains("| tables"), "\\dv lists public only: {dv}");
    let (d, err) = psql_shown(pg, "\\d customers");
    assert!(d.contains("View \"public.customers\""), "{d}{err}");
    for (column, ty) in [("customer", "text"), ("total", "numeric"), ("count", "bigint"), ("avg", "numeric")] {
        assert!(d.lines().any(|l| l.contains(column) && l.contains(ty)), "\\d customers: {column} {ty}: {d}");
    }
    let (d, err) = psql_shown(pg, "\\d transactions");
    assert!(d.lines().any(|l| l.contains("ts") && l.contains("timestamp with time zone")), "{d}{err}");
    let (d_plus, err) = psql_shown(pg, "\\d+ customers");
    assert!(d_plus.contains("Storage") && d_plus.contains("numeric"), "\\d+ customers: {d_plus}{err}");
    let (d_plus, err) = psql_shown(pg, "\\d+ transactions");
    assert!(d_plus.contains("Storage") && d_plus.contains("timestamp with time zone"), "{d_plus}{err}");
    let (df, err) = psql_shown(pg, "\\df");
    assert!(df.contains("List of functions") && err.is_empty(), "\\df: {df}{err}");
    let (d_all, err) = psql_shown(pg, "\\d");
    assert!(d_all.contains("transactions") && d_all.contains("spenders"), "\\d: {d_all}{err}");

    // The Python clients.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/clients.py");
    let out = Command::new("python3").arg(&script).arg(pg.to_string()).output().expect("python3 runs");
    assert!(
        out.status.success(),
        "psycopg, SQLAlchemy and pandas are installed (./test installs them): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the script prints JSON");

    // Every catalog query of every tool answers.
    for (tool, results) in report["catalog"].as_object().unwrap() {
        let results = results.as_array().unwrap();
        assert!(!results.is_empty());
        for result in results {
            assert_eq!(result["ok"], true, "{tool}: {result}");
        }
    }
    // Grafana's table list has the relations; its column list the types it maps to its own.
    let tables = report["catalog"]["grafana"][0]["rows"].to_string();
    for name in ["customers", "transactions", "spenders"] {
        assert!(tables.contains(name), "grafana's tables: {tables}");
    }
    assert_eq!(
        report["catalog"]["grafana"][1]["rows"],
        serde_json::json!([
            ["customer", "text"],
            ["total", "numeric"],
            ["count", "bigint"],
            ["min", "numeric"],
            ["max", "numeric"],
            ["avg", "numeric"]
        ])
    );

    // SQLAlchemy connects and inspects.
    let sqlalchemy = &report["sqlalchemy"];
    assert!(sqlalchemy["version"].as_str().is_some_and(|v| v.starts_with("PostgreSQL 16")), "{sqlalchemy}");
    assert_eq!(sqlalchemy["tables"], serde_json::json!(["transactions"]));
    assert_eq!(
        sqlalchemy["views"],
        serde_json::json!(["categories", "customers", "dead_letters", "hourly", "offsets", "overall", "spenders"])
    );
    assert_eq!(sqlalchemy["columns"][1], serde_json::json!(["total", "NUMERIC"]));

    // pandas reads exact decimals.
    let pandas = &report["pandas"];
    assert_eq!(pandas["columns"], serde_json::json!(["customer", "total", "count"]), "{pandas}");
    assert_eq!(
        pandas["rows"],
        serde_json::json!([["Ali", "320.00", "2"], ["Mounir", "150.00", "1"], ["Sara", "140.00", "2"]])
    );
    assert_eq!(pandas["total_is_decimal"], true);
    assert_eq!(pandas["one"][0][0], "Ali");

    // psycopg's parameters are typed values, never text spliced into the statement.
    let psycopg = &report["psycopg"];
    assert_eq!(psycopg["text_number"], 0, "'1001' is a name, not a number: {psycopg}");
    assert_eq!(psycopg["negative"], "300", "200 - (-100), not a `--` comment");
    assert_eq!(psycopg["binary"], serde_json::json!([["Ali", "320.00"], ["Mounir", "150.00"], ["Sara", "140.00"]]));
    assert_eq!(psycopg["prepared"], serde_json::json!(["2", "2", "0"]));
    assert_eq!(psycopg["injection"], 0, "a quote in a parameter is data");
    assert_eq!(psycopg["nan"], "error 22023", "NaN is no amount");
    assert_eq!(psycopg["inf"], "error 22023", "infinity is no amount");
    run.stop();
}

#[test]
fn everyday_queries_answer_what_duckdb_answers_on_the_same_live_rows() {
    let dir = temp_dir("clients-duckdb");
    let broker = TestBroker::mock();
    // A history with corrections, deletes and bad records, then corrections and deletes on the
    // stream: the live rows are what both engines read.
    let history = dir.join("history.jsonl");
    let made = lambda()
        .args(["gen", "--rows", "3000", "--customers", "40", "--corrections", "0.1", "--bad", "0.01", "--out"])
        .arg(&history)
        .status()
        .expect("lambda gen runs");
    assert!(made.success());
    let pg = free_port();
    let mut run = Run::start(&broker.address(), &history, 2, &dir, &["--pg", &format!("127.0.0.1:{pg}")]);
    run.views_at(&std::collections::BTreeMap::new());
    let messages: Vec<Sent> = (0..60)
        .map(|i| {
            let payload = if i % 5 == 0 {
                format!(r#"{{"id":"t{i}","op":"delete"}}"#)
            } else {
                format!(
                    r#"{{"id":"t{}","customer":"customer-{:06}","amount":{}.25,"ts":"2025-05-0{}T10:00:00Z","category":"books"}}"#,
                    i * 7,
                    i % 45,
                    i * 13,
                    1 + i % 9
                )
            };
            Sent { partition: i % 3, key: None, payload: Some(payload) }
        })
        .collect();
    let producer = producer(&broker.address());
    send_all(&producer, &messages);
    rdkafka::producer::Producer::flush(&producer, std::time::Duration::from_secs(30)).expect("the broker took them");
    run.views_at(&end_offsets(&messages));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/duckdb_compare.py");
    let out = Command::new("python3").arg(&script).arg(pg.to_string()).output().expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{} (./test installs duckdb and psycopg)",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("18 of 18 agree"), "{stdout}");
    run.stop();
}
