//! Aggregates computed with hash maps, emitting only what changed at each logical time.
//!
//! Differential's own `reduce` re-reads every value of a changed group and arranges its
//! input sorted — for the `customers` view that meant sorting every `(customer, amount)` of
//! the history. These operators keep their state in hash maps and, per completed time, emit
//! one retraction and one insertion per *changed* key:
//!
//! - [`customer_rows`]: per customer, count, total and the multiset of amounts (so that min
//!   and max stay exact when a transaction is retracted). A change costs one hash lookup,
//!   whatever the size of the history, except that retracting the last copy of a customer's
//!   current min or max rescans that customer's distinct amounts.
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
///
/// The amounts are a multiset in a hash map, with min and max kept beside it. A BTreeMap
/// would know them directly, but walking its nodes cost a cache miss per level and was the
/// single largest cost of loading a large history. Here an amount costs one hash lookup;
/// only retracting the last copy of the current min or max rescans the customer's distinct
/// amounts — rare, since it must hit that one extreme value.
#[derive(Default)]
struct Amounts {
    count: i64,
    total: i128,
    /// Amount in cents → how many live transactions have it.
    multiset: FastMap<i64, i64>,
    /// The least and greatest amounts of `multiset` (meaningless while it is empty).
    min: i64,
    max: i64,
    /// The row before the first change at the open time; `None` when unchanged.
    before: Option<Option<CustomerRow>>,
}

impl Amounts {
    fn row(&self) -> Option<CustomerRow> {
        (!self.multiset.is_empty()).then_some(CustomerRow {
            total: self.total,
            count: self.count,
            min: self.min,
            max: self.max,
        })
    }

    fn add(&mut self, cents: i64, diff: i64) {
        if self.multiset.is_empty() {
            (self.min, self.max) = (cents, cents);
        }
        self.count += diff;
        self.total += i128::from(cents) * i128::from(diff);
        let slot = self.multiset.entry(cents).or_default();
        *slot += diff;
        if *slot == 0 {
            self.multiset.remove(&cents);
            if cents == self.min {
                self.min = self.multiset.keys().copied().min().unwrap_or_default();
            }
            if cents == self.max {
                self.max = self.multiset.keys().copied().max().unwrap_or_default();
            }
        } else if diff > 0 {
            self.min = self.min.min(cents);
            self.max = self.max.max(cents);
        }
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
        amounts.add(txn.cents, diff as i64);
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
