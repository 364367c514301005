//! How many updates the arrangements of a dataflow hold: what a view created at run time
//! costs in memory, as `SHOW VIEWS` reports it (`arranged_records`, summed over workers).
//!
//! Differential logs every arrangement's batches as they come, merge and go
//! (`differential/arrange`), by the id of the operator that arranges; the ids a dataflow's
//! operators took are a range, noted when it is built. Counted as Materialize counts its
//! `mz_arrangement_sizes`:
//!
//! ```text
//! Batch  { operator 41, length 1,000 }                     41: +1,000
//! Batch  { operator 41, length 10 }                        41: +10
//! Merge  { operator 41, length1 1,000, length2 10, complete 1,004 }   41: -6 (consolidated)
//! Batcher { operator 41, records_diff 25 }                 41: +25 (updates not yet sorted)
//! Drop   { operator 41, length 1,004 }                     41: -1,004 (the view dropped)
//! ```
//!
//! Only what is arranged is counted (the updates an operator keeps: a reduction's input and
//! output, a join's two sides, the view's own rows); an arrangement imported from a table or
//! another view is that one's, not counted twice. The main dataflow is built before the log
//! is registered: it logs nothing and costs nothing more.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;
use std::rc::Rc;

use differential_dataflow::logging::{DifferentialEvent, DifferentialEventBuilder};
use timely::worker::Worker;

/// Updates held, by arranging operator: this worker's.
#[derive(Clone, Default)]
pub struct ArrangedRecords(Rc<RefCell<HashMap<usize, i64>>>);

impl ArrangedRecords {
    /// Counts the arrangements of every dataflow `worker` builds from now on.
    pub fn register(worker: &mut Worker) -> Self {
        let records = ArrangedRecords::default();
        let counts = Rc::clone(&records.0);
        if let Some(mut registry) = worker.log_register() {
            registry.insert::<DifferentialEventBuilder, _>("differential/arrange", move |_, events| {
                let Some(events) = events else { return };
                let mut counts = counts.borrow_mut();
                for (_, event) in events.drain(..) {
                    let (operator, change) = match event {
                        DifferentialEvent::Batch(e) => (e.operator, e.length as i64),
                        DifferentialEvent::Merge(e) => match e.complete {
                            Some(done) => (e.operator, done as i64 - (e.length1 + e.length2) as i64),
                            None => continue,
                        },
                        DifferentialEvent::Drop(e) => (e.operator, -(e.length as i64)),
                        DifferentialEvent::Batcher(e) => (e.operator, e.records_diff as i64),
                        DifferentialEvent::MergeShortfall(_) | DifferentialEvent::TraceShare(_) => continue,
                    };
                    let count = counts.entry(operator).or_default();
                    *count += change;
                    if *count == 0 {
                        counts.remove(&operator);
                    }
                }
            });
        }
        records
    }

    /// Hands on the events `worker`'s loggers hold back (they are passed on only when a buffer
    /// fills), so that counts are current.
    pub fn flush(worker: &Worker) {
        if let Some(mut registry) = worker.log_register() {
            registry.flush();
        }
    }

    /// The updates held by the operators of `operators` (as of the last [`Self::flush`]).
    pub fn within(&self, operators: &Range<usize>) -> i64 {
        self.0.borrow().iter().filter(|(op, _)| operators.contains(op)).map(|(_, n)| *n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use differential_dataflow::input::Input;
    use timely::dataflow::operators::Probe;

    #[test]
    fn a_dataflow_counts_the_updates_its_arrangements_hold_until_it_is_dropped() {
        timely::execute_directly(|worker| {
            let records = ArrangedRecords::register(worker);
            let first = worker.peek_identifier();
            let index = worker.next_dataflow_index();
            let (mut input, probe, trace) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, data) = scope.new_collection::<(u64, u64), isize>();
                let arranged = data.arrange_by_key();
                let (probe, _) = arranged.stream.probe();
                (input, probe, arranged.trace)
            });
            let operators = first..worker.peek_identifier();
            // Each round: 1,000 updates at time `round`, then the dataflow run through it.
            let mut round = |worker: &mut timely::worker::Worker, insert: bool| {
                for i in 0..1_000u64 {
                    if insert {
                        input.insert((i % 10, i))
                    } else {
                        input.remove((i % 10, i))
                    }
                }
                let next = input.time() + 1;
                input.advance_to(next);
                input.flush();
                worker.step_while(|| probe.less_than(input.time()));
                ArrangedRecords::flush(worker);
                records.within(&operators)
            };
            assert_eq!(round(worker, true), 1_000);
            // Retracted: held until merged with what they cancel.
            assert!(round(worker, false) <= 2_000);
            assert_eq!(records.within(&(0..first)), 0, "other dataflows hold nothing of it");
            drop(trace);
            worker.drop_dataflow(index);
            worker.step();
            ArrangedRecords::flush(worker);
            assert_eq!(records.within(&operators), 0, "a dropped dataflow holds nothing");
        });
    }
}
