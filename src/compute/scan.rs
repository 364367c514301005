//! A worker's share of a relation for a statement: its rows at the statement's time, as Arrow
//! record batches, made a slice at a time between the dataflow's own steps.
//!
//! A scan is opened by an order of the coordinator (`Order::Scan`) at a time every worker's
//! views are complete through and that the coordinator keeps readable (its compaction stays
//! at or below the times of the statements under way). It then holds what it reads from: a
//! cursor over the trace's batches as they were when it opened (differential's batches are
//! immutable and shared, so the trace may merge and compact meanwhile), or a position in the
//! version table (which keeps an undo log for the times readers hold). Each turn of the
//! worker's loop moves every open scan on for at most a slice of time:
//!
//! ```text
//! Scan { id 12, time T, transactions, columns [amount, category] }
//! worker turn: admit messages · step the dataflow · [scan 12: 8,192 rows → a batch] · …
//! worker turn: admit messages · step the dataflow · [scan 12: 8,192 rows → a batch] · …
//! worker turn: …                                  · [scan 12: the last 1,210 rows, end]
//! ```
//!
//! Batches go to the reader through a bounded channel (an outlet, [`Outlets`]); while it is
//! full the scan waits, so a slow client holds at most a few batches. A reader that goes away
//! (the statement ended, was cancelled or timed out) closes the channel, and the scan ends at
//! the worker's next turn. Workers of another process send their batches to worker 0 as Arrow
//! IPC bytes, which it hands on.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use super::cells::{customer_cells, group_cells};
use super::changes::Changes;
use super::columns::{schema, Cell, ColumnType, Columns, Owned};
pub use super::outlet::{from_ipc, to_ipc, Outlets, ScanPart, Wire};
use super::relation::Relation;
use super::walk::{walk, Next, ValCursor, ValWalk};
use crate::dataflow::created::Output;
use crate::dataflow::rows::{CustomerRow, Dimension};
use crate::dataflow::views::ViewTraces;
use crate::dataflow::{Dataflow, Time};
use crate::event::Identity;
use crate::reading::ReadError;

/// The rows a scan sends in one batch, at most.
pub const BATCH_ROWS: usize = 8192;
/// How long a worker spends on its open scans in one turn of its loop, at most.
pub const SLICE: Duration = Duration::from_millis(2);

/// What a scan reads: a relation's columns, all of its rows or those of some keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScanSpec {
    /// The relation.
    pub relation: Relation,
    /// Its columns' names and types, in order (a created view's groups: given by the view).
    pub columns: Vec<(String, ColumnType)>,
    /// The columns sent, by index into `columns`.
    pub projection: Vec<usize>,
    /// Which rows.
    pub seek: Seek,
    /// The topic the `offsets` relation names.
    pub topic: String,
    /// Set: not the rows at the scan's time but their changes since this earlier time, each
    /// row with how many more (or fewer) times it is there, in the column [`DIFF`] (the
    /// index after the relation's columns in `projection`).
    #[serde(default)]
    pub since: Option<Time>,
}

/// The column of a scan of changes that says how many more (or fewer) times a row is there.
pub const DIFF: &str = "__diff";

impl ScanSpec {
    /// Column `i`: one of the relation's, or (the index after them) [`DIFF`].
    pub fn column(&self, i: usize) -> (&str, ColumnType) {
        self.columns.get(i).map_or((DIFF, ColumnType::Int), |(name, kind)| (name.as_str(), *kind))
    }

    /// The schema of the batches sent: the projected columns.
    pub fn schema(&self) -> SchemaRef {
        let columns: Vec<(&str, ColumnType)> = self.projection.iter().map(|i| self.column(*i)).collect();
        schema(&columns)
    }
}

pub use super::walk::Seek;

/// Where one open scan's batches go.
enum Outlet {
    /// A reader in this process.
    Local(tokio::sync::mpsc::Sender<ScanPart>),
    /// Worker 0, over the control plane.
    Remote,
}

/// The rows a scan reads next.
enum Source {
    /// Not started: the worker's views are not complete through the time yet.
    Waiting,
    /// The version table, from a position on.
    Versions(Option<usize>),
    /// Some identities of the version table.
    Ids(VecDeque<Owned>),
    /// The `customers` trace.
    Customers(ValWalk<String, ValCursor<String, CustomerRow>>),
    /// A created view's groups.
    Groups(ValWalk<crate::dataflow::created::GroupKey, ValCursor<crate::dataflow::created::GroupKey, CustomerRow>>),
    /// A compiled view's rows.
    Multiset(super::walk::RowsWalk),
    /// A table's rows.
    Table(ValWalk<crate::table::Row, ValCursor<crate::table::Row, crate::table::Row>>),
    /// Rows read whole at once (the small relations).
    Rows(std::vec::IntoIter<Vec<Owned>>),
    /// The changes of `customers`, of a created view's groups or rows, or of a table.
    Changes(Changes),
    /// Read through.
    Done,
}

/// One open scan on this worker.
struct Open {
    id: u64,
    time: Time,
    spec: ScanSpec,
    schema: SchemaRef,
    source: Source,
    columns: Columns,
    /// A batch the reader's channel was too full for.
    pending: Option<RecordBatch>,
    outlet: Outlet,
}

/// The scans open on one worker.
#[derive(Default)]
pub struct Scans {
    open: Vec<Open>,
}

/// What a worker's turn over its scans gives to send: parts for worker 0 (from a worker of
/// another process), by scan.
pub type Sends = Vec<(u64, Wire)>;

impl Scans {
    /// Opens scan `id` of `spec` at `time`; its batches go to the channel this process's
    /// `outlets` hold for it, or (none: the reader is in another process) to worker 0.
    pub fn open(&mut self, id: u64, worker: usize, time: Time, spec: ScanSpec, outlets: &Outlets) {
        let outlet = match outlets.take(id, worker) {
            Some(sender) => Outlet::Local(sender),
            None => Outlet::Remote,
        };
        let types: Vec<ColumnType> = spec.projection.iter().map(|i| spec.column(*i).1).collect();
        let schema = spec.schema();
        self.open.push(Open {
            id,
            time,
            spec,
            schema,
            source: Source::Waiting,
            columns: Columns::new(&types),
            pending: None,
            outlet,
        });
    }

    /// Ends scan `id` here (its reader has gone).
    pub fn end(&mut self, id: u64) {
        self.open.retain(|s| s.id != id);
    }

    /// Whether a scan is open.
    pub fn any(&self) -> bool {
        !self.open.is_empty()
    }

    /// Moves the open scans on for at most `slice`, each once its time is complete here (the
    /// views have passed it; a created view's groups, also its own). Returns the parts for
    /// worker 0.
    pub fn step(&mut self, dataflow: &mut Dataflow, slice: Duration) -> Sends {
        let started = Instant::now();
        let mut sends = Sends::new();
        let mut done = Vec::new();
        for (at, scan) in self.open.iter_mut().enumerate() {
            if started.elapsed() >= slice {
                break;
            }
            if let Source::Waiting = scan.source {
                let behind = match scan.spec.relation {
                    Relation::Groups(id) | Relation::Rows(id) => dataflow.created.behind(scan.time, &[id]),
                    Relation::Table(id) => dataflow.tables.behind(scan.time, id),
                    _ => false,
                };
                if dataflow.probe.less_equal(&scan.time) || behind {
                    continue;
                }
                scan.source = match start(dataflow, scan.time, &scan.spec) {
                    Ok(source) => source,
                    Err(error) => {
                        scan.deliver(ScanPart::Failed(error), &mut sends);
                        done.push(at);
                        continue;
                    }
                };
            }
            if scan.advance(dataflow, started, slice, &mut sends) {
                done.push(at);
            }
        }
        for at in done.into_iter().rev() {
            let scan = self.open.remove(at);
            if let Outlet::Remote = scan.outlet {
                sends.push((scan.id, Wire::End));
            }
            // A local channel closes as its sender drops: the reader sees the end.
        }
        sends
    }
}

impl Open {
    /// Sends a part: to the local reader (false if it is full or gone), or to worker 0.
    fn deliver(&mut self, part: ScanPart, sends: &mut Sends) -> Delivered {
        match &self.outlet {
            Outlet::Local(sender) => match sender.try_send(part) {
                Ok(()) => Delivered::Yes,
                Err(tokio::sync::mpsc::error::TrySendError::Full(ScanPart::Batch(batch))) => {
                    self.pending = Some(batch);
                    Delivered::Full
                }
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => Delivered::Full,
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => Delivered::Gone,
            },
            Outlet::Remote => {
                sends.push((
                    self.id,
                    match part {
                        ScanPart::Batch(batch) => Wire::Batch(to_ipc(&batch)),
                        ScanPart::Failed(error) => Wire::Failed(error),
                    },
                ));
                Delivered::Yes
            }
        }
    }

    /// Makes and sends batches until the slice is spent, the reader's channel is full, or the
    /// share is read through and sent; returns whether the scan is over (all sent, or its
    /// reader gone).
    fn advance(&mut self, dataflow: &mut Dataflow, started: Instant, slice: Duration, sends: &mut Sends) -> bool {
        loop {
            if let Some(batch) = self.pending.take() {
                match self.deliver(ScanPart::Batch(batch), sends) {
                    Delivered::Yes => {}
                    Delivered::Full => return false,
                    Delivered::Gone => return true,
                }
            }
            if matches!(self.source, Source::Done) {
                return true;
            }
            if started.elapsed() >= slice {
                return false;
            }
            fill(dataflow, self.time, &self.spec, &mut self.source, &mut self.columns, started, slice);
            if self.columns.rows() > 0 {
                self.pending = Some(self.columns.finish(self.schema.clone()));
            }
        }
    }
}

/// What became of a part handed to a reader.
enum Delivered {
    Yes,
    Full,
    Gone,
}

/// Checks that the relation can be read exactly at `time` here, and where its rows start.
fn start(dataflow: &mut Dataflow, time: Time, spec: &ScanSpec) -> Result<Source, ReadError> {
    dataflow.views.check_readable(time).map_err(|why| ReadError::unreadable(why, time))?;
    if let Some(since) = spec.since {
        return Changes::start(dataflow, since, time, spec.relation).map(Source::Changes);
    }
    let views = &mut dataflow.views;
    let rows = |rows: Vec<Vec<Owned>>| {
        let kept: Vec<Vec<Owned>> = match spec.relation.key() {
            Some(key) => rows.into_iter().filter(|r| spec.seek.admits(&r[key])).collect(),
            None => rows,
        };
        Source::Rows(kept.into_iter())
    };
    Ok(match spec.relation {
        Relation::Transactions => match &spec.seek {
            Seek::Keys(keys) => Source::Ids(keys.iter().cloned().collect()),
            _ => Source::Versions(Some(0)),
        },
        Relation::Customers => Source::Customers(walk(&mut views.customers, &spec.seek)),
        // A created view's output, as the relation names it (groups, or a compiled view's rows).
        Relation::Groups(id) | Relation::Rows(id) => {
            let gone = || ReadError::Compacted { view: format!("view {id}"), time, since: Time::MAX };
            let view = dataflow.created.get_mut(id).ok_or_else(gone)?;
            let kept = view.kept.as_mut().ok_or_else(gone)?;
            kept.output.check_readable(time).map_err(|why| ReadError::unreadable(why, time))?;
            match (spec.relation, &mut kept.output) {
                (Relation::Groups(_), Output::Groups(trace)) => Source::Groups(walk(trace, &spec.seek)),
                (Relation::Rows(_), Output::Rows(trace)) => Source::Multiset(super::walk::RowsWalk::new(trace)),
                _ => return Err(gone()),
            }
        }
        Relation::Table(id) => {
            let gone = || ReadError::Compacted { view: format!("table {id}"), time, since: Time::MAX };
            let table = dataflow.tables.get_mut(id).ok_or_else(gone)?;
            table.check_readable(time).map_err(|why| ReadError::unreadable(why, time))?;
            Source::Table(walk(&mut table.trace, &spec.seek))
        }
        Relation::Categories => rows(totals(views, time, |d| match d {
            Dimension::Category(c) => Some(c.as_deref().map_or(Owned::Null, |c| Owned::Text(c.to_owned()))),
            _ => None,
        })),
        Relation::Hourly => rows(totals(views, time, |d| match d {
            Dimension::Hour(h) => Some(Owned::Seconds(h * 3600)),
            _ => None,
        })),
        Relation::Overall => {
            use crate::serve::cursors::read_sums;
            let all = read_sums(&mut views.totals, time).into_iter().find(|(d, _)| *d == Dimension::All);
            let (cents, count) = all.map_or((0, 0), |(_, s)| (s.cents, s.count));
            let customers: isize = read_sums(&mut views.customer_count, time).into_iter().map(|(_, n)| n).sum();
            // A part of the one row: the reader adds the workers' parts, then the average.
            rows(vec![vec![Owned::Cents(cents), Owned::Int(count), Owned::Int(customers as i64), Owned::Null]])
        }
        Relation::DeadLetters => {
            let counts = crate::serve::cursors::read_sums(&mut views.dead_letters, time);
            rows(
                counts
                    .into_iter()
                    .map(|(r, n)| vec![Owned::Text(r.as_str().to_owned()), Owned::Int(n as i64)])
                    .collect(),
            )
        }
        Relation::Offsets => {
            let offsets = crate::serve::cursors::read_values(&mut views.offsets, time);
            let topic = &spec.topic;
            rows(
                offsets
                    .into_iter()
                    .map(|(p, o)| vec![Owned::Text(topic.clone()), Owned::Int(i64::from(p)), Owned::Int(o)])
                    .collect(),
            )
        }
    })
}

/// The rows of the totals whose dimension `key` names: key, total, count, average.
fn totals(views: &mut ViewTraces, time: Time, key: impl Fn(&Dimension) -> Option<Owned>) -> Vec<Vec<Owned>> {
    let sums = crate::serve::cursors::read_sums(&mut views.totals, time);
    sums.into_iter()
        .filter(|(_, s)| s.count != 0)
        .filter_map(|(d, s)| {
            let avg = crate::amount::divide_rounded(s.cents, i128::from(s.count));
            Some(vec![key(&d)?, Owned::Cents(s.cents), Owned::Int(s.count), Owned::Cents(avg)])
        })
        .collect()
}

/// Appends the next rows of `source` to `columns`: until a batch is full, the slice is spent
/// (looked at every few hundred rows) or the share is read through (`source` is then done).
fn fill(
    dataflow: &mut Dataflow,
    time: Time,
    spec: &ScanSpec,
    source: &mut Source,
    columns: &mut Columns,
    started: Instant,
    slice: Duration,
) {
    let projection = &spec.projection;
    let push = |columns: &mut Columns, row: &[Cell<'_>]| columns.push_some(row, projection.iter().copied());
    match source {
        Source::Waiting | Source::Done => {}
        Source::Versions(position) => {
            let versions = dataflow.latest.borrow();
            while let Some(from) = *position {
                let room = BATCH_ROWS - columns.rows();
                *position = versions.live_at_from(time, from, room.min(1024), |t| {
                    push(columns, &transaction_cells(&t));
                    std::ops::ControlFlow::Continue(())
                });
                if columns.rows() >= BATCH_ROWS || started.elapsed() >= slice {
                    break;
                }
            }
            if position.is_none() {
                *source = Source::Done;
            }
        }
        Source::Ids(ids) => {
            let versions = dataflow.latest.borrow();
            while let Some(id) = ids.pop_front() {
                let Owned::Text(text) = id else { continue };
                let escaped = crate::event::text_identity(text.as_str().into());
                for identity in [Identity::Id(escaped), Identity::At(text.as_str().into())] {
                    versions.live_one_at(time, &identity, |t| push(columns, &transaction_cells(&t)));
                }
            }
            *source = Source::Done;
        }
        Source::Customers(walk) => {
            while columns.rows() < BATCH_ROWS {
                let Some((name, row)) = walk.next(time) else {
                    *source = Source::Done;
                    return;
                };
                push(columns, &customer_cells(&name, &row));
                if columns.rows().is_multiple_of(512) && started.elapsed() >= slice {
                    return;
                }
            }
        }
        Source::Groups(walk) => {
            let keyed = spec.columns.len() > super::relation::GROUP_STATS.len();
            while columns.rows() < BATCH_ROWS {
                let Some((key, row)) = walk.next(time) else {
                    *source = Source::Done;
                    return;
                };
                push(columns, &group_cells(keyed.then_some(&key), &row));
                if columns.rows().is_multiple_of(512) && started.elapsed() >= slice {
                    return;
                }
            }
        }
        Source::Multiset(walk) => {
            while columns.rows() < BATCH_ROWS {
                let Some(row) = walk.next(time) else {
                    *source = Source::Done;
                    return;
                };
                let cells: Vec<Cell<'_>> = row.iter().map(Owned::cell).collect();
                push(columns, &cells);
                if columns.rows().is_multiple_of(512) && started.elapsed() >= slice {
                    return;
                }
            }
        }
        Source::Table(walk) => {
            while columns.rows() < BATCH_ROWS {
                let Some((_, row)) = walk.next(time) else {
                    *source = Source::Done;
                    return;
                };
                let cells: Vec<Cell<'_>> = row.iter().map(Owned::cell).collect();
                push(columns, &cells);
                if columns.rows().is_multiple_of(512) && started.elapsed() >= slice {
                    return;
                }
            }
        }
        Source::Rows(rows) => {
            while columns.rows() < BATCH_ROWS {
                let Some(row) = rows.next() else {
                    *source = Source::Done;
                    return;
                };
                let cells: Vec<Cell<'_>> = row.iter().map(Owned::cell).collect();
                push(columns, &cells);
            }
        }
        Source::Changes(changes) => {
            let keyed = spec.columns.len() > super::relation::GROUP_STATS.len();
            let mut looked = 0usize;
            while columns.rows() < BATCH_ROWS {
                // The relation's row, then the difference: the index after its columns.
                match changes.next(keyed, |cells| columns.push_some(cells, projection.iter().copied())) {
                    Next::End => {
                        *source = Source::Done;
                        return;
                    }
                    Next::Change(()) | Next::Unchanged => looked += 1,
                }
                if looked.is_multiple_of(512) && started.elapsed() >= slice {
                    return;
                }
            }
        }
    }
}

/// A live transaction as a row of `transactions`: id, customer, amount, category, ts.
fn transaction_cells<'a>(t: &crate::dataflow::versions::LiveTxn<'a>) -> [Cell<'a>; 5] {
    let id = match t.identity {
        crate::event::IdRef::Id(text) | crate::event::IdRef::At(text) => text,
    };
    [
        Cell::Text(id),
        Cell::Text(t.customer),
        Cell::Cents(i128::from(t.cents)),
        t.category.map_or(Cell::Null, |c| Cell::Text(c)),
        t.ts.map_or(Cell::Null, Cell::Seconds),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeks_admit_their_keys() {
        let text = |t: &str| Owned::Text(t.into());
        assert!(Seek::All.admits(&Owned::Null));
        let keys = Seek::Keys(vec![text("Ali"), Owned::Null]);
        assert!(keys.admits(&text("Ali")) && keys.admits(&Owned::Null) && !keys.admits(&text("Sara")));
        let range = Seek::Range { from: Some((text("B"), true)), to: Some((text("M"), false)) };
        assert!(range.admits(&text("B")) && range.admits(&text("Lu")) && !range.admits(&text("M")));
        assert!(!range.admits(&text("A")) && !range.admits(&Owned::Null), "NULL is in no range");
    }
}
