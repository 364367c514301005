//! The rows of the arrangements kept per key, as the cells of their relations' columns: what
//! a scan sends of a key's value, at a time or as a change.
//!
//! ```text
//! customers:  Ali → {count 3, total 32000, min 2000, max 20000}
//!             [Ali, 320.00, 3, 20.00, 200.00, 106.67]
//! ```

use super::columns::Cell;
use super::walk::ScanKey;
use crate::dataflow::created::GroupKey;
use crate::dataflow::rows::CustomerRow;

/// A row of `customers`: customer, total, count, min, max, avg.
pub fn customer_cells<'a>(name: &'a str, row: &CustomerRow) -> [Cell<'a>; 6] {
    let avg = crate::amount::divide_rounded(row.total, i128::from(row.count.max(1)));
    [
        Cell::Text(name),
        Cell::Cents(row.total),
        Cell::Int(row.count),
        Cell::Cents(i128::from(row.min)),
        Cell::Cents(i128::from(row.max)),
        Cell::Cents(avg),
    ]
}

/// A row of a created view's groups: its key (if it has one), count, total, min, max.
pub fn group_cells<'a>(key: Option<&'a GroupKey>, row: &CustomerRow) -> Vec<Cell<'a>> {
    let stats = [
        Cell::Int(row.count),
        Cell::Cents(row.total),
        Cell::Cents(i128::from(row.min)),
        Cell::Cents(i128::from(row.max)),
    ];
    key.map(ScanKey::cell).into_iter().chain(stats).collect()
}
