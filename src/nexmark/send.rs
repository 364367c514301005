//! The three streams sent to Kafka as JSON, each to the topic of its name (`person`,
//! `auction`, `bid`), keyed by id (so that a bid's corrections follow it in its partition):
//! what `lambda produce --nexmark` does.
//!
//! ```text
//! lambda produce --nexmark 1000000 --corrections 0.1 --deletes 0.02
//! min_offsets=person/0:6667,…,bid/2:306713
//! ```

use super::Stream;

/// Sends the events `options` asks for, each stream to the topic of its name (`person`,
/// `auction`, `bid`), the three at once; says what was sent to each. `stop` ends it early.
pub fn to_topics(
    brokers: &str,
    options: super::generator::Options,
    stop: &(dyn Fn() -> bool + Sync),
) -> anyhow::Result<Vec<(Stream, crate::produce::Produced)>> {
    let (corrections, deletes) = (options.corrections, options.deletes);
    anyhow::ensure!(
        corrections >= 0.0 && deletes >= 0.0 && corrections + deletes <= 1.0,
        "--corrections {corrections} and --deletes {deletes}: each a fraction of the bids, from 0 to 1 together"
    );
    std::thread::scope(|scope| {
        let threads: Vec<_> = Stream::ALL
            .into_iter()
            .map(|stream| {
                scope.spawn(move || {
                    let only = super::generator::Options { only: Some(stream), ..options };
                    let lines = super::generator::Generator::new(only).map(|e| e.json());
                    crate::produce::produce(brokers, stream.name(), lines, crate::produce::Pace::Flat, stop)
                })
            })
            .collect();
        Stream::ALL
            .into_iter()
            .zip(threads)
            .map(|(stream, t)| {
                let sent =
                    t.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the producer of {} failed", stream.name())));
                sent.map(|sent| (stream, sent))
            })
            .collect()
    })
}
