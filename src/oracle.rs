//! The oracle: every view recomputed from scratch, plainly, for `verify` and the tests.
//!
//! This is deliberately a second, independent and simple implementation: a map of the latest
//! version per identity, then sums over plain hash maps. It shares only the event rules
//! ([`crate::event`]) with the dataflow, never its operators, so that comparing the two
//! checks the dataflow's incremental maintenance.

use std::collections::{BTreeMap, HashMap};

use crate::dataflow::rows::CustomerRow;
use crate::dataflow::stats::Stats;
use crate::dataflow::Time;
use crate::event::{Identity, Position, Reason, Txn, Update};
use crate::filter::Filter;
use crate::reading::Reading;

/// What the oracle keys versions by. An `id` (or message key) names a transaction; a record
/// without one is its own transaction, keyed here by its position in its source — not by
/// the `At` label the sources give it — so that a labelling rule that names two records
/// alike (and merges them) shows up as a difference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Id(Box<str>),
    Place(Position),
}

impl Key {
    fn of(update: &Update) -> Key {
        match &update.identity {
            Identity::Id(id) => Key::Id(id.clone()),
            Identity::At(_) => Key::Place(update.position),
        }
    }
}

/// Records admitted in order: each batch at its logical time.
#[derive(Default)]
pub struct Oracle {
    latest: HashMap<Key, (Time, Position, Option<Txn>, Identity)>,
    refused: BTreeMap<Reason, i64>,
    offsets: BTreeMap<i32, i64>,
}

impl Oracle {
    /// An oracle that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits the updates of one logical time (in any order) and the reasons refused then.
    pub fn admit(
        &mut self,
        time: Time,
        updates: impl IntoIterator<Item = Update>,
        refused: impl IntoIterator<Item = Reason>,
    ) {
        for update in updates {
            let key = Key::of(&update);
            let replace = match self.latest.get(&key) {
                None => true,
                // A redelivery from the same source changes nothing.
                Some((_, pos, _, _)) if pos.source == update.position.source && pos.seq >= update.position.seq => false,
                Some((t, pos, _, _)) => *t < time || pos < &update.position,
            };
            if replace {
                self.latest.insert(key, (time, update.position, update.txn, update.identity));
            }
        }
        for reason in refused {
            *self.refused.entry(reason).or_default() += 1;
        }
    }

    /// Records that `partition` has been read up to (not including) `next`.
    pub fn set_offset(&mut self, partition: i32, next: i64) {
        self.offsets.insert(partition, next);
    }

    /// The live transactions, each with its identity's text (its `id`, or its place).
    pub fn live(&self) -> Vec<(String, Txn)> {
        self.latest
            .values()
            .filter_map(|(_, _, txn, identity)| {
                let id = match identity {
                    Identity::Id(id) | Identity::At(id) => id.to_string(),
                };
                txn.clone().map(|t| (id, t))
            })
            .collect()
    }

    /// Every view, computed from the latest versions.
    pub fn reading(&self, time: Time, event_filter: Option<&Filter>, top_k: usize) -> Reading {
        let live = self
            .latest
            .values()
            .filter_map(|(_, _, txn, _)| txn.as_ref())
            .filter(|t| event_filter.is_none_or(|f| f.accepts_txn(t)));
        let mut customers: HashMap<&str, CustomerRow> = HashMap::new();
        let mut categories: HashMap<Option<String>, Stats> = HashMap::new();
        let mut hourly: HashMap<i64, Stats> = HashMap::new();
        let mut overall = Stats::default();
        for t in live {
            let row =
                customers.entry(&t.customer).or_insert(CustomerRow { total: 0, count: 0, min: t.cents, max: t.cents });
            row.total += i128::from(t.cents);
            row.count += 1;
            row.min = row.min.min(t.cents);
            row.max = row.max.max(t.cents);
            add(categories.entry(t.category.as_deref().map(String::from)).or_default(), t.cents);
            if let Some(hour) = t.ts.map(crate::event::hour_of) {
                add(hourly.entry(hour).or_default(), t.cents);
            }
            add(&mut overall, t.cents);
        }
        let mut customers: Vec<(String, CustomerRow)> = customers.into_iter().map(|(c, r)| (c.to_owned(), r)).collect();
        customers.sort();
        let mut top: Vec<(String, i128)> = customers.iter().map(|(c, r)| (c.clone(), r.total)).collect();
        top.sort_by(|(a, x), (b, y)| y.cmp(x).then_with(|| a.cmp(b)));
        top.truncate(top_k);
        let nonzero = |s: &Stats| s.count != 0 || s.cents != 0;
        let mut categories: Vec<_> = categories.into_iter().filter(|(_, s)| nonzero(s)).collect();
        categories.sort();
        let mut hourly: Vec<_> = hourly.into_iter().filter(|(_, s)| nonzero(s)).collect();
        hourly.sort();
        Reading {
            time,
            customer_count: customers.len() as i64,
            customers,
            top,
            categories,
            hourly,
            overall,
            dead_letters: self.refused.iter().map(|(r, n)| (*r, *n)).collect(),
            offsets: self.offsets.iter().map(|(p, o)| (*p, *o)).collect(),
            workers: Vec::new(),
            rows: Vec::new(),
        }
    }
}

fn add(stats: &mut Stats, cents: i64) {
    stats.count += 1;
    stats.cents += i128::from(cents);
}

/// The differences between two readings, one line each; empty when they agree.
pub fn differences(live: &Reading, expected: &Reading) -> Vec<String> {
    let mut out = Vec::new();
    diff_keyed("customer", &live.customers, &expected.customers, &mut out);
    if live.top != expected.top {
        out.push(format!("top: live {:?}, recomputed {:?}", live.top, expected.top));
    }
    diff_keyed("category", &live.categories, &expected.categories, &mut out);
    diff_keyed("hour", &live.hourly, &expected.hourly, &mut out);
    if live.overall != expected.overall {
        out.push(format!("overall: live {:?}, recomputed {:?}", live.overall, expected.overall));
    }
    if live.customer_count != expected.customer_count {
        out.push(format!("customers: live {}, recomputed {}", live.customer_count, expected.customer_count));
    }
    diff_keyed("dead letters", &live.dead_letters, &expected.dead_letters, &mut out);
    diff_keyed("offsets of partition", &live.offsets, &expected.offsets, &mut out);
    out
}

fn diff_keyed<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    what: &str,
    live: &[(K, V)],
    expected: &[(K, V)],
    out: &mut Vec<String>,
) {
    let live: BTreeMap<&K, &V> = live.iter().map(|(k, v)| (k, v)).collect();
    let expected: BTreeMap<&K, &V> = expected.iter().map(|(k, v)| (k, v)).collect();
    for (k, v) in &live {
        match expected.get(k) {
            None => out.push(format!("{what} {k:?}: live {v:?}, recomputed nothing")),
            Some(e) if e != v => out.push(format!("{what} {k:?}: live {v:?}, recomputed {e:?}")),
            _ => {}
        }
    }
    for (k, e) in &expected {
        if !live.contains_key(k) {
            out.push(format!("{what} {k:?}: live nothing, recomputed {e:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(label: &str, seq: u64, customer: &str, cents: i64) -> Update {
        Update {
            identity: Identity::At(label.into()),
            position: Position::in_file(0, seq),
            txn: Some(Txn { customer: customer.into(), cents, ts: None, category: None }),
        }
    }

    #[test]
    fn records_without_an_id_are_told_apart_by_their_position_not_their_label() {
        // Two records a source labelled alike (a JSON array on one line once did): the oracle
        // keeps both, so a dataflow that merged them would differ from it.
        let mut oracle = Oracle::new();
        oracle.admit(0, [at("p.json:1", 1, "a", 100), at("p.json:1", 30, "b", 200)], []);
        let reading = oracle.reading(0, None, 10);
        assert_eq!(reading.overall, Stats { count: 2, cents: 300 });
        // The same record read again (same place) changes nothing.
        oracle.admit(1, [at("p.json:1", 1, "a", 100)], []);
        assert_eq!(oracle.reading(1, None, 10).overall, Stats { count: 2, cents: 300 });
    }
}
