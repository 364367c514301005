//! The compute side: what a worker reads of its arrangements for a SQL statement.
//!
//! The SQL engine ([`crate::sql`]) plans a statement with Apache DataFusion over table
//! providers; when it runs, each provider's scan asks every worker for its share of a
//! relation at the statement's one logical time. Here is the worker's side of that:
//!
//! - [`relation`]: the relations and their columns, in one place;
//! - [`columns`]: the four column types and the Arrow arrays a worker builds;
//! - [`filter`]: a created view's `WHERE`, evaluated over batches of transactions;
//! - [`plan`]: what a compiled view's dataflow is built from, on every worker, and
//!   [`scalar`]: the values it computes from a row;
//! - [`scan`]: a worker's open scans, each read a slice at a time between the dataflow's own
//!   steps, so that a scan of millions of rows never stops the stream; and the channels their
//!   batches reach the reader by;
//! - [`cells`]: the rows of the arrangements kept per key, as cells;
//! - [`changes`]: a scan of a relation's changes between two times (what a changefeed reads);
//! - [`outlet`]: how a worker's share of a scan reaches its reader, in this process or another;
//! - [`walk`]: a cursor's walk over an arrangement's keys, for a scan.

pub mod cells;
pub mod changes;
pub mod columns;
pub mod filter;
pub mod outlet;
pub mod plan;
pub mod relation;
pub mod scalar;
pub mod scan;
pub mod walk;
