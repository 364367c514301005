//! A view's `SELECT` compiled into the plan every worker builds its dataflow from
//! ([`RowPlan`], rendered by [`crate::dataflow::render`]), from DataFusion's optimized logical
//! plan — Arroyo and Materialize plan their maintained views the same way.
//!
//! The dataflow maintains the plan up to its topmost aggregation (or the whole plan, without
//! one); what is above it — the select list, `HAVING`, an `ORDER BY` — DataFusion evaluates
//! over the maintained rows when the view is read, as it does for every view:
//!
//! ```text
//! CREATE VIEW spend_by_city AS SELECT i.city, sum(t.amount) AS total, avg(t.amount) AS mean
//!   FROM transactions t JOIN customer_info i ON t.customer = i.customer GROUP BY i.city
//! optimized:  Projection ← Aggregate(i.city; sum(t.amount), avg(t.amount)) ← Join(t.customer = i.customer) ← …
//! kept:       Reduce(city; sum(amount), sum(amount), count(amount)) ← Join ← Transactions, Table
//! read:       Projection ← Projection(c0 AS city, c1 AS sum(..), lambda_avg(c2, c3) AS avg(..)) ← the view's rows
//! ```
//!
//! | DataFusion | compiled |
//! |---|---|
//! | `TableScan` of `transactions`, a table, a compiled view (with its pushed filters) | `Transactions`, `Table`, `View` |
//! | `Filter`, `Projection`, `SubqueryAlias` | `Filter`, `Map`, nothing |
//! | `Join` on equalities, inner or left (a left join without other conditions) | `Join` |
//! | `Join` of kind `LeftSemi` on equalities | `Join` with the right side's distinct keys, then `Map` to the left columns |
//! | `Aggregate` with `count`, `count(DISTINCT)`, `sum`, `min`, `max` (and `avg` at the top) | `Reduce` |
//! | `Union` (`UNION ALL`), `Distinct` | `Union`, `Distinct` |
//! | `Sort` with a fetch, `Limit` over a `Sort` (`ORDER BY … LIMIT k OFFSET n`) | `TopK` of one group |
//! | `Window` of `row_number() OVER (PARTITION BY … ORDER BY …)` under a filter bounding it (`WHERE rn <= k`) | `TopK` per partition, with the rank |
//! | expressions: columns, constants, comparisons, `AND`/`OR`/`NOT`, `IS [NOT] NULL`, `BETWEEN`, `CASE WHEN … END`, `IN (…)`, `+ - * / %` of integers and amounts, `date_trunc('second' \| 'minute' \| 'hour' \| 'day' \| 'week', ts)`, `date_bin(interval, ts[, origin])`, casts between the same types | `Scalar` |
//!
//! Anything else is refused (0A000), naming it; a join without an equality (which would keep
//! every pair) is refused with that reason.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::DFSchema;
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{col, Expr, FetchType, JoinType, LogicalPlan, LogicalPlanBuilder, Projection, SkipType};

use super::joins::{reduce, unique_on};
use super::scalars::{is_predicate, scalar};
use super::table::LiveTable;
use super::top_k::{rank_bound, RankBound};
use super::SqlError;
use crate::compute::columns::ColumnType;
use crate::compute::plan::{Aggregate, AggregateFunc, RowPlan, Scalar, SortKey};
use crate::compute::relation::Relation;

/// A view compiled: what the workers maintain, and what a read of it runs.
pub struct Compiled {
    /// The rows the dataflow keeps.
    pub plan: RowPlan,
    /// A read of the view: its plan over the kept rows.
    pub read: LogicalPlan,
}

/// Compiles view `id`'s optimized plan; its rows are read from `workers` workers.
pub fn compile(id: u64, plan: &LogicalPlan, workers: usize) -> Result<Compiled, SqlError> {
    // The topmost aggregation, if only projections, filters, sorts and limits are above it.
    let mut top = plan;
    loop {
        match top {
            LogicalPlan::Projection(p) => top = p.input.as_ref(),
            LogicalPlan::Filter(f) => top = f.input.as_ref(),
            LogicalPlan::Sort(s) => top = s.input.as_ref(),
            LogicalPlan::Limit(l) => top = l.input.as_ref(),
            LogicalPlan::SubqueryAlias(a) => top = a.input.as_ref(),
            _ => break,
        }
    }
    if let LogicalPlan::Aggregate(aggregate) = top {
        let (kept, columns, exprs) = aggregation(aggregate, true)?;
        let scan = rows_scan(id, &columns, workers)?;
        let exprs: Vec<Expr> = exprs
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let (qualifier, field) = aggregate.schema.qualified_field(i);
                cast_to(e, &columns, field.data_type()).alias_qualified(qualifier.cloned(), field.name())
            })
            .collect();
        let replacement = Projection::try_new_with_schema(exprs, Arc::new(scan), Arc::clone(&aggregate.schema))
            .map_err(|e| SqlError::Internal(e.to_string()))?;
        let replacement = LogicalPlan::Projection(replacement);
        let mut replaced = false;
        let read = plan
            .clone()
            .transform_down(|node| match node {
                LogicalPlan::Aggregate(_) if !replaced => {
                    replaced = true;
                    Ok(Transformed::new(replacement.clone(), true, TreeNodeRecursion::Jump))
                }
                other => Ok(Transformed::no(other)),
            })
            .map_err(|e| SqlError::Internal(e.to_string()))?
            .data;
        return Ok(Compiled { plan: kept, read });
    }
    let (kept, types) = rows(plan)?;
    let columns: Vec<(String, ColumnType)> = types.iter().enumerate().map(|(i, t)| (format!("c{i}"), *t)).collect();
    let scan = rows_scan(id, &columns, workers)?;
    let exprs: Vec<Expr> = (0..columns.len())
        .map(|i| {
            let (qualifier, field) = plan.schema().qualified_field(i);
            cast_to(col(format!("c{i}")), &columns, field.data_type()).alias_qualified(qualifier.cloned(), field.name())
        })
        .collect();
    let read = Projection::try_new_with_schema(exprs, Arc::new(scan), Arc::clone(plan.schema()))
        .map_err(|e| SqlError::Internal(e.to_string()))?;
    Ok(Compiled { plan: kept, read: LogicalPlan::Projection(read) })
}

/// A column of the kept rows as the type the plan gives it (a sum DataFusion widens to
/// `Decimal256` is kept as cents, exactly); any other expression as it is.
fn cast_to(expr: Expr, columns: &[(String, ColumnType)], to: &DataType) -> Expr {
    let kept = match &expr {
        Expr::Column(c) => columns.iter().find(|(n, _)| *n == c.name).map(|(_, t)| t.arrow()),
        _ => None,
    };
    match kept {
        Some(from) if from != *to => Expr::Cast(datafusion::logical_expr::Cast::new(Box::new(expr), to.clone())),
        _ => expr,
    }
}

/// A scan of view `id`'s kept rows, with these columns.
fn rows_scan(id: u64, columns: &[(String, ColumnType)], workers: usize) -> Result<LogicalPlan, SqlError> {
    let table = LiveTable::rows(id, columns.to_vec(), workers);
    LogicalPlanBuilder::scan(format!("view_{id}_rows"), provider_as_source(Arc::new(table)), None)
        .and_then(LogicalPlanBuilder::build)
        .map_err(|e| SqlError::Internal(e.to_string()))
}

/// The rows kept for the topmost aggregation, their columns, and its columns over them.
type TopAggregate = (RowPlan, Vec<(String, ColumnType)>, Vec<Expr>);

/// An aggregation: the rows kept (its keys, then each aggregate — `avg`, at the `top` only, as
/// a sum and a count), their columns, and the aggregation's columns as expressions over them.
fn aggregation(aggregate: &datafusion::logical_expr::Aggregate, top: bool) -> Result<TopAggregate, SqlError> {
    let (input, input_types) = rows(&aggregate.input)?;
    let schema = aggregate.input.schema();
    let mut columns: Vec<(String, ColumnType)> = Vec::new();
    let mut exprs: Vec<Expr> = Vec::new();
    let mut keys = Vec::new();
    for group in &aggregate.group_expr {
        let (key, ty) = scalar(group, schema, &input_types)?;
        keys.push(key);
        let name = format!("c{}", columns.len());
        exprs.push(col(&name));
        columns.push((name, ty));
    }
    let mut aggregates = Vec::new();
    for expr in &aggregate.aggr_expr {
        let (func, arg, ty) = aggregate_of(expr, schema, &input_types)?;
        if func == "avg" {
            if !top {
                return Err(SqlError::Unsupported(format!("{expr} below a view's last aggregation")));
            }
            if ty != ColumnType::Money {
                return Err(SqlError::Unsupported(format!("{expr} in a view: avg of amounts only")));
            }
            aggregates.push(Aggregate { func: AggregateFunc::Sum, arg: arg.clone() });
            aggregates.push(Aggregate { func: AggregateFunc::Count, arg });
            let (total, count) = (format!("c{}", columns.len()), format!("c{}", columns.len() + 1));
            exprs.push(Expr::ScalarFunction(datafusion::logical_expr::expr::ScalarFunction::new_udf(
                super::functions::lambda_avg(),
                vec![col(&total), col(&count)],
            )));
            columns.push((total, ColumnType::Money));
            columns.push((count, ColumnType::Int));
            continue;
        }
        let (func, ty) = simple_aggregate(&func, ty, expr)?;
        aggregates.push(Aggregate { func, arg });
        let name = format!("c{}", columns.len());
        exprs.push(col(&name));
        columns.push((name, ty));
    }
    Ok((reduce(input, keys, aggregates), columns, exprs))
}

/// An aggregate other than `avg`, and its value's type.
fn simple_aggregate(func: &str, arg: ColumnType, expr: &Expr) -> Result<(AggregateFunc, ColumnType), SqlError> {
    match func {
        "count" => Ok((AggregateFunc::Count, ColumnType::Int)),
        "count_distinct" => Ok((AggregateFunc::CountDistinct, ColumnType::Int)),
        "sum" if matches!(arg, ColumnType::Money | ColumnType::Int) => Ok((AggregateFunc::Sum, arg)),
        "min" => Ok((AggregateFunc::Min, arg)),
        "max" => Ok((AggregateFunc::Max, arg)),
        _ => Err(SqlError::Unsupported(format!(
            "{expr} in a view (count, count(DISTINCT), sum, min, max and avg are maintained)"
        ))),
    }
}

/// An aggregate expression: its function (`count_distinct` for `count(DISTINCT x)`), its
/// argument (none for `count(*)`) and the argument's type.
fn aggregate_of(
    expr: &Expr,
    schema: &DFSchema,
    types: &[ColumnType],
) -> Result<(String, Option<Scalar>, ColumnType), SqlError> {
    let inner = match expr {
        Expr::Alias(alias) => alias.expr.as_ref(),
        other => other,
    };
    let Expr::AggregateFunction(AggregateFunction { func, params }) = inner else {
        return Err(SqlError::Unsupported(format!("{expr} in a view's aggregation")));
    };
    if params.filter.is_some() || !params.order_by.is_empty() {
        return Err(SqlError::Unsupported(format!("{expr} in a view (FILTER, ORDER BY)")));
    }
    let name = func.name().to_lowercase();
    let (arg, ty) = match params.args.as_slice() {
        [] => (None, ColumnType::Int),
        // `count(*)` is planned as `count(1)`.
        [Expr::Literal(value, _)] if name == "count" && !value.is_null() => (None, ColumnType::Int),
        [arg] => {
            let (arg, ty) = scalar(arg, schema, types)?;
            (Some(arg), ty)
        }
        _ => return Err(SqlError::Unsupported(format!("{expr} in a view"))),
    };
    let name = match (name.as_str(), params.distinct) {
        ("count", true) => "count_distinct".to_owned(),
        (_, true) => return Err(SqlError::Unsupported(format!("{expr} in a view (DISTINCT but in count)"))),
        _ => name,
    };
    Ok((name, arg, ty))
}

/// The rows of `plan` as the dataflow computes them, and their columns' types.
fn rows(plan: &LogicalPlan) -> Result<(RowPlan, Vec<ColumnType>), SqlError> {
    rows_bounded(plan, Vec::new())
}

/// The rows of `plan`, with what a filter above says of one of its columns.
fn rows_bounded(plan: &LogicalPlan, bound: RankBound) -> Result<(RowPlan, Vec<ColumnType>), SqlError> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            if scan.fetch.is_some() {
                return Err(SqlError::Unsupported("LIMIT inside a view".into()));
            }
            let provider = source_as_provider(&scan.source).map_err(|e| SqlError::Internal(e.to_string()))?;
            let Some(table) = provider.as_ref().downcast_ref::<LiveTable>() else {
                return Err(SqlError::Unsupported(format!("a view that reads {}", scan.table_name)));
            };
            let all: Vec<usize> = (0..table.columns().len()).collect();
            let columns = scan.projection.clone().unwrap_or(all);
            let types: Vec<ColumnType> = columns.iter().map(|c| table.columns()[*c].1).collect();
            let rows = match table.relation() {
                Relation::Transactions => {
                    if columns.contains(&0) {
                        return Err(SqlError::Unsupported(
                            "a view that joins or keeps transactions.id (not carried into views yet)".into(),
                        ));
                    }
                    RowPlan::Transactions { columns }
                }
                Relation::Table(id) => RowPlan::Table { id, columns },
                Relation::Rows(id) => RowPlan::View { id, columns },
                other => {
                    return Err(SqlError::Unsupported(format!(
                        "a view that joins or compiles over {} (read transactions, tables and compiled views)",
                        match other {
                            Relation::Groups(id) => format!("view {id}'s groups"),
                            other => other.name().to_owned(),
                        }
                    )))
                }
            };
            match scan.filters.iter().cloned().reduce(Expr::and) {
                None => Ok((rows, types)),
                Some(predicate) => {
                    let schema = scan.projected_schema.as_ref();
                    let (predicate, _) = scalar(&predicate, schema, &types)?;
                    Ok((RowPlan::Filter { input: Box::new(rows), predicate }, types))
                }
            }
        }
        LogicalPlan::SubqueryAlias(alias) => rows_bounded(&alias.input, bound),
        LogicalPlan::Filter(filter) => {
            let bounds = rank_bound(&filter.predicate).into_iter().chain(bound).collect();
            let (input, types) = rows_bounded(&filter.input, bounds)?;
            let (predicate, _) = scalar(&filter.predicate, filter.input.schema(), &types)?;
            Ok((RowPlan::Filter { input: Box::new(input), predicate }, types))
        }
        LogicalPlan::Projection(projection) => {
            // The bounded columns, as the input's columns they show.
            let below = bound
                .into_iter()
                .filter_map(|(name, k)| {
                    let i = projection.schema.fields().iter().position(|f| *f.name() == name)?;
                    match projection.expr.get(i)?.clone().unalias() {
                        Expr::Column(c) => Some((c.name, k)),
                        _ => None,
                    }
                })
                .collect();
            let (input, input_types) = rows_bounded(&projection.input, below)?;
            let schema = projection.input.schema();
            let mut exprs = Vec::new();
            let mut types = Vec::new();
            for expr in &projection.expr {
                let (scalar, ty) = scalar(expr, schema, &input_types)?;
                if is_predicate(&scalar) {
                    return Err(SqlError::Unsupported(format!("{expr} as a view's column (a boolean)")));
                }
                exprs.push(scalar);
                types.push(ty);
            }
            Ok((RowPlan::Map { input: Box::new(input), exprs }, types))
        }
        LogicalPlan::Join(join) if join.join_type == JoinType::LeftSemi => semi_join(join),
        LogicalPlan::Join(join) => {
            let left_outer = match join.join_type {
                JoinType::Inner => false,
                JoinType::Left => true,
                other => return Err(SqlError::Unsupported(format!("{other} JOIN in a view (inner and left)"))),
            };
            if join.on.is_empty() {
                return Err(SqlError::Unsupported(
                    "a join without an equality in a view: it would keep every pair of rows (unbounded state)".into(),
                ));
            }
            // A join meets at most one row of one side per key: its rows are never more than
            // the other side's (no join of two sides with many rows per key, which grows as
            // their product).
            let (left_on, right_on): (Vec<Expr>, Vec<Expr>) = join.on.iter().cloned().unzip();
            if !unique_on(&join.right, &right_on) && !unique_on(&join.left, &left_on) {
                return Err(SqlError::Unsupported(
                    "a join in a view whose two sides may each hold many rows of one key (its rows would grow as \
                     their product): join a table on its primary key, or a view grouped by the join's columns"
                        .into(),
                ));
            }
            let ((left, left_types), (right, right_types), left_keys, right_keys) = join_sides(join)?;
            let right_width = right_types.len();
            let types: Vec<ColumnType> = left_types.into_iter().chain(right_types).collect();
            let joined = RowPlan::Join {
                left: Box::new(left),
                right: Box::new(right),
                left_keys,
                right_keys,
                left_outer,
                right_width,
            };
            match &join.filter {
                None => Ok((joined, types)),
                Some(_) if left_outer => {
                    Err(SqlError::Unsupported("a left join with conditions besides equalities in a view".into()))
                }
                Some(filter) => {
                    let (predicate, _) = scalar(filter, &join.schema, &types)?;
                    Ok((RowPlan::Filter { input: Box::new(joined), predicate }, types))
                }
            }
        }
        LogicalPlan::Aggregate(aggregate) => {
            let (kept, columns, _) = aggregation(aggregate, false)?;
            Ok((kept, columns.into_iter().map(|(_, ty)| ty).collect()))
        }
        LogicalPlan::Union(union) => {
            let mut inputs = Vec::new();
            let mut types = None;
            for input in &union.inputs {
                let (rows, input_types) = rows(input)?;
                if types.as_ref().is_some_and(|t| *t != input_types) {
                    return Err(SqlError::Unsupported("a UNION of columns of different types in a view".into()));
                }
                types = Some(input_types);
                inputs.push(rows);
            }
            Ok((RowPlan::Union(inputs), types.unwrap_or_default()))
        }
        LogicalPlan::Distinct(datafusion::logical_expr::Distinct::All(input)) => {
            let (input, types) = rows(input)?;
            Ok((RowPlan::Distinct(Box::new(input)), types))
        }
        // The order of a view's rows is not kept (a read orders them); what a limit keeps is.
        LogicalPlan::Sort(sort) => match sort.fetch {
            None => rows(&sort.input),
            Some(limit) => top_k(sort, 0, limit),
        },
        LogicalPlan::Limit(limit) => {
            let (Ok(SkipType::Literal(offset)), Ok(FetchType::Literal(fetch))) =
                (limit.get_skip_type(), limit.get_fetch_type())
            else {
                return Err(SqlError::Unsupported("a LIMIT or OFFSET that is not a constant in a view".into()));
            };
            let LogicalPlan::Sort(sort) = limit.input.as_ref() else {
                return Err(SqlError::Unsupported(
                    "LIMIT without ORDER BY in a view (which rows it keeps would be arbitrary)".into(),
                ));
            };
            top_k(sort, offset, fetch.unwrap_or(usize::MAX))
        }
        LogicalPlan::Window(window) => {
            let refused = || {
                SqlError::Unsupported(
                    "a window function in a view: row_number() OVER (PARTITION BY … ORDER BY …) bounded by a \
                     filter above it (WHERE rn <= k) is maintained, as a top-k per partition"
                        .into(),
                )
            };
            let input_width = window.input.schema().fields().len();
            let [expr] = window.window_expr.as_slice() else { return Err(refused()) };
            let Some(ranked) = window.schema.fields().get(input_width).map(|f| f.name().clone()) else {
                return Err(refused());
            };
            let Some(limit) = bound.iter().filter(|(name, _)| *name == ranked).map(|(_, k)| *k).min() else {
                return Err(refused());
            };
            let Expr::WindowFunction(function) = expr.clone().unalias() else { return Err(refused()) };
            let params = &function.params;
            if function.fun.name() != "row_number" || !params.args.is_empty() || params.filter.is_some() {
                return Err(refused());
            }
            let (input, mut types) = rows(&window.input)?;
            let schema = window.input.schema();
            let keys = params
                .partition_by
                .iter()
                .map(|e| Ok(scalar(e, schema, &types)?.0))
                .collect::<Result<Vec<_>, SqlError>>()?;
            let order = sort_keys(&params.order_by, schema, &types)?;
            types.push(ColumnType::Int);
            Ok((RowPlan::TopK { input: Box::new(input), keys, order, offset: 0, limit, rank: true }, types))
        }
        other => Err(SqlError::Unsupported(format!(
            "{} in a view",
            other.display().to_string().split([':', ' ']).next().unwrap_or("an operator")
        ))),
    }
}

/// A semi join — the left rows whose key the right side has, each once — as an inner join
/// of the left rows with the right side's distinct keys, keeping the left columns (DataFusion
/// plans one for a join whose right side is only tested).
fn semi_join(join: &datafusion::logical_expr::Join) -> Result<(RowPlan, Vec<ColumnType>), SqlError> {
    if join.on.is_empty() || join.filter.is_some() {
        return Err(SqlError::Unsupported(
            "a semi join (EXISTS, IN) in a view with conditions besides equalities".into(),
        ));
    }
    let ((left, left_types), (right, _), left_keys, right_keys) = join_sides(join)?;
    let width = right_keys.len();
    let keys = RowPlan::Distinct(Box::new(RowPlan::Map { input: Box::new(right), exprs: right_keys }));
    let left_width = left_types.len();
    let joined = RowPlan::Join {
        left: Box::new(left),
        right: Box::new(keys),
        left_keys,
        right_keys: (0..width).map(Scalar::Column).collect(),
        left_outer: false,
        right_width: width,
    };
    let exprs = (0..left_width).map(Scalar::Column).collect();
    Ok((RowPlan::Map { input: Box::new(joined), exprs }, left_types))
}

/// The rows of both sides of `join`, and each side's key (its equalities), over them.
type JoinSides = ((RowPlan, Vec<ColumnType>), (RowPlan, Vec<ColumnType>), Vec<Scalar>, Vec<Scalar>);

/// Both sides of `join` and their keys; refuses a join where NULL equals NULL.
fn join_sides(join: &datafusion::logical_expr::Join) -> Result<JoinSides, SqlError> {
    if join.null_equality != datafusion::common::NullEquality::NullEqualsNothing {
        return Err(SqlError::Unsupported("a join where NULL equals NULL in a view".into()));
    }
    let (left, left_types) = rows(&join.left)?;
    let (right, right_types) = rows(&join.right)?;
    let (mut left_keys, mut right_keys) = (Vec::new(), Vec::new());
    for (l, r) in &join.on {
        left_keys.push(scalar(l, join.left.schema(), &left_types)?.0);
        right_keys.push(scalar(r, join.right.schema(), &right_types)?.0);
    }
    Ok(((left, left_types), (right, right_types), left_keys, right_keys))
}

/// The first rows of `sort`'s input in its order: `limit` of them after `offset`.
fn top_k(
    sort: &datafusion::logical_expr::Sort,
    offset: usize,
    limit: usize,
) -> Result<(RowPlan, Vec<ColumnType>), SqlError> {
    let (input, types) = rows(&sort.input)?;
    let order = sort_keys(&sort.expr, sort.input.schema(), &types)?;
    let limit = limit.min(usize::MAX - offset);
    Ok((RowPlan::TopK { input: Box::new(input), keys: Vec::new(), order, offset, limit, rank: false }, types))
}

/// An order's keys over rows of `schema`.
fn sort_keys(
    exprs: &[datafusion::logical_expr::SortExpr],
    schema: &DFSchema,
    types: &[ColumnType],
) -> Result<Vec<SortKey>, SqlError> {
    exprs
        .iter()
        .map(|s| {
            let (expr, _) = scalar(&s.expr, schema, types)?;
            Ok(SortKey { expr, descending: !s.asc, nulls_first: s.nulls_first })
        })
        .collect()
}
