//! The Nexmark streams as tables: people, auctions and bids from the generator, with bids
//! corrected (re-sent by id with a new price) and deleted, loaded as the tables' history —
//! every table and a query of Nexmark's (q2, a filter) equal the events applied in order.

use std::collections::BTreeMap;

use atelier_lambda::nexmark::generator::{Generator, Options};
use atelier_lambda::nexmark::{Event, Stream};

use crate::common::engine::{Live, V};
use crate::common::{temp_dir, write_history};

#[test]
fn nexmark_tables_with_corrections_and_q2_equal_the_events_applied_in_order() {
    let dir = temp_dir("nexmark");
    let options = Options { events: 20_000, corrections: 0.1, deletes: 0.02, seed: 5, ..Options::default() };
    let events: Vec<Event> = Generator::new(options).collect();
    // The rows each stream's table must hold: the last version of each id.
    let (mut people, mut auctions, mut bids) = (0i64, 0i64, BTreeMap::new());
    let mut lines: BTreeMap<Stream, Vec<String>> = BTreeMap::new();
    for event in &events {
        lines.entry(event.stream()).or_default().push(event.json());
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
