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
//! | `Aggregate` with `count`, `count(DISTINCT)`, `sum`, `min`, `max` (and `avg` at the top) | `Reduce` |
//! | `Union` (`UNION ALL`), `Distinct` | `Union`, `Distinct` |
//! | `Sort` with a fetch, `Limit` over a `Sort` (`ORDER BY … LIMIT k OFFSET n`) | `TopK` of one group |
//! | `Window` of `row_number() OVER (PARTITION BY … ORDER BY …)` under a filter bounding it (`WHERE rn <= k`) | `TopK` per partition, with the rank |
//! | expressions: columns, constants, comparisons, `AND`/`OR`/`NOT`, `IS [NOT] NULL`, `BETWEEN`, `IN (…)`, `+ - * / %` of integers and amounts, `date_trunc('second' \| 'minute' \| 'hour' \| 'day' \| 'week', ts)`, `date_bin(interval, ts[, origin])`, casts between the same types | `Scalar` |
//!
//! Anything else is refused (0A000), naming it; a join without an equality (which would keep
//! every pair) is refused with that reason.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{
    col, BinaryExpr, Expr, FetchType, JoinType, LogicalPlan, LogicalPlanBuilder, Operator, Projection, SkipType,
};

use super::joins::{reduce, unique_on};
use super::table::LiveTable;
use super::SqlError;
use crate::compute::columns::{ColumnType, Owned};
use crate::compute::plan::{Aggregate, AggregateFunc, Arith, Comparison, RowPlan, Scalar, SortKey};
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
        let (kept, columns, exprs) = top_aggregate(aggregate)?;
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

/// The topmost aggregation: the rows kept (its keys, then each aggregate — `avg` as a sum and
/// a count), their columns, and the aggregation's columns as expressions over them.
fn top_aggregate(aggregate: &datafusion::logical_expr::Aggregate) -> Result<TopAggregate, SqlError> {
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

/// Columns of a plan's output (by name) that a filter above bounds: only rows where each is at
/// most its number are kept. A `row_number()` so bounded is a top-k.
type RankBound = Vec<(String, usize)>;

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
            if join.null_equality != datafusion::common::NullEquality::NullEqualsNothing {
                return Err(SqlError::Unsupported("a join where NULL equals NULL in a view".into()));
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
            let (left, left_types) = rows(&join.left)?;
            let (right, right_types) = rows(&join.right)?;
            let (mut left_keys, mut right_keys) = (Vec::new(), Vec::new());
            for (l, r) in &join.on {
                left_keys.push(scalar(l, join.left.schema(), &left_types)?.0);
                right_keys.push(scalar(r, join.right.schema(), &right_types)?.0);
            }
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
            let (input, input_types) = rows(&aggregate.input)?;
            let schema = aggregate.input.schema();
            let mut keys = Vec::new();
            let mut types = Vec::new();
            for group in &aggregate.group_expr {
                let (key, ty) = scalar(group, schema, &input_types)?;
                keys.push(key);
                types.push(ty);
            }
            let mut aggregates = Vec::new();
            for expr in &aggregate.aggr_expr {
                let (func, arg, ty) = aggregate_of(expr, schema, &input_types)?;
                if func == "avg" {
                    return Err(SqlError::Unsupported(format!("{expr} below a view's last aggregation")));
                }
                let (func, ty) = simple_aggregate(&func, ty, expr)?;
                aggregates.push(Aggregate { func, arg });
                types.push(ty);
            }
            Ok((reduce(input, keys, aggregates), types))
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

/// The bounds a predicate puts on columns (`rn <= 3`, `rn < 4`, `rn = 1`, `3 >= rn`, in a
/// conjunction).
fn rank_bound(predicate: &Expr) -> RankBound {
    let mut bounds: RankBound = Vec::new();
    for conjunct in datafusion::logical_expr::utils::split_conjunction(predicate) {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = conjunct else { continue };
        let (column, op, value) = match (bare_column(left), bare_column(right)) {
            (Some(c), None) => (c, *op, right.as_ref()),
            (None, Some(c)) => (c, op.swap().unwrap_or(*op), left.as_ref()),
            _ => continue,
        };
        let Some(n) = constant(value) else { continue };
        let at_most = match op {
            Operator::LtEq | Operator::Eq => n,
            Operator::Lt => n.saturating_sub(1),
            _ => continue,
        };
        let Ok(at_most) = usize::try_from(at_most.max(0)) else { continue };
        bounds.push((column, at_most));
    }
    bounds
}

/// The column an expression is, seen through casts.
fn bare_column(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Column(c) => Some(c.name.clone()),
        Expr::Cast(cast) => bare_column(&cast.expr),
        Expr::TryCast(cast) => bare_column(&cast.expr),
        _ => None,
    }
}

/// An integer constant, seen through casts.
fn constant(expr: &Expr) -> Option<i128> {
    match expr {
        Expr::Literal(value, _) => match value {
            ScalarValue::Int8(Some(n)) => Some((*n).into()),
            ScalarValue::Int16(Some(n)) => Some((*n).into()),
            ScalarValue::Int32(Some(n)) => Some((*n).into()),
            ScalarValue::Int64(Some(n)) => Some((*n).into()),
            ScalarValue::UInt8(Some(n)) => Some((*n).into()),
            ScalarValue::UInt16(Some(n)) => Some((*n).into()),
            ScalarValue::UInt32(Some(n)) => Some((*n).into()),
            ScalarValue::UInt64(Some(n)) => Some((*n).into()),
            _ => None,
        },
        Expr::Cast(cast) => constant(&cast.expr),
        Expr::TryCast(cast) => constant(&cast.expr),
        _ => None,
    }
}

/// Whether a scalar is a predicate (true, false or unknown), which no view column may be.
fn is_predicate(scalar: &Scalar) -> bool {
    matches!(scalar, Scalar::Compare(..) | Scalar::And(..) | Scalar::Or(..) | Scalar::Not(_) | Scalar::IsNull(_))
}

/// An expression over rows of `schema` (whose columns have `types`), and its value's type.
fn scalar(expr: &Expr, schema: &DFSchema, types: &[ColumnType]) -> Result<(Scalar, ColumnType), SqlError> {
    let unsupported = || SqlError::Unsupported(format!("{expr} in a view"));
    match expr {
        Expr::Alias(alias) => scalar(&alias.expr, schema, types),
        Expr::Column(column) => {
            let i = schema.index_of_column(column).map_err(|e| SqlError::Internal(e.to_string()))?;
            Ok((Scalar::Column(i), types[i]))
        }
        Expr::Literal(value, _) => {
            let (value, ty) = literal(value).ok_or_else(unsupported)?;
            Ok((Scalar::Literal(value), ty))
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (mut l, mut lt) = scalar(left, schema, types)?;
            let (mut r, mut rt) = scalar(right, schema, types)?;
            // An integer beside an amount (a constant or a column DataFusion left as an
            // integer-valued decimal) is compared and added as an amount; multiplied, as is.
            // (Not the sides of AND and OR: predicates, whatever their operands' types.)
            let promoted = matches!(
                op,
                Operator::Plus
                    | Operator::Minus
                    | Operator::Eq
                    | Operator::NotEq
                    | Operator::Lt
                    | Operator::LtEq
                    | Operator::Gt
                    | Operator::GtEq
            );
            if promoted {
                match (lt, rt) {
                    (ColumnType::Money, ColumnType::Int) => {
                        (r, rt) = (Scalar::IntToMoney(Box::new(r)), ColumnType::Money)
                    }
                    (ColumnType::Int, ColumnType::Money) => {
                        (l, lt) = (Scalar::IntToMoney(Box::new(l)), ColumnType::Money)
                    }
                    _ => {}
                }
            }
            let arith = |a, ty| Ok((Scalar::Arith(a, Box::new(l.clone()), Box::new(r.clone())), ty));
            match (op, lt, rt) {
                (Operator::Plus, ColumnType::Int | ColumnType::Money, _) if lt == rt => return arith(Arith::Add, lt),
                (Operator::Minus, ColumnType::Int | ColumnType::Money, _) if lt == rt => return arith(Arith::Sub, lt),
                (Operator::Multiply, ColumnType::Int, ColumnType::Int) => return arith(Arith::Mul, ColumnType::Int),
                (Operator::Multiply, ColumnType::Money, ColumnType::Int)
                | (Operator::Multiply, ColumnType::Int, ColumnType::Money) => return arith(Arith::Mul, ColumnType::Money),
                // Of integers only: a decimal without a fraction (taken as an integer) divides
                // into one with a fraction.
                (Operator::Divide, ColumnType::Int, ColumnType::Int) if integers(left, right, schema) => {
                    return arith(Arith::Div, ColumnType::Int)
                }
                (Operator::Modulo, ColumnType::Int, ColumnType::Int) if integers(left, right, schema) => {
                    return arith(Arith::Rem, ColumnType::Int)
                }
                (Operator::Plus | Operator::Minus | Operator::Multiply | Operator::Divide | Operator::Modulo, _, _) => {
                    return Err(SqlError::Unsupported(format!(
                        "{expr} in a view (+, - of integers or amounts; * of integers, or an amount by an integer; / and % of integers)"
                    )))
                }
                _ => {}
            }
            let compare = |c| Ok((Scalar::Compare(c, Box::new(l.clone()), Box::new(r.clone())), lt));
            match op {
                Operator::Eq => compare(Comparison::Eq),
                Operator::NotEq => compare(Comparison::NotEq),
                Operator::Lt => compare(Comparison::Lt),
                Operator::LtEq => compare(Comparison::LtEq),
                Operator::Gt => compare(Comparison::Gt),
                Operator::GtEq => compare(Comparison::GtEq),
                Operator::And => Ok((Scalar::And(Box::new(l), Box::new(r)), lt)),
                Operator::Or => Ok((Scalar::Or(Box::new(l), Box::new(r)), lt)),
                _ => Err(unsupported()),
            }
        }
        Expr::Not(inner) => {
            let (inner, ty) = scalar(inner, schema, types)?;
            Ok((Scalar::Not(Box::new(inner)), ty))
        }
        Expr::IsNull(inner) => {
            let (inner, ty) = scalar(inner, schema, types)?;
            Ok((Scalar::IsNull(Box::new(inner)), ty))
        }
        Expr::IsNotNull(inner) => {
            let (inner, ty) = scalar(inner, schema, types)?;
            Ok((Scalar::Not(Box::new(Scalar::IsNull(Box::new(inner)))), ty))
        }
        Expr::Between(between) => {
            let (value, ty) = scalar(&between.expr, schema, types)?;
            let (low, _) = scalar(&between.low, schema, types)?;
            let (high, _) = scalar(&between.high, schema, types)?;
            let within = Scalar::And(
                Box::new(Scalar::Compare(Comparison::GtEq, Box::new(value.clone()), Box::new(low))),
                Box::new(Scalar::Compare(Comparison::LtEq, Box::new(value), Box::new(high))),
            );
            Ok((if between.negated { Scalar::Not(Box::new(within)) } else { within }, ty))
        }
        Expr::InList(in_list) => {
            let (value, ty) = scalar(&in_list.expr, schema, types)?;
            let mut any: Option<Scalar> = None;
            for item in &in_list.list {
                let (item, _) = scalar(item, schema, types)?;
                let equal = Scalar::Compare(Comparison::Eq, Box::new(value.clone()), Box::new(item));
                any = Some(match any {
                    None => equal,
                    Some(before) => Scalar::Or(Box::new(before), Box::new(equal)),
                });
            }
            let any = any.ok_or_else(unsupported)?;
            Ok((if in_list.negated { Scalar::Not(Box::new(any)) } else { any }, ty))
        }
        Expr::Cast(datafusion::logical_expr::Cast { expr: inner, field })
        | Expr::TryCast(datafusion::logical_expr::TryCast { expr: inner, field }) => {
            let (inner, from) = scalar(inner, schema, types)?;
            match (from, column_type(field.data_type())) {
                (from, Some(to)) if from == to => Ok((inner, to)),
                // An integer as a decimal without a fraction (how DataFusion sums integers and
                // multiplies an amount by one) is the same integer.
                (ColumnType::Int, None)
                    if matches!(field.data_type(), DataType::Decimal128(_, 0) | DataType::Decimal256(_, 0)) =>
                {
                    Ok((inner, ColumnType::Int))
                }
                (ColumnType::Int, Some(ColumnType::Money)) => {
                    Ok((Scalar::IntToMoney(Box::new(inner)), ColumnType::Money))
                }
                _ => Err(unsupported()),
            }
        }
        Expr::ScalarFunction(function) if function.name() == "date_trunc" => match function.args.as_slice() {
            [Expr::Literal(unit, _), ts] => {
                // Weeks start on Mondays, as in Postgres: 1970-01-05 was one.
                let (step, origin) = match unit.to_string().trim_matches('\'').to_lowercase().as_str() {
                    "second" => (1, 0),
                    "minute" => (60, 0),
                    "hour" => (3_600, 0),
                    "day" => (86_400, 0),
                    "week" => (7 * 86_400, 4 * 86_400),
                    _ => return Err(unsupported()),
                };
                let (ts, ty) = scalar(ts, schema, types)?;
                if ty != ColumnType::Time {
                    return Err(unsupported());
                }
                Ok((Scalar::Bin { step, origin, arg: Box::new(ts) }, ColumnType::Time))
            }
            _ => Err(unsupported()),
        },
        Expr::ScalarFunction(function) if function.name() == "date_bin" => {
            let (step, ts, origin) = match function.args.as_slice() {
                [Expr::Literal(step, _), ts] => (step, ts, 0),
                [Expr::Literal(step, _), ts, Expr::Literal(origin, _)] => {
                    (step, ts, whole_seconds(origin).ok_or_else(unsupported)?)
                }
                _ => return Err(unsupported()),
            };
            let step = interval_seconds(step).filter(|s| *s > 0).ok_or_else(|| {
                SqlError::Unsupported(format!("{expr} in a view (a constant interval of whole seconds, days at most)"))
            })?;
            let (ts, ty) = scalar(ts, schema, types)?;
            if ty != ColumnType::Time {
                return Err(unsupported());
            }
            Ok((Scalar::Bin { step, origin, arg: Box::new(ts) }, ColumnType::Time))
        }
        _ => Err(unsupported()),
    }
}

/// An interval of whole seconds (no months: their length varies), in seconds.
fn interval_seconds(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 && v.nanoseconds % 1_000_000_000 == 0 => {
            i64::from(v.days).checked_mul(86_400)?.checked_add(v.nanoseconds / 1_000_000_000)
        }
        ScalarValue::IntervalDayTime(Some(v)) if v.milliseconds % 1_000 == 0 => {
            i64::from(v.days).checked_mul(86_400)?.checked_add(i64::from(v.milliseconds / 1_000))
        }
        _ => None,
    }
}

/// An instant of whole seconds, in seconds since the epoch.
fn whole_seconds(value: &ScalarValue) -> Option<i64> {
    let (ticks, per_second) = match value {
        ScalarValue::TimestampSecond(Some(t), _) => (*t, 1),
        ScalarValue::TimestampMillisecond(Some(t), _) => (*t, 1_000),
        ScalarValue::TimestampMicrosecond(Some(t), _) => (*t, 1_000_000),
        ScalarValue::TimestampNanosecond(Some(t), _) => (*t, 1_000_000_000),
        _ => return None,
    };
    (ticks % per_second == 0).then_some(ticks / per_second)
}

/// Whether both sides are integers in DataFusion's plan (not decimals).
fn integers(left: &Expr, right: &Expr, schema: &DFSchema) -> bool {
    use datafusion::logical_expr::ExprSchemable;
    [left, right].iter().all(|e| e.get_type(schema).is_ok_and(|t| t.is_integer()))
}

/// A constant as a value of the relations, with its type.
fn literal(value: &ScalarValue) -> Option<(Owned, ColumnType)> {
    Some(match value {
        ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
            (v.clone().map_or(Owned::Null, Owned::Text), ColumnType::Text)
        }
        ScalarValue::Int8(v) => (v.map_or(Owned::Null, |n| Owned::Int(n.into())), ColumnType::Int),
        ScalarValue::Int16(v) => (v.map_or(Owned::Null, |n| Owned::Int(n.into())), ColumnType::Int),
        ScalarValue::Int32(v) => (v.map_or(Owned::Null, |n| Owned::Int(n.into())), ColumnType::Int),
        ScalarValue::Int64(v) => (v.map_or(Owned::Null, Owned::Int), ColumnType::Int),
        ScalarValue::UInt8(v) => (v.map_or(Owned::Null, |n| Owned::Int(n.into())), ColumnType::Int),
        ScalarValue::UInt16(v) => (v.map_or(Owned::Null, |n| Owned::Int(n.into())), ColumnType::Int),
        ScalarValue::UInt32(v) => (v.map_or(Owned::Null, |n| Owned::Int(n.into())), ColumnType::Int),
        ScalarValue::UInt64(v) => match v {
            None => (Owned::Null, ColumnType::Int),
            Some(n) => (Owned::Int(i64::try_from(*n).ok()?), ColumnType::Int),
        },
        // A decimal without a fraction: an integer (DataFusion's for an integer beside a decimal).
        ScalarValue::Decimal128(v, _, 0) => match v {
            None => (Owned::Null, ColumnType::Int),
            Some(v) => (Owned::Int(i64::try_from(*v).ok()?), ColumnType::Int),
        },
        ScalarValue::Decimal128(v, _, scale) => {
            let cents = match v {
                None => None,
                Some(v) if *scale <= 2 => Some(v.checked_mul(10i128.checked_pow((2 - scale) as u32)?)?),
                Some(v) => {
                    let divisor = 10i128.checked_pow((scale - 2) as u32)?;
                    if v % divisor != 0 {
                        return None;
                    }
                    Some(v / divisor)
                }
            };
            (cents.map_or(Owned::Null, Owned::Cents), ColumnType::Money)
        }
        ScalarValue::TimestampSecond(v, _) => (v.map_or(Owned::Null, Owned::Seconds), ColumnType::Time),
        ScalarValue::TimestampMillisecond(v, _) => {
            (v.map_or(Owned::Null, |t| Owned::Seconds(t.div_euclid(1_000))), ColumnType::Time)
        }
        ScalarValue::TimestampMicrosecond(v, _) => {
            (v.map_or(Owned::Null, |t| Owned::Seconds(t.div_euclid(1_000_000))), ColumnType::Time)
        }
        ScalarValue::TimestampNanosecond(v, _) => {
            (v.map_or(Owned::Null, |t| Owned::Seconds(t.div_euclid(1_000_000_000))), ColumnType::Time)
        }
        ScalarValue::Null => (Owned::Null, ColumnType::Int),
        _ => return None,
    })
}

/// The relations' type an Arrow type is, if any.
fn column_type(data_type: &DataType) -> Option<ColumnType> {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(ColumnType::Text),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => Some(ColumnType::Int),
        DataType::Decimal128(_, 2) | DataType::Decimal256(_, 2) => Some(ColumnType::Money),
        DataType::Timestamp(_, _) => Some(ColumnType::Time),
        _ => None,
    }
}
