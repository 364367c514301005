//! Groups of amounts by a key: the state of the `customers` view and of every view created
//! with `GROUP BY` — count, total and the amounts themselves, so that min and max stay exact
//! when a transaction is retracted ([`super::amounts`]). The state is shared with the worker
//! that runs it, so that every snapshot can keep it beside its versions and a restart can put
//! it back instead of recomputing it from every live transaction.
//!
//! ```text
//! run:       (key, cents) records ─► KeyedRows ─► one retraction and insertion per changed group
//!                                      state: Ali → count 3, total 400, amounts [80, 120, 200]
//! snapshot:  Groups::request_capture(T) ─► captured as of T (amounts shared) ─► the writer
//!            encodes it (Captured::encode) ─► views-<T>-<worker>.bin
//! stop:      Groups::encode_as_of(T) ─► views-<T>-<worker>.bin       (T: the snapshot on disk)
//! restart:   views-<T>-<worker>.bin ─► Groups::restore ─► KeyedRows emits every row at time 0
//! ```
//!
//! The encoding, per group: the key's length (u32) and bytes, count (i64), total (i128), min
//! and max (i64), then the number of distinct amounts (u32) and each `(cents, multiplicity)`
//! (i64, i64) in increasing order — little-endian, after the number of groups (u64). Decoding
//! checks that every group adds up (count, total, extremes), so a damaged file is refused.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use super::amounts::{Amounts, Log};
use super::in_order::Ordered;
use super::rows::CustomerRow;
use super::FastMap;
use super::Time;

/// The groups of one keyed view on one worker, and which records they reflect.
pub struct Groups<K> {
    map: FastMap<K, Amounts>,
    /// The latest time a record was applied at.
    last_applied: Option<Time>,
    /// Every record of a time before this one has been applied (`None`: all of them, the
    /// input is closed).
    applied_before: Option<Time>,
    /// Restored groups whose rows are not sent yet.
    unsent: bool,
    /// The time a snapshot asks the groups as of, until they are captured.
    pending: Option<Time>,
    /// The groups captured for a snapshot, or the time of one they could not be captured for.
    captured: Option<Result<Captured<K>, Time>>,
}

impl<K> Default for Groups<K> {
    fn default() -> Self {
        Groups {
            map: FastMap::default(),
            last_applied: None,
            applied_before: Some(0),
            unsent: false,
            pending: None,
            captured: None,
        }
    }
}

/// One worker's groups of one view as of a snapshot's time, sharing their amounts with the
/// live groups (copy-on-write), for the snapshot writer to encode on its own thread.
pub struct Captured<K> {
    /// The time they are as of: exactly the records of the times up to it.
    pub time: Time,
    map: FastMap<K, Amounts>,
}

impl<K: KeyCodec> Captured<K> {
    /// Hands the groups' encoding to `sink` piece by piece, as [`Groups::encode_as_of`]
    /// writes it (a piece at a time: the writer streams it into the file).
    pub fn encode(&self, sink: &mut dyn FnMut(&[u8])) {
        encode_groups(&self.map, sink);
    }
}

/// Hands the number of groups, then each group's encoding, to `sink`.
fn encode_groups<K: KeyCodec>(map: &FastMap<K, Amounts>, sink: &mut dyn FnMut(&[u8])) {
    sink(&(map.len() as u64).to_le_bytes());
    let (mut key, mut group) = (Vec::new(), Vec::new());
    for (k, amounts) in map {
        key.clear();
        group.clear();
        k.encode(&mut key);
        amounts.encode(&key, &mut group);
        sink(&group);
    }
}

/// [`Groups`] shared by the operator that keeps them and the worker that runs it.
pub type SharedGroups<K> = Rc<RefCell<Groups<K>>>;

/// A group key that can be written down and read back.
pub trait KeyCodec: Sized {
    /// Appends the key's bytes.
    fn encode(&self, out: &mut Vec<u8>);
    /// The key `bytes` encode, if they encode one.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

impl KeyCodec for Arc<str> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        std::str::from_utf8(bytes).ok().map(Arc::from)
    }
}

/// Why encoded groups were refused.
#[derive(Debug, thiserror::Error)]
#[error("the groups' bytes are damaged: {0}")]
pub struct DamagedGroups(&'static str);

impl<K: KeyCodec + std::hash::Hash + Eq> Groups<K> {
    /// Appends the groups as of `time` to `out`, if they hold exactly the records of the
    /// times up to `time`: every record before `time + 1` applied, none of a later time.
    /// Returns whether they did (and were written).
    pub fn encode_as_of(&mut self, time: Time, out: &mut Vec<u8>) -> bool {
        let exact = self.exact_as_of(time);
        if exact {
            self.encode(&mut |bytes| out.extend_from_slice(bytes));
        }
        exact
    }

    /// Whether the groups hold exactly the records of the times up to `time`.
    pub fn exact_as_of(&self, time: Time) -> bool {
        let through = self.applied_before.is_none_or(|before| before > time);
        through && self.last_applied.is_none_or(|t| t <= time) && !self.unsent
    }

    /// Hands the groups' encoding to `sink` piece by piece (see [`Groups::exact_as_of`] for
    /// the time they are as of).
    pub fn encode(&mut self, sink: &mut dyn FnMut(&[u8])) {
        // Consolidated in place: the live groups keep the sorted logs.
        self.map.values_mut().for_each(Amounts::consolidate);
        encode_groups(&self.map, sink);
    }

    /// Replaces the groups by those `bytes` encode ([`Groups::encode_as_of`]), to be sent as
    /// rows at time 0 by the operator keeping them. Returns how many groups there are.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<usize, DamagedGroups> {
        let mut at = bytes;
        let mut take = |n: usize| -> Result<&[u8], DamagedGroups> {
            if at.len() < n {
                return Err(DamagedGroups("it ends early"));
            }
            let (head, rest) = at.split_at(n);
            at = rest;
            Ok(head)
        };
        let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize;
        let i64_at = |b: &[u8]| i64::from_le_bytes(b.try_into().expect("8 bytes"));
        let groups = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
        let mut map = FastMap::default();
        map.reserve(groups.min(1 << 24) as usize);
        for _ in 0..groups {
            let length = u32_at(take(4)?);
            let key = K::decode(take(length)?).ok_or(DamagedGroups("a key does not decode"))?;
            let count = i64_at(take(8)?);
            let total = i128::from_le_bytes(take(16)?.try_into().expect("16 bytes"));
            let (min, max) = (i64_at(take(8)?), i64_at(take(8)?));
            let distinct = u32_at(take(4)?);
            let entries = take(distinct.checked_mul(16).ok_or(DamagedGroups("too many amounts"))?)?;
            let log: Vec<(i64, i64)> = entries.chunks_exact(16).map(|e| (i64_at(&e[..8]), i64_at(&e[8..]))).collect();
            let adds_up = log.windows(2).all(|w| w[0].0 < w[1].0)
                && log.iter().all(|(_, n)| *n > 0)
                && log.iter().map(|(_, n)| *n).sum::<i64>() == count
                && log.iter().map(|(c, n)| i128::from(*c) * i128::from(*n)).sum::<i128>() == total
                && log.first().map(|e| e.0) == Some(min)
                && log.last().map(|e| e.0) == Some(max);
            if !adds_up {
                return Err(DamagedGroups("a group does not add up"));
            }
            let sorted = log.len();
            let amounts = Amounts { count, total, log: Log::from_vec(log), sorted, min, max, before: None };
            if map.insert(key, amounts).is_some() {
                return Err(DamagedGroups("a key is there twice"));
            }
        }
        if !at.is_empty() {
            return Err(DamagedGroups("bytes follow the last group"));
        }
        let restored = map.len();
        *self = Groups { map, unsent: restored > 0, ..Groups::default() };
        Ok(restored)
    }
}

impl<K: Clone> Groups<K> {
    /// How many groups there are.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Asks for the groups as of `time`, to be captured once they hold exactly the records
    /// of the times up to it (see [`crate::dataflow::snapshot`]: the same moments the upsert
    /// captures its versions at). The caller guarantees the operator's frontier has not
    /// passed `time` yet. A request replaces one not captured yet.
    pub fn request_capture(&mut self, time: Time) {
        self.pending = Some(time);
        self.captured = None;
    }

    /// Forgets the request and what was captured for it (a capture holds chunks of the
    /// amounts, which the groups then stop sharing).
    pub fn cancel_capture(&mut self) {
        self.pending = None;
        self.captured = None;
    }

    /// The groups captured for the request, once they are: `Err(time)` if they could not be
    /// (they held a later record, or restored rows not sent yet).
    pub fn take_capture(&mut self) -> Option<Result<Captured<K>, Time>> {
        self.captured.take()
    }

    /// Captures the groups if a request is pending at a time before `low`: the operator
    /// calls it just before it applies the first record of the time `low`, and at the end of
    /// every invocation with its input frontier.
    fn capture_if_passed(&mut self, low: Option<Time>) {
        let Some(time) = self.pending else { return };
        if low.is_some_and(|low| low <= time) {
            return;
        }
        self.pending = None;
        let exact = !self.unsent && self.last_applied.is_none_or(|t| t <= time);
        // Cloning the map copies each group's counters and shares its amounts.
        self.captured = Some(if exact { Ok(Captured { time, map: self.map.clone() }) } else { Err(time) });
    }
}

/// Groups of amounts by a key, each with the state of [`Amounts`]: emits, per completed
/// time, the retraction and insertion of each group's row that changed — and, once, every
/// restored group's row at time 0.
pub(super) struct KeyedRows<K, G> {
    groups: SharedGroups<K>,
    /// Groups changed at the open time.
    changed: Vec<K>,
    /// How a group key is written in the output.
    name: G,
}

impl<K, G> KeyedRows<K, G> {
    pub(super) fn new(groups: SharedGroups<K>, name: G) -> Self {
        KeyedRows { groups, changed: Vec::new(), name }
    }
}

impl<K, O, G> Ordered for KeyedRows<K, G>
where
    K: std::hash::Hash + Eq + Clone,
    G: Fn(&K) -> O,
{
    type Record = ((K, i64), Time, isize);
    type Out = ((O, CustomerRow), Time, isize);

    fn before_open(&mut self, time: Time) {
        self.groups.borrow_mut().capture_if_passed(Some(time));
    }

    fn initial(&mut self, out: &mut Vec<Self::Out>) {
        let mut groups = self.groups.borrow_mut();
        if std::mem::take(&mut groups.unsent) {
            let rows = groups.map.iter().filter_map(|(k, a)| Some((((self.name)(k), a.row()?), 0, 1)));
            out.extend(rows);
        }
    }

    fn apply(&mut self, time: Time, ((key, cents), _, diff): Self::Record, _out: &mut Vec<Self::Out>) {
        let mut groups = self.groups.borrow_mut();
        groups.last_applied = Some(time);
        // One hash lookup per record: the key is moved in, and dropped if already present;
        // it is copied only for a group's first change at a time.
        let amounts = match groups.map.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut group) => {
                if group.get().before.is_none() {
                    self.changed.push(group.key().clone());
                    let amounts = group.get_mut();
                    amounts.before = Some(amounts.row());
                }
                group.into_mut()
            }
            std::collections::hash_map::Entry::Vacant(group) => {
                self.changed.push(group.key().clone());
                group.insert(Amounts { before: Some(None), ..Amounts::default() })
            }
        };
        amounts.add(cents, diff as i64);
    }

    fn complete(&mut self, time: Time, out: &mut Vec<Self::Out>) {
        let mut groups = self.groups.borrow_mut();
        for key in self.changed.drain(..) {
            let amounts = groups.map.get_mut(&key).expect("a changed group has a state");
            let before = amounts.before.take().expect("a changed group knows its row before");
            let after = amounts.row();
            if after.is_none() {
                groups.map.remove(&key);
            }
            if before == after {
                continue;
            }
            if let Some(row) = before {
                out.push((((self.name)(&key), row), time, -1));
            }
            if let Some(row) = after {
                out.push((((self.name)(&key), row), time, 1));
            }
        }
    }

    fn after_invocation(&mut self, low: Option<Time>) {
        let mut groups = self.groups.borrow_mut();
        groups.applied_before = low;
        groups.capture_if_passed(low);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Groups written down and read back hold the same rows, and go on to the same rows
        /// under the same later changes as the groups they were written from; a group that
        /// does not add up, or bytes cut short, are refused.
        #[test]
        fn groups_written_and_read_back_go_on_alike(
            before in proptest::collection::vec((0u8..6, -20i64..20, any::<bool>()), 1..300),
            after in proptest::collection::vec((0u8..6, -20i64..20, any::<bool>()), 0..100),
            cut in any::<prop::sample::Index>(),
        ) {
            let apply = |groups: &mut Groups<Arc<str>>, steps: &[(u8, i64, bool)]| {
                for (key, cents, insert) in steps {
                    let key: Arc<str> = Arc::from(format!("c{key}"));
                    let amounts = groups.map.entry(key).or_default();
                    // Only what is held is retracted.
                    let held = amounts.count > 0 && { amounts.consolidate(); amounts.log.iter().any(|e| e.0 == *cents) };
                    if *insert || !held { amounts.add(*cents, 1) } else { amounts.add(*cents, -1) }
                }
                groups.map.retain(|_, a| a.count > 0);
                groups.last_applied = Some(1);
                groups.applied_before = None;
            };
            let rows = |groups: &Groups<Arc<str>>| {
                groups.map.iter().map(|(k, a)| (k.to_string(), a.row())).collect::<BTreeMap<_, _>>()
            };
            let mut original = Groups::default();
            apply(&mut original, &before);
            let mut bytes = Vec::new();
            prop_assert!(!original.encode_as_of(0, &mut bytes), "a record after the time is refused");
            prop_assert!(original.encode_as_of(1, &mut bytes));
            let mut restored = Groups::default();
            prop_assert_eq!(restored.restore(&bytes).unwrap(), original.map.len());
            prop_assert_eq!(rows(&restored), rows(&original));
            restored.unsent = false;
            apply(&mut original, &after);
            apply(&mut restored, &after);
            prop_assert_eq!(rows(&restored), rows(&original));
            // Damage is refused, never half read.
            let cut = cut.index(bytes.len());
            prop_assert!(Groups::<Arc<str>>::default().restore(&bytes[..cut]).is_err());
        }

        /// Groups captured for a snapshot at time 1 encode exactly as the groups did then,
        /// however the live groups change afterwards (their amounts are shared, copied on
        /// write); the live groups go on as if nothing had been captured.
        #[test]
        fn a_capture_keeps_its_time_while_the_groups_go_on(
            before in proptest::collection::vec((0u8..6, -20i64..20, any::<bool>()), 1..300),
            after in proptest::collection::vec((0u8..6, -20i64..20, any::<bool>()), 1..100),
        ) {
            let apply = |groups: &mut Groups<Arc<str>>, steps: &[(u8, i64, bool)], time: Time| {
                for (key, cents, insert) in steps {
                    let amounts = groups.map.entry(Arc::from(format!("c{key}"))).or_default();
                    let held = amounts.count > 0 && { amounts.consolidate(); amounts.log.iter().any(|e| e.0 == *cents) };
                    if *insert || !held { amounts.add(*cents, 1) } else { amounts.add(*cents, -1) }
                }
                groups.map.retain(|_, a| a.count > 0);
                groups.last_applied = Some(time);
                groups.applied_before = Some(time + 1);
            };
            // Two maps iterate alike only if built alike: compare what the bytes decode to.
            let rows = |bytes: &[u8]| {
                let mut g = Groups::<Arc<str>>::default();
                g.restore(bytes).unwrap();
                g.map.iter().map(|(k, a)| (k.to_string(), (a.row(), a.log.to_vec()))).collect::<BTreeMap<_, _>>()
            };
            let (mut groups, mut unshared) = (Groups::default(), Groups::default());
            apply(&mut groups, &before, 1);
            apply(&mut unshared, &before, 1);
            let mut then = Vec::new();
            encode_groups(&unshared.map, &mut |b| then.extend_from_slice(b));

            groups.request_capture(1);
            groups.capture_if_passed(Some(1));
            prop_assert!(groups.take_capture().is_none(), "time 1 is not complete yet");
            groups.capture_if_passed(Some(2));
            let captured = groups.take_capture().unwrap().ok().unwrap();
            apply(&mut groups, &after, 2);
            apply(&mut unshared, &after, 2);
            let mut bytes = Vec::new();
            captured.encode(&mut |b| bytes.extend_from_slice(b));
            prop_assert_eq!(rows(&bytes), rows(&then));
            let (mut live, mut expected) = (Vec::new(), Vec::new());
            prop_assert!(groups.encode_as_of(2, &mut live) && unshared.encode_as_of(2, &mut expected));
            prop_assert_eq!(rows(&live), rows(&expected));

            // A request the groups have gone past is refused, never captured late.
            groups.request_capture(1);
            groups.capture_if_passed(None);
            prop_assert!(matches!(groups.take_capture(), Some(Err(1))));
        }
    }
}
