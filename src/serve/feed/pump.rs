//! A view's pump: the rows a feed of the view is at, the time they are at (held, for a view
//! read by its changes), and each step from one time to the next — the changes it sends.
//!
//! ```text
//! rows at 7 (7 held)     Ali 320, Sara 180
//! step: changes 7 → 9    -Ali 320 +Ali 400      rows at 9 (9 held, 7 let go)
//! step: whole at 12      Ali 400                 event: -Sara 180
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Map, Value};
use tokio::sync::broadcast;

use super::{Change, Event, Row, RETAIN, RETAIN_EVENTS};
use crate::dataflow::Time;
use crate::output::as_of;
use crate::reading::Reading;
use crate::sql::read::Hold;
use crate::sql::{Answer, ChangesPlan};

/// A view's pump, shared by the feed's task and its subscribers.
pub(super) struct Pump {
    pub(super) view: String,
    pub(super) key: Option<usize>,
    pub(super) sender: broadcast::Sender<Arc<Event>>,
    pub(super) state: Mutex<PumpState>,
}

/// A view's rows: the row as JSON text → (the row, how many times it is there).
pub(super) type Rows = BTreeMap<String, (Arc<Row>, i64)>;

/// Adds `n` of a row (its cells as JSON, named by `columns`; its key the cell `key`) to
/// `rows` (takes them away, `n` negative).
fn add_row(rows: &mut Rows, columns: &[&str], cells: Vec<Value>, key: Option<usize>, n: i64) {
    let key = key.and_then(|k| cells.get(k)).cloned();
    let values: Map<String, Value> = columns.iter().map(|c| (*c).to_owned()).zip(cells).collect();
    let text = Value::Object(values.clone()).to_string();
    rows.entry(text).or_insert_with(|| (Arc::new(Row { key, values }), 0)).1 += n;
}

/// An answer's rows, each with its count: 1 each, or (`diffs`) the last column's.
pub(super) fn rows_of(answer: &Answer, key: Option<usize>, diffs: bool) -> Rows {
    let names: Vec<String> = answer.columns().into_iter().map(|(n, _)| n).collect();
    let columns: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut rows = Rows::new();
    for mut cells in answer.rows() {
        let n = if diffs { cells.pop().and_then(|d| d.as_i64()).unwrap_or(0) } else { 1 };
        add_row(&mut rows, &columns[..cells.len()], cells, key, n);
    }
    rows.retain(|_, (_, n)| *n != 0);
    rows
}

/// What a pump is at.
pub(super) struct PumpState {
    pub(super) time: Time,
    pub(super) offsets: Value,
    /// The time and offsets as read (for read-your-writes).
    pub(super) positions: Reading,
    /// The view's rows: the row as JSON text → (the row, how many times it is there).
    pub(super) rows: Rows,
    /// The time of `rows`, held while the view is read by its changes (none: read whole).
    pub(super) hold: Option<Arc<Hold>>,
    /// How the view's changes are read (none: it is read whole).
    pub(super) plan: Option<ChangesPlan>,
    /// The latest change events, oldest first, with when they were made.
    pub(super) retained: VecDeque<(Arc<Event>, Instant)>,
    /// The time of the rows before the oldest retained event.
    pub(super) base: Time,
    /// The view is gone: no new subscriber.
    pub(super) ended: bool,
}

impl Pump {
    /// A pump of view `view` (its rows named by the cell `key`), filled with its `rows` at
    /// `hold` — held as the time its changes are read from, if it has a `plan` for them — for
    /// subscribers of up to `backlog` events behind.
    pub(super) fn filled(
        view: &str,
        key: Option<usize>,
        plan: Option<ChangesPlan>,
        hold: Arc<Hold>,
        rows: Rows,
        topic: &str,
        backlog: usize,
    ) -> Pump {
        let positions = hold.reading().clone();
        let time = positions.time;
        let state = PumpState {
            time,
            offsets: as_of(&positions, topic)["offsets"].clone(),
            positions,
            rows,
            // A view read whole holds no time.
            hold: plan.is_some().then_some(hold),
            plan,
            retained: VecDeque::new(),
            base: time,
            ended: false,
        };
        let (sender, _) = broadcast::channel(backlog);
        Pump { view: view.to_owned(), key, sender, state: Mutex::new(state) }
    }

    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, PumpState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a step of the view; sends the changes since the last, if any (true).
    pub(super) fn advance(&self, step: Step, topic: &str) -> bool {
        let mut state = self.state();
        let (time, changes) = match step {
            Step::Whole(hold, rows) => {
                let positions = hold.reading().clone();
                let time = positions.time;
                if time <= state.time {
                    return false;
                }
                let changes = differences(&state.rows, &rows);
                state.offsets = as_of(&positions, topic)["offsets"].clone();
                (state.rows, state.positions) = (rows, positions);
                // A view read by its changes reads them from this time on.
                state.hold = state.plan.is_some().then_some(hold);
                (time, changes)
            }
            Step::Changes(hold, changed) => {
                let positions = hold.reading().clone();
                let time = positions.time.max(state.time);
                // A row taken away more times than it is there: the pump's rows are not the
                // view's (never seen in tests); nothing is sent, and the next step reads the
                // view whole again, from the rows the subscribers have.
                if changed.iter().any(|(text, (_, diff))| state.rows.get(text).map_or(0, |(_, n)| *n) + diff < 0) {
                    tracing::error!(view = %self.view, "a changefeed's changes went out of step with its view");
                    state.hold = None;
                    return false;
                }
                let mut changes = Vec::new();
                for (text, (row, diff)) in changed {
                    let sign = diff.signum();
                    changes.extend(std::iter::repeat_n(
                        Change { row: Arc::clone(&row), diff: sign },
                        diff.unsigned_abs() as usize,
                    ));
                    match state.rows.entry(text) {
                        std::collections::btree_map::Entry::Occupied(mut there) => {
                            there.get_mut().1 += diff;
                            if there.get().1 == 0 {
                                there.remove();
                            }
                        }
                        std::collections::btree_map::Entry::Vacant(absent) => {
                            absent.insert((row, diff));
                        }
                    }
                }
                // Rows leaving first, as a reading of the whole view gives them.
                changes.sort_by_key(|c| c.diff);
                state.offsets = as_of(&positions, topic)["offsets"].clone();
                (state.positions, state.hold) = (positions, Some(hold));
                (time, changes)
            }
        };
        state.time = time;
        if changes.is_empty() {
            return false;
        }
        let event = Arc::new(Event::Changes { time, offsets: state.offsets.clone(), changes });
        let now = Instant::now();
        state.retained.push_back((Arc::clone(&event), now));
        while state.retained.len() > RETAIN_EVENTS || state.retained.front().is_some_and(|(_, at)| now - *at > RETAIN) {
            let (dropped, _) = state.retained.pop_front().expect("not empty");
            state.base = dropped.time().expect("a change event has a time");
        }
        let _ = self.sender.send(event);
        true
    }
}

/// What a pump read of its view at a later time.
pub(super) enum Step {
    /// The whole view (its rows, at the time held).
    Whole(Arc<Hold>, Rows),
    /// The view's changes up to the time held (each row with how many more or fewer times).
    Changes(Arc<Hold>, Rows),
}

/// The changes from `old` rows to `new` ones: rows leaving, then rows joining.
fn differences(old: &Rows, new: &Rows) -> Vec<Change> {
    let mut changes = Vec::new();
    for (text, (row, before)) in old {
        let after = new.get(text).map_or(0, |(_, n)| *n);
        for _ in after..*before {
            changes.push(Change { row: Arc::clone(row), diff: -1 });
        }
    }
    for (text, (row, after)) in new {
        let before = old.get(text).map_or(0, |(_, n)| *n);
        for _ in before..*after {
            changes.push(Change { row: Arc::clone(row), diff: 1 });
        }
    }
    changes
}
