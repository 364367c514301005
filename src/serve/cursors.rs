//! Reading one arranged trace at a logical time with a cursor: every key's accumulation,
//! one key's value, the keys changed after a time, a page from a key on.
//!
//! A trace holds updates `(key, value, time, diff)`; the value of a key "at `t`" is what
//! the diffs of its updates at times `<= t` add up to (the views write one value per key at
//! any time). For example, with `Ali` corrected at time 9:
//!
//! ```text
//! (Ali, 320, 7, +1)  (Ali, 320, 9, -1)  (Ali, 400, 9, +1)
//! at 8: Ali 320        at 9: Ali 400        changed after 7: [Ali]
//! ```
//!
//! The caller checks first that the read is exact at `t` ([`super::query::read`]).

use differential_dataflow::difference::Semigroup;
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::cursor::{cursor_list, Cursor};
use differential_dataflow::trace::implementations::{KeySpine, ValSpine};
use differential_dataflow::trace::TraceReader;
use timely::progress::Antichain;

use crate::dataflow::Time;

/// Every key of a summing trace with its accumulation at `time`, leaving out zeros.
pub fn read_sums<K, R>(trace: &mut TraceAgent<KeySpine<K, Time, R>>, time: Time) -> Vec<(K, R)>
where
    K: Ord + Clone + 'static,
    R: Semigroup + Ord + Clone + 'static,
{
    let mut out = Vec::new();
    let (mut cursor, storage) = cursor_list(all_batches(trace));
    while let Some(key) = cursor.get_key(&storage) {
        let mut sum: Option<R> = None;
        while cursor.get_val(&storage).is_some() {
            cursor.map_times(&storage, |t, d| {
                if *t <= time {
                    match &mut sum {
                        Some(s) => s.plus_equals(d),
                        None => sum = Some(d.clone()),
                    }
                }
            });
            cursor.step_val(&storage);
        }
        if let Some(sum) = sum.filter(|s| !s.is_zero()) {
            out.push((key.clone(), sum));
        }
        cursor.step_key(&storage);
    }
    out
}

/// Every key of a trace that holds one value per key (customer → row, partition →
/// offset), with its value at `time`.
pub fn read_values<K, V>(trace: &mut TraceAgent<ValSpine<K, V, Time, isize>>, time: Time) -> Vec<(K, V)>
where
    K: Ord + Clone + 'static,
    V: Ord + Clone + 'static,
{
    let mut out = Vec::new();
    let (mut cursor, storage) = cursor_list(all_batches(trace));
    while let Some(key) = cursor.get_key(&storage) {
        if let Some(value) = present_value(&mut cursor, &storage, time) {
            out.push((key.clone(), value));
        }
        cursor.step_key(&storage);
    }
    out
}

/// The value of one key at `time`, found by seeking it.
pub fn read_value_of<K, V>(trace: &mut TraceAgent<ValSpine<K, V, Time, isize>>, key: &K, time: Time) -> Option<V>
where
    K: Ord + Clone + 'static,
    V: Ord + Clone + 'static,
{
    let (mut cursor, storage) = cursor_list(all_batches(trace));
    cursor.seek_key(&storage, key);
    if cursor.get_key(&storage) != Some(key) {
        return None;
    }
    present_value(&mut cursor, &storage, time)
}

/// The value of the cursor's current key that is present at `time` (traces written by the
/// views hold one value per key at any time).
pub fn present_value<C, V>(cursor: &mut C, storage: &C::Storage, time: Time) -> Option<V>
where
    C: for<'a> Cursor<Val<'a> = &'a V, TimeGat<'a> = &'a Time, DiffGat<'a> = &'a isize>,
    V: Clone + 'static,
{
    let mut found = None;
    while let Some(value) = cursor.get_val(storage) {
        let mut count = 0isize;
        cursor.map_times(storage, |t, d| {
            if *t <= time {
                count += *d;
            }
        });
        if count > 0 {
            found = Some(value.clone());
        }
        cursor.step_val(storage);
    }
    found
}

/// At most `limit` present keys after `after`, in order, with their values at `time`.
pub fn read_values_after<K, V>(
    trace: &mut TraceAgent<ValSpine<K, V, Time, isize>>,
    after: Option<&K>,
    limit: usize,
    time: Time,
) -> Vec<(K, V)>
where
    K: Ord + Clone + 'static,
    V: Ord + Clone + 'static,
{
    let mut out = Vec::new();
    let (mut cursor, storage) = cursor_list(all_batches(trace));
    if let Some(after) = after {
        cursor.seek_key(&storage, after);
    }
    while out.len() < limit {
        let Some(key) = cursor.get_key(&storage) else { break };
        if after != Some(key) {
            if let Some(value) = present_value(&mut cursor, &storage, time) {
                out.push((key.clone(), value));
            }
        }
        cursor.step_key(&storage);
    }
    out
}

/// The first `k` present keys of the ranking, as (customer, total).
pub fn read_top(
    trace: &mut TraceAgent<KeySpine<(i128, String), Time, isize>>,
    time: Time,
    k: usize,
) -> Vec<(String, i128)> {
    let mut out = Vec::new();
    let (mut cursor, storage) = cursor_list(all_batches(trace));
    while out.len() < k {
        let Some((neg_total, customer)) = cursor.get_key(&storage) else {
            break;
        };
        let mut count = 0isize;
        cursor.map_times(&storage, |t, d| {
            if *t <= time {
                count += *d;
            }
        });
        if count > 0 {
            out.push((customer.clone(), -neg_total));
        }
        cursor.step_key(&storage);
    }
    out
}

/// All of a trace's batches. Readers hold compaction at or below the times they read, so
/// the whole trace is always available to them.
fn all_batches<Tr: TraceReader>(trace: &mut Tr) -> Vec<Tr::Batch> {
    trace.batches_through(Antichain::new().borrow()).expect("a trace can always be read through the empty frontier")
}

/// Each present key from `from` on (the first key at or after it; every key without it),
/// in order, with its value at `time`, until `each` says stop.
pub fn for_each_value_from<K, V>(
    trace: &mut TraceAgent<ValSpine<K, V, Time, isize>>,
    from: Option<&K>,
    time: Time,
    mut each: impl FnMut(&K, V) -> std::ops::ControlFlow<()>,
) where
    K: Ord + Clone + 'static,
    V: Ord + Clone + 'static,
{
    let (mut cursor, storage) = cursor_list(all_batches(trace));
    if let Some(from) = from {
        cursor.seek_key(&storage, from);
    }
    while let Some(key) = cursor.get_key(&storage) {
        if let Some(value) = present_value(&mut cursor, &storage, time) {
            if each(key, value).is_break() {
                return;
            }
        }
        cursor.step_key(&storage);
    }
}
