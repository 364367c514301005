//! Differential: random queries of every kind DataFusion plans — joins of the relations with
//! each other and themselves, CTEs, `IN`/`EXISTS`/scalar subqueries, window functions, set
//! operations, `COUNT(DISTINCT)`, `FILTER`, `CASE`, time buckets, string functions — asked of
//! the live pipeline (history, broker, 1 or 2 workers, table providers over the arrangements,
//! key seeks) after every batch of random messages with corrections, deletes, duplicates and
//! bad records, and of DataFusion over plain in-memory tables of the oracle's rows at the same
//! time ([`atelier_lambda::oracle::Oracle::answer_sql`]): the same rows, or the same error.
//! (Two processes: `cluster_e2e` asks a cluster the workshop queries.)

use crate::common;

use common::engine::Live;
use common::live::TOPIC;
use common::*;
use proptest::prelude::*;

fn cents(c: i64) -> String {
    atelier_lambda::amount::format_cents(i128::from(c))
}

/// A random query, from templates whose literals are drawn.
fn query() -> impl Strategy<Value = String> {
    let amount = (-5_000i64..50_000).prop_map(cents);
    let category = prop::sample::select(vec!["books", "food", "games"]);
    let customer = prop::sample::select(vec!["Ali", "Sara", "Mounir", "Zoé", "Li", "Nobody"]);
    let k = 1usize..6;
    prop_oneof![
        // Joins of a table with its views, inner and outer.
        amount.clone().prop_map(|a| format!(
            "SELECT t.customer, c.total, count(*) AS n, sum(t.amount) AS s FROM transactions t \
             JOIN customers c ON t.customer = c.customer WHERE t.amount >= {a} GROUP BY t.customer, c.total"
        )),
        category.clone().prop_map(|cat| format!(
            "SELECT c.customer, t.id, t.amount FROM customers c LEFT JOIN transactions t \
             ON t.customer = c.customer AND t.category = '{cat}'"
        )),
        Just("SELECT g.category, g.count, t.n FROM categories g FULL OUTER JOIN \
              (SELECT category, count(*) AS n FROM transactions WHERE amount > 100 GROUP BY category) t \
              ON g.category = t.category"
            .to_owned()),
        Just("SELECT h.hour, h.count, o.count AS everything FROM hourly h CROSS JOIN overall o".to_owned()),
        customer.clone().prop_map(|c| format!(
            "SELECT t.id, c.avg FROM transactions t JOIN customers c USING (customer) WHERE c.customer = '{c}'"
        )),
        // A self-join.
        amount.clone().prop_map(|a| format!(
            "SELECT a.id, b.id FROM transactions a JOIN transactions b \
             ON a.customer = b.customer AND a.id < b.id WHERE a.amount > {a}"
        )),
        // Window functions (ties broken by id, so the answer is one).
        Just("SELECT id, customer, row_number() OVER (PARTITION BY customer ORDER BY amount DESC, id) AS rn, \
              sum(amount) OVER (PARTITION BY customer) AS tot, rank() OVER (ORDER BY amount) AS r, \
              lag(amount) OVER (PARTITION BY customer ORDER BY id) AS before FROM transactions"
            .to_owned()),
        Just("SELECT id, sum(amount) OVER (ORDER BY ts, id ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS moving \
              FROM transactions"
            .to_owned()),
        // CTEs and subqueries.
        amount.clone().prop_map(|a| format!(
            "WITH big AS (SELECT customer, sum(amount) AS s FROM transactions GROUP BY customer HAVING sum(amount) > {a}) \
             SELECT b.customer, b.s, c.count FROM big b JOIN customers c USING (customer)"
        )),
        category.clone().prop_map(|cat| format!(
            "SELECT customer, total FROM customers WHERE customer IN \
             (SELECT customer FROM transactions WHERE category = '{cat}')"
        )),
        Just("SELECT id FROM transactions t WHERE EXISTS \
              (SELECT 1 FROM transactions u WHERE u.customer = t.customer AND u.amount > t.amount)"
            .to_owned()),
        Just("SELECT id, amount - (SELECT avg(amount) FROM transactions) AS above FROM transactions".to_owned()),
        customer.clone().prop_map(|c| format!(
            "SELECT category, (SELECT count(*) FROM customers) AS everyone FROM categories \
             WHERE category NOT IN (SELECT category FROM transactions WHERE customer = '{c}' AND category IS NOT NULL)"
        )),
        // Aggregates of every kind.
        amount.clone().prop_map(|a| format!(
            "SELECT category, count(DISTINCT customer) AS who, sum(amount) FILTER (WHERE amount > {a}) AS big, \
             CASE WHEN count(*) > 2 THEN 'many' ELSE 'few' END AS how_many, min(ts) AS first \
             FROM transactions GROUP BY category"
        )),
        Just("SELECT date_trunc('hour', ts) AS h, count(*), max(amount), avg(amount) FROM transactions GROUP BY 1"
            .to_owned()),
        Just("SELECT date_bin(INTERVAL '6 hours', ts, TIMESTAMP '2025-01-01 00:00:00') AS b, sum(amount) \
              FROM transactions GROUP BY 1"
            .to_owned()),
        // Set operations.
        amount.clone().prop_map(|a| format!(
            "SELECT customer FROM transactions WHERE amount < {a} UNION SELECT customer FROM customers WHERE count > 1"
        )),
        Just("SELECT customer FROM customers EXCEPT SELECT customer FROM transactions WHERE category = 'food'"
            .to_owned()),
        Just("SELECT category FROM transactions UNION ALL SELECT category FROM categories".to_owned()),
        // Strings, casts, DISTINCT, ORDER BY … LIMIT.
        Just("SELECT upper(customer), length(customer), CAST(count AS VARCHAR) || ' x' FROM customers".to_owned()),
        Just("SELECT DISTINCT category, customer FROM transactions".to_owned()),
        k.prop_map(|k| format!("SELECT id, amount FROM transactions ORDER BY amount DESC, id LIMIT {k}")),
        customer.prop_map(|c| format!("SELECT * FROM customers WHERE customer >= '{c}'")),
    ]
}

/// A query's column names and canonical rows, or its error.
type Answered = Result<(Vec<String>, Vec<String>), String>;

/// Rows as comparable text, in a canonical order: a query's rows are a multiset (the queries
/// with `ORDER BY … LIMIT` order totally, so their set is one too).
fn canonical(answer: &atelier_lambda::sql::Answer) -> Vec<String> {
    let mut rows: Vec<String> = answer.rows().into_iter().map(|r| serde_json::Value::from(r).to_string()).collect();
    rows.sort();
    rows
}

fn check(
    history: Vec<String>,
    batches: Vec<Vec<Message>>,
    workers: usize,
    queries: Vec<String>,
) -> Result<(), TestCaseError> {
    let dir = temp_dir("sql-differential");
    let path = write_history(&dir, &history);
    // What DataFusion answers over the oracle's rows, at every time.
    let mut expected: Vec<Vec<Answered>> = Vec::new();
    replay(&history, &path.display().to_string(), &batches, |time, oracle| {
        let reading = oracle.reading(time, None, 1000);
        expected.push(
            queries
                .iter()
                .map(|q| {
                    oracle
                        .answer_sql(&reading, TOPIC, q)
                        .map(|a| (a.columns().into_iter().map(|(n, _)| n).collect(), canonical(&a)))
                })
                .collect(),
        );
    });
    let mut live = Live::start(&path, workers, &dir, 1000);
    for (time, answers) in expected.iter().enumerate() {
        if time > 0 {
            live.send(&batches[time - 1]);
        }
        for (query, want) in queries.iter().zip(answers) {
            let got = live
                .sql(query)
                .map(|a| (a.columns().into_iter().map(|(n, _)| n).collect::<Vec<_>>(), canonical(&a)))
                .map_err(|e| e.to_string());
            match (&got, want) {
                (Ok(got), Ok(want)) => {
                    prop_assert_eq!(got, want, "{} workers, after batch {}: {}", workers, time, query)
                }
                (Err(_), Err(_)) => {}
                _ => prop_assert!(
                    false,
                    "{workers} workers, after batch {time}: {query}\nlive: {got:?}\noracle: {want:?}"
                ),
            }
        }
    }
    drop(live);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_queries_answer_what_datafusion_answers_over_the_recomputation(
        history in prop::collection::vec(line(), 0..40),
        batches in prop::collection::vec(prop::collection::vec(routed_message(2), 0..12), 0..4),
        workers in prop::sample::select(vec![1usize, 2]),
        queries in prop::collection::vec(query(), 1..6),
    ) {
        check(history, batches, workers, queries)?;
    }
}

/// A point lookup the fast path takes (see `src/sql/point.rs`), and the same lookup written
/// so that it does not (its condition in parentheses), for DataFusion to plan.
fn point_lookup() -> impl Strategy<Value = (String, String)> {
    let relation = prop::sample::select(vec![
        ("customers", "customer", vec!["customer", "total", "count", "min", "max", "avg"]),
        ("transactions", "id", vec!["id", "customer", "amount", "category", "ts"]),
        ("categories", "category", vec!["category", "total", "count", "avg"]),
    ]);
    let key = prop::sample::select(vec!["Ali", "Sara", "Zoé", "Nobody", "t1", "t7", "t11", "books", "games", ""]);
    (relation, key, prop::collection::vec(0usize..6, 0..4), any::<bool>()).prop_map(
        |((table, column, columns), key, picked, concatenated)| {
            let list = if picked.is_empty() {
                "*".to_owned()
            } else {
                let mut names: Vec<&str> = picked.iter().map(|i| columns[i % columns.len()]).collect();
                names.dedup();
                names.sort_unstable();
                names.dedup();
                names.join(", ")
            };
            let value = match (concatenated, key.split_at(key.len().min(1))) {
                (true, (head, tail)) => format!("'{head}' || '{tail}'"),
                (false, _) => format!("'{key}'"),
            };
            (
                format!("SELECT {list} FROM {table} WHERE {column} = {value}"),
                format!("SELECT {list} FROM {table} WHERE ({column} = {value})"),
            )
        },
    )
}

fn columns_and_rows(answer: &atelier_lambda::sql::Answer) -> (Vec<(String, &'static str)>, Vec<String>) {
    (answer.columns(), canonical(answer))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn a_point_lookup_answers_without_planning_what_datafusion_answers(
        history in prop::collection::vec(line(), 0..40),
        batches in prop::collection::vec(prop::collection::vec(routed_message(2), 0..12), 0..3),
        workers in prop::sample::select(vec![1usize, 2]),
        lookups in prop::collection::vec(point_lookup(), 1..8),
    ) {
        let dir = temp_dir("sql-point");
        let path = write_history(&dir, &history);
        let mut live = Live::start(&path, workers, &dir, 1000);
        for time in 0..=batches.len() {
            if time > 0 {
                live.send(&batches[time - 1]);
            }
            for (fast, planned) in &lookups {
                let a = live.sql(fast).map(|a| columns_and_rows(&a)).map_err(|e| e.to_string());
                let b = live.sql(planned).map(|a| columns_and_rows(&a)).map_err(|e| e.to_string());
                prop_assert!(a.is_ok(), "{}: {:?}", fast, a);
                prop_assert_eq!(a, b, "{} workers, after batch {}: {}", workers, time, fast);
            }
        }
        drop(live);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
