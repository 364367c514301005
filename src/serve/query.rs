//! Reading the arranged views at a consistent logical time.
//!
//! Every worker holds the keys that hash to it, so a full reading is each worker's
//! [`Reading`] merged with [`Reading::merge`]. A reading at time `t` accumulates, for every
//! key, the updates at times `<= t`: the caller must only ask for a time the views' probe
//! has passed (so that nothing at `<= t` is still on its way) and that compaction has not
//! gone beyond.
//!
//! ```text
//! worker 0: customers {Ali, Mounir}   top [(-400 Ali), (-350 Mounir)]
//! worker 1: customers {Sara}          top [(-180 Sara)]
//! merged:   customers {Ali, Mounir, Sara} top [Ali 400, Mounir 350, Sara 180]
//! ```

use differential_dataflow::difference::Semigroup;
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::cursor::{cursor_list, Cursor};
use differential_dataflow::trace::implementations::{KeySpine, ValSpine};
use differential_dataflow::trace::TraceReader;
use serde::{Deserialize, Serialize};
use timely::progress::Antichain;

use crate::dataflow::aggregate::Dimension;
use crate::dataflow::stats::Stats;
use crate::dataflow::views::{customer_owner, CustomerRow, ViewTraces};
use crate::dataflow::Time;
use crate::event::Reason;

/// Every view as of one logical time (one worker's share, or all of them merged).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reading {
    /// The logical time read.
    pub time: Time,
    /// customer → row, in name order once merged.
    pub customers: Vec<(String, CustomerRow)>,
    /// The largest totals, ties by name: (customer, total in cents).
    pub top: Vec<(String, i128)>,
    /// category → sums, in name order (no category first).
    pub categories: Vec<(Option<String>, Stats)>,
    /// UTC hour → sums, in time order.
    pub hourly: Vec<(i64, Stats)>,
    /// All live transactions.
    pub overall: Stats,
    /// How many customers have a live transaction.
    pub customer_count: i64,
    /// Refused records by reason.
    pub dead_letters: Vec<(Reason, i64)>,
    /// Kafka partition → next offset to read: the stream input this reading reflects.
    pub offsets: Vec<(i32, i64)>,
    /// Each worker's process and partitions, with the partitions' high watermarks as last
    /// seen (in `Everything` and `Totals` reads; not part of the views, not at `time`).
    pub workers: Vec<WorkerProgress>,
}

/// A worker, its process, and the Kafka partitions it reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerProgress {
    /// Its index among all workers of all processes.
    pub worker: usize,
    /// Its process's index.
    pub process: usize,
    /// Partition → the offset after the newest message seen (none before the first fetch).
    pub partitions: Vec<(i32, Option<i64>)>,
    /// History records and Kafka messages it has read.
    pub records: (u64, u64),
    /// Partition → messages removed from the topic before they could be read.
    pub skipped: Vec<(i32, i64)>,
    /// The Kafka error its reader last met, until reading resumed.
    pub kafka_error: Option<String>,
}

impl Reading {
    /// Messages removed from the topic before they could be read, by partition.
    pub fn skipped(&self) -> std::collections::BTreeMap<i32, i64> {
        self.workers.iter().flat_map(|w| w.skipped.iter().copied()).collect()
    }

    /// The high watermark of every partition whose reader has seen one.
    pub fn high_watermarks(&self) -> std::collections::BTreeMap<i32, i64> {
        let partitions = self.workers.iter().flat_map(|w| &w.partitions);
        partitions.filter_map(|(p, high)| high.map(|h| (*p, h))).collect()
    }
}

/// What a read covers. Every read also carries the offsets, so that it can say what it
/// reflects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// Every view, with the `top` view cut to this many customers.
    Everything {
        /// How many customers the `top` view shows.
        top_k: usize,
    },
    /// Only the time and the offsets (cheap).
    Offsets,
    /// One customer's row: a seek in the worker that holds it.
    Customer(String),
    /// Customers in name order after `after`, at most `limit` of them.
    Customers {
        /// Start after this name (exclusive).
        after: Option<String>,
        /// How many at most.
        limit: usize,
    },
    /// The `k` customers with the largest totals.
    Top {
        /// How many.
        k: usize,
    },
    /// The `overall`, `categories` and `hourly` views, the customer count and dead letters.
    Totals,
}

impl Scope {
    /// What worker `worker` of `workers` reads for this scope. A customer's row lives on one
    /// worker ([`customer_owner`]); the others give only their offsets, which every answer
    /// needs for its `as_of`.
    pub fn share(&self, worker: usize, workers: usize) -> Scope {
        match self {
            Scope::Customer(name) if customer_owner(name, workers) != worker => Scope::Offsets,
            _ => self.clone(),
        }
    }
}

impl Reading {
    /// Reads this worker's share of what `scope` covers, as of `time`.
    pub fn read_scope(views: &mut ViewTraces, time: Time, scope: &Scope) -> Reading {
        if let Scope::Everything { top_k } = scope {
            return Reading::read(views, time, *top_k);
        }
        let offsets = Reading::read_offsets(views, time);
        match scope {
            Scope::Everything { .. } => unreachable!("answered above"),
            Scope::Offsets => offsets,
            Scope::Customer(name) => Reading {
                customers: read_value_of(&mut views.customers, name, time)
                    .map(|row| (name.clone(), row))
                    .into_iter()
                    .collect(),
                ..offsets
            },
            Scope::Customers { after, limit } => {
                Reading { customers: read_values_after(&mut views.customers, after.as_ref(), *limit, time), ..offsets }
            }
            Scope::Top { k } => Reading { top: read_top(&mut views.top, time, *k), ..offsets },
            Scope::Totals => Reading {
                customer_count: read_sums(&mut views.customer_count, time).into_iter().map(|(_, n)| n as i64).sum(),
                dead_letters: read_sums(&mut views.dead_letters, time)
                    .into_iter()
                    .map(|(r, n)| (r, n as i64))
                    .collect(),
                ..Reading { time, offsets: offsets.offsets, ..Reading::totals(read_sums(&mut views.totals, time)) }
            },
        }
    }

    /// Merges the workers' shares of a scoped read.
    pub fn merge_scope(parts: impl IntoIterator<Item = Reading>, scope: &Scope) -> Reading {
        let top_k = match scope {
            Scope::Everything { top_k } => *top_k,
            Scope::Top { k } => *k,
            _ => 0,
        };
        let mut merged = Reading::merge(parts, top_k);
        if let Scope::Customers { limit, .. } = scope {
            merged.customers.truncate(*limit);
        }
        merged
    }

    /// Reads this worker's share of every view as of `time`, with the `top_k` largest totals.
    pub fn read(views: &mut ViewTraces, time: Time, top_k: usize) -> Reading {
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
    pub fn read_offsets(views: &mut ViewTraces, time: Time) -> Reading {
        Reading { time, offsets: read_values(&mut views.offsets, time), ..Reading::default() }
    }

    /// Splits the totals by dimension into the `overall`, `categories` and `hourly` views.
    fn totals(totals: Vec<(Dimension, Stats)>) -> Reading {
        let mut reading = Reading::default();
        for (dimension, sum) in totals {
            match dimension {
                Dimension::All => reading.overall = sum,
                Dimension::Category(category) => reading.categories.push((category.as_deref().map(String::from), sum)),
                Dimension::Hour(hour) => reading.hourly.push((hour, sum)),
            }
        }
        reading
    }

    /// Merges the shares of all workers into one reading.
    pub fn merge(parts: impl IntoIterator<Item = Reading>, top_k: usize) -> Reading {
        let mut all = Reading::default();
        for part in parts {
            all.time = part.time;
            all.customers.extend(part.customers);
            all.top.extend(part.top);
            all.categories.extend(part.categories);
            all.hourly.extend(part.hourly);
            all.overall.plus_equals(&part.overall);
            all.customer_count += part.customer_count;
            all.dead_letters.extend(part.dead_letters);
            all.offsets.extend(part.offsets);
            all.workers.extend(part.workers);
        }
        all.workers.sort_by_key(|w| w.worker);
        all.customers.sort();
        all.top.sort_by(|(a, x), (b, y)| y.cmp(x).then_with(|| a.cmp(b)));
        all.top.truncate(top_k);
        all.categories.sort();
        all.hourly.sort();
        all.dead_letters.sort();
        all.offsets.sort();
        all
    }
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
