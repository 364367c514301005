//! Which rows of a ranking a view keeps: a filter above `row_number()` that bounds it (`WHERE
//! rn <= 3`) makes the ranking a top-k of each partition, kept by the dataflow; any other
//! window function, or one unbounded, is refused.
//!
//! ```text
//! Filter(rn <= 3 AND amount > 0)               bounds: rn ≤ 3
//!   Projection(customer, amount, row_number() … AS rn)   bounds: row_number() … ≤ 3
//!     Window(row_number() PARTITION BY customer ORDER BY amount DESC)   → TopK(customer; amount desc; 3, rank)
//! ```

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

/// Columns of a plan's output (by name) that a filter above bounds: only rows where each is at
/// most its number are kept. A `row_number()` so bounded is a top-k.
pub(super) type RankBound = Vec<(String, usize)>;

/// The bounds a predicate puts on columns (`rn <= 3`, `rn < 4`, `rn = 1`, `3 >= rn`, in a
/// conjunction).
pub(super) fn rank_bound(predicate: &Expr) -> RankBound {
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
