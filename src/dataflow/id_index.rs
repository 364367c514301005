//! The version table's index: an identity's hash → its slot number, in a flat array the
//! upsert can touch ahead of its lookups.
//!
//! Open addressing with linear probing over one `u64` a bucket: the hash's high 32 bits (a
//! tag) beside the slot number plus one, 0 for an empty bucket. A lookup starts at the
//! bucket of the hash's low bits and walks on until it finds an empty one; a bucket whose
//! tag matches is a candidate, which the caller confirms by comparing the identity's text
//! (so the index is exact; the tag only spares almost every comparison with another id).
//!
//! ```text
//! hash 0x9e37_79b9_0000_0005, 16 buckets:  start at bucket 5
//! [ 0 | 0 | 0 | 0 | 0 | 9e3779b9·(7+1) | 1234abcd·(2+1) | 0 | … ]
//!                       ^ tag matches: is slot 7's id the one asked? else walk on
//! ```
//!
//! Why not hashbrown's table, which this replaced? Its buckets cannot be reached from
//! outside, so a lookup could not be prepared: on a history of millions of identities
//! nearly every lookup misses the cache on its first bucket (45% of the upsert's samples
//! were that one load). Here [`SlotIndex::touch`] loads the first buckets of several
//! hashes at once (the upsert: 16 of a message's identities) — the loads miss together
//! instead of one after another — and the lookups that follow find them in the cache.
//!
//! Linear probing suffers more than hashbrown's groups from hashes that share their low
//! bits; the hasher is seeded at random in every process (`foldhash`'s `RandomState`), so a
//! source cannot aim its ids at one run of buckets without knowing the seed.

/// Buckets are at most this full (3/4) before the index grows.
const FILL: (usize, usize) = (3, 4);

/// Hash → slot number (see the module docs).
#[derive(Clone, Default)]
pub struct SlotIndex {
    /// A power of two of buckets, or none yet.
    buckets: Vec<u64>,
    len: usize,
}

/// Where a lookup ended.
pub enum Found {
    /// The slot of the identity asked for.
    Slot(u32),
    /// The empty bucket where it would go.
    Vacant(usize),
}

impl SlotIndex {
    /// How many slots it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many slots it can hold before it grows.
    pub fn capacity(&self) -> usize {
        self.buckets.len() / FILL.1 * FILL.0
    }

    /// Makes room for `additional` more slots; `rehash` gives the hash of a slot already in,
    /// should the buckets move.
    pub fn reserve(&mut self, additional: usize, rehash: impl Fn(u32) -> u64) {
        let needed = self.len.saturating_add(additional);
        if needed <= self.capacity() {
            return;
        }
        let buckets = (needed / FILL.0)
            .checked_mul(FILL.1)
            .and_then(|b| b.checked_add(FILL.1))
            .and_then(usize::checked_next_power_of_two)
            .expect("an index of fewer than 2^63 buckets")
            .max(16);
        // Zeroed pages from the allocator: the kernel touches them only as they are used.
        let old = std::mem::replace(&mut self.buckets, vec![0; buckets]);
        for entry in old.into_iter().filter(|&e| e != 0) {
            let at = self.vacant(rehash(slot_of(entry)));
            self.buckets[at] = entry;
        }
    }

    /// Loads the first bucket of each hash, so that lookups of them soon after find it in
    /// the cache. The loads are independent: the processor waits for them together.
    pub fn touch(&self, hashes: &[u64]) {
        let Some(mask) = self.buckets.len().checked_sub(1) else { return };
        let mut seen = 0u64;
        for &hash in hashes {
            seen ^= self.buckets[hash as usize & mask];
        }
        std::hint::black_box(seen);
    }

    /// The slot of `hash` for which `is` says yes, else the empty bucket where it would go
    /// (`None` while the index has no buckets; filling a vacant bucket needs room made
    /// first: see [`SlotIndex::reserve`] and [`SlotIndex::fill`]).
    pub fn find(&self, hash: u64, mut is: impl FnMut(u32) -> bool) -> Option<Found> {
        let mask = self.buckets.len().checked_sub(1)?;
        let tag = hash >> 32;
        let mut at = hash as usize & mask;
        loop {
            match self.buckets[at] {
                0 => return Some(Found::Vacant(at)),
                entry if entry >> 32 == tag && is(slot_of(entry)) => return Some(Found::Slot(slot_of(entry))),
                _ => at = (at + 1) & mask,
            }
        }
    }

    /// Puts `slot` in the empty bucket `at` that [`SlotIndex::find`] gave for `hash`, with
    /// nothing changed in between.
    pub fn fill(&mut self, at: usize, hash: u64, slot: u32) {
        debug_assert!(self.buckets[at] == 0 && self.len < self.capacity());
        self.buckets[at] = entry(hash, slot);
        self.len += 1;
    }

    /// Adds `slot`, known not to be in, for `hash` (room made first).
    pub fn insert_new(&mut self, hash: u64, slot: u32) {
        debug_assert!(self.len < self.capacity());
        let at = self.vacant(hash);
        self.fill(at, hash, slot);
    }

    /// The first empty bucket from `hash`'s own on.
    fn vacant(&self, hash: u64) -> usize {
        let mask = self.buckets.len() - 1;
        let mut at = hash as usize & mask;
        while self.buckets[at] != 0 {
            at = (at + 1) & mask;
        }
        at
    }

    /// How many buckets it has (the bucket of a hash is its low bits under that many).
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }
}

fn entry(hash: u64, slot: u32) -> u64 {
    debug_assert!(slot < u32::MAX);
    (hash >> 32 << 32) | (slot as u64 + 1)
}

fn slot_of(entry: u64) -> u32 {
    (entry as u32) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_slot_through_collisions_tags_and_growth() {
        // Hashes chosen to collide: the same low bits (one first bucket), some the same tag.
        let hash = |n: u32| ((n as u64 % 3) << 32) | 5;
        let mut index = SlotIndex::default();
        assert!(index.find(hash(0), |_| true).is_none(), "no buckets yet: nothing found");
        for n in 0..100u32 {
            index.reserve(1, hash);
            match index.find(hash(n), |slot| slot == n) {
                Some(Found::Vacant(at)) => index.fill(at, hash(n), n),
                _ => panic!("{n} is not in yet"),
            }
        }
        assert_eq!(index.len(), 100);
        assert!(index.capacity() >= 100 && index.buckets().is_power_of_two());
        for n in 0..100u32 {
            // A candidate whose tag matches but which is not the one asked is walked past.
            let mut asked = Vec::new();
            let found = index.find(hash(n), |slot| {
                asked.push(slot);
                slot == n
            });
            assert!(matches!(found, Some(Found::Slot(s)) if s == n));
            assert!(asked.iter().all(|&s| s % 3 == n % 3), "only slots of the same tag are compared");
        }
        assert!(matches!(index.find(hash(100), |s| s == 100), Some(Found::Vacant(_))));
        index.touch(&[hash(1), 0, u64::MAX]);
        // Inserted in bulk after a reserve, they are found too.
        let mut bulk = SlotIndex::default();
        bulk.reserve(1000, |_| unreachable!("nothing to move"));
        for n in 0..1000u32 {
            bulk.insert_new((n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15), n);
        }
        let at = |n: u32| (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        assert!((0..1000).all(|n| matches!(bulk.find(at(n), |s| s == n), Some(Found::Slot(s)) if s == n)));
    }
}
