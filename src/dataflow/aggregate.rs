//! Aggregates computed with hash maps, emitting only what changed at each logical time.
//!
//! Differential's own `reduce` re-reads every value of a changed group and arranges its
//! input sorted — for the `customers` view that meant sorting every `(customer, amount)` of
//! the history. These operators keep their state in hash maps and, per completed time, emit
//! one retraction and one insertion per *changed* key:
//!
//! - [`customer_rows`]: per customer, count, total and the multiset of amounts (so that min
//!   and max stay exact when a transaction is retracted), kept as a log that is consolidated
//!   now and then. A change costs one hash lookup of its customer and an append, whatever the
//!   size of the history; retracting a customer's current min or max sorts that customer's
//!   log (see [`super::groups`], which also keeps and restores that state).
//! - [`totals`]: per [`Dimension`] (all, each category, each hour), a [`Stats`] sum,
//!   pre-aggregated per worker before it is exchanged and arranged, so that a million
//!   transactions become one update per key.
//!
//! For example, with Ali's 120 and 200 at time 0 and a correction of 120 to 80 at time 1:
//!
//! ```text
//! customer_rows, time 0: (Ali {total 320, count 2, min 120, max 200}, 0, +1)
//! customer_rows, time 1: (Ali {.. 320 ..}, 1, -1), (Ali {total 280, count 2, min 80, max 200}, 1, +1)
//! totals, time 1:        (All, 1, Stats { count: 0, cents: -4000 }), (Category(None), 1, ..)
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::difference::{IsZero, Semigroup};
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::{Exchange, Pipeline};

use super::groups::{KeyedRows, SharedGroups};
use super::in_order::{unary_in_order, Ordered};
use super::rows::{customer_owner, CustomerRow, Dimension};
use super::stats::Stats;
use super::FastMap;
use super::Time;
use crate::event::Txn;

/// Every customer's row, as a collection that changes once per changed customer and time.
pub fn customer_rows<'scope>(
    txns: VecCollection<'scope, Time, Txn, isize>,
    groups: SharedGroups<Arc<str>>,
) -> VecCollection<'scope, Time, (String, CustomerRow), isize> {
    // Handed the owner's index itself, timely's exchange (hash modulo workers) keeps it.
    let workers = txns.inner.scope().peers();
    // Only the customer and the amount travel on: the name is moved out, not copied.
    let amounts = txns.map(|txn| (txn.customer, txn.cents)).inner;
    let exchange = Exchange::new(move |((customer, _), _, _): &((Arc<str>, i64), Time, isize)| {
        customer_owner(customer, workers) as u64
    });
    let logic = KeyedRows::new(groups, |customer: &Arc<str>| customer.to_string());
    unary_in_order(amounts, exchange, "CustomerRows", logic).as_collection()
}

/// The rows of a view created at run time: per group key (`key` of a transaction; `None`
/// leaves it out, as a `WHERE` would), count, total, min and max — the same state as the
/// `customers` view keeps, so min and max stay exact when an extreme is retracted.
pub fn keyed_rows<'scope, K>(
    txns: VecCollection<'scope, Time, Txn, isize>,
    key: impl Fn(&Txn) -> Option<K> + 'static,
    groups: SharedGroups<K>,
) -> VecCollection<'scope, Time, (K, CustomerRow), isize>
where
    K: std::hash::Hash + Eq + Clone + differential_dataflow::ExchangeData,
{
    use differential_dataflow::Hashable;
    // The key is computed once, before the exchange that takes each group to its worker.
    let amounts = txns.flat_map(move |txn| key(&txn).map(|k| (k, txn.cents))).inner;
    let exchange = Exchange::new(|((key, _), _, _): &((K, i64), Time, isize)| key.hashed());
    unary_in_order(amounts, exchange, "ViewRows", KeyedRows::new(groups, K::clone)).as_collection()
}

/// Every total of the `overall`, `categories` and `hourly` views, summed within each worker
/// and time in one pass; the result's diffs are the sums.
/// `restored` holds totals put back from a snapshot, emitted at time 0 (see
/// [`super::groups`]).
pub fn totals<'scope>(
    txns: VecCollection<'scope, Time, Txn, isize>,
    restored: RestoredTotals,
) -> VecCollection<'scope, Time, Dimension, Stats> {
    let logic = Totals { restored, ..Totals::default() };
    unary_in_order(txns.inner, Pipeline, "Totals", logic).as_collection()
}

/// Totals put back from a snapshot, for [`totals`] to emit at time 0.
pub type RestoredTotals = Rc<RefCell<Vec<(Dimension, Stats)>>>;

/// The sums of one worker at the open time, one table per kind of dimension: `All` needs no
/// lookup, and hours and categories are hashed as what they are, not as a [`Dimension`].
#[derive(Default)]
struct Totals {
    all: Stats,
    categories: FastMap<Option<Arc<str>>, Stats>,
    hours: HourSums,
    restored: RestoredTotals,
}

/// Sums by UTC hour: a dense array over the span of hours seen (a year of history is 8,760
/// of them, ~280 KB), with the hours touched at the open time listed; hours beyond
/// [`HourSums::SPAN`] of the others go to a hash map (an hour may come out of both in one
/// drain, once the array has grown to reach it: the arrangement sums the two). Why not the map alone: looking an hour
/// up was the totals' main cost (the bucket compare missing the cache), and an array index
/// needs no hash, no probe and no key to compare.
#[derive(Default)]
struct HourSums {
    /// The hour of `sums[0]`.
    first: i64,
    sums: Vec<Stats>,
    /// Indexes of `sums` added to at the open time (an index may be listed twice).
    touched: Vec<u32>,
    /// Hours too far from the others.
    far: FastMap<i64, Stats>,
}

impl HourSums {
    /// The widest span kept dense: 2^17 hours (~15 years), 4 MiB.
    const SPAN: i64 = 1 << 17;

    fn add(&mut self, hour: i64, stats: &Stats) {
        let Some(at) = self.index(hour) else {
            self.far.entry(hour).or_default().plus_equals(stats);
            return;
        };
        let sum = &mut self.sums[at];
        if sum.is_zero() {
            self.touched.push(at as u32);
        }
        sum.plus_equals(stats);
    }

    /// Where `hour` is in `sums`, growing it to take the hour in if the span allows.
    fn index(&mut self, hour: i64) -> Option<usize> {
        if self.sums.is_empty() {
            self.first = hour;
        }
        let last = self.first + self.sums.len() as i64;
        let (first, end) = (self.first.min(hour), last.max(hour + 1));
        if end - first > Self::SPAN {
            return None;
        }
        if first < self.first {
            // Shifts the sums (and the touched indexes) right by the hours added before them.
            let shift = (self.first - first) as usize;
            self.sums.splice(0..0, std::iter::repeat_n(Stats::default(), shift));
            self.touched.iter_mut().for_each(|i| *i += shift as u32);
            self.first = first;
        }
        if end > self.first + self.sums.len() as i64 {
            self.sums.resize((end - self.first) as usize, Stats::default());
        }
        Some((hour - self.first) as usize)
    }

    /// The hours added to since the last drain, with their sums; leaves every sum zero.
    fn drain(&mut self) -> impl Iterator<Item = (i64, Stats)> + '_ {
        let (first, sums) = (self.first, &mut self.sums);
        let dense = self.touched.drain(..).map(move |i| (first + i64::from(i), std::mem::take(&mut sums[i as usize])));
        dense.chain(self.far.drain())
    }
}

impl Ordered for Totals {
    type Record = (Txn, Time, isize);
    type Out = (Dimension, Time, Stats);

    fn initial(&mut self, out: &mut Vec<Self::Out>) {
        out.extend(self.restored.borrow_mut().drain(..).map(|(dimension, stats)| (dimension, 0, stats)));
    }

    fn apply(&mut self, _time: Time, (txn, _, diff): Self::Record, _out: &mut Vec<Self::Out>) {
        // A diff of any size, not only ±1: the transaction counted `diff` times.
        let stats = Stats::one(txn.cents).times(diff as i64);
        self.all.plus_equals(&stats);
        if let Some(hour) = txn.ts.map(crate::event::hour_of) {
            self.hours.add(hour, &stats);
        }
        // The category is moved in, not copied.
        self.categories.entry(txn.category).or_default().plus_equals(&stats);
    }

    fn complete(&mut self, time: Time, out: &mut Vec<Self::Out>) {
        let all = std::mem::take(&mut self.all);
        let all = std::iter::once((Dimension::All, all));
        let categories = self.categories.drain().map(|(c, s)| (Dimension::Category(c), s));
        let hours = self.hours.drain().map(|(h, s)| (Dimension::Hour(h), s));
        out.extend(all.chain(categories).chain(hours).filter(|(_, s)| !s.is_zero()).map(|(k, s)| (k, time, s)));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    proptest! {
        /// Drained at random moments, the dense hour sums give what a plain map of the same
        /// additions gives: hours before and after the others (the array shifts and grows),
        /// far ones (the map beside it), sums that return to zero within a time.
        #[test]
        fn hour_sums_drain_what_a_map_would(
            times in proptest::collection::vec(
                proptest::collection::vec(
                    (prop_oneof![3 => -300i64..300, 1 => -400_000i64..400_000], -3i64..4), 0..40),
                1..8)
        ) {
            use differential_dataflow::difference::{IsZero, Semigroup};
            use super::{HourSums, Stats};
            let mut sums = HourSums::default();
            for additions in times {
                let mut expected = BTreeMap::<i64, Stats>::new();
                for (hour, cents) in additions {
                    let stats = Stats::one(cents).times(if cents < 0 { -1 } else { 1 });
                    sums.add(hour, &stats);
                    expected.entry(hour).or_default().plus_equals(&stats);
                }
                expected.retain(|_, s| !s.is_zero());
                let mut drained = BTreeMap::<i64, Stats>::new();
                for (hour, stats) in sums.drain() {
                    drained.entry(hour).or_default().plus_equals(&stats);
                }
                drained.retain(|_, s| !s.is_zero());
                prop_assert_eq!(drained, expected);
                prop_assert!(sums.sums.iter().all(Stats::is_zero));
            }
        }
    }
}
