//! The keys of a created view's groups: what a `GROUP BY` of the views kept as groups names
//! (a customer, a category, an hour, a day, or nothing), and a group's key as the dataflow,
//! the reads and the kept views' files hold it.
//!
//! ```
//! use atelier_lambda::dataflow::group_key::{GroupKey, ViewKey};
//! use atelier_lambda::event::Txn;
//! let txn = Txn { customer: "Ali".into(), cents: 500, ts: Some(1_700_003_599), category: None };
//! assert_eq!(ViewKey::Hour.of_txn(&txn), GroupKey::Timestamp(1_700_002_800));
//! ```

use serde::{Deserialize, Serialize};

use crate::event::Txn;

/// What a created view's groups are keyed by: a customer, a category, an hour, a day, or
/// nothing (one group).
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
    /// The key of a transaction (the view keeps it in that group).
    pub fn of_txn(self, txn: &Txn) -> GroupKey {
        let truncate = |step: i64| txn.ts.map_or(GroupKey::Null, |t| GroupKey::Timestamp(t.div_euclid(step) * step));
        match self {
            ViewKey::Nothing => GroupKey::Null,
            ViewKey::Customer => GroupKey::Text(std::sync::Arc::clone(&txn.customer)),
            ViewKey::Category => {
                txn.category.as_ref().map_or(GroupKey::Null, |c| GroupKey::Text(std::sync::Arc::clone(c)))
            }
            ViewKey::Hour => truncate(3600),
            ViewKey::Day => truncate(86_400),
        }
    }
}

/// The key of one group of a created view.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum GroupKey {
    /// No value (the one group of a view without key; no category; no event time).
    Null,
    /// A customer or a category.
    Text(std::sync::Arc<str>),
    /// An hour or a day, in seconds since the epoch.
    Timestamp(i64),
}

/// A group key as the snapshots write it (JSON).
impl super::groups::KeyCodec for GroupKey {
    fn encode(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self).expect("a value serializes into memory");
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_of_a_transaction_is_its_customer_category_hour_or_day() {
        let txn = Txn { customer: "Ali".into(), cents: 500, ts: Some(1_700_003_599), category: None };
        assert_eq!(ViewKey::Nothing.of_txn(&txn), GroupKey::Null);
        assert_eq!(ViewKey::Customer.of_txn(&txn), GroupKey::Text("Ali".into()));
        assert_eq!(ViewKey::Category.of_txn(&txn), GroupKey::Null);
        assert_eq!(ViewKey::Hour.of_txn(&txn), GroupKey::Timestamp(1_700_002_800));
        assert_eq!(ViewKey::Day.of_txn(&txn), GroupKey::Timestamp(1_699_920_000));
        let before_1970 = Txn { ts: Some(-3_601), ..txn };
        assert_eq!(ViewKey::Hour.of_txn(&before_1970), GroupKey::Timestamp(-7_200), "hours round down");
    }
}
