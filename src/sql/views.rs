//! `CREATE VIEW`: the view's `SELECT`, planned by DataFusion, and what the dataflow keeps of it.
//!
//! Two kinds of view:
//!
//! | the `SELECT` | kept by the dataflow | read |
//! |---|---|---|
//! | `SELECT [key,] aggregates FROM transactions [WHERE …] [GROUP BY key] [HAVING …]` | per group: count, total, min, max of the amounts of the transactions that pass `WHERE` — on every worker, maintained at every change | the groups, then `HAVING` and the select list, by DataFusion |
//! | `SELECT … FROM <a view or a relation> [WHERE …]` (no aggregate, no join) | nothing more | its base, filtered |
//!
//! A view of the first shape whose groups a built-in view already keeps (all the transactions
//! by customer, category, hour or none, with aggregates the built-in's columns give) keeps
//! nothing more either: it is read from the built-in's arrangement ([`super::builtin`]).
//!
//! The key is `customer`, `category`, `date_trunc('hour' \| 'day', ts)` or nothing; the
//! aggregates are `count(*)` (or `count` of a column that is never NULL) and `sum`, `min`,
//! `max`, `avg` of `amount`. Any other view — joins, tables, more keys or aggregates — is
//! compiled from DataFusion's optimized plan into dataflow operators ([`super::compile`]),
//! or refused (0A000) naming what it cannot keep.
//!
//! A maintained view's read plan is its own plan with the aggregation replaced by a scan of its
//! groups, so that a read of the view is exactly a read of its groups at the statement's time:
//!
//! ```text
//! CREATE VIEW big AS SELECT customer, sum(amount) AS total FROM transactions
//!                    WHERE amount >= 100 GROUP BY customer HAVING sum(amount) > 200
//! planned:  Projection ← Filter(sum > 200) ← Aggregate(customer; sum(amount)) ← Filter(amount >= 100) ← transactions
//! kept:     groups by customer of the transactions where amount >= 100
//! read:     Projection ← Filter(sum > 200) ← Projection(customer, total AS sum(amount)) ← groups
//! ```

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{col, Expr, LogicalPlan, LogicalPlanBuilder, Projection};

use super::table::LiveTable;
use super::SqlError;
use crate::compute::columns::ColumnType;
use crate::compute::relation::GROUP_STATS;
use crate::dataflow::created::{Maintained, ViewKey};

/// A view's `SELECT`, planned.
pub struct Planned {
    /// What the workers keep, for a view over the transactions.
    pub maintained: Option<Maintained>,
    /// What a read of the view runs.
    pub read: LogicalPlan,
    /// The relations its `SELECT` reads (dropping one of them is refused while the view is).
    pub reads: Vec<String>,
    /// The column a row of the view is named by, and its name: its group key (customer,
    /// category) or its base's key, when the view shows it under that name.
    pub key: Option<(usize, String)>,
}

/// Plans the view `id` whose `SELECT` DataFusion planned as `plan` (and optimized as
/// `optimized`); what it keeps is read from `workers` workers. A view of the two shapes above
/// is kept so; any other is compiled from its optimized plan ([`super::compile`]): joins,
/// tables, views over compiled views, more keys and aggregates.
pub fn plan(id: u64, plan: LogicalPlan, optimized: &LogicalPlan, workers: usize) -> Result<Planned, SqlError> {
    let reads = read_relations(&plan)?;
    let compiled = || -> Result<Planned, SqlError> {
        let compiled = super::compile::compile(id, optimized, workers)?;
        let maintained = Maintained { id, key: ViewKey::Nothing, filter: None, plan: Some(compiled.plan) };
        Ok(Planned { maintained: Some(maintained), read: compiled.read, reads: reads.clone(), key: None })
    };
    let subqueries_read_more = subqueries_read_more(&plan, &reads)?;
    match plan_groups(id, plan, workers) {
        Err(SqlError::Unsupported(_)) => compiled(),
        // A view over one relation whose subqueries read others (`IN (SELECT … FROM t)`, a
        // semi join): kept by the dataflow when it compiles, else read through.
        Ok(planned) if planned.maintained.is_none() && subqueries_read_more => compiled().or(Ok(planned)),
        other => other,
    }
}

/// Whether the subqueries of `plan` read relations besides `reads` (what it scans itself).
fn subqueries_read_more(plan: &LogicalPlan, reads: &[String]) -> Result<bool, SqlError> {
    let mut more = false;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            more |= !reads.iter().any(|r| r == scan.table_name.table());
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| SqlError::Internal(e.to_string()))?;
    Ok(more)
}

/// The relations a plan scans, by name (not in its subqueries).
fn read_relations(plan: &LogicalPlan) -> Result<Vec<String>, SqlError> {
    let mut reads = Vec::new();
    plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            reads.push(scan.table_name.table().to_owned());
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| SqlError::Internal(e.to_string()))?;
    reads.sort();
    reads.dedup();
    Ok(reads)
}

/// Plans a view of the two shapes above.
fn plan_groups(id: u64, plan: LogicalPlan, workers: usize) -> Result<Planned, SqlError> {
    let reads = read_relations(&plan)?;
    refuse_unkept(&plan)?;
    let mut aggregates = Vec::new();
    plan.apply(|node| {
        if let LogicalPlan::Aggregate(aggregate) = node {
            aggregates.push(aggregate.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| SqlError::Internal(e.to_string()))?;
    match aggregates.as_slice() {
        [] => {
            if reads.len() != 1 {
                return Err(SqlError::Unsupported(format!(
                    "a view that reads {} relations (joins are not maintained yet)",
                    reads.len()
                )));
            }
            let key = crate::compute::relation::Relation::named(&reads[0])
                .and_then(|base| base.key().map(|k| base.columns()[k].0.to_owned()))
                .and_then(|name| shown(&plan, &name));
            Ok(Planned { maintained: None, read: plan, reads, key })
        }
        [aggregate] => {
            if reads != ["transactions"] {
                return Err(SqlError::Unsupported(format!(
                    "a view that aggregates {} (only transactions are aggregated by the dataflow)",
                    reads.join(", ")
                )));
            }
            // An aggregation a built-in view's arrangement already gives is read from it.
            if let Some((relation, served)) = super::builtin::served(aggregate, workers)? {
                let read = replace_aggregate(plan, served)?;
                let key = relation.key().and_then(|k| shown(&read, relation.columns()[k].0));
                return Ok(Planned { maintained: None, read, reads, key });
            }
            let (maintained, groups) = maintained(id, aggregate, workers)?;
            let read = replace_aggregate(plan, groups)?;
            let key = match maintained.key {
                ViewKey::Customer => shown(&read, "customer"),
                ViewKey::Category => shown(&read, "category"),
                _ => None,
            };
            Ok(Planned { maintained: Some(maintained), read, reads, key })
        }
        _ => Err(SqlError::Unsupported("a view with more than one aggregation".into())),
    }
}

/// `plan` with its one aggregation replaced by `by` (a plan of the aggregation's columns).
fn replace_aggregate(plan: LogicalPlan, by: LogicalPlan) -> Result<LogicalPlan, SqlError> {
    plan.transform_up(|node| match node {
        LogicalPlan::Aggregate(_) => Ok(Transformed::yes(by.clone())),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
    .map_err(|e| SqlError::Internal(e.to_string()))
}

/// The index of the output column of `plan` named `name`, with the name.
fn shown(plan: &LogicalPlan, name: &str) -> Option<(usize, String)> {
    plan.schema().fields().iter().position(|f| f.name() == name).map(|i| (i, name.to_owned()))
}

/// Refuses what no view keeps: sorting, limits, windows, joins, set operations, distinct.
fn refuse_unkept(plan: &LogicalPlan) -> Result<(), SqlError> {
    let mut refused = None;
    plan.apply(|node| {
        let what = match node {
            LogicalPlan::Sort(_) => Some("ORDER BY"),
            LogicalPlan::Limit(_) => Some("LIMIT"),
            LogicalPlan::Window(_) => Some("window functions"),
            LogicalPlan::Join(_) => Some("joins (not maintained yet)"),
            LogicalPlan::Union(_) => Some("UNION"),
            LogicalPlan::Distinct(_) => Some("DISTINCT"),
            LogicalPlan::Subquery(_) => Some("subqueries"),
            LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => Some("a view of no relation"),
            _ => None,
        };
        if let Some(what) = what {
            refused = Some(what);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| SqlError::Internal(e.to_string()))?;
    match refused {
        Some(what) => Err(SqlError::Unsupported(format!("{what} in a view"))),
        None => Ok(()),
    }
}

/// What the workers keep of an aggregation over the transactions, and the plan that reads it
/// back in the aggregation's own shape (its columns' names and qualifiers).
fn maintained(
    id: u64,
    aggregate: &datafusion::logical_expr::Aggregate,
    workers: usize,
) -> Result<(Maintained, LogicalPlan), SqlError> {
    let key = match aggregate.group_expr.as_slice() {
        [] => ViewKey::Nothing,
        [group] => view_key(group)?,
        _ => return Err(SqlError::Unsupported("a view grouped by more than one key".into())),
    };
    // Below the aggregation: the transactions, filtered (the filter is kept as SQL text).
    let predicates = super::builtin::transactions_filtered(aggregate).map_err(|other| {
        SqlError::Unsupported(format!(
            "{} under a view's aggregation",
            other.display().to_string().split(':').next().unwrap_or("an operator")
        ))
    })?;
    let filter = match predicates.into_iter().reduce(Expr::and) {
        None => None,
        Some(predicate) => Some(sql_text(unqualified(predicate)?)?),
    };
    let keyed = key != ViewKey::Nothing;
    let mut columns: Vec<(String, ColumnType)> = Vec::new();
    if keyed {
        let ty = if matches!(key, ViewKey::Hour | ViewKey::Day) { ColumnType::Time } else { ColumnType::Text };
        columns.push(("key".into(), ty));
    }
    columns.extend(GROUP_STATS.iter().map(|(n, t)| (n.to_string(), *t)));
    let table = LiveTable::groups(id, columns, keyed, workers);
    let scan = LogicalPlanBuilder::scan(format!("view_{id}_groups"), provider_as_source(Arc::new(table)), None)
        .and_then(|scan| if keyed { Ok(scan) } else { one_row(scan) })
        .and_then(LogicalPlanBuilder::build)
        .map_err(|e| SqlError::Internal(e.to_string()))?;
    // The aggregation's columns, from the groups: the key, then each aggregate.
    let mut exprs: Vec<Expr> = Vec::new();
    if keyed {
        exprs.push(col("key"));
    }
    for aggregate_expr in &aggregate.aggr_expr {
        exprs.push(from_groups(aggregate_expr)?);
    }
    // Each under the name (and relation) the aggregation gave it, which the plan above reads.
    let exprs: Vec<Expr> = exprs
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let (qualifier, field) = aggregate.schema.qualified_field(i);
            e.alias_qualified(qualifier.cloned(), field.name())
        })
        .collect();
    let projection = Projection::try_new_with_schema(exprs, Arc::new(scan), Arc::clone(&aggregate.schema))
        .map_err(|e| SqlError::Internal(e.to_string()))?;
    Ok((Maintained { id, key, filter, plan: None }, LogicalPlan::Projection(projection)))
}

/// The one group of an aggregation without `GROUP BY`, as one row even when the workers keep
/// none (no transaction passes the filter): `count` 0, the others NULL, as SQL has it.
fn one_row(groups: LogicalPlanBuilder) -> datafusion::common::Result<LogicalPlanBuilder> {
    use datafusion::functions_aggregate::expr_fn::{max, min};
    use datafusion::logical_expr::{lit, when};
    // Over at most one row, its own values.
    groups
        .aggregate(
            Vec::<Expr>::new(),
            vec![
                min(col("count")).alias("count"),
                min(col("total")).alias("total"),
                min(col("min")).alias("min"),
                max(col("max")).alias("max"),
            ],
        )?
        .project(vec![
            when(col("count").is_null(), lit(0i64)).otherwise(col("count"))?.alias("count"),
            col("total"),
            col("min"),
            col("max"),
        ])
}

/// The key of a view's `GROUP BY`.
fn view_key(group: &Expr) -> Result<ViewKey, SqlError> {
    match group {
        Expr::Column(c) if c.name == "customer" => Ok(ViewKey::Customer),
        Expr::Column(c) if c.name == "category" => Ok(ViewKey::Category),
        Expr::ScalarFunction(f) if f.name() == "date_trunc" => match f.args.as_slice() {
            [Expr::Literal(unit, _), Expr::Column(c)] if c.name == "ts" => {
                match unit.to_string().to_lowercase().as_str() {
                    "hour" => Ok(ViewKey::Hour),
                    "day" => Ok(ViewKey::Day),
                    other => Err(SqlError::Unsupported(format!("a view grouped by date_trunc('{other}', ts)"))),
                }
            }
            _ => Err(SqlError::Unsupported(format!("a view grouped by {group}"))),
        },
        other => Err(SqlError::Unsupported(format!(
            "a view grouped by {other} (customer, category, date_trunc('hour' | 'day', ts) are kept)"
        ))),
    }
}

/// An aggregate of the view, as an expression over its groups' columns.
fn from_groups(aggregate_expr: &Expr) -> Result<Expr, SqlError> {
    let expr = match aggregate_expr {
        Expr::Alias(alias) => alias.expr.as_ref(),
        other => other,
    };
    let Expr::AggregateFunction(AggregateFunction { func, params }) = expr else {
        return Err(SqlError::Unsupported(format!("{expr} in a view's aggregation")));
    };
    if params.distinct || params.filter.is_some() || !params.order_by.is_empty() {
        return Err(SqlError::Unsupported(format!("{expr} in a view (DISTINCT, FILTER, ORDER BY)")));
    }
    let never_null = |e: &Expr| match e {
        Expr::Literal(v, _) => !v.is_null(),
        Expr::Column(c) => matches!(c.name.as_str(), "amount" | "customer" | "id"),
        _ => false,
    };
    let of_amount = |e: &Expr| matches!(e, Expr::Column(c) if c.name == "amount");
    match (func.name(), params.args.as_slice()) {
        ("count", []) => Ok(col("count")),
        ("count", [arg]) if never_null(arg) => Ok(col("count")),
        ("sum", [arg]) if of_amount(arg) => Ok(col("total")),
        ("min", [arg]) if of_amount(arg) => Ok(col("min")),
        ("max", [arg]) if of_amount(arg) => Ok(col("max")),
        ("avg", [arg]) if of_amount(arg) => {
            Ok(Expr::ScalarFunction(datafusion::logical_expr::expr::ScalarFunction::new_udf(
                super::functions::lambda_avg(),
                vec![col("total"), col("count")],
            )))
        }
        (name, _) => Err(SqlError::Unsupported(format!(
            "{expr} in a view (count(*), and sum, min, max, avg of amount are kept; not {name})"
        ))),
    }
}

/// `predicate` with its columns named without their relation (the filter is planned again
/// on every worker, over `transactions` whatever alias the view gave it).
fn unqualified(predicate: Expr) -> Result<Expr, SqlError> {
    predicate
        .transform_up(|e| match e {
            Expr::Column(c) if c.relation.is_some() => {
                Ok(Transformed::yes(Expr::Column(datafusion::common::Column::new_unqualified(c.name))))
            }
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
        .map_err(|e| SqlError::Internal(e.to_string()))
}

/// An expression as SQL text.
fn sql_text(expr: Expr) -> Result<String, SqlError> {
    datafusion::sql::unparser::expr_to_sql(&expr)
        .map(|ast| ast.to_string())
        .map_err(|e| SqlError::Unsupported(format!("a filter that cannot be kept ({e})")))
}

#[cfg(test)]
mod tests {
    use super::super::builtin;
    use super::super::context::session;

    fn planned(sql: &str) -> super::Planned {
        let context = session("topic", 2, 1).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let state = context.state();
            let plan = state.create_logical_plan(sql).await.unwrap();
            let optimized = state.optimize(&plan).unwrap();
            super::plan(1, plan, &optimized, 2).unwrap()
        })
    }

    #[test]
    fn every_built_in_definition_is_served_by_its_relation_with_its_columns() {
        let context = session("topic", 2, 1).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(builtin::check(&context.state(), 2)).unwrap();
    }

    #[test]
    fn a_view_of_a_built_ins_shape_keeps_nothing_of_its_own() {
        for sql in [
            "SELECT customer, sum(amount) AS s, avg(amount) AS a, max(amount) FROM transactions GROUP BY customer",
            "SELECT t.category, count(*) FROM transactions t GROUP BY t.category HAVING count(*) > 2",
            "SELECT date_trunc('hour', ts) AS h, count(*) FROM transactions WHERE ts IS NOT NULL GROUP BY 1",
            "SELECT count(DISTINCT customer), sum(amount) FROM transactions",
        ] {
            assert!(planned(sql).maintained.is_none(), "{sql}");
        }
    }

    #[test]
    fn a_view_the_built_ins_cannot_give_is_kept_apart() {
        for sql in [
            // a filter; min of a category; the hours of no time; count(DISTINCT) of a category
            "SELECT customer, sum(amount) FROM transactions WHERE amount > 1 GROUP BY customer",
            "SELECT category, min(amount) FROM transactions GROUP BY category",
            "SELECT date_trunc('hour', ts), count(*) FROM transactions GROUP BY 1",
            "SELECT customer, count(DISTINCT category) FROM transactions GROUP BY customer",
        ] {
            assert!(planned(sql).maintained.is_some(), "{sql}");
        }
    }
}
