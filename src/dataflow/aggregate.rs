//! Aggregates computed with hash maps, emitting only what changed at each logical time.
//!
//! Differential's own `reduce` re-reads every value of a changed group and arranges its
//! input sorted — for the `customers` view that meant sorting every `(customer, amount)` of
//! the history. These operators keep their state in hash maps and, per completed time, emit
//! one retraction and one insertion per *changed* key:
//!
//! - [`customer_rows`]: per customer, count, total and the multiset of amounts (so that min
//!   and max stay exact when a transaction is retracted). A change costs O(log n) for that
//!   customer, whatever the size of the history.
//! - [`sum_by`]: per key, a [`Stats`] sum, pre-aggregated per worker before it is exchanged
//!   and arranged, so that a million transactions become one update per key.
//!
//! For example, with Ali's 120 and 200 at time 0 and a correction of 120 to 80 at time 1:
//!
//! ```text
//! customer_rows, time 0: (Ali {total 320, count 2, min 120, max 200}, 0, +1)
//! customer_rows, time 1: (Ali {.. 320 ..}, 1, -1), (Ali {total 280, count 2, min 80, max 200}, 1, +1)
//! sum_by(overall), time 1: ((), 1, Stats { count: 0, cents: -4000 })
//! ```

use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::Arc;

use differential_dataflow::difference::{IsZero, Semigroup};
use differential_dataflow::{AsCollection, ExchangeData, Hashable, VecCollection};
use timely::dataflow::channels::pact::{Exchange, Pipeline};

use super::in_order::{unary_in_order, Ordered};
use super::stats::Stats;
use super::upsert::FastMap;
use super::views::CustomerRow;
use super::Time;
use crate::event::Txn;

/// Every customer's row, as a collection that changes once per changed customer and time.
pub fn customer_rows<'scope>(
    txns: VecCollection<'scope, Time, Txn, isize>,
) -> VecCollection<'scope, Time, (String, CustomerRow), isize> {
    let exchange = Exchange::new(|(txn, _, _): &(Txn, Time, isize)| txn.customer.hashed());
    unary_in_order(txns.inner, exchange, "CustomerRows", CustomerRows::default()).as_collection()
}

/// One customer's state: enough to know its row after any retraction.
#[derive(Default)]
struct Amounts {
    count: i64,
    total: i128,
    /// Amount in cents → how many live transactions have it.
    multiset: BTreeMap<i64, i64>,
    /// The row before the first change at the open time; `None` when unchanged.
    before: Option<Option<CustomerRow>>,
}

impl Amounts {
    fn row(&self) -> Option<CustomerRow> {
        let (min, _) = self.multiset.first_key_value()?;
        let (max, _) = self.multiset.last_key_value()?;
        Some(CustomerRow { total: self.total, count: self.count, min: *min, max: *max })
    }
}

#[derive(Default)]
struct CustomerRows {
    customers: FastMap<Arc<str>, Amounts>,
    /// Customers changed at the open time.
    changed: Vec<Arc<str>>,
}

impl Ordered for CustomerRows {
    type Record = (Txn, Time, isize);
    type Out = ((String, CustomerRow), Time, isize);

    fn apply(&mut self, _time: Time, (txn, _, diff): Self::Record, _out: &mut Vec<Self::Out>) {
        let customer = txn.customer;
        // One hash lookup per record: the key is moved in, and dropped if already present.
        let amounts = self.customers.entry(Arc::clone(&customer)).or_default();
        if amounts.before.is_none() {
            amounts.before = Some(amounts.row());
            self.changed.push(customer);
        }
        let diff = diff as i64;
        amounts.count += diff;
        amounts.total += i128::from(txn.cents) * i128::from(diff);
        let slot = amounts.multiset.entry(txn.cents).or_default();
        *slot += diff;
        if *slot == 0 {
            amounts.multiset.remove(&txn.cents);
        }
    }

    fn complete(&mut self, time: Time, out: &mut Vec<Self::Out>) {
        for customer in self.changed.drain(..) {
            let amounts = self.customers.get_mut(&customer).expect("a changed customer has a state");
            let before = amounts.before.take().expect("a changed customer knows its row before");
            let after = amounts.row();
            if after.is_none() {
                self.customers.remove(&customer);
            }
            if before == after {
                continue;
            }
            if let Some(row) = before {
                out.push(((customer.to_string(), row), time, -1));
            }
            if let Some(row) = after {
                out.push(((customer.to_string(), row), time, 1));
            }
        }
    }
}

/// Sums transactions by `key` within each worker and time; the result's diffs are the sums.
pub fn sum_by<'scope, K>(
    txns: VecCollection<'scope, Time, Txn, isize>,
    name: &str,
    key: impl Fn(&Txn) -> Option<K> + 'static,
) -> VecCollection<'scope, Time, K, Stats>
where
    K: ExchangeData + Hash,
{
    unary_in_order(txns.inner, Pipeline, name, SumBy { key, sums: FastMap::default() }).as_collection()
}

struct SumBy<K, F> {
    key: F,
    sums: FastMap<K, Stats>,
}

impl<K: Eq + Hash + Clone, F: Fn(&Txn) -> Option<K>> Ordered for SumBy<K, F> {
    type Record = (Txn, Time, isize);
    type Out = (K, Time, Stats);

    fn apply(&mut self, _time: Time, (txn, _, diff): Self::Record, _out: &mut Vec<Self::Out>) {
        if let Some(key) = (self.key)(&txn) {
            let mut stats = Stats::one(txn.cents);
            if diff < 0 {
                stats = stats.negated();
            }
            self.sums.entry(key).or_default().plus_equals(&stats);
        }
    }

    fn complete(&mut self, time: Time, out: &mut Vec<Self::Out>) {
        out.extend(self.sums.drain().filter(|(_, s)| !s.is_zero()).map(|(k, s)| (k, time, s)));
    }
}
