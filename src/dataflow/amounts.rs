//! One group's amounts — count, total, min, max and the amounts themselves — kept so that
//! min and max stay exact when a transaction is retracted, and so that a snapshot can take
//! the whole state of every group without copying the amounts.
//!
//! The amounts are a log of `(cents, diff)`: its first `sorted` entries consolidated (sorted
//! by amount, distinct, none zero), the rest appended since. Min and max are kept beside it;
//! an insertion only appends and compares. Only a retraction of the current min or max needs
//! the log consolidated (sorted, equal amounts merged) to know the next extreme, and the log
//! is consolidated whenever it has grown to twice its consolidated length, so it holds at
//! most about twice the distinct amounts.
//!
//! ```text
//! add 120, add 200, add 120   log [(120,1), (200,1), (120,1)]          min 120, max 200
//! retract 200 (the max)       consolidated [(120,2)]                   min 120, max 120
//! ```
//!
//! Why not a hash multiset (as before) or a BTreeMap: with 10,000 customers of ~900
//! transactions, each lookup in one of 10,000 tables missed the cache twice (control byte,
//! bucket) — a third of a restart's CPU went to those misses. Appending touches only the
//! log's end; sorting one customer's log runs within the cache.
//!
//! The log is held in chunks shared copy-on-write (`Log`): a snapshot takes every group by
//! cloning them, which copies no amounts, and an entry appended while a snapshot holds the
//! last chunk starts a new one instead of copying it. Without snapshots a log is one chunk,
//! appended to and consolidated in place. (One shared vector per group, copied
//! on the first change after a snapshot, copied ~80 MB a worker after each snapshot of a
//! 10M-row state, and the copies' fresh pages cost the freshness of messages meanwhile.)
//! Only consolidating — rare: an extreme retracted, or the log doubled — writes a new log.

use std::sync::Arc;

use super::rows::CustomerRow;

/// A log of `(cents, diff)` in chunks, each shared until changed.
#[derive(Clone, Default)]
pub(super) struct Log {
    chunks: Vec<Arc<Vec<(i64, i64)>>>,
    len: usize,
}

impl Log {
    /// A log of `entries`, as one chunk (no copy).
    pub(super) fn from_vec(entries: Vec<(i64, i64)>) -> Self {
        let len = entries.len();
        let chunks = if entries.is_empty() { Vec::new() } else { vec![Arc::new(entries)] };
        Log { chunks, len }
    }

    /// How many entries it holds.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Its entries, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &(i64, i64)> + '_ {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// Its entries, copied.
    pub(super) fn to_vec(&self) -> Vec<(i64, i64)> {
        let mut all = Vec::with_capacity(self.len);
        self.chunks.iter().for_each(|c| all.extend_from_slice(c));
        all
    }

    fn push(&mut self, entry: (i64, i64)) {
        self.len += 1;
        // To the last chunk, unless a snapshot holds it: then to a new one (nothing copied).
        match self.chunks.last_mut().and_then(Arc::get_mut) {
            Some(last) => last.push(entry),
            None => self.chunks.push(Arc::new(vec![entry])),
        }
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }

    /// Consolidates the log ([`consolidate`]) — in place when it is one chunk no snapshot
    /// holds, else into a new one.
    fn consolidate(&mut self) {
        if let [only] = self.chunks.as_mut_slice() {
            if let Some(entries) = Arc::get_mut(only) {
                consolidate(entries);
                self.len = entries.len();
                if entries.is_empty() {
                    self.chunks.clear();
                }
                return;
            }
        }
        let mut all = self.to_vec();
        consolidate(&mut all);
        *self = Log::from_vec(all);
    }

    fn first(&self) -> Option<&(i64, i64)> {
        self.chunks.first().and_then(|c| c.first())
    }

    fn last(&self) -> Option<&(i64, i64)> {
        self.chunks.last().and_then(|c| c.last())
    }
}

/// Sorts a log of `(cents, diff)` by amount, merges equal amounts and drops those none holds
/// any more.
fn consolidate(log: &mut Vec<(i64, i64)>) {
    // A stable sort finds the consolidated prefix already in order and merges the rest into
    // it, where an unstable one would sort the whole log again.
    log.sort_by_key(|(cents, _)| *cents);
    log.dedup_by(|next, kept| {
        next.0 == kept.0 && {
            kept.1 += next.1;
            true
        }
    });
    log.retain(|(_, diff)| *diff != 0);
}

/// One group's state: enough to know its row after any retraction (see the module docs).
///
/// A retraction always follows the insertion it undoes (the upsert retracts only what it
/// sent, on the same channel), so no amount's multiplicity is ever below zero.
#[derive(Clone, Default)]
pub(super) struct Amounts {
    pub(super) count: i64,
    pub(super) total: i128,
    pub(super) log: Log,
    /// How many of the log's first entries are consolidated.
    pub(super) sorted: usize,
    /// The least and greatest amounts held (meaningless while `count` is 0).
    pub(super) min: i64,
    pub(super) max: i64,
    /// The row before the first change at the open time; `None` when unchanged.
    pub(super) before: Option<Option<CustomerRow>>,
}

impl Amounts {
    /// Appended entries beyond this many (besides twice the consolidated ones) are merged.
    pub(super) const SLACK: usize = 32;

    /// The group's row; `None` once it holds nothing.
    pub(super) fn row(&self) -> Option<CustomerRow> {
        (self.count > 0).then_some(CustomerRow { total: self.total, count: self.count, min: self.min, max: self.max })
    }

    /// Adds `diff` (±1) of the amount `cents`.
    pub(super) fn add(&mut self, cents: i64, diff: i64) {
        if self.count <= 0 {
            (self.min, self.max) = (cents, cents);
        }
        self.count += diff;
        self.total += i128::from(cents) * i128::from(diff);
        if self.count <= 0 {
            // Nothing held any more.
            self.log.clear();
            self.sorted = 0;
            return;
        }
        self.log.push((cents, diff));
        if diff > 0 {
            self.min = self.min.min(cents);
            self.max = self.max.max(cents);
        }
        let extreme_retracted = diff < 0 && (cents == self.min || cents == self.max);
        if extreme_retracted || self.log.len() > 2 * self.sorted + Self::SLACK {
            self.consolidate();
        }
    }

    /// Sorts the log, merges equal amounts, drops those none holds any more, and reads the
    /// extremes from its ends.
    pub(super) fn consolidate(&mut self) {
        if self.sorted == self.log.len() {
            return;
        }
        self.log.consolidate();
        self.sorted = self.log.len();
        if let (Some(first), Some(last)) = (self.log.first(), self.log.last()) {
            (self.min, self.max) = (first.0, last.0);
        }
    }

    /// Appends the group's encoding ([`super::groups`]'s module docs) after `key`'s,
    /// consolidating a copy of the log if it is not (the log may be shared with a snapshot).
    pub(super) fn encode(&self, key: &[u8], out: &mut Vec<u8>) {
        let consolidated = (self.sorted < self.log.len()).then(|| {
            let mut copy = self.log.to_vec();
            consolidate(&mut copy);
            copy
        });
        let (distinct, entries): (usize, Box<dyn Iterator<Item = &(i64, i64)>>) = match &consolidated {
            Some(copy) => (copy.len(), Box::new(copy.iter())),
            None => (self.log.len(), Box::new(self.log.iter())),
        };
        out.extend((key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        out.extend(self.count.to_le_bytes());
        out.extend(self.total.to_le_bytes());
        out.extend(self.min.to_le_bytes());
        out.extend(self.max.to_le_bytes());
        out.extend((distinct as u32).to_le_bytes());
        for (cents, n) in entries {
            out.extend(cents.to_le_bytes());
            out.extend(n.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Min, max, count and total after any insertions and retractions of held amounts
        /// (a retraction after the insertion it undoes) equal those of a plain multiset —
        /// also when copies are taken along the way (as snapshots take them), which then
        /// keep what they held.
        #[test]
        fn the_log_of_amounts_knows_its_row_like_a_multiset(
            steps in proptest::collection::vec((-20i64..20, any::<bool>(), 0usize..1000, 0u8..20), 1..400)
        ) {
            let (mut amounts, mut held) = (Amounts::default(), BTreeMap::<i64, i64>::new());
            let mut copies: Vec<(Amounts, Vec<(i64, i64)>)> = Vec::new();
            for (cents, insert, pick, copy) in steps {
                let (cents, diff) = match (insert, held.len()) {
                    (false, n) if n > 0 => (*held.keys().nth(pick % n).unwrap(), -1),
                    _ => (cents, 1),
                };
                amounts.add(cents, diff);
                *held.entry(cents).or_default() += diff;
                held.retain(|_, n| *n != 0);
                let expected = (!held.is_empty()).then(|| {
                    let count: i64 = held.values().sum();
                    let total: i128 = held.iter().map(|(c, n)| i128::from(*c * *n)).sum();
                    (count, total, *held.keys().next().unwrap(), *held.keys().last().unwrap())
                });
                let row = amounts.row().map(|r| (r.count, r.total, r.min, r.max));
                prop_assert_eq!(row, expected);
                // The consolidated part is sorted, distinct and held; the rest is bounded by it.
                let log = amounts.log.to_vec();
                prop_assert_eq!(log.len(), amounts.log.len());
                let sorted = &log[..amounts.sorted];
                prop_assert!(sorted.windows(2).all(|w| w[0].0 < w[1].0) && sorted.iter().all(|e| e.1 != 0));
                prop_assert!(amounts.log.len() <= 2 * amounts.sorted + Amounts::SLACK);
                if copy == 0 {
                    copies.push((amounts.clone(), log));
                }
            }
            for (copy, log) in copies {
                prop_assert_eq!(copy.log.to_vec(), log, "a copy keeps its amounts");
            }
        }
    }

    #[test]
    fn an_entry_appended_while_a_copy_holds_the_log_starts_a_chunk() {
        let mut amounts = Amounts::default();
        for cents in 0..100 {
            amounts.add(cents, 1);
        }
        amounts.consolidate();
        assert_eq!((amounts.log.len(), amounts.log.chunks.len()), (100, 1));
        let taken = amounts.clone();
        amounts.add(5, 1);
        amounts.add(6, 1);
        assert_eq!(amounts.log.chunks.len(), 2, "appended to a new chunk, then to it");
        assert!(Arc::ptr_eq(&amounts.log.chunks[0], &taken.log.chunks[0]), "the rest is shared, not copied");
        amounts.add(0, -1); // the min: consolidated into one new chunk
        assert_eq!(amounts.log.chunks.len(), 1);
        assert_eq!(taken.log.to_vec(), (0..100).map(|c| (c, 1)).collect::<Vec<_>>(), "the copy is as it was");
        assert_eq!((amounts.row().unwrap().min, amounts.row().unwrap().count), (1, 101));
        // Without a copy, one chunk throughout.
        drop(taken);
        amounts.add(500, 1);
        assert_eq!(amounts.log.chunks.len(), 1);
    }
}
