//! Views created at run time, end to end: the real `lambda run` with a Kafka-protocol
//! broker, views created with `psql` before and after a random stream (corrections,
//! deletes, redeliveries, bad records), read over psql and HTTP, through `kill -9` and a
//! restart from the state directory, and dropped.
//!
//! Each created view is compared with the same question asked as an ad-hoc query over
//! `transactions` — read from the version table, not from the view's own dataflow — whose
//! answers `sql_reference` checks against the oracle.

use crate::common;

use std::time::Duration;

use common::live::*;
use common::temp_dir;
use rdkafka::producer::{BaseProducer, Producer};

/// Each view: its definition, and the ad-hoc query that must answer the same rows.
const VIEWS: [(&str, &str, &str); 4] = [
    (
        "spenders",
        "CREATE VIEW spenders AS SELECT customer, sum(amount) AS total, count(*) AS n, min(amount) AS low, \
         max(amount) AS high FROM transactions WHERE amount >= 10 GROUP BY customer",
        "SELECT customer, sum(amount), count(*), min(amount), max(amount) FROM transactions \
         WHERE amount >= 10 GROUP BY customer ORDER BY 1",
    ),
    (
        "big_spenders",
        "CREATE VIEW big_spenders AS SELECT customer, total FROM spenders WHERE total > 100",
        "SELECT customer, sum(amount) FROM transactions WHERE amount >= 10 GROUP BY customer \
         HAVING sum(amount) > 100 ORDER BY 1",
    ),
    (
        "daily",
        "CREATE VIEW daily AS SELECT date_trunc('day', ts) AS day, avg(amount), max(amount) FROM transactions \
         GROUP BY date_trunc('day', ts) HAVING count(*) > 1",
        "SELECT date_trunc('day', ts), avg(amount), max(amount) FROM transactions \
         GROUP BY date_trunc('day', ts) HAVING count(*) > 1 ORDER BY 1",
    ),
    (
        "by_category",
        "CREATE VIEW by_category AS SELECT category, count(*), sum(amount), min(amount) FROM transactions \
         GROUP BY category",
        "SELECT category, count(*), sum(amount), min(amount) FROM transactions GROUP BY category ORDER BY 1",
    ),
];

fn send(producer: &BaseProducer, messages: &[Sent]) {
    send_all(producer, messages);
    producer.flush(Duration::from_secs(10)).expect("the broker takes the messages");
}

/// One statement over psql; it must succeed.
fn ask(pg: u16, statement: &str) -> String {
    let (out, err, ok) = psql(pg, &[statement]);
    assert!(ok && !err.contains("ERROR"), "{statement}: {err}");
    out
}

/// Every created view answers what its ad-hoc query answers (`created`: how many of
/// `VIEWS` exist now).
fn assert_views_exact(pg: u16, created: usize, when: &str) {
    for (name, _, adhoc) in &VIEWS[..created] {
        let view = ask(pg, &format!("SELECT * FROM {name} ORDER BY 1"));
        let expected = ask(pg, adhoc);
        assert!(!expected.trim().is_empty(), "{when}: {adhoc} answers no rows");
        assert_eq!(view, expected, "{when}: view {name} differs from its ad-hoc query");
    }
}

#[test]
fn views_created_before_and_after_a_stream_are_exact_and_survive_kill_9() {
    let dir = temp_dir("created-views-e2e");
    let state = dir.join("state");
    let broker = TestBroker::mock();
    let history = history(&dir, &random_history(300));
    let pg = free_port();
    let address = format!("127.0.0.1:{pg}");
    let options = ["--pg", &address, "--state-dir", state.to_str().unwrap(), "--snapshot-every-ms", "200"];
    let mut run = Run::start(&broker.address(), &history, 2, &dir, &options);
    run.views_at(&std::collections::BTreeMap::new());

    // Two views before the stream: maintained through it.
    for (_, create, _) in &VIEWS[..2] {
        ask(pg, create);
    }
    assert_views_exact(pg, 2, "created over the history");
    let producer = producer(&broker.address());
    let first = random_messages(7, 400);
    send(&producer, &first);
    run.views_at(&end_offsets(&first));
    assert_views_exact(pg, 2, "maintained through the stream");

    // Two after it: backfilled from the live state.
    for (_, create, _) in &VIEWS[2..] {
        ask(pg, create);
    }
    assert_views_exact(pg, 4, "created after the stream");
    let shown = ask(pg, "SHOW VIEWS");
    for (name, create, _) in &VIEWS {
        assert!(shown.contains(&format!("{name}|created|{create}|")), "SHOW VIEWS lists {name}:\n{shown}");
    }

    // Over HTTP too: a whole view, and one key of it.
    let (status, body) = run.get("/v1/views/spenders");
    assert_eq!(status, 200, "{body}");
    let first_row = &body["rows"][0];
    let customer = first_row["customer"].as_str().expect("a customer").to_owned();
    let (status, one) = run.get(&format!("/v1/views/spenders/{customer}"));
    assert_eq!((status, &one["row"]), (200, first_row), "{one}");
    assert_eq!(run.get("/v1/views/nothing").0, 404);
    // A view keyed by a time, looked up by the time as its rows show it; a key that is no time
    // is the request's error.
    let (status, hourly) = run.get("/v1/views/hourly");
    assert_eq!(status, 200, "{hourly}");
    let hour_row = &hourly["rows"][0];
    let hour = hour_row["hour"].as_str().expect("an hour").to_owned();
    let (status, one) = run.get(&format!("/v1/views/hourly/{hour}"));
    assert_eq!((status, &one["row"]), (200, hour_row), "{one}");
    assert_eq!(run.get("/v1/views/hourly/not-a-time").0, 400);

    // `lambda verify` recomputes the created views too, from their statements.
    let verify = lambda()
        .args(["verify", "--live", &run.http, "--brokers", &broker.address(), "--input"])
        .arg(&history)
        .output()
        .expect("lambda verify runs");
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{report}{}", String::from_utf8_lossy(&verify.stderr));
    assert!(report.contains("(4 created at run time among them)"), "{report}");
    // And they are written out with the others, and counted in /metrics.
    let written = std::fs::read_to_string(run.views.join("created/by_category.csv")).expect("written out");
    assert!(written.starts_with("category,count,sum,min\n"), "{written}");
    let (_, metrics) = run.get("/metrics");
    assert!(metrics.as_str().unwrap().contains("lambda_view_rows{view=\"daily\"}"), "{metrics}");

    // kill -9, then a restart from the state directory: the views are back before the
    // first read (their groups kept with the last snapshot), and follow more messages.
    std::thread::sleep(Duration::from_millis(600));
    wait_for_kept_views(&state, 2, 4); // the customers and the three GROUP BY views
    let _ = run.child.kill();
    let _ = run.child.wait();
    let mut run = Run::start(&broker.address(), &history, 2, &dir, &options);
    let second = random_messages(8, 300);
    send(&producer, &second);
    let all: Vec<Sent> = first.iter().chain(&second).cloned().collect();
    run.views_at(&end_offsets(&all));
    assert_views_exact(pg, 4, "after kill -9 and more messages");

    // Dropping: a view read by another cannot go first; then both go, and stay gone.
    let (_, err, _) = psql(pg, &["\\set VERBOSITY verbose", "DROP VIEW spenders"]);
    assert!(err.contains("2BP01"), "{err}");
    ask(pg, "DROP VIEW big_spenders");
    ask(pg, "DROP VIEW spenders");
    let (_, err, _) = psql(pg, &["\\set VERBOSITY verbose", "SELECT * FROM spenders"]);
    assert!(err.contains("42P01"), "{err}");
    let err = run.stop();
    assert!(err.contains("the views' state kept with the snapshot is put back"), "after kill -9: {err}");
    assert!(err.contains("the views' state is kept for the next start"), "{err}");
    // After a clean stop the views' groups are put back, not computed again; they are then
    // corrected by more messages like any other.
    let mut run = Run::start(&broker.address(), &history, 2, &dir, &options);
    run.views_at(&end_offsets(&all));
    let shown = ask(pg, "SHOW VIEWS");
    assert!(!shown.contains("spenders"), "{shown}");
    let remaining = || {
        VIEWS[2..]
            .iter()
            .map(|(name, _, adhoc)| (name, ask(pg, &format!("SELECT * FROM {name} ORDER BY 1")), ask(pg, adhoc)))
    };
    for (name, view, adhoc) in remaining() {
        assert_eq!(view, adhoc, "{name} after a clean restart");
    }
    let third = random_messages(9, 300);
    send(&producer, &third);
    let all: Vec<Sent> = all.iter().chain(&third).cloned().collect();
    run.views_at(&end_offsets(&all));
    for (name, view, adhoc) in remaining() {
        assert_eq!(view, adhoc, "{name} put back, then after more messages");
    }
    let err = run.stop();
    assert!(err.contains("the views' state kept with the snapshot is put back"), "{err}");
}
