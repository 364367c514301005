//! The serving layer: answers read from the views' arrangements at one logical time.
//!
//! - [`serving`]: the handle any thread reads through, and how the workers' shares reach it.
//! - [`query`]: one worker's share of a read, with cursors over the traces.
//! - [`http`]: the JSON API over those reads.
//! - [`metrics`]: the Prometheus exposition at `/metrics`.
//! - [`repl`]: the interactive prompt over the same reads.

pub mod http;
pub mod metrics;
pub mod pg;
pub mod query;
pub mod repl;
pub mod serving;

pub use serving::{ReadError, Serving};
