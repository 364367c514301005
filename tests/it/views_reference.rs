//! Every view, at every logical time, equals a from-scratch recomputation (the oracle),
//! for 1, 2 and 4 workers, random splits of the history over workers, and random batching
//! of later updates — with corrections, deletes, duplicates and bad records throughout.

use crate::common;

use atelier_lambda::filter::{Filter, Kind};
use atelier_lambda::oracle::differences;
use common::*;
use proptest::prelude::*;

fn check(
    history: Vec<String>,
    batches: Vec<Vec<Message>>,
    steps: Vec<u8>,
    workers: usize,
    filter: Option<Filter>,
    top_k: usize,
) -> Result<(), TestCaseError> {
    let dir = temp_dir("reference");
    let path = write_history(&dir, &history);
    let live = run_dataflow(&path, &batches, &steps, workers, filter.clone(), top_k);
    let expected = run_oracle(&history, &path.display().to_string(), &batches, filter.as_ref(), top_k);
    let _ = std::fs::remove_dir_all(&dir);
    prop_assert_eq!(live.len(), expected.len());
    for (time, (l, e)) in live.iter().zip(&expected).enumerate() {
        let diffs = differences(l, e);
        prop_assert!(diffs.is_empty(), "{} workers, time {}: {:#?}", workers, time, diffs);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn views_equal_recomputation(
        history in prop::collection::vec(line(), 0..60),
        batches in prop::collection::vec(prop::collection::vec(message(4), 0..12), 0..6),
        steps in prop::collection::vec(0u8..4, 7),
        workers in prop::sample::select(vec![1usize, 2, 4]),
        top_k in 1usize..6,
    ) {
        check(history, batches, steps, workers, None, top_k)?;
    }

    #[test]
    fn an_event_filter_follows_corrections(
        history in prop::collection::vec(line(), 0..40),
        batches in prop::collection::vec(prop::collection::vec(message(2), 0..10), 0..4),
        steps in prop::collection::vec(0u8..4, 5),
        workers in prop::sample::select(vec![1usize, 2]),
    ) {
        let filter = Filter::parse("amount >= 100", Kind::Event).unwrap();
        check(history, batches, steps, workers, Some(filter), 3)?;
    }
}

/// The same input gives the same views whatever the number of workers.
#[test]
fn worker_count_does_not_change_answers() {
    let history: Vec<String> = (0..200)
        .map(|i| format!(r#"{{"id":"t{}","customer":"c{}","amount":{}.{:02}}}"#, i % 37, i % 7, i * 3, i % 100))
        .collect();
    let dir = temp_dir("workers");
    let path = write_history(&dir, &history);
    let one = run_dataflow(&path, &[], &[], 1, None, 5);
    for workers in [2, 3, 4] {
        assert_eq!(run_dataflow(&path, &[], &[], workers, None, 5), one, "{workers} workers");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
