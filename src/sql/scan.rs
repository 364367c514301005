//! A worker's part of a query: its share of a relation at the read's time — sought or
//! scanned — filtered, and aggregated partially; and the same steps over whole rows, for
//! the reader.
//!
//! Partial aggregates travel as values, so that the reader can add the workers' up:
//!
//! ```text
//! count(*) → [n]      sum(e) → [s]      min(e), max(e) → [m]      avg(e) → [sum, n]
//! ```

use std::collections::HashMap;
use std::ops::ControlFlow;

use super::expr::divide_rounded;
use super::plan::{Agg, AggFunc, Scan, Seek};
use super::relation::Relation;
use super::value::Value;
use super::views::ViewBody;
use crate::dataflow::created::CreatedViews;
use crate::dataflow::rows::{customer_owner, CustomerRow, Dimension};
use crate::dataflow::versions::VersionStore;
use crate::dataflow::views::ViewTraces;
use crate::dataflow::Dataflow;
use crate::dataflow::Time;
use crate::event::Identity;
use crate::reading::ReadError;
use crate::serve::cursors::{changed_values, for_each_value_from, read_sums, read_value_of, read_values};

/// What one worker may spend on a query.
#[derive(Clone, Copy, Debug)]
pub struct WorkerLimits {
    /// The most rows (or groups) it may send.
    pub max_rows: usize,
    /// The longest it may scan, in milliseconds.
    pub budget_ms: u64,
}

/// This worker's rows of `scan`'s relation at `time`: sought or scanned, filtered (for a
/// relation whose rows are whole in one worker), aggregated partially — or an error past
/// `max_rows` rows that the reader would need, or past the time budget.
pub fn run(
    dataflow: &mut Dataflow,
    time: Time,
    scan: &Scan,
    topic: &str,
    (worker, workers): (usize, usize),
    limits: WorkerLimits,
) -> Result<Vec<Vec<Value>>, ReadError> {
    let mut out = Steps::new(scan, whole_in_one_worker(scan.relation), limits.max_rows);
    out.budget = Some((std::time::Instant::now(), limits.budget_ms));
    let Dataflow { views, latest, created, .. } = dataflow;
    let versions = latest.borrow();
    let mut sources = Sources { views, versions: &versions, created };
    relation_rows(&mut sources, time, scan, topic, (worker, workers), &mut |row| out.take(row))?;
    out.finish()
}

/// This worker's part of a created view's changes after `since`, as of `time`: the keys
/// whose rows changed (a superset), and the rows of those present at `time` (as a `SELECT *`
/// shows them, `HAVING` applied). A view not kept per key has no changes to read by.
pub fn view_changes(
    dataflow: &mut Dataflow,
    time: Time,
    id: u64,
    since: Time,
) -> Result<(Vec<Vec<Value>>, Vec<Value>), ReadError> {
    let gone = || ReadError::Compacted { view: format!("view {id}"), time, since: Time::MAX };
    let view = dataflow.created.get_mut(id).ok_or_else(gone)?;
    let (def, kept) = (&view.def, view.kept.as_mut().ok_or_else(gone)?);
    check_view(&def.name, &mut kept.trace, time)?;
    let (changed, present) = changed_values(&mut kept.trace, since, time);
    let rows = present.iter().filter_map(|(key, row)| def.row(key, row)).collect();
    Ok((rows, changed))
}

/// What a worker reads rows from: its views' traces, its version table, its created views.
struct Sources<'a> {
    views: &'a mut ViewTraces,
    versions: &'a VersionStore,
    created: &'a mut CreatedViews,
}

/// The columns of `scan`'s relation that the query reads anywhere: the others are left NULL
/// in the rows a worker makes (the `id` of every transaction is a string to copy, and a
/// `GROUP BY category` needs neither it nor the customer).
fn needed(scan: &Scan) -> Vec<bool> {
    let mut columns = Vec::new();
    match &scan.needed {
        Some(needed) => columns.extend(needed),
        None => columns.extend(0..scan.relation.columns().len()),
    }
    let mut mask = vec![false; scan.relation.columns().len()];
    for c in columns {
        if let Some(m) = mask.get_mut(c) {
            *m = true;
        }
    }
    mask
}

/// Whether each row of the relation is held whole by one worker (else, as for `overall`,
/// each worker holds a part of the one row, and the reader adds the parts first).
pub fn whole_in_one_worker(relation: Relation) -> bool {
    relation != Relation::Overall
}

/// The filter, partial aggregation and row limit, applied to rows as they come.
pub struct Steps<'a> {
    scan: &'a Scan,
    /// Whether to filter and aggregate here (else the rows are passed on raw).
    apply: bool,
    max_rows: usize,
    rows: Vec<Vec<Value>>,
    groups: HashMap<Vec<Value>, Vec<Value>>,
    /// The group key of the row at hand.
    key: Vec<Value>,
    too_many: bool,
    /// When the scan started and how long it may take (ms); rows seen since the last look.
    budget: Option<(std::time::Instant, u64)>,
    seen: usize,
    too_slow: bool,
}

impl<'a> Steps<'a> {
    /// Steps for `scan`'s rows; `apply`: filter and aggregate (else pass rows on).
    pub fn new(scan: &'a Scan, apply: bool, max_rows: usize) -> Self {
        Steps {
            scan,
            apply,
            max_rows,
            rows: Vec::new(),
            groups: HashMap::new(),
            key: Vec::new(),
            too_many: false,
            budget: None,
            seen: 0,
            too_slow: false,
        }
    }

    /// Takes one row; says stop once no more rows are needed.
    pub fn take(&mut self, row: &[Value]) -> ControlFlow<()> {
        // The clock is read every few thousand rows, not for each.
        self.seen += 1;
        if self.seen.is_multiple_of(4096) {
            if let Some((started, budget_ms)) = self.budget {
                if started.elapsed().as_millis() as u64 > budget_ms {
                    self.too_slow = true;
                    return ControlFlow::Break(());
                }
            }
        }
        if !self.apply {
            self.rows.push(row.to_vec());
            return ControlFlow::Continue(());
        }
        if self.scan.filter.as_ref().is_some_and(|f| !f.accepts(row)) {
            return ControlFlow::Continue(());
        }
        match &self.scan.group {
            Some((keys, aggs)) => {
                // The key is made in a buffer kept from row to row: most rows fall in a
                // group that exists, and cost no allocation.
                self.key.clear();
                self.key.extend(keys.iter().map(|k| k.eval(row)));
                if let Some(state) = self.groups.get_mut(self.key.as_slice()) {
                    add_row(state, aggs, row);
                    return ControlFlow::Continue(());
                }
                if self.groups.len() >= self.max_rows {
                    self.too_many = true;
                    return ControlFlow::Break(());
                }
                let mut state = empty_state(aggs);
                add_row(&mut state, aggs, row);
                self.groups.insert(self.key.clone(), state);
            }
            None => {
                if self.scan.keep.is_some_and(|keep| self.rows.len() >= keep) {
                    return ControlFlow::Break(());
                }
                if self.rows.len() >= self.max_rows {
                    self.too_many = true;
                    return ControlFlow::Break(());
                }
                self.rows.push(row.to_vec());
            }
        }
        ControlFlow::Continue(())
    }

    /// The rows: as taken, or one per group (keys, then partial aggregates).
    pub fn finish(self) -> Result<Vec<Vec<Value>>, ReadError> {
        if self.too_slow {
            return Err(ReadError::TooSlow { budget_ms: self.budget.map_or(0, |(_, b)| b) });
        }
        if self.too_many {
            return Err(ReadError::TooManyRows { limit: self.max_rows });
        }
        if !self.apply || self.scan.group.is_none() {
            return Ok(self.rows);
        }
        Ok(self
            .groups
            .into_iter()
            .map(|(mut key, state)| {
                key.extend(state);
                key
            })
            .collect())
    }
}

/// How many values each aggregate's partial state takes.
fn width(agg: &Agg) -> usize {
    if agg.func == AggFunc::Avg {
        2
    } else {
        1
    }
}

fn empty_state(aggs: &[Agg]) -> Vec<Value> {
    aggs.iter()
        .flat_map(|a| match a.func {
            AggFunc::Count => vec![Value::Int(0)],
            AggFunc::Avg => vec![Value::Null, Value::Int(0)],
            _ => vec![Value::Null],
        })
        .collect()
}

fn add_row(state: &mut [Value], aggs: &[Agg], row: &[Value]) {
    let mut at = 0;
    for agg in aggs {
        let value = agg.arg.as_ref().map_or(Value::Bool(true), |e| e.eval(row));
        if !value.is_null() {
            let count = if agg.func == AggFunc::Count { Value::Int(1) } else { value.clone() };
            fold(agg.func, &mut state[at..at + width(agg)], &[count, Value::Int(1)][..width(agg)]);
        }
        at += width(agg);
    }
}

/// Folds a partial state (or one row's contribution) `other` into `state`.
fn fold(func: AggFunc, state: &mut [Value], other: &[Value]) {
    let add = |a: &Value, b: &Value| match (a, b) {
        (Value::Null, x) | (x, Value::Null) => x.clone(),
        (Value::Int(x), Value::Int(y)) => Value::Int(x + y),
        (x, y) => Value::Numeric(x.hundredths().unwrap_or(0) + y.hundredths().unwrap_or(0)),
    };
    match func {
        AggFunc::Count | AggFunc::Sum => state[0] = add(&state[0], &other[0]),
        AggFunc::Avg => {
            state[0] = add(&state[0], &other[0]);
            state[1] = add(&state[1], &other[1]);
        }
        AggFunc::Min | AggFunc::Max => {
            let better = match state[0].compare(&other[0]) {
                None => state[0].is_null(),
                Some(o) => (func == AggFunc::Min) == (o == std::cmp::Ordering::Greater),
            };
            if better && !other[0].is_null() {
                state[0] = other[0].clone();
            }
        }
    }
}

/// The reader's side of a grouped query: adds up the workers' partial rows by key and
/// turns each group's states into the aggregates' values (`keys..., aggregates...`). With
/// no group key and no row at all, the one group of an empty input (`count(*)` = 0).
pub fn merge_groups(parts: Vec<Vec<Value>>, keys: usize, aggs: &[Agg]) -> Vec<Vec<Value>> {
    let mut groups: HashMap<Vec<Value>, Vec<Value>> = HashMap::new();
    for mut row in parts {
        let state = row.split_off(keys);
        match groups.get_mut(&row) {
            None => {
                groups.insert(row, state);
            }
            Some(existing) => {
                let mut at = 0;
                for agg in aggs {
                    let w = width(agg);
                    fold(agg.func, &mut existing[at..at + w], &state[at..at + w]);
                    at += w;
                }
            }
        }
    }
    if keys == 0 && groups.is_empty() {
        groups.insert(Vec::new(), empty_state(aggs));
    }
    groups
        .into_iter()
        .map(|(mut key, state)| {
            let mut at = 0;
            for agg in aggs {
                key.push(match agg.func {
                    AggFunc::Avg => match (&state[at], &state[at + 1]) {
                        (Value::Null, _) | (_, Value::Int(0)) => Value::Null,
                        (sum, Value::Int(n)) => {
                            Value::Numeric(divide_rounded(sum.hundredths().unwrap_or(0), i128::from(*n)))
                        }
                        _ => Value::Null,
                    },
                    _ => state[at].clone(),
                });
                at += width(agg);
            }
            key
        })
        .collect()
}

/// Adds up `overall`'s parts (each worker holds some of its numbers) into its one row.
pub fn merge_overall(parts: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    let (mut total, mut count, mut customers) = (0i128, 0i64, 0i64);
    for part in parts {
        if let [Value::Numeric(t), Value::Int(c), Value::Int(n), ..] = part.as_slice() {
            total += t;
            count += c;
            customers += n;
        }
    }
    let avg = if count == 0 { Value::Null } else { Value::Numeric(divide_rounded(total, i128::from(count))) };
    vec![vec![Value::Numeric(total), Value::Int(count), Value::Int(customers), avg]]
}

/// The rows of a created view: its maintained groups (with `HAVING`), or its base's rows
/// that pass its filter.
fn view_rows(
    sources: &mut Sources<'_>,
    time: Time,
    id: u64,
    scan: &Scan,
    topic: &str,
    at: (usize, usize),
    each: &mut dyn FnMut(&[Value]) -> ControlFlow<()>,
) -> Result<(), ReadError> {
    let gone = || ReadError::Compacted { view: format!("view {id}"), time, since: Time::MAX };
    let view = sources.created.get_mut(id).ok_or_else(gone)?;
    let def = view.def.clone();
    match (&def.body, view.kept.as_mut()) {
        (ViewBody::Filter { base, filter, columns }, _) => {
            // The view shows its base's key values unchanged: a seek on one is a seek on the other.
            let seek = if def.key_column().is_some() { scan.seek.clone() } else { Seek::Scan };
            let base_scan = Scan { relation: *base, seek, filter: None, group: None, keep: None, needed: None };
            let mut projected = Vec::with_capacity(columns.len());
            relation_rows(sources, time, &base_scan, topic, at, &mut |row| {
                if filter.as_ref().is_some_and(|f| !f.accepts(row)) {
                    return ControlFlow::Continue(());
                }
                projected.clear();
                projected.extend(columns.iter().map(|(_, i)| row[*i].clone()));
                each(&projected)
            })
        }
        (ViewBody::Aggregate { .. }, Some(kept)) => {
            check_view(&def.name, &mut kept.trace, time)?;
            let from = match &scan.seek {
                Seek::Key(key) => Some(key.clone()),
                _ => None,
            };
            for_each_value_from(&mut kept.trace, from.as_ref(), time, |key, row| {
                if from.as_ref().is_some_and(|f| f != key) {
                    return ControlFlow::Break(());
                }
                match def.row(key, &row) {
                    Some(shown) => each(&shown),
                    None => ControlFlow::Continue(()),
                }
            });
            Ok(())
        }
        (ViewBody::Aggregate { .. }, None) => Err(gone()),
    }
}

/// Whether a created view's trace can be read exactly at `time` (see `ViewTraces`).
fn check_view(name: &str, trace: &mut crate::dataflow::created::ViewTrace, time: Time) -> Result<(), ReadError> {
    use differential_dataflow::trace::TraceReader;
    let compaction = trace.get_logical_compaction();
    if !compaction.less_equal(&time) {
        let since = compaction.first().copied().unwrap_or(Time::MAX);
        return Err(ReadError::Compacted { view: name.to_owned(), time, since });
    }
    let mut upper = timely::progress::Antichain::new();
    trace.read_upper(&mut upper);
    if upper.less_equal(&time) {
        return Err(ReadError::Incomplete {
            view: name.to_owned(),
            time,
            upper: upper.first().copied().unwrap_or(Time::MAX),
        });
    }
    Ok(())
}

fn stats_row(key: Value, cents: i128, count: i64) -> Vec<Value> {
    let avg = if count == 0 { Value::Null } else { Value::Numeric(divide_rounded(cents, i128::from(count))) };
    vec![key, Value::Numeric(cents), Value::Int(count), avg]
}

/// A row of the `customers` relation.
pub fn customer_row(name: &str, row: &CustomerRow) -> Vec<Value> {
    vec![
        Value::Text(name.into()),
        Value::Numeric(row.total),
        Value::Int(row.count),
        Value::Numeric(i128::from(row.min)),
        Value::Numeric(i128::from(row.max)),
        Value::Numeric(divide_rounded(row.total, i128::from(row.count.max(1)))),
    ]
}

/// Hands this worker's rows of the relation to `each`, seeking where the plan says.
fn relation_rows(
    sources: &mut Sources<'_>,
    time: Time,
    scan: &Scan,
    topic: &str,
    (worker, workers): (usize, usize),
    each: &mut dyn FnMut(&[Value]) -> ControlFlow<()>,
) -> Result<(), ReadError> {
    let Sources { views, versions, .. } = sources;
    match scan.relation {
        Relation::View(id) => return view_rows(sources, time, id, scan, topic, (worker, workers), each),
        Relation::Transactions => {
            // One row buffer for every transaction; columns the query does not read stay NULL.
            let mask = needed(scan);
            let mut row = vec![Value::Null; 5];
            let fill = |t: crate::dataflow::versions::LiveTxn<'_>, row: &mut Vec<Value>| {
                if mask[0] {
                    row[0] = Value::Text(t.identity.text().into());
                }
                if mask[1] {
                    row[1] = Value::Text(std::sync::Arc::clone(t.customer));
                }
                if mask[2] {
                    row[2] = Value::Numeric(i128::from(t.cents));
                }
                if mask[3] {
                    row[3] = t.category.map_or(Value::Null, |c| Value::Text(std::sync::Arc::clone(c)));
                }
                if mask[4] {
                    row[4] = t.ts.map_or(Value::Null, Value::Timestamp);
                }
            };
            match &scan.seek {
                // The id is an `id` (or a message key); a record's place also names it.
                Seek::Key(Value::Text(id)) => {
                    let text = crate::event::text_identity((&**id).into());
                    for identity in [Identity::Id(text), Identity::At((&**id).into())] {
                        versions.live_one_at(time, &identity, |t| {
                            fill(t, &mut row);
                            let _ = each(&row);
                        });
                    }
                }
                _ => versions.live_at(time, |t| {
                    fill(t, &mut row);
                    each(&row)
                }),
            }
        }
        Relation::Customers => match &scan.seek {
            Seek::Key(Value::Text(name)) => {
                let name = name.to_string();
                if customer_owner(&name, workers) == worker {
                    if let Some(r) = read_value_of(&mut views.customers, &name, time) {
                        let _ = each(&customer_row(&name, &r));
                    }
                }
            }
            Seek::Range(lower, upper) => {
                let from = match lower {
                    Some((Value::Text(l), _)) => Some(l.to_string()),
                    _ => None,
                };
                for_each_value_from(&mut views.customers, from.as_ref(), time, |name, r| {
                    let below = |(bound, inclusive): &(Value, bool)| match bound {
                        Value::Text(b) => name.as_str() < &**b || (*inclusive && name.as_str() == &**b),
                        _ => true,
                    };
                    if upper.as_ref().is_some_and(|u| !below(u)) {
                        return ControlFlow::Break(());
                    }
                    each(&customer_row(name, &r))
                });
            }
            _ => {
                for_each_value_from(&mut views.customers, None, time, |name, r| each(&customer_row(name, &r)));
            }
        },
        Relation::Categories | Relation::Hourly | Relation::Overall => {
            let totals = read_sums(&mut views.totals, time);
            if scan.relation == Relation::Overall {
                let all = totals.iter().find(|(d, _)| *d == Dimension::All).map(|(_, s)| *s).unwrap_or_default();
                let customers: i64 =
                    read_sums(&mut views.customer_count, time).into_iter().map(|(_, n)| n as i64).sum();
                let _ = each(&[Value::Numeric(all.cents), Value::Int(all.count), Value::Int(customers), Value::Null]);
                return Ok(());
            }
            for (dimension, stats) in totals {
                let key = match (&dimension, scan.relation) {
                    (Dimension::Category(c), Relation::Categories) => {
                        c.as_ref().map_or(Value::Null, |c| Value::Text(std::sync::Arc::clone(c)))
                    }
                    (Dimension::Hour(h), Relation::Hourly) => Value::Timestamp(h * 3600),
                    _ => continue,
                };
                if each(&stats_row(key, stats.cents, stats.count)).is_break() {
                    return Ok(());
                }
            }
        }
        Relation::DeadLetters => {
            for (reason, n) in read_sums(&mut views.dead_letters, time) {
                if each(&[Value::Text(reason.as_str().into()), Value::Int(n as i64)]).is_break() {
                    return Ok(());
                }
            }
        }
        Relation::Offsets => {
            for (partition, next) in read_values(&mut views.offsets, time) {
                let row = [Value::Text(topic.into()), Value::Int(i64::from(partition)), Value::Int(next)];
                if each(&row).is_break() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::plan::{plan, Plan};

    #[test]
    fn a_scan_past_its_budget_gives_up() {
        let Plan::Select(select) = plan("SELECT count(*) FROM transactions").unwrap() else { panic!("a query") };
        let mut steps = Steps::new(&select.scan, true, 100);
        // Started long ago with a budget of 1 ms: the first look at the clock gives up.
        steps.budget = Some((std::time::Instant::now() - std::time::Duration::from_millis(50), 1));
        let row = vec![Value::Null; 5];
        let stopped = (0..10_000).map(|_| steps.take(&row)).position(|flow| flow.is_break());
        assert_eq!(stopped, Some(4095), "the clock is read every 4096 rows");
        assert_eq!(steps.finish(), Err(ReadError::TooSlow { budget_ms: 1 }));
    }
}
