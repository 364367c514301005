//! Every integration test, in one binary: each links the whole program (timely, librdkafka,
//! the SQL engine), so one binary instead of one per file saves most of the test build.
//!
//! - the fast tier: `house` (the house rules), the reference tests (`*_reference`: the dataflow
//!   and the SQL engine against the plain recomputation over random inputs), the readers and
//!   event rules, the fuzzed inputs, the SQL corpus (`sql_logic`, `tests/sql/*.slt`);
//! - the end-to-end tier (`*_e2e`, `batch_cli`, `compose`): the real `lambda` binary driven as a
//!   process, with a real broker on loopback and real clients (`kcat`, `psql`, psycopg, SQLAlchemy, pandas, Chromium).
//!
//! `cargo test --test it -- reference` runs one tier's files by name, `cargo test --test it --
//! speed_e2e` one file.

mod common;

mod access_e2e;
mod batch_cli;
mod changefeed_e2e;
mod clients_e2e;
mod cluster_e2e;
mod compiled_views_reference;
mod compose;
mod created_views_e2e;
mod created_views_reference;
mod dashboard_e2e;
mod durability_e2e;
mod event_rules;
mod fuzz_inputs;
mod history_reader;
mod house;
mod nexmark_reference;
mod probe_e2e;
mod read_your_writes_e2e;
mod reliability_e2e;
mod restore_reference;
mod serving_e2e;
mod sink_e2e;
mod speed_e2e;
mod sql_differential;
mod sql_e2e;
mod sql_logic;
mod sql_probe_e2e;
mod sql_reference;
mod tables_e2e;
mod views_reference;
