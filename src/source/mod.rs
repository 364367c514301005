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
use crate::event::Update;

/// One record read from a source.
#[derive(Clone, Debug)]
pub enum Record {
    /// A valid version of a transaction.
    Update(Update),
    /// A refused record.
    Refused(DeadLetter),
}
