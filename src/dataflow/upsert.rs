//! Upsert: from a stream of versions to the collection of live transactions.
//!
//! Each [`Update`] carries the new version of one identity (or its deletion). This operator
//! keeps the latest version of every identity and emits, at each logical time, exactly the
//! differences: the retraction of the version being replaced and the insertion of the new
//! one. Downstream views therefore never see two versions of one transaction.
//!
//! Why not differential's `arrange_from_upsert`? It breaks ties between versions that share
//! a logical time by *value*, while our contract orders them by *source position* (a later
//! line or offset wins, even in the same batch). Keeping the state in a hash map also makes
//! the initial load of a large history a single pass, and leaves the live versions readable
//! for a snapshot ([`VersionStore::iter`]).
//!
//! For example, with `t1` admitted at time 0 and corrected at time 1:
//!
//! ```text
//! time 0: {id t1, Ali, 120}            -> (Ali 120, 0, +1)
//! time 1: {id t1, Ali, 80}             -> (Ali 120, 1, -1), (Ali 80, 1, +1)
//! time 2: {id t1, op delete}           -> (Ali 80, 2, -1)
//! ```
//!
//! Which version wins does not depend on arrival order, so versions are applied as soon as
//! their time is open ([`super::in_order`]) instead of being held until it completes:
//!
//! - from the same source (one file, one partition), the later position wins, whatever the
//!   logical time: an earlier or equal position is a redelivery and changes nothing;
//! - from different sources, the later logical time wins, and at the same time the later
//!   position (a later file of the input list, a higher partition).
//!
//! The stored position survives a delete as a tombstone, so a redelivered old version
//! cannot resurrect a deleted transaction.

use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::{AsCollection, Hashable, VecCollection};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::Stream;

use super::in_order::{unary_in_order, Ordered};
use super::snapshot::SnapshotSlot;
use super::versions::{Catalog, LatestVersions, Stored, VersionStore};
use super::Time;
use crate::event::{Txn, Update};

/// Turns a stream of versions into the collection of live transactions.
///
/// Updates are exchanged by identity, so each identity lives on exactly one worker; the
/// returned [`LatestVersions`] is this worker's share.
/// `snapshots` asks for this worker's versions as of a time (see [`super::snapshot`]).
pub fn upsert<'scope>(
    updates: Stream<'scope, Time, Vec<Update>>,
    snapshots: SnapshotSlot,
    tap: Tap,
) -> (VecCollection<'scope, Time, Txn, isize>, LatestVersions) {
    let latest: LatestVersions = Rc::default();
    let exchange = Exchange::new(|update: &Update| update.identity.hashed());
    let logic = Upsert { state: Rc::clone(&latest), snapshots, tap };
    let stream = unary_in_order(updates, exchange, "Upsert", logic);
    (stream.as_collection(), latest)
}

/// A copy of the upsert's changes, for views created at run time (which cannot join the
/// running dataflow: each is a dataflow of its own, fed from here). Off until one exists.
pub type Tap = Rc<std::cell::RefCell<TapBuffer>>;

/// The changes to the live transactions since they were last taken.
#[derive(Default)]
pub struct TapBuffer {
    /// Whether changes are kept.
    pub on: bool,
    /// `(transaction, time, ±1)`, in the order made.
    pub changes: Vec<(Txn, Time, isize)>,
}

struct Upsert {
    state: LatestVersions,
    snapshots: SnapshotSlot,
    tap: Tap,
}

/// How many lookups of a batch are readied at once: about as many cache misses as a core
/// keeps in flight.
const READY_AT_ONCE: usize = 16;

impl Ordered for Upsert {
    type Record = Update;
    type Out = (Txn, Time, isize);

    fn before_open(&mut self, time: Time) {
        self.snapshots.capture_before(time, &mut self.state.borrow_mut());
    }

    fn after_invocation(&mut self, low: Option<Time>) {
        self.snapshots.capture_if_passed(low, &mut self.state.borrow_mut());
    }

    fn apply(&mut self, time: Time, update: Update, out: &mut Vec<(Txn, Time, isize)>) {
        let hash = self.state.borrow().versions.hash(update.identity.as_ref());
        self.apply_hashed(time, update, hash, out);
    }

    /// A few records at a time: hashes their identities, readies their lookups in the
    /// version table (so that their cache misses overlap), then applies them in order.
    fn apply_all(&mut self, time: Time, records: &mut Vec<Update>, out: &mut Vec<(Txn, Time, isize)>) {
        let mut hashes = [0u64; READY_AT_ONCE];
        let mut records = records.drain(..);
        loop {
            let ahead = records.as_slice();
            let n = ahead.len().min(READY_AT_ONCE);
            if n == 0 {
                return;
            }
            {
                let state = self.state.borrow();
                for (hash, update) in hashes.iter_mut().zip(&ahead[..n]) {
                    *hash = state.versions.hash(update.identity.as_ref());
                }
                state.versions.touch(&hashes[..n]);
            }
            for &hash in &hashes[..n] {
                let update = records.next().expect("as many records as hashes");
                self.apply_hashed(time, update, hash, out);
            }
        }
    }
}

impl Upsert {
    /// Applies one version, `hash` its identity's hash in the version table.
    fn apply_hashed(&mut self, time: Time, update: Update, hash: u64, out: &mut Vec<(Txn, Time, isize)>) {
        let mut tap = self.tap.borrow_mut();
        let tap = tap.on.then_some(&mut tap.changes);
        let mut state = self.state.borrow_mut();
        match tap {
            None => apply(&mut state, time, update, hash, |txn, diff| out.push((txn, time, diff))),
            Some(tap) => apply(&mut state, time, update, hash, |txn, diff| {
                tap.push((txn.clone(), time, diff));
                out.push((txn, time, diff));
            }),
        }
    }
}

/// Applies one version to the state, ignoring the changes it makes (for other modules' tests).
#[cfg(test)]
pub(crate) fn apply_for_tests(store: &mut VersionStore, time: Time, update: Update) {
    apply_for_tests_with(store, time, update, |_, _| {});
}

/// Applies one version to the state, reporting the changes to the live collection. `hash`
/// is its identity's [`super::id_table::IdTable::hash`].
fn apply(store: &mut VersionStore, time: Time, update: Update, hash: u64, mut emit: impl FnMut(Txn, isize)) {
    let Update { identity, position, txn } = update;
    let compact = txn.as_ref().map(|t| store.names.compact(t));
    let new = Stored { time, position, txn: compact };
    // The common case — nothing frozen — changes the table in place with one lookup.
    if store.aside.is_empty() {
        if let Some(versions) = Arc::get_mut(&mut store.versions) {
            // What the change replaced, if it changed anything.
            let mut replaced = None;
            versions.update_hashed(hash, identity.as_ref(), |stored| match stored {
                None => {
                    replaced = Some(None);
                    if let Some(txn) = txn {
                        emit(txn, 1);
                    }
                    Some(new)
                }
                Some(stored) => replace(&stored, &new, txn, &store.names, &mut emit).then(|| {
                    replaced = Some(Some(stored));
                    new
                }),
            });
            if let Some(before) = replaced {
                store.remember(time, identity, before);
            }
            return;
        }
    }
    match store.get(&identity) {
        None => {
            store.remember(time, identity.clone(), None);
            store.set(identity, new);
            if let Some(txn) = txn {
                emit(txn, 1);
            }
        }
        Some(stored) => {
            if replace(&stored, &new, txn, &store.names, &mut emit) {
                store.remember(time, identity.clone(), Some(stored));
                store.set(identity, new);
            }
        }
    }
}

/// Whether `new` replaces `stored` (see the module docs); if so, reports the retraction of
/// the old transaction and the insertion of the new one when they differ.
fn replace(
    stored: &Stored,
    new: &Stored,
    txn: Option<Txn>,
    names: &Catalog,
    emit: &mut impl FnMut(Txn, isize),
) -> bool {
    let newer = if stored.position.source == new.position.source {
        new.position.seq > stored.position.seq
    } else {
        new.time > stored.time || new.position > stored.position
    };
    if newer && stored.txn != new.txn {
        if let Some(old) = &stored.txn {
            emit(names.expand(old), -1);
        }
        if let Some(txn) = txn {
            emit(txn, 1);
        }
    }
    newer
}

#[cfg(test)]
fn apply_for_tests_with(store: &mut VersionStore, time: Time, update: Update, emit: impl FnMut(Txn, isize)) {
    let hash = store.versions.hash(update.identity.as_ref());
    apply(store, time, update, hash, emit);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Identity, Position};

    fn txn(customer: &str, cents: i64) -> Txn {
        Txn { customer: customer.into(), cents, ts: None, category: None }
    }

    fn update(id: &str, source: u32, seq: u64, t: Option<Txn>) -> Update {
        Update { identity: Identity::Id(id.into()), position: Position { source, seq }, txn: t }
    }

    /// Applies each update at the time given with it.
    fn run(updates: Vec<(Time, Update)>) -> Vec<(Txn, isize)> {
        let mut state = VersionStore::default();
        let mut out = Vec::new();
        for (time, u) in updates {
            apply_for_tests_with(&mut state, time, u, |t, d| out.push((t, d)));
        }
        out
    }

    #[test]
    fn a_frozen_copy_keeps_its_versions_while_the_store_changes() {
        let mut store = VersionStore::default();
        let mut changes = Vec::new();
        let mut apply_at =
            |store: &mut VersionStore, time, u| apply_for_tests_with(store, time, u, |t, d| changes.push((t, d)));
        apply_at(&mut store, 0, update("t1", 0, 1, Some(txn("Ali", 100))));
        apply_at(&mut store, 0, update("t2", 0, 2, Some(txn("Sara", 5))));
        let frozen = store.freeze();
        apply_at(&mut store, 1, update("t1", 0, 3, Some(txn("Ali", 80)))); // a correction
        apply_at(&mut store, 1, update("t2", 0, 4, None)); // a delete
        apply_at(&mut store, 1, update("t3", 0, 5, Some(txn("Li", 7)))); // new
        let live = |store: &VersionStore| {
            let mut v: Vec<_> = store.iter().filter_map(|(_, v)| v.txn.map(|t| (t.customer, t.cents))).collect();
            v.sort();
            v
        };
        assert_eq!(live(&store), vec![("Ali".into(), 80), ("Li".into(), 7)]);
        let frozen_cents: std::collections::BTreeSet<i64> =
            frozen.iter().filter_map(|(_, s)| s.txn.map(|t| t.cents)).collect();
        assert_eq!(frozen_cents, [5, 100].into(), "the frozen copy is as it was");
        drop(frozen);
        apply_at(&mut store, 2, update("t3", 0, 6, Some(txn("Li", 9)))); // folds the changes back
        assert!(store.aside.is_empty());
        assert_eq!(live(&store), vec![("Ali".into(), 80), ("Li".into(), 9)]);
        assert_eq!(store.len(), 3, "the tombstone of t2 stays");
        assert_eq!(changes.iter().map(|(_, d)| d).sum::<isize>(), 2);
    }

    #[test]
    fn corrections_retract_what_they_replace() {
        let out =
            run(vec![(0, update("t1", 0, 1, Some(txn("Ali", 100)))), (0, update("t1", 0, 2, Some(txn("Ali", 80))))]);
        assert_eq!(out, vec![(txn("Ali", 100), 1), (txn("Ali", 100), -1), (txn("Ali", 80), 1)]);
    }

    #[test]
    fn deletes_retract_and_leave_a_tombstone() {
        let out = run(vec![
            (1, update("t1", 3, 1, Some(txn("Ali", 100)))),
            (2, update("t1", 3, 2, None)),
            (3, update("t1", 3, 1, Some(txn("Ali", 100)))), // redelivered: must not resurrect
        ]);
        assert_eq!(out, vec![(txn("Ali", 100), 1), (txn("Ali", 100), -1)]);
    }

    #[test]
    fn identical_versions_change_nothing() {
        let out =
            run(vec![(0, update("t1", 0, 1, Some(txn("Ali", 100)))), (1, update("t1", 1, 7, Some(txn("Ali", 100))))]);
        assert_eq!(out, vec![(txn("Ali", 100), 1)]);
    }

    #[test]
    fn another_source_always_replaces() {
        // A later time replaces, even from a lower position of another source.
        let out = run(vec![(0, update("t1", 9, 0, Some(txn("Ali", 1)))), (1, update("t1", 0, 5, Some(txn("Ali", 2))))]);
        assert_eq!(out, vec![(txn("Ali", 1), 1), (txn("Ali", 1), -1), (txn("Ali", 2), 1)]);
    }

    #[test]
    fn at_one_time_the_later_position_wins_in_any_arrival_order() {
        let a = update("t1", 0, 10, Some(txn("Ali", 1)));
        let b = update("t1", 1, 3, Some(txn("Ali", 2)));
        let forward = run(vec![(0, a.clone()), (0, b.clone())]);
        let backward = run(vec![(0, b), (0, a)]);
        let net = |out: Vec<(Txn, isize)>| {
            let mut m = std::collections::BTreeMap::new();
            for (t, d) in out {
                *m.entry(t).or_insert(0) += d;
            }
            m.retain(|_, d| *d != 0);
            m
        };
        assert_eq!(net(forward), net(backward));
    }
}
