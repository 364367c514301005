//! Capturing a worker's views' state with every snapshot, so that a restart — after a crash
//! too, not only after a clean stop — puts the views back instead of recomputing them from
//! every live transaction ([`crate::state::kept`]).
//!
//! When a snapshot at `T` is registered, the worker asks the groups of the `customers` view
//! and of every created `GROUP BY` view for their state as of `T`. Each is captured by its
//! operator at the moment the upsert captures its versions — just before it applies a record
//! of a later time — by cloning its map of groups, which shares every group's amounts
//! (copy-on-write, [`crate::dataflow::amounts`]): the worker is held for a copy of each
//! group's counters, not of its amounts. Once all are captured the worker hands them to the snapshot
//! writer, which encodes them on its own thread beside the snapshot file.
//!
//! ```text
//! Order::Snapshot(T) ─► ViewsCapture::request ─► each view's operator captures as of T
//!                       ViewsCapture::poll (every turn) ─► all captured ─► snapshot writer
//!                                                         ─► views-<T>-<worker>.bin
//! ```
//!
//! A view being filled holds only part of its rows: no state is captured for that snapshot
//! (a restart from it computes the views, as before). Nor is it when the worker holds more
//! than [`CAPTURE_AT_MOST`] groups: the clone costs the worker a pause in proportion to the
//! number of groups, and a view grouped by something nearly unique (millions of groups) would
//! pause it at every snapshot; such views are kept at a clean stop only.

use std::rc::Rc;

use crate::dataflow::groups::{KeyCodec, SharedGroups};
use crate::dataflow::{Dataflow, Time};
use crate::state::kept;

/// The most groups a worker captures with a snapshot (all views together). The 10,000
/// customers of the workshop's generator are far below it.
pub const CAPTURE_AT_MOST: usize = 250_000;

/// One view's groups captured for a snapshot: the section's id and how to encode it (piece
/// by piece, into a sink).
pub type CapturedSection = (u64, Box<dyn FnOnce(&mut dyn FnMut(&[u8])) + Send>);

/// A worker's views captured for the snapshot at `time`, for the writer.
pub struct CapturedViews {
    /// The worker they are of.
    pub worker: usize,
    /// The snapshot's time.
    pub time: Time,
    /// [`kept::build`] of this run.
    pub build: String,
    /// Every view's groups.
    pub sections: Vec<CapturedSection>,
}

/// A view's groups, whatever their key, as a capture asks them.
trait Asked {
    fn request(&self, time: Time);
    /// The capture as a section `id`, once taken: `Err` if it could not be made exactly.
    fn take(&self, id: u64) -> Option<Result<CapturedSection, Time>>;
    fn cancel(&self);
}

impl<K: KeyCodec + Clone + Send + 'static> Asked for SharedGroups<K> {
    fn request(&self, time: Time) {
        self.borrow_mut().request_capture(time);
    }
    fn take(&self, id: u64) -> Option<Result<CapturedSection, Time>> {
        let taken = self.borrow_mut().take_capture()?;
        Some(taken.map(|captured| -> CapturedSection { (id, Box::new(move |sink| captured.encode(sink))) }))
    }
    fn cancel(&self) {
        self.borrow_mut().cancel_capture();
    }
}

/// The captures one worker waits for, for one snapshot.
pub(super) struct ViewsCapture {
    time: Time,
    asked: Vec<(u64, Box<dyn Asked>)>,
    sections: Vec<CapturedSection>,
}

/// What [`ViewsCapture::poll`] found.
pub(super) enum Captures {
    /// Some view has not passed the snapshot's time yet.
    Waiting,
    /// Every view is captured.
    Done(Vec<CapturedSection>),
    /// Some view could not be captured exactly at the time: nothing is kept for it.
    Refused,
}

impl ViewsCapture {
    /// Asks every view of `pipeline` for its state as of `time`. The caller guarantees that
    /// no operator's frontier has passed `time` (the snapshot was just registered, before the
    /// worker stepped). `None` while a created view is being filled.
    pub(super) fn request(pipeline: &Dataflow, time: Time) -> Option<Self> {
        let Some(views) = pipeline.created.kept_groups() else {
            tracing::debug!(time, "a view is being filled; its state is not captured with this snapshot");
            return None;
        };
        let groups = pipeline.state.customers.borrow().len() + views.iter().map(|v| v.1.borrow().len()).sum::<usize>();
        if groups > CAPTURE_AT_MOST {
            tracing::debug!(
                time,
                groups,
                "too many groups to capture with this snapshot; they are kept at a clean stop"
            );
            return None;
        }
        let customers: Box<dyn Asked> = Box::new(Rc::clone(&pipeline.state.customers));
        let mut asked = vec![(kept::CUSTOMERS, customers)];
        asked.extend(views.into_iter().map(|(id, groups)| (id, Box::new(groups) as Box<dyn Asked>)));
        asked.iter().for_each(|(_, groups)| groups.request(time));
        Some(ViewsCapture { time, asked, sections: Vec::new() })
    }

    /// The snapshot's time.
    pub(super) fn time(&self) -> Time {
        self.time
    }

    /// Takes what has been captured since the last look.
    pub(super) fn poll(&mut self) -> Captures {
        let mut refused = false;
        self.asked.retain(|(id, groups)| match groups.take(*id) {
            None => true,
            Some(Ok(section)) => {
                self.sections.push(section);
                false
            }
            Some(Err(_)) => {
                refused = true;
                false
            }
        });
        if refused {
            tracing::debug!(time = self.time, "a view's state could not be captured exactly at the snapshot");
            Captures::Refused
        } else if self.asked.is_empty() {
            Captures::Done(std::mem::take(&mut self.sections))
        } else {
            Captures::Waiting
        }
    }
}

impl Drop for ViewsCapture {
    /// Replaced by a newer snapshot's, refused, or at the stop: the views still asked forget
    /// the request, so that none keeps a capture nobody takes.
    fn drop(&mut self) {
        self.asked.iter().for_each(|(_, groups)| groups.cancel());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::dataflow::groups::Groups;
    use crate::event::{Identity, Position, Txn, Update};

    fn update(id: &str, seq: u64, customer: &str, cents: i64) -> Update {
        let txn = Txn { customer: customer.into(), cents, ts: None, category: None };
        Update { identity: Identity::Id(id.into()), position: Position { source: 0, seq }, txn: Some(txn) }
    }

    /// The worker forgets a request before it asks for a newer one: the newer one is
    /// captured, as of its own time (a record of a later time left out).
    #[test]
    fn a_newer_request_replaces_an_older_one_and_is_captured_at_its_time() {
        let customers = timely::execute_directly(|worker| {
            let mut pipeline = Dataflow::build(worker, None);
            pipeline.advance_to(1);
            pipeline.updates.send(update("t1", 1, "Ali", 100));
            let older = ViewsCapture::request(&pipeline, 1).expect("no view is being filled");
            drop(older);
            let mut capture = ViewsCapture::request(&pipeline, 2).expect("no view is being filled");
            pipeline.advance_to(2);
            pipeline.updates.send(update("t2", 2, "Ali", 50));
            pipeline.advance_to(3);
            pipeline.updates.send(update("t3", 3, "Sara", 7));
            pipeline.advance_to(4);
            for _ in 0..1000 {
                worker.step();
                match capture.poll() {
                    Captures::Waiting => continue,
                    Captures::Refused => panic!("a capture at the time asked is exact"),
                    Captures::Done(sections) => return sections,
                }
            }
            panic!("the views were never captured");
        });
        assert_eq!(customers.len(), 1, "the customers view only");
        let (id, encode) = customers.into_iter().next().unwrap();
        assert_eq!(id, kept::CUSTOMERS);
        let mut bytes = Vec::new();
        encode(&mut |piece| bytes.extend_from_slice(piece));
        let mut groups = Groups::<Arc<str>>::default();
        assert_eq!(groups.restore(&bytes).unwrap(), 1, "Ali only: Sara came at time 3");
    }
}
