//! Changefeeds end to end: the real `lambda run`, a Kafka-protocol broker, and real HTTP
//! clients following `GET /v1/subscribe` while a random stream (corrections, deletes,
//! redeliveries, bad records) arrives in random batches. Folding each subscriber's events
//! must give exactly the view — the oracle's, recomputed from scratch — at the time of the
//! last event; resuming from a time seen must continue exactly.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::feed::*;
use common::live::*;
use common::temp_dir;
use rdkafka::producer::{BaseProducer, Producer};

const WAIT: Duration = Duration::from_secs(30);

/// Folds `subscriber`'s events into `folded` until they reflect `offsets`; calls `seen` with
/// the fold after every event.
fn fold_until(
    subscriber: &Subscriber,
    folded: &mut Folded,
    offsets: &BTreeMap<i32, i64>,
    mut seen: impl FnMut(&Folded, Option<&str>),
) {
    while !folded.reached(offsets) {
        let (kind, id, data) = subscriber.next(WAIT);
        if folded.offsets.is_null() {
            assert_eq!(kind, "snapshot", "a feed starts with the rows: {data}");
        }
        folded.apply(&kind, &data);
        if kind != "progress" {
            assert_eq!(id, Some(folded.time.to_string()), "an event's id is its time");
        }
        seen(folded, id.as_deref());
    }
}

/// The rows of view `name` over HTTP, as JSON texts in order.
fn view_rows(run: &Run, name: &str) -> Vec<String> {
    let (status, body) = run.get(&format!("/v1/views/{name}"));
    assert_eq!(status, 200, "{body}");
    let mut rows: Vec<String> = body["rows"].as_array().unwrap().iter().map(|r| r.to_string()).collect();
    rows.sort();
    rows
}

fn send(producer: &BaseProducer, messages: &[Sent]) {
    send_all(producer, messages);
    producer.flush(Duration::from_secs(10)).expect("the broker takes the messages");
}

#[test]
fn subscribers_fold_to_the_exact_views_through_a_random_stream() {
    let dir = temp_dir("changefeed-e2e");
    let broker = TestBroker::mock();
    let lines = random_history(300);
    let history = history(&dir, &lines);
    let mut run = Run::start(&broker.address(), &history, 2, &dir, &[]);
    run.views_at(&BTreeMap::new());
    let (status, answer) = post_sql(
        &run.http,
        "CREATE VIEW big AS SELECT customer, sum(amount) AS total, count(*) AS n FROM transactions \
         GROUP BY customer HAVING sum(amount) > 50",
    );
    assert_eq!(status, 200, "{answer}");

    // Bad subscriptions are refused before any stream starts.
    assert_eq!(Subscriber::open(&run.http, "/v1/subscribe?view=nothing", &[]).status, 404);
    assert_eq!(Subscriber::open(&run.http, "/v1/subscribe", &[]).status, 400);
    assert_eq!(Subscriber::open(&run.http, "/v1/subscribe?view=customers&as_of=soon", &[]).status, 400);
    assert_eq!(Subscriber::open(&run.http, "/v1/subscribe?view=overall&key=x", &[]).status, 400);

    let messages = random_messages(21, 400);
    let expected = expected_reading(&lines, "history.jsonl", &messages, 10);
    // A customer the stream changes, to follow alone.
    let followed = expected.customers.iter().map(|(c, _)| c.clone()).nth(1).expect("customers");
    let customers = Subscriber::open(&run.http, "/v1/subscribe?view=customers", &[]);
    let big = Subscriber::open(&run.http, "/v1/subscribe?view=big", &[]);
    let one = Subscriber::open(&run.http, &format!("/v1/subscribe?view=customers&key={followed}"), &[]);
    for subscriber in [&customers, &big, &one] {
        assert_eq!(subscriber.status, 200, "{}", subscriber.error);
    }

    // The stream, in random batches with pauses between them.
    let producer = producer(&broker.address());
    for batch in messages.chunks(67) {
        send(&producer, batch);
        std::thread::sleep(Duration::from_millis(batch.len() as u64 % 7 * 20));
    }
    let end = end_offsets(&messages);
    let reading = run.views_at(&end);
    assert_eq!(reading.customers, expected.customers, "the views are the oracle's");

    // Every fold ends on the view; the customers fold also on the oracle's rows.
    let mut folded = Folded::default();
    let mut at_times: Vec<(String, Folded)> = Vec::new();
    fold_until(&customers, &mut folded, &end, |f, id| {
        if let Some(id) = id {
            at_times.push((id.to_owned(), Folded { rows: f.rows.clone(), time: f.time, offsets: f.offsets.clone() }));
        }
    });
    assert_eq!(folded.rows(), view_rows(&run, "customers"), "the customers feed folds to the view");
    let oracle: Vec<(String, String, i64)> = expected
        .customers
        .iter()
        .map(|(c, row)| (c.clone(), atelier_lambda::amount::format_cents(row.total), row.count))
        .collect();
    let mut fed: Vec<(String, String, i64)> = folded
        .rows()
        .iter()
        .map(|text| {
            let row: serde_json::Value = serde_json::from_str(text).unwrap();
            (row["customer"].as_str().unwrap().to_owned(), row["total"].to_string(), row["count"].as_i64().unwrap())
        })
        .collect();
    fed.sort();
    assert_eq!(fed, oracle, "the customers feed folds to the oracle's view");
    assert!(at_times.len() > 2, "the stream was seen as several changes: {}", at_times.len());

    let mut folded_big = Folded::default();
    fold_until(&big, &mut folded_big, &end, |_, _| {});
    assert_eq!(folded_big.rows(), view_rows(&run, "big"), "a created view's feed folds to it");

    let mut folded_one = Folded::default();
    fold_until(&one, &mut folded_one, &end, |_, _| {});
    let only: Vec<String> =
        folded.rows().into_iter().filter(|r| r.contains(&format!("\"customer\":\"{followed}\""))).collect();
    assert_eq!(folded_one.rows(), only, "key= follows one customer");

    // Resuming after a time seen (Last-Event-ID, as a browser's EventSource does; or as_of)
    // continues exactly from the rows at that time.
    let (id, mut resumed) = at_times.swap_remove(at_times.len() / 2);
    let again = Subscriber::open(&run.http, "/v1/subscribe?view=customers", &[("Last-Event-ID", &id)]);
    assert_eq!(again.status, 200, "{}", again.error);
    fold_until(&again, &mut resumed, &end, |_, _| {});
    assert_eq!(resumed.rows(), folded.rows(), "a resumed feed ends on the same rows");
    let again = Subscriber::open(&run.http, &format!("/v1/subscribe?view=customers&as_of={id}"), &[]);
    assert_eq!(again.status, 200, "{}", again.error);
    assert_ne!(again.next(WAIT).0, "snapshot", "a resumed feed sends changes, not the rows");

    // A time no longer kept: 410, saying the earliest (a new pump starts at the current time).
    let gone = Subscriber::open(&run.http, "/v1/subscribe?view=categories&as_of=0", &[]);
    assert_eq!(gone.status, 410, "{}", gone.error);
    assert!(gone.error["earliest"].as_u64().is_some_and(|t| t > 0), "{}", gone.error);

    // Idle: progress at least every second, and a dropped view ends its feed.
    let (kind, _, data) = customers.next(Duration::from_millis(2500));
    assert_eq!(kind, "progress", "{data}");
    let (status, answer) = post_sql(&run.http, "DROP VIEW big");
    assert_eq!(status, 200, "{answer}");
    loop {
        let (kind, _, data) = big.next(WAIT);
        if kind == "error" {
            assert!(data["error"].as_str().unwrap().contains("dropped"), "{data}");
            break;
        }
    }
    run.stop();
}

/// `COPY (SUBSCRIBE customers) TO STDOUT` over psql streams the view's rows as COPY lines
/// (`time, diff, columns`). pgwire 0.40 hands copy data to the socket in 8 KiB chunks, so
/// the test subscribes to a view larger than that: its first rows must arrive while the
/// stream stays open.
#[test]
fn psql_subscribes_as_materialize_does() {
    let dir = temp_dir("changefeed-pg");
    let broker = TestBroker::mock();
    let lines: Vec<String> = (0..600).map(|i| format!(r#"{{"customer":"c{i:04}","amount":{}}}"#, i + 1)).collect();
    let history = history(&dir, &lines);
    let pg = free_port();
    let mut run = Run::start(&broker.address(), &history, 2, &dir, &["--pg", &format!("127.0.0.1:{pg}")]);
    run.views_at(&BTreeMap::new());
    let mut copy = Killed(
        std::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &pg.to_string(), "-U", "lambda", "-d", "lambda", "-X"])
            .args(["-c", "COPY (SUBSCRIBE customers) TO STDOUT"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("psql runs (./test installs it)"),
    );
    let stdout = std::io::BufReader::new(copy.0.stdout.take().unwrap());
    let (sender, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(stdout).map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    for _ in 0..100 {
        let line = received.recv_timeout(WAIT).expect("COPY lines while the subscription is open");
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 8, "time, diff and the six columns: {line}");
        assert!(fields[0].parse::<u64>().is_ok() && fields[1] == "1", "a snapshot row: {line}");
        let n: u64 = fields[2].trim_start_matches('c').parse().expect("a customer c0123");
        assert_eq!(fields[3], (n + 1).to_string(), "{line}");
    }
    assert!(copy.0.try_wait().unwrap().is_none(), "the subscription stays open");
    drop(copy);
    run.stop();
}
