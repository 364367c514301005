//! # atelier-lambda
//!
//! A Lambda architecture — batch layer, speed layer, serving layer — whose batch and speed
//! layers are **one** timely/differential dataflow. The history is the dataflow's initial
//! collection (logical time 0), each later batch of stream messages is an incremental update
//! at a later time, and the serving layer reads the views' arrangements at a consistent time.
//!
//! | layer | modules |
//! |---|---|
//! | input | [`event`] (rules), [`amount`] (exact cents), [`source`] (files), [`table`] (tables declared in SQL), [`deadletter`] |
//! | batch + speed | [`dataflow`] (upsert and views), [`batch`] (loading the history) |
//! | serving | [`serve`] (reading arrangements), [`reading`] (what a read returns), [`output`] (tables and files) |
//! | running | [`run`] (`lambda run`: workers, coordinator, snapshots), [`control`] (orders between workers), [`state`] (snapshot files) |
//! | checking | [`oracle`] (the from-scratch recomputation), [`verify`] |
//! | tools | [`gen`] (synthetic data), [`nexmark`] (the Nexmark streams), [`filter`], [`config`], [`cli`] |

#![warn(missing_docs)]

pub mod amount;
pub mod batch;
pub mod broker;
pub mod cli;
pub mod cluster;
pub mod compute;
pub mod config;
pub mod control;
pub mod dataflow;
pub mod deadletter;
pub mod demo;
pub mod event;
pub mod filter;
pub mod gen;
pub mod nexmark;
pub mod oracle;
pub mod output;
pub mod produce;
pub mod reading;
pub(crate) mod rng;
pub mod run;
pub mod serve;
pub mod source;
pub mod sql;
pub mod state;
pub mod table;
pub mod verify;
