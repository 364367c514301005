//! A view's joins, as the dataflow keeps them: which joins it takes — one side holds at most
//! one row per key, so a join never has more rows than its other side — and an aggregation
//! over a join computed in part below it, by the join key.
//!
//! ```text
//! transactions t JOIN customer_info i ON t.customer = i.customer      taken: i is a table on its key
//! transactions x JOIN transactions y ON x.customer = y.customer       refused: it grows as the product
//! ```

use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{Expr, LogicalPlan};

use super::table::LiveTable;
use crate::compute::plan::{Aggregate, AggregateFunc, RowPlan, Scalar};

/// Whether `plan` holds at most one row for each value of `exprs` (columns of its output): a
/// table joined on (at least) its primary key, a grouping joined on (at least) its keys, or
/// `DISTINCT` joined on every column — seen through aliases, filters and projections of columns.
pub(super) fn unique_on(plan: &LogicalPlan, exprs: &[Expr]) -> bool {
    let names: Option<Vec<String>> = exprs
        .iter()
        .map(|e| match e {
            Expr::Column(c) => Some(c.name.clone()),
            _ => None,
        })
        .collect();
    names.is_some_and(|names| unique_by_names(plan, &names))
}

fn unique_by_names(plan: &LogicalPlan, names: &[String]) -> bool {
    match plan {
        LogicalPlan::SubqueryAlias(alias) => unique_by_names(&alias.input, names),
        LogicalPlan::Filter(filter) => unique_by_names(&filter.input, names),
        LogicalPlan::Projection(projection) => {
            // Each name as the column of the input it shows.
            let below: Option<Vec<String>> = names
                .iter()
                .map(|name| {
                    let i = projection.schema.fields().iter().position(|f| f.name() == name)?;
                    match projection.expr.get(i)? {
                        Expr::Column(c) => Some(c.name.clone()),
                        Expr::Alias(alias) => match alias.expr.as_ref() {
                            Expr::Column(c) => Some(c.name.clone()),
                            _ => None,
                        },
                        _ => None,
                    }
                })
                .collect();
            below.is_some_and(|below| unique_by_names(&projection.input, &below))
        }
        LogicalPlan::TableScan(scan) => {
            let Ok(provider) = source_as_provider(&scan.source) else { return false };
            let Some(table) = provider.as_ref().downcast_ref::<LiveTable>() else { return false };
            let key = table.primary_key();
            !key.is_empty() && key.iter().all(|k| names.contains(k))
        }
        LogicalPlan::Aggregate(aggregate) => {
            let schema = aggregate.schema.fields();
            (0..aggregate.group_expr.len()).all(|i| schema.get(i).is_some_and(|f| names.contains(f.name())))
        }
        LogicalPlan::Distinct(datafusion::logical_expr::Distinct::All(input)) => {
            input.schema().fields().iter().all(|f| names.contains(f.name()))
        }
        _ => false,
    }
}

/// An aggregation of `input`. Over an inner join whose aggregates
/// read only the left side and whose groups only the right side, the left rows are first
/// aggregated by the join key — each left row meets the same right rows as its key, so a
/// group's `sum`, `count`, `min` and `max` are those of its keys' partials — and the join then
/// meets one row per key instead of one per left row:
///
/// ```text
/// Reduce(city; sum(amount), count(*)) ← Join(customer) ← transactions, customer_info
/// becomes
/// Reduce(city; sum(total), sum(n)) ← Join(customer) ← Reduce(customer; sum(amount), count(*)) ← transactions
///                                                   ← customer_info
/// ```
pub(super) fn reduce(input: RowPlan, keys: Vec<Scalar>, aggregates: Vec<Aggregate>) -> RowPlan {
    // Seen through a projection of plain columns (the optimizer's, of what the join shows).
    let (input, keys, aggregates) = match input {
        RowPlan::Map { input: inner, exprs } if matches!(*inner, RowPlan::Join { left_outer: false, .. }) => {
            let picked: Option<Vec<usize>> =
                exprs.iter().map(|e| if let Scalar::Column(c) = e { Some(*c) } else { None }).collect();
            match picked {
                Some(picked) => {
                    let to = |c: usize| picked[c];
                    let keys = keys.iter().map(|k| k.map_columns(&to)).collect();
                    let aggregates = aggregates
                        .iter()
                        .map(|a| Aggregate { func: a.func, arg: a.arg.as_ref().map(|x| x.map_columns(&to)) })
                        .collect();
                    (*inner, keys, aggregates)
                }
                None => (RowPlan::Map { input: inner, exprs }, keys, aggregates),
            }
        }
        other => (other, keys, aggregates),
    };
    let width = input.width();
    let RowPlan::Join { left, right, left_keys, right_keys, left_outer: false, right_width } = input else {
        return RowPlan::Reduce { input: Box::new(input), keys, aggregates };
    };
    let left_width = width - right_width;
    let groups_read_right = keys.iter().all(|k| k.columns().iter().all(|c| *c >= left_width));
    let aggregates_read_left = aggregates.iter().all(|a| {
        a.func != AggregateFunc::CountDistinct
            && a.arg.as_ref().is_none_or(|arg| arg.columns().iter().all(|c| *c < left_width))
    });
    if !groups_read_right || !aggregates_read_left {
        let input = RowPlan::Join { left, right, left_keys, right_keys, left_outer: false, right_width };
        return RowPlan::Reduce { input: Box::new(input), keys, aggregates };
    }
    // The left rows by join key: the key's values, then one partial per aggregate.
    let key_count = left_keys.len();
    let partials = RowPlan::Reduce { input: left, keys: left_keys, aggregates: aggregates.clone() };
    let joined = RowPlan::Join {
        left: Box::new(partials),
        right,
        left_keys: (0..key_count).map(Scalar::Column).collect(),
        right_keys,
        left_outer: false,
        right_width,
    };
    // Over the joined rows (keys, partials, right columns): the groups as before, each
    // aggregate from its partials.
    let partial_width = key_count + aggregates.len();
    let keys = keys.iter().map(|k| k.map_columns(&|c| c - left_width + partial_width)).collect();
    let aggregates = aggregates
        .iter()
        .enumerate()
        .map(|(i, a)| Aggregate {
            func: match a.func {
                // A count is the sum of its parts, and 0 over none (a sum would be NULL).
                AggregateFunc::Count | AggregateFunc::SumOfCounts => AggregateFunc::SumOfCounts,
                other => other,
            },
            arg: Some(Scalar::Column(key_count + i)),
        })
        .collect();
    RowPlan::Reduce { input: Box::new(joined), keys, aggregates }
}
