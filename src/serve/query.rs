//! Reading the arranged views at a consistent logical time: one worker's share of a
//! [`Reading`], with cursors over the views' traces.
//!
//! A read at time `t` accumulates, for every key, the updates at times `<= t`. That is exact
//! only if nothing at `<= t` is still on its way (`t` is below every trace's upper) and the
//! traces still tell the times apart up to `t` (their logical compaction is at or below
//! `t`): [`read`] checks both, as Materialize's peeks do, and refuses otherwise.

use crate::dataflow::views::ViewTraces;
use crate::dataflow::Dataflow;
use crate::dataflow::Time;
use crate::reading::ReadError;
use crate::reading::{ReadScope, Reading};
use crate::serve::cursors::{read_sums, read_top, read_value_of, read_values, read_values_after};

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
    let _ = (worker, workers);
    Ok(read_scope(&mut dataflow.views, time, scope))
}

/// Reads this worker's share of what `scope` covers, as of `time`.
fn read_scope(views: &mut ViewTraces, time: Time, scope: &ReadScope) -> Reading {
    if let ReadScope::Everything { top_k, .. } = scope {
        return read_everything(views, time, *top_k);
    }
    let offsets = read_offsets(views, time);
    match scope {
        ReadScope::Everything { .. } => unreachable!("answered above"),
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
