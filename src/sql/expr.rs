//! Expressions over a row: what `WHERE`, `HAVING`, the select list and `ORDER BY` compute,
//! with SQL's three-valued logic (a comparison with NULL is NULL, and `WHERE` keeps only
//! true).
//!
//! ```text
//! amount >= 100 AND category IN ('books', 'food')
//!   → And(Compare(Ge, Column(2), Literal(Numeric(10000))), InList(Column(3), [...]))
//! ```

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::value::{Type, Value};

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmp {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Cmp {
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Cmp::Eq => ordering == Ordering::Equal,
            Cmp::Ne => ordering != Ordering::Equal,
            Cmp::Lt => ordering == Ordering::Less,
            Cmp::Le => ordering != Ordering::Greater,
            Cmp::Gt => ordering == Ordering::Greater,
            Cmp::Ge => ordering != Ordering::Less,
        }
    }

    /// The comparison with its sides swapped (`1 < x` is `x > 1`).
    pub fn flipped(self) -> Cmp {
        match self {
            Cmp::Lt => Cmp::Gt,
            Cmp::Le => Cmp::Ge,
            Cmp::Gt => Cmp::Lt,
            Cmp::Ge => Cmp::Le,
            other => other,
        }
    }

    /// Its SQL spelling.
    pub fn symbol(self) -> &'static str {
        match self {
            Cmp::Eq => "=",
            Cmp::Ne => "<>",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }
}

/// Arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arith {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
}

/// What `date_trunc` truncates to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unit {
    /// `'hour'`
    Hour,
    /// `'day'`
    Day,
}

/// An expression over the columns of a row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expr {
    /// The row's column at this index.
    Column(usize),
    /// A constant.
    Literal(Value),
    /// `NOT e`
    Not(Box<Expr>),
    /// `a AND b`
    And(Box<Expr>, Box<Expr>),
    /// `a OR b`
    Or(Box<Expr>, Box<Expr>),
    /// `a <op> b`
    Compare(Cmp, Box<Expr>, Box<Expr>),
    /// `e IS [NOT] NULL`
    IsNull(Box<Expr>, bool),
    /// `e [NOT] IN (list)`
    InList(Box<Expr>, Vec<Expr>, bool),
    /// `e [NOT] BETWEEN low AND high`
    Between(Box<Expr>, Box<Expr>, Box<Expr>, bool),
    /// `e [NOT] LIKE 'pattern'`
    Like(Box<Expr>, String, bool),
    /// `a <op> b`
    Arith(Arith, Box<Expr>, Box<Expr>),
    /// `-e`
    Neg(Box<Expr>),
    /// `date_trunc('hour' | 'day', e)`
    DateTrunc(Unit, Box<Expr>),
}

impl Expr {
    /// The value of the expression for `row`.
    pub fn eval(&self, row: &[Value]) -> Value {
        match self {
            Expr::Column(i) => row.get(*i).cloned().unwrap_or(Value::Null),
            Expr::Literal(v) => v.clone(),
            Expr::Not(e) => match e.eval(row) {
                Value::Bool(b) => Value::Bool(!b),
                _ => Value::Null,
            },
            Expr::And(a, b) => match (a.eval(row), b.eval(row)) {
                (Value::Bool(false), _) | (_, Value::Bool(false)) => Value::Bool(false),
                (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
                _ => Value::Null,
            },
            Expr::Or(a, b) => match (a.eval(row), b.eval(row)) {
                (Value::Bool(true), _) | (_, Value::Bool(true)) => Value::Bool(true),
                (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
                _ => Value::Null,
            },
            Expr::Compare(op, a, b) => match a.eval(row).compare(&b.eval(row)) {
                Some(ordering) => Value::Bool(op.holds(ordering)),
                None => Value::Null,
            },
            Expr::IsNull(e, negated) => Value::Bool(e.eval(row).is_null() != *negated),
            Expr::InList(e, list, negated) => {
                let value = e.eval(row);
                if value.is_null() {
                    return Value::Null;
                }
                let mut unknown = false;
                for item in list {
                    match value.compare(&item.eval(row)) {
                        Some(Ordering::Equal) => return Value::Bool(!negated),
                        None => unknown = true,
                        Some(_) => {}
                    }
                }
                if unknown {
                    Value::Null
                } else {
                    Value::Bool(*negated)
                }
            }
            Expr::Between(e, low, high, negated) => {
                let value = e.eval(row);
                match (value.compare(&low.eval(row)), value.compare(&high.eval(row))) {
                    (Some(l), Some(h)) => Value::Bool((l != Ordering::Less && h != Ordering::Greater) != *negated),
                    _ => Value::Null,
                }
            }
            Expr::Like(e, pattern, negated) => match e.eval(row) {
                Value::Text(text) => Value::Bool(like(&text, pattern) != *negated),
                _ => Value::Null,
            },
            Expr::Arith(op, a, b) => arith(*op, a.eval(row), b.eval(row)),
            Expr::Neg(e) => match e.eval(row) {
                Value::Int(n) => Value::Int(-n),
                Value::Numeric(n) => Value::Numeric(-n),
                _ => Value::Null,
            },
            Expr::DateTrunc(unit, e) => match e.eval(row) {
                Value::Timestamp(t) => {
                    let step = match unit {
                        Unit::Hour => 3600,
                        Unit::Day => 86_400,
                    };
                    Value::Timestamp(t.div_euclid(step) * step)
                }
                _ => Value::Null,
            },
        }
    }

    /// Whether the row passes (a `WHERE` or `HAVING`: only true passes).
    pub fn accepts(&self, row: &[Value]) -> bool {
        self.eval(row) == Value::Bool(true)
    }

    /// The expression's type, given the row's column types.
    pub fn ty(&self, columns: &[Type]) -> Type {
        match self {
            Expr::Column(i) => columns.get(*i).copied().unwrap_or(Type::Text),
            Expr::Literal(v) => match v {
                Value::Null | Value::Text(_) => Type::Text,
                Value::Bool(_) => Type::Bool,
                Value::Int(_) => Type::BigInt,
                Value::Numeric(_) => Type::Numeric,
                Value::Timestamp(_) => Type::Timestamp,
            },
            Expr::Arith(Arith::Div, _, _) => Type::Numeric,
            Expr::Arith(_, a, b) => match (a.ty(columns), b.ty(columns)) {
                (Type::BigInt, Type::BigInt) => Type::BigInt,
                _ => Type::Numeric,
            },
            Expr::Neg(e) => e.ty(columns),
            Expr::DateTrunc(..) => Type::Timestamp,
            _ => Type::Bool,
        }
    }

    /// The expression as SQL, with `names` for the columns.
    pub fn to_sql(&self, names: &[&str]) -> String {
        let s = |e: &Expr| e.to_sql(names);
        let not = |negated: &bool| if *negated { "NOT " } else { "" };
        match self {
            Expr::Column(i) => names.get(*i).map_or_else(|| format!("${i}"), |n| (*n).to_owned()),
            Expr::Literal(Value::Text(t)) => format!("'{}'", t.replace('\'', "''")),
            Expr::Literal(Value::Timestamp(_)) => format!("'{}'", self.eval(&[])),
            Expr::Literal(v) => v.to_string(),
            Expr::Not(e) => format!("NOT ({})", s(e)),
            Expr::And(a, b) => format!("{} AND {}", s(a), s(b)),
            Expr::Or(a, b) => format!("({} OR {})", s(a), s(b)),
            Expr::Compare(op, a, b) => format!("{} {} {}", s(a), op.symbol(), s(b)),
            Expr::IsNull(e, negated) => format!("{} IS {}NULL", s(e), not(negated)),
            Expr::InList(e, list, negated) => {
                format!("{} {}IN ({})", s(e), not(negated), list.iter().map(s).collect::<Vec<_>>().join(", "))
            }
            Expr::Between(e, l, h, negated) => format!("{} {}BETWEEN {} AND {}", s(e), not(negated), s(l), s(h)),
            Expr::Like(e, p, negated) => format!("{} {}LIKE '{p}'", s(e), not(negated)),
            Expr::Arith(op, a, b) => {
                let op = match op {
                    Arith::Add => "+",
                    Arith::Sub => "-",
                    Arith::Mul => "*",
                    Arith::Div => "/",
                };
                format!("({} {op} {})", s(a), s(b))
            }
            Expr::Neg(e) => format!("-{}", s(e)),
            Expr::DateTrunc(unit, e) => {
                format!("date_trunc('{}', {})", if *unit == Unit::Hour { "hour" } else { "day" }, s(e))
            }
        }
    }

    /// The columns the expression reads.
    pub fn columns(&self, out: &mut Vec<usize>) {
        match self {
            Expr::Column(i) => out.push(*i),
            Expr::Literal(_) => {}
            Expr::Not(e) | Expr::IsNull(e, _) | Expr::Like(e, _, _) | Expr::Neg(e) | Expr::DateTrunc(_, e) => {
                e.columns(out)
            }
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Compare(_, a, b) | Expr::Arith(_, a, b) => {
                a.columns(out);
                b.columns(out);
            }
            Expr::InList(e, list, _) => {
                e.columns(out);
                list.iter().for_each(|i| i.columns(out));
            }
            Expr::Between(e, l, h, _) => {
                e.columns(out);
                l.columns(out);
                h.columns(out);
            }
        }
    }
}

/// Arithmetic on numbers, exact: a bigint result when both sides are bigint, else numeric
/// in hundredths (a division rounds half away from zero to the hundredth). NULL for NULL,
/// a division by zero, or an overflow.
fn arith(op: Arith, a: Value, b: Value) -> Value {
    if let (Value::Int(x), Value::Int(y), false) = (&a, &b, op == Arith::Div) {
        let result = match op {
            Arith::Add => x.checked_add(*y),
            Arith::Sub => x.checked_sub(*y),
            _ => x.checked_mul(*y),
        };
        return result.map_or(Value::Null, Value::Int);
    }
    let (Some(x), Some(y)) = (a.hundredths(), b.hundredths()) else { return Value::Null };
    let result = match op {
        Arith::Add => x.checked_add(y),
        Arith::Sub => x.checked_sub(y),
        // (x / 100) * (y / 100) in hundredths is x * y / 100.
        Arith::Mul => x.checked_mul(y).map(|p| divide_rounded(p, 100)),
        Arith::Div if y == 0 => None,
        Arith::Div => x.checked_mul(100).map(|n| divide_rounded(n, y)),
    };
    result.map_or(Value::Null, Value::Numeric)
}

/// `n / d`, rounded half away from zero.
pub fn divide_rounded(n: i128, d: i128) -> i128 {
    let (q, r) = (n / d, n % d);
    if 2 * r.abs() >= d.abs() {
        q + if (n < 0) != (d < 0) { -1 } else { 1 }
    } else {
        q
    }
}

/// SQL `LIKE`: `%` any run of characters, `_` any one; everything else itself.
pub fn like(text: &str, pattern: &str) -> bool {
    let (text, pattern): (Vec<char>, Vec<char>) = (text.chars().collect(), pattern.chars().collect());
    // The classic two-pointer match with backtracking to the last `%`.
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '_' || pattern[p] == text[t]) && pattern[p] != '%' {
            t += 1;
            p += 1;
        } else if p < pattern.len() && pattern[p] == '%' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '%')
}

/// An aggregate function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggFunc {
    /// `count(*)` or `count(e)` (non-NULL values)
    Count,
    /// `sum(e)`
    Sum,
    /// `min(e)`
    Min,
    /// `max(e)`
    Max,
    /// `avg(e)`, exact to the hundredth
    Avg,
}

/// One aggregate of a grouped query: its function and argument (none for `count(*)`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agg {
    /// The function.
    pub func: AggFunc,
    /// Its argument over the relation's row.
    pub arg: Option<Expr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_valued_logic() {
        let null = || Box::new(Expr::Literal(Value::Null));
        let t = || Box::new(Expr::Literal(Value::Bool(true)));
        let f = || Box::new(Expr::Literal(Value::Bool(false)));
        assert_eq!(Expr::And(null(), f()).eval(&[]), Value::Bool(false));
        assert_eq!(Expr::And(null(), t()).eval(&[]), Value::Null);
        assert_eq!(Expr::Or(null(), t()).eval(&[]), Value::Bool(true));
        assert_eq!(Expr::Not(null()).eval(&[]), Value::Null);
        let cmp = Expr::Compare(Cmp::Gt, Box::new(Expr::Column(0)), Box::new(Expr::Literal(Value::Int(1))));
        assert!(!cmp.accepts(&[Value::Null]));
    }

    #[test]
    fn exact_arithmetic() {
        let n = |v: i128| Value::Numeric(v);
        assert_eq!(arith(Arith::Div, n(1000), Value::Int(3)), n(333));
        assert_eq!(arith(Arith::Div, n(-1000), Value::Int(6)), n(-167));
        assert_eq!(arith(Arith::Mul, n(150), n(150)), n(225));
        assert_eq!(arith(Arith::Add, Value::Int(2), Value::Int(3)), Value::Int(5));
        assert_eq!(arith(Arith::Div, Value::Int(1), Value::Int(0)), Value::Null);
    }

    #[test]
    fn like_patterns() {
        assert!(like("Mounir", "Mou%"));
        assert!(like("Mounir", "%n_r"));
        assert!(like("abc", "%%b%"));
        assert!(!like("Ali", "A_"));
        assert!(like("", "%"));
        assert!(!like("Sara", "%x%"));
    }
}
