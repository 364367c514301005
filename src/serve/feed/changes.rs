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
use crate::dataflow::Time;
use crate::reading::{ReadScope, Reading};
use crate::serve::Serving;
use crate::sql::relation::Relation;
use crate::sql::scan::customer_row;
use crate::sql::views::ViewBody;

/// A view that can be read by its changes, and its columns.
pub(super) enum ByChanges {
    /// The `customers` view.
    Customers,
    /// A view created at run time, kept per key: its id and its columns' names.
    Created {
        /// The view's id.
        id: u64,
        /// Its columns, in order.
        columns: Vec<String>,
    },
}

impl ByChanges {
    /// How view `name` can be read by its changes, if it can (other views are read whole).
    pub fn of(serving: &Serving, name: &str) -> Option<ByChanges> {
        if name == "customers" {
            return Some(ByChanges::Customers);
        }
        let catalog = serving.catalog().lock().unwrap_or_else(|p| p.into_inner());
        let def = catalog.get(name)?;
        let keyed = matches!(def.body, ViewBody::Aggregate { .. }) && def.key_column().is_some();
        keyed.then(|| ByChanges::Created { id: def.id, columns: def.columns().into_iter().map(|(n, _)| n).collect() })
    }

    /// Whether view `name` is still the one this was made of (not dropped, nor dropped and
    /// created again under its name).
    pub fn is_current(&self, serving: &Serving, name: &str) -> bool {
        match self {
            ByChanges::Customers => true,
            ByChanges::Created { id, .. } => {
                let catalog = serving.catalog().lock().unwrap_or_else(|p| p.into_inner());
                catalog.get(name).is_some_and(|def| def.id == *id)
            }
        }
    }

    /// What the workers read: the changes after `since`.
    pub fn scope(&self, since: Time) -> ReadScope {
        match self {
            ByChanges::Customers => ReadScope::CustomerChanges { since },
            ByChanges::Created { id, .. } => ReadScope::ViewChanges { view: *id, since },
        }
    }

    /// The rows after the changes that `reading` holds: `rows` less those of the changed
    /// keys, plus the rows present now (each with its key, column `key` of the row). The
    /// changes are taken out of `reading`, which keeps its time and offsets.
    pub fn apply(&self, reading: &mut Reading, rows: &Rows, key: Option<usize>) -> Rows {
        let (changed, present, columns): (HashSet<String>, Vec<Vec<Value>>, Vec<&str>) = match self {
            ByChanges::Customers => (
                reading.changed.drain(..).map(|name| Value::String(name).to_string()).collect(),
                reading.customers.drain(..).map(|(name, row)| json_row(&customer_row(&name, &row))).collect(),
                Relation::Customers.columns().iter().map(|(n, _)| *n).collect(),
            ),
            ByChanges::Created { columns, .. } => (
                reading.changed_keys.drain(..).map(|k| k.to_json().to_string()).collect(),
                reading.rows.drain(..).map(|row| json_row(&row)).collect(),
                columns.iter().map(String::as_str).collect(),
            ),
        };
        let mut rows = rows.clone();
        rows.retain(|_, (row, _)| !row.key.as_ref().is_some_and(|k| changed.contains(&k.to_string())));
        for cells in present {
            add_row(&mut rows, &columns, cells, key);
        }
        rows
    }
}

/// A row's cells as JSON.
fn json_row(row: &[crate::sql::value::Value]) -> Vec<Value> {
    row.iter().map(crate::sql::value::Value::to_json).collect()
}
