//! The Nexmark streams as tables: people, auctions and bids from the generator, with bids
//! corrected (re-sent by id with a new price) and deleted — loaded as the tables' history, or
//! sent by `lambda produce --nexmark` to a broker that `lambda run` reads — every table and a
//! query of Nexmark's (q2, a filter) equal the events applied in order.

use std::collections::BTreeMap;

use atelier_lambda::nexmark::generator::{Generator, Options};
use atelier_lambda::nexmark::{Event, Stream};

use crate::common::engine::{Live, V};
use crate::common::live::{history, lambda, post_sql, Run, TestBroker};
use crate::common::{temp_dir, write_history};

/// What the tables hold once `events` are applied in order: how many people and auctions,
/// and each live bid's (auction, price) by id.
fn applied(events: &[Event]) -> (i64, i64, BTreeMap<u64, (u64, u64)>) {
    let (mut people, mut auctions, mut bids) = (0, 0, BTreeMap::new());
    for event in events {
        match event {
            Event::Person(_) => people += 1,
            Event::Auction(_) => auctions += 1,
            Event::Bid(b) => {
                bids.insert(b.id, (b.auction, b.price));
            }
            Event::BidDeleted(id) => {
                bids.remove(id);
            }
        }
    }
    (people, auctions, bids)
}

#[test]
fn nexmark_tables_with_corrections_and_q2_equal_the_events_applied_in_order() {
    let dir = temp_dir("nexmark");
    let options = Options { events: 20_000, corrections: 0.1, deletes: 0.02, seed: 5, ..Options::default() };
    let events: Vec<Event> = Generator::new(options).collect();
    let (people, auctions, bids) = applied(&events);
    let mut lines: BTreeMap<Stream, Vec<String>> = BTreeMap::new();
    for event in &events {
        lines.entry(event.stream()).or_default().push(event.json());
    }
    let history = write_history(&dir, &[]);
    let mut live = Live::start(&history, 2, &dir, 1000);
    for stream in Stream::ALL {
        let path = dir.join(format!("{}.jsonl", stream.name()));
        std::fs::write(&path, lines[&stream].join("\n") + "\n").unwrap();
        let create = stream.create_table(&format!("connector = 'file', path = '{}'", path.display()));
        live.sql(&create).unwrap_or_else(|e| panic!("{create}: {e}"));
    }
    live.sql("CREATE VIEW q2 AS SELECT auction, price FROM bid WHERE auction % 123 = 0").unwrap();

    let count = |live: &mut Live, table: &str| live.rows(&format!("SELECT count(*) FROM {table}"))[0][0].clone();
    assert_eq!(count(&mut live, "person"), V::Int(people));
    assert_eq!(count(&mut live, "auction"), V::Int(auctions));
    assert_eq!(count(&mut live, "bid"), V::Int(bids.len() as i64));
    let total: i64 = bids.values().map(|(_, p)| *p as i64).sum();
    // A sum of integers is exact, a numeric of scale 0.
    assert_eq!(live.rows("SELECT sum(price) FROM bid")[0][0], V::Num(total.into(), 0));
    let mut q2: Vec<Vec<V>> = bids
        .values()
        .filter(|(auction, _)| auction % 123 == 0)
        .map(|(auction, price)| vec![V::Int(*auction as i64), V::Int(*price as i64)])
        .collect();
    q2.sort();
    assert!(!q2.is_empty(), "the filter keeps some bids");
    assert_eq!(live.rows("SELECT auction, price FROM q2 ORDER BY auction, price"), q2);
    drop(live);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lambda_produce_sends_the_nexmark_streams_that_tables_read_from_their_topics() {
    let dir = temp_dir("nexmark-produce");
    let broker = TestBroker::mock();
    for stream in Stream::ALL {
        broker.create_topic(stream.name(), 3);
    }
    let mut run = Run::start(&broker.address(), &history(&dir, &[]), 2, &dir, &[]);
    run.views_at(&Default::default());
    for stream in Stream::ALL {
        let create = stream.create_table(&format!("connector = 'kafka', topic = '{}', format = 'json'", stream.name()));
        let (status, answer) = post_sql(&run.http, &create);
        assert_eq!(status, 200, "{create}: {answer}");
    }
    let out = lambda()
        .args(["produce", "--brokers", &broker.address(), "--nexmark", "5000", "--corrections", "0.1"])
        .args(["--deletes", "0.02", "--seed", "3"])
        .output()
        .expect("lambda produce runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The read-your-writes bound it prints covers the three topics.
    let bound = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    for stream in Stream::ALL {
        assert!(bound.contains(&format!("{}/", stream.name())), "{bound}");
    }
    let options = Options { events: 5000, corrections: 0.1, deletes: 0.02, seed: 3, ..Options::default() };
    let (people, auctions, bids) = applied(&Generator::new(options).collect::<Vec<_>>());
    let total: i64 = bids.values().map(|(_, p)| *p as i64).sum();
    let statement = "SELECT (SELECT count(*) FROM person) AS p, (SELECT count(*) FROM auction) AS a, \
                     (SELECT count(*) FROM bid) AS b, (SELECT sum(price) FROM bid) AS s";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, answer) = post_sql(&run.http, statement);
        assert_eq!(status, 200, "{answer}");
        if answer["rows"] == serde_json::json!([[people, auctions, bids.len(), total]]) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{answer}, expected {people} {auctions} {} {total}", bids.len());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(run);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each query a view over the tables — created before the stream's half of the events and
/// maintained through it, corrections and deletes of bids included — answers what the same
/// `SELECT` answers ad hoc (DataFusion over the tables' rows at the same time).
#[test]
fn nexmark_queries_as_views_equal_the_same_select_through_corrections() {
    use atelier_lambda::nexmark::queries::QUERIES;
    let dir = temp_dir("nexmark-queries");
    let options = Options { events: 20_000, corrections: 0.1, deletes: 0.02, seed: 9, ..Options::default() };
    let events: Vec<Event> = Generator::new(options).collect();
    let (history, stream) = events.split_at(events.len() / 2);
    let mut live = Live::start(&write_history(&dir, &[]), 2, &dir, 1000);
    for table in Stream::ALL {
        live.create_topic(table.name());
        let lines: Vec<String> = history.iter().filter(|e| e.stream() == table).map(Event::json).collect();
        let path = dir.join(format!("{}.jsonl", table.name()));
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let with = format!("connector = 'kafka', topic = '{}', path = '{}'", table.name(), path.display());
        live.sql(&table.create_table(&with)).unwrap();
    }
    let mut refused = Vec::new();
    for (name, select) in QUERIES {
        if let Err(error) = live.sql(&format!("CREATE VIEW {name} AS {select}")) {
            refused.push(format!("{name}: {error}"));
        }
    }
    for table in Stream::ALL {
        let messages: Vec<(Option<String>, Option<String>)> = stream
            .iter()
            .filter(|e| e.stream() == table)
            .map(|e| {
                let key = match e {
                    Event::Person(p) => p.id,
                    Event::Auction(a) => a.id,
                    Event::Bid(b) => b.id,
                    Event::BidDeleted(id) => *id,
                };
                (Some(key.to_string()), Some(e.json()))
            })
            .collect();
        live.send_all_to(table.name(), &messages);
    }
    let (people, auctions, bids) = applied(&events);
    let want = vec![vec![V::Int(people), V::Int(auctions), V::Int(bids.len() as i64)]];
    let counts = "SELECT (SELECT count(*) FROM person) AS p, (SELECT count(*) FROM auction) AS a, \
                  (SELECT count(*) FROM bid) AS b";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while live.rows(counts) != want {
        assert!(std::time::Instant::now() < deadline, "the tables never took the stream");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let sorted = |mut rows: Vec<Vec<V>>| {
        rows.sort();
        rows
    };
    for (name, select) in QUERIES {
        if refused.iter().any(|r| r.starts_with(&format!("{name}:"))) {
            continue;
        }
        let view = sorted(live.rows(&format!("SELECT * FROM {name}")));
        let adhoc = sorted(live.rows(&format!("SELECT * FROM ({select}) v")));
        assert!(!adhoc.is_empty(), "{name} has rows");
        assert_eq!(view, adhoc, "{name}");
    }
    assert!(refused.is_empty(), "{refused:#?}");
    drop(live);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `lambda nexmark`'s run in process: each query a view over tables fed by the generator
/// (corrections and deletes of bids included), timed, then compared with DataFusion alone over
/// the events applied in order — equal, every query.
#[test]
fn every_query_over_the_generators_tables_equals_datafusion_over_the_events_applied() {
    use atelier_lambda::nexmark::bench::{run, Bench};
    use atelier_lambda::nexmark::queries::QUERIES;
    let options = Options { events: 30_000, corrections: 0.1, deletes: 0.02, seed: 11, ..Options::default() };
    for (name, _) in QUERIES {
        let bench = Bench { query: name.to_owned(), options, workers: 2, verify: true };
        let measured = run(&bench).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(measured.differences, Some(0), "{name}: {}", measured.line(&bench));
        assert!(measured.rows > 0, "{name} has rows");
        // Every event and every correction and delete came in.
        assert!(measured.changes > 30_000 + 2_000, "{name}: {}", measured.changes);
    }
}
