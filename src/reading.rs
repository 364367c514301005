//! What a read returns: every view (or the part a [`ReadScope`] asks for) as of one logical
//! time, with the Kafka offsets it reflects — plain data, merged from the workers' shares.
//!
//! A leaf: the dataflow's readers ([`crate::serve::query`]) build it, and the serving layer,
//! the oracle, the outputs and `verify` use it, without depending on one another.
//!
//! ```text
//! worker 0: customers {Ali, Mounir}   top [(-400 Ali), (-350 Mounir)]
//! worker 1: customers {Sara}          top [(-180 Sara)]
//! merged:   customers {Ali, Mounir, Sara} top [Ali 400, Mounir 350, Sara 180]
//! ```

use std::sync::Arc;

use differential_dataflow::difference::Semigroup;
use serde::{Deserialize, Serialize};

use crate::dataflow::rows::{customer_owner, CustomerRow, Dimension};
use crate::dataflow::stats::Stats;
use crate::dataflow::views::Unreadable;
use crate::dataflow::Time;
use crate::event::Reason;

/// Every view as of one logical time (one worker's share, or all of them merged).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reading {
    /// The logical time read.
    pub time: Time,
    /// customer → row, in name order once merged.
    pub customers: Vec<(String, CustomerRow)>,
    /// The largest totals, ties by name: (customer, total in cents).
    pub top: Vec<(String, i128)>,
    /// category → sums, in name order (no category first).
    pub categories: Vec<(Option<String>, Stats)>,
    /// UTC hour → sums, in time order.
    pub hourly: Vec<(i64, Stats)>,
    /// All live transactions.
    pub overall: Stats,
    /// How many customers have a live transaction.
    pub customer_count: i64,
    /// Refused records by reason.
    pub dead_letters: Vec<(Reason, i64)>,
    /// Kafka partition → next offset to read: the stream input this reading reflects.
    pub offsets: Vec<(i32, i64)>,
    /// Each worker's process and partitions, with the partitions' high watermarks as last
    /// seen (in `Everything` and `Totals` reads; not part of the views, not at `time`).
    pub workers: Vec<WorkerProgress>,
    /// The created views' rows (read through SQL at the same time: see
    /// [`crate::sql::Engine::read_all`]).
    pub created: Vec<CreatedRows>,
}

/// A view created at run time, as a reading of every view shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedRows {
    /// Its name.
    pub name: String,
    /// The statement that created it.
    pub definition: String,
    /// Its columns' names.
    pub columns: Vec<String>,
    /// Its rows, each value as JSON (exact numbers; timestamps as RFC 3339 text).
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// A worker, its process, and the Kafka partitions it reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerProgress {
    /// Its index among all workers of all processes.
    pub worker: usize,
    /// Its process's index.
    pub process: usize,
    /// Partition → the offset after the newest message seen (none before the first fetch).
    pub partitions: Vec<(i32, Option<i64>)>,
    /// History records and Kafka messages it has read.
    pub records: (u64, u64),
    /// Partition → messages removed from the topic before they could be read.
    pub skipped: Vec<(i32, i64)>,
    /// The Kafka error its reader last met, until reading resumed.
    pub kafka_error: Option<String>,
    /// The tables it feeds (worker 0: every table's file and topic).
    #[serde(default)]
    pub tables: Vec<crate::table::TableProgress>,
    /// View id → the updates its arrangements hold on this worker (views created at run time).
    #[serde(default)]
    pub arranged: Vec<(u64, i64)>,
}

impl Reading {
    /// Messages removed from the topic before they could be read, by partition.
    pub fn skipped(&self) -> std::collections::BTreeMap<i32, i64> {
        self.workers.iter().flat_map(|w| w.skipped.iter().copied()).collect()
    }

    /// The high watermark of every partition whose reader has seen one.
    pub fn high_watermarks(&self) -> std::collections::BTreeMap<i32, i64> {
        let partitions = self.workers.iter().flat_map(|w| &w.partitions);
        partitions.filter_map(|(p, high)| high.map(|h| (*p, h))).collect()
    }
}

/// What a read covers. Every read also carries the offsets, so that it can say what it
/// reflects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadScope {
    /// Every built-in view, with the `top` view cut to this many customers.
    Everything {
        /// How many customers the `top` view shows.
        top_k: usize,
    },
    /// Only the time and the offsets (cheap).
    Offsets,
    /// One customer's row: a seek in the worker that holds it.
    Customer(String),
    /// Customers in name order after `after`, at most `limit` of them.
    Customers {
        /// Start after this name (exclusive).
        after: Option<String>,
        /// How many at most.
        limit: usize,
    },
    /// The `k` customers with the largest totals.
    Top {
        /// How many.
        k: usize,
    },
    /// The `overall`, `categories` and `hourly` views, the customer count and dead letters.
    Totals,
}

impl ReadScope {
    /// What worker `worker` of `workers` reads for this scope. A customer's row lives on one
    /// worker ([`customer_owner`]); the others give only their offsets, which every answer
    /// needs for its `as_of`.
    pub fn share(&self, worker: usize, workers: usize) -> ReadScope {
        match self {
            ReadScope::Customer(name) if customer_owner(name, workers) != worker => ReadScope::Offsets,
            _ => self.clone(),
        }
    }
}

impl Reading {
    /// Merges the workers' shares of a scoped read.
    pub fn merge_scope(parts: impl IntoIterator<Item = Reading>, scope: &ReadScope) -> Reading {
        let top_k = match scope {
            ReadScope::Everything { top_k, .. } => *top_k,
            ReadScope::Top { k } => *k,
            _ => 0,
        };
        let mut merged = Reading::merge(parts, top_k);
        if let ReadScope::Customers { limit, .. } = scope {
            merged.customers.truncate(*limit);
        }
        merged
    }

    /// Splits the totals by dimension into the `overall`, `categories` and `hourly` views.
    pub fn totals(totals: Vec<(Dimension, Stats)>) -> Reading {
        let mut reading = Reading::default();
        for (dimension, sum) in totals {
            match dimension {
                Dimension::All => reading.overall = sum,
                Dimension::Category(category) => reading.categories.push((category.as_deref().map(String::from), sum)),
                Dimension::Hour(hour) => reading.hourly.push((hour, sum)),
            }
        }
        reading
    }

    /// The totals of the `overall`, `categories` and `hourly` views, as the `totals`
    /// arrangement keys them: what [`Reading::totals`] splits.
    pub fn totals_by_dimension(&self) -> Vec<(Dimension, Stats)> {
        use differential_dataflow::difference::IsZero;
        let categories = self.categories.iter().map(|(c, s)| (Dimension::Category(c.as_deref().map(Arc::from)), *s));
        let hours = self.hourly.iter().map(|(h, s)| (Dimension::Hour(*h), *s));
        let all = std::iter::once((Dimension::All, self.overall));
        all.chain(categories).chain(hours).filter(|(_, s)| !s.is_zero()).collect()
    }

    /// Merges the shares of all workers into one reading.
    pub fn merge(parts: impl IntoIterator<Item = Reading>, top_k: usize) -> Reading {
        let mut all = Reading::default();
        for part in parts {
            all.time = part.time;
            all.customers.extend(part.customers);
            all.top.extend(part.top);
            all.categories.extend(part.categories);
            all.hourly.extend(part.hourly);
            all.overall.plus_equals(&part.overall);
            all.customer_count += part.customer_count;
            all.dead_letters.extend(part.dead_letters);
            all.offsets.extend(part.offsets);
            all.workers.extend(part.workers);
        }
        all.workers.sort_by_key(|w| w.worker);
        all.customers.sort();
        all.top.sort_by(|(a, x), (b, y)| y.cmp(x).then_with(|| a.cmp(b)));
        all.top.truncate(top_k);
        all.categories.sort();
        all.hourly.sort();
        all.dead_letters.sort();
        all.offsets.sort();
        all
    }

    /// History records and Kafka messages read, over every worker.
    pub fn records_read(&self) -> (u64, u64) {
        self.workers.iter().fold((0, 0), |(h, k), w| (h + w.records.0, k + w.records.1))
    }

    /// The `hourly` rows from hour `from` to hour `to`, both included when given.
    pub fn hourly_between(&self, from: Option<i64>, to: Option<i64>) -> impl Iterator<Item = &(i64, Stats)> + '_ {
        self.hourly.iter().filter(move |(h, _)| from.is_none_or(|f| *h >= f) && to.is_none_or(|t| *h <= t))
    }
}

/// Why a read has no answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ReadError {
    /// The workers did not answer within the time given.
    #[error("the pipeline did not answer in time")]
    Timeout,
    /// The pipeline has stopped (or is stopping) and answers no more reads.
    #[error("the pipeline has stopped")]
    Stopped,
    /// A view had already forgotten the distinctions between times before the read's time.
    #[error("the {view} view cannot be read at time {time}: it is compacted up to {since}")]
    Compacted {
        /// The view.
        view: String,
        /// The time asked for.
        time: Time,
        /// Its compaction frontier.
        since: Time,
    },
    /// A worker gave up a query's scan after its time budget, so that a slow query does not
    /// hold the worker (its ingest, the other readers, compaction) for longer.
    #[error("canceling statement: it took longer than {budget_ms} ms")]
    TooSlow {
        /// The budget, in milliseconds.
        budget_ms: u64,
    },
    /// A query would return more rows than allowed.
    #[error("the query would return more than {limit} rows; narrow it with WHERE or LIMIT")]
    TooManyRows {
        /// The most rows a query may return.
        limit: usize,
    },
    /// A relation whose changes between two times cannot be read (only its rows at one).
    #[error("the {relation} relation cannot be read by its changes")]
    NoChanges {
        /// The relation.
        relation: String,
    },
    /// A view was not complete through the read's time.
    #[error("the {view} view is not complete at time {time} (only below {upper})")]
    Incomplete {
        /// The view.
        view: String,
        /// The time asked for.
        time: Time,
        /// Its upper frontier.
        upper: Time,
    },
}

impl ReadError {
    /// The error for a view found unreadable at `time`.
    pub fn unreadable(why: Unreadable, time: Time) -> Self {
        match why {
            Unreadable::Compacted { view, since } => ReadError::Compacted { view: view.into(), time, since },
            Unreadable::Incomplete { view, upper } => ReadError::Incomplete { view: view.into(), time, upper },
        }
    }
}
