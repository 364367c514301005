//! The version table: the latest version of every identity a worker holds, kept compact,
//! and frozen (shared, not copied) while a snapshot is written.
//!
//! The upsert ([`super::upsert`]) decides which version wins and changes the table; the
//! snapshot capture ([`super::snapshot`]) freezes it; the snapshot file format
//! ([`crate::state::shard`]) encodes a frozen table and decodes one back into updates.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use super::{FastMap, Time};
use crate::event::{Identity, Position, Txn};

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
///
/// The table can be **frozen** for a snapshot without copying it: [`VersionStore::freeze`]
/// shares it with the snapshot writer, and until the writer lets go, changes are kept aside
/// in a small second table that lookups consult first; the first change after that folds
/// them back in.
#[derive(Default)]
pub struct VersionStore {
    pub(super) versions: Arc<FastMap<Identity, Stored>>,
    /// Changes made while `versions` is shared with a snapshot writer.
    pub(super) aside: FastMap<Identity, Stored>,
    pub(super) names: Catalog,
}

/// A worker's versions as they were when frozen, readable from another thread.
pub struct FrozenVersions {
    pub(super) versions: Arc<FastMap<Identity, Stored>>,
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
    pub fn iter(&self) -> impl Iterator<Item = (&Identity, &Stored)> + '_ {
        self.versions.iter()
    }
}

impl VersionStore {
    /// How many identities are known (live transactions and tombstones).
    pub fn len(&self) -> usize {
        self.versions.len() + self.aside.keys().filter(|k| !self.versions.contains_key(*k)).count()
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

    /// Every identity with its latest version.
    pub fn iter(&self) -> impl Iterator<Item = (&Identity, Version)> + '_ {
        let shadowed = |k: &Identity| self.aside.contains_key(k);
        let base = self.versions.iter().filter(move |(k, _)| !shadowed(k));
        self.aside.iter().chain(base).map(|(identity, stored)| {
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
            let mut copy = FastMap::clone(&self.versions);
            copy.extend(self.aside.drain());
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
            versions.extend(self.aside.drain());
        }
    }

    pub(super) fn get(&self, identity: &Identity) -> Option<&Stored> {
        self.aside.get(identity).or_else(|| self.versions.get(identity))
    }

    pub(super) fn set(&mut self, identity: Identity, stored: Stored) {
        self.fold_aside();
        match Arc::get_mut(&mut self.versions) {
            Some(versions) => versions.insert(identity, stored),
            None => self.aside.insert(identity, stored),
        };
    }
}

/// The live versions held by one worker, shared with whoever needs to read them.
pub type LatestVersions = Rc<RefCell<VersionStore>>;

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
    /// The UTC hour of its event time, if any.
    pub hour: Option<i64>,
    /// The customer's name number.
    pub customer: u32,
    /// The category's name number; [`Catalog::NONE`] for no category.
    pub category: u32,
}

/// Names by number and numbers by name.
#[derive(Clone, Default)]
pub struct Catalog {
    numbers: FastMap<Arc<str>, u32>,
    pub(super) names: Vec<Arc<str>>,
}

impl Catalog {
    /// The number that stands for no name (no category).
    pub const NONE: u32 = u32::MAX;

    fn number(&mut self, name: &Arc<str>) -> u32 {
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
            hour: txn.hour,
            customer: self.number(&txn.customer),
            category: txn.category.as_ref().map_or(Self::NONE, |c| self.number(c)),
        }
    }

    pub(super) fn expand(&self, txn: &CompactTxn) -> Txn {
        let name = |n: u32| Arc::clone(&self.names[n as usize]);
        Txn {
            customer: name(txn.customer),
            cents: txn.cents,
            hour: txn.hour,
            category: (txn.category != Self::NONE).then(|| name(txn.category)),
        }
    }
}
