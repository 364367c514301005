//! The version table: the latest version of every identity a worker holds, kept compact,
//! and frozen (shared, not copied) while a snapshot is written.
//!
//! The upsert ([`super::upsert`]) decides which version wins and changes the table; the
//! snapshot capture ([`super::snapshot`]) freezes it; the snapshot file format
//! ([`crate::state::shard`]) encodes a frozen table and decodes one back into updates.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use super::id_table::IdTable;
pub use super::id_table::{CompactTxn, Stored};
use super::{FastMap, Time};
use crate::event::{IdRef, Identity, Position, Txn};

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
/// version packed in an [`IdTable`] (about 79 bytes an identity: a 56-byte slot, ~15 of
/// index and its text; a plain `HashMap<Identity, Stored>` took 88 a bucket, half of them
/// empty, plus an allocation per id), because a large history holds millions of them.
///
/// The table can be **frozen** for a snapshot without copying it: [`VersionStore::freeze`]
/// shares it with the snapshot writer, and until the writer lets go, changes are kept aside
/// in a small second table that lookups consult first; the first change after that folds
/// them back in.
///
/// It can also be read **as of a recent time** (MVCC on this one copy): every change after
/// the history is appended to an undo log with the version it replaced, so that a reader at
/// time `T` sees, for an identity changed after `T`, the version it had then (the one its
/// first change after `T` replaced). Entries up to the traces' compaction are dropped: no
/// read is ever at an earlier time.
///
/// ```text
/// time 5: t1 = Ali 120          undo: (5, t1, absent)
/// time 7: t1 = Ali 80           undo: (5, t1, absent), (7, t1, Ali 120)
/// read at 6: t1's first change after 6 replaced Ali 120 → Ali 120
/// ```
///
/// A log, not a table per time: writing (once per change, on the hot path of the stream)
/// is an append into memory the log reuses once compacted; only reads, which are rare,
/// group its entries by identity.
#[derive(Default)]
pub struct VersionStore {
    pub(super) versions: Arc<IdTable>,
    /// Changes made while `versions` is shared with a snapshot writer.
    pub(super) aside: FastMap<Identity, Stored>,
    pub(super) names: Catalog,
    /// Every change after the history, in the order made: its time, the identity and the
    /// version it replaced (`None`: it was unknown). Times never decrease along it.
    pub(super) undo: std::collections::VecDeque<(Time, Identity, Option<Stored>)>,
}

impl LiveTxn<'_> {
    /// The transaction itself (its names shared, not copied).
    pub fn to_txn(&self) -> Txn {
        Txn {
            customer: Arc::clone(self.customer),
            cents: self.cents,
            ts: self.ts,
            category: self.category.map(Arc::clone),
        }
    }
}

/// One live transaction as a reader at a time sees it: its identity, its names resolved.
#[derive(Clone, Copy)]
pub struct LiveTxn<'a> {
    /// Its identity.
    pub identity: IdRef<'a>,
    /// Its amount in cents.
    pub cents: i64,
    /// Its customer.
    pub customer: &'a Arc<str>,
    /// Its category, if any.
    pub category: Option<&'a Arc<str>>,
    /// Its event time in seconds, if any.
    pub ts: Option<i64>,
}

/// A worker's versions as they were when frozen, readable from another thread.
pub struct FrozenVersions {
    pub(super) versions: Arc<IdTable>,
    pub(super) names: Vec<Arc<str>>,
}

impl FrozenVersions {
    /// The customer and category names that versions refer to by number.
    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }

    /// How many identities it holds.
    pub fn len(&self) -> usize {
        self.versions.len()
    }

    /// Whether it holds no identity.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// Every identity with its version, names as numbers into [`FrozenVersions::names`].
    pub fn iter(&self) -> impl Iterator<Item = (IdRef<'_>, Stored)> + '_ {
        self.versions.iter()
    }
}

impl VersionStore {
    /// How many identities are known (live transactions and tombstones).
    pub fn len(&self) -> usize {
        self.versions.len() + self.aside.keys().filter(|k| self.versions.get(k.as_ref()).is_none()).count()
    }

    /// Makes room for `additional` more identities at once: growing a table of millions
    /// step by step touches twice its final memory.
    pub fn reserve(&mut self, additional: usize) {
        if let Some(versions) = Arc::get_mut(&mut self.versions) {
            versions.reserve(additional);
        }
    }

    /// Whether no identity is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Notes, for reads as of earlier times, that `identity` had `before` until `time`.
    /// Only the first change of an identity at a time counts (readers skip the others); the
    /// history (time 0) is never undone, since no read is earlier.
    pub(super) fn remember(&mut self, time: Time, identity: Identity, before: Option<Stored>) {
        if time > 0 {
            debug_assert!(self.undo.back().is_none_or(|(t, _, _)| *t <= time), "changes are made in time order");
            self.undo.push_back((time, identity, before));
        }
    }

    /// Starts an empty store from a snapshot's name catalog, so that the numbers its
    /// versions were written with stand as they are (see [`VersionStore::restore`]).
    pub fn restore_names(&mut self, names: Vec<Arc<str>>) {
        assert!(self.is_empty() && self.names.names.is_empty(), "a snapshot's catalog is restored into an empty store");
        self.names = Catalog::from_names(names);
    }

    /// Puts a version read from a snapshot's shard into the table as it was written (its
    /// names numbered in the catalog given to [`VersionStore::restore_names`]), and returns
    /// its transaction if it is live and `feed_views` (the views are computed from it, not
    /// put back). For a worker that owns exactly the shard's identities,
    /// each once; the table looks them up once [`VersionStore::restored`] has indexed them.
    pub fn restore(&mut self, identity: IdRef<'_>, stored: Stored, feed_views: bool) -> Option<Txn> {
        let versions = Arc::get_mut(&mut self.versions).expect("nothing is frozen while a snapshot is loaded");
        versions.append_unindexed(identity, stored);
        stored.txn.filter(|_| feed_views).map(|t| self.names.expand(&t))
    }

    /// Indexes the versions restored from a snapshot's shard, all at once.
    pub fn restored(&mut self) {
        Arc::get_mut(&mut self.versions).expect("nothing is frozen while a snapshot is loaded").index_appended();
    }

    /// Drops what reads at times before `time` would need: none will happen (the traces are
    /// compacted to `time`).
    pub fn forget_before(&mut self, time: Time) {
        let keep_from = self.undo.partition_point(|(t, _, _)| *t <= time);
        self.undo.drain(..keep_from);
        // After a burst the log would keep its largest capacity for good: give most of it
        // back once it is mostly empty (rarely: only when four times too large).
        if self.undo.capacity() > 4 * self.undo.len() + Self::UNDO_KEPT {
            self.undo.shrink_to(2 * self.undo.len() + Self::UNDO_KEPT);
        }
    }

    /// Undo log entries kept room for whatever it holds (~40 bytes each).
    const UNDO_KEPT: usize = 1 << 16;

    /// The undo log's entries of times after `time`.
    fn undo_after(&self, time: Time) -> impl Iterator<Item = &(Time, Identity, Option<Stored>)> {
        self.undo.range(self.undo.partition_point(|(t, _, _)| *t <= time)..)
    }

    /// Each live transaction as of `time` (which must not be before the last
    /// [`VersionStore::forget_before`]): calls `each` until it says stop.
    pub fn live_at(&self, time: Time, each: impl FnMut(LiveTxn<'_>) -> std::ops::ControlFlow<()>) {
        self.live_at_from(time, 0, usize::MAX, each);
    }

    /// Like [`VersionStore::live_at`], one part at a time: the identities from position
    /// `from` of the table, at most `count` of them; returns the position to go on from, or
    /// `None` once the table is read through (then the identities only set aside while a
    /// snapshot is written are read too) or `each` said stop.
    ///
    /// Positions are stable (identities are only ever appended, and those set aside are
    /// appended when folded back), and what changes between two parts is undone as of
    /// `time` by the undo log — so the parts, read between changes at later times, add up
    /// to the whole table as of `time`, each live transaction once.
    pub fn live_at_from(
        &self,
        time: Time,
        from: usize,
        count: usize,
        mut each: impl FnMut(LiveTxn<'_>) -> std::ops::ControlFlow<()>,
    ) -> Option<usize> {
        let earlier = self.earlier_versions(time);
        // The version `identity` had at `time`, from the one it has now.
        let then = |identity: &IdRef<'_>, now: Stored| match (!earlier.is_empty()).then(|| earlier.get(identity)) {
            Some(Some(before)) => *before,
            _ => Some(now),
        };
        // Lookups only when there is something to look up: the common scan has no version
        // set aside (no snapshot being written) and few changes after `time`.
        let aside: Option<FastMap<IdRef<'_>, Stored>> =
            (!self.aside.is_empty()).then(|| self.aside.iter().map(|(k, s)| (k.as_ref(), *s)).collect());
        let end = from.saturating_add(count).min(self.versions.len());
        for n in from..end {
            let (identity, mut now) = self.versions.at(n);
            if let Some(set_aside) = aside.as_ref().and_then(|a| a.get(&identity)) {
                now = *set_aside;
            }
            if let Some(txn) = then(&identity, now).and_then(|s| s.txn) {
                if each(self.names.live(identity, &txn)).is_break() {
                    return None;
                }
            }
        }
        if end < self.versions.len() {
            return Some(end);
        }
        for (identity, now) in aside.iter().flatten() {
            if self.versions.get(*identity).is_none() {
                if let Some(txn) = then(identity, *now).and_then(|s| s.txn) {
                    if each(self.names.live(*identity, &txn)).is_break() {
                        return None;
                    }
                }
            }
        }
        None
    }

    /// The identities set aside while a snapshot is written, which hide their entries in the
    /// table; `None` when there are none (the common case).
    fn shadowed(&self) -> Option<std::collections::HashSet<IdRef<'_>, foldhash::fast::RandomState>> {
        (!self.aside.is_empty()).then(|| self.aside.keys().map(Identity::as_ref).collect())
    }

    /// The live transaction of `identity` as of `time`, if any.
    pub fn live_one_at(&self, time: Time, identity: &Identity, each: impl FnOnce(LiveTxn<'_>)) {
        let earlier = self.earlier_versions(time);
        let stored = match earlier.get(&identity.as_ref()) {
            Some(before) => *before,
            None => self.get(identity),
        };
        if let Some(txn) = stored.and_then(|s| s.txn) {
            each(self.names.live(identity.as_ref(), &txn));
        }
    }

    /// Every change made to the live transactions at a time after `time` (which must not be
    /// before the last [`VersionStore::forget_before`]), in time order: the time, the
    /// transaction it retracts and the one it inserts (either may be none).
    pub fn changes_after(&self, time: Time, mut each: impl FnMut(Time, Option<LiveTxn<'_>>, Option<LiveTxn<'_>>)) {
        fn live<'a>(names: &'a Catalog, identity: &'a Identity, stored: Option<Stored>) -> Option<LiveTxn<'a>> {
            stored.and_then(|s| s.txn).map(|t| names.live(identity.as_ref(), &t))
        }
        // Per identity, in time order: each time it changed at and the version the first
        // change at that time replaced.
        let mut changed: FastMap<&Identity, Vec<(Time, Option<Stored>)>> = FastMap::default();
        for (t, identity, before) in self.undo_after(time) {
            let times = changed.entry(identity).or_default();
            if times.last().is_none_or(|(last, _)| last != t) {
                times.push((*t, *before));
            }
        }
        let mut changes = Vec::new();
        for (identity, times) in &changed {
            for (i, (t, before)) in times.iter().enumerate() {
                // The version it had once time `t` was done: the one a later time replaced,
                // or the one it has now.
                let after = times.get(i + 1).map_or_else(|| self.get(identity), |(_, later)| *later);
                changes.push((*t, *identity, *before, after));
            }
        }
        changes.sort_by_key(|(t, ..)| *t);
        for (t, identity, before, after) in changes {
            let (before, after) = (live(&self.names, identity, before), live(&self.names, identity, after));
            if before.map(|b| b.to_txn()) != after.map(|a| a.to_txn()) {
                each(t, before, after);
            }
        }
    }

    /// For each identity changed after `time`, the version it had at `time`.
    fn earlier_versions(&self, time: Time) -> FastMap<IdRef<'_>, Option<Stored>> {
        let mut earlier: FastMap<IdRef<'_>, Option<Stored>> = FastMap::default();
        for (_, identity, before) in self.undo_after(time) {
            earlier.entry(identity.as_ref()).or_insert(*before);
        }
        earlier
    }

    /// Every identity with its latest version.
    pub fn iter(&self) -> impl Iterator<Item = (IdRef<'_>, Version)> + '_ {
        let shadowed = self.shadowed();
        let base = self.versions.iter().filter(move |(k, _)| shadowed.as_ref().is_none_or(|s| !s.contains(k)));
        self.aside.iter().map(|(k, s)| (k.as_ref(), *s)).chain(base).map(|(identity, stored)| {
            let version = Version {
                time: stored.time,
                position: stored.position,
                txn: stored.txn.map(|t| self.names.expand(&t)),
            };
            (identity, version)
        })
    }

    /// Shares the versions as they are now, without copying them (see the type's docs).
    pub fn freeze(&mut self) -> FrozenVersions {
        self.fold_aside();
        if !self.aside.is_empty() {
            // The previous frozen copy is still held (not expected: one snapshot at a time).
            let mut copy = IdTable::clone(&self.versions);
            for (identity, stored) in self.aside.drain() {
                copy.insert(identity.as_ref(), stored);
            }
            self.versions = Arc::new(copy);
        }
        FrozenVersions { versions: Arc::clone(&self.versions), names: self.names.names.clone() }
    }

    /// Folds the changes kept aside back into the table, once no writer shares it.
    fn fold_aside(&mut self) {
        if self.aside.is_empty() {
            return;
        }
        if let Some(versions) = Arc::get_mut(&mut self.versions) {
            for (identity, stored) in self.aside.drain() {
                versions.insert(identity.as_ref(), stored);
            }
        }
    }

    pub(super) fn get(&self, identity: &Identity) -> Option<Stored> {
        self.aside.get(identity).copied().or_else(|| self.versions.get(identity.as_ref()))
    }

    pub(super) fn set(&mut self, identity: Identity, stored: Stored) {
        self.fold_aside();
        match Arc::get_mut(&mut self.versions) {
            Some(versions) => versions.insert(identity.as_ref(), stored),
            None => {
                self.aside.insert(identity, stored);
            }
        }
    }
}

/// The live versions held by one worker, shared with whoever needs to read them.
pub type LatestVersions = Rc<RefCell<VersionStore>>;

/// Names by number and numbers by name.
#[derive(Clone, Default)]
pub struct Catalog {
    numbers: FastMap<Arc<str>, u32>,
    pub(super) names: Vec<Arc<str>>,
    /// Numbers by the address of a shared name. Each reader shares one allocation per name
    /// ([`crate::event::Names`]), so most lookups hash an address instead of a string.
    /// Every entry holds its `Arc`: while it is here, no other name can get that address.
    by_address: FastMap<usize, (Arc<str>, u32)>,
}

impl Catalog {
    /// The number that stands for no name (no category).
    pub const NONE: u32 = u32::MAX;

    /// A catalog of `names`, numbered in that order.
    fn from_names(names: Vec<Arc<str>>) -> Catalog {
        let numbers = names.iter().enumerate().map(|(n, name)| (Arc::clone(name), n as u32)).collect();
        Catalog { numbers, names, by_address: FastMap::default() }
    }

    fn number(&mut self, name: &Arc<str>) -> u32 {
        let address = Arc::as_ptr(name).cast::<u8>() as usize;
        if let Some((_, n)) = self.by_address.get(&address) {
            return *n;
        }
        let n = self.number_by_text(name);
        // Readers that drop their shared names make new ones: keep this a cache.
        if self.by_address.len() >= 4 * self.names.len() + 1024 {
            self.by_address.clear();
        }
        self.by_address.insert(address, (Arc::clone(name), n));
        n
    }

    fn number_by_text(&mut self, name: &Arc<str>) -> u32 {
        if let Some(n) = self.numbers.get(name) {
            return *n;
        }
        let n = u32::try_from(self.names.len()).ok().filter(|n| *n != Self::NONE).expect("fewer than 2^32 - 1 names");
        self.names.push(Arc::clone(name));
        self.numbers.insert(Arc::clone(name), n);
        n
    }

    pub(super) fn compact(&mut self, txn: &Txn) -> CompactTxn {
        CompactTxn {
            cents: txn.cents,
            ts: txn.ts,
            customer: self.number(&txn.customer),
            category: txn.category.as_ref().map_or(Self::NONE, |c| self.number(c)),
        }
    }

    /// A live transaction of `identity`, its names resolved (shared, not copied).
    fn live<'a>(&'a self, identity: IdRef<'a>, txn: &CompactTxn) -> LiveTxn<'a> {
        let name = |n: u32| &self.names[n as usize];
        LiveTxn {
            identity,
            cents: txn.cents,
            customer: name(txn.customer),
            category: (txn.category != Self::NONE).then(|| name(txn.category)),
            ts: txn.ts,
        }
    }

    pub(super) fn expand(&self, txn: &CompactTxn) -> Txn {
        let name = |n: u32| Arc::clone(&self.names[n as usize]);
        Txn {
            customer: name(txn.customer),
            cents: txn.cents,
            ts: txn.ts,
            category: (txn.category != Self::NONE).then(|| name(txn.category)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::ops::ControlFlow;

    use proptest::prelude::*;

    use super::*;
    use crate::dataflow::upsert::apply_for_tests;
    use crate::event::Update;

    type Live = BTreeMap<String, (String, i64)>;

    fn live_at(store: &VersionStore, time: Time) -> Live {
        let mut live = Live::new();
        store.live_at(time, |t| {
            live.insert(t.identity.text().to_string(), (t.customer.to_string(), t.cents));
            ControlFlow::Continue(())
        });
        live
    }

    fn apply_time(store: &mut VersionStore, time: Time, updates: &[(u8, Option<i64>)], seq: &mut u64) {
        for (id, cents) in updates {
            *seq += 1;
            let txn = cents.map(|c| Txn { customer: format!("c{}", c % 2).into(), cents: c, ts: None, category: None });
            let update = Update {
                identity: Identity::Id(id.to_string().into()),
                position: Position { source: 0, seq: *seq },
                txn,
            };
            apply_for_tests(store, time, update);
        }
    }

    #[test]
    fn the_undo_log_gives_back_its_room_after_a_burst() {
        let (mut store, mut seq) = (VersionStore::default(), 0);
        let burst: Vec<(u8, Option<i64>)> = (0..=255u8).map(|id| (id, Some(1))).collect();
        for time in 1..=1_000 {
            apply_time(&mut store, time, &burst, &mut seq);
        }
        assert!(store.undo.capacity() >= 256_000);
        store.forget_before(1_000);
        assert!(store.undo.capacity() <= 4 * 256 + VersionStore::UNDO_KEPT, "{}", store.undo.capacity());
        assert_eq!(live_at(&store, 1_000).len(), 256, "what is kept still reads");
    }

    proptest! {
        /// Read in parts as of a time, with changes at later times (and a snapshot's freeze)
        /// between the parts, the table yields each transaction live at that time once.
        #[test]
        fn a_read_in_parts_adds_up_to_the_table_as_of_its_time(
            before in proptest::collection::vec((0u8..12, proptest::option::weighted(0.8, 0i64..4)), 0..24),
            after in proptest::collection::vec(
                proptest::collection::vec((0u8..16, proptest::option::weighted(0.8, 0i64..4)), 0..6), 0..10),
            part in 1usize..5,
            freeze_at in proptest::option::of(0usize..10),
            thaw_after in 0usize..4,
            half_frozen in any::<bool>(),
        ) {
            let (mut store, mut seq) = (VersionStore::default(), 0);
            let half = before.len() / 2;
            apply_time(&mut store, 1, &before[..half], &mut seq);
            // A snapshot may be under way already: then the rest is set aside.
            let mut frozen = half_frozen.then(|| store.freeze());
            apply_time(&mut store, 1, &before[half..], &mut seq);
            let expected = live_at(&store, 1);
            let (mut read, mut from, mut step) = (Live::new(), Some(0), 0);
            while let Some(at) = from {
                from = store.live_at_from(1, at, part, |t| {
                    let id = t.identity.text().to_string();
                    assert!(read.insert(id, (t.customer.to_string(), t.cents)).is_none(), "read once");
                    ControlFlow::Continue(())
                });
                if freeze_at == Some(step) {
                    frozen = Some(store.freeze());
                }
                if frozen.is_some() && Some(step) == freeze_at.map(|f| f + thaw_after) {
                    frozen = None;
                }
                if let Some(updates) = after.get(step) {
                    apply_time(&mut store, 2 + step as Time, updates, &mut seq);
                }
                step += 1;
            }
            drop(frozen);
            prop_assert_eq!(read, expected);
        }

        /// Read as of any time not yet forgotten, the table holds what it held when that time
        /// was done; the changes after a time lead from that state to every later one.
        #[test]
        fn reads_as_of_a_time_see_the_table_as_it_was(
            times in proptest::collection::vec(
                proptest::collection::vec((0u8..6, proptest::option::weighted(0.8, 0i64..4)), 0..8), 1..8),
            forget in 0u64..8,
        ) {
            let mut store = VersionStore::default();
            let mut seen: Vec<Live> = Vec::new();
            let mut seq = 0;
            for (t, updates) in times.iter().enumerate() {
                apply_time(&mut store, t as Time, updates, &mut seq);
                seen.push(live_at(&store, t as Time));
            }
            let forget = forget.min(times.len() as u64 - 1);
            store.forget_before(forget);
            for from in forget..times.len() as u64 {
                prop_assert_eq!(&live_at(&store, from), &seen[from as usize], "as of {}", from);
                let mut state = seen[from as usize].clone();
                let mut last = from;
                store.changes_after(from, |t, before, after| {
                    assert!(t > from && t >= last, "changes come after {from}, in time order");
                    if t > last {
                        assert_eq!(state, seen[last as usize], "all changes up to {last} lead to its state");
                        last = t;
                    }
                    if let Some(b) = before {
                        assert_eq!(state.remove(b.identity.text()), Some((b.customer.to_string(), b.cents)));
                    }
                    if let Some(a) = after {
                        assert!(state.insert(a.identity.text().to_string(), (a.customer.to_string(), a.cents)).is_none());
                    }
                });
                prop_assert_eq!(&state, seen.last().unwrap());
            }
        }
    }
}
