//! The relations a statement reads: the live transactions, the built-in views, and the views
//! created at run time — each with its columns, in one place. The catalog of the SQL side
//! ([`crate::sql::catalog`]) lists them by name; a worker's scan ([`super::scan`]) makes their
//! rows.
//!
//! | relation | columns | key (a scan seeks it) | where its rows are |
//! |---|---|---|---|
//! | `transactions` | id, customer, amount, category, ts | `id` | each worker's version table: the live transactions it holds |
//! | `customers` | customer, total, count, min, max, avg | `customer` | the `customers` arrangement, by customer |
//! | `categories` | category, total, count, avg | `category` | the `totals` arrangement |
//! | `hourly` | hour, total, count, avg | `hour` | the `totals` arrangement |
//! | `overall` | total, count, customers, avg | | every worker holds a part of its one row |
//! | `dead_letters` | reason, count | `reason` | the refused records, by reason |
//! | `offsets` | topic, partition, next_offset | | each worker's partitions |
//! | a created view | its own | its group key, if shown first | its maintained groups |
//! | a compiled view | its own | | each worker's share of its rows' arrangement |
//! | a table | as declared | its primary key, when one text column | each worker's share of its arrangement |

use serde::{Deserialize, Serialize};

use super::columns::ColumnType;
use ColumnType::*;

/// A relation a statement can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
    /// The maintained groups of a view created at run time, by id: its key (if any), then
    /// `count`, `total`, `min`, `max` of the amounts of the transactions it keeps.
    Groups(u64),
    /// A table created at run time, by id: its columns, as declared.
    Table(u64),
    /// A view compiled from its plan, by id: its rows, its columns given by the view.
    Rows(u64),
}

/// The built-in relations, in `SHOW TABLES` order.
pub const BUILT_IN: [Relation; 7] = [
    Relation::Transactions,
    Relation::Customers,
    Relation::Categories,
    Relation::Hourly,
    Relation::Overall,
    Relation::DeadLetters,
    Relation::Offsets,
];

impl Relation {
    /// The built-in relation named `name` (case-insensitive).
    pub fn named(name: &str) -> Option<Relation> {
        BUILT_IN.into_iter().find(|r| r.name().eq_ignore_ascii_case(name))
    }

    /// Its name (a created view's groups have none of their own: their view has).
    pub fn name(self) -> &'static str {
        match self {
            Relation::Transactions => "transactions",
            Relation::Customers => "customers",
            Relation::Categories => "categories",
            Relation::Hourly => "hourly",
            Relation::Overall => "overall",
            Relation::DeadLetters => "dead_letters",
            Relation::Offsets => "offsets",
            Relation::Groups(_) => "groups",
            Relation::Table(_) => "table",
            Relation::Rows(_) => "rows",
        }
    }

    /// The columns of a built-in relation, in order (a created view's are in its definition).
    pub fn columns(self) -> &'static [(&'static str, ColumnType)] {
        match self {
            Relation::Transactions => {
                &[("id", Text), ("customer", Text), ("amount", Money), ("category", Text), ("ts", Time)]
            }
            Relation::Customers => {
                &[("customer", Text), ("total", Money), ("count", Int), ("min", Money), ("max", Money), ("avg", Money)]
            }
            Relation::Categories => &[("category", Text), ("total", Money), ("count", Int), ("avg", Money)],
            Relation::Hourly => &[("hour", Time), ("total", Money), ("count", Int), ("avg", Money)],
            Relation::Overall => &[("total", Money), ("count", Int), ("customers", Int), ("avg", Money)],
            Relation::DeadLetters => &[("reason", Text), ("count", Int)],
            Relation::Offsets => &[("topic", Text), ("partition", Int), ("next_offset", Int)],
            Relation::Groups(_) | Relation::Table(_) | Relation::Rows(_) => &[],
        }
    }

    /// The column a scan can seek instead of reading every row, if any: the key its rows
    /// are kept by.
    pub fn key(self) -> Option<usize> {
        match self {
            Relation::Transactions | Relation::Customers | Relation::Categories | Relation::Hourly => Some(0),
            Relation::DeadLetters => Some(0),
            Relation::Overall | Relation::Offsets | Relation::Groups(_) | Relation::Table(_) | Relation::Rows(_) => {
                None
            }
        }
    }

    /// Whether every worker holds a part of each row (to be added up), rather than each row
    /// being whole in one worker.
    pub fn split_over_workers(self) -> bool {
        self == Relation::Overall
    }
}

/// The columns of a created view's maintained groups, after its key (if it has one).
pub const GROUP_STATS: [(&str, ColumnType); 4] = [("count", Int), ("total", Money), ("min", Money), ("max", Money)];
