//! A scan of changes on a worker: the rows of a relation that are there more (or fewer) times
//! at the scan's time than at an earlier one, each with the difference — what a changefeed
//! reads ([`crate::sql::Engine::changes`]), from the relation's arrangement by a
//! [`ChangesWalk`]. Relations kept as arrangements of rows — `customers`, a created view's
//! groups or rows, a table — have changes; the others (the version table, the totals read
//! whole) are refused.
//!
//! ```text
//! Scan { customers [customer, total, __diff], since 7, time 9 }
//!   → (Ali, 320, -1) (Ali, 400, +1) (Sara, 180, -1)
//! ```

use super::cells::{customer_cells, group_cells};
use super::columns::{Cell, Owned};
use super::relation::Relation;
use super::walk::{ChangesWalk, Next};
use crate::dataflow::created::Output;
use crate::dataflow::rows::CustomerRow;
use crate::dataflow::{Dataflow, Time};
use crate::reading::ReadError;

/// The changes a scan reads, by the kind of arrangement.
pub(super) enum Changes {
    Customers(ChangesWalk<String, CustomerRow>),
    Groups(ChangesWalk<crate::dataflow::created::GroupKey, CustomerRow>),
    Rows(ChangesWalk<crate::table::Row, ()>),
    Table(ChangesWalk<crate::table::Row, crate::table::Row>),
}

impl Changes {
    /// Checks that the relation can be read exactly at `since` and at `time` here, and opens the
    /// walk through its changes between them.
    pub(super) fn start(
        dataflow: &mut Dataflow,
        since: Time,
        time: Time,
        relation: Relation,
    ) -> Result<Changes, ReadError> {
        let at = |why, t| ReadError::unreadable(why, t);
        Ok(match relation {
            Relation::Customers => {
                dataflow.views.check_readable(since).map_err(|why| at(why, since))?;
                Changes::Customers(ChangesWalk::new(&mut dataflow.views.customers, since, time))
            }
            Relation::Groups(id) | Relation::Rows(id) => {
                let gone = || ReadError::Compacted { view: format!("view {id}"), time, since: Time::MAX };
                let view = dataflow.created.get_mut(id).ok_or_else(gone)?;
                let kept = view.kept.as_mut().ok_or_else(gone)?;
                for t in [since, time] {
                    kept.output.check_readable(t).map_err(|why| at(why, t))?;
                }
                match (relation, &mut kept.output) {
                    (Relation::Groups(_), Output::Groups(trace)) => {
                        Changes::Groups(ChangesWalk::new(trace, since, time))
                    }
                    (Relation::Rows(_), Output::Rows(trace)) => Changes::Rows(ChangesWalk::new(trace, since, time)),
                    _ => return Err(gone()),
                }
            }
            Relation::Table(id) => {
                let gone = || ReadError::Compacted { view: format!("table {id}"), time, since: Time::MAX };
                let table = dataflow.tables.get_mut(id).ok_or_else(gone)?;
                for t in [since, time] {
                    table.check_readable(t).map_err(|why| at(why, t))?;
                }
                Changes::Table(ChangesWalk::new(&mut table.trace, since, time))
            }
            other => return Err(ReadError::NoChanges { relation: other.name().to_owned() }),
        })
    }

    /// Gives the next change to `each` as cells — the relation's row (`keyed`: a view's groups
    /// with their key), then the difference — or says a key was looked at for nothing, or the
    /// end.
    pub(super) fn next(&mut self, keyed: bool, each: impl FnOnce(&[Cell<'_>])) -> Next<()> {
        let give = |mut cells: Vec<Cell<'_>>, diff: isize| {
            cells.push(Cell::Int(diff as i64));
            each(&cells);
        };
        match self {
            Changes::Customers(walk) => {
                walk.step().map(|(name, row, diff)| give(customer_cells(&name, &row).to_vec(), diff))
            }
            Changes::Groups(walk) => {
                walk.step().map(|(key, row, diff)| give(group_cells(keyed.then_some(&key), &row), diff))
            }
            Changes::Rows(walk) => walk.step().map(|(row, (), diff)| give(row.iter().map(Owned::cell).collect(), diff)),
            Changes::Table(walk) => walk.step().map(|(_, row, diff)| give(row.iter().map(Owned::cell).collect(), diff)),
        }
    }
}

/// Whether a relation can be read by its changes ([`ScanSpec::since`]).
pub fn has_changes(relation: Relation) -> bool {
    matches!(relation, Relation::Customers | Relation::Groups(_) | Relation::Rows(_) | Relation::Table(_))
}
