//! The parse floor: how long reading and validating a history file takes on all workers'
//! threads with no dataflow at all — the lower bound `lambda batch` is measured against.
//!
//! ```text
//! cargo run --release --example parse_floor -- history.jsonl [threads]
//! ```

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use atelier_lambda::source::history::HistoryFile;
use atelier_lambda::source::Record;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: parse_floor FILE [THREADS]");
    let threads: usize = args.next().map_or(2, |t| t.parse().expect("THREADS is a number"));
    let files = HistoryFile::open_all(&[path.into()]).expect("the file opens");
    let started = Instant::now();
    let progress = AtomicU64::new(0);
    let (good, bad) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|scope| {
        for worker in 0..threads {
            let (files, progress, good, bad) = (&files, &progress, &good, &bad);
            scope.spawn(move || {
                let (mut g, mut b) = (0, 0);
                for file in files {
                    file.read_share(worker, threads, 1 << 20, progress, &mut |record| {
                        match record {
                            Record::Update(_) => g += 1,
                            Record::Refused(_) => b += 1,
                        }
                        ControlFlow::Continue(())
                    })
                    .expect("the file reads");
                }
                good.fetch_add(g, Ordering::Relaxed);
                bad.fetch_add(b, Ordering::Relaxed);
            });
        }
    });
    println!(
        "parsed {} records ({} refused) on {threads} threads in {:.3} s",
        good.load(Ordering::Relaxed),
        bad.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
}
