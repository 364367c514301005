//! When the workers move the logical time on: every millisecond while there is work, about
//! once a second when there is none.
//!
//! Each advance of the time costs every operator of the dataflow a round of progress
//! tracking, whether or not data came with it: ticking every millisecond kept an idle
//! `lambda run` at ~24% of a core. So a worker advances its time only when
//!
//! - it admitted messages (every worker of the process then advances, so that the time of
//!   those messages completes everywhere at once — a time completes only once all workers
//!   have passed it);
//! - the coordinator waits for a time to complete (a read, a view being installed, a
//!   snapshot, a stop): then every worker ticks every millisecond for a while;
//! - or [`IDLE_TICK`] went by, so that the views' time still moves while nothing happens.
//!
//! An idle worker parks for up to [`IDLE_PARK`]; messages from Kafka (librdkafka's queue
//! becoming non-empty), another worker's messages and read requests wake it at once.
//!
//! ```text
//! worker 0   idle ── message at t ──► admits at t, advances ─┐ wakes worker 1
//! worker 1   idle ───────────────────────────────────────────┴► advances past t: t completes
//! ```
//!
//! Workers of several processes keep ticking every millisecond: the other processes'
//! messages cannot wake them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::dataflow::Time;

/// How often an idle worker advances the time anyway.
pub const IDLE_TICK: Duration = Duration::from_secs(1);
/// The longest an idle worker parks (what bounds, for example, how late it sees a stop).
pub const IDLE_PARK: Duration = Duration::from_millis(100);
/// How long a worker parks while there is work.
pub const BUSY_PARK: Duration = Duration::from_millis(1);
/// How long every worker keeps ticking after the coordinator last asked for a time.
const BUSY_FOR: Duration = Duration::from_millis(50);

/// The workers' shared pace, one per process.
#[derive(Debug)]
pub struct Ticker {
    /// Tick every millisecond always (a cluster of several processes).
    always: bool,
    /// Every worker advances past this time (messages were admitted before it).
    pass: AtomicU64,
    /// Every worker ticks until this many milliseconds after `started`.
    busy_until: AtomicU64,
    started: Instant,
    /// The workers' threads, to wake them.
    threads: Mutex<Vec<Thread>>,
}

impl Ticker {
    /// The pace of a process's workers; `always` ticks every millisecond.
    pub fn new(always: bool) -> Self {
        Ticker {
            always,
            pass: AtomicU64::new(0),
            busy_until: AtomicU64::new(0),
            started: Instant::now(),
            threads: Mutex::default(),
        }
    }

    /// Registers the calling thread as one of the workers (each worker, once).
    pub fn register(&self) {
        self.threads.lock().unwrap_or_else(|p| p.into_inner()).push(std::thread::current());
    }

    /// Messages were admitted at `time`: every worker must pass it.
    pub fn admitted(&self, time: Time) {
        if self.pass.fetch_max(time + 1, Ordering::SeqCst) <= time {
            self.wake_all();
        }
    }

    /// The coordinator waits for a time to complete: every worker ticks for a while.
    pub fn keep_busy(&self) {
        let until = self.elapsed_ms() + BUSY_FOR.as_millis() as u64;
        if self.busy_until.swap(until, Ordering::SeqCst) < self.elapsed_ms() {
            self.wake_all();
        }
    }

    /// Whether a worker at `time`, which last advanced at `last_advance`, moves its time on
    /// now.
    pub fn ticking(&self, time: Time, last_advance: Instant) -> bool {
        self.always
            || self.pass.load(Ordering::SeqCst) > time
            || self.busy_until.load(Ordering::SeqCst) > self.elapsed_ms()
            || last_advance.elapsed() >= IDLE_TICK
    }

    /// How long a worker parks when it finds nothing to do.
    pub fn park(&self, ticking: bool) -> Duration {
        if ticking {
            BUSY_PARK
        } else {
            IDLE_PARK
        }
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn wake_all(&self) {
        for thread in self.threads.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            thread.unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_worker_ticks_once_in_a_while() {
        let ticker = Ticker::new(false);
        assert!(!ticker.ticking(10, Instant::now()));
        assert!(ticker.ticking(10, Instant::now() - IDLE_TICK));
        assert_eq!(ticker.park(false), IDLE_PARK);
    }

    #[test]
    fn admitted_messages_make_every_worker_pass_their_time() {
        let ticker = Ticker::new(false);
        ticker.admitted(10);
        assert!(ticker.ticking(10, Instant::now()), "a worker at the messages' time passes it");
        assert!(!ticker.ticking(11, Instant::now()), "a worker past it need not tick");
    }

    #[test]
    fn a_waiting_coordinator_keeps_everyone_ticking() {
        let ticker = Ticker::new(false);
        ticker.keep_busy();
        assert!(ticker.ticking(10, Instant::now()));
        assert!(Ticker::new(true).ticking(10, Instant::now()), "several processes always tick");
    }

    #[test]
    fn admitting_wakes_a_parked_worker() {
        let ticker = std::sync::Arc::new(Ticker::new(false));
        let (registered, ready) = std::sync::mpsc::channel();
        let parked = {
            let ticker = std::sync::Arc::clone(&ticker);
            std::thread::spawn(move || {
                ticker.register();
                registered.send(()).unwrap();
                let started = Instant::now();
                std::thread::park_timeout(Duration::from_secs(30));
                started.elapsed()
            })
        };
        ready.recv().unwrap();
        ticker.admitted(5);
        assert!(parked.join().unwrap() < Duration::from_secs(30), "the parked worker was woken");
    }
}
