//! The built-in views, as SQL, in one place — and the arrangement that serves any view of
//! their shape.
//!
//! The workshop's views are aggregations of the live transactions. Each is defined here by its
//! `SELECT`; what keeps it is the operator the dataflow has for a plan of that shape (the
//! amounts of each customer, the totals by category, hour and overall: [`crate::dataflow`]),
//! built once in the main dataflow and read as the relation of the same name. The engine
//! plans every definition when it starts and refuses to start if one is not of a shape its
//! relation serves, with the relation's columns ([`check`]); the tests compare each built-in
//! with DataFusion evaluating its definition over the transactions at the same time.
//!
//! `CREATE VIEW` asks the same question of every view it plans ([`served`]): an aggregation of
//! all the transactions, grouped as a built-in is, whose aggregates that built-in's columns
//! give, is read from its arrangement — nothing new is kept, nothing is backfilled, as
//! Materialize reads a view from an index it already has:
//!
//! ```text
//! CREATE VIEW spend AS SELECT customer, sum(amount) AS s, avg(amount) AS a FROM transactions GROUP BY customer
//! planned:  Projection ← Aggregate(customer; sum(amount), avg(amount)) ← transactions
//! read:     Projection ← Projection(customer, total AS sum(amount), lambda_avg(total, count) AS avg(amount)) ← customers
//! ```
//!
//! | grouped by | below it | aggregates it can give | relation |
//! |---|---|---|---|
//! | `customer` | nothing | `count(*)`, `sum`, `min`, `max`, `avg` of `amount` | `customers` |
//! | `category` | nothing | `count(*)`, `sum`, `avg` of `amount` | `categories` |
//! | `date_trunc('hour', ts)` | `WHERE ts IS NOT NULL` (the hours of transactions with a time) | `count(*)`, `sum`, `avg` of `amount` | `hourly` |
//! | nothing | nothing | `count(*)`, `sum`, `avg` of `amount`, `count(DISTINCT customer)` | `overall` |
//!
//! Any other aggregation (a filter, another key, another aggregate) is kept by a view of its own.

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::expr::{AggregateFunction, ScalarFunction};
use datafusion::logical_expr::{col, lit, when, Aggregate, Cast, Expr, LogicalPlan, LogicalPlanBuilder, Projection};

use super::table::LiveTable;
use super::SqlError;
use crate::compute::relation::Relation;

/// The built-in views and their definitions.
pub const VIEWS: [(Relation, &str); 4] = [
    (
        Relation::Customers,
        "SELECT customer, sum(amount) AS total, count(*) AS count, min(amount) AS min, max(amount) AS max, \
         CAST(avg(amount) AS numeric(38, 2)) AS avg FROM transactions GROUP BY customer",
    ),
    (
        Relation::Categories,
        "SELECT category, sum(amount) AS total, count(*) AS count, CAST(avg(amount) AS numeric(38, 2)) AS avg \
         FROM transactions GROUP BY category",
    ),
    (
        Relation::Hourly,
        "SELECT date_trunc('hour', ts) AS hour, sum(amount) AS total, count(*) AS count, \
         CAST(avg(amount) AS numeric(38, 2)) AS avg FROM transactions WHERE ts IS NOT NULL GROUP BY date_trunc('hour', ts)",
    ),
    (
        Relation::Overall,
        "SELECT coalesce(sum(amount), 0) AS total, count(*) AS count, count(DISTINCT customer) AS customers, \
         CAST(avg(amount) AS numeric(38, 2)) AS avg FROM transactions",
    ),
];

/// The definition of built-in view `relation`, if it is one.
pub fn definition(relation: Relation) -> Option<&'static str> {
    VIEWS.iter().find(|(r, _)| *r == relation).map(|(_, sql)| *sql)
}

/// The built-in relation that serves `aggregate` (an aggregation of the transactions), and the
/// aggregation's columns read from it — a plan of the aggregation's own shape (its columns'
/// names and qualifiers), which the plan above it reads; `None` when no built-in serves it.
pub fn served(aggregate: &Aggregate, workers: usize) -> Result<Option<(Relation, LogicalPlan)>, SqlError> {
    let Some(relation) = relation_of(aggregate) else { return Ok(None) };
    let mut exprs: Vec<Expr> = aggregate.group_expr.iter().map(|_| col(relation.columns()[0].0)).collect();
    for aggregate_expr in &aggregate.aggr_expr {
        match column_of(relation, aggregate_expr) {
            Some(expr) => exprs.push(expr),
            None => return Ok(None),
        }
    }
    let internal = |e: datafusion::error::DataFusionError| SqlError::Internal(e.to_string());
    let table = LiveTable::built_in(relation, "", workers);
    let types: Vec<_> = relation.columns().iter().map(|(name, ty)| (*name, ty.arrow())).collect();
    let scan = LogicalPlanBuilder::scan(relation.name(), provider_as_source(Arc::new(table)), None)
        .and_then(LogicalPlanBuilder::build)
        .map_err(internal)?;
    let exprs: Vec<Expr> = exprs
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let (qualifier, field) = aggregate.schema.qualified_field(i);
            let from = match &e {
                Expr::Column(c) => types.iter().find(|(n, _)| *n == c.name).map(|(_, t)| t.clone()),
                _ => None,
            };
            let e = match from {
                Some(from) if from != *field.data_type() => {
                    Expr::Cast(Cast::new(Box::new(e), field.data_type().clone()))
                }
                _ => e,
            };
            e.alias_qualified(qualifier.cloned(), field.name())
        })
        .collect();
    let projection =
        Projection::try_new_with_schema(exprs, Arc::new(scan), Arc::clone(&aggregate.schema)).map_err(internal)?;
    Ok(Some((relation, LogicalPlan::Projection(projection))))
}

/// The built-in grouped as `aggregate` is, over what it aggregates, if one is.
fn relation_of(aggregate: &Aggregate) -> Option<Relation> {
    let relation = match aggregate.group_expr.as_slice() {
        [] => Relation::Overall,
        [Expr::Column(c)] if c.name == "customer" => Relation::Customers,
        [Expr::Column(c)] if c.name == "category" => Relation::Categories,
        [Expr::ScalarFunction(f)] if f.name() == "date_trunc" => match f.args.as_slice() {
            [Expr::Literal(unit, _), Expr::Column(c)]
                if c.name == "ts" && unit.to_string().eq_ignore_ascii_case("hour") =>
            {
                Relation::Hourly
            }
            _ => return None,
        },
        _ => return None,
    };
    // Below the aggregation: all the transactions (the hours: those with a time).
    let predicates = transactions_filtered(aggregate).ok()?;
    let has_time =
        |p: &Expr| matches!(p, Expr::IsNotNull(e) if matches!(e.as_ref(), Expr::Column(c) if c.name == "ts"));
    match (relation, predicates.as_slice()) {
        (Relation::Hourly, [p]) if has_time(p) => Some(relation),
        (Relation::Hourly, _) => None,
        (_, []) => Some(relation),
        _ => None,
    }
}

/// The predicates that the transactions an aggregation reads pass (of its filters, and those
/// pushed into its scan), if what is below it is the transactions filtered — through aliases
/// and projections of columns; else the first other operator met.
pub fn transactions_filtered(aggregate: &Aggregate) -> Result<Vec<Expr>, &LogicalPlan> {
    let mut input = aggregate.input.as_ref();
    let mut predicates = Vec::new();
    loop {
        match input {
            LogicalPlan::Filter(filter) => {
                predicates.push(filter.predicate.clone());
                input = filter.input.as_ref();
            }
            LogicalPlan::SubqueryAlias(alias) => input = alias.input.as_ref(),
            LogicalPlan::Projection(projection) if projection.expr.iter().all(|e| matches!(e, Expr::Column(_))) => {
                input = projection.input.as_ref()
            }
            LogicalPlan::TableScan(scan) if scan.table_name.table() == "transactions" => {
                predicates.extend(scan.filters.iter().cloned());
                return Ok(predicates);
            }
            other => return Err(other),
        }
    }
}

/// An aggregate as an expression over `relation`'s columns, if they give it.
fn column_of(relation: Relation, aggregate_expr: &Expr) -> Option<Expr> {
    let expr = match aggregate_expr {
        Expr::Alias(alias) => alias.expr.as_ref(),
        other => other,
    };
    let Expr::AggregateFunction(AggregateFunction { func, params }) = expr else { return None };
    if params.filter.is_some() || !params.order_by.is_empty() {
        return None;
    }
    let column = |e: &Expr, name: &str| matches!(e, Expr::Column(c) if c.name == name);
    let never_null = |e: &Expr| match e {
        Expr::Literal(v, _) => !v.is_null(),
        Expr::Column(c) => matches!(c.name.as_str(), "amount" | "customer" | "id"),
        _ => false,
    };
    let avg = || {
        Expr::ScalarFunction(ScalarFunction::new_udf(super::functions::lambda_avg(), vec![col("total"), col("count")]))
    };
    match (func.name(), params.args.as_slice(), params.distinct) {
        ("count", [], false) => Some(col("count")),
        ("count", [arg], false) if never_null(arg) => Some(col("count")),
        ("count", [arg], true) if relation == Relation::Overall && column(arg, "customer") => Some(col("customers")),
        // The one row of no transactions: its sum is NULL (`overall` says 0).
        ("sum", [arg], false) if column(arg, "amount") && relation == Relation::Overall => {
            when(col("count").eq(lit(0i64)), lit(datafusion::common::ScalarValue::Null)).otherwise(col("total")).ok()
        }
        ("sum", [arg], false) if column(arg, "amount") => Some(col("total")),
        ("min", [arg], _) if column(arg, "amount") && relation == Relation::Customers => Some(col("min")),
        ("max", [arg], _) if column(arg, "amount") && relation == Relation::Customers => Some(col("max")),
        ("avg", [arg], false) if column(arg, "amount") => Some(avg()),
        _ => None,
    }
}

/// Plans every built-in view's definition and checks that its relation serves it, with the
/// relation's columns (names and types) — so that what the relation holds is what its SQL
/// says.
pub async fn check(state: &datafusion::execution::session_state::SessionState, workers: usize) -> anyhow::Result<()> {
    for (relation, sql) in VIEWS {
        let plan = state
            .create_logical_plan(sql)
            .await
            .map_err(|e| anyhow::anyhow!("the built-in view {} does not plan: {e}", relation.name()))?;
        let mut aggregates = Vec::new();
        plan.apply(|node| {
            if let LogicalPlan::Aggregate(aggregate) = node {
                aggregates.push(aggregate.clone());
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        let served = match aggregates.as_slice() {
            [aggregate] => served(aggregate, workers).map_err(|e| anyhow::anyhow!("{e}"))?.map(|(r, _)| r),
            _ => None,
        };
        anyhow::ensure!(
            served == Some(relation),
            "the built-in view {} is defined by a plan its arrangement does not serve",
            relation.name()
        );
        let given: Vec<_> = plan.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
        let kept: Vec<_> = relation.columns().iter().map(|(n, t)| (n.to_string(), t.arrow())).collect();
        anyhow::ensure!(
            given == kept,
            "the built-in view {}'s definition gives the columns {given:?}, its relation {kept:?}",
            relation.name()
        );
    }
    Ok(())
}
