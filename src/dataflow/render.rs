//! A view's plan ([`RowPlan`]) made into differential operators, in the view's own dataflow:
//! the live transactions come from the view's input (filled and fed as every created view's
//! is, see [`super::created`]); tables and other compiled views are **imported** — their
//! arrangements shared, not copied ([`TraceAgent::import`]).
//!
//! | plan | operators |
//! |---|---|
//! | `Transactions`, `Table`, `View` | the input mapped to rows; an imported arrangement as a collection |
//! | `Filter`, `Map` | `filter`, `map` |
//! | `Join` | both sides keyed and joined (`join_map`); a table side joined on its primary key is its own arrangement, imported (`join_core`); a left join adds the left rows whose key the right side lacks (`antijoin`) |
//! | `Reduce` | `reduce`: each group's aggregates from its rows |
//! | `Reduce` without groups | the same, plus the row of no rows (`count` 0) while the reduction has none |
//! | `TopK` | `reduce` per group keeping its first rows in order; one group of every row first through 65,536 then 256 groups by hash |
//! | `Union`, `Distinct` | `concatenate`, `distinct` |
//!
//! The view's rows are arranged by the whole row (a row may be there more than once: its
//! count is the multiplicity), which reads, the changefeed and views over it use.

use std::collections::BTreeMap;

use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::operators::vec::ToStream;

use super::table::TableTrace;
use super::Time;
use crate::compute::columns::Owned;
use crate::compute::plan::{top_k, RowPlan, Scalar};
use crate::event::Txn;
use crate::table::Row;

/// A compiled view's arrangement: each row (with its multiplicity as its count).
pub type RowsTrace = TraceAgent<ValSpine<Row, (), Time, isize>>;

/// What a view's operators read, in its dataflow.
pub struct Inputs<'scope> {
    /// The live transactions.
    pub transactions: VecCollection<'scope, Time, Txn, isize>,
    /// The tables it reads, imported, with their primary keys' columns.
    pub tables: BTreeMap<u64, (Arranged<'scope, TableTrace>, Vec<usize>)>,
    /// The compiled views it reads, imported.
    pub views: BTreeMap<u64, Arranged<'scope, RowsTrace>>,
}

/// The rows of `plan`.
pub fn render<'scope>(plan: &RowPlan, inputs: &Inputs<'scope>) -> VecCollection<'scope, Time, Row, isize> {
    match plan {
        RowPlan::Transactions { columns } => {
            let columns = columns.clone();
            inputs.transactions.clone().map(move |txn| columns.iter().map(|c| transaction_value(&txn, *c)).collect())
        }
        RowPlan::Table { id, columns } => {
            let columns = columns.clone();
            match inputs.tables.get(id) {
                Some((table, _)) => {
                    table.clone().as_collection(move |_, row: &Row| columns.iter().map(|c| row[*c].clone()).collect())
                }
                None => missing(inputs, "table", *id),
            }
        }
        RowPlan::View { id, columns } => {
            let columns = columns.clone();
            match inputs.views.get(id) {
                Some(view) => {
                    view.clone().as_collection(move |row: &Row, _| columns.iter().map(|c| row[*c].clone()).collect())
                }
                None => missing(inputs, "view", *id),
            }
        }
        RowPlan::Filter { input, predicate } => {
            let predicate = predicate.clone();
            render(input, inputs).filter(move |row| predicate.test(row) == Some(true))
        }
        RowPlan::Map { input, exprs } => {
            let exprs = exprs.clone();
            render(input, inputs).map(move |row| exprs.iter().map(|e| e.eval(&row)).collect())
        }
        RowPlan::Join { left, right, left_keys, right_keys, left_outer, right_width } => {
            let left_rows = render(left, inputs);
            let keyed_left = keyed(left_rows.clone(), left_keys.clone());
            let (joined, right_keys_present) = match on_primary_key(right, right_keys, inputs) {
                // The table's own arrangement: nothing of the table is arranged again.
                Some((table, columns)) => {
                    let projected = columns.clone();
                    let joined =
                        keyed_left.clone().arrange_by_key().join_core(table.clone(), move |_, l: &Row, r: &Row| {
                            Some(l.iter().cloned().chain(projected.iter().map(|c| r[*c].clone())).collect::<Row>())
                        });
                    let present = table.clone().as_collection(|k: &Row, _| k.clone());
                    (joined, present)
                }
                None => {
                    let keyed_right = keyed(render(right, inputs), right_keys.clone());
                    let present = keyed_right.clone().map(|(k, _)| k).distinct();
                    let joined = keyed_left
                        .clone()
                        .join_map(keyed_right, |_, l: &Row, r: &Row| l.iter().chain(r).cloned().collect::<Row>());
                    (joined, present)
                }
            };
            if !*left_outer {
                return joined;
            }
            let width = *right_width;
            let pad = move |row: Row| row.into_iter().chain(std::iter::repeat_n(Owned::Null, width)).collect::<Row>();
            let unmatched = keyed_left.antijoin(right_keys_present).map(move |(_, row)| pad(row));
            // A left row whose key has a NULL matches nothing.
            let keys = left_keys.clone();
            let null_keyed = left_rows
                .filter(move |row| keys.iter().any(|k| k.eval(row) == Owned::Null))
                .map(move |row| row.into_iter().chain(std::iter::repeat_n(Owned::Null, width)).collect::<Row>());
            joined.concat(unmatched).concat(null_keyed)
        }
        RowPlan::Reduce { input, keys, aggregates } => {
            let global = keys.is_empty();
            let (keys, aggregates) = (keys.clone(), aggregates.clone());
            let empty: Row = aggregates.iter().map(|a| a.over(&[])).collect();
            let reduced = render(input, inputs)
                .map(move |row| (keys.iter().map(|k| k.eval(&row)).collect::<Row>(), row))
                .reduce(move |key: &Row, rows: &[(&Row, isize)], out: &mut Vec<(Row, isize)>| {
                    let values = aggregates.iter().map(|a| a.over(rows));
                    out.push((key.iter().cloned().chain(values).collect(), 1));
                })
                .map(|(_, row)| row);
            if !global {
                return reduced;
            }
            // An aggregation without groups has one row even over no rows (`count` 0, `sum`
            // NULL), as SQL has it: that row, less itself whenever the reduction has one.
            let scope = reduced.inner.scope();
            let once = if scope.index() == 0 { vec![(empty.clone(), Time::default(), 1isize)] } else { Vec::new() };
            let empty_row = once.to_stream(scope).as_collection();
            let present = reduced.clone().map(move |_| empty.clone()).negate();
            reduced.concat(empty_row).concat(present)
        }
        RowPlan::TopK { input, keys, order, offset, limit, rank } => {
            let rows = render(input, inputs);
            let (keys, order, offset, limit, rank) = (keys.clone(), order.clone(), *offset, *limit, *rank);
            let wanted = offset.saturating_add(limit);
            let global = keys.is_empty();
            let mut keyed =
                rows.map(move |row| ((keys.iter().map(|k| k.eval(&row)).collect::<Row>(), bucket(&row)), row));
            // One group of every row would be sorted whole at every change: first the first
            // rows of each of 65,536 then 256 buckets by the row's hash, each a small group,
            // then of the group (Materialize's top-k is built in stages the same way).
            if global {
                for buckets in [1u64 << 16, 1 << 8] {
                    let order = order.clone();
                    keyed = keyed.map(move |((key, hash), row)| ((key, hash % buckets), row)).reduce(
                        move |_, rows: &[(&Row, isize)], out: &mut Vec<(Row, isize)>| {
                            out.extend(top_k(rows, &order, 0, wanted, false));
                        },
                    );
                }
            }
            keyed
                .map(|((key, _), row)| (key, row))
                .reduce(move |_, rows: &[(&Row, isize)], out: &mut Vec<(Row, isize)>| {
                    out.extend(top_k(rows, &order, offset, limit, rank));
                })
                .map(|(_, row)| row)
        }
        RowPlan::Union(plans) => {
            let mut rendered = plans.iter().map(|p| render(p, inputs));
            let first = rendered.next().expect("a union has inputs");
            rendered.fold(first, |all, next| all.concat(next))
        }
        RowPlan::Distinct(input) => render(input, inputs).distinct(),
    }
}

/// No rows, for an input that is not installed on this worker (the catalog keeps a view from
/// outliving what it reads; a worker never fails a view for it).
fn missing<'scope>(inputs: &Inputs<'scope>, what: &str, id: u64) -> VecCollection<'scope, Time, Row, isize> {
    tracing::error!(what, id, "a compiled view reads what is not installed here; it reads no rows of it");
    inputs.transactions.clone().flat_map(|_| None::<Row>)
}

/// Rows keyed by `keys`, those whose key has a NULL left out (equality never holds for them).
fn keyed<'scope>(
    rows: VecCollection<'scope, Time, Row, isize>,
    keys: Vec<Scalar>,
) -> VecCollection<'scope, Time, (Row, Row), isize> {
    rows.flat_map(move |row| {
        let key: Row = keys.iter().map(|k| k.eval(&row)).collect();
        (!key.contains(&Owned::Null)).then_some((key, row))
    })
}

/// The imported table and the columns `right` shows of it, when `right` is a table's rows
/// joined on exactly its primary key.
fn on_primary_key<'a, 'scope>(
    right: &'a RowPlan,
    right_keys: &[Scalar],
    inputs: &'a Inputs<'scope>,
) -> Option<(&'a Arranged<'scope, TableTrace>, &'a Vec<usize>)> {
    let RowPlan::Table { id, columns } = right else { return None };
    let (table, key) = inputs.tables.get(id)?;
    let joined_on: Vec<usize> = right_keys
        .iter()
        .map(|k| match k {
            Scalar::Column(i) => Some(columns[*i]),
            _ => None,
        })
        .collect::<Option<_>>()?;
    (joined_on == *key).then_some((table, columns))
}

/// A row's hash: the same on every worker of every process (a row and its retraction fall in
/// the same bucket wherever they are made).
fn bucket(row: &Row) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    row.hash(&mut hasher);
    hasher.finish()
}

/// Column `column` of `transactions` (`id, customer, amount, category, ts`) of a live
/// transaction (its id is not carried: plans do not read it).
pub fn transaction_value(txn: &Txn, column: usize) -> Owned {
    match column {
        1 => Owned::Text(txn.customer.to_string()),
        2 => Owned::Cents(i128::from(txn.cents)),
        3 => txn.category.as_ref().map_or(Owned::Null, |c| Owned::Text(c.to_string())),
        4 => txn.ts.map_or(Owned::Null, Owned::Seconds),
        _ => Owned::Null,
    }
}
