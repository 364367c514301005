//! The one logical time a statement reads every relation at.
//!
//! A statement's scans (a join's two sides, a subquery's, each partition of each) all read at
//! the same time `T`, chosen once — when the first scan starts — as the latest time every
//! view is complete through, and **pinned**: until the statement ends, the coordinator lets
//! no trace compact past `T`, so that every scan, however late it starts or long it runs,
//! reads exactly `T`. The read invariant is checked once per relation and worker, where the
//! scan opens (`since ≤ T < upper`, see [`crate::compute::scan`]).
//!
//! ```text
//! SELECT c.customer, count(*) FROM customers c JOIN transactions t ON …
//!   first scan ── pin ──► coordinator: T = complete time; compaction held ≤ T;
//!                         the offsets at T (what the answer reflects: its `as_of`)
//!   scan customers at T ┐
//!   scan transactions at T ┘ … statement ends ── unpin T ──► compaction goes on
//! ```
//!
//! The statement's snapshot is set for the task that plans it ([`STATEMENT`]); the table
//! providers take it into the scans they plan.

use std::sync::Arc;
use std::time::Duration;

use crate::dataflow::Time;
use crate::reading::Reading;
use crate::serve::Serving;

use super::SqlError;

tokio::task_local! {
    /// The snapshot of the statement being planned on this task.
    pub static STATEMENT: Arc<Snapshot>;
}

/// The time a statement reads at, pinned on its first scan.
pub struct Snapshot {
    serving: Serving,
    timeout: Duration,
    pinned: tokio::sync::OnceCell<Result<Arc<Hold>, SqlError>>,
    /// For a read of changes: the earlier time (held by the reader).
    since: Option<Time>,
}

/// A pinned time and the input positions the views reflect at it: no trace compacts past it
/// while the hold lives; unpinned when dropped. A statement holds its time so; a changefeed
/// holds the time of its last event, from which it reads the next one's changes
/// ([`super::changes`]).
pub struct Hold {
    reading: Reading,
    serving: Serving,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.serving.unpin(self.reading.time);
    }
}

impl Hold {
    /// Pins the latest time every view is complete through (waiting at most `timeout`).
    pub async fn new(serving: &Serving, timeout: Duration) -> Result<Hold, SqlError> {
        let reading = serving.pin(timeout).await.map_err(SqlError::from_read)?;
        Ok(Hold { reading, serving: serving.clone() })
    }

    /// The time held, and the input positions the views reflect at it.
    pub fn reading(&self) -> &Reading {
        &self.reading
    }

    /// The time held.
    pub fn time(&self) -> Time {
        self.reading.time
    }
}

impl Snapshot {
    /// A snapshot not pinned yet, of the pipeline `serving` reads; pinning waits at most
    /// `timeout`.
    pub fn new(serving: Serving, timeout: Duration) -> Arc<Snapshot> {
        Arc::new(Snapshot { serving, timeout, pinned: tokio::sync::OnceCell::new(), since: None })
    }

    /// A snapshot at a time already held; with `since`, of the changes from that earlier
    /// time (held too) to it.
    pub fn held(hold: Arc<Hold>, since: Option<&Hold>) -> Arc<Snapshot> {
        let serving = hold.serving.clone();
        let pinned = tokio::sync::OnceCell::new_with(Some(Ok(hold)));
        Arc::new(Snapshot { serving, timeout: Duration::ZERO, pinned, since: since.map(Hold::time) })
    }

    /// For a read of changes, the earlier time.
    pub fn since(&self) -> Option<Time> {
        self.since
    }

    /// The statement's time: pinned now if it is the first scan's.
    pub async fn time(&self) -> Result<Time, SqlError> {
        let pinned =
            self.pinned.get_or_init(|| async { Hold::new(&self.serving, self.timeout).await.map(Arc::new) }).await;
        pinned.as_ref().map(|p| p.time()).map_err(Clone::clone)
    }

    /// What the statement read reflects: its time and the input positions then; `None` when
    /// it read no relation.
    pub fn as_of(&self) -> Option<Reading> {
        match self.pinned.get() {
            Some(Ok(pinned)) => Some(pinned.reading.clone()),
            _ => None,
        }
    }

    /// The pipeline read.
    pub fn serving(&self) -> &Serving {
        &self.serving
    }
}
