//! Applying records in logical-time order, as soon as their time is the open one.
//!
//! Stateful operators here (the upsert and the aggregates) must see the records of time `t`
//! only after every record of earlier times. Stashing everything until `t` completes would
//! hold the whole history in memory during the initial load, so this driver applies a
//! record *as it arrives* when its time is the **open** time — the input frontier's least
//! element, meaning every earlier time is complete — and stashes only records of later
//! times. When the frontier passes the open time, [`Ordered::complete`] lets the logic emit
//! what it deferred (for example one retraction and one insertion per changed customer,
//! rather than one pair per record).
//!
//! ```text
//! frontier = {0}: records at 0 are applied at once; records at 1, 2 wait in the stash
//! frontier = {2}: complete(0); stash 1 applied, complete(1); stash 2 applied; 2 is open
//! ```

use std::collections::BTreeMap;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Capability, InputCapability};
use timely::dataflow::Stream;

use super::Time;

/// What an order-sensitive operator does with records and completed times.
pub trait Ordered {
    /// The records the operator consumes.
    type Record;
    /// The updates the operator produces.
    type Out;
    /// Applies one record of the open time `time`.
    fn apply(&mut self, time: Time, record: Self::Record, out: &mut Vec<Self::Out>);
    /// Applies a message's records of the open time `time`, in order, leaving `records`
    /// empty. One by one unless the logic can do better with them all in hand (the upsert
    /// readies its table's lookups for a batch at once).
    fn apply_all(&mut self, time: Time, records: &mut Vec<Self::Record>, out: &mut Vec<Self::Out>) {
        for record in records.drain(..) {
            self.apply(time, record, out);
        }
    }
    /// Called in every invocation until the input frontier has passed time 0: what it adds
    /// to `out` is emitted at time 0 (state put back from a snapshot, see
    /// [`super::groups`]), before any record is applied.
    fn initial(&mut self, _out: &mut Vec<Self::Out>) {}
    /// Called once no more records at `time` can arrive.
    fn complete(&mut self, _time: Time, _out: &mut Vec<Self::Out>) {}
    /// Called just before the first record of `time` is applied: the state then reflects
    /// exactly the records of the times before `time`.
    fn before_open(&mut self, _time: Time) {}
    /// Called last in every invocation with the input frontier's least time (`None` once
    /// the input is closed): the state then reflects every record of the times before it,
    /// and of no later time than the last one opened.
    fn after_invocation(&mut self, _low: Option<Time>) {}
}

/// Drives an [`Ordered`] logic from an operator's input and frontier.
struct InTimeOrder<L: Ordered> {
    logic: L,
    stash: BTreeMap<Time, (Capability<Time>, Vec<L::Record>)>,
    open: Option<Capability<Time>>,
    out: Vec<L::Out>,
}

impl<L: Ordered> InTimeOrder<L> {
    fn new(logic: L) -> Self {
        InTimeOrder { logic, stash: BTreeMap::new(), open: None, out: Vec::new() }
    }

    /// First in every invocation: applies stashed records whose time has opened.
    fn open_through(&mut self, low: Option<Time>, emit: &mut impl FnMut(&Capability<Time>, &mut Vec<L::Out>)) {
        while let Some(entry) = self.stash.first_entry() {
            if low.is_some_and(|low| *entry.key() > low) {
                break;
            }
            let (time, (capability, mut records)) = entry.remove_entry();
            self.open_at(capability, emit);
            self.logic.apply_all(time, &mut records, &mut self.out);
            emit(self.open.as_ref().expect("just opened"), &mut self.out);
        }
    }

    /// For every received message: applied now if its time is open, else stashed.
    fn receive(
        &mut self,
        low: Option<Time>,
        capability: &InputCapability<Time>,
        records: &mut Vec<L::Record>,
        emit: &mut impl FnMut(&Capability<Time>, &mut Vec<L::Out>),
    ) {
        // Timely's inputs never send data without a capability; such a message would make
        // no progress claim and carries nothing we could order.
        let Some(time) = capability.least().copied() else { return };
        let retained = || capability.retain_least(0).expect("a message with a time yields a capability");
        if low == Some(time) {
            if self.open.as_ref().map(|c| *c.time()) != Some(time) {
                self.open_at(retained(), emit);
            }
            self.logic.apply_all(time, records, &mut self.out);
            emit(self.open.as_ref().expect("just opened"), &mut self.out);
        } else {
            self.stash.entry(time).or_insert_with(|| (retained(), Vec::new())).1.append(records);
        }
    }

    /// Last in every invocation: completes the open time once the frontier has passed it.
    fn close_before(&mut self, low: Option<Time>, emit: &mut impl FnMut(&Capability<Time>, &mut Vec<L::Out>)) {
        if self.open.as_ref().is_some_and(|c| low.is_none_or(|low| *c.time() < low)) {
            let capability = self.open.take().expect("checked above");
            self.logic.complete(*capability.time(), &mut self.out);
            emit(&capability, &mut self.out);
        }
    }

    /// Opens the time of `capability`, completing the time open before it.
    fn open_at(&mut self, capability: Capability<Time>, emit: &mut impl FnMut(&Capability<Time>, &mut Vec<L::Out>)) {
        if let Some(previous) = self.open.take() {
            if previous.time() != capability.time() {
                self.logic.complete(*previous.time(), &mut self.out);
                emit(&previous, &mut self.out);
            } else {
                self.open = Some(previous);
                return;
            }
        }
        self.logic.before_open(*capability.time());
        self.open = Some(capability);
    }
}

/// A unary operator that exchanges records by `pact` and drives `logic` in time order.
pub fn unary_in_order<'scope, L, P>(
    stream: Stream<'scope, Time, Vec<L::Record>>,
    pact: P,
    name: &str,
    logic: L,
) -> Stream<'scope, Time, Vec<L::Out>>
where
    L: Ordered + 'static,
    L::Record: Clone + 'static,
    L::Out: Clone + 'static,
    P: ParallelizationContract<Time, Vec<L::Record>>,
{
    stream.unary_frontier::<CapacityContainerBuilder<Vec<L::Out>>, _, _, _>(pact, name, move |capability, _info| {
        let mut driver = InTimeOrder::new(logic);
        // Held (at time 0) until the input frontier passes 0, for what `initial` emits.
        let mut initial = Some(capability);
        move |(input, frontier), output| {
            let low = frontier.frontier().first().copied();
            let mut emit = |capability: &Capability<Time>, out: &mut Vec<L::Out>| {
                if !out.is_empty() {
                    output.session(capability).give_container(out);
                    out.clear();
                }
            };
            if let Some(capability) = &initial {
                driver.logic.initial(&mut driver.out);
                emit(capability, &mut driver.out);
                if low.is_none_or(|low| low > *capability.time()) {
                    initial = None;
                }
            }
            driver.open_through(low, &mut emit);
            input.for_each(|capability, records| driver.receive(low, &capability, records, &mut emit));
            driver.close_before(low, &mut emit);
            driver.logic.after_invocation(low);
        }
    })
}
