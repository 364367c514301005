//! The serving layer: answers read from the views' arrangements at one logical time.
//!
//! - [`access`]: who may talk to the front ends (the secret, loopback, cross-site requests).
//! - [`serving`]: the handle any thread reads through, and how the workers' shares reach it.
//! - [`query`]: one worker's share of a read, with cursors over the traces.
//! - [`http`]: the JSON API over those reads, and (in `http/watch.rs`) the changefeeds and the dashboard.
//! - [`metrics`]: the Prometheus exposition at `/metrics`.
//! - [`repl`]: the interactive prompt over the same reads.
//! - [`bound`]: read-your-writes, reads that wait for input positions.
//! - [`feed`]: changefeeds, a view's rows and then its changes (SSE, the Kafka sink).
//! - [`sink`]: Kafka sinks, a view's changes as upserts and tombstones.

pub mod access;
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

/// Accepts connections on `listener` for ever, handing each to `serve`; an accept that fails
/// (`what` names the connections in the log) backs off as [`Backoff`] says.
pub async fn accept_each(
    listener: tokio::net::TcpListener,
    what: &'static str,
    mut serve: impl FnMut(tokio::net::TcpStream, std::net::SocketAddr),
) {
    let mut backoff = Backoff::default();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff.reset();
                serve(stream, peer);
            }
            Err(error) => backoff.wait(&error, what).await,
        }
    }
}

/// How an accept loop waits after an error (out of file descriptors, most often): from 5 ms,
/// doubling up to a second, so that it neither spins nor stops serving; and how it logs them —
/// the first, then at most one line every ten seconds with the count.
pub struct Backoff {
    wait: std::time::Duration,
    errors: u64,
    logged: Option<std::time::Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { wait: Backoff::FIRST, errors: 0, logged: None }
    }
}

impl Backoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(5);
    const MOST: std::time::Duration = std::time::Duration::from_secs(1);
    const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    /// After `error` accepting `what`: log (bounded), then wait.
    pub async fn wait(&mut self, error: &std::io::Error, what: &str) {
        self.errors += 1;
        if self.logged.is_none_or(|at| at.elapsed() >= Backoff::LOG_EVERY) {
            tracing::warn!(%error, errors = self.errors, "cannot accept {what}; waiting before trying again");
            self.logged = Some(std::time::Instant::now());
            self.errors = 0;
        }
        tokio::time::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(Backoff::MOST);
    }

    /// After a connection was accepted.
    pub fn reset(&mut self) {
        self.wait = Backoff::FIRST;
    }
}
