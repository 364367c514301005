//! What a changefeed sends: a view's rows at a time (the snapshot), its changes from one time
//! to the next, progress while nothing changes, and the end — each event as the JSON its
//! subscribers receive, whole or for one key.
//!
//! ```text
//! {"view":"customers","time":9,"offsets":{…},"changes":[{"key":"Ali","row":{…},"diff":-1},…]}
//! ```

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::dataflow::Time;

/// A row of a view.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The value of the view's key column in the row (customer, category, hour), if it has one.
    pub key: Option<Value>,
    /// Column → value.
    pub values: Map<String, Value>,
}

impl Row {
    fn is(&self, only: Option<&str>) -> bool {
        only.is_none_or(|only| self.key.as_ref().is_some_and(|k| key_text(k) == only))
    }
}

/// One change of a view: a row that joins it (`diff` 1) or leaves it (-1).
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The row.
    pub row: Arc<Row>,
    /// 1 or -1.
    pub diff: i64,
}

/// What a feed sends.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The view's rows at `time`.
    Snapshot {
        /// The logical time.
        time: Time,
        /// The input offsets it reflects, as `as_of.offsets`.
        offsets: Value,
        /// The rows.
        rows: Vec<Arc<Row>>,
    },
    /// The changes from the previous event's time to `time`.
    Changes {
        /// The logical time.
        time: Time,
        /// The input offsets it reflects.
        offsets: Value,
        /// Rows leaving (first) and joining the view.
        changes: Vec<Change>,
    },
    /// Nothing changed up to `time`.
    Progress {
        /// The logical time.
        time: Time,
        /// The input offsets it reflects.
        offsets: Value,
    },
    /// The feed ends.
    End {
        /// Why.
        reason: String,
    },
}

impl Event {
    /// The event's logical time (none for the end).
    pub fn time(&self) -> Option<Time> {
        match self {
            Event::Snapshot { time, .. } | Event::Changes { time, .. } | Event::Progress { time, .. } => Some(*time),
            Event::End { .. } => None,
        }
    }

    /// Its name, as an SSE event type.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Snapshot { .. } => "snapshot",
            Event::Changes { .. } => "changes",
            Event::Progress { .. } => "progress",
            Event::End { .. } => "error",
        }
    }

    /// The event as JSON, only the rows of key `only` if given.
    pub fn to_json(&self, view: &str, only: Option<&str>) -> Value {
        match self {
            Event::Snapshot { time, offsets, rows } => {
                let rows: Vec<&Map<String, Value>> = rows.iter().filter(|r| r.is(only)).map(|r| &r.values).collect();
                json!({ "view": view, "time": time, "offsets": offsets, "rows": rows })
            }
            Event::Changes { time, offsets, changes } => {
                let changes: Vec<Value> = changes
                    .iter()
                    .filter(|c| c.row.is(only))
                    .map(|c| json!({ "key": c.row.key, "row": c.row.values, "diff": c.diff }))
                    .collect();
                json!({ "view": view, "time": time, "offsets": offsets, "changes": changes })
            }
            Event::Progress { time, offsets } => json!({ "view": view, "time": time, "offsets": offsets }),
            Event::End { reason } => json!({ "view": view, "error": reason }),
        }
    }

    /// Whether the event says anything about key `only` (a change, or not a change at all).
    pub fn concerns(&self, only: Option<&str>) -> bool {
        match (self, only) {
            (Event::Changes { changes, .. }, Some(_)) => changes.iter().any(|c| c.row.is(only)),
            _ => true,
        }
    }
}

/// A key as the text a client names it by (`Ali`, `2025-01-01T13:00:00Z`, `42`).
pub fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
