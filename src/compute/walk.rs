//! A walk through an arrangement of one value per key (customer → row, group → row) at a
//! time: the keys a scan seeks, or every key of a range, in key order.
//!
//! The walk holds the trace's batches as they were when it opened (differential's batches are
//! immutable and shared), so the trace may merge and compact while a scan goes on. With
//! `Ali` corrected at time 9, a walk from `B` at time 8 over `Ali, Li, Sara`:
//!
//! ```text
//! seek B ─► Li (its row at 8) ─► Sara (its row at 8) ─► end
//! ```

use std::collections::VecDeque;

use differential_dataflow::trace::cursor::{cursor_list, Cursor, CursorList, Navigable};
use differential_dataflow::trace::TraceReader;
use serde::{Deserialize, Serialize};
use timely::progress::Antichain;

use super::columns::{Cell, Owned};
use crate::dataflow::Time;

/// The rows of a scan, by the relation's key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Seek {
    /// Every row.
    All,
    /// The rows whose key is one of these (a cursor seek for each).
    Keys(Vec<Owned>),
    /// The rows whose key is in a range (a cursor seek to its start).
    Range {
        /// The least key, and whether it is included.
        from: Option<(Owned, bool)>,
        /// The greatest key, and whether it is included.
        to: Option<(Owned, bool)>,
    },
}

impl Seek {
    /// Whether `key` is one of the rows sought.
    pub fn admits(&self, key: &Owned) -> bool {
        match self {
            Seek::All => true,
            Seek::Keys(keys) => keys.contains(key),
            Seek::Range { from, to } => {
                let above = from.as_ref().is_none_or(|(f, inclusive)| if *inclusive { key >= f } else { key > f });
                let below = to.as_ref().is_none_or(|(t, inclusive)| if *inclusive { key <= t } else { key < t });
                *key != Owned::Null && above && below
            }
        }
    }
}

/// A key of an arrangement as a scan names it.
pub trait ScanKey: Ord + Clone + 'static {
    /// The key a sought value names, if it is one of this type.
    fn from_owned(value: &Owned) -> Option<Self>;
    /// The key as a cell.
    fn cell(&self) -> Cell<'_>;
    /// Whether the key is NULL (in no range).
    fn is_null(&self) -> bool {
        false
    }
}

impl ScanKey for crate::dataflow::created::GroupKey {
    fn from_owned(value: &Owned) -> Option<Self> {
        use crate::dataflow::created::GroupKey;
        match value {
            Owned::Null => Some(GroupKey::Null),
            Owned::Text(t) => Some(GroupKey::Text(t.as_str().into())),
            Owned::Seconds(s) => Some(GroupKey::Timestamp(*s)),
            Owned::Cents(_) | Owned::Int(_) => None,
        }
    }
    fn cell(&self) -> Cell<'_> {
        use crate::dataflow::created::GroupKey;
        match self {
            GroupKey::Null => Cell::Null,
            GroupKey::Text(t) => Cell::Text(t),
            GroupKey::Timestamp(s) => Cell::Seconds(*s),
        }
    }
    fn is_null(&self) -> bool {
        matches!(self, crate::dataflow::created::GroupKey::Null)
    }
}

/// A table's primary key: a scan seeks a key of one column.
impl ScanKey for Vec<Owned> {
    fn from_owned(value: &Owned) -> Option<Self> {
        Some(vec![value.clone()])
    }
    fn cell(&self) -> Cell<'_> {
        self.first().map_or(Cell::Null, Owned::cell)
    }
    fn is_null(&self) -> bool {
        self.first().is_none_or(|k| *k == Owned::Null)
    }
}

impl ScanKey for String {
    fn from_owned(value: &Owned) -> Option<Self> {
        match value {
            Owned::Text(t) => Some(t.clone()),
            _ => None,
        }
    }
    fn cell(&self) -> Cell<'_> {
        Cell::Text(self)
    }
}

type ValTrace<K, V> = differential_dataflow::operators::arrange::TraceAgent<
    differential_dataflow::trace::implementations::ValSpine<K, V, Time, isize>,
>;
type ValBatch<K, V> = <ValTrace<K, V> as TraceReader>::Batch;
/// The cursor over a list of batches of a trace of one value per key.
pub type ValCursor<K, V> = CursorList<<ValBatch<K, V> as Navigable>::Cursor>;

/// Opens a walk over the batches `trace` holds now.
pub fn walk<K: ScanKey, V: Ord + Clone + 'static>(
    trace: &mut ValTrace<K, V>,
    seek: &Seek,
) -> ValWalk<K, ValCursor<K, V>> {
    let batches = trace
        .batches_through(Antichain::new().borrow())
        .expect("a trace can always be read through the empty frontier");
    let (cursor, storage) = cursor_list(batches);
    ValWalk::new(cursor, storage, seek)
}

/// A walk through a trace of one value per key (customer → row, group → row), over the
/// trace's batches as they were when it started: the keys sought, or every key of a range,
/// in order, each with its value at a time.
pub struct ValWalk<K, C: Cursor> {
    cursor: C,
    storage: C::Storage,
    /// The keys sought, in order (none: a range).
    keys: Option<VecDeque<K>>,
    /// The range's start (and whether it is included), before the first step.
    from: Option<(K, bool)>,
    /// The range's end, and whether it is included.
    to: Option<(K, bool)>,
}

impl<K, V, C> ValWalk<K, C>
where
    K: ScanKey,
    V: Clone + 'static,
    C: for<'a> Cursor<Key<'a> = &'a K, Val<'a> = &'a V, TimeGat<'a> = &'a Time, DiffGat<'a> = &'a isize>,
{
    fn new(mut cursor: C, storage: C::Storage, seek: &Seek) -> Self {
        let typed = |bound: &Option<(Owned, bool)>| bound.as_ref().and_then(|(k, i)| Some((K::from_owned(k)?, *i)));
        let (keys, from, to) = match seek {
            Seek::All => (None, None, None),
            Seek::Keys(keys) => {
                let mut keys: Vec<K> = keys.iter().filter_map(K::from_owned).collect();
                keys.sort();
                keys.dedup();
                (Some(keys.into_iter().collect()), None, None)
            }
            Seek::Range { from, to } => (None, typed(from), typed(to)),
        };
        if let Some((from, _)) = &from {
            cursor.seek_key(&storage, from);
        }
        ValWalk { cursor, storage, keys, from, to }
    }

    /// The next key with a value at `time`, and the value.
    pub fn next(&mut self, time: Time) -> Option<(K, V)> {
        loop {
            if let Some(keys) = &mut self.keys {
                let key = keys.pop_front()?;
                self.cursor.seek_key(&self.storage, &key);
                if self.cursor.get_key(&self.storage) != Some(&key) {
                    continue;
                }
                if let Some(value) = crate::serve::cursors::present_value(&mut self.cursor, &self.storage, time) {
                    return Some((key, value));
                }
                continue;
            }
            let key = self.cursor.get_key(&self.storage)?.clone();
            if let Some((to, inclusive)) = &self.to {
                if key > *to || (key == *to && !inclusive) {
                    return None;
                }
            }
            let value = crate::serve::cursors::present_value(&mut self.cursor, &self.storage, time);
            self.cursor.step_key(&self.storage);
            if self.from.as_ref().is_some_and(|(from, inclusive)| key == *from && !inclusive) {
                continue;
            }
            if (self.from.is_some() || self.to.is_some()) && key.is_null() {
                continue;
            }
            if let Some(value) = value {
                return Some((key, value));
            }
        }
    }
}

/// The changes of a trace of values by key between two times: each value whose count at
/// `time` differs from its count at `since`, with the difference, key by key in order. The
/// keys looked at are those with an update in `(since, time]`, found in the batches that can
/// hold such times (the trace's recent batches: a step costs what changed, not the trace):
///
/// ```text
/// Ali: (320, t3, +1) (320, t8, -1) (400, t8, +1)      since 5, time 9
/// changes: (Ali, 320, -1) (Ali, 400, +1)
/// ```
///
/// A recent batch may be large (a merge of an old batch with a new one has a recent upper):
/// the walk looks at one of its keys per [`ChangesWalk::step`], so that a scan can stop
/// between any two (see `compute/scan.rs`) however few of them changed.
///
/// Exact only if the trace still tells `since` from later times (its logical compaction at or
/// below `since`: a changefeed holds its last time, see `sql/changes.rs`).
pub struct ChangesWalk<K: Ord + Clone + 'static, V: Ord + Clone + 'static> {
    /// The batches that can hold times after `since`, for the keys to look at.
    recent: ValCursor<K, V>,
    recent_storage: <ValCursor<K, V> as Cursor>::Storage,
    /// Every batch, for the counts.
    cursor: ValCursor<K, V>,
    storage: <ValCursor<K, V> as Cursor>::Storage,
    ready: VecDeque<(K, V, isize)>,
    since: Time,
    time: Time,
}

/// What a walk gives at each step.
#[derive(Debug, PartialEq)]
pub enum Next<T> {
    /// A change.
    Change(T),
    /// A key looked at, and nothing changed.
    Unchanged,
    /// Walked through.
    End,
}

impl<T> Next<T> {
    /// The change made something else; the rest as they are.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Next<U> {
        match self {
            Next::Change(change) => Next::Change(f(change)),
            Next::Unchanged => Next::Unchanged,
            Next::End => Next::End,
        }
    }
}

impl<K: Ord + Clone + 'static, V: Ord + Clone + 'static> ChangesWalk<K, V> {
    /// Opens the walk over the batches `trace` holds now.
    pub fn new(trace: &mut ValTrace<K, V>, since: Time, time: Time) -> Self {
        let spans = trace
            .spans_through(Antichain::new().borrow())
            .expect("a trace can always be read through the empty frontier");
        // A span whose upper is at or below `since + 1` holds only times at or before `since`
        // (an update advanced by compaction to a later time looks recent: looked at for nothing).
        let recent: Vec<_> =
            spans.into_iter().filter(|s| !s.upper().less_equal(&(since + 1))).filter_map(|s| s.inner).collect();
        let (recent, recent_storage) = cursor_list(recent);
        let batches = trace
            .batches_through(Antichain::new().borrow())
            .expect("a trace can always be read through the empty frontier");
        let (cursor, storage) = cursor_list(batches);
        ChangesWalk { recent, recent_storage, cursor, storage, ready: VecDeque::new(), since, time }
    }

    /// The next change, or that one more key was looked at for nothing, or the end.
    pub fn step(&mut self) -> Next<(K, V, isize)> {
        if let Some(change) = self.ready.pop_front() {
            return Next::Change(change);
        }
        let Some(key) = self.recent.get_key(&self.recent_storage).cloned() else { return Next::End };
        let mut changed = false;
        while self.recent.get_val(&self.recent_storage).is_some() {
            self.recent.map_times(&self.recent_storage, |t, _| changed |= *t > self.since && *t <= self.time);
            self.recent.step_val(&self.recent_storage);
        }
        self.recent.step_key(&self.recent_storage);
        if !changed {
            return Next::Unchanged;
        }
        self.cursor.seek_key(&self.storage, &key);
        if self.cursor.get_key(&self.storage) == Some(&key) {
            while let Some(value) = self.cursor.get_val(&self.storage) {
                let (mut before, mut after) = (0isize, 0isize);
                self.cursor.map_times(&self.storage, |t, d| {
                    if *t <= self.since {
                        before += *d;
                    }
                    if *t <= self.time {
                        after += *d;
                    }
                });
                if after != before {
                    self.ready.push_back((key.clone(), value.clone(), after - before));
                }
                self.cursor.step_val(&self.storage);
            }
        }
        self.ready.pop_front().map_or(Next::Unchanged, Next::Change)
    }
}

type RowsBatch = <crate::dataflow::render::RowsTrace as TraceReader>::Batch;
type RowsCursor = CursorList<<RowsBatch as Navigable>::Cursor>;

/// A walk through a compiled view's rows at a time, each as often as it is there, over the
/// trace's batches as they were when it started.
pub struct RowsWalk {
    cursor: RowsCursor,
    storage: <RowsCursor as Cursor>::Storage,
    /// The row being given, and how many more times.
    repeat: Option<(crate::table::Row, isize)>,
}

impl RowsWalk {
    /// Opens a walk over the batches `trace` holds now.
    pub fn new(trace: &mut crate::dataflow::render::RowsTrace) -> RowsWalk {
        let batches = trace
            .batches_through(Antichain::new().borrow())
            .expect("a trace can always be read through the empty frontier");
        let (cursor, storage) = cursor_list(batches);
        RowsWalk { cursor, storage, repeat: None }
    }

    /// The next row at `time`.
    pub fn next(&mut self, time: Time) -> Option<crate::table::Row> {
        loop {
            if let Some((row, left)) = &mut self.repeat {
                if *left > 0 {
                    *left -= 1;
                    return Some(row.clone());
                }
                self.repeat = None;
            }
            let row = self.cursor.get_key(&self.storage)?.clone();
            let mut count = 0isize;
            while self.cursor.get_val(&self.storage).is_some() {
                self.cursor.map_times(&self.storage, |t, d| {
                    if *t <= time {
                        count += *d;
                    }
                });
                self.cursor.step_val(&self.storage);
            }
            self.cursor.step_key(&self.storage);
            if count > 0 {
                self.repeat = Some((row, count));
            }
        }
    }
}
