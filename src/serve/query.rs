//! Reading the arranged views at a consistent logical time: one worker's share of a
//! [`Reading`], with cursors over the views' traces.
//!
//! A read at time `t` accumulates, for every key, the updates at times `<= t`. That is exact
//! only if nothing at `<= t` is still on its way (`t` is below every trace's upper) and the
//! traces still tell the times apart up to `t` (their logical compaction is at or below
//! `t`): [`read`] checks both, as Materialize's peeks do, and refuses otherwise.

use differential_dataflow::difference::Semigroup;
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::cursor::{cursor_list, Cursor};
use differential_dataflow::trace::implementations::{KeySpine, ValSpine};
use differential_dataflow::trace::TraceReader;
use timely::progress::Antichain;

use crate::dataflow::views::ViewTraces;
use crate::dataflow::Dataflow;
use crate::dataflow::Time;
use crate::reading::{ReadScope, Reading};
use crate::serve::serving::ReadError;

/// Reads this worker's share of what `scope` covers, as of `time`, once sure the read is
/// exact (see the module docs). `versions` are this worker's live versions (for the
/// `transactions` relation), `(worker, workers)` where it stands.
pub fn read(
    dataflow: &mut Dataflow,
    time: Time,
    scope: &ReadScope,
    (worker, workers): (usize, usize),
) -> Result<Reading, ReadError> {
    dataflow.views.check_readable(time).map_err(|why| ReadError::unreadable(why, time))?;
    if let ReadScope::Query { scan, topic, max_rows, budget_ms } = scope {
        let limits = crate::sql::scan::WorkerLimits { max_rows: *max_rows, budget_ms: *budget_ms };
        let rows = crate::sql::scan::run(dataflow, time, scan, topic, (worker, workers), limits)?;
        return Ok(Reading { rows, ..read_offsets(&mut dataflow.views, time) });
    }
    if let ReadScope::ViewChanges { view, since } = scope {
        let (rows, changed_keys) = crate::sql::scan::view_changes(dataflow, time, *view, *since)?;
        return Ok(Reading { rows, changed_keys, ..read_offsets(&mut dataflow.views, time) });
    }
    let mut reading = read_scope(&mut dataflow.views, time, scope);
    if let ReadScope::Everything { created, .. } = scope {
        // Whole views, written out or compared by `verify`: no row limit beyond memory.
        let limits = crate::sql::scan::WorkerLimits { max_rows: usize::MAX, budget_ms: u64::MAX };
        for scan in created {
            let rows = crate::sql::scan::run(dataflow, time, scan, "", (worker, workers), limits)?;
            reading.created_parts.push(rows);
        }
    }
    Ok(reading)
}

/// Reads this worker's share of what `scope` covers, as of `time`.
fn read_scope(views: &mut ViewTraces, time: Time, scope: &ReadScope) -> Reading {
    if let ReadScope::Everything { top_k, .. } = scope {
        return read_everything(views, time, *top_k);
    }
    let offsets = read_offsets(views, time);
    match scope {
        ReadScope::Everything { .. } | ReadScope::Query { .. } | ReadScope::ViewChanges { .. } => {
            unreachable!("answered above")
        }
        ReadScope::Offsets => offsets,
        ReadScope::Customer(name) => Reading {
            customers: read_value_of(&mut views.customers, name, time)
                .map(|row| (name.clone(), row))
                .into_iter()
                .collect(),
            ..offsets
        },
        ReadScope::Customers { after, limit } => {
            Reading { customers: read_values_after(&mut views.customers, after.as_ref(), *limit, time), ..offsets }
        }
        ReadScope::Top { k } => Reading { top: read_top(&mut views.top, time, *k), ..offsets },
        ReadScope::CustomerChanges { since } => {
            let (changed, customers) = changed_values(&mut views.customers, *since, time);
            Reading { customers, changed, ..offsets }
        }
        ReadScope::Totals => Reading {
            customer_count: read_sums(&mut views.customer_count, time).into_iter().map(|(_, n)| n as i64).sum(),
            dead_letters: read_sums(&mut views.dead_letters, time).into_iter().map(|(r, n)| (r, n as i64)).collect(),
            ..Reading { time, offsets: offsets.offsets, ..Reading::totals(read_sums(&mut views.totals, time)) }
        },
    }
}

/// Reads this worker's share of every view as of `time`, with the `top_k` largest totals.
pub fn read_everything(views: &mut ViewTraces, time: Time, top_k: usize) -> Reading {
    Reading {
        time,
        customers: read_values(&mut views.customers, time),
        offsets: read_values(&mut views.offsets, time),
        top: read_top(&mut views.top, time, top_k),
        customer_count: read_sums(&mut views.customer_count, time).into_iter().map(|(_, n)| n as i64).sum(),
        dead_letters: read_sums(&mut views.dead_letters, time).into_iter().map(|(r, n)| (r, n as i64)).collect(),
        ..Reading::totals(read_sums(&mut views.totals, time))
    }
}

/// Reads only this worker's share of the offsets as of `time`.
fn read_offsets(views: &mut ViewTraces, time: Time) -> Reading {
    Reading { time, offsets: read_values(&mut views.offsets, time), ..Reading::default() }
}

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

/// The keys with an update at a time after `since` and at or before `time`, from the batches
/// that can hold such times. A superset when the trace has compacted past `since` (an
/// earlier update advanced to the compaction frontier looks recent): a reader reads those
/// keys again for nothing, never misses one.
pub fn changed_keys<K, V>(trace: &mut TraceAgent<ValSpine<K, V, Time, isize>>, since: Time, time: Time) -> Vec<K>
where
    K: Ord + Clone + 'static,
    V: Ord + Clone + 'static,
{
    let spans =
        trace.spans_through(Antichain::new().borrow()).expect("a trace can always be read through the empty frontier");
    // A span whose upper is at or below `since + 1` holds only times at or before `since`.
    let recent: Vec<_> =
        spans.into_iter().filter(|s| !s.upper().less_equal(&(since + 1))).filter_map(|s| s.inner).collect();
    let (mut cursor, storage) = cursor_list(recent);
    let mut keys = Vec::new();
    while let Some(key) = cursor.get_key(&storage) {
        let mut changed = false;
        while cursor.get_val(&storage).is_some() {
            cursor.map_times(&storage, |t, _| changed |= *t > since && *t <= time);
            cursor.step_val(&storage);
        }
        if changed {
            keys.push(key.clone());
        }
        cursor.step_key(&storage);
    }
    keys
}

/// The keys changed after `since` (see [`changed_keys`]) and the values at `time` of those
/// present then.
pub fn changed_values<K, V>(
    trace: &mut TraceAgent<ValSpine<K, V, Time, isize>>,
    since: Time,
    time: Time,
) -> (Vec<K>, Vec<(K, V)>)
where
    K: Ord + Clone + 'static,
    V: Ord + Clone + 'static,
{
    let changed = changed_keys(trace, since, time);
    let present = changed.iter().filter_map(|k| read_value_of(trace, k, time).map(|v| (k.clone(), v))).collect();
    (changed, present)
}

/// The value of the cursor's current key that is present at `time` (traces written by the
/// views hold one value per key at any time).
fn present_value<C, V>(cursor: &mut C, storage: &C::Storage, time: Time) -> Option<V>
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
