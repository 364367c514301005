//! Sources: where records come from before they enter the dataflow.
//!
//! - [`history`]: files of past transactions (JSON lines, a JSON array, CSV), loaded at
//!   logical time 0 and read in parallel by all workers.
//! - [`kafka`]: the topic's partitions, spread over the workers, at every later time.
//!
//! Every source turns its raw records into [`Record`]s with the same rules
//! ([`crate::event`]): an [`Update`] for the dataflow, or a [`DeadLetter`].

pub mod history;
pub mod kafka;

use crate::deadletter::DeadLetter;
use crate::event::{Position, Rejection, Update};

/// One record read from a source.
#[derive(Clone, Debug)]
pub enum Record {
    /// A valid version of a transaction.
    Update(Update),
    /// A refused record.
    Refused(DeadLetter),
}

impl Record {
    /// What a source makes of one raw record: its update, or a dead letter with its place
    /// (named by `place`, e.g. `file:line`), position and raw bytes.
    pub fn new(
        parsed: Result<Update, Rejection>,
        place: impl FnOnce() -> String,
        position: Position,
        raw: &[u8],
    ) -> Record {
        match parsed {
            Ok(update) => Record::Update(update),
            Err(rejection) => Record::Refused(DeadLetter::new(place(), position, rejection, raw)),
        }
    }
}
