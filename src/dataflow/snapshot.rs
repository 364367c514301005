//! Capturing a worker's live versions as of one logical time, for a durable snapshot.
//!
//! The snapshot's contents are the upsert's state — the latest version of every identity,
//! tombstones included, with its position — because that is what a restart needs for later
//! corrections and deletes to retract the right versions. To pair it with offsets, both must
//! describe the same logical time `T`: exactly the records admitted at times `<= T`.
//!
//! The upsert applies records in time order ([`super::in_order`]): a record of a later time
//! waits in a stash until every earlier time is complete. So its state is exactly "every
//! record at a time `<= T`" just before it opens the first time after `T` (records of times
//! up to `T` may still come out of the stash in that same invocation, which is why this is
//! not decided at the start of one), or at the end of an invocation whose frontier has
//! passed `T` without opening a later time. That is when [`SnapshotSlot::capture_if_passed`]
//! freezes it ([`VersionStore::freeze`]: shared, not copied), for the snapshot writer to
//! [`encode`](crate::state::shard::encode) on its own thread while the worker goes on. The request must be registered before the frontier can pass `T`, which the
//! coordinator ensures by holding its own input at `T` until every worker has registered
//! (see [`crate::run`]).
//!
//! ```text
//! request(T=105)        frontier {103}: state = times <= 102, nothing captured
//!                       frontier {107}: stash 104, 105 applied; capture; then 106, 107
//! ```
//!
//!
//! The shard's byte format is [`crate::state::shard`]'s.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::versions::{FrozenVersions, VersionStore};
use super::Time;

/// One worker's versions as of a time, frozen for the writer.
pub struct Shard {
    /// The logical time it reflects.
    pub time: Time,
    /// The versions.
    pub versions: FrozenVersions,
    /// How long capturing held the worker.
    pub pause: Duration,
}

#[derive(Default)]
struct Slot {
    pending: Option<Time>,
    captured: Option<Shard>,
}

/// Where a worker asks its upsert for a snapshot and collects it (shared on one thread).
#[derive(Clone, Default)]
pub struct SnapshotSlot(Rc<RefCell<Slot>>);

impl SnapshotSlot {
    /// Asks for the versions as of `time`. The caller guarantees the upsert's frontier has
    /// not passed `time` yet.
    pub fn request(&self, time: Time) {
        self.0.borrow_mut().pending = Some(time);
    }

    /// The captured shard, once there is one.
    pub fn take(&self) -> Option<Shard> {
        self.0.borrow_mut().captured.take()
    }

    /// Captures `store` if a snapshot is pending at a time before `next`, the time whose
    /// records are about to be applied.
    pub fn capture_before(&self, next: Time, store: &mut VersionStore) {
        self.capture_if_passed(Some(next), store);
    }

    /// Captures `store` if a snapshot is pending at a time the frontier `low` has passed.
    pub fn capture_if_passed(&self, low: Option<Time>, store: &mut VersionStore) {
        let mut slot = self.0.borrow_mut();
        let Some(time) = slot.pending else { return };
        if low.is_some_and(|low| low <= time) {
            return;
        }
        let started = Instant::now();
        let versions = store.freeze();
        slot.pending = None;
        slot.captured = Some(Shard { time, versions, pause: started.elapsed() });
    }
}
