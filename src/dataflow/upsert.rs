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

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::{AsCollection, Hashable, VecCollection};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::Stream;

use super::in_order::{unary_in_order, Ordered};
use super::snapshot::SnapshotSlot;
use super::Time;
use crate::event::{Identity, Position, Txn, Update};

/// A hash map with a fast, good-quality hasher (ids are short strings; SipHash cost a lot).
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The latest version of one identity, as a user sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The logical time it was admitted at.
    pub time: Time,
    /// Where it came from.
    pub position: Position,
    /// The transaction, or `None` once deleted (a tombstone).
    pub txn: Option<Txn>,
}

/// One worker's latest versions, kept compact: every name once in a catalog, and each
/// version as a fixed-size record (72 bytes with its key, against 112 for a plain
/// `Version`), because a large history holds millions of them.
#[derive(Default)]
pub struct VersionStore {
    pub(super) versions: FastMap<Identity, Stored>,
    pub(super) names: Catalog,
}

impl VersionStore {
    /// How many identities are known (live transactions and tombstones).
    pub fn len(&self) -> usize {
        self.versions.len()
    }

    /// Makes room for `additional` more identities at once: growing a table of millions
    /// step by step touches twice its final memory.
    pub fn reserve(&mut self, additional: usize) {
        self.versions.reserve(additional);
    }

    /// Whether no identity is known.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// Every identity with its latest version.
    pub fn iter(&self) -> impl Iterator<Item = (&Identity, Version)> + '_ {
        self.versions.iter().map(|(identity, stored)| {
            let version = Version {
                time: stored.time,
                position: stored.position,
                txn: stored.txn.map(|t| self.names.expand(&t)),
            };
            (identity, version)
        })
    }
}

/// The live versions held by one worker, shared with whoever needs to read them.
pub type LatestVersions = Rc<RefCell<VersionStore>>;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Stored {
    pub(super) time: Time,
    pub(super) position: Position,
    pub(super) txn: Option<CompactTxn>,
}

/// A transaction whose names are catalog numbers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct CompactTxn {
    pub(super) cents: i64,
    pub(super) hour: Option<i64>,
    pub(super) customer: u32,
    /// `u32::MAX` for no category.
    pub(super) category: u32,
}

/// Names by number and numbers by name.
#[derive(Default)]
pub(super) struct Catalog {
    numbers: FastMap<Arc<str>, u32>,
    pub(super) names: Vec<Arc<str>>,
}

impl Catalog {
    pub(super) const NONE: u32 = u32::MAX;

    fn number(&mut self, name: &Arc<str>) -> u32 {
        if let Some(n) = self.numbers.get(name) {
            return *n;
        }
        let n = u32::try_from(self.names.len()).ok().filter(|n| *n != Self::NONE).expect("fewer than 2^32 - 1 names");
        self.names.push(Arc::clone(name));
        self.numbers.insert(Arc::clone(name), n);
        n
    }

    fn compact(&mut self, txn: &Txn) -> CompactTxn {
        CompactTxn {
            cents: txn.cents,
            hour: txn.hour,
            customer: self.number(&txn.customer),
            category: txn.category.as_ref().map_or(Self::NONE, |c| self.number(c)),
        }
    }

    fn expand(&self, txn: &CompactTxn) -> Txn {
        let name = |n: u32| Arc::clone(&self.names[n as usize]);
        Txn {
            customer: name(txn.customer),
            cents: txn.cents,
            hour: txn.hour,
            category: (txn.category != Self::NONE).then(|| name(txn.category)),
        }
    }
}

/// Turns a stream of versions into the collection of live transactions.
///
/// Updates are exchanged by identity, so each identity lives on exactly one worker; the
/// returned [`LatestVersions`] is this worker's share.
/// `snapshots` asks for this worker's versions as of a time (see [`super::snapshot`]).
pub fn upsert<'scope>(
    updates: Stream<'scope, Time, Vec<Update>>,
    snapshots: SnapshotSlot,
) -> (VecCollection<'scope, Time, Txn, isize>, LatestVersions) {
    let latest: LatestVersions = Rc::default();
    let exchange = Exchange::new(|update: &Update| update.identity.hashed());
    let stream = unary_in_order(updates, exchange, "Upsert", Upsert { state: Rc::clone(&latest), snapshots });
    (stream.as_collection(), latest)
}

struct Upsert {
    state: LatestVersions,
    snapshots: SnapshotSlot,
}

impl Ordered for Upsert {
    type Record = Update;
    type Out = (Txn, Time, isize);

    fn at_frontier(&mut self, low: Option<Time>) {
        self.snapshots.capture_if_passed(low, &self.state.borrow());
    }

    fn apply(&mut self, time: Time, update: Update, out: &mut Vec<(Txn, Time, isize)>) {
        apply(&mut self.state.borrow_mut(), time, update, |txn, diff| out.push((txn, time, diff)));
    }
}

/// Applies one version to the state, ignoring the changes it makes (for other modules' tests).
#[cfg(test)]
pub(crate) fn apply_for_tests(store: &mut VersionStore, time: Time, update: Update) {
    apply(store, time, update, |_, _| {});
}

/// Applies one version to the state, reporting the changes to the live collection.
fn apply(store: &mut VersionStore, time: Time, update: Update, mut emit: impl FnMut(Txn, isize)) {
    let Update { identity, position, txn } = update;
    let VersionStore { versions, names } = store;
    let compact = txn.as_ref().map(|t| names.compact(t));
    match versions.get_mut(&identity) {
        None => {
            versions.insert(identity, Stored { time, position, txn: compact });
            if let Some(txn) = txn {
                emit(txn, 1);
            }
        }
        Some(stored) => {
            let newer = if stored.position.source == position.source {
                position.seq > stored.position.seq
            } else {
                time > stored.time || position > stored.position
            };
            if !newer {
                return;
            }
            if stored.txn != compact {
                if let Some(old) = &stored.txn {
                    emit(names.expand(old), -1);
                }
                if let Some(new) = txn {
                    emit(new, 1);
                }
            }
            *stored = Stored { time, position, txn: compact };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(customer: &str, cents: i64) -> Txn {
        Txn { customer: customer.into(), cents, hour: None, category: None }
    }

    fn update(id: &str, source: u32, seq: u64, t: Option<Txn>) -> Update {
        Update { identity: Identity::Id(id.into()), position: Position { source, seq }, txn: t }
    }

    /// Applies each update at the time given with it.
    fn run(updates: Vec<(Time, Update)>) -> Vec<(Txn, isize)> {
        let mut state = VersionStore::default();
        let mut out = Vec::new();
        for (time, u) in updates {
            apply(&mut state, time, u, |t, d| out.push((t, d)));
        }
        out
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
