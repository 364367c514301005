//! Views created at run time: `CREATE VIEW name AS SELECT ...`, a definition every worker
//! installs on the running dataflow ([`crate::dataflow::created`]).
//!
//! Two kinds:
//!
//! | definition | how it is kept |
//! |---|---|
//! | `SELECT [key,] aggregates FROM transactions [WHERE] [GROUP BY key] [HAVING]` | a dataflow of its own, fed the live transactions (backfilled from the version table when it is created, then every change), that keeps per key count, total, min and max, arranged by key |
//! | `SELECT columns FROM <view> [WHERE]` (a view over a view's rows) | nothing more: read from that view's arrangement, filtered |
//!
//! The key is `customer`, `category`, `date_trunc('hour' \| 'day', ts)` or nothing; the
//! aggregates are `count(*)` and `count`, `sum`, `min`, `max`, `avg` of `amount`.
//!
//! ```text
//! CREATE VIEW big_spenders AS SELECT customer, sum(amount) AS total, count(*) FROM transactions
//!   WHERE amount >= 100 GROUP BY customer HAVING sum(amount) > 200
//! → Aggregate { key: Customer, filter: amount >= 100, stage: [customer, sum, count],
//!               columns: customer ← 0, total ← 1, count ← 2, having: $1 > 200 }
//! ```
//!
//! A created view's relation is [`Relation::View`]: its schema is registered here, once per
//! process, when the view is installed (its column names then live as long as the process:
//! a few bytes per view created).

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::expr::AggFunc;
use super::expr::Expr;
use super::relation::{self, Relation};
use super::value::{Type, Value};
use crate::dataflow::rows::CustomerRow;

/// What a created view is grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ViewKey {
    /// One group (no `GROUP BY`).
    Nothing,
    /// `GROUP BY customer`
    Customer,
    /// `GROUP BY category` (NULL is a group)
    Category,
    /// `GROUP BY date_trunc('hour', ts)` (NULL for no event time)
    Hour,
    /// `GROUP BY date_trunc('day', ts)`
    Day,
}

impl ViewKey {
    /// The key of a transaction row (`id, customer, amount, category, ts`).
    pub fn of(self, row: &[Value]) -> Value {
        let truncate = |step: i64| match row[4] {
            Value::Timestamp(t) => Value::Timestamp(t.div_euclid(step) * step),
            _ => Value::Null,
        };
        match self {
            ViewKey::Nothing => Value::Null,
            ViewKey::Customer => row[1].clone(),
            ViewKey::Category => row[3].clone(),
            ViewKey::Hour => truncate(3600),
            ViewKey::Day => truncate(86_400),
        }
    }

    /// The key of a transaction: what [`ViewKey::of`] gives for its row, without building
    /// the row (a maintained view computes it for every change it is fed).
    pub fn of_txn(self, txn: &crate::event::Txn) -> Value {
        let truncate = |step: i64| txn.ts.map_or(Value::Null, |t| Value::Timestamp(t.div_euclid(step) * step));
        match self {
            ViewKey::Nothing => Value::Null,
            ViewKey::Customer => Value::Text(std::sync::Arc::clone(&txn.customer)),
            ViewKey::Category => txn.category.as_ref().map_or(Value::Null, |c| Value::Text(std::sync::Arc::clone(c))),
            ViewKey::Hour => truncate(3600),
            ViewKey::Day => truncate(86_400),
        }
    }

    fn ty(self) -> Type {
        match self {
            ViewKey::Hour | ViewKey::Day => Type::Timestamp,
            _ => Type::Text,
        }
    }
}

/// How a created view is computed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ViewBody {
    /// Maintained by a dataflow over the live transactions.
    Aggregate {
        /// Transactions kept (`WHERE`, over the transaction row).
        filter: Option<Expr>,
        /// The group key.
        key: ViewKey,
        /// The aggregates, in the order of the stage row (after the key, if any).
        aggs: Vec<AggFunc>,
        /// `HAVING`, over the stage row.
        having: Option<Expr>,
        /// Each column: its name and the stage row's value it shows.
        columns: Vec<(String, usize)>,
    },
    /// Another relation's rows that pass a filter.
    Filter {
        /// The relation read.
        base: Relation,
        /// Rows kept, over the base's row.
        filter: Option<Expr>,
        /// Each column: its name and the base row's value it shows.
        columns: Vec<(String, usize)>,
    },
}

/// A created view, as installed on every worker and kept in the state directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewDef {
    /// Unique in this process's life (and in the state directory).
    pub id: u64,
    /// Its name.
    pub name: String,
    /// The statement that created it.
    pub sql: String,
    /// How it is computed.
    pub body: ViewBody,
}

impl ViewDef {
    /// Its columns' names and types.
    pub fn columns(&self) -> Vec<(String, Type)> {
        match &self.body {
            ViewBody::Aggregate { key, aggs, columns, .. } => {
                let keyed = usize::from(*key != ViewKey::Nothing);
                let stage: Vec<Type> = (0..keyed)
                    .map(|_| key.ty())
                    .chain(aggs.iter().map(|a| if *a == AggFunc::Count { Type::BigInt } else { Type::Numeric }))
                    .collect();
                columns.iter().map(|(n, i)| (n.clone(), stage[*i])).collect()
            }
            ViewBody::Filter { base, columns, .. } => {
                let types = base.columns();
                columns.iter().map(|(n, i)| (n.clone(), types[*i].1)).collect()
            }
        }
    }

    /// The column a read can seek on: the group key, when it is shown first; for a view over
    /// a view, its base's key column.
    pub fn key_column(&self) -> Option<usize> {
        match &self.body {
            ViewBody::Aggregate { key, columns, .. } if *key != ViewKey::Nothing => {
                (columns.first().map(|(_, i)| *i) == Some(0)).then_some(0)
            }
            // A view over a view's rows keeps its base's key, where it shows it.
            ViewBody::Filter { base, columns, .. } => {
                let key = base.key()?;
                columns.iter().position(|(_, i)| *i == key)
            }
            _ => None,
        }
    }

    /// A maintained group's row as the view shows it, or `None` when `HAVING` leaves it out.
    pub fn row(&self, key: &Value, row: &CustomerRow) -> Option<Vec<Value>> {
        let ViewBody::Aggregate { key: kind, aggs, having, columns, .. } = &self.body else { return None };
        let mut stage = Vec::with_capacity(aggs.len() + 1);
        if *kind != ViewKey::Nothing {
            stage.push(key.clone());
        }
        stage.extend(aggs.iter().map(|a| match a {
            AggFunc::Count => Value::Int(row.count),
            AggFunc::Sum => Value::Numeric(row.total),
            AggFunc::Min => Value::Numeric(i128::from(row.min)),
            AggFunc::Max => Value::Numeric(i128::from(row.max)),
            AggFunc::Avg => Value::Numeric(super::expr::divide_rounded(row.total, i128::from(row.count.max(1)))),
        }));
        if having.as_ref().is_some_and(|h| !h.accepts(&stage)) {
            return None;
        }
        Some(columns.iter().map(|(_, i)| stage[*i].clone()).collect())
    }
}

/// A new view id, unique in this process and above `floor` (the ids in the state directory).
pub fn next_id(floor: u64) -> u64 {
    static NEXT: Mutex<u64> = Mutex::new(1);
    let mut next = NEXT.lock().unwrap_or_else(|p| p.into_inner());
    *next = (*next).max(floor + 1);
    *next += 1;
    *next - 1
}

/// Registers `def`'s schema for [`Relation::View`] (once per id in this process).
pub fn register(def: &ViewDef) {
    if relation::schema(def.id).is_some() {
        return;
    }
    // Before the registry's lock is taken: a view over a view reads its base's schema.
    relation::register_schema(def.id, &def.name, def.columns(), def.key_column());
}

/// What the planner needs of the created views: each one by its name.
pub trait FindView {
    /// The view named `name` (case-insensitive), if there is one.
    fn find_view(&self, name: &str) -> Option<&ViewDef>;
}

/// No created views (a statement planned on its own).
impl FindView for () {
    fn find_view(&self, _: &str) -> Option<&ViewDef> {
        None
    }
}
