//! From `sqlparser`'s expressions to ours: names resolved against a relation's columns (or a
//! group's keys and aggregates), literals and casts typed, comparisons of times coerced, and
//! the types checked — what [`super::plan`] asks for every expression of a statement.
//!
//! ```text
//! amount >= 100       over transactions' row     → Compare(Ge, Column(i), Literal(…))
//!                      (i: amount's position in the relation's columns)
//! sum(amount) > 1000   grouped by customer        → Compare(Gt, Column(1), Literal(…))
//!                      (a group's row: its keys, then its aggregates)
//! ```

use sqlparser::ast::{self, BinaryOperator, FunctionArg, FunctionArgExpr, FunctionArguments, UnaryOperator};

use super::expr::{Agg, AggFunc, Arith, Cmp, Expr, Unit};
use super::relation::Relation;
use super::value::{parse_timestamp, Type, Value};
use super::SqlError;

/// What an expression is translated against.
pub(super) enum Context {
    /// A row of the relation.
    Row(Relation),
    /// A group: its keys (over the relation's row) then its aggregates.
    Grouped { relation: Relation, keys: Vec<Expr>, aggs: Vec<Agg> },
}

impl Context {
    pub(super) fn relation(&self) -> Relation {
        match self {
            Context::Row(r) | Context::Grouped { relation: r, .. } => *r,
        }
    }

    pub(super) fn column(&self, ids: &[ast::Ident]) -> Result<usize, SqlError> {
        let relation = self.relation();
        let (table, name) = match ids {
            [name] => (None, name),
            [table, name] => (Some(table), name),
            _ => {
                return Err(SqlError::unsupported(format!("column reference {}", ast::ObjectName::from(ids.to_vec()))))
            }
        };
        if let Some(table) = table {
            if !table.value.eq_ignore_ascii_case(relation.name()) {
                return Err(SqlError::new("42P01", format!("missing FROM-clause entry for table \"{}\"", table.value)));
            }
        }
        relation.column(&name.value).ok_or_else(|| {
            let known: Vec<&str> = relation.columns().iter().map(|(c, _)| *c).collect();
            SqlError::new(
                "42703",
                format!(
                    "column \"{}\" does not exist in {} (its columns: {})",
                    name.value,
                    relation.name(),
                    known.join(", ")
                ),
            )
        })
    }

    /// Translates `e`. In a group, an expression equal to a key is that key, an aggregate
    /// is its result, and a column outside both is an error, as in Postgres.
    pub(super) fn expr(&mut self, e: &ast::Expr) -> Result<Expr, SqlError> {
        if let Context::Grouped { relation, keys, aggs } = self {
            if let ast::Expr::Function(f) = e {
                let name = f.name.to_string().to_ascii_lowercase();
                if AGGREGATES.contains(&name.as_str()) {
                    let agg = aggregate(*relation, &name, f)?;
                    let at = aggs.iter().position(|a| *a == agg).unwrap_or_else(|| {
                        aggs.push(agg);
                        aggs.len() - 1
                    });
                    return Ok(Expr::Column(keys.len() + at));
                }
            }
            if !has_aggregate(e) {
                if let Ok(row) = Context::Row(*relation).expr(e) {
                    if let Some(k) = keys.iter().position(|k| *k == row) {
                        return Ok(Expr::Column(k));
                    }
                    if matches!(row, Expr::Literal(_)) {
                        return Ok(row);
                    }
                    if let ast::Expr::Identifier(_) | ast::Expr::CompoundIdentifier(_) = e {
                        return Err(SqlError::new(
                            "42803",
                            format!(
                                "column \"{e}\" must appear in the GROUP BY clause or be used in an aggregate function"
                            ),
                        ));
                    }
                }
            }
        }
        let binary = |this: &mut Self, a: &ast::Expr, b: &ast::Expr| -> Result<(Box<Expr>, Box<Expr>), SqlError> {
            Ok((Box::new(this.expr(a)?), Box::new(this.expr(b)?)))
        };
        Ok(match e {
            ast::Expr::Identifier(id) => Expr::Column(self.column(std::slice::from_ref(id))?),
            ast::Expr::CompoundIdentifier(ids) => Expr::Column(self.column(ids)?),
            ast::Expr::Nested(e) => self.expr(e)?,
            ast::Expr::Value(v) => Expr::Literal(literal(&v.value)?),
            ast::Expr::TypedString(t) => cast(Expr::Literal(literal(&t.value.value)?), &t.data_type)?,
            ast::Expr::Cast { expr, data_type, .. } => cast(self.expr(expr)?, data_type)?,
            ast::Expr::UnaryOp { op: UnaryOperator::Not, expr } => Expr::Not(Box::new(self.expr(expr)?)),
            ast::Expr::UnaryOp { op: UnaryOperator::Minus, expr } => match self.expr(expr)? {
                Expr::Literal(Value::Int(n)) => Expr::Literal(Value::Int(-n)),
                Expr::Literal(Value::Numeric(n)) => Expr::Literal(Value::Numeric(-n)),
                other => Expr::Neg(Box::new(other)),
            },
            ast::Expr::UnaryOp { op: UnaryOperator::Plus, expr } => self.expr(expr)?,
            ast::Expr::BinaryOp { left, op, right } => {
                let (a, b) = binary(self, left, right)?;
                match op {
                    BinaryOperator::And => Expr::And(a, b),
                    BinaryOperator::Or => Expr::Or(a, b),
                    BinaryOperator::Eq => compare(Cmp::Eq, a, b),
                    BinaryOperator::NotEq => compare(Cmp::Ne, a, b),
                    BinaryOperator::Lt => compare(Cmp::Lt, a, b),
                    BinaryOperator::LtEq => compare(Cmp::Le, a, b),
                    BinaryOperator::Gt => compare(Cmp::Gt, a, b),
                    BinaryOperator::GtEq => compare(Cmp::Ge, a, b),
                    BinaryOperator::Plus => Expr::Arith(Arith::Add, a, b),
                    BinaryOperator::Minus => Expr::Arith(Arith::Sub, a, b),
                    BinaryOperator::Multiply => Expr::Arith(Arith::Mul, a, b),
                    BinaryOperator::Divide => Expr::Arith(Arith::Div, a, b),
                    other => return Err(SqlError::unsupported(format!("the operator {other}"))),
                }
            }
            ast::Expr::IsNull(e) => Expr::IsNull(Box::new(self.expr(e)?), false),
            ast::Expr::IsNotNull(e) => Expr::IsNull(Box::new(self.expr(e)?), true),
            ast::Expr::InList { expr, list, negated } => {
                let value = self.expr(expr)?;
                let list = list.iter().map(|i| self.expr(i)).collect::<Result<Vec<_>, _>>()?;
                Expr::InList(Box::new(value), list, *negated)
            }
            ast::Expr::Between { expr, negated, low, high } => {
                let value = self.expr(expr)?;
                let (low, high) = (self.expr(low)?, self.expr(high)?);
                Expr::Between(Box::new(value), Box::new(low), Box::new(high), *negated)
            }
            ast::Expr::Like { negated, expr, pattern, escape_char: None, any: false } => {
                let value = self.expr(expr)?;
                match self.expr(pattern)? {
                    Expr::Literal(Value::Text(p)) => Expr::Like(Box::new(value), p.to_string(), *negated),
                    _ => return Err(SqlError::unsupported("LIKE with a pattern that is not a string literal")),
                }
            }
            ast::Expr::Function(f) => {
                let name = f.name.to_string().to_ascii_lowercase();
                match name.as_str() {
                    "date_trunc" => {
                        let args = plain_args(f)?;
                        let [unit, value] = args.as_slice() else {
                            return Err(SqlError::new("42883", "date_trunc takes a unit and a timestamp"));
                        };
                        let unit = match self.expr(unit)? {
                            Expr::Literal(Value::Text(u)) if u.eq_ignore_ascii_case("hour") => Unit::Hour,
                            Expr::Literal(Value::Text(u)) if u.eq_ignore_ascii_case("day") => Unit::Day,
                            other => {
                                return Err(SqlError::unsupported(format!(
                                    "date_trunc to {other:?}; 'hour' and 'day' are"
                                )))
                            }
                        };
                        Expr::DateTrunc(unit, Box::new(self.expr(value)?))
                    }
                    _ if AGGREGATES.contains(&name.as_str()) => {
                        return Err(SqlError::new("42803", format!("aggregate {name}() is not allowed here")))
                    }
                    _ => return Err(SqlError::new("42883", format!("function {name}() does not exist"))),
                }
            }
            other => return Err(SqlError::unsupported(format!("the expression {other}"))),
        })
    }
}

pub(super) fn compare(op: Cmp, a: Box<Expr>, b: Box<Expr>) -> Expr {
    Expr::Compare(op, a, b)
}

/// Reads a string literal as a timestamp where the other side of a comparison (or the value
/// of `IN`, `BETWEEN`) is one: `ts >= '2025-01-01'`.
pub(super) fn coerce_times(e: Expr, columns: &[Type]) -> Expr {
    let time = |other: &Expr| other.ty(columns) == Type::Timestamp;
    let to_time = |e: Expr| match e {
        Expr::Literal(Value::Text(t)) => {
            parse_timestamp(&t).map_or(Expr::Literal(Value::Text(t)), |s| Expr::Literal(Value::Timestamp(s)))
        }
        other => other,
    };
    let recurse = |e: Box<Expr>| Box::new(coerce_times(*e, columns));
    match e {
        Expr::Compare(op, a, b) => {
            let (a, b) = (coerce_times(*a, columns), coerce_times(*b, columns));
            let (a, b) = match (time(&a), time(&b)) {
                (true, false) => (a, to_time(b)),
                (false, true) => (to_time(a), b),
                _ => (a, b),
            };
            Expr::Compare(op, Box::new(a), Box::new(b))
        }
        Expr::InList(v, list, negated) if time(&v) => Expr::InList(v, list.into_iter().map(to_time).collect(), negated),
        Expr::Between(v, l, h, negated) if time(&v) => {
            Expr::Between(v, Box::new(to_time(*l)), Box::new(to_time(*h)), negated)
        }
        Expr::And(a, b) => Expr::And(recurse(a), recurse(b)),
        Expr::Or(a, b) => Expr::Or(recurse(a), recurse(b)),
        Expr::Not(a) => Expr::Not(recurse(a)),
        Expr::DateTrunc(unit, e) => Expr::DateTrunc(unit, Box::new(to_time(*e))),
        other => other,
    }
}

pub(super) fn plain_args(f: &ast::Function) -> Result<Vec<ast::Expr>, SqlError> {
    let FunctionArguments::List(list) = &f.args else {
        return match &f.args {
            FunctionArguments::None => Ok(Vec::new()),
            _ => Err(SqlError::unsupported(format!("the arguments of {}", f.name))),
        };
    };
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() || f.filter.is_some() || f.over.is_some() {
        return Err(SqlError::unsupported(format!("DISTINCT, FILTER, OVER or ORDER BY in {}()", f.name)));
    }
    list.args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e.clone()),
            FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => {
                Ok(ast::Expr::Wildcard(sqlparser::ast::helpers::attached_token::AttachedToken::empty()))
            }
            other => Err(SqlError::unsupported(format!("the argument {other}"))),
        })
        .collect()
}

pub(super) fn aggregate(relation: Relation, name: &str, f: &ast::Function) -> Result<Agg, SqlError> {
    let func = match name {
        "count" => AggFunc::Count,
        "sum" => AggFunc::Sum,
        "min" => AggFunc::Min,
        "max" => AggFunc::Max,
        _ => AggFunc::Avg,
    };
    let args = plain_args(f)?;
    let arg = match (func, args.as_slice()) {
        (AggFunc::Count, [ast::Expr::Wildcard(_)]) | (AggFunc::Count, []) => None,
        (_, [arg]) => {
            if has_aggregate(arg) {
                return Err(SqlError::new("42803", "aggregate function calls cannot be nested"));
            }
            Some(Context::Row(relation).expr(arg)?)
        }
        _ => return Err(SqlError::new("42883", format!("{name}() takes one argument"))),
    };
    if let (AggFunc::Sum | AggFunc::Avg, Some(arg)) = (func, &arg) {
        let columns: Vec<Type> = relation.columns().iter().map(|(_, t)| *t).collect();
        let ty = arg.ty(&columns);
        if !ty.is_number() {
            return Err(SqlError::new("42883", format!("function {name}({}) does not exist", ty.name())));
        }
    }
    Ok(Agg { func, arg })
}

pub(super) fn literal(v: &ast::Value) -> Result<Value, SqlError> {
    Ok(match v {
        ast::Value::Null => Value::Null,
        ast::Value::Boolean(b) => Value::Bool(*b),
        ast::Value::Number(n, _) => number(n)?,
        ast::Value::SingleQuotedString(s) => Value::Text(s.as_str().into()),
        // A parameter not bound yet: only a driver's `Describe` of a prepared statement plans
        // one (for the columns' names and types); execution always binds it first.
        ast::Value::Placeholder(_) => Value::Null,
        other => return Err(SqlError::unsupported(format!("the literal {other}"))),
    })
}

/// A number literal: a bigint, or an exact numeric with at most two decimals.
pub(super) fn number(text: &str) -> Result<Value, SqlError> {
    if let Ok(n) = text.parse::<i64>() {
        return Ok(Value::Int(n));
    }
    crate::amount::parse_cents(text)
        .map(|c| Value::Numeric(i128::from(c)))
        .map_err(|e| SqlError::new("22P02", format!("{text}: {e} (amounts are exact, to the hundredth)")))
}

pub(super) fn cast(e: Expr, to: &ast::DataType) -> Result<Expr, SqlError> {
    let name = to.to_string().to_ascii_lowercase();
    let Expr::Literal(value) = e else {
        return Err(SqlError::unsupported(format!("a cast of a column to {name}")));
    };
    let text = value.to_string();
    let cast = match name.as_str() {
        "text" | "varchar" => Some(Value::Text(text.as_str().into())),
        "timestamptz" | "timestamp" | "timestamp with time zone" | "date" => {
            parse_timestamp(&text).map(Value::Timestamp)
        }
        "numeric" | "decimal" => number(&text).ok().map(|v| Value::Numeric(v.hundredths().unwrap_or(0))),
        "bigint" | "int" | "integer" | "int8" => text.parse().ok().map(Value::Int),
        _ => return Err(SqlError::unsupported(format!("the type {name}"))),
    };
    cast.map(Expr::Literal).ok_or_else(|| SqlError::new("22P02", format!("invalid input for type {name}: {text:?}")))
}

pub(super) fn boolean(context: &Context, e: &ast::Expr, clause: &str) -> Result<Expr, SqlError> {
    if has_aggregate(e) {
        return Err(SqlError::new("42803", format!("aggregate functions are not allowed in {clause}")));
    }
    let Context::Row(relation) = context else { unreachable!("WHERE is planned over rows") };
    let translated = Context::Row(*relation).expr(e)?;
    let columns: Vec<Type> = relation.columns().iter().map(|(_, t)| *t).collect();
    if translated.ty(&columns) != Type::Bool {
        return Err(SqlError::new("42804", format!("argument of {clause} must be type boolean, not {e}")));
    }
    Ok(translated)
}

/// Refuses comparisons and arithmetic between types that do not mix (42804).
pub(super) fn check_types(e: &Expr, columns: &[Type]) -> Result<(), SqlError> {
    let mismatch = |a: &Expr, b: &Expr| -> Result<(), SqlError> {
        let (ta, tb) = (a.ty(columns), b.ty(columns));
        let null = |e: &Expr| matches!(e, Expr::Literal(Value::Null));
        if ta == tb || (ta.is_number() && tb.is_number()) || null(a) || null(b) {
            Ok(())
        } else {
            Err(SqlError::new("42804", format!("cannot compare or combine {} with {}", ta.name(), tb.name())))
        }
    };
    match e {
        Expr::Compare(_, a, b) => {
            mismatch(a, b)?;
            check_types(a, columns)?;
            check_types(b, columns)
        }
        Expr::Arith(_, a, b) => {
            for side in [a, b] {
                let t = side.ty(columns);
                if !t.is_number() && !matches!(**side, Expr::Literal(Value::Null)) {
                    return Err(SqlError::new("42883", format!("arithmetic on {}", t.name())));
                }
                check_types(side, columns)?;
            }
            Ok(())
        }
        Expr::InList(v, list, _) => list.iter().try_for_each(|i| mismatch(v, i)),
        Expr::Between(v, l, h, _) => mismatch(v, l).and_then(|()| mismatch(v, h)),
        Expr::And(a, b) | Expr::Or(a, b) => check_types(a, columns).and_then(|()| check_types(b, columns)),
        Expr::Not(e) => check_types(e, columns),
        Expr::Like(e, _, _) if e.ty(columns) != Type::Text => {
            Err(SqlError::new("42883", "LIKE on a value that is not text"))
        }
        Expr::DateTrunc(_, e) if e.ty(columns) != Type::Timestamp => {
            Err(SqlError::new("42883", "date_trunc of a value that is not a timestamp"))
        }
        _ => Ok(()),
    }
}

/// Whether `e` calls an aggregate function anywhere.
pub(super) fn has_aggregate(e: &ast::Expr) -> bool {
    match e {
        ast::Expr::Function(f) => {
            AGGREGATES.contains(&f.name.to_string().to_ascii_lowercase().as_str())
                || plain_args(f).is_ok_and(|args| args.iter().any(has_aggregate))
        }
        ast::Expr::BinaryOp { left, right, .. } => has_aggregate(left) || has_aggregate(right),
        ast::Expr::UnaryOp { expr, .. }
        | ast::Expr::Nested(expr)
        | ast::Expr::Cast { expr, .. }
        | ast::Expr::IsNull(expr)
        | ast::Expr::IsNotNull(expr) => has_aggregate(expr),
        ast::Expr::InList { expr, list, .. } => has_aggregate(expr) || list.iter().any(has_aggregate),
        ast::Expr::Between { expr, low, high, .. } => has_aggregate(expr) || has_aggregate(low) || has_aggregate(high),
        ast::Expr::Like { expr, pattern, .. } => has_aggregate(expr) || has_aggregate(pattern),
        _ => false,
    }
}

const AGGREGATES: [&str; 5] = ["count", "sum", "min", "max", "avg"];
