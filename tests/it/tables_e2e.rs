//! Tables end to end: `CREATE TABLE` from a CSV file then a Kafka topic, through the real
//! `lambda run` (two workers) and a Kafka-protocol broker on loopback — keyed upserts, a
//! tombstone, `"op":"delete"`, bad records dead-lettered with the table's name, a topic that
//! does not exist yet, a join with `transactions` while both sides change, a restart from the
//! state directory, and `DROP TABLE` refused while a view reads the table.

use crate::common;

use std::time::{Duration, Instant};

use common::live::*;
use common::temp_dir;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const CREATE: &str = "CREATE TABLE customer_info (customer text, city text, segment text, PRIMARY KEY (customer)) \
                      WITH (connector = 'kafka', topic = 'customer-info', path = '{path}')";
const BY_CITY: &str = "SELECT i.city, sum(t.amount) AS total, count(*) AS n FROM transactions t \
                       JOIN customer_info i ON t.customer = i.customer GROUP BY i.city ORDER BY 1";

/// The rows a statement answers over HTTP, as compact JSON text (it must succeed).
fn rows(run: &Run, statement: &str) -> String {
    let (status, answer) = post_sql(&run.http, statement);
    assert_eq!(status, 200, "{statement}: {answer}");
    answer["rows"].to_string()
}

/// Waits until `statement` answers `expected`.
fn eventually(run: &Run, statement: &str, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = rows(run, statement);
        if got == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{statement}: {got}, expected {expected}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn send(producer: &BaseProducer, topic: &str, partition: i32, key: Option<&str>, payload: Option<&str>) {
    let mut record = BaseRecord::<str, str>::to(topic).partition(partition);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(payload) = payload {
        record = record.payload(payload);
    }
    producer.send(record).expect("queued");
    producer.flush(Duration::from_secs(10)).expect("the broker takes the messages");
}

/// Each compiled view answers what the same query answers ad hoc (DataFusion over the
/// table's and the transactions' rows at the same time).
/// A top-k view of the whole: its name and `SELECT`.
const TOP: (&str, &str) =
    ("largest", "SELECT customer, amount, category FROM transactions ORDER BY amount DESC, customer, category LIMIT 4");
/// A top-k view per customer.
const RANKED: (&str, &str) = (
    "largest_each",
    "SELECT customer, amount, rn FROM (SELECT customer, amount, row_number() OVER (PARTITION BY customer \
     ORDER BY amount DESC) AS rn FROM transactions) r WHERE rn <= 2",
);

fn assert_views_exact(run: &Run, when: &str) {
    for (view, adhoc) in [
        (
            "SELECT * FROM spend_by_city ORDER BY city",
            "SELECT i.city, sum(t.amount), count(*), avg(t.amount) FROM transactions t \
             JOIN customer_info i ON t.customer = i.customer GROUP BY i.city ORDER BY 1",
        ),
        (
            "SELECT * FROM with_city ORDER BY customer, amount",
            "SELECT t.customer, t.amount, i.city FROM transactions t LEFT JOIN customer_info i \
             ON t.customer = i.customer ORDER BY 1, 2",
        ),
        (
            "SELECT * FROM big_cities ORDER BY city",
            "SELECT i.city, sum(t.amount) FROM transactions t JOIN customer_info i ON t.customer = i.customer \
             GROUP BY i.city HAVING sum(t.amount) > 5 ORDER BY 1",
        ),
        (
            &format!("SELECT * FROM {} ORDER BY 1, 2, 3", TOP.0),
            &format!("SELECT * FROM ({}) v ORDER BY 1, 2, 3", TOP.1),
        ),
        (
            &format!("SELECT * FROM {} ORDER BY 1, 2, 3", RANKED.0),
            &format!("SELECT * FROM ({}) v ORDER BY 1, 2, 3", RANKED.1),
        ),
    ] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Read one after the other: equal once no change comes between them.
            let (view_rows, adhoc_rows) = (rows(run, view), rows(run, adhoc));
            if view_rows == adhoc_rows {
                break;
            }
            assert!(Instant::now() < deadline, "{when}: {view} = {view_rows}, ad hoc {adhoc_rows}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn a_table_from_a_file_then_a_topic_joins_the_transactions_exactly_and_survives_a_restart() {
    let dir = temp_dir("tables-e2e");
    let broker = TestBroker::mock();
    let lines: Vec<String> = [
        r#"{"id":"t1","customer":"Ali","amount":10}"#,
        r#"{"id":"t2","customer":"Ali","amount":5.50}"#,
        r#"{"id":"t3","customer":"Li","amount":7}"#,
        r#"{"id":"t4","customer":"Sam","amount":1}"#,
        r#"{"id":"t5","customer":"Zed","amount":2}"#,
    ]
    .map(String::from)
    .to_vec();
    let history = history(&dir, &lines);
    let csv = dir.join("customers.csv");
    std::fs::write(&csv, "customer,city,segment\nAli,Lyon,retail\nLi,Oslo,pro\n,Nowhere,none\n").unwrap();
    let state = dir.join("state");
    let state_arg = state.display().to_string();
    let mut run = Run::start(&broker.address(), &history, 2, &dir, &["--state-dir", &state_arg]);
    run.views_at(&Default::default());

    // The topic does not exist yet: the file is read, and the status says what it waits for.
    let create = CREATE.replace("{path}", &csv.display().to_string());
    let (status, answer) = post_sql(&run.http, &create);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        rows(&run, "SELECT * FROM customer_info ORDER BY customer"),
        r#"[["Ali","Lyon","retail"],["Li","Oslo","pro"]]"#,
        "the file, at once"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, status) = run.get("/v1/status");
        let waiting = status["tables"][0]["waiting"].as_str().unwrap_or_default().to_owned();
        if waiting.contains("does not exist") {
            assert_eq!(status["tables"][0]["name"], "customer_info", "{status}");
            assert_eq!(status["tables"][0]["refused"], 1, "the CSV row without a key: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "the status never said the topic is missing: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    eventually(&run, BY_CITY, r#"[["Lyon",15.5,2],["Oslo",7,1]]"#);
    // A table is watched like a view: its rows, then its changes as its topic moves it.
    let watched = common::feed::Subscriber::open(&run.http, "/v1/subscribe?view=customer_info", &[]);
    assert_eq!(watched.status, 200, "{}", watched.error);
    let mut folded = common::feed::Folded::default();
    let (kind, _, data) = watched.next(Duration::from_secs(10));
    assert_eq!(kind, "snapshot", "{data}");
    folded.apply(&kind, &data);
    assert_eq!(folded.rows().len(), 2, "{data}");
    let (_, one) = run.get("/v1/views/customer_info/Li");
    assert_eq!(one["row"]["city"], "Oslo", "a table's row by its key: {one}");

    // The topic comes: Ali moves, Li is deleted by tombstone, Sam arrives, Zed's delete of a
    // row that never was changes nothing, and a record without the key is a dead letter.
    broker.create_topic("customer-info", 1);
    let producer = producer(&broker.address());
    send(&producer, "customer-info", 0, Some("Ali"), Some(r#"{"customer":"Ali","city":"Nice","segment":"retail"}"#));
    send(&producer, "customer-info", 0, Some("Li"), None);
    send(&producer, "customer-info", 0, None, Some(r#"{"customer":"Sam","city":"Rome","segment":"pro"}"#));
    send(&producer, "customer-info", 0, None, Some(r#"{"customer":"Zed","op":"delete"}"#));
    send(&producer, "customer-info", 0, None, Some(r#"{"city":"Paris"}"#));
    // A transaction corrected meanwhile.
    send(&producer, TOPIC, 0, None, Some(r#"{"id":"t1","customer":"Ali","amount":20}"#));
    eventually(
        &run,
        "SELECT * FROM customer_info ORDER BY customer",
        r#"[["Ali","Nice","retail"],["Sam","Rome","pro"]]"#,
    );
    eventually(&run, BY_CITY, r#"[["Nice",25.5,2],["Rome",1,1]]"#);
    let want = [
        r#"{"city":"Nice","customer":"Ali","segment":"retail"}"#,
        r#"{"city":"Rome","customer":"Sam","segment":"pro"}"#,
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    while folded.rows() != want {
        assert!(Instant::now() < deadline, "the table's changefeed folds to {:?}", folded.rows());
        let (kind, _, data) = watched.next(Duration::from_secs(10));
        folded.apply(&kind, &data);
    }
    drop(watched);
    let refused = |run: &Run| run.get("/v1/status").1["tables"][0]["refused"].as_u64();
    let deadline = Instant::now() + Duration::from_secs(10);
    while refused(&run) != Some(2) {
        assert!(Instant::now() < deadline, "the status never counted two refused records");
        std::thread::sleep(Duration::from_millis(50));
    }
    let dead = std::fs::read_to_string(dir.join("dead.jsonl")).unwrap_or_default();
    assert!(dead.contains("table customer_info: customer-info/0/4"), "{dead}");
    // Views compiled into the dataflow: the join kept as the table and the transactions
    // change, a left join, and a view over a view.
    for view in [
        "CREATE VIEW spend_by_city AS SELECT i.city, sum(t.amount) AS total, count(*) AS n, avg(t.amount) AS mean \
         FROM transactions t JOIN customer_info i ON t.customer = i.customer GROUP BY i.city",
        "CREATE VIEW with_city AS SELECT t.customer, t.amount, i.city FROM transactions t \
         LEFT JOIN customer_info i ON t.customer = i.customer",
        "CREATE VIEW big_cities AS SELECT city, total FROM spend_by_city WHERE total > 5",
        &format!("CREATE VIEW {} AS {}", TOP.0, TOP.1),
        &format!("CREATE VIEW {} AS {}", RANKED.0, RANKED.1),
    ] {
        let (status, answer) = post_sql(&run.http, view);
        assert_eq!(status, 200, "{view}: {answer}");
    }
    assert_views_exact(&run, "after CREATE VIEW");
    // What each view's arrangements hold, over both workers: the join's (its partial sums by
    // customer, the table imported, not counted again, its groups) and the top-k's stages.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = rows(&run, "SHOW VIEWS");
        let shown: Vec<Vec<serde_json::Value>> = serde_json::from_str(&shown).unwrap();
        let held = |name: &str| shown.iter().find(|r| r[0] == name).and_then(|r| r[5].as_i64());
        let (join, top) = (held("spend_by_city"), held(TOP.0));
        if join.is_some_and(|n| n > 0) && top.is_some_and(|n| n > 0) {
            assert!(shown.iter().filter(|r| r[1] == "built-in").all(|r| r[5].is_null()), "{shown:?}");
            break;
        }
        assert!(Instant::now() < deadline, "SHOW VIEWS never counted the views' arrangements: {shown:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    send(&producer, "customer-info", 0, None, Some(r#"{"customer":"Zed","city":"Rome","segment":"pro"}"#));
    send(&producer, TOPIC, 1, None, Some(r#"{"id":"t4","customer":"Sam","amount":9}"#));
    send(&producer, "customer-info", 0, Some("Ali"), Some(r#"{"customer":"Ali","city":"Rome","segment":"retail"}"#));
    eventually(&run, BY_CITY, r#"[["Rome",36.5,4]]"#);
    assert_views_exact(&run, "after the stream");
    // A key seek on the table's primary key, and its columns as clients see them.
    assert_eq!(rows(&run, "SELECT city FROM customer_info WHERE customer = 'Sam'"), r#"[["Rome"]]"#);
    assert_eq!(
        rows(
            &run,
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'customer_info' \
             ORDER BY ordinal_position"
        ),
        r#"[["customer","text"],["city","text"],["segment","text"]]"#
    );

    // A restart reads the file and the topic again: the same rows, the same join.
    run.stop();
    let run = Run::start(&broker.address(), &history, 2, &dir, &["--state-dir", &state_arg]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&run.http).is_err() {
        assert!(Instant::now() < deadline, "lambda run did not come back");
        std::thread::sleep(Duration::from_millis(50));
    }
    eventually(
        &run,
        "SELECT * FROM customer_info ORDER BY customer",
        r#"[["Ali","Rome","retail"],["Sam","Rome","pro"],["Zed","Rome","pro"]]"#,
    );
    eventually(&run, BY_CITY, r#"[["Rome",36.5,4]]"#);
    assert_views_exact(&run, "after a restart");
    let deadline = Instant::now() + Duration::from_secs(10);
    while refused(&run) != Some(2) {
        assert!(Instant::now() < deadline, "the status never counted two refused records");
        std::thread::sleep(Duration::from_millis(50));
    }
    let dead = std::fs::read_to_string(dir.join("dead.jsonl")).unwrap_or_default();
    assert_eq!(dead.matches("\"source\":\"table customer_info").count(), 2, "read again, not written twice: {dead}");

    // kill -9 in the middle of more changes, and a restart from the last snapshot: the file
    // and the topic are read again, the views filled again from the snapshot and the stream.
    send(&producer, TOPIC, 2, None, Some(r#"{"id":"t6","customer":"Sam","amount":3}"#));
    send(&producer, "customer-info", 0, Some("Zed"), None);
    eventually(&run, BY_CITY, r#"[["Rome",37.5,4]]"#);
    drop(run);
    let run = Run::start(&broker.address(), &history, 2, &dir, &["--state-dir", &state_arg]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&run.http).is_err() {
        assert!(Instant::now() < deadline, "lambda run did not come back after kill -9");
        std::thread::sleep(Duration::from_millis(50));
    }
    eventually(&run, BY_CITY, r#"[["Rome",37.5,4]]"#);
    assert_views_exact(&run, "after kill -9");

    // Dropping: refused while a view reads the table, then done.
    let (status, answer) = post_sql(&run.http, "DROP TABLE customer_info");
    assert_eq!((status, answer["code"].as_str()), (400, Some("2BP01")), "{answer}");
    for view in ["big_cities", "spend_by_city", "with_city"] {
        assert_eq!(post_sql(&run.http, &format!("DROP VIEW {view}")).0, 200);
    }
    let (status, answer) =
        post_sql(&run.http, "CREATE VIEW in_rome AS SELECT customer FROM customer_info WHERE city = 'Rome'");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(rows(&run, "SELECT * FROM in_rome ORDER BY 1"), r#"[["Ali"],["Sam"]]"#);
    let (status, answer) = post_sql(&run.http, "DROP TABLE customer_info");
    assert_eq!((status, answer["code"].as_str()), (400, Some("2BP01")), "{answer}");
    let (status, answer) = post_sql(&run.http, "DROP VIEW customer_info");
    assert_eq!((status, answer["code"].as_str()), (400, Some("42809")), "{answer}");
    assert_eq!(post_sql(&run.http, "DROP VIEW in_rome").0, 200);
    assert_eq!(post_sql(&run.http, "DROP TABLE customer_info").0, 200);
    let (status, answer) = post_sql(&run.http, "SELECT * FROM customer_info");
    assert_eq!((status, answer["code"].as_str()), (400, Some("42P01")), "{answer}");
    let (status, answer) = post_sql(&run.http, "DROP TABLE transactions");
    assert_eq!((status, answer["code"].as_str()), (400, Some("42809")), "{answer}");
    run.stop();
}

#[test]
fn a_statement_that_cannot_make_a_table_is_refused_and_changes_nothing() {
    let dir = temp_dir("tables-refused");
    let broker = TestBroker::mock();
    let history = history(&dir, &[r#"{"id":"t1","customer":"Ali","amount":10}"#.to_owned()]);
    let mut run = Run::start(&broker.address(), &history, 1, &dir, &[]);
    run.views_at(&Default::default());
    for (statement, code) in [
        ("CREATE TABLE t (a text, b text) WITH (topic = 'x')", "22023"),
        ("CREATE TABLE t (a text PRIMARY KEY, b boolean) WITH (topic = 'x')", "0A000"),
        ("CREATE TABLE t (a text PRIMARY KEY) WITH (path = '/no/such.csv')", "22023"),
        ("CREATE TABLE customers (a text PRIMARY KEY) WITH (topic = 'x')", "42P07"),
        ("CREATE TABLE \"a b\" (a text PRIMARY KEY) WITH (topic = 'x')", "42602"),
    ] {
        let (status, answer) = post_sql(&run.http, statement);
        assert_eq!((status, answer["code"].as_str()), (400, Some(code)), "{statement}: {answer}");
    }
    let (status, answer) = post_sql(&run.http, "CREATE TABLE t (a text PRIMARY KEY) WITH (topic = 'x')");
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = post_sql(&run.http, "CREATE TABLE T (a text PRIMARY KEY) WITH (topic = 'y')");
    assert_eq!((status, answer["code"].as_str()), (400, Some("42P07")), "{answer}");
    assert_eq!(post_sql(&run.http, "CREATE TABLE IF NOT EXISTS t (a text PRIMARY KEY) WITH (topic = 'x')").0, 200);
    assert_eq!(rows(&run, "SELECT count(*) FROM t"), "[[0]]");
    // Views the dataflow cannot keep are refused, saying why.
    for (statement, says) in [
        ("CREATE VIEW v AS SELECT x.customer FROM transactions x JOIN t ON x.customer > t.a", "every pair"),
        ("CREATE VIEW v AS SELECT x.customer FROM transactions x FULL JOIN t ON x.customer = t.a", "JOIN"),
        ("CREATE VIEW v AS SELECT customer, row_number() OVER () FROM transactions", "window function"),
        ("CREATE VIEW v AS SELECT x.id, t.a FROM transactions x JOIN t ON x.customer = t.a", "transactions.id"),
        (
            "CREATE VIEW v AS SELECT x.customer FROM transactions x JOIN transactions y ON x.customer = y.customer",
            "product",
        ),
    ] {
        let (status, answer) = post_sql(&run.http, statement);
        assert_eq!((status, answer["code"].as_str()), (400, Some("0A000")), "{statement}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{statement}: {error}");
    }
    run.stop();
}

#[test]
fn a_table_and_a_view_joining_it_are_exact_over_two_processes() {
    let dir = temp_dir("tables-cluster");
    let broker = TestBroker::mock();
    let lines = random_history(60);
    let history = history(&dir, &lines);
    let csv = dir.join("customers.csv");
    std::fs::write(&csv, "customer,city,segment\nAli,Lyon,retail\nSara,Oslo,pro\nMounir,Lyon,pro\n").unwrap();
    let hosts = hostfile(&dir);
    let mut cluster = start_cluster(&broker, &history, &dir, &hosts).into_iter();
    let (mut first, second) = (cluster.next().unwrap(), cluster.next().unwrap());
    first.views_at(&Default::default());
    broker.create_topic("customer-info", 3);
    let create = CREATE.replace("{path}", &csv.display().to_string());
    assert_eq!(post_sql(&first.http, &create).0, 200);
    let view = "CREATE VIEW spend_by_city AS SELECT i.city, sum(t.amount) AS total, count(*) AS n \
                FROM transactions t JOIN customer_info i ON t.customer = i.customer GROUP BY i.city";
    assert_eq!(post_sql(&first.http, view).0, 200);
    // Top-k views, whose stages hash rows: a row and its retraction meet in one bucket in
    // whichever process they are made.
    for view in [TOP, RANKED] {
        let (status, answer) = post_sql(&first.http, &format!("CREATE VIEW {} AS {}", view.0, view.1));
        assert_eq!(status, 200, "{answer}");
    }
    let messages = random_messages(5, 150);
    let producer = producer(&broker.address());
    send_all(&producer, &messages);
    for (partition, (customer, city)) in [("Li", "Rome"), ("Sara", "Lyon"), ("Zoé", "Oslo")].into_iter().enumerate() {
        let body = format!(r#"{{"customer":"{customer}","city":"{city}"}}"#);
        send(&producer, "customer-info", partition as i32, Some(customer), Some(&body));
    }
    send(&producer, "customer-info", 0, Some("Mounir"), None);
    first.views_at(&end_offsets(&messages));
    eventually(
        &first,
        "SELECT customer, city FROM customer_info ORDER BY 1",
        r#"[["Ali","Lyon"],["Li","Rome"],["Sara","Lyon"],["Zoé","Oslo"]]"#,
    );
    let adhoc = rows(&first, BY_CITY);
    assert_ne!(adhoc, "[]", "the join has rows");
    eventually(&first, "SELECT * FROM spend_by_city ORDER BY 1", &adhoc);
    for (name, select) in [TOP, RANKED] {
        let adhoc = rows(&first, &format!("SELECT * FROM ({select}) v ORDER BY 1, 2, 3"));
        assert_ne!(adhoc, "[]", "{name} has rows");
        eventually(&first, &format!("SELECT * FROM {name} ORDER BY 1, 2, 3"), &adhoc);
    }
    drop(second);
}
