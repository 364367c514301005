//! SQL answers equal a from-scratch computation over the oracle's live transactions and
//! views after every batch — random queries (filters, group-bys, orders, limits) over random
//! inputs with corrections, deletes and bad records, asked of the real pipeline (history,
//! broker, 1, 2 or 4 workers, DataFusion) — and a seek answers what a scan answers.

use crate::common;

use std::collections::BTreeMap;

use atelier_lambda::event::{hour_of, Txn};
use common::engine::{Live, V};
use common::*;
use proptest::prelude::*;

/// A filter over transactions, as SQL and as a plain Rust test with SQL's NULL rules.
#[derive(Clone, Debug)]
enum Pred {
    AmountAtLeast(i64),
    AmountBelow(i64),
    Category(&'static str),
    NoCategory,
    CustomerIn(Vec<&'static str>),
    CustomerLike(&'static str),
    AmountBetween(i64, i64),
    Not(Box<Pred>),
    And(Box<Pred>, Box<Pred>),
    Or(Box<Pred>, Box<Pred>),
}

fn cents(c: i64) -> String {
    atelier_lambda::amount::format_cents(i128::from(c))
}

impl Pred {
    fn sql(&self) -> String {
        match self {
            Pred::AmountAtLeast(c) => format!("amount >= {}", cents(*c)),
            Pred::AmountBelow(c) => format!("amount < {}", cents(*c)),
            Pred::Category(c) => format!("category = '{c}'"),
            Pred::NoCategory => "category IS NULL".into(),
            Pred::CustomerIn(list) => {
                format!("customer IN ({})", list.iter().map(|c| format!("'{c}'")).collect::<Vec<_>>().join(", "))
            }
            Pred::CustomerLike(p) => format!("customer LIKE '{p}'"),
            Pred::AmountBetween(a, b) => format!("amount BETWEEN {} AND {}", cents(*a), cents(*b)),
            Pred::Not(p) => format!("NOT ({})", p.sql()),
            Pred::And(a, b) => format!("({} AND {})", a.sql(), b.sql()),
            Pred::Or(a, b) => format!("({} OR {})", a.sql(), b.sql()),
        }
    }

    /// SQL's three-valued answer: `None` is NULL.
    fn eval(&self, t: &Txn) -> Option<bool> {
        match self {
            Pred::AmountAtLeast(c) => Some(t.cents >= *c),
            Pred::AmountBelow(c) => Some(t.cents < *c),
            Pred::Category(c) => t.category.as_deref().map(|x| x == *c),
            Pred::NoCategory => Some(t.category.is_none()),
            Pred::CustomerIn(list) => Some(list.contains(&&*t.customer)),
            Pred::CustomerLike(p) => Some(match p.strip_suffix('%') {
                Some(prefix) => t.customer.starts_with(prefix),
                None => &*t.customer == *p,
            }),
            Pred::AmountBetween(a, b) => Some(*a <= t.cents && t.cents <= *b),
            Pred::Not(p) => p.eval(t).map(|b| !b),
            Pred::And(a, b) => match (a.eval(t), b.eval(t)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            Pred::Or(a, b) => match (a.eval(t), b.eval(t)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
        }
    }
}

fn pred() -> impl Strategy<Value = Pred> {
    let customers = vec!["Ali", "Sara", "Mounir", "Zoé", "Li"];
    let leaf = prop_oneof![
        (-5_000i64..50_000).prop_map(Pred::AmountAtLeast),
        (-5_000i64..50_000).prop_map(Pred::AmountBelow),
        prop::sample::select(vec!["books", "food", "games"]).prop_map(Pred::Category),
        Just(Pred::NoCategory),
        prop::sample::subsequence(customers, 1..3).prop_map(Pred::CustomerIn),
        prop::sample::select(vec!["S%", "Ali", "M%", "%"]).prop_map(Pred::CustomerLike),
        (-5_000i64..20_000, 0i64..30_000).prop_map(|(a, d)| Pred::AmountBetween(a, a + d)),
    ];
    leaf.prop_recursive(2, 6, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|p| Pred::Not(Box::new(p))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Pred::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| Pred::Or(Box::new(a), Box::new(b))),
        ]
    })
}

/// A query shape and its from-scratch answer over the live transactions and views.
#[derive(Clone, Debug)]
enum Query {
    /// Per customer: count, sum, min, max, avg of the kept transactions.
    ByCustomer(Pred),
    /// Per category (NULL included): count and sum.
    ByCategory(Pred),
    /// Per UTC hour of the event time: count.
    ByHour(Pred),
    /// count(*) and sum over everything kept.
    Overall(Pred),
    /// The largest kept amounts with their customer, at most `k`.
    Largest(Pred, usize),
    /// The customers view from `from` on, with a seek, or written so that it cannot seek.
    CustomersFrom(&'static str, bool),
    /// One customer of the view, sought or scanned.
    OneCustomer(&'static str, bool),
}

fn query() -> impl Strategy<Value = Query> {
    let names = prop::sample::select(vec!["Ali", "Li", "Mounir", "Sara", "Zoé", "Nobody", "M"]);
    prop_oneof![
        pred().prop_map(Query::ByCustomer),
        pred().prop_map(Query::ByCategory),
        pred().prop_map(Query::ByHour),
        pred().prop_map(Query::Overall),
        (pred(), 1usize..5).prop_map(|(p, k)| Query::Largest(p, k)),
        (names.clone(), any::<bool>()).prop_map(|(n, s)| Query::CustomersFrom(n, s)),
        (names, any::<bool>()).prop_map(|(n, s)| Query::OneCustomer(n, s)),
    ]
}

fn num(c: i128) -> V {
    V::cents(c)
}

/// An ad-hoc `avg(amount)`: `total / count` at scale 6, toward zero (DataFusion's decimal
/// average).
fn avg(total: i128, count: i64) -> V {
    V::Num(total * 10_000 / i128::from(count), 6)
}

/// The `avg` column of the customers view: `total / count` in cents, half away from zero.
fn customer_avg(total: i128, count: i64) -> V {
    num(atelier_lambda::amount::divide_rounded(total, i128::from(count)))
}

impl Query {
    fn sql(&self) -> String {
        match self {
            Query::ByCustomer(p) => format!(
                "SELECT customer, count(*), sum(amount), min(amount), max(amount), avg(amount) FROM transactions WHERE {} GROUP BY customer ORDER BY customer",
                p.sql()
            ),
            Query::ByCategory(p) => format!(
                "SELECT category, count(*) AS n, sum(amount) FROM transactions WHERE {} GROUP BY category ORDER BY category",
                p.sql()
            ),
            Query::ByHour(p) => format!(
                "SELECT date_trunc('hour', ts) AS hour, count(*) FROM transactions WHERE ts IS NOT NULL AND {} GROUP BY 1 ORDER BY hour",
                p.sql()
            ),
            Query::Overall(p) => format!("SELECT count(*), sum(amount) FROM transactions WHERE {}", p.sql()),
            Query::Largest(p, k) => format!(
                "SELECT amount, customer FROM transactions WHERE {} ORDER BY amount DESC, customer, id LIMIT {k}",
                p.sql()
            ),
            Query::CustomersFrom(name, true) => format!("SELECT * FROM customers WHERE customer >= '{name}' ORDER BY customer"),
            Query::CustomersFrom(name, false) => {
                format!("SELECT * FROM customers WHERE NOT (customer < '{name}') ORDER BY 1")
            }
            Query::OneCustomer(name, true) => format!("SELECT customer, total, count FROM customers WHERE customer = '{name}'"),
            Query::OneCustomer(name, false) => {
                format!("SELECT customer, total, count FROM customers WHERE NOT (customer <> '{name}')")
            }
        }
    }

    fn expected(&self, live: &[(String, Txn)], reading: &atelier_lambda::reading::Reading) -> Vec<Vec<V>> {
        fn kept<'a>(live: &'a [(String, Txn)], p: &'a Pred) -> impl Iterator<Item = &'a (String, Txn)> + 'a {
            live.iter().filter(move |(_, t)| p.eval(t) == Some(true))
        }
        let text = |s: &str| V::Text(s.into());
        match self {
            Query::ByCustomer(p) => {
                let mut groups: BTreeMap<String, Vec<i64>> = BTreeMap::new();
                for (_, t) in kept(live, p) {
                    groups.entry(t.customer.to_string()).or_default().push(t.cents);
                }
                groups
                    .into_iter()
                    .map(|(c, amounts)| {
                        let total: i128 = amounts.iter().map(|a| i128::from(*a)).sum();
                        let n = amounts.len() as i64;
                        let (min, max) = (*amounts.iter().min().unwrap(), *amounts.iter().max().unwrap());
                        vec![text(&c), V::Int(n), num(total), num(min.into()), num(max.into()), avg(total, n)]
                    })
                    .collect()
            }
            Query::ByCategory(p) => {
                let mut groups: BTreeMap<Option<String>, (i64, i128)> = BTreeMap::new();
                for (_, t) in kept(live, p) {
                    let g = groups.entry(t.category.as_deref().map(String::from)).or_default();
                    g.0 += 1;
                    g.1 += i128::from(t.cents);
                }
                // ORDER BY category: NULL last.
                let mut rows: Vec<_> =
                    groups.into_iter().map(|(c, (n, s))| vec![c.map_or(V::Null, V::Text), V::Int(n), num(s)]).collect();
                rows.sort_by(|a, b| a[0].sort_cmp(&b[0]));
                rows
            }
            Query::ByHour(p) => {
                let mut groups: BTreeMap<i64, i64> = BTreeMap::new();
                for (_, t) in kept(live, p) {
                    if let Some(ts) = t.ts {
                        *groups.entry(hour_of(ts) * 3600).or_default() += 1;
                    }
                }
                groups.into_iter().map(|(h, n)| vec![V::Ts(h), V::Int(n)]).collect()
            }
            Query::Overall(p) => {
                let amounts: Vec<i64> = kept(live, p).map(|(_, t)| t.cents).collect();
                let sum = if amounts.is_empty() { V::Null } else { num(amounts.iter().map(|a| i128::from(*a)).sum()) };
                vec![vec![V::Int(amounts.len() as i64), sum]]
            }
            Query::Largest(p, k) => {
                let mut rows: Vec<(i64, String, String)> =
                    kept(live, p).map(|(id, t)| (t.cents, t.customer.to_string(), id.clone())).collect();
                rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)).then_with(|| a.2.cmp(&b.2)));
                rows.into_iter().take(*k).map(|(c, customer, _)| vec![num(c.into()), text(&customer)]).collect()
            }
            Query::CustomersFrom(name, _) => reading
                .customers
                .iter()
                .filter(|(c, _)| c.as_str() >= *name)
                .map(|(c, r)| {
                    vec![
                        text(c),
                        num(r.total),
                        V::Int(r.count),
                        num(r.min.into()),
                        num(r.max.into()),
                        customer_avg(r.total, r.count),
                    ]
                })
                .collect(),
            Query::OneCustomer(name, _) => reading
                .customers
                .iter()
                .filter(|(c, _)| c == name)
                .map(|(c, r)| vec![text(c), num(r.total), V::Int(r.count)])
                .collect(),
        }
    }
}

fn check(
    history: Vec<String>,
    batches: Vec<Vec<Message>>,
    workers: usize,
    queries: Vec<Query>,
) -> Result<(), TestCaseError> {
    let dir = temp_dir("sql-reference");
    let path = write_history(&dir, &history);
    let expected = oracle_live(&history, &path.display().to_string(), &batches);
    let mut live = Live::start(&path, workers, &dir, 1000);
    for (time, (transactions, reading)) in expected.iter().enumerate() {
        if time > 0 {
            live.send(&batches[time - 1]);
        }
        for query in &queries {
            let sql = query.sql();
            let answer = live.sql(&sql).map_err(|e| TestCaseError::fail(format!("{sql}: {e}")))?;
            let want = query.expected(transactions, reading);
            prop_assert_eq!(common::engine::rows(&answer), want, "{} workers, after batch {}: {}", workers, time, sql);
        }
    }
    drop(live);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn sql_answers_equal_the_recomputation_after_every_batch(
        history in prop::collection::vec(line(), 0..50),
        batches in prop::collection::vec(prop::collection::vec(routed_message(4), 0..12), 0..5),
        workers in prop::sample::select(vec![1usize, 2, 4]),
        queries in prop::collection::vec(query(), 1..6),
    ) {
        check(history, batches, workers, queries)?;
    }
}
