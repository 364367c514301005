//! The views: each defined once, each an arrangement the serving layer reads.
//!
//! History and Kafka feed the same live collection of transactions, so these definitions
//! serve the batch layer (the history at time 0) and the speed layer (every later time)
//! alike:
//!
//! | view | arrangement | how |
//! |---|---|---|
//! | `customers` | customer → [`CustomerRow`] | [`aggregate::customer_rows`]: count, total, and the multiset of amounts, as a consolidating log (min and max survive retractions) |
//! | `top` | (−total, customer) | the `customers` output re-keyed by total, so the first keys are the largest |
//! | `overall`, `categories`, `hourly` | [`Dimension`] → [`Stats`] | [`aggregate::totals`]: one pass, a semigroup diff pre-summed per worker, consolidating in place |
//! | `customer_count` | () → count | one update per customer appearing or disappearing |
//! | `dead_letters` | reason → count | the refused records, at the time they were refused |
//! | `offsets` | partition → next offset | the sources' positions, so every answer says what it reflects |

use differential_dataflow::operators::arrange::arrangement::arrange_core;
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::implementations::{KeySpine, ValBatcher, ValSpine};
use differential_dataflow::VecCollection;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::ProbeHandle;

use std::rc::Rc;
use std::sync::Arc;

use super::aggregate::{self, RestoredTotals};
use super::groups::SharedGroups;
use super::rows::{CustomerRow, Dimension};
use super::stats::Stats;
use super::Time;
use crate::event::{Reason, Txn};

/// A trace keyed by `K` whose diffs carry the aggregate.
pub type SumTrace<K, R = Stats> = TraceAgent<KeySpine<K, Time, R>>;
/// The `customers` trace: customer → row.
pub type CustomersTrace = TraceAgent<ValSpine<String, CustomerRow, Time, isize>>;
/// The `top` trace: keys `(-total, customer)`, in ranking order.
pub type TopTrace = SumTrace<(i128, String), isize>;

/// Handles on every view's arrangement, held by the worker that built them.
pub struct ViewTraces {
    /// customer → total, count, min, max.
    pub customers: CustomersTrace,
    /// customers ranked by total, ties by name.
    pub top: TopTrace,
    /// Totals over everything, each category and each UTC hour: the `overall`,
    /// `categories` and `hourly` views, in that key order.
    pub totals: SumTrace<Dimension>,
    /// number of customers with at least one live transaction.
    pub customer_count: SumTrace<(), isize>,
    /// refused records by reason.
    pub dead_letters: SumTrace<Reason, isize>,
    /// Kafka partition → the next offset to read: what the other views reflect.
    pub offsets: OffsetsTrace,
}

/// Why a trace cannot be read exactly at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreadable {
    /// The trace has forgotten the distinctions between times before `since`.
    Compacted {
        /// The view.
        view: &'static str,
        /// Its logical compaction frontier.
        since: Time,
    },
    /// Updates at the time may still arrive: the trace is complete only below `upper`.
    Incomplete {
        /// The view.
        view: &'static str,
        /// Its upper frontier.
        upper: Time,
    },
}

/// Whether `trace` can be read exactly at `time` — the read invariant `since ≤ time < upper`:
/// its logical compaction is at or below `time` (the times up to `time` are still told
/// apart) and its upper is beyond `time` (nothing at `time` or before is still on its way).
/// `name` says which trace in the answer.
pub fn check_trace<Tr: TraceReader<Time = Time>>(
    name: &'static str,
    trace: &mut Tr,
    time: Time,
) -> Result<(), Unreadable> {
    let compaction = trace.get_logical_compaction();
    if !compaction.less_equal(&time) {
        let since = compaction.first().copied().unwrap_or(Time::MAX);
        return Err(Unreadable::Compacted { view: name, since });
    }
    let mut upper = timely::progress::Antichain::new();
    trace.read_upper(&mut upper);
    if upper.less_equal(&time) {
        return Err(Unreadable::Incomplete { view: name, upper: upper.first().copied().unwrap_or(Time::MAX) });
    }
    Ok(())
}

/// Lets an arrangement that other dataflows may import forget the distinctions between times
/// before `time`: logically, and physically up to what it holds (a join that imports it
/// needs the physical compaction at or before the trace's upper when it starts).
pub fn compact_shared<Tr: TraceReader<Time = Time>>(trace: &mut Tr, time: Time) {
    trace.set_logical_compaction(AntichainRef::new(&[time]));
    let mut upper = timely::progress::Antichain::new();
    trace.read_upper(&mut upper);
    let physical = upper.first().map_or(time, |u| time.min(*u));
    trace.set_physical_compaction(AntichainRef::new(&[physical]));
}

/// The `offsets` trace: partition → next offset.
pub type OffsetsTrace = TraceAgent<ValSpine<i32, i64, Time, isize>>;

impl ViewTraces {
    /// Lets every trace forget the distinctions between times before `time`: reads at
    /// `time` or later stay exact, and memory and read cost stop growing with every time.
    pub fn compact_to(&mut self, time: Time) {
        let frontier = [time];
        let frontier = AntichainRef::new(&frontier);
        self.customers.set_logical_compaction(frontier);
        self.top.set_logical_compaction(frontier);
        self.totals.set_logical_compaction(frontier);
        self.customer_count.set_logical_compaction(frontier);
        self.dead_letters.set_logical_compaction(frontier);
        self.offsets.set_logical_compaction(frontier);
    }

    /// Whether every trace can be read exactly at `time`: its logical compaction is at or
    /// below `time` (the times up to `time` are still told apart) and its upper is beyond
    /// `time` (nothing at `time` or before is still on its way). Answers the first trace that
    /// cannot, and why.
    pub fn check_readable(&mut self, time: Time) -> Result<(), Unreadable> {
        check_trace("customers", &mut self.customers, time)?;
        check_trace("top", &mut self.top, time)?;
        check_trace("totals", &mut self.totals, time)?;
        check_trace("customer count", &mut self.customer_count, time)?;
        check_trace("dead letters", &mut self.dead_letters, time)?;
        check_trace("offsets", &mut self.offsets, time)
    }

    /// Lets every trace merge its batches as it likes. Readers here take all of a trace's
    /// batches and keep the updates at or before the time they read, so they never need a
    /// batch boundary at a given time; holding merges back instead left one pending batch
    /// per logical time, and the spine's handling of a long pending list is quadratic.
    fn merge_freely(&mut self) {
        let anything = AntichainRef::new(&[]);
        self.customers.set_physical_compaction(anything);
        self.top.set_physical_compaction(anything);
        self.totals.set_physical_compaction(anything);
        self.customer_count.set_physical_compaction(anything);
        self.dead_letters.set_physical_compaction(anything);
        self.offsets.set_physical_compaction(anything);
    }
}

/// The state of the views that keep one besides their arrangement, shared with the worker:
/// what a snapshot (and a clean stop) keeps and a restart puts back ([`super::groups`]).
#[derive(Clone, Default)]
pub struct ViewState {
    /// The `customers` view's groups on this worker.
    pub customers: SharedGroups<Arc<str>>,
    /// Totals to emit at time 0 (worker 0's, on a restart).
    pub totals: RestoredTotals,
}

/// Defines every view over the live transactions and the refused records' reasons.
///
/// Every arrangement's progress is reported to `probe`, so `probe.less_than(t)` being false
/// means every view is complete through `t`.
pub fn define<'scope>(
    txns: VecCollection<'scope, Time, Txn, isize>,
    refused: VecCollection<'scope, Time, Reason, isize>,
    offsets: VecCollection<'scope, Time, (i32, i64), isize>,
    probe: &ProbeHandle<Time>,
    state: &ViewState,
) -> ViewTraces {
    // The rows are already on their owners' workers (see `customer_owner`): arranged in place.
    let rows = aggregate::customer_rows(txns.clone(), Rc::clone(&state.customers));
    let customers = arrange_core::<_, _, _, ValSpine<String, CustomerRow, Time, isize>>(
        rows.inner,
        Pipeline,
        "customers",
        ValBatcher::new,
    );
    let top =
        customers.clone().as_collection(|customer, row| (-row.total, customer.clone())).arrange_by_self_named("top");
    let customer_count = customers.clone().as_collection(|_, _| ()).arrange_by_self_named("customer count");
    let totals = aggregate::totals(txns, Rc::clone(&state.totals)).arrange_by_self_named("totals");
    let dead_letters = refused.arrange_by_self_named("dead letters");
    let offsets = offsets.arrange_by_key_named("offsets");

    customers.stream.clone().probe_with(probe);
    top.stream.clone().probe_with(probe);
    customer_count.stream.clone().probe_with(probe);
    totals.stream.clone().probe_with(probe);
    offsets.stream.clone().probe_with(probe);
    dead_letters.stream.clone().probe_with(probe);

    let mut views = ViewTraces {
        customers: customers.trace,
        top: top.trace,
        totals: totals.trace,
        offsets: offsets.trace,
        customer_count: customer_count.trace,
        dead_letters: dead_letters.trace,
    };
    views.merge_freely();
    views
}

use differential_dataflow::trace::TraceReader;
use timely::dataflow::operators::Probe;
use timely::progress::frontier::AntichainRef;
