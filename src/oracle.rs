//! The oracle: every view recomputed from scratch, plainly, for `verify` and the tests.
//!
//! This is deliberately a second, independent and simple implementation: a map of the latest
//! version per identity, then sums over plain hash maps. It shares only the event rules
//! ([`crate::event`]) with the dataflow, never its operators, so that comparing the two
//! checks the dataflow's incremental maintenance. Views created at run time are recomputed
//! the same way from their statements ([`Oracle::created_views`]).

use std::collections::{BTreeMap, HashMap};

use crate::amount::divide_rounded;
use crate::compute::columns::{schema, Cell, ColumnType, Columns, Owned};
use crate::compute::relation::{Relation, BUILT_IN};
use crate::dataflow::rows::CustomerRow;
use crate::dataflow::stats::Stats;
use crate::dataflow::Time;
use crate::event::{Identity, Position, Reason, Txn, Update};
use crate::filter::Filter;
use crate::reading::{CreatedRows, Reading};

/// What the oracle keys versions by. An `id` (or message key) names a transaction; a record
/// without one is its own transaction, keyed here by its position in its source — not by
/// the `At` label the sources give it — so that a labelling rule that names two records
/// alike (and merges them) shows up as a difference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Id(Box<str>),
    Place(Position),
}

impl Key {
    fn of(update: &Update) -> Key {
        match &update.identity {
            Identity::Id(id) => Key::Id((**id).into()),
            Identity::At(_) => Key::Place(update.position),
        }
    }
}

/// Records admitted in order: each batch at its logical time.
#[derive(Default)]
pub struct Oracle {
    latest: HashMap<Key, (Time, Position, Option<Txn>, Identity)>,
    refused: BTreeMap<Reason, i64>,
    offsets: BTreeMap<i32, i64>,
}

impl Oracle {
    /// An oracle that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits the updates of one logical time (in any order) and the reasons refused then.
    pub fn admit(
        &mut self,
        time: Time,
        updates: impl IntoIterator<Item = Update>,
        refused: impl IntoIterator<Item = Reason>,
    ) {
        for update in updates {
            let key = Key::of(&update);
            let replace = match self.latest.get(&key) {
                None => true,
                // A redelivery from the same source changes nothing.
                Some((_, pos, _, _)) if pos.source == update.position.source && pos.seq >= update.position.seq => false,
                Some((t, pos, _, _)) => *t < time || pos < &update.position,
            };
            if replace {
                self.latest.insert(key, (time, update.position, update.txn, update.identity));
            }
        }
        for reason in refused {
            *self.refused.entry(reason).or_default() += 1;
        }
    }

    /// Records that `partition` has been read up to (not including) `next`.
    pub fn set_offset(&mut self, partition: i32, next: i64) {
        self.offsets.insert(partition, next);
    }

    /// The live transactions, each with its identity's text (its `id`, or its place).
    pub fn live(&self) -> Vec<(String, Txn)> {
        self.latest
            .values()
            .filter_map(|(_, _, txn, identity)| {
                let id = match identity {
                    Identity::Id(id) | Identity::At(id) => id.to_string(),
                };
                txn.clone().map(|t| (id, t))
            })
            .collect()
    }

    /// Every view, computed from the latest versions.
    pub fn reading(&self, time: Time, event_filter: Option<&Filter>, top_k: usize) -> Reading {
        let live = self
            .latest
            .values()
            .filter_map(|(_, _, txn, _)| txn.as_ref())
            .filter(|t| event_filter.is_none_or(|f| f.accepts_txn(t)));
        let mut customers: HashMap<&str, CustomerRow> = HashMap::new();
        let mut categories: HashMap<Option<String>, Stats> = HashMap::new();
        let mut hourly: HashMap<i64, Stats> = HashMap::new();
        let mut overall = Stats::default();
        for t in live {
            let row =
                customers.entry(&t.customer).or_insert(CustomerRow { total: 0, count: 0, min: t.cents, max: t.cents });
            row.total += i128::from(t.cents);
            row.count += 1;
            row.min = row.min.min(t.cents);
            row.max = row.max.max(t.cents);
            add(categories.entry(t.category.as_deref().map(String::from)).or_default(), t.cents);
            if let Some(hour) = t.ts.map(crate::event::hour_of) {
                add(hourly.entry(hour).or_default(), t.cents);
            }
            add(&mut overall, t.cents);
        }
        let mut customers: Vec<(String, CustomerRow)> = customers.into_iter().map(|(c, r)| (c.to_owned(), r)).collect();
        customers.sort();
        let mut top: Vec<(String, i128)> = customers.iter().map(|(c, r)| (c.clone(), r.total)).collect();
        top.sort_by(|(a, x), (b, y)| y.cmp(x).then_with(|| a.cmp(b)));
        top.truncate(top_k);
        let nonzero = |s: &Stats| s.count != 0 || s.cents != 0;
        let mut categories: Vec<_> = categories.into_iter().filter(|(_, s)| nonzero(s)).collect();
        categories.sort();
        let mut hourly: Vec<_> = hourly.into_iter().filter(|(_, s)| nonzero(s)).collect();
        hourly.sort();
        Reading {
            time,
            customer_count: customers.len() as i64,
            customers,
            top,
            categories,
            hourly,
            overall,
            dead_letters: self.refused.iter().map(|(r, n)| (*r, *n)).collect(),
            offsets: self.offsets.iter().map(|(p, o)| (*p, *o)).collect(),
            workers: Vec::new(),
            created: Vec::new(),
        }
    }

    /// The created views `views` (in creation order: a view over a view after its base),
    /// recomputed from their statements: DataFusion runs each one over plain in-memory tables
    /// of the live transactions and of `reading` (the oracle's own built-in views) — no
    /// operator of the dataflow, no arrangement, no incremental step is involved. A view that
    /// reads a relation the oracle does not hold (a table: its file and topic are not
    /// recomputed here) is not recomputed: its name comes back in the second list.
    pub fn created_views(
        &self,
        views: &[CreatedRows],
        reading: &Reading,
        topic: &str,
    ) -> Result<(Vec<CreatedRows>, Vec<String>), String> {
        let runtime = tokio::runtime::Builder::new_current_thread().build().map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let context = self.sql_context(reading, topic)?;
            let (mut out, mut skipped) = (Vec::new(), Vec::new());
            for view in views {
                let fail = |e: String| format!("view {}: {e}", view.name);
                if let Err(error) = run_sql(&context, &view.definition).await {
                    if error.contains("not found") {
                        skipped.push(view.name.clone());
                        continue;
                    }
                    return Err(fail(error));
                }
                let answer = run_sql(&context, &format!("SELECT * FROM \"{}\"", view.name.to_lowercase()))
                    .await
                    .map_err(fail)?;
                let mut rows = answer.rows();
                rows.sort_by_key(|r| serde_json::Value::from(r.clone()).to_string());
                out.push(CreatedRows {
                    name: view.name.clone(),
                    definition: view.definition.clone(),
                    columns: answer.columns().into_iter().map(|(n, _)| n).collect(),
                    rows,
                });
            }
            Ok((out, skipped))
        })
    }

    /// The answer of `sql` (one query) over plain in-memory tables of the live transactions
    /// and of `reading`, computed by DataFusion with this engine's functions: what the live
    /// engine must answer at the same time.
    pub fn answer_sql(&self, reading: &Reading, topic: &str, sql: &str) -> Result<crate::sql::Answer, String> {
        self.answer_sql_with(reading, topic, &[], sql)
    }

    /// [`Oracle::answer_sql`] with more relations: tables, by name, with their columns and rows.
    pub fn answer_sql_with(
        &self,
        reading: &Reading,
        topic: &str,
        tables: &[PlainTable],
        sql: &str,
    ) -> Result<crate::sql::Answer, String> {
        let runtime = tokio::runtime::Builder::new_current_thread().build().map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let context = self.sql_context(reading, topic)?;
            for table in tables {
                let columns: Vec<(&str, ColumnType)> = table.columns.iter().map(|(n, t)| (n.as_str(), *t)).collect();
                let provider = memory_table(&columns, &table.rows).map_err(|e| e.to_string())?;
                context.register_table(table.name.as_str(), provider).map_err(|e| e.to_string())?;
            }
            run_sql(&context, sql).await
        })
    }

    /// A DataFusion session whose relations are in-memory tables of the live transactions and
    /// of `reading`'s views, with this engine's functions.
    fn sql_context(
        &self,
        reading: &Reading,
        topic: &str,
    ) -> Result<datafusion::execution::context::SessionContext, String> {
        let context = datafusion::execution::context::SessionContext::new_with_config(
            datafusion::execution::context::SessionConfig::new()
                .set_bool("datafusion.sql_parser.parse_float_as_decimal", true),
        );
        crate::sql::functions::register(&context);
        for relation in BUILT_IN {
            let rows = match relation {
                Relation::Transactions => self
                    .live()
                    .into_iter()
                    .map(|(id, t)| {
                        vec![
                            Owned::Text(id),
                            Owned::Text(t.customer.to_string()),
                            Owned::Cents(i128::from(t.cents)),
                            t.category.as_deref().map_or(Owned::Null, |c| Owned::Text(c.to_owned())),
                            t.ts.map_or(Owned::Null, Owned::Seconds),
                        ]
                    })
                    .collect(),
                builtin => builtin_rows(reading, builtin, topic),
            };
            let columns: Vec<(&str, ColumnType)> = relation.columns().to_vec();
            let table = memory_table(&columns, &rows).map_err(|e| e.to_string())?;
            context.register_table(relation.name(), table).map_err(|e| e.to_string())?;
        }
        Ok(context)
    }
}

/// A relation given whole, for [`Oracle::answer_sql_with`]: a table's expected rows.
pub struct PlainTable {
    /// Its name.
    pub name: String,
    /// Its columns.
    pub columns: Vec<(String, ColumnType)>,
    /// Its rows.
    pub rows: Vec<Vec<Owned>>,
}

/// Runs one statement in `context`, its unnamed columns named as Postgres (and the engine)
/// names them.
async fn run_sql(
    context: &datafusion::execution::context::SessionContext,
    sql: &str,
) -> Result<crate::sql::Answer, String> {
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    let parsed = datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql).map_err(|e| e.to_string())?;
    let mut statement = parsed.into_iter().next().ok_or("no statement")?;
    crate::sql::names::postgres_names(&mut statement);
    let frame = context.sql(&statement.to_string()).await.map_err(|e| e.to_string())?;
    let schema = std::sync::Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await.map_err(|e| e.to_string())?;
    Ok(crate::sql::Answer { schema, batches, as_of: None, tag: None })
}

/// A plain in-memory table of these rows.
fn memory_table(
    columns: &[(&str, ColumnType)],
    rows: &[Vec<Owned>],
) -> datafusion::error::Result<std::sync::Arc<datafusion::datasource::MemTable>> {
    let schema = schema(columns);
    let types: Vec<ColumnType> = columns.iter().map(|(_, t)| *t).collect();
    let mut builder = Columns::new(&types);
    for row in rows {
        let cells: Vec<Cell<'_>> = row.iter().map(Owned::cell).collect();
        builder.push(&cells);
    }
    let batch = builder.finish(schema.clone());
    Ok(std::sync::Arc::new(datafusion::datasource::MemTable::try_new(schema, vec![vec![batch]])?))
}

/// A built-in view's rows as SQL shows them, from a reading.
fn builtin_rows(reading: &Reading, relation: Relation, topic: &str) -> Vec<Vec<Owned>> {
    let avg = |cents: i128, count: i64| {
        if count == 0 {
            Owned::Null
        } else {
            Owned::Cents(divide_rounded(cents, i128::from(count)))
        }
    };
    let sums = |key: Owned, s: &Stats| vec![key, Owned::Cents(s.cents), Owned::Int(s.count), avg(s.cents, s.count)];
    match relation {
        Relation::Customers => reading
            .customers
            .iter()
            .map(|(c, r)| {
                vec![
                    Owned::Text(c.clone()),
                    Owned::Cents(r.total),
                    Owned::Int(r.count),
                    Owned::Cents(i128::from(r.min)),
                    Owned::Cents(i128::from(r.max)),
                    avg(r.total, r.count),
                ]
            })
            .collect(),
        Relation::Categories => reading
            .categories
            .iter()
            .map(|(c, s)| sums(c.as_ref().map_or(Owned::Null, |c| Owned::Text(c.clone())), s))
            .collect(),
        Relation::Hourly => reading.hourly.iter().map(|(h, s)| sums(Owned::Seconds(h * 3600), s)).collect(),
        Relation::Overall => vec![vec![
            Owned::Cents(reading.overall.cents),
            Owned::Int(reading.overall.count),
            Owned::Int(reading.customer_count),
            avg(reading.overall.cents, reading.overall.count),
        ]],
        Relation::DeadLetters => {
            reading.dead_letters.iter().map(|(r, n)| vec![Owned::Text(r.as_str().into()), Owned::Int(*n)]).collect()
        }
        Relation::Offsets => reading
            .offsets
            .iter()
            .map(|(p, o)| vec![Owned::Text(topic.into()), Owned::Int(i64::from(*p)), Owned::Int(*o)])
            .collect(),
        Relation::Transactions | Relation::Groups(_) | Relation::Table(_) | Relation::Rows(_) => Vec::new(),
    }
}

/// The differences between the live created views and the recomputed ones, one line each.
pub fn created_differences(live: &[CreatedRows], expected: &[CreatedRows]) -> Vec<String> {
    let sorted = |rows: &[Vec<serde_json::Value>]| {
        let mut rows: Vec<String> = rows.iter().map(|r| serde_json::Value::from(r.clone()).to_string()).collect();
        rows.sort();
        rows
    };
    let mut out = Vec::new();
    for (l, e) in live.iter().zip(expected) {
        let (l_rows, e_rows) = (sorted(&l.rows), sorted(&e.rows));
        let only_live: Vec<&String> = l_rows.iter().filter(|r| !e_rows.contains(r)).collect();
        let only_expected: Vec<&String> = e_rows.iter().filter(|r| !l_rows.contains(r)).collect();
        for row in only_live {
            out.push(format!("view {}: live row {row}, not recomputed", l.name));
        }
        for row in only_expected {
            out.push(format!("view {}: recomputed row {row}, not live", l.name));
        }
        if l.columns != e.columns {
            out.push(format!("view {}: live columns {:?}, recomputed {:?}", l.name, l.columns, e.columns));
        }
    }
    out
}

fn add(stats: &mut Stats, cents: i64) {
    stats.count += 1;
    stats.cents += i128::from(cents);
}

/// The differences between two readings, one line each; empty when they agree.
pub fn differences(live: &Reading, expected: &Reading) -> Vec<String> {
    let mut out = Vec::new();
    diff_keyed("customer", &live.customers, &expected.customers, &mut out);
    if live.top != expected.top {
        out.push(format!("top: live {:?}, recomputed {:?}", live.top, expected.top));
    }
    diff_keyed("category", &live.categories, &expected.categories, &mut out);
    diff_keyed("hour", &live.hourly, &expected.hourly, &mut out);
    if live.overall != expected.overall {
        out.push(format!("overall: live {:?}, recomputed {:?}", live.overall, expected.overall));
    }
    if live.customer_count != expected.customer_count {
        out.push(format!("customers: live {}, recomputed {}", live.customer_count, expected.customer_count));
    }
    diff_keyed("dead letters", &live.dead_letters, &expected.dead_letters, &mut out);
    diff_keyed("offsets of partition", &live.offsets, &expected.offsets, &mut out);
    out
}

fn diff_keyed<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    what: &str,
    live: &[(K, V)],
    expected: &[(K, V)],
    out: &mut Vec<String>,
) {
    let live: BTreeMap<&K, &V> = live.iter().map(|(k, v)| (k, v)).collect();
    let expected: BTreeMap<&K, &V> = expected.iter().map(|(k, v)| (k, v)).collect();
    for (k, v) in &live {
        match expected.get(k) {
            None => out.push(format!("{what} {k:?}: live {v:?}, recomputed nothing")),
            Some(e) if e != v => out.push(format!("{what} {k:?}: live {v:?}, recomputed {e:?}")),
            _ => {}
        }
    }
    for (k, e) in &expected {
        if !live.contains_key(k) {
            out.push(format!("{what} {k:?}: live nothing, recomputed {e:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(label: &str, seq: u64, customer: &str, cents: i64) -> Update {
        Update {
            identity: Identity::At(label.into()),
            position: Position::in_file(0, seq),
            txn: Some(Txn { customer: customer.into(), cents, ts: None, category: None }),
        }
    }

    #[test]
    fn records_without_an_id_are_told_apart_by_their_position_not_their_label() {
        // Two records a source labelled alike (a JSON array on one line once did): the oracle
        // keeps both, so a dataflow that merged them would differ from it.
        let mut oracle = Oracle::new();
        oracle.admit(0, [at("p.json:1", 1, "a", 100), at("p.json:1", 30, "b", 200)], []);
        let reading = oracle.reading(0, None, 10);
        assert_eq!(reading.overall, Stats { count: 2, cents: 300 });
        // The same record read again (same place) changes nothing.
        oracle.admit(1, [at("p.json:1", 1, "a", 100)], []);
        assert_eq!(oracle.reading(1, None, 10).overall, Stats { count: 2, cents: 300 });
    }

    #[test]
    fn created_views_are_recomputed_from_their_statements_and_differences_found() {
        let mut oracle = Oracle::new();
        oracle.admit(0, [at("a", 1, "Ali", 12000), at("b", 2, "Ali", 20000), at("c", 3, "Sara", 5000)], []);
        let view = |name: &str, sql: &str, rows: Vec<Vec<serde_json::Value>>| CreatedRows {
            name: name.into(),
            definition: sql.into(),
            columns: Vec::new(),
            rows,
        };
        let live = [
            view(
                "big",
                "CREATE VIEW big AS SELECT customer, max(amount) AS m FROM transactions GROUP BY customer",
                vec![vec!["Ali".into(), 200.into()], vec!["Sara".into(), 50.into()]],
            ),
            view("richer", "CREATE VIEW richer AS SELECT customer FROM big WHERE m > 100", vec![vec!["Sara".into()]]),
        ];
        let (expected, _) = oracle.created_views(&live, &oracle.reading(0, None, 10), "t").unwrap();
        assert_eq!(expected[0].columns, ["customer", "m"]);
        assert_eq!(expected[0].rows, live[0].rows);
        assert_eq!(expected[1].rows, vec![vec![serde_json::Value::from("Ali")]]);
        let found = created_differences(&live, &expected);
        assert!(found.iter().any(|d| d.contains("view richer: live row [\"Sara\"]")), "{found:?}");
        assert!(found.iter().any(|d| d.contains("view richer: recomputed row [\"Ali\"]")), "{found:?}");
    }
}
