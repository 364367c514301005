//! A table's dataflow on one worker: its keyed changes arranged by primary key, with
//! differential's upsert arrangement — the rows, spread over the workers by the key's hash,
//! each key's latest row, and the retraction of the row it replaces computed from the
//! arrangement itself.
//!
//! ```text
//! worker 0 (reads the file, the topic)          every worker
//! Ali → Lyon, Li → Oslo   (time 5)   ─┐
//! Ali → Nice              (time 9)    ├─exchange by key─► arrange_from_upsert ─► trace: key → row
//! Li → deleted            (time 9)   ─┘                    (Ali, Lyon) +1 @5, −1 @9; (Ali, Nice) +1 @9 …
//! ```
//!
//! Differential's upsert breaks ties between changes of one key at one time by value, not by
//! arrival, so a table takes in one change per key and time: what a worker admits at its
//! current time waits in a map by key (the last change wins) and enters when the time
//! closes ([`Tables::advance_to`]). A key's changes all come through worker 0, in the order
//! of the file and of the topic's partition, so the last one admitted is the last one sent.
//!
//! A table is installed on every worker in the order the coordinator gives, like a created
//! view; it answers reads at any time its probe has passed, from the time it was installed.

use std::collections::BTreeMap;

use differential_dataflow::operators::arrange::upsert::arrange_from_upsert;
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use differential_dataflow::trace::TraceReader;
use timely::dataflow::operators::vec::input::Input as _;
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::progress::frontier::AntichainRef;
use timely::worker::Worker;

use super::{FastMap, Time};
use crate::table::{Row, TableDef, Upsert};

/// A table's arrangement: primary key → row.
pub type TableTrace = TraceAgent<ValSpine<Row, Row, Time, isize>>;

/// One table on this worker.
pub struct Table {
    /// Its definition.
    pub def: TableDef,
    input: InputHandleVec<Time, (Row, Option<Row>, Time)>,
    /// Its rows by key (this worker's share).
    pub trace: TableTrace,
    probe: ProbeHandle<Time>,
    dataflow: usize,
    /// The changes admitted at the input's current time, by key: the last one wins.
    admitted: FastMap<Row, Option<Row>>,
    /// The time it was installed at: it answers from then on.
    pub since: Time,
}

/// The tables installed on this worker.
#[derive(Default)]
pub struct Tables {
    installed: BTreeMap<u64, Table>,
}

impl Tables {
    /// Builds `def`'s dataflow (every worker builds the same dataflows in the same order:
    /// installs are orders of the coordinator), its input at `time`.
    pub fn install(&mut self, worker: &mut Worker, def: TableDef, time: Time) {
        let index = worker.next_dataflow_index();
        let probe = ProbeHandle::new();
        let mut input = InputHandleVec::new();
        let name = format!("Table {}", def.name);
        let mut trace = worker.dataflow::<Time, _, _>(|scope| {
            let changes = scope.input_from(&mut input);
            let arranged =
                arrange_from_upsert::<ValBuilder<Row, Row, Time, isize>, ValSpine<Row, Row, Time, isize>, Row, Row>(
                    changes, &name,
                );
            arranged.stream.clone().probe_with(&probe);
            arranged.trace
        });
        input.advance_to(time);
        trace.set_logical_compaction(AntichainRef::new(&[time]));
        trace.set_physical_compaction(AntichainRef::new(&[0]));
        let table = Table { def, input, trace, probe, dataflow: index, admitted: FastMap::default(), since: time };
        self.installed.insert(table.def.id, table);
    }

    /// Admits a change to table `id` at the current time (false: no such table here).
    pub fn admit(&mut self, id: u64, upsert: Upsert) -> bool {
        let Some(table) = self.installed.get_mut(&id) else { return false };
        table.admitted.insert(upsert.key, upsert.row);
        true
    }

    /// Sends what each table admitted at the time that closes, and moves its input to `time`.
    pub fn advance_to(&mut self, time: Time) {
        for table in self.installed.values_mut() {
            if time <= *table.input.time() {
                continue;
            }
            let now = *table.input.time();
            for (key, row) in table.admitted.drain() {
                table.input.send((key, row, now));
            }
            table.input.advance_to(time);
        }
    }

    /// Removes table `id`: its dataflow is dropped and its arrangement freed.
    pub fn remove(&mut self, worker: &mut Worker, id: u64) {
        if let Some(table) = self.installed.remove(&id) {
            let Table { input, trace, dataflow, .. } = table;
            drop((input, trace));
            worker.drop_dataflow(dataflow);
        }
    }

    /// Table `id`, if installed here.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut Table> {
        self.installed.get_mut(&id)
    }

    /// The tables installed here.
    pub fn defs(&self) -> impl Iterator<Item = &TableDef> {
        self.installed.values().map(|t| &t.def)
    }

    /// Whether table `id` is not complete through `time` yet (a read of it waits).
    pub fn behind(&self, time: Time, id: u64) -> bool {
        self.installed.get(&id).is_some_and(|t| t.probe.less_equal(&time))
    }

    /// Lets every table's trace forget the distinctions between times before `time`.
    pub fn compact_to(&mut self, time: Time) {
        for table in self.installed.values_mut() {
            if time > table.since {
                super::views::compact_shared(&mut table.trace, time);
            }
        }
    }

    /// Closes every table's input (the worker stops).
    pub fn close(self) {
        for table in self.installed.into_values() {
            drop(table.input);
        }
    }
}

impl Table {
    /// Whether its trace can be read exactly at `time`.
    pub fn check_readable(&mut self, time: Time) -> Result<(), super::views::Unreadable> {
        super::views::check_trace("table", &mut self.trace, time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::columns::{ColumnType, Owned};

    fn def() -> TableDef {
        TableDef {
            id: 7,
            name: "info".into(),
            columns: vec![("customer".into(), ColumnType::Text), ("city".into(), ColumnType::Text)],
            key: vec![0],
            path: None,
            topic: None,
            generated: None,
            sql: String::new(),
        }
    }

    fn upsert(customer: &str, city: Option<&str>) -> Upsert {
        let key = vec![Owned::Text(customer.into())];
        let row = city.map(|c| vec![Owned::Text(customer.into()), Owned::Text(c.into())]);
        Upsert { key, row }
    }

    #[test]
    fn the_last_change_of_a_key_at_a_time_wins_and_later_ones_replace_it() {
        let rows = timely::execute_directly(|worker| {
            let mut tables = Tables::default();
            tables.install(worker, def(), 1);
            tables.admit(7, upsert("Ali", Some("Lyon")));
            tables.admit(7, upsert("Ali", Some("Albi")));
            tables.admit(7, upsert("Li", Some("Oslo")));
            tables.advance_to(2);
            tables.admit(7, upsert("Li", None));
            tables.admit(7, upsert("Ali", Some("Nice")));
            tables.advance_to(3);
            while tables.behind(2, 7) {
                worker.step();
            }
            let table = tables.get_mut(7).unwrap();
            let mut at = Vec::new();
            for time in [1, 2] {
                table.check_readable(time).unwrap();
                let mut rows = Vec::new();
                crate::serve::cursors::for_each_value_from(&mut table.trace, None, time, |k: &Row, r: Row| {
                    rows.push((k[0].clone(), r[1].clone()));
                    std::ops::ControlFlow::Continue(())
                });
                at.push(rows);
            }
            at
        });
        let text = |t: &str| Owned::Text(t.into());
        assert_eq!(rows[0], vec![(text("Ali"), text("Albi")), (text("Li"), text("Oslo"))], "Albi came last at 1");
        assert_eq!(rows[1], vec![(text("Ali"), text("Nice"))], "Li deleted at 2");
    }
}
