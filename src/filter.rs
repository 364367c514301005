//! Filters: the workshop's exercises as configuration, not code.
//!
//! An *event filter* keeps only the transactions it accepts (`amount >= 100`); a *view
//! filter* keeps only the customers it accepts (`total > 200`). A filter is one or more
//! comparisons joined by `and`:
//!
//! ```
//! use atelier_lambda::filter::{Filter, Kind};
//! let f = Filter::parse("amount >= 100 and category == 'books'", Kind::Event).unwrap();
//! assert_eq!(f.to_string(), "amount >= 100 and category == 'books'");
//! assert!(Filter::parse("total > 200", Kind::Event).is_err()); // `total` is a view field
//! ```
//!
//! Amounts compare exactly, in cents; `count` compares as a whole number.

use std::fmt;

use thiserror::Error;

use crate::amount::{format_cents, parse_cents};
use crate::dataflow::rows::CustomerRow;
use crate::event::Txn;

/// Which records a filter applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Transactions: fields `amount`, `customer`, `category`.
    Event,
    /// Customer rows: fields `total`, `count`, `min`, `max`, `avg`, `customer`.
    View,
}

impl Kind {
    fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Event => &["amount", "customer", "category"],
            Kind::View => &["total", "count", "min", "max", "avg", "customer"],
        }
    }
}

/// A filter that could not be parsed.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("bad filter {text:?}: {why}")]
pub struct FilterError {
    text: String,
    why: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Cmp {
    const ALL: [(&'static str, Cmp); 7] = [
        (">=", Cmp::Ge),
        ("<=", Cmp::Le),
        ("!=", Cmp::Ne),
        ("==", Cmp::Eq),
        (">", Cmp::Gt),
        ("<", Cmp::Lt),
        ("=", Cmp::Eq),
    ];

    fn holds<T: Ord + ?Sized>(self, left: &T, right: &T) -> bool {
        match self {
            Cmp::Lt => left < right,
            Cmp::Le => left <= right,
            Cmp::Gt => left > right,
            Cmp::Ge => left >= right,
            Cmp::Eq => left == right,
            Cmp::Ne => left != right,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Literal {
    /// A number, scaled to cents (a count of 3 is 300).
    Number(i128),
    Text(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Clause {
    field: &'static str,
    cmp: Cmp,
    value: Literal,
}

/// A conjunction of comparisons over named fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    clauses: Vec<Clause>,
}

impl Filter {
    /// Parses `field op value [and field op value ...]` for records of `kind`.
    pub fn parse(text: &str, kind: Kind) -> Result<Filter, FilterError> {
        let error = |why: String| FilterError { text: text.to_owned(), why };
        let mut clauses = Vec::new();
        for part in split_and(text) {
            let part = part.trim();
            let (at, sym, cmp) = Cmp::ALL
                .iter()
                .filter_map(|(sym, cmp)| part.find(sym).map(|at| (at, *sym, *cmp)))
                .min_by_key(|(at, sym, _)| (*at, std::cmp::Reverse(sym.len())))
                .ok_or_else(|| error(format!("{part:?} has no comparison (>=, >, <=, <, ==, !=)")))?;
            let name = part[..at].trim();
            let field = kind
                .fields()
                .iter()
                .find(|f| **f == name)
                .ok_or_else(|| error(format!("unknown field {name:?}; use one of {}", kind.fields().join(", "))))?;
            let raw = part[at + sym.len()..].trim();
            let value = if matches!(*field, "customer" | "category") {
                let unquoted = raw
                    .strip_prefix('\'')
                    .and_then(|r| r.strip_suffix('\''))
                    .or_else(|| raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
                    .unwrap_or(raw);
                Literal::Text(unquoted.to_owned())
            } else {
                let cents = parse_cents(raw).map_err(|e| error(format!("{raw:?}: {e}")))?;
                Literal::Number(i128::from(cents))
            };
            clauses.push(Clause { field, cmp, value });
        }
        if clauses.is_empty() {
            return Err(error("empty filter".into()));
        }
        Ok(Filter { clauses })
    }

    /// Whether a transaction passes (an event filter).
    pub fn accepts_txn(&self, txn: &Txn) -> bool {
        self.accepts(|field| match field {
            "amount" => Some(Literal::Number(i128::from(txn.cents))),
            "customer" => Some(Literal::Text(txn.customer.to_string())),
            "category" => txn.category.as_deref().map(|c| Literal::Text(c.to_owned())),
            _ => None,
        })
    }

    /// Whether a customer row passes (a view filter).
    pub fn accepts_row(&self, customer: &str, row: &CustomerRow) -> bool {
        self.accepts(|field| match field {
            "total" => Some(Literal::Number(row.total)),
            "count" => Some(Literal::Number(i128::from(row.count) * 100)),
            "min" => Some(Literal::Number(i128::from(row.min))),
            "max" => Some(Literal::Number(i128::from(row.max))),
            "avg" => Some(Literal::Number(crate::amount::average_cents(row.total, row.count))),
            "customer" => Some(Literal::Text(customer.to_owned())),
            _ => None,
        })
    }

    fn accepts(&self, value_of: impl Fn(&str) -> Option<Literal>) -> bool {
        self.clauses.iter().all(|clause| match (value_of(clause.field), &clause.value) {
            (Some(Literal::Number(left)), Literal::Number(right)) => clause.cmp.holds(&left, right),
            (Some(Literal::Text(left)), Literal::Text(right)) => clause.cmp.holds(left.as_str(), right.as_str()),
            // An absent field (no category) only satisfies `!=`.
            (None, _) => clause.cmp == Cmp::Ne,
            _ => false,
        })
    }
}

fn split_and(text: &str) -> impl Iterator<Item = &str> {
    text.split(" and ").flat_map(|p| p.split(" AND ")).filter(|p| !p.trim().is_empty())
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, clause) in self.clauses.iter().enumerate() {
            if i > 0 {
                f.write_str(" and ")?;
            }
            let value = match &clause.value {
                Literal::Number(cents) => format_cents(*cents),
                Literal::Text(text) => format!("'{text}'"),
            };
            write!(f, "{} {} {}", clause.field, clause.cmp.symbol(), value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(cents: i64, category: Option<&str>) -> Txn {
        Txn { customer: "Ali".into(), cents, ts: None, category: category.map(Into::into) }
    }

    #[test]
    fn the_workshop_exercises() {
        let events = Filter::parse("amount >= 100", Kind::Event).unwrap();
        assert!(events.accepts_txn(&txn(10000, None)));
        assert!(!events.accepts_txn(&txn(9999, None)));
        let views = Filter::parse("total > 200", Kind::View).unwrap();
        let row = |total| CustomerRow { total, count: 2, min: 0, max: 0 };
        assert!(views.accepts_row("Ali", &row(32000)));
        assert!(!views.accepts_row("Sara", &row(20000)));
    }

    #[test]
    fn conjunctions_counts_and_text() {
        let f = Filter::parse("count >= 2 and customer != 'Sara'", Kind::View).unwrap();
        assert!(f.accepts_row("Ali", &CustomerRow { total: 1, count: 2, min: 0, max: 0 }));
        assert!(!f.accepts_row("Ali", &CustomerRow { total: 1, count: 1, min: 0, max: 0 }));
        assert!(!f.accepts_row("Sara", &CustomerRow { total: 1, count: 5, min: 0, max: 0 }));
        let c = Filter::parse("category == books", Kind::Event).unwrap();
        assert!(c.accepts_txn(&txn(1, Some("books"))));
        assert!(!c.accepts_txn(&txn(1, None)));
    }

    #[test]
    fn clear_errors() {
        assert!(Filter::parse("", Kind::Event).is_err());
        assert!(Filter::parse("amount", Kind::Event).unwrap_err().to_string().contains("no comparison"));
        assert!(Filter::parse("price > 3", Kind::Event).unwrap_err().to_string().contains("unknown field"));
        assert!(Filter::parse("amount > lots", Kind::Event).unwrap_err().to_string().contains("not a number"));
    }
}
