//! Upsert: from a stream of versions to the collection of live transactions.
//!
//! Each [`Update`] carries the new version of one identity (or its deletion). This operator
//! keeps the latest version of every identity and emits, at each logical time, exactly the
//! differences: the retraction of the version being replaced and the insertion of the new
//! one. Downstream views therefore never see two versions of one transaction.
//!
//! Why not differential's `arrange_from_upsert`? It breaks ties between versions that share
//! a logical time by *value*, while our contract orders them by *source position* (a later
//! line or offset wins, even in the same batch). Keeping the state in a hash map also makes
//! the initial load of a large history a single pass, and leaves the live versions readable
//! for a snapshot.
//!
//! For example, with `t1` admitted at time 0 and corrected at time 1:
//!
//! ```text
//! time 0: {id t1, Ali, 120}            -> (Ali 120, 0, +1)
//! time 1: {id t1, Ali, 80}             -> (Ali 120, 1, -1), (Ali 80, 1, +1)
//! time 2: {id t1, op delete}           -> (Ali 80, 2, -1)
//! ```
//!
//! A version whose position is not after the stored one *from the same source* is a
//! redelivery (a re-read partition, a duplicated file share) and changes nothing. The stored
//! position survives a delete as a tombstone, so a redelivered old version cannot resurrect
//! a deleted transaction.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use differential_dataflow::{AsCollection, Hashable, VecCollection};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use super::Time;
use crate::event::{Identity, Position, Txn, Update};

/// The latest version of one identity.
#[derive(Clone, Debug)]
pub struct Version {
    /// Where the version came from.
    pub position: Position,
    /// The transaction, or `None` once deleted (a tombstone).
    pub txn: Option<Txn>,
}

/// The live versions held by one worker, shared with whoever needs to read them.
pub type LatestVersions = Rc<RefCell<HashMap<Identity, Version>>>;

/// Turns a stream of versions into the collection of live transactions.
///
/// Updates are exchanged by identity, so each identity lives on exactly one worker; the
/// returned [`LatestVersions`] is this worker's share.
pub fn upsert<'scope>(
    updates: Stream<'scope, Time, Vec<Update>>,
) -> (VecCollection<'scope, Time, Txn, isize>, LatestVersions) {
    let latest: LatestVersions = Rc::default();
    let state = Rc::clone(&latest);
    let exchange = Exchange::new(|update: &Update| update.identity.hashed());
    let stream = updates.unary_frontier(exchange, "Upsert", move |_capability, _info| {
        // Versions waiting for their logical time to complete, by time.
        let mut pending: BTreeMap<Time, (Capability<Time>, Vec<Update>)> = BTreeMap::new();
        move |(input, frontier), output| {
            input.for_each(|capability, data| {
                // Messages without a capability make no progress claims; timely never sends
                // them on a data stream from an input, so there is nothing to hold for them.
                let Some(time) = capability.least().copied() else {
                    return;
                };
                let entry = pending.entry(time).or_insert_with(|| {
                    (capability.retain_least(0).expect("a message with a time yields a capability"), Vec::new())
                });
                entry.1.append(data);
            });
            // Apply every complete time, oldest first.
            while let Some(entry) = pending.first_entry() {
                if frontier.less_equal(entry.key()) {
                    break;
                }
                let (time, (capability, mut batch)) = entry.remove_entry();
                // Versions of one identity at the same time apply in source order.
                batch.sort_by_key(|update| update.position);
                let mut state = state.borrow_mut();
                let mut session = output.session(&capability);
                for update in batch {
                    apply(&mut state, update, |txn, diff| session.give((txn, time, diff)));
                }
            }
        }
    });
    (stream.as_collection(), latest)
}

/// Applies one version to the state, reporting the changes to the live collection.
fn apply(state: &mut HashMap<Identity, Version>, update: Update, mut emit: impl FnMut(Txn, isize)) {
    let Update { identity, position, txn } = update;
    match state.get_mut(&identity) {
        None => {
            if let Some(txn) = &txn {
                emit(txn.clone(), 1);
            }
            state.insert(identity, Version { position, txn });
        }
        Some(stored) => {
            if stored.position.source == position.source && stored.position.seq >= position.seq {
                return; // a redelivery
            }
            if stored.txn != txn {
                if let Some(old) = stored.txn.take() {
                    emit(old, -1);
                }
                if let Some(new) = &txn {
                    emit(new.clone(), 1);
                }
            }
            *stored = Version { position, txn };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(customer: &str, cents: i64) -> Txn {
        Txn { customer: customer.into(), cents, hour: None, category: None }
    }

    fn update(id: &str, source: u32, seq: u64, t: Option<Txn>) -> Update {
        Update { identity: Identity::Id(id.into()), position: Position { source, seq }, txn: t }
    }

    fn run(updates: Vec<Update>) -> Vec<(Txn, isize)> {
        let mut state = HashMap::new();
        let mut out = Vec::new();
        for u in updates {
            apply(&mut state, u, |t, d| out.push((t, d)));
        }
        out
    }

    #[test]
    fn corrections_retract_what_they_replace() {
        let out = run(vec![update("t1", 0, 1, Some(txn("Ali", 100))), update("t1", 0, 2, Some(txn("Ali", 80)))]);
        assert_eq!(out, vec![(txn("Ali", 100), 1), (txn("Ali", 100), -1), (txn("Ali", 80), 1)]);
    }

    #[test]
    fn deletes_retract_and_leave_a_tombstone() {
        let out = run(vec![
            update("t1", 3, 1, Some(txn("Ali", 100))),
            update("t1", 3, 2, None),
            update("t1", 3, 1, Some(txn("Ali", 100))), // redelivered: must not resurrect
        ]);
        assert_eq!(out, vec![(txn("Ali", 100), 1), (txn("Ali", 100), -1)]);
    }

    #[test]
    fn identical_versions_change_nothing() {
        let out = run(vec![update("t1", 0, 1, Some(txn("Ali", 100))), update("t1", 1, 7, Some(txn("Ali", 100)))]);
        assert_eq!(out, vec![(txn("Ali", 100), 1)]);
    }

    #[test]
    fn another_source_always_replaces() {
        // A Kafka partition (source 9) replacing a history line (source 0) at a later time.
        let out = run(vec![update("t1", 9, 0, Some(txn("Ali", 1))), update("t1", 0, 5, Some(txn("Ali", 2)))]);
        assert_eq!(out, vec![(txn("Ali", 1), 1), (txn("Ali", 1), -1), (txn("Ali", 2), 1)]);
    }
}
