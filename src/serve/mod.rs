//! The serving layer: answers read from the views' arrangements at one logical time.
//!
//! - [`query`]: reading the traces with cursors, and merging what each worker holds.
//! - [`http`]: the JSON API over those reads.
//! - [`metrics`]: the Prometheus exposition at `/metrics`.
//! - [`repl`]: the interactive prompt over the same reads.

pub mod http;
pub mod metrics;
pub mod query;
pub mod repl;
