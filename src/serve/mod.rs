//! The serving layer: answers read from the views' arrangements at one logical time.
//!
//! - [`serving`]: the handle any thread reads through, and how the workers' shares reach it.
//! - [`query`]: one worker's share of a read, with cursors over the traces.
//! - [`http`]: the JSON API over those reads, and (in `http/watch.rs`) the changefeeds and the dashboard.
//! - [`metrics`]: the Prometheus exposition at `/metrics`.
//! - [`repl`]: the interactive prompt over the same reads.
//! - [`bound`]: read-your-writes, reads that wait for input positions.
//! - [`feed`]: changefeeds, a view's rows and then its changes (SSE, the Kafka sink).
//! - [`sink`]: Kafka sinks, a view's changes as upserts and tombstones.

pub mod bound;
pub mod cursors;
pub mod feed;
pub mod http;
pub mod metrics;
pub mod pg;
pub mod query;
pub mod repl;
pub mod serving;
pub mod sink;

pub use serving::{ReadError, Serving};

/// A listener for a front end on its own small runtime (one thread), on `address` as the
/// flag `--{flag}` gave it, `off` (or empty) for none. `what` names the front end in errors.
pub fn listen(
    address: &str,
    flag: &str,
    what: &str,
) -> anyhow::Result<Option<(tokio::runtime::Runtime, tokio::net::TcpListener)>> {
    use anyhow::Context;
    let address = address.trim();
    if address.is_empty() || address == "off" {
        return Ok(None);
    }
    let address: std::net::SocketAddr =
        address.parse().with_context(|| format!("--{flag} {address:?} is not an address like 127.0.0.1:8080"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(flag)
        .enable_all()
        .build()
        .with_context(|| format!("cannot start the runtime of {what}"))?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(address))
        .with_context(|| format!("cannot serve {what} on {address} (in use? choose another with --{flag})"))?;
    Ok(Some((runtime, listener)))
}
