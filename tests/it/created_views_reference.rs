//! Views created at run time equal a from-scratch computation over the oracle's live
//! transactions after every batch from their creation on — random definitions (filters,
//! group keys, aggregates, HAVING, views over a view) created between random batches over
//! random inputs with corrections, deletes and redeliveries, in the real pipeline on 1, 2
//! and 4 workers, filled from the version table a few identities per step or at once — and
//! creating them changes nothing in the built-in views.

use crate::common;

use std::collections::BTreeMap;

use atelier_lambda::event::{hour_of, Txn};
use atelier_lambda::reading::CreatedRows;
use common::engine::{Live, V};
use common::*;
use proptest::prelude::*;

/// A view's group key.
#[derive(Clone, Copy, Debug)]
enum Key {
    Nothing,
    Customer,
    Category,
    Hour,
    Day,
}

/// A view's filter on transactions, as SQL and as a Rust test (no NULL arises from these).
#[derive(Clone, Debug)]
enum Filter {
    All,
    AmountAtLeast(i64),
    NotCategory(&'static str),
    Customers(Vec<&'static str>),
    HasTime,
}

/// A random view definition and its expected rows.
#[derive(Clone, Debug)]
enum Definition {
    Aggregate { key: Key, filter: Filter, aggs: Vec<&'static str>, having_count_over: Option<i64> },
    RichCustomers(i64),
}

impl Filter {
    fn sql(&self) -> String {
        match self {
            Filter::All => String::new(),
            Filter::AmountAtLeast(c) => {
                format!(" WHERE amount >= {}", atelier_lambda::amount::format_cents(i128::from(*c)))
            }
            Filter::NotCategory(c) => format!(" WHERE category IS NULL OR category <> '{c}'"),
            Filter::Customers(list) => {
                format!(" WHERE customer IN ({})", list.iter().map(|c| format!("'{c}'")).collect::<Vec<_>>().join(", "))
            }
            Filter::HasTime => " WHERE ts IS NOT NULL".into(),
        }
    }

    fn keeps(&self, t: &Txn) -> bool {
        match self {
            Filter::All => true,
            Filter::AmountAtLeast(c) => t.cents >= *c,
            Filter::NotCategory(c) => t.category.as_deref() != Some(*c),
            Filter::Customers(list) => list.contains(&&*t.customer),
            Filter::HasTime => t.ts.is_some(),
        }
    }
}

impl Key {
    fn sql(self) -> Option<&'static str> {
        match self {
            Key::Nothing => None,
            Key::Customer => Some("customer"),
            Key::Category => Some("category"),
            Key::Hour => Some("date_trunc('hour', ts)"),
            Key::Day => Some("date_trunc('day', ts)"),
        }
    }

    fn of(self, t: &Txn) -> V {
        let truncated = |step: i64| t.ts.map_or(V::Null, |s| V::Ts(s.div_euclid(step) * step));
        match self {
            Key::Nothing => V::Null,
            Key::Customer => V::Text(t.customer.to_string()),
            Key::Category => t.category.as_deref().map_or(V::Null, |c| V::Text(c.into())),
            Key::Hour => t.ts.map_or(V::Null, |s| V::Ts(hour_of(s) * 3600)),
            Key::Day => truncated(86_400),
        }
    }
}

impl Definition {
    /// Whether the view is read from the `categories` or `hourly` built-in (the totals, read
    /// whole: a few rows), as a view of their shape is.
    fn read_from_totals(&self) -> bool {
        let Definition::Aggregate { key, filter, aggs, .. } = self else { return false };
        let given = aggs.iter().all(|a| ["count(*)", "sum(amount)", "avg(amount)"].contains(a));
        match (key, filter) {
            (Key::Category, Filter::All) | (Key::Hour, Filter::HasTime) => given,
            _ => false,
        }
    }

    fn sql(&self, name: &str) -> String {
        match self {
            Definition::Aggregate { key, filter, aggs, having_count_over } => {
                let mut columns: Vec<String> = key.sql().map(|k| format!("{k} AS k")).into_iter().collect();
                columns.extend(aggs.iter().enumerate().map(|(i, a)| format!("{a} AS a{i}")));
                let group = key.sql().map(|k| format!(" GROUP BY {k}")).unwrap_or_default();
                let having = having_count_over.map(|n| format!(" HAVING count(*) > {n}")).unwrap_or_default();
                format!(
                    "CREATE VIEW {name} AS SELECT {} FROM transactions{}{group}{having}",
                    columns.join(", "),
                    filter.sql()
                )
            }
            Definition::RichCustomers(cents) => format!(
                "CREATE VIEW {name} AS SELECT customer, total FROM customers WHERE total > {}",
                atelier_lambda::amount::format_cents(i128::from(*cents))
            ),
        }
    }

    fn expected(&self, live: &[(String, Txn)], reading: &atelier_lambda::reading::Reading) -> Vec<Vec<V>> {
        match self {
            Definition::RichCustomers(cents) => reading
                .customers
                .iter()
                .filter(|(_, r)| r.total > i128::from(*cents))
                .map(|(c, r)| vec![V::Text(c.clone()), V::cents(r.total)])
                .collect(),
            Definition::Aggregate { key, filter, aggs, having_count_over } => {
                let mut groups: BTreeMap<V, Vec<i64>> = BTreeMap::new();
                for (_, t) in live.iter().filter(|(_, t)| filter.keeps(t)) {
                    groups.entry(key.of(t)).or_default().push(t.cents);
                }
                // An aggregate without a key has its one row even over no rows.
                if key.sql().is_none() && groups.is_empty() {
                    groups.insert(V::Null, Vec::new());
                }
                let mut rows: Vec<Vec<V>> = groups
                    .into_iter()
                    .filter(|(_, amounts)| having_count_over.is_none_or(|n| amounts.len() as i64 > n))
                    .map(|(k, amounts)| {
                        let total: i128 = amounts.iter().map(|a| i128::from(*a)).sum();
                        let n = amounts.len() as i64;
                        let mut row: Vec<V> = key.sql().map(|_| k).into_iter().collect();
                        row.extend(aggs.iter().map(|a| match *a {
                            "count(*)" => V::Int(n),
                            _ if n == 0 => V::Null,
                            "sum(amount)" => V::cents(total),
                            "min(amount)" => V::cents(*amounts.iter().min().unwrap()),
                            "max(amount)" => V::cents(*amounts.iter().max().unwrap()),
                            // DataFusion's decimal average: scale 6, toward zero.
                            _ => V::Num(total * 10_000 / i128::from(n), 6),
                        }));
                        row
                    })
                    .collect();
                rows.sort_by(|a, b| {
                    a.iter().zip(b).map(|(x, y)| x.sort_cmp(y)).find(|o| o.is_ne()).unwrap_or(std::cmp::Ordering::Equal)
                });
                rows
            }
        }
    }
}

fn definition() -> impl Strategy<Value = Definition> {
    let key = prop::sample::select(vec![Key::Nothing, Key::Customer, Key::Category, Key::Hour, Key::Day]);
    let filter = prop_oneof![
        Just(Filter::All),
        (-5_000i64..40_000).prop_map(Filter::AmountAtLeast),
        prop::sample::select(vec!["books", "food"]).prop_map(Filter::NotCategory),
        prop::sample::subsequence(vec!["Ali", "Sara", "Mounir", "Zoé", "Li"], 1..4).prop_map(Filter::Customers),
        Just(Filter::HasTime),
    ];
    let aggs =
        prop::sample::subsequence(vec!["count(*)", "sum(amount)", "min(amount)", "max(amount)", "avg(amount)"], 1..5);
    prop_oneof![
        4 => (key, filter, aggs, prop::option::of(0i64..3)).prop_map(|(key, filter, aggs, having_count_over)| {
            Definition::Aggregate { key, filter, aggs, having_count_over }
        }),
        1 => (0i64..60_000).prop_map(Definition::RichCustomers),
    ]
}

fn check(
    history: Vec<String>,
    batches: Vec<Vec<Message>>,
    workers: usize,
    views: Vec<(usize, Definition)>,
    chunk: usize,
) -> Result<(), TestCaseError> {
    let dir = temp_dir("created-views");
    let path = write_history(&dir, &history);
    // View `i`: created once `at` batches are in, read as `SELECT * … ORDER BY` every column.
    let views: Vec<(usize, String, String, &Definition)> = views
        .iter()
        .enumerate()
        .map(|(i, (batch, d))| {
            let columns = match d {
                Definition::Aggregate { key, aggs, .. } => usize::from(key.sql().is_some()) + aggs.len(),
                Definition::RichCustomers(_) => 2,
            };
            let order: Vec<String> = (1..=columns).map(|c| c.to_string()).collect();
            let read = format!("SELECT * FROM v{i} ORDER BY {}", order.join(", "));
            (*batch % (batches.len() + 1), d.sql(&format!("v{i}")), read, d)
        })
        .collect();
    let mut expected = Vec::new();
    let last = replay(&history, &path.display().to_string(), &batches, |time, oracle| {
        expected.push((oracle.live(), oracle.reading(time, None, 1000)))
    });
    let mut live = Live::start(&path, workers, &dir, chunk);
    // A view that seeks a key it does not show: its changes are read through the seek's filter.
    live.sql("CREATE VIEW ali AS SELECT total, count FROM customers WHERE customer = 'Ali'")
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    // The time of the previous batch, held as a changefeed holds its last event's.
    let mut previous = None;
    for (time, (transactions, reading)) in expected.iter().enumerate() {
        if time > 0 {
            live.send(&batches[time - 1]);
        }
        for (at, create, _, _) in &views {
            if *at == time {
                live.sql(create).map_err(|e| TestCaseError::fail(format!("{create}: {e}")))?;
            }
        }
        for (_, create, read, definition) in views.iter().filter(|(at, ..)| *at <= time) {
            let answer = live.sql(read).map_err(|e| TestCaseError::fail(format!("{read}: {e}")))?;
            let mut want = definition.expected(transactions, reading);
            if let Definition::RichCustomers(_) = definition {
                want.sort_by(|a, b| a[0].sort_cmp(&b[0]));
            }
            prop_assert_eq!(
                common::engine::rows(&answer),
                want,
                "{} workers, after batch {}: {}",
                workers,
                time,
                create
            );
        }
        // The built-in views are untouched by the views created beside them.
        let customers = live.rows("SELECT customer, total, count, min, max FROM customers ORDER BY customer");
        let want: Vec<Vec<V>> = reading
            .customers
            .iter()
            .map(|(c, r)| {
                vec![V::Text(c.clone()), V::cents(r.total), V::Int(r.count), V::cents(r.min), V::cents(r.max)]
            })
            .collect();
        prop_assert_eq!(customers, want, "customers after batch {}", time);
        // Each built-in view is what its SQL definition says, evaluated by DataFusion over the
        // live transactions at the same time.
        for (relation, definition) in atelier_lambda::sql::builtin::VIEWS {
            let order: Vec<String> = (1..=relation.columns().len()).map(|c| c.to_string()).collect();
            let order = order.join(", ");
            let kept = live.rows(&format!("SELECT * FROM {} ORDER BY {order}", relation.name()));
            prop_assert_eq!(kept, live.rows(&format!("{definition} ORDER BY {order}")), "{}", relation.name());
        }
        // What a changefeed reads from one batch to the next is the difference of the rows:
        // every view with a key, and `customers`, read so (an aggregate without one has its
        // one row even over none, a read-time union: its feeds read it whole).
        let hold = live.hold();
        if let Some(since) = &previous {
            for name in ["customers", "ali"] {
                prop_assert!(
                    live.changes_fold(name, since, &hold).map_err(TestCaseError::fail)?,
                    "{} read whole",
                    name
                );
            }
            for (i, (_, _, _, definition)) in views.iter().enumerate().filter(|(_, (at, ..))| *at < time) {
                let read = live.changes_fold(&format!("v{i}"), since, &hold).map_err(TestCaseError::fail)?;
                let keyed = !matches!(definition, Definition::Aggregate { key, .. } if key.sql().is_none());
                prop_assert_eq!(
                    read,
                    keyed && !definition.read_from_totals(),
                    "view v{} is read by its changes if it has a key",
                    i
                );
            }
        }
        previous = Some(hold);
    }
    drop(previous);
    drop(live);
    let _ = std::fs::remove_dir_all(&dir);
    // `lambda verify`'s recomputation of created views (from their statements, by DataFusion
    // over in-memory tables) agrees with this test's own model of each definition.
    let (transactions, reading) = expected.last().expect("time 0 at least");
    let created: Vec<CreatedRows> = views
        .iter()
        .enumerate()
        .map(|(i, (_, sql, _, _))| CreatedRows {
            name: format!("v{i}"),
            definition: sql.clone(),
            columns: vec![],
            rows: vec![],
        })
        .collect();
    let (recomputed, _) = last.created_views(&created, reading, "t").map_err(TestCaseError::fail)?;
    let sorted = |rows: Vec<Vec<serde_json::Value>>| {
        let mut rows: Vec<String> = rows.into_iter().map(|r| serde_json::Value::from(r).to_string()).collect();
        rows.sort();
        rows
    };
    for (i, (_, sql, _, definition)) in views.iter().enumerate() {
        let model =
            definition.expected(transactions, reading).iter().map(|r| r.iter().map(V::to_json).collect()).collect();
        prop_assert_eq!(sorted(recomputed[i].rows.clone()), sorted(model), "verify's oracle: {}", sql);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20, ..ProptestConfig::default() })]

    #[test]
    fn created_views_equal_the_recomputation_from_their_creation_on(
        history in prop::collection::vec(line(), 0..40),
        batches in prop::collection::vec(prop::collection::vec(routed_message(4), 0..12), 1..6),
        workers in prop::sample::select(vec![1usize, 2, 4]),
        views in prop::collection::vec((0usize..6, definition()), 1..4),
        // Views filled a few identities per step, with the stream going on in between.
        chunk in prop::sample::select(vec![1usize, 3, 1000]),
    ) {
        check(history, batches, workers, views, chunk)?;
    }
}

/// Over no transactions at all the built-ins (`overall`'s one row among them) are still what
/// their definitions say.
#[test]
fn the_built_ins_over_no_transactions_are_their_definitions() {
    check(Vec::new(), vec![Vec::new()], 1, vec![(0, Definition::RichCustomers(0))], 1000).unwrap();
}
