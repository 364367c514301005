//! The one dataflow: batch and speed layers are the same operators.
//!
//! ```text
//!  history files ─┐ (time 0)                          ┌─► customers ─► top, customer_count
//!                 ├─► updates ─► upsert ─┬► [filter] ─┼─► categories, hourly, overall
//!  Kafka polls ───┘ (time 1, 2, …)       │            │
//!  snapshot shard (time 0) ─► restored ──┘            │
//!  refused records ───────────────────────────────────┴─► dead_letters
//! ```
//!
//! Every worker owns one input for updates and one for refused records. The history is
//! loaded at logical time 0 (the batch layer), each Kafka poll later becomes a new time
//! (the speed layer), and the serving layer reads the arrangements at any time that the
//! probe has passed. A snapshot is loaded at time 0 too: through the upsert as updates, or,
//! when each worker reads the shard it wrote, straight into its version table, its live
//! transactions entering beside the upsert's output ([`Dataflow::restored`]) — or, when the
//! views' state was kept beside that snapshot, not at all: the views' groups and
//! totals are put back and emitted at time 0 ([`groups`], [`Dataflow::state`]). See [`views`]
//! for the view definitions and [`upsert`] for how corrections and deletes become retractions.
//!
//! Beside it, each in a dataflow of its own installed while the pipeline runs: the tables
//! ([`table`], keyed rows arranged by primary key) and the created views ([`created`]: kept
//! as groups, or compiled from their SQL plan by [`render`], importing the tables' and other
//! views' arrangements); what their arrangements hold is counted by [`arranged`].

pub mod aggregate;
pub mod amounts;
pub mod arranged;
pub mod created;
pub mod group_key;
pub mod groups;
pub mod id_index;
pub mod id_table;
pub mod in_order;
pub mod render;
pub mod rows;
pub mod snapshot;
pub mod stats;
pub mod table;
pub mod upsert;
pub mod versions;
pub mod view_output;
pub mod views;

use std::rc::Rc;

use differential_dataflow::input::{Input, InputSession};
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::operators::vec::input::Input as TimelyInput;
use timely::dataflow::operators::{Concat, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::worker::Worker;

use crate::event::{Reason, Txn, Update};
use crate::filter::Filter;
use snapshot::SnapshotSlot;
use versions::LatestVersions;
use views::ViewTraces;

/// Logical time: 0 is the history, each later time one admitted batch of the stream.
pub type Time = u64;

/// A hash map with a fast, good-quality hasher (ids are short strings; SipHash cost a lot).
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// One worker's handles on the running dataflow.
pub struct Dataflow {
    /// Versions of transactions entering the dataflow.
    pub updates: InputHandleVec<Time, Update>,
    /// Reasons of refused records, counted by the `dead_letters` view.
    pub refused: InputSession<Time, Reason, isize>,
    /// (partition, next offset) of the Kafka partitions this worker reads.
    pub offsets: InputSession<Time, (i32, i64), isize>,
    /// Every view's arrangement.
    pub views: ViewTraces,
    /// Passes a time once every view is complete through it.
    pub probe: ProbeHandle<Time>,
    /// This worker's live versions, by identity.
    pub latest: LatestVersions,
    /// Asks for this worker's versions as of a time, for a durable snapshot.
    pub snapshots: SnapshotSlot,
    /// The upsert's output frontier: every change to the live transactions at an earlier
    /// time has been made.
    pub upserted: ProbeHandle<Time>,
    /// Views created at run time, each a dataflow of its own fed the upsert's changes.
    pub created: created::CreatedViews,
    /// Tables created at run time, each a dataflow of its own.
    pub tables: table::Tables,
    /// Live transactions of a snapshot restored straight into the version table (see
    /// [`Dataflow::restored`]), entering the views beside the upsert's changes.
    restored: InputHandleVec<Time, (Txn, Time, isize)>,
    /// The upsert's copy of its changes for the views created at run time.
    tap: upsert::Tap,
    /// The state the views keep besides their arrangements (kept beside each snapshot).
    pub state: views::ViewState,
}

impl Dataflow {
    /// Builds the dataflow on this worker. `event_filter` keeps only the transactions it
    /// accepts (applied after upserts, so a correction can move a transaction in or out).
    pub fn build(worker: &mut Worker, event_filter: Option<Filter>) -> Dataflow {
        let probe = ProbeHandle::new();
        let (mut updates, mut restored) = (InputHandleVec::new(), InputHandleVec::new());
        let snapshots = SnapshotSlot::default();
        let (upserted, tap) = (ProbeHandle::new(), upsert::Tap::default());
        let state = views::ViewState::default();
        let (refused, offsets, views, latest) = worker.dataflow::<Time, _, _>(|scope| {
            let (refused_input, refused) = scope.new_collection::<Reason, isize>();
            let (offsets_input, offsets) = scope.new_collection::<(i32, i64), isize>();
            let (txns, latest) = upsert::upsert(scope.input_from(&mut updates), snapshots.clone(), Rc::clone(&tap));
            let txns = txns.inner.concat(scope.input_from(&mut restored));
            let txns: VecCollection<'_, Time, _, isize> = txns.probe_with(&upserted).as_collection();
            let txns = match event_filter {
                Some(filter) => txns.filter(move |t| filter.accepts_txn(t)),
                None => txns,
            };
            (refused_input, offsets_input, views::define(txns, refused, offsets, &probe, &state), latest)
        });
        let created = created::CreatedViews::new(Rc::clone(&tap));
        let tables = table::Tables::default();
        Dataflow {
            updates,
            refused,
            offsets,
            views,
            probe,
            latest,
            snapshots,
            upserted,
            created,
            tables,
            restored,
            tap,
            state,
        }
    }

    /// Lets the dataflow run once while loading, and hands the views created at run time
    /// what the upsert changed meanwhile (so that the load does not pile up in their tap).
    pub fn step(&mut self, worker: &mut Worker) {
        worker.step();
        self.created.feed(None);
    }

    /// Admits, at the current time, a live transaction that a snapshot's shard put straight
    /// into this worker's version table ([`versions::VersionStore::restore`]): the views
    /// take it in as if the upsert had made it, and so do the views created at run time.
    pub fn restored(&mut self, txn: Txn) {
        let time = *self.restored.time();
        let mut tap = self.tap.borrow_mut();
        if tap.on {
            tap.changes.push((txn.clone(), time, 1));
        }
        self.restored.send((txn, time, 1));
    }

    /// Closes the time in progress and moves every input to `time`.
    pub fn advance_to(&mut self, time: Time) {
        self.updates.advance_to(time);
        self.restored.advance_to(time);
        self.refused.advance_to(time);
        self.refused.flush();
        self.offsets.advance_to(time);
        self.offsets.flush();
        self.tables.advance_to(time);
    }

    /// Admits a refused record's reason at the current time (the dead letter itself is the
    /// caller's to write).
    pub fn refuse(&mut self, letter: &crate::deadletter::DeadLetter) {
        self.refused.update(letter.reason(), 1);
    }

    /// Records that `partition`'s next offset moved from `from` to `to` at the current time.
    pub fn move_offset(&mut self, partition: i32, from: Option<i64>, to: i64) {
        if let Some(from) = from {
            self.offsets.update((partition, from), -1);
        }
        self.offsets.update((partition, to), 1);
    }

    /// The least time the upsert may still change the live transactions at (`None`: never).
    pub fn upsert_frontier(&self) -> Option<Time> {
        self.upserted.with_frontier(|f| f.first().copied())
    }

    /// The latest time every view is complete through, if any.
    pub fn complete_through(&self) -> Option<Time> {
        self.probe.with_frontier(|f| match f.first() {
            Some(0) => None,
            Some(t) => Some(t - 1),
            None => Some(Time::MAX),
        })
    }

    /// The time now being fed.
    pub fn time(&self) -> Time {
        *self.updates.time()
    }

    /// Closes the inputs: nothing more will be admitted. Returns the views, the probe that
    /// says when they are done, and the views created at run time (still open: they take the
    /// upsert's last changes from its tap, see [`created::CreatedViews::close`]).
    pub fn close(self) -> (ViewTraces, ProbeHandle<Time>, created::CreatedViews) {
        self.updates.close();
        self.restored.close();
        self.refused.close();
        self.offsets.close();
        self.tables.close();
        (self.views, self.probe, self.created)
    }
}
