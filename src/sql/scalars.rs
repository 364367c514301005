//! A view's expressions: DataFusion's `Expr` made into the [`Scalar`] every worker evaluates on
//! each row, with the type of its value — or refused (0A000), naming it.
//!
//! ```text
//! t.amount * 2 - 1          Arith(Sub, Arith(Mul, #1, 2), 1)        amount (cents)
//! date_bin('15 minutes', ts) Bin { step: 900, origin: 0, #4 }       timestamp
//! n > 1 AND city <> 'Oslo'   And(Compare(Gt, #2, 1), Compare(NotEq, #0, 'Oslo'))
//! ```
//!
//! DataFusion types an integer beside an amount as a decimal without a fraction: it is kept as
//! the integer it is, and compared or added as an amount. A value SQL would fail a statement
//! for (an overflow, a division by zero) is NULL in a view, which cannot fail a row.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

use super::SqlError;
use crate::compute::columns::{ColumnType, Owned};
use crate::compute::plan::{Arith, Comparison, Scalar};

/// Whether a scalar is a predicate (true, false or unknown), which no view column may be.
pub(super) fn is_predicate(scalar: &Scalar) -> bool {
    matches!(scalar, Scalar::Compare(..) | Scalar::And(..) | Scalar::Or(..) | Scalar::Not(_) | Scalar::IsNull(_))
}

/// An expression over rows of `schema` (whose columns have `types`), and its value's type.
pub(super) fn scalar(expr: &Expr, schema: &DFSchema, types: &[ColumnType]) -> Result<(Scalar, ColumnType), SqlError> {
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
        // A searched CASE whose values are of one type (or NULL).
        Expr::Case(case) if case.expr.is_none() => {
            let mut ty = None;
            let mut value = |expr: &Expr| -> Result<Scalar, SqlError> {
                let (value, value_ty) = scalar(expr, schema, types)?;
                if value != Scalar::Literal(Owned::Null) {
                    if ty.is_some_and(|t| t != value_ty) {
                        return Err(unsupported());
                    }
                    ty = Some(value_ty);
                }
                Ok(value)
            };
            let mut branches = Vec::new();
            for (when, then) in &case.when_then_expr {
                let (condition, _) = scalar(when, schema, types)?;
                branches.push((condition, value(then)?));
            }
            let otherwise = match &case.else_expr {
                Some(otherwise) => value(otherwise)?,
                None => Scalar::Literal(Owned::Null),
            };
            let ty = ty.ok_or_else(unsupported)?;
            Ok((Scalar::Case { branches, otherwise: Box::new(otherwise) }, ty))
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
pub(super) fn column_type(data_type: &DataType) -> Option<ColumnType> {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(ColumnType::Text),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => Some(ColumnType::Int),
        DataType::Decimal128(_, 2) | DataType::Decimal256(_, 2) => Some(ColumnType::Money),
        DataType::Timestamp(_, _) => Some(ColumnType::Time),
        _ => None,
    }
}
