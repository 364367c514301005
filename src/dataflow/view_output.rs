//! What a created view's dataflow keeps: the groups of a view kept as groups (key → count,
//! total, min, max), or a compiled view's rows — each arrangement compacted as its readers
//! need: a compiled view's rows may be imported by another view, so they are compacted
//! physically only up to what they hold ([`super::views::compact_shared`]).

use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::trace::TraceReader;
use timely::progress::frontier::AntichainRef;

use super::group_key::GroupKey;
use super::rows::CustomerRow;
use super::Time;

/// A created view's trace: group key → count, total, min, max.
pub type ViewTrace = TraceAgent<ValSpine<GroupKey, CustomerRow, Time, isize>>;

/// A maintained view's arrangement: groups by key, or a compiled view's rows.
pub enum Output {
    /// Key → count, total, min, max.
    Groups(ViewTrace),
    /// Each row, with its multiplicity.
    Rows(super::render::RowsTrace),
}

impl Output {
    /// Forgets the distinctions between times before `time` (a compiled view's rows may be
    /// imported by another view: physically only up to what they hold).
    pub fn compact_to(&mut self, time: Time) {
        match self {
            Output::Groups(trace) => trace.set_logical_compaction(AntichainRef::new(&[time])),
            Output::Rows(trace) => super::views::compact_shared(trace, time),
        }
    }

    /// Starts at `since`.
    pub fn start_at(&mut self, since: Time) {
        match self {
            Output::Groups(trace) => {
                trace.set_logical_compaction(AntichainRef::new(&[since]));
                trace.set_physical_compaction(AntichainRef::new(&[]));
            }
            Output::Rows(trace) => {
                trace.set_logical_compaction(AntichainRef::new(&[since]));
                trace.set_physical_compaction(AntichainRef::new(&[0]));
            }
        }
    }

    /// Whether it can be read exactly at `time`.
    pub fn check_readable(&mut self, time: Time) -> Result<(), super::views::Unreadable> {
        match self {
            Output::Groups(trace) => super::views::check_trace("created", trace, time),
            Output::Rows(trace) => super::views::check_trace("created", trace, time),
        }
    }
}
