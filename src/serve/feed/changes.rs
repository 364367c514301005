//! Reading a view by its changes: what a pump reads when the view can say which of its keys
//! changed, instead of reading every row at every step.
//!
//! A view kept per key — `customers`, or a view created at run time with a `GROUP BY` —
//! knows, from its trace, the keys that changed after a time (a superset once compacted).
//! The pump's new rows are its rows less those of the changed keys, plus the rows those keys
//! have now (none, for a key gone or cut by `HAVING`):
//!
//! ```text
//! rows at 7:        Ali 320, Mounir 350, Sara 180
//! changed after 7:  Ali, Sara            present now: Ali 400
//! rows at 9:        Ali 400, Mounir 350
//! ```
//!
//! A second of changes touches few keys of a large view, so a step costs in proportion to
//! what changed, not to the view.

use std::collections::HashSet;

use serde_json::Value;

use super::{add_row, Rows};
use crate::compute::relation::Relation;
use crate::dataflow::Time;
use crate::reading::{ReadScope, Reading};

/// A view that can be read by its changes.
pub(super) enum ByChanges {
    /// The `customers` view.
    Customers,
}

impl ByChanges {
    /// How view `name` can be read by its changes, if it can (other views are read whole).
    pub fn of(name: &str) -> Option<ByChanges> {
        (name == "customers").then_some(ByChanges::Customers)
    }

    /// What the workers read: the changes after `since`.
    pub fn scope(&self, since: Time) -> ReadScope {
        match self {
            ByChanges::Customers => ReadScope::CustomerChanges { since },
        }
    }

    /// The rows after the changes that `reading` holds: `rows` less those of the changed
    /// keys, plus the rows present now (each with its key, column `key` of the row). The
    /// changes are taken out of `reading`, which keeps its time and offsets.
    pub fn apply(&self, reading: &mut Reading, rows: &Rows, key: Option<usize>) -> Rows {
        let changed: HashSet<String> = reading.changed.drain(..).map(|name| Value::String(name).to_string()).collect();
        let present: Vec<Vec<Value>> =
            reading.customers.drain(..).map(|(name, row)| customer_row(&name, &row)).collect();
        let columns: Vec<&str> = Relation::Customers.columns().iter().map(|(n, _)| *n).collect();
        let mut rows = rows.clone();
        rows.retain(|_, (row, _)| !row.key.as_ref().is_some_and(|k| changed.contains(&k.to_string())));
        for cells in present {
            add_row(&mut rows, &columns, cells, key);
        }
        rows
    }
}

/// A row of `customers` as JSON, as the SQL engine answers it (amounts exact and shortest).
fn customer_row(name: &str, row: &crate::dataflow::rows::CustomerRow) -> Vec<Value> {
    let money = |cents: i128| {
        let text = crate::amount::format_cents(cents);
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    let avg = crate::amount::divide_rounded(row.total, i128::from(row.count.max(1)));
    vec![
        Value::String(name.to_owned()),
        money(row.total),
        row.count.into(),
        money(i128::from(row.min)),
        money(i128::from(row.max)),
        money(avg),
    ]
}
