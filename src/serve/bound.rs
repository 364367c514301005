//! Read-your-writes: a lower bound on the input positions an answer must reflect.
//!
//! A client that has just produced a message knows where it landed (`lambda produce` prints
//! it); it asks the next read to reflect at least that much, and the read waits until the
//! views have read that far — up to a timeout, after which it fails saying how far they got,
//! rather than answering stale:
//!
//! ```text
//! $ lambda produce --input order.jsonl
//! min_offsets=real-time-orders/1:43
//! $ curl 'localhost:8080/v1/customers/Ali?min_offsets=real-time-orders/1:43'
//! ```
//!
//! The bound names positions as `as_of.offsets` does — `topic/partition:offset`, the offset
//! being the next one the answer must reflect — comma-separated. Over SQL (the Postgres
//! protocol and the prompt) a session sets it with `SET min_offsets = '...'` (and the wait
//! with `SET timeout_ms = ...`, see [`crate::sql::session`]); every later read of the session
//! waits for it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::reading::{ReadScope, Reading};
use crate::serve::{ReadError, Serving};

/// How long a read waits for its bound unless told.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(5000);
/// The longest wait one may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Partition → the next offset an answer must reflect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MinOffsets(pub BTreeMap<i32, i64>);

impl MinOffsets {
    /// Parses `topic/partition:offset,...`; every topic must be `topic`, the one read.
    pub fn parse(text: &str, topic: &str) -> Result<MinOffsets, String> {
        let mut bound = BTreeMap::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let shape = || format!("min_offsets: {item:?} is not topic/partition:offset (like {topic}/0:12)");
            let (position, offset) = item.rsplit_once(':').ok_or_else(shape)?;
            let (named, partition) = position.rsplit_once('/').ok_or_else(shape)?;
            if named != topic {
                return Err(format!("min_offsets: topic {named:?} is not read here; the topic is {topic:?}"));
            }
            let partition: i32 = partition.parse().ok().filter(|p| *p >= 0).ok_or_else(shape)?;
            let offset: i64 = offset.parse().ok().filter(|o| *o >= 0).ok_or_else(shape)?;
            let at = bound.entry(partition).or_insert(offset);
            *at = (*at).max(offset);
        }
        if bound.is_empty() {
            return Err(format!("min_offsets is empty; give topic/partition:offset,... (like {topic}/0:12)"));
        }
        Ok(MinOffsets(bound))
    }

    /// Whether `reading` reflects every position of the bound.
    pub fn reached_by(&self, reading: &Reading) -> bool {
        self.0.iter().all(|(p, o)| reading.offsets.iter().any(|(q, n)| q == p && n >= o))
    }

    /// The bound as `parse` reads it.
    pub fn display(&self, topic: &str) -> String {
        let items: Vec<String> = self.0.iter().map(|(p, o)| format!("{topic}/{p}:{o}")).collect();
        items.join(",")
    }
}

/// Parses a wait in milliseconds, at most [`MAX_TIMEOUT`].
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(ms) if Duration::from_millis(ms) <= MAX_TIMEOUT => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "timeout_ms must be a whole number of milliseconds up to {}, not {text:?}",
            MAX_TIMEOUT.as_millis()
        )),
    }
}

/// Why a read did not wait its way to its bound.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The views did not reach the bound in time; how far they got.
    #[error("the views did not reach min_offsets in time; they reflect time {} and offsets {:?}", .0.time, .0.offsets)]
    NotReached(Box<Reading>),
    /// The bound names a partition the topic does not have.
    #[error("min_offsets names partition {partition}, which the topic does not have (it has {})", .partitions.len())]
    NoSuchPartition {
        /// The partition named.
        partition: i32,
        /// The topic's partitions.
        partitions: Vec<i32>,
    },
    /// The views could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// How long a waiting reader that reads for the others waits for the views to move on before
/// it reads anyway (a notice missed costs this much, no more).
const MOVE_WAIT: Duration = Duration::from_millis(50);

/// The input positions readers wait for, and the newest ones read — shared by every reader
/// that waits, so that any number of them cost one read of the offsets each time the views
/// move on, not one each per millisecond:
///
/// ```text
/// waiters ──bound──► Positions ◄──offsets at T── the one waiter that reads for all, once
///   ▲                   │                          worker 0 says the views moved past T
///   └──woken when their bound is reached (or their topic lacks a partition they name)
/// ```
///
/// The reader is whichever waiter found none: it reads until its own bound is reached, then
/// lets go, and the others (told so) choose the next.
#[derive(Default)]
pub struct Positions {
    state: std::sync::Mutex<Waiting>,
    reader_gone: tokio::sync::Notify,
}

#[derive(Default)]
struct Waiting {
    latest: Option<Arc<Reading>>,
    waiters: Vec<(MinOffsets, tokio::sync::oneshot::Sender<()>)>,
    reading: bool,
}

/// The partitions a reading knows the topic has (none before Kafka was reached).
fn partitions(reading: &Reading) -> Vec<i32> {
    let mut all: Vec<i32> = reading.workers.iter().flat_map(|w| w.partitions.iter().map(|(p, _)| *p)).collect();
    all.extend(reading.offsets.iter().map(|(p, _)| *p));
    all.sort_unstable();
    all.dedup();
    all
}

impl MinOffsets {
    /// A partition the bound names that `reading` says the topic lacks.
    fn missing_partition(&self, reading: &Reading) -> Option<WaitError> {
        let known = partitions(reading);
        if known.is_empty() {
            return None;
        }
        let partition = self.0.keys().find(|p| known.binary_search(p).is_err())?;
        Some(WaitError::NoSuchPartition { partition: *partition, partitions: known })
    }
}

impl Positions {
    /// Takes the offsets of `reading`; wakes the waiters it satisfies (or that name a partition
    /// it says the topic lacks), and forgets those that gave up.
    fn publish(&self, reading: Reading) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let moved = state.latest.as_ref().is_none_or(|l| l.offsets != reading.offsets || l.workers != reading.workers);
        let reading = Arc::new(reading);
        state.latest = Some(Arc::clone(&reading));
        if moved {
            state
                .waiters
                .retain_mut(|(bound, _)| !bound.reached_by(&reading) && bound.missing_partition(&reading).is_none());
        }
        // Dropping a satisfied waiter's sender wakes it; waiters that gave up are dropped too.
        state.waiters.retain(|(_, wake)| !wake.is_closed());
    }
}

/// The reading waiter's turn: when dropped, the others hear that they should choose another.
struct ReadsForAll<'a>(&'a Positions);

impl Drop for ReadsForAll<'_> {
    fn drop(&mut self) {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner()).reading = false;
        self.0.reader_gone.notify_waiters();
    }
}

impl Serving {
    /// Waits until the views reflect `bound`, up to `timeout` (from an async task).
    pub async fn wait_for_async(&self, bound: &MinOffsets, timeout: Duration) -> Result<(), WaitError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let positions = &self.positions;
        loop {
            let (woken, reads) = {
                let mut state = positions.state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(latest) = &state.latest {
                    if let Some(missing) = bound.missing_partition(latest) {
                        return Err(missing);
                    }
                    if bound.reached_by(latest) {
                        return Ok(());
                    }
                }
                let (wake, woken) = tokio::sync::oneshot::channel();
                state.waiters.push((bound.clone(), wake));
                let reads = !state.reading;
                state.reading = true;
                (woken, reads.then(|| ReadsForAll(positions)))
            };
            let reader_gone = positions.reader_gone.notified();
            tokio::pin!(woken);
            if let Some(_turn) = reads {
                // Read for every waiter, each time the views move on, until this one is woken.
                loop {
                    let last =
                        positions.state.lock().unwrap_or_else(|p| p.into_inner()).latest.as_ref().map(|r| r.time);
                    if last.is_some_and(|t| self.worker_0().complete() <= t) {
                        let moved = self.worker_0().moved();
                        if self.worker_0().complete() <= last.unwrap_or(0) {
                            let _ =
                                tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + MOVE_WAIT), moved)
                                    .await;
                        }
                    }
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    let reading = self.read_async(ReadScope::Offsets, left).await?;
                    positions.publish(reading);
                    if futures::FutureExt::now_or_never(&mut woken).is_some() {
                        break;
                    }
                }
            } else {
                tokio::select! {
                    _ = &mut woken => {}
                    _ = reader_gone => continue,
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let latest = positions.state.lock().unwrap_or_else(|p| p.into_inner()).latest.clone();
                let reading = match latest {
                    Some(latest) => (*latest).clone(),
                    None => self.read_async(ReadScope::Offsets, Duration::from_secs(1)).await?,
                };
                if bound.reached_by(&reading) {
                    return Ok(());
                }
                return Err(bound.missing_partition(&reading).unwrap_or(WaitError::NotReached(Box::new(reading))));
            }
        }
    }

    /// [`Serving::wait_for_async`] from a thread that may block (the prompt).
    pub fn wait_for(&self, bound: &MinOffsets, timeout: Duration) -> Result<(), WaitError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|_| WaitError::Read(ReadError::Stopped))?;
        runtime.block_on(self.wait_for_async(bound, timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: &str = "real-time-orders";

    #[test]
    fn bounds_parse_as_as_of_names_positions() {
        let bound =
            MinOffsets::parse("real-time-orders/0:12, real-time-orders/2:5,real-time-orders/0:3", TOPIC).unwrap();
        assert_eq!(bound.0, BTreeMap::from([(0, 12), (2, 5)]));
        assert_eq!(bound.display(TOPIC), "real-time-orders/0:12,real-time-orders/2:5");
        for bad in [
            "",
            "real-time-orders/0",
            "real-time-orders:0:1",
            "other/0:1",
            "real-time-orders/-1:2",
            "real-time-orders/0:x",
        ] {
            assert!(MinOffsets::parse(bad, TOPIC).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn readings_reach_a_bound_at_or_past_every_position() {
        let bound = MinOffsets::parse("real-time-orders/0:12,real-time-orders/1:1", TOPIC).unwrap();
        let mut reading = Reading { offsets: vec![(0, 12), (1, 0)], ..Reading::default() };
        assert!(!bound.reached_by(&reading));
        reading.offsets[1].1 = 4;
        assert!(bound.reached_by(&reading));
        reading.offsets.remove(0);
        assert!(!bound.reached_by(&reading), "a partition not read yet is not reached");
    }
}
