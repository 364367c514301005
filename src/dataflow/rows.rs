//! The rows the views hold, and where they live: a leaf that the aggregates, the views and
//! the readers share.
//!
//! ```text
//! customers:  "Ali" → CustomerRow { total: 40000, count: 3, min: 8000, max: 20000 }
//! totals:     Dimension::All | Category(Some("books")) | Hour(483000) → Stats { count, cents }
//! ```

use std::sync::Arc;

use differential_dataflow::Hashable;
use serde::{Deserialize, Serialize};

/// The worker (of `workers`, numbered over every process) that holds `customer`'s row in the
/// `customers` view: rows are computed and arranged where this says, so that a point lookup
/// asks only that worker. The hash is seeded alike in every process.
pub fn customer_owner(customer: &str, workers: usize) -> usize {
    (customer.hashed() % workers as u64) as usize
}

/// One customer's aggregate: the workshop's `total_amount` and its companions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CustomerRow {
    /// Sum of amounts, in cents.
    pub total: i128,
    /// Number of live transactions.
    pub count: i64,
    /// Smallest amount, in cents.
    pub min: i64,
    /// Largest amount, in cents.
    pub max: i64,
}

/// What a total is taken over: everything, one category, or one UTC hour.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Dimension {
    /// All live transactions (the `overall` view).
    All,
    /// One category; `None` for transactions without one (the `categories` view).
    Category(Option<Arc<str>>),
    /// One UTC hour of event time, in hours since the epoch (the `hourly` view).
    Hour(i64),
}
