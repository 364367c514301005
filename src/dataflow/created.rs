//! Views created at run time, on one worker: each a dataflow of its own, installed while
//! the pipeline runs, filled from the version table and then fed every change the upsert
//! makes ([`super::upsert::Tap`]).
//!
//! Timely cannot add operators to a running dataflow; differential's answer is to import an
//! arrangement into a new one ([`TraceAgent::import`]), which is how a compiled view reads
//! tables and other compiled views ([`super::render`]). The live transactions have no
//! arrangement of their own to import — the upsert keeps them in its version table, one copy,
//! not an arrangement (an arrangement of every live transaction would double the memory of
//! the batch layer) — so the worker loop fills a view from the version table, a part per
//! turn, then hands it the upsert's changes, time by time, and advances its input to the
//! upsert's frontier — none is missed and none is sent twice:
//!
//! ```text
//! install, upsert frontier F, S = F - 1 (the last complete time):
//! each turn while filling:   input at S ← the next CHUNK identities' live versions as of S
//!                            (the tap's changes meanwhile are left out)
//! once read through:         input at t > S ← every change made after S, from the undo log
//! each turn after:           input ← the changes taken from the tap, at their times
//!                            input advances to the upsert's frontier
//! ```
//!
//! Reading the table as of `S` in parts is exact while the stream goes on between them: a
//! change at any time after `S` is undone by the undo log when a later part is read, and is
//! sent once the table is read through ([`VersionStore::live_at_from`]). So a large table is
//! never queued at once (CREATE VIEW over 9M transactions used to queue all of them, ~500 MB,
//! before the view's dataflow ran), and Kafka is read and reads are answered between parts.
//! The view is exact from `S` on, and its trace refuses reads before `S` (its logical
//! compaction starts there); the undo log is kept from `S` while it fills. Every worker
//! installs at its own `S`; the view answers from the latest of them.
//!
//! The history (time 0) is not in the undo log: a view installed while it loads is filled
//! at once. That is how views kept in the state directory by an earlier run are installed —
//! at start, before the history or the snapshot is loaded, the table empty — and the load
//! then reaches them through the tap in the same worker steps as it reaches the other views
//! ([`crate::dataflow::Dataflow::step`]), instead of being replayed after it.

use std::collections::BTreeMap;
use std::rc::Rc;

use differential_dataflow::input::{Input, InputSession};
use differential_dataflow::operators::arrange::arrangement::arrange_core;
use differential_dataflow::trace::implementations::{ValBatcher, ValSpine};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Probe;
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

use serde::{Deserialize, Serialize};

pub use super::group_key::{GroupKey, ViewKey};
use super::groups::SharedGroups;
use super::rows::CustomerRow;
use super::upsert::Tap;
use super::versions::VersionStore;
pub use super::view_output::{Output, ViewTrace};
use super::Time;
use crate::compute::filter::TxnFilter;
use crate::event::Txn;

/// What a worker maintains of a created view: the groups, by key, of the live transactions
/// that pass its filter — count, total, min and max of their amounts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintained {
    /// The view's id (unique in a pipeline's life, kept in the state directory).
    pub id: u64,
    /// What the groups are keyed by.
    pub key: ViewKey,
    /// The transactions kept: a SQL predicate over the columns of `transactions` (its `WHERE`).
    pub filter: Option<String>,
    /// A view compiled from its plan ([`super::render`]): its rows, instead of groups by `key`.
    #[serde(default)]
    pub plan: Option<crate::compute::plan::RowPlan>,
}

/// A view installed on this worker.
pub struct Installed {
    /// Its definition.
    pub def: Maintained,
    /// Its maintained state.
    pub kept: Option<Kept>,
}

/// The dataflow of a maintained view.
pub struct Kept {
    input: InputSession<Time, Txn, isize>,
    /// The transactions it is fed (none: all).
    filter: Option<TxnFilter>,
    /// Its arrangement.
    pub output: Output,
    probe: ProbeHandle<Time>,
    dataflow: usize,
    /// The ids its dataflow's operators took (its arrangements are counted by them).
    operators: std::ops::Range<usize>,
    /// The first time it is exact at.
    pub since: Time,
    /// While it is being filled: the position in the version table to go on from.
    filling: Option<usize>,
    /// Its groups (kept beside each snapshot, put back at a restart).
    pub groups: SharedGroups<GroupKey>,
    /// Whether it reads the live transactions (a compiled view of tables alone does not: its
    /// input only keeps time).
    reads_transactions: bool,
}

impl Kept {
    /// Goes on filling the view: the next `count` identities' live transactions as of
    /// `since`; once the table is read through, the changes the upsert has made at later
    /// times, each at its own time. Returns whether the view is filled.
    fn fill(&mut self, versions: &VersionStore, count: usize) -> bool {
        let Some(from) = self.filling else { return true };
        let mut txns = Vec::new();
        self.filling = versions.live_at_from(self.since, from, count, |t| {
            txns.push(t.to_txn());
            std::ops::ControlFlow::Continue(())
        });
        let keeps = self.keeps(&txns);
        let input = &mut self.input;
        for (txn, keep) in txns.into_iter().zip(keeps) {
            if keep {
                input.update(txn, 1);
            }
        }
        if self.filling.is_none() {
            // What the upsert changed meanwhile is in the undo log (the tap's copies were
            // left out, see `feed`), up to now: a worker may also be a time ahead of the
            // frontier every worker agrees on.
            let mut changes = Vec::new();
            versions.changes_after(self.since, |time, before, after| {
                if let Some(before) = before {
                    changes.push((before.to_txn(), time, -1));
                }
                if let Some(after) = after {
                    changes.push((after.to_txn(), time, 1));
                }
            });
            let keeps = self.keeps(changes.iter().map(|(t, _, _)| t));
            let input = &mut self.input;
            for ((txn, time, diff), keep) in changes.into_iter().zip(keeps) {
                move_to(input, time);
                if keep {
                    input.update(txn, diff);
                }
            }
        }
        self.input.flush();
        self.filling.is_none()
    }

    /// Which of `txns` the view keeps.
    fn keeps<'a>(&self, txns: impl IntoIterator<Item = &'a Txn>) -> Vec<bool> {
        match &self.filter {
            Some(filter) => filter.keeps(txns.into_iter()),
            None => txns.into_iter().map(|_| true).collect(),
        }
    }

    /// Sends the upsert's changes (in the order it made them) and advances the input to
    /// `frontier`.
    fn take(&mut self, changes: Vec<(Txn, Time, isize)>, frontier: Option<Time>) {
        if !self.reads_transactions {
            if let Some(frontier) = frontier {
                move_to(&mut self.input, frontier);
            }
            return;
        }
        let keeps = self.keeps(changes.iter().map(|(t, _, _)| t));
        // The tap holds changes in the order the upsert made them, so in time order.
        for ((txn, time, diff), keep) in changes.into_iter().zip(keeps) {
            move_to(&mut self.input, time);
            // The backfill already holds what the upsert applied before the install.
            if keep && time == *self.input.time() {
                self.input.update(txn, diff);
            }
        }
        self.input.flush();
        if let Some(frontier) = frontier {
            move_to(&mut self.input, frontier);
        }
    }
}

/// Sends what `input` holds at its time and moves it on to `time`, if later. Each change is
/// sent with its own time as the message's time, not merely labelled with it (an input
/// session sends its buffer at its handle's time, moved on only by a flush): the operators
/// downstream order records by the time they arrive at.
fn move_to(input: &mut InputSession<Time, Txn, isize>, time: Time) {
    if time > *input.time() {
        input.flush();
        input.advance_to(time);
        input.flush();
    }
}

/// A maintained view whose input is closed ([`CreatedViews::close`]).
pub struct ClosedView {
    /// Its id.
    pub id: u64,
    /// Its groups.
    pub groups: SharedGroups<GroupKey>,
    /// Done once the view has taken all it was sent.
    pub probe: ProbeHandle<Time>,
    /// Whether it had been filled from the version table (else it holds only part of it).
    pub filled: bool,
}

/// The views created on this worker, and the upsert's changes they are fed.
pub struct CreatedViews {
    installed: BTreeMap<u64, Installed>,
    tap: Tap,
    /// How many identities a view being filled reads per turn of the worker's loop.
    chunk: usize,
    /// The updates the views' arrangements hold, when counted ([`CreatedViews::count_arranged`]).
    arranged: Option<super::arranged::ArrangedRecords>,
}

impl CreatedViews {
    /// How many identities a view being filled reads per turn, unless told otherwise.
    pub const CHUNK: usize = 65_536;

    /// No view yet; `tap` is the upsert's.
    pub fn new(tap: Tap) -> Self {
        CreatedViews { installed: BTreeMap::new(), tap, chunk: Self::CHUNK, arranged: None }
    }

    /// Counts the updates held by the arrangements of every view installed from now on
    /// (`lambda run`: what `SHOW VIEWS` reports).
    pub fn count_arranged(&mut self, worker: &mut Worker) {
        self.arranged = Some(super::arranged::ArrangedRecords::register(worker));
    }

    /// Each installed view's arranged updates on this worker, by id, when counted.
    pub fn arranged(&self, worker: &Worker) -> Vec<(u64, i64)> {
        let Some(records) = &self.arranged else { return Vec::new() };
        super::arranged::ArrangedRecords::flush(worker);
        self.installed.iter().filter_map(|(id, v)| Some((*id, records.within(&v.kept.as_ref()?.operators)))).collect()
    }

    /// Fills views `chunk` identities per turn (at least one).
    pub fn set_chunk(&mut self, chunk: usize) {
        self.chunk = chunk.max(1);
    }

    /// The ids of the views that keep groups, in increasing order.
    pub fn kept_ids(&self) -> Vec<u64> {
        self.installed.iter().filter(|(_, v)| v.kept.is_some()).map(|(id, _)| *id).collect()
    }

    /// Every view's groups with its id, or `None` while a view is being filled (it holds only
    /// part of its rows then).
    pub fn kept_groups(&self) -> Option<Vec<(u64, SharedGroups<GroupKey>)>> {
        // A compiled view keeps no groups: it is filled again at a restart.
        if self.any_compiled() {
            return None;
        }
        let kept = self.installed.iter().filter_map(|(id, v)| Some((*id, v.kept.as_ref()?)));
        kept.map(|(id, k)| k.filling.is_none().then(|| (id, Rc::clone(&k.groups)))).collect()
    }

    /// Whether a view installed here reads the live transactions (the upsert's tap is on
    /// only then).
    fn reads_transactions(&self) -> bool {
        self.installed.values().filter_map(|v| v.kept.as_ref()).any(|k| k.reads_transactions)
    }

    /// Whether a compiled view is installed (the views' state is then not kept beside the
    /// snapshots: a restart loads the snapshot's transactions, which fill it).
    pub fn any_compiled(&self) -> bool {
        self.installed.values().any(|v| v.def.plan.is_some())
    }

    /// The view with this id, if installed.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut Installed> {
        self.installed.get_mut(&id)
    }

    /// Installs `def`: builds its dataflow (every worker builds the same dataflows in the same
    /// order: installs are orders of the coordinator) and starts filling it from `versions`
    /// as of the last time before `frontier`, the upsert's ([`CreatedViews::fill`] goes on
    /// between turns of the worker's loop, so that a large table is not queued at once).
    /// Returns the first time the view is exact at here.
    pub fn install(
        &mut self,
        worker: &mut Worker,
        def: Maintained,
        versions: &VersionStore,
        frontier: Time,
        tables: &mut super::table::Tables,
    ) -> Time {
        self.feed(Some(frontier));
        // Planned again on every worker from its text; a definition the catalog accepted plans.
        let filter = def.filter.as_deref().map(TxnFilter::new).transpose().unwrap_or_else(|error| {
            tracing::error!(view = def.id, %error, "a view's filter does not plan here; it keeps no transaction");
            Some(TxnFilter::new("false").expect("a constant plans"))
        });
        let key = def.key;
        let index = worker.next_dataflow_index();
        let probe = ProbeHandle::new();
        let groups = SharedGroups::default();
        let kept_groups = Rc::clone(&groups);
        // A compiled view imports the arrangements of the tables and views it reads.
        let (table_ids, view_ids) = def.plan.as_ref().map(|p| p.inputs()).unwrap_or_default();
        let mut table_traces: Vec<(u64, super::table::TableTrace, Vec<usize>)> = table_ids
            .iter()
            .filter_map(|id| tables.get_mut(*id).map(|t| (*id, t.trace.clone(), t.def.key.clone())))
            .collect();
        let mut view_traces: Vec<(u64, super::render::RowsTrace)> = view_ids
            .iter()
            .filter_map(|id| match self.installed.get(id)?.kept.as_ref()?.output {
                Output::Rows(ref trace) => Some((*id, trace.clone())),
                Output::Groups(_) => None,
            })
            .collect();
        let plan = def.plan.clone();
        let reads_transactions = plan.as_ref().is_none_or(|p| p.reads_transactions());
        let first_operator = worker.peek_identifier();
        let (mut input, mut output) = worker.dataflow::<Time, _, _>(|scope| {
            let (input, txns) = scope.new_collection::<Txn, isize>();
            let output = match &plan {
                None => {
                    let rows = super::aggregate::keyed_rows(txns, move |txn: &Txn| Some(key.of_txn(txn)), kept_groups);
                    let arranged = arrange_core::<_, _, _, ValSpine<GroupKey, CustomerRow, Time, isize>>(
                        rows.inner,
                        Pipeline,
                        "CreatedView",
                        ValBatcher::new,
                    );
                    arranged.stream.clone().probe_with(&probe);
                    Output::Groups(arranged.trace)
                }
                Some(plan) => {
                    let inputs = super::render::Inputs {
                        transactions: txns,
                        tables: table_traces
                            .iter_mut()
                            .map(|(id, trace, key)| (*id, (trace.import(scope), key.clone())))
                            .collect(),
                        views: view_traces.iter_mut().map(|(id, trace)| (*id, trace.import(scope))).collect(),
                    };
                    let arranged =
                        super::render::render(plan, &inputs).map(|row| (row, ())).arrange_by_key_named("CompiledView");
                    arranged.stream.clone().probe_with(&probe);
                    Output::Rows(arranged.trace)
                }
            };
            (input, output)
        });
        let operators = first_operator..worker.peek_identifier();
        // Reads before the install are refused, not answered empty.
        // Filled as of the last time the upsert has completed, `frontier - 1`: every
        // change after it is in the undo log, whenever the fill reads the table —
        // also those made at `frontier` itself while the view is being filled. The
        // history (time 0) is not in the log: a view installed while it loads (an
        // empty table, at start) is filled at once, and takes the rest from the tap.
        let (since, count) = match frontier.checked_sub(1) {
            Some(complete) => (complete, self.chunk),
            None => (0, usize::MAX),
        };
        output.start_at(since);
        input.advance_to(since);
        input.flush();
        // A view that reads no transaction has nothing to fill.
        let filling = reads_transactions.then_some(0);
        let mut kept = Kept {
            input,
            filter,
            output,
            probe,
            dataflow: index,
            operators,
            since,
            filling,
            groups,
            reads_transactions,
        };
        kept.fill(versions, count);
        self.installed.insert(def.id, Installed { def, kept: Some(kept) });
        self.tap.borrow_mut().on = self.reads_transactions();
        since
    }

    /// Hands the upsert's changes to every maintained view and advances their inputs to
    /// `frontier` (the upsert's; `None` once it is done).
    pub fn feed(&mut self, frontier: Option<Time>) {
        let changes = std::mem::take(&mut self.tap.borrow_mut().changes);
        // A view being filled takes no copies: what the upsert changes meanwhile, it reads
        // from the undo log once filled.
        let mut views: Vec<&mut Kept> =
            self.installed.values_mut().filter_map(|v| v.kept.as_mut()).filter(|k| k.filling.is_none()).collect();
        // The last view takes the changes themselves; only the others get copies.
        if let Some((last, others)) = views.split_last_mut() {
            for view in others {
                view.take(changes.clone(), frontier);
            }
            last.take(changes, frontier);
        }
    }

    /// Goes on filling the views being filled, `chunk` identities each, and calls `filled`
    /// with the id of each view that this turn completed and the first time it is exact at.
    /// Returns whether some view is still being filled.
    pub fn fill(&mut self, versions: &VersionStore, mut filled: impl FnMut(u64, Time)) -> bool {
        let chunk = self.chunk;
        let mut filling = false;
        for (id, kept) in self.installed.iter_mut().filter_map(|(id, v)| Some((*id, v.kept.as_mut()?))) {
            if kept.filling.is_some() {
                if kept.fill(versions, chunk) {
                    filled(id, kept.since);
                } else {
                    filling = true;
                }
            }
        }
        filling
    }

    /// Hands every maintained view the upsert's last changes and closes its input, once the
    /// upsert is done. Returns each one's id, groups, probe (done once it has taken all) and
    /// whether it was filled (a view stopped while being filled holds only part of its rows).
    pub fn close(mut self) -> Vec<ClosedView> {
        self.feed(None);
        let installed = std::mem::take(&mut self.installed);
        installed
            .into_iter()
            .filter_map(|(id, view)| {
                let compiled = view.def.plan.is_some();
                let Kept { input, groups, probe, filling, .. } = view.kept?;
                input.close();
                // A compiled view has no groups to keep: as if it were not filled.
                Some(ClosedView { id, groups, probe, filled: filling.is_none() && !compiled })
            })
            .collect()
    }

    /// Whether the view `id` is being filled.
    pub fn is_filling(&self, id: u64) -> bool {
        self.installed.get(&id).and_then(|v| v.kept.as_ref()).is_some_and(|k| k.filling.is_some())
    }

    /// The earliest time a view being filled reads the version table as of: the undo log
    /// must keep what happened after it.
    pub fn filling_since(&self) -> Option<Time> {
        self.installed.values().filter_map(|v| v.kept.as_ref()).filter(|k| k.filling.is_some()).map(|k| k.since).min()
    }

    /// Removes a view: its dataflow is dropped and its arrangement freed.
    pub fn remove(&mut self, worker: &mut Worker, id: u64) {
        if let Some(Installed { kept: Some(kept), .. }) = self.installed.remove(&id) {
            let Kept { input, output, dataflow, .. } = kept;
            drop((input, output));
            worker.drop_dataflow(dataflow);
        }
        self.tap.borrow_mut().on = self.reads_transactions();
    }

    /// Whether one of the views `ids` (or, for a view over a view, its base) is not complete
    /// through `time` yet: a read of them waits.
    pub fn behind(&self, time: Time, ids: &[u64]) -> bool {
        ids.iter().any(|id| {
            let Some(view) = self.installed.get(id) else { return false };
            view.kept.as_ref().is_some_and(|kept| kept.probe.less_equal(&time))
        })
    }

    /// Whether some maintained view is not complete through `time` yet.
    pub fn any_behind(&self, time: Time) -> bool {
        self.installed.values().filter_map(|v| v.kept.as_ref()).any(|k| k.probe.less_equal(&time))
    }

    /// Lets every maintained view's trace forget the distinctions between times before `time`.
    pub fn compact_to(&mut self, time: Time) {
        for kept in self.installed.values_mut().filter_map(|v| v.kept.as_mut()) {
            if time > kept.since {
                kept.output.compact_to(time);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Identity, Position, Update};

    /// A view `id` of one group over every transaction.
    fn view(id: u64) -> Maintained {
        Maintained { id, key: ViewKey::Nothing, filter: None, plan: None }
    }

    #[test]
    fn a_view_created_early_holds_later_changes_at_their_times() {
        let def = view(9_001);
        let rows = timely::execute_directly(move |worker| {
            let mut dataflow = crate::dataflow::Dataflow::build(worker, None);
            dataflow.advance_to(1);
            let frontier = dataflow.upsert_frontier().unwrap();
            let versions = dataflow.latest.borrow();
            let from = dataflow.created.install(worker, def, &versions, frontier, &mut dataflow.tables);
            drop(versions);
            dataflow.advance_to(2);
            dataflow.updates.send(Update {
                identity: Identity::Id("t1".into()),
                position: Position { source: 0, seq: 1 },
                txn: Some(Txn { customer: "Ali".into(), cents: 500, ts: None, category: None }),
            });
            dataflow.advance_to(3);
            while dataflow.probe.less_than(&3) || dataflow.created.any_behind(2) {
                worker.step();
                let upserted = dataflow.upsert_frontier();
                dataflow.created.feed(upserted);
            }
            let view = dataflow.created.get_mut(9_001).unwrap();
            let Output::Groups(trace) = &mut view.kept.as_mut().unwrap().output else { panic!("groups") };
            let mut rows = vec![from];
            for t in 0..3 {
                let mut n = 0;
                crate::serve::cursors::for_each_value_from(trace, None, t, |_, r| {
                    n += r.count;
                    std::ops::ControlFlow::Continue(())
                });
                rows.push(n as u64);
            }
            rows
        });
        assert_eq!(rows, vec![0, 0, 0, 1], "installed at 0; the transaction of time 2 counts from 2");
    }

    #[test]
    fn a_filtered_view_takes_only_the_transactions_that_pass() {
        let def = Maintained { id: 9_003, key: ViewKey::Customer, filter: Some("amount >= 100".into()), plan: None };
        let counts = timely::execute_directly(move |worker| {
            let mut dataflow = crate::dataflow::Dataflow::build(worker, None);
            dataflow.advance_to(1);
            let frontier = dataflow.upsert_frontier().unwrap();
            let versions = dataflow.latest.borrow();
            dataflow.created.install(worker, def, &versions, frontier, &mut dataflow.tables);
            drop(versions);
            for (i, cents) in [5_000, 20_000, 12_000].into_iter().enumerate() {
                dataflow.updates.send(Update {
                    identity: Identity::Id(format!("t{i}").into()),
                    position: Position { source: 0, seq: i as u64 },
                    txn: Some(Txn { customer: "Ali".into(), cents, ts: None, category: None }),
                });
            }
            dataflow.advance_to(2);
            while dataflow.probe.less_than(&2) || dataflow.created.any_behind(1) {
                worker.step();
                let upserted = dataflow.upsert_frontier();
                dataflow.created.feed(upserted);
            }
            let kept = dataflow.created.get_mut(9_003).unwrap().kept.as_mut().unwrap();
            let Output::Groups(trace) = &mut kept.output else { panic!("groups") };
            let mut rows = Vec::new();
            crate::serve::cursors::for_each_value_from(trace, None, 1, |k, r| {
                rows.push((k.clone(), r.count, r.total));
                std::ops::ControlFlow::Continue(())
            });
            rows
        });
        assert_eq!(counts, vec![(GroupKey::Text("Ali".into()), 2, 32_000)], "the 50.00 left out");
    }

    #[test]
    fn a_view_stopped_while_it_fills_says_so() {
        let def = view(9_002);
        let filled = timely::execute_directly(move |worker| {
            let mut dataflow = crate::dataflow::Dataflow::build(worker, None);
            dataflow.created.set_chunk(1);
            dataflow.advance_to(1);
            for i in 0..3 {
                dataflow.updates.send(Update {
                    identity: Identity::Id(format!("t{i}").into()),
                    position: Position { source: 0, seq: i },
                    txn: Some(Txn { customer: "Ali".into(), cents: 500, ts: None, category: None }),
                });
            }
            dataflow.advance_to(2);
            while dataflow.upsert_frontier().is_some_and(|f| f < 2) {
                worker.step();
            }
            let versions = dataflow.latest.borrow();
            dataflow.created.install(worker, def, &versions, 2, &mut dataflow.tables);
            drop(versions);
            let (_, probe, created) = dataflow.close();
            worker.step_while(|| !probe.done());
            created.close().iter().map(|v| (v.id, v.filled)).collect::<Vec<_>>()
        });
        assert_eq!(filled, vec![(9_002, false)], "one identity of three read");
    }
}
