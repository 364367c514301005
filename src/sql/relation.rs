//! The relations SQL reads: the live transactions and every view, each with the columns the
//! HTTP API shows, and the column a read can seek on.
//!
//! | relation | columns | seek |
//! |---|---|---|
//! | `transactions` | id, customer, amount, category, ts | `id = ...`: one lookup in the worker that holds it |
//! | `customers` | customer, total, count, min, max, avg | `customer` equal or in a range: a cursor seek |
//! | `categories` | category, total, count, avg | |
//! | `hourly` | hour, total, count, avg | |
//! | `overall` | total, count, customers, avg | |
//! | `dead_letters` | reason, count | |
//! | `offsets` | topic, partition, next_offset | |

use std::collections::BTreeMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use super::value::Type;

/// A relation SQL can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Relation {
    /// The live transactions, after upserts and deletes: what every view is computed from.
    Transactions,
    /// customer → total, count, min, max, avg
    Customers,
    /// category → total, count, avg
    Categories,
    /// UTC hour of event time → total, count, avg
    Hourly,
    /// one row: total, count, customers, avg
    Overall,
    /// refused records by reason
    DeadLetters,
    /// Kafka partition → the next offset the views reflect
    Offsets,
    /// A view created at run time, by id (see [`super::views`]).
    View(u64),
}

impl Relation {
    /// Every relation, in `SHOW TABLES` order.
    pub const ALL: [Relation; 7] = [
        Relation::Transactions,
        Relation::Customers,
        Relation::Categories,
        Relation::Hourly,
        Relation::Overall,
        Relation::DeadLetters,
        Relation::Offsets,
    ];

    /// The relation named `name` (case-insensitive).
    pub fn named(name: &str) -> Option<Relation> {
        Relation::ALL.into_iter().find(|r| r.name().eq_ignore_ascii_case(name))
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Relation::Transactions => "transactions",
            Relation::Customers => "customers",
            Relation::Categories => "categories",
            Relation::Hourly => "hourly",
            Relation::Overall => "overall",
            Relation::DeadLetters => "dead_letters",
            Relation::Offsets => "offsets",
            Relation::View(id) => schema(id).map_or("(a dropped view)", |s| s.name),
        }
    }

    /// Its columns, in order.
    pub fn columns(self) -> &'static [(&'static str, Type)] {
        use Type::*;
        match self {
            Relation::Transactions => {
                &[("id", Text), ("customer", Text), ("amount", Numeric), ("category", Text), ("ts", Timestamp)]
            }
            Relation::Customers => &[
                ("customer", Text),
                ("total", Numeric),
                ("count", BigInt),
                ("min", Numeric),
                ("max", Numeric),
                ("avg", Numeric),
            ],
            Relation::Categories => &[("category", Text), ("total", Numeric), ("count", BigInt), ("avg", Numeric)],
            Relation::Hourly => &[("hour", Timestamp), ("total", Numeric), ("count", BigInt), ("avg", Numeric)],
            Relation::Overall => &[("total", Numeric), ("count", BigInt), ("customers", BigInt), ("avg", Numeric)],
            Relation::DeadLetters => &[("reason", Text), ("count", BigInt)],
            Relation::Offsets => &[("topic", Text), ("partition", BigInt), ("next_offset", BigInt)],
            Relation::View(id) => schema(id).map_or(&[], |s| s.columns),
        }
    }

    /// The column a read can seek on instead of scanning, if any.
    pub fn key(self) -> Option<usize> {
        match self {
            Relation::Transactions | Relation::Customers => Some(0),
            Relation::View(id) => schema(id).and_then(|s| s.key),
            _ => None,
        }
    }

    /// The index of column `name` (case-insensitive).
    pub fn column(self, name: &str) -> Option<usize> {
        self.columns().iter().position(|(c, _)| c.eq_ignore_ascii_case(name))
    }
}

/// A created view's schema, as the planner and the readers see it.
#[derive(Debug)]
pub struct Schema {
    /// Its name.
    pub name: &'static str,
    /// Its columns.
    pub columns: &'static [(&'static str, Type)],
    /// The column a read can seek on.
    pub key: Option<usize>,
}

static SCHEMAS: RwLock<BTreeMap<u64, &'static Schema>> = RwLock::new(BTreeMap::new());

/// Registers the schema of created view `id` for [`Relation::View`] (the first one given
/// for an id in this process stays): its name, columns and the column a read can seek on.
pub fn register_schema(id: u64, name: &str, columns: Vec<(String, Type)>, key: Option<usize>) {
    let mut schemas = SCHEMAS.write().unwrap_or_else(|p| p.into_inner());
    if schemas.contains_key(&id) {
        return;
    }
    let columns: Vec<(&'static str, Type)> =
        columns.into_iter().map(|(n, t)| (&*Box::leak(n.into_boxed_str()), t)).collect();
    let schema = Schema {
        name: Box::leak(name.to_owned().into_boxed_str()),
        columns: Box::leak(columns.into_boxed_slice()),
        key,
    };
    schemas.insert(id, Box::leak(Box::new(schema)));
}

/// The schema of created view `id`, if registered.
pub fn schema(id: u64) -> Option<&'static Schema> {
    SCHEMAS.read().unwrap_or_else(|p| p.into_inner()).get(&id).copied()
}
