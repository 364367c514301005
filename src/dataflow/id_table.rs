//! The version table's storage: identity → [`Stored`], packed for tens of millions of
//! identities.
//!
//! A plain `HashMap<Identity, Stored>` costs 88 bytes a bucket, a heap allocation per
//! identity, and — because a hash table's buckets are a power of two, half empty after
//! growing — touches up to twice the memory it holds; on a 10M-row history the kernel
//! zeroing those fresh pages was the largest single cost of the load. Here:
//!
//! ```text
//! index:  [ 7 | - | 0 | - | 3 | … ]      hash table of slot numbers and hash tags (8 bytes a bucket)
//! slots:  [ t0 v | t1 v | t2 v | … ]      one 56-byte slot per identity, in arrival order
//! ids:    "t0t1t2…"                       every identity's text, end to end
//! ```
//!
//! Slots and ids are appended, so their pages are touched once, in order, and reserving
//! more than is used costs nothing; only the index ([`super::id_index`]) is sparse, at
//! 8 bytes a bucket. A lookup hashes the text, and compares it with the candidates' texts
//! in `ids` (the index's hash tags rule out nearly all others first): identities are
//! compared exactly, never by a fingerprint. Nothing is ever removed (a delete leaves a
//! tombstone), so slot numbers are stable. A batch of lookups is prepared by
//! [`IdTable::touch`]ing the index for all of its hashes first.

use std::hash::BuildHasher;

use super::id_index::{Found, SlotIndex};
use super::Time;
use crate::event::{IdRef, Position};

/// One identity's latest version, as the table keeps it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The logical time it was admitted at.
    pub time: Time,
    /// Where it came from.
    pub position: Position,
    /// The transaction, or `None` once deleted (a tombstone).
    pub txn: Option<CompactTxn>,
}

/// A transaction whose names are catalog numbers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CompactTxn {
    /// The amount in cents.
    pub cents: i64,
    /// Its event time in seconds since the epoch, if any.
    pub ts: Option<i64>,
    /// The customer's name number.
    pub customer: u32,
    /// The category's name number; [`super::versions::Catalog::NONE`] for no category.
    pub category: u32,
}

/// Identity → [`Stored`] (see the module docs).
#[derive(Clone, Default)]
pub struct IdTable {
    index: SlotIndex,
    slots: Vec<Slot>,
    ids: String,
    hasher: foldhash::fast::RandomState,
    /// Slots appended and not indexed yet, with their hashes (see [`IdTable::append_unindexed`]).
    unindexed: Vec<(u64, u32)>,
}

/// One identity's latest version, packed: 56 bytes against 88 for the plain pair.
#[derive(Clone, Copy)]
struct Slot {
    time: u64,
    seq: u64,
    cents: i64,
    /// [`NO_TS`] for none.
    ts: i64,
    /// Where the identity's text starts in `ids`.
    id_start: u64,
    source: u32,
    /// [`TOMBSTONE`] once deleted.
    customer: u32,
    category: u32,
    /// The text's length, with [`AT`] set for a place identity.
    id_len: u32,
}

const AT: u32 = 1 << 31;
const TOMBSTONE: u32 = u32::MAX;
const NO_TS: i64 = i64::MIN;

impl Slot {
    fn stored(&self) -> Stored {
        let txn = (self.customer != TOMBSTONE).then_some(CompactTxn {
            cents: self.cents,
            ts: (self.ts != NO_TS).then_some(self.ts),
            customer: self.customer,
            category: self.category,
        });
        Stored { time: self.time, position: Position { source: self.source, seq: self.seq }, txn }
    }

    fn set(&mut self, stored: &Stored) {
        self.time = stored.time;
        self.seq = stored.position.seq;
        self.source = stored.position.source;
        match stored.txn {
            Some(txn) => {
                // Catalog numbers stop below u32::MAX; an event time is never i64::MIN seconds.
                debug_assert!(txn.customer != TOMBSTONE && txn.ts != Some(NO_TS));
                self.cents = txn.cents;
                self.ts = txn.ts.unwrap_or(NO_TS);
                self.customer = txn.customer;
                self.category = txn.category;
            }
            None => {
                (self.cents, self.ts, self.customer, self.category) = (0, NO_TS, TOMBSTONE, TOMBSTONE);
            }
        }
    }
}

impl IdTable {
    /// How many identities it holds.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Makes room for `additional` more identities (and ~16 bytes of text each) at once.
    pub fn reserve(&mut self, additional: usize) {
        let Self { index, slots, ids, hasher, .. } = self;
        index.reserve(additional, |n| hash(hasher, id_of(slots, ids, n)));
        slots.reserve(additional);
        ids.reserve(additional.saturating_mul(16));
    }

    /// The version of `id`, if known.
    pub fn get(&self, id: IdRef<'_>) -> Option<Stored> {
        debug_assert!(self.unindexed.is_empty(), "identities appended are indexed before a lookup");
        match self.index.find(self.hash(id), |n| id_of(&self.slots, &self.ids, n) == id)? {
            Found::Slot(n) => Some(self.slots[n as usize].stored()),
            Found::Vacant(_) => None,
        }
    }

    /// The hash `id` is looked up by.
    pub fn hash(&self, id: IdRef<'_>) -> u64 {
        hash(&self.hasher, id)
    }

    /// Readies the lookups of these hashes (see [`SlotIndex::touch`]): the upsert touches
    /// a batch's hashes, then updates them one by one.
    pub fn touch(&self, hashes: &[u64]) {
        self.index.touch(hashes);
    }

    /// Sets the version of `id`, adding it if unknown.
    pub fn insert(&mut self, id: IdRef<'_>, stored: Stored) {
        self.update(id, |_| Some(stored));
    }

    /// Looks `id` up once and lets `change` decide from its version (`None`: unknown) what
    /// the new one is, if any.
    pub fn update(&mut self, id: IdRef<'_>, change: impl FnOnce(Option<Stored>) -> Option<Stored>) {
        self.update_hashed(self.hash(id), id, change);
    }

    /// [`IdTable::update`] of `id`, whose [`IdTable::hash`] is `hash`.
    pub fn update_hashed(&mut self, hash: u64, id: IdRef<'_>, change: impl FnOnce(Option<Stored>) -> Option<Stored>) {
        debug_assert_eq!(hash, self.hash(id));
        self.index_appended();
        let Self { index, slots, ids, hasher, .. } = self;
        index.reserve(1, |n| self::hash(hasher, id_of(slots, ids, n)));
        match index.find(hash, |n| id_of(slots, ids, n) == id).expect("room was made") {
            Found::Slot(n) => {
                let slot = &mut slots[n as usize];
                if let Some(new) = change(Some(slot.stored())) {
                    slot.set(&new);
                }
            }
            Found::Vacant(at) => {
                let Some(new) = change(None) else { return };
                let n = push_slot(slots, ids, id, &new);
                index.fill(at, hash, n);
            }
        }
    }

    /// Adds `id`, which the table does not hold (a snapshot's shard holds each identity
    /// once), without indexing it yet: [`IdTable::index_appended`] indexes all such at once,
    /// in the order of the index's buckets. Inserted one by one in arrival order, each missed
    /// the cache twice in an index of millions (16% of a restart's CPU). Lookups see it only
    /// once indexed; an update indexes first.
    pub fn append_unindexed(&mut self, id: IdRef<'_>, stored: Stored) {
        if self.unindexed.is_empty() {
            // As many as the slots have room for (reserved for the load), not grown by copies.
            self.unindexed.reserve(self.slots.capacity() - self.slots.len());
        }
        let hash = hash(&self.hasher, id);
        let n = push_slot(&mut self.slots, &mut self.ids, id, &stored);
        self.unindexed.push((hash, n));
    }

    /// Indexes the identities appended by [`IdTable::append_unindexed`].
    pub fn index_appended(&mut self) {
        if self.unindexed.is_empty() {
            return;
        }
        let Self { index, slots, ids, hasher, unindexed } = self;
        index.reserve(unindexed.len(), |n| hash(hasher, id_of(slots, ids, n)));
        // A hash's first bucket is its low bits: in that order the inserts walk the index
        // from end to end.
        let mask = index.buckets() as u64 - 1;
        unindexed.sort_unstable_by_key(|(hash, _)| hash & mask);
        for (hash, n) in unindexed.drain(..) {
            index.insert_new(hash, n);
        }
        *unindexed = Vec::new();
    }

    /// The identity at position `n` (in the order they were first seen) and its version.
    pub fn at(&self, n: usize) -> (IdRef<'_>, Stored) {
        (id_of(&self.slots, &self.ids, n as u32), self.slots[n].stored())
    }

    /// Every identity with its version, in the order they were first seen.
    pub fn iter(&self) -> impl Iterator<Item = (IdRef<'_>, Stored)> + '_ {
        (0..self.slots.len()).map(|n| (id_of(&self.slots, &self.ids, n as u32), self.slots[n].stored()))
    }
}

/// Appends a slot for `id` (not in the table) holding `stored`; returns its number.
fn push_slot(slots: &mut Vec<Slot>, ids: &mut String, id: IdRef<'_>, stored: &Stored) -> u32 {
    let n = u32::try_from(slots.len())
        .ok()
        .filter(|&n| n < u32::MAX)
        .expect("a worker holds fewer than 2^32 - 1 identities");
    let (text, at) = match id {
        IdRef::Id(text) => (text, 0),
        IdRef::At(text) => (text, AT),
    };
    let len = u32::try_from(text.len()).ok().filter(|l| l & AT == 0).expect("an identity is under 2 GiB");
    let mut slot = Slot {
        time: 0,
        seq: 0,
        cents: 0,
        ts: NO_TS,
        id_start: ids.len() as u64,
        source: 0,
        customer: TOMBSTONE,
        category: TOMBSTONE,
        id_len: len | at,
    };
    slot.set(stored);
    ids.push_str(text);
    slots.push(slot);
    n
}

fn id_of<'a>(slots: &[Slot], ids: &'a str, n: u32) -> IdRef<'a> {
    let slot = &slots[n as usize];
    let start = slot.id_start as usize;
    let text = &ids[start..start + (slot.id_len & !AT) as usize];
    if slot.id_len & AT == 0 {
        IdRef::Id(text)
    } else {
        IdRef::At(text)
    }
}

fn hash(hasher: &foldhash::fast::RandomState, id: IdRef<'_>) -> u64 {
    hasher.hash_one(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(seq: u64, txn: Option<(i64, u32)>) -> Stored {
        let txn = txn.map(|(cents, customer)| CompactTxn { cents, ts: Some(7), customer, category: TOMBSTONE });
        Stored { time: seq, position: Position { source: 1, seq }, txn }
    }

    #[test]
    fn keeps_every_identity_apart_and_exact() {
        assert_eq!(std::mem::size_of::<Slot>(), 56);
        let mut table = IdTable::default();
        table.reserve(10);
        // An id and a place with the same text are different identities.
        table.insert(IdRef::Id("t1"), stored(1, Some((100, 0))));
        table.insert(IdRef::At("t1"), stored(2, Some((200, 1))));
        table.insert(IdRef::Id("t1"), stored(3, None));
        // Many more than reserved: the index grows and rehashes from the texts.
        for n in 0..5000 {
            table.insert(IdRef::Id(&format!("x{n}")), stored(n, Some((n as i64, 2))));
        }
        assert_eq!(table.len(), 5002);
        assert!(table.get(IdRef::Id("t1")).unwrap().txn.is_none(), "a tombstone");
        assert_eq!(table.get(IdRef::At("t1")).unwrap().txn.unwrap().cents, 200);
        assert_eq!(table.get(IdRef::Id("x4999")).unwrap().position.seq, 4999);
        assert!(table.get(IdRef::Id("x5000")).is_none());
        assert!(table.get(IdRef::At("x1")).is_none());
        let first: Vec<_> = table.iter().take(2).map(|(id, s)| (id, s.time)).collect();
        assert_eq!(first, vec![(IdRef::Id("t1"), 3), (IdRef::At("t1"), 2)]);
        // A version round-trips exactly, with and without its event time.
        let mut no_ts = stored(9, Some((-5, 3)));
        no_ts.txn.as_mut().unwrap().ts = None;
        table.insert(IdRef::Id("t9"), no_ts);
        assert!(table.get(IdRef::Id("t9")) == Some(no_ts));
        // `update` decides from the current version, and may leave it.
        table.update(IdRef::Id("t9"), |old| old.filter(|_| false));
        table.update(IdRef::Id("new"), |old| {
            assert!(old.is_none());
            None
        });
        assert!(table.get(IdRef::Id("t9")) == Some(no_ts));
        assert!(table.get(IdRef::Id("new")).is_none());
    }

    #[test]
    fn identities_appended_in_bulk_are_found_once_indexed() {
        let mut table = IdTable::default();
        table.insert(IdRef::Id("before"), stored(1, Some((1, 0))));
        // More than the index holds: it grows when they are indexed.
        for n in 0..20_000u64 {
            let id = format!("b{n}");
            let id = if n % 3 == 0 { IdRef::At(&id) } else { IdRef::Id(&id) };
            table.append_unindexed(id, stored(n, Some((n as i64, 2))));
        }
        table.index_appended();
        assert_eq!(table.len(), 20_001);
        for n in (0..20_000u64).step_by(7) {
            let id = format!("b{n}");
            let (found, other) = match n % 3 {
                0 => (IdRef::At(&id), IdRef::Id(&id)),
                _ => (IdRef::Id(&id), IdRef::At(&id)),
            };
            assert_eq!(table.get(found).map(|s| s.position.seq), Some(n), "{id}");
            assert!(table.get(other).is_none(), "{id} is only the identity appended");
        }
        assert!(table.get(IdRef::Id("before")).is_some());
        // An update before indexing indexes first: the appended one is changed, not doubled.
        table.append_unindexed(IdRef::Id("late"), stored(5, Some((5, 1))));
        table.insert(IdRef::Id("late"), stored(6, None));
        assert_eq!(table.len(), 20_002);
        assert!(table.get(IdRef::Id("late")).unwrap().txn.is_none());
    }
}
