//! A value computed from a row of a view's dataflow ([`super::plan`]): columns, constants,
//! comparisons and SQL's three-valued logic, `CASE`, time bins and exact arithmetic.
//!
//! ```text
//! CASE WHEN price < 10000 THEN 1 ELSE 0 END
//!   → Case { branches: [(Compare(Lt, Column(3), Literal(10000)), Literal(1))], otherwise: Literal(0) }
//! ```

use serde::{Deserialize, Serialize};

use super::columns::Owned;

/// A value computed from a row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scalar {
    /// A column of the row.
    Column(usize),
    /// A constant.
    Literal(Owned),
    /// A comparison (true, false, or NULL when either side is).
    Compare(Comparison, Box<Scalar>, Box<Scalar>),
    /// Both true.
    And(Box<Scalar>, Box<Scalar>),
    /// Either true.
    Or(Box<Scalar>, Box<Scalar>),
    /// Not true.
    Not(Box<Scalar>),
    /// Whether the value is NULL.
    IsNull(Box<Scalar>),
    /// An instant put in its bin: the start of the `step`-second interval, counted from
    /// `origin` (seconds since the epoch), that holds it (`date_trunc`, `date_bin`).
    Bin {
        /// The bins' width in seconds.
        step: i64,
        /// The start of one bin.
        origin: i64,
        /// The instant.
        arg: Box<Scalar>,
    },
    /// An integer as an amount (`CAST(n AS numeric)`).
    IntToMoney(Box<Scalar>),
    /// Arithmetic on integers or amounts; NULL when either side is, or past 64 bits (integers)
    /// or 128 (cents), or for a division by zero (a view cannot fail a row).
    Arith(Arith, Box<Scalar>, Box<Scalar>),
    /// `CASE WHEN c THEN v … ELSE e END`: the value of the first branch whose condition is
    /// true, else `otherwise` (NULL without an `ELSE`).
    Case {
        /// Each condition and its value, in order.
        branches: Vec<(Scalar, Scalar)>,
        /// The value when no condition is true.
        otherwise: Box<Scalar>,
    },
}

/// An arithmetic operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arith {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*` (of two integers, or an amount and an integer)
    Mul,
    /// `/` of integers, truncated toward zero
    Div,
    /// `%` of integers, the sign of the dividend
    Rem,
}

impl Arith {
    fn apply(self, a: Owned, b: Owned) -> Owned {
        let ints = |x: i64, y: i64| match self {
            Arith::Add => x.checked_add(y),
            Arith::Sub => x.checked_sub(y),
            Arith::Mul => x.checked_mul(y),
            Arith::Div => x.checked_div(y),
            Arith::Rem => x.checked_rem(y),
        };
        let cents = |x: i128, y: i128| match self {
            Arith::Add => x.checked_add(y),
            Arith::Sub => x.checked_sub(y),
            _ => None,
        };
        match (a, b) {
            (Owned::Int(x), Owned::Int(y)) => ints(x, y).map_or(Owned::Null, Owned::Int),
            (Owned::Cents(x), Owned::Cents(y)) => cents(x, y).map_or(Owned::Null, Owned::Cents),
            (Owned::Cents(c), Owned::Int(n)) | (Owned::Int(n), Owned::Cents(c)) if self == Arith::Mul => {
                c.checked_mul(i128::from(n)).map_or(Owned::Null, Owned::Cents)
            }
            _ => Owned::Null,
        }
    }
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    /// `=`
    Eq,
    /// `<>`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
}

impl Scalar {
    /// The same expression over other columns: column `i` becomes `to(i)`.
    pub fn map_columns(&self, to: &impl Fn(usize) -> usize) -> Scalar {
        let boxed = |s: &Scalar| Box::new(s.map_columns(to));
        match self {
            Scalar::Column(i) => Scalar::Column(to(*i)),
            Scalar::Literal(value) => Scalar::Literal(value.clone()),
            Scalar::Compare(op, a, b) => Scalar::Compare(*op, boxed(a), boxed(b)),
            Scalar::And(a, b) => Scalar::And(boxed(a), boxed(b)),
            Scalar::Or(a, b) => Scalar::Or(boxed(a), boxed(b)),
            Scalar::Not(a) => Scalar::Not(boxed(a)),
            Scalar::IsNull(a) => Scalar::IsNull(boxed(a)),
            Scalar::Bin { step, origin, arg } => Scalar::Bin { step: *step, origin: *origin, arg: boxed(arg) },
            Scalar::IntToMoney(a) => Scalar::IntToMoney(boxed(a)),
            Scalar::Arith(op, a, b) => Scalar::Arith(*op, boxed(a), boxed(b)),
            Scalar::Case { branches, otherwise } => Scalar::Case {
                branches: branches.iter().map(|(c, v)| (c.map_columns(to), v.map_columns(to))).collect(),
                otherwise: boxed(otherwise),
            },
        }
    }

    /// The columns it reads.
    pub fn columns(&self) -> Vec<usize> {
        let columns = std::cell::RefCell::new(Vec::new());
        self.map_columns(&|i| {
            columns.borrow_mut().push(i);
            i
        });
        columns.into_inner()
    }

    /// Its value in `row`.
    pub fn eval(&self, row: &[Owned]) -> Owned {
        match self {
            Scalar::Column(i) => row[*i].clone(),
            Scalar::Literal(value) => value.clone(),
            Scalar::Bin { step, origin, arg } => match arg.eval(row) {
                // An instant too far from the origin to put in a bin has none.
                Owned::Seconds(s) => s
                    .checked_sub(*origin)
                    .and_then(|since| since.div_euclid(*step).checked_mul(*step))
                    .and_then(|start| start.checked_add(*origin))
                    .map_or(Owned::Null, Owned::Seconds),
                _ => Owned::Null,
            },
            Scalar::Arith(op, a, b) => op.apply(a.eval(row), b.eval(row)),
            Scalar::Case { branches, otherwise } => match branches.iter().find(|(c, _)| c.test(row) == Some(true)) {
                Some((_, value)) => value.eval(row),
                None => otherwise.eval(row),
            },
            Scalar::IntToMoney(arg) => match arg.eval(row) {
                Owned::Int(n) => Owned::Cents(i128::from(n) * 100),
                other => other,
            },
            predicate => match predicate.test(row) {
                // Predicates have no column of their own: a view's columns are never boolean.
                Some(true) => Owned::Int(1),
                Some(false) => Owned::Int(0),
                None => Owned::Null,
            },
        }
    }

    /// Its truth in `row`: `None` is SQL's unknown.
    pub fn test(&self, row: &[Owned]) -> Option<bool> {
        match self {
            Scalar::Compare(op, left, right) => {
                let (left, right) = (left.eval(row), right.eval(row));
                if left == Owned::Null || right == Owned::Null {
                    return None;
                }
                let order = left.cmp(&right);
                Some(match op {
                    Comparison::Eq => order.is_eq(),
                    Comparison::NotEq => order.is_ne(),
                    Comparison::Lt => order.is_lt(),
                    Comparison::LtEq => order.is_le(),
                    Comparison::Gt => order.is_gt(),
                    Comparison::GtEq => order.is_ge(),
                })
            }
            Scalar::And(a, b) => match (a.test(row), b.test(row)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            Scalar::Or(a, b) => match (a.test(row), b.test(row)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            Scalar::Not(a) => a.test(row).map(|t| !t),
            Scalar::IsNull(a) => Some(a.eval(row) == Owned::Null),
            Scalar::Literal(Owned::Null) => None,
            other => match other.eval(row) {
                Owned::Null => None,
                Owned::Int(n) => Some(n != 0),
                _ => Some(true),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(i: usize) -> Box<Scalar> {
        Box::new(Scalar::Column(i))
    }

    #[test]
    fn predicates_follow_three_valued_logic() {
        let row = vec![Owned::Int(3), Owned::Null];
        let gt = Scalar::Compare(Comparison::Gt, col(0), Box::new(Scalar::Literal(Owned::Int(2))));
        let null_eq = Scalar::Compare(Comparison::Eq, col(1), Box::new(Scalar::Literal(Owned::Int(2))));
        assert_eq!(gt.test(&row), Some(true));
        assert_eq!(null_eq.test(&row), None);
        assert_eq!(Scalar::And(Box::new(gt.clone()), Box::new(null_eq.clone())).test(&row), None);
        assert_eq!(Scalar::Or(Box::new(gt.clone()), Box::new(null_eq.clone())).test(&row), Some(true));
        assert_eq!(Scalar::Not(Box::new(null_eq)).test(&row), None);
        assert_eq!(Scalar::IsNull(col(1)).test(&row), Some(true));
    }

    #[test]
    fn an_instant_too_far_to_truncate_has_no_truncation() {
        let day = Scalar::Bin { step: 86_400, origin: 0, arg: col(0) };
        assert_eq!(day.eval(&[Owned::Seconds(i64::MIN)]), Owned::Null);
        assert_eq!(day.eval(&[Owned::Seconds(86_401)]), Owned::Seconds(86_400));
        assert_eq!(day.eval(&[Owned::Seconds(-1)]), Owned::Seconds(-86_400));
        // Fifteen-minute bins from 00:05.
        let bins = Scalar::Bin { step: 900, origin: 300, arg: col(0) };
        assert_eq!(bins.eval(&[Owned::Seconds(299)]), Owned::Seconds(-600));
        assert_eq!(bins.eval(&[Owned::Seconds(1_250)]), Owned::Seconds(1_200));
    }

    #[test]
    fn arithmetic_is_null_where_sql_would_fail_a_row() {
        let op = |op, a, b| Scalar::Arith(op, Box::new(Scalar::Literal(a)), Box::new(Scalar::Literal(b))).eval(&[]);
        assert_eq!(op(Arith::Add, Owned::Int(2), Owned::Int(3)), Owned::Int(5));
        assert_eq!(op(Arith::Mul, Owned::Cents(250), Owned::Int(3)), Owned::Cents(750));
        assert_eq!(op(Arith::Sub, Owned::Cents(250), Owned::Cents(300)), Owned::Cents(-50));
        assert_eq!(op(Arith::Div, Owned::Int(-7), Owned::Int(2)), Owned::Int(-3));
        assert_eq!(op(Arith::Rem, Owned::Int(-7), Owned::Int(2)), Owned::Int(-1));
        assert_eq!(op(Arith::Div, Owned::Int(1), Owned::Int(0)), Owned::Null);
        assert_eq!(op(Arith::Add, Owned::Int(i64::MAX), Owned::Int(1)), Owned::Null);
        assert_eq!(op(Arith::Add, Owned::Null, Owned::Int(1)), Owned::Null);
    }

    #[test]
    fn a_case_takes_the_first_true_branch_and_an_unknown_condition_is_not_true() {
        let lit = |n: i64| Scalar::Literal(Owned::Int(n));
        let below = |n: i64| Scalar::Compare(Comparison::Lt, col(0), Box::new(lit(n)));
        let case =
            Scalar::Case { branches: vec![(below(10), lit(1)), (below(100), lit(2))], otherwise: Box::new(lit(3)) };
        assert_eq!(case.eval(&[Owned::Int(5)]), Owned::Int(1));
        assert_eq!(case.eval(&[Owned::Int(50)]), Owned::Int(2));
        assert_eq!(case.eval(&[Owned::Int(500)]), Owned::Int(3));
        assert_eq!(case.eval(&[Owned::Null]), Owned::Int(3), "NULL < 10 is unknown: not taken");
        assert_eq!(case.map_columns(&|i| i + 1).eval(&[Owned::Null, Owned::Int(5)]), Owned::Int(1));
    }
}
