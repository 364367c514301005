//! Views compiled into the dataflow equal DataFusion evaluating the same `SELECT` over the
//! oracle's live transactions and the table's expected rows (the last change of each key),
//! after every batch — joins of the transactions with a table (inner and left), aggregates
//! (`sum`, `count`, `count(DISTINCT)`, `min`, `max`, `avg`), `DISTINCT`, `UNION ALL`,
//! `date_trunc`, `date_bin`, arithmetic, `ORDER BY … LIMIT … OFFSET`, `row_number()` bounded
//! per partition, aggregates without groups (one row even over none), views over a view — while both sides change: random transactions with
//! corrections, deletes, redeliveries and bad records; table upserts, `"op":"delete"`,
//! tombstones and records without the key; in the real pipeline on 1 and 2 workers, views
//! created before the stream and between batches.

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use atelier_lambda::compute::columns::{ColumnType, Owned};
use atelier_lambda::oracle::PlainTable;
use common::engine::{rows, Live, V};
use common::live::TOPIC;
use common::*;
use proptest::prelude::*;

/// The views, by name: a `SELECT` and how many columns it shows. The last reads the first.
const VIEWS: [(&str, &str, usize); 18] = [
    (
        "spend_by_city",
        "SELECT i.city, sum(t.amount) AS total, count(*) AS n, avg(t.amount) AS mean \
         FROM transactions t JOIN info i ON t.customer = i.customer GROUP BY i.city",
        4,
    ),
    (
        "with_city",
        "SELECT t.customer, t.amount, i.city, i.segment FROM transactions t \
         LEFT JOIN info i ON t.customer = i.customer WHERE t.amount > 20",
        4,
    ),
    (
        "by_segment",
        "SELECT i.segment, count(DISTINCT t.customer) AS buyers, max(t.amount) AS top, min(t.ts) AS first \
         FROM transactions t JOIN info i ON t.customer = i.customer WHERE i.city <> 'Oslo' GROUP BY i.segment",
        4,
    ),
    ("cities", "SELECT city, count(*) AS n FROM info GROUP BY city", 2),
    ("pairs", "SELECT DISTINCT t.category, i.city FROM transactions t JOIN info i ON t.customer = i.customer", 2),
    (
        "names",
        "SELECT customer, category AS what FROM transactions WHERE amount >= 50 \
         UNION ALL SELECT customer, city FROM info",
        2,
    ),
    (
        "hourly_city",
        "SELECT date_trunc('hour', t.ts) AS hour, i.city, sum(t.amount) AS total FROM transactions t \
         JOIN info i ON t.customer = i.customer WHERE t.ts IS NOT NULL GROUP BY date_trunc('hour', t.ts), i.city",
        3,
    ),
    ("busy_cities", "SELECT city, total FROM spend_by_city WHERE n > 1", 2),
    (
        "largest",
        "SELECT customer, amount, category FROM transactions ORDER BY amount DESC, customer, category LIMIT 3 OFFSET 1",
        3,
    ),
    (
        "two_largest_each",
        "SELECT customer, amount, rn FROM (SELECT customer, amount, row_number() OVER \
         (PARTITION BY customer ORDER BY amount DESC) AS rn FROM transactions) r WHERE rn <= 3 AND rn > 1 AND amount > 0",
        3,
    ),
    (
        "quarter_hours",
        "SELECT date_bin(INTERVAL '15 minutes', ts, TIMESTAMP '2025-01-01 00:05:00') AS bin, count(*) AS n, \
         sum(amount * 2 - 1) AS adjusted FROM transactions WHERE ts IS NOT NULL GROUP BY 1",
        3,
    ),
    (
        "everything_large",
        "SELECT count(*) AS n, sum(amount) AS total, max(amount) - min(amount) AS spread, avg(amount) AS mean \
         FROM transactions WHERE amount > 80",
        4,
    ),
    (
        "city_arithmetic",
        "SELECT city, n * 2 + 1 AS odd, n / 2 AS half, n % 2 AS parity, total + 1 AS more FROM spend_by_city",
        5,
    ),
    ("joined_rows", "SELECT sum(n) AS rows_joined, count(*) AS cities FROM spend_by_city", 2),
    (
        "in_rome",
        "SELECT count(*) AS n, sum(t.amount) AS total FROM transactions t JOIN info i ON t.customer = i.customer \
         WHERE i.city = 'Rome'",
        2,
    ),
    // A table's rows sought by a key the view does not show.
    ("ali_info", "SELECT city, segment FROM info WHERE customer = 'Ali'", 2),
    // A semi join: the transactions of customers the table places in Lyon.
    (
        "in_lyon",
        "SELECT customer, amount FROM transactions WHERE customer IN (SELECT customer FROM info WHERE city = 'Lyon')",
        2,
    ),
    // CASE: the first true branch (a NULL amount takes none).
    (
        "sizes",
        "SELECT CASE WHEN amount < 50 THEN 'small' WHEN amount < 100 THEN 'medium' ELSE 'large' END AS size, \
         count(*) AS n, sum(CASE WHEN category IS NULL THEN 1 ELSE 0 END) AS uncategorized FROM transactions GROUP BY 1",
        3,
    ),
];

const CUSTOMERS: [&str; 6] = ["Ali", "Sara", "Mounir", "Zoé", "Li", "Nobody"];

/// A change to the table, as its topic carries it.
#[derive(Clone, Debug)]
enum Change {
    Upsert { customer: &'static str, city: &'static str, segment: Option<&'static str> },
    Delete(&'static str),
    Tombstone(&'static str),
    WithoutKey,
}

fn change() -> impl Strategy<Value = Change> {
    let customer = prop::sample::select(CUSTOMERS.to_vec());
    let city = prop::sample::select(vec!["Lyon", "Oslo", "Rome"]);
    let segment = prop::option::weighted(0.8, prop::sample::select(vec!["retail", "pro"]));
    prop_oneof![
        6 => (customer.clone(), city, segment).prop_map(|(customer, city, segment)| Change::Upsert { customer, city, segment }),
        1 => customer.clone().prop_map(Change::Delete),
        1 => customer.prop_map(Change::Tombstone),
        1 => Just(Change::WithoutKey),
    ]
}

/// The table: customer → (city, segment).
type Table = BTreeMap<&'static str, (&'static str, Option<&'static str>)>;

impl Change {
    fn apply(&self, table: &mut Table) {
        match self {
            Change::Upsert { customer, city, segment } => {
                table.insert(customer, (city, *segment));
            }
            Change::Delete(customer) | Change::Tombstone(customer) => {
                table.remove(customer);
            }
            Change::WithoutKey => {}
        }
    }

    fn send(&self, live: &mut Live) {
        match self {
            Change::Upsert { customer, city, segment } => {
                let segment = segment.map_or("null".to_owned(), |s| format!("\"{s}\""));
                let body = format!(r#"{{"customer":"{customer}","city":"{city}","segment":{segment}}}"#);
                live.send_to("info", Some(customer), Some(&body));
            }
            Change::Delete(customer) => {
                live.send_to("info", None, Some(&format!(r#"{{"customer":"{customer}","op":"delete"}}"#)))
            }
            Change::Tombstone(customer) => live.send_to("info", Some(customer), None),
            Change::WithoutKey => live.send_to("info", None, Some(r#"{"city":"Paris"}"#)),
        }
    }
}

fn plain(table: &Table) -> PlainTable {
    let text = |t: &str| Owned::Text(t.to_owned());
    PlainTable {
        name: "info".into(),
        columns: vec![
            ("customer".into(), ColumnType::Text),
            ("city".into(), ColumnType::Text),
            ("segment".into(), ColumnType::Text),
        ],
        rows: table.iter().map(|(c, (city, s))| vec![text(c), text(city), s.map_or(Owned::Null, text)]).collect(),
    }
}

fn order_by(columns: usize) -> String {
    (1..=columns).map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
}

#[allow(clippy::too_many_arguments)]
fn check(
    history: Vec<String>,
    initial: Vec<Change>,
    batches: Vec<(Vec<Message>, Vec<Change>)>,
    workers: usize,
    views: Vec<usize>,
    later: usize,
) -> Result<(), TestCaseError> {
    let dir = temp_dir("compiled-views-reference");
    let path = write_history(&dir, &history);
    // The table's file: the initial upserts (a key's last row wins), as CSV.
    let mut table = Table::new();
    let mut csv = String::from("customer,city,segment\n");
    for change in &initial {
        if let Change::Upsert { customer, city, segment } = change {
            csv.push_str(&format!("{customer},{city},{}\n", segment.unwrap_or("")));
            change.apply(&mut table);
        }
    }
    let file = dir.join("info.csv");
    std::fs::write(&file, csv).unwrap();
    let mut tables = vec![table.clone()];
    for (_, changes) in &batches {
        changes.iter().for_each(|c| c.apply(&mut table));
        tables.push(table.clone());
    }
    // The answers expected at every time, from the oracle and the table's rows then.
    let txn_batches: Vec<Vec<Message>> = batches.iter().map(|(m, _)| m.clone()).collect();
    let mut expected: Vec<Vec<Vec<Vec<V>>>> = Vec::new();
    replay(&history, &path.display().to_string(), &txn_batches, |time, oracle| {
        let reading = oracle.reading(time, None, 1000);
        let info = [plain(&tables[time as usize])];
        let answers = VIEWS
            .iter()
            .map(|(name, select, columns)| {
                // A view over a view reads its base's SELECT.
                let select = select.replace("FROM spend_by_city", &format!("FROM ({}) s", VIEWS[0].1));
                let sql = format!("SELECT * FROM ({select}) v ORDER BY {}", order_by(*columns));
                let answer =
                    oracle.answer_sql_with(&reading, TOPIC, &info, &sql).unwrap_or_else(|e| panic!("{name}: {e}"));
                rows(&answer)
            })
            .collect();
        expected.push(answers);
    });

    let mut live = Live::start(&path, workers, &dir, 3);
    live.create_topic("info");
    let create = format!(
        "CREATE TABLE info (customer text, city text, segment text, PRIMARY KEY (customer)) \
         WITH (connector = 'kafka', topic = 'info', path = '{}')",
        file.display()
    );
    live.sql(&create).map_err(|e| TestCaseError::fail(format!("{create}: {e}")))?;
    let mut created: Vec<usize> = Vec::new();
    let create_views = |live: &mut Live, created: &mut Vec<usize>, which: &[usize]| -> Result<(), TestCaseError> {
        for &v in which {
            let (name, select, _) = VIEWS[v];
            let sql = format!("CREATE VIEW {name} AS {select}");
            live.sql(&sql).map_err(|e| TestCaseError::fail(format!("{sql}: {e}")))?;
            created.push(v);
        }
        Ok(())
    };
    let (first, second): (Vec<usize>, Vec<usize>) = views.iter().partition(|v| **v == 0 || **v % 2 == 1);
    create_views(&mut live, &mut created, &first)?;
    // The time of the previous batch, held as a changefeed holds its last event's, and the
    // views created then.
    let mut previous: Option<(std::sync::Arc<atelier_lambda::sql::read::Hold>, Vec<usize>)> = None;
    for time in 0..=batches.len() {
        if time > 0 {
            let (messages, changes) = &batches[time - 1];
            live.send(messages);
            for change in changes {
                change.send(&mut live);
            }
        }
        if time == later.min(batches.len()) {
            create_views(&mut live, &mut created, &second)?;
        }
        // The table has taken every change sent (its topic is not among the statement's waits).
        let want_table = rows(&live_answer(&plain(&tables[time])));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = live.rows("SELECT customer, city, segment FROM info ORDER BY customer");
            if got == want_table {
                break;
            }
            prop_assert!(
                Instant::now() < deadline,
                "{} workers, time {}: table {:?}, expected {:?}",
                workers,
                time,
                got,
                want_table
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        for &v in &created {
            let (name, _, columns) = VIEWS[v];
            let got = live.rows(&format!("SELECT * FROM {name} ORDER BY {}", order_by(columns)));
            prop_assert_eq!(&got, &expected[time][v], "{} workers, after batch {}: view {}", workers, time, name);
        }
        // What a changefeed reads from one batch to the next is the difference of the rows.
        let hold = live.hold();
        if let Some((since, views)) = &previous {
            for &v in views {
                let name = VIEWS[v].0;
                let read = live.changes_fold(name, since, &hold).map_err(TestCaseError::fail)?;
                // A view kept as groups with one row even over none (a read-time union) is read
                // whole by its feeds; every other here by its changes.
                prop_assert!(read || WHOLE.contains(&name), "view {} has no changes to read", name);
            }
        }
        previous = Some((hold, created.clone()));
    }
    drop(previous);
    drop(live);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The views whose feeds read them whole: not linear over what they keep.
const WHOLE: [&str; 1] = ["everything_large"];

/// A table's rows as an answer (sorted by customer), to compare with what SQL reads.
fn live_answer(table: &PlainTable) -> atelier_lambda::sql::Answer {
    use atelier_lambda::compute::columns::{schema, Cell, Columns};
    let columns: Vec<(&str, ColumnType)> = table.columns.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    let mut builder = Columns::new(&columns.iter().map(|c| c.1).collect::<Vec<_>>());
    for row in &table.rows {
        builder.push(&row.iter().map(Owned::cell).collect::<Vec<Cell<'_>>>());
    }
    let schema = schema(&columns);
    let batch = builder.finish(schema.clone());
    atelier_lambda::sql::Answer { schema, batches: vec![batch], as_of: None, tag: None }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn compiled_views_equal_the_same_select_over_the_oracle_after_every_batch(
        history in prop::collection::vec(line(), 0..30),
        initial in prop::collection::vec(change(), 0..8),
        batches in prop::collection::vec(
            (prop::collection::vec(routed_message(2), 0..10), prop::collection::vec(change(), 0..5)),
            0..4,
        ),
        workers in prop::sample::select(vec![1usize, 2]),
        extra in prop::sample::subsequence(vec![1usize, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17], 1..5),
        later in 0usize..3,
    ) {
        // Always the join and the view over it; a few of the others.
        let mut views = vec![0usize, 7];
        views.extend(extra);
        views.sort_unstable();
        views.retain(|v| *v != 7);
        views.push(7);
        check(history, initial, batches, workers, views, later)?;
    }
}
