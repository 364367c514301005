//! Tables: the inputs a user declares in SQL — keyed rows loaded from a file, then kept up to
//! date from a Kafka topic, each row replaced or removed by its primary key.
//!
//! ```sql
//! CREATE TABLE customer_info (customer text, city text, segment text, PRIMARY KEY (customer))
//! WITH (connector = 'kafka', topic = 'customer-info', path = 'datasets/customers.csv')
//! ```
//!
//! declares a table whose initial collection is the file (CSV, JSON lines or a JSON array)
//! and whose later changes are the topic's messages — the convention of RisingWave's and
//! Materialize's `CREATE TABLE … WITH (connector = …)`:
//!
//! | record | effect |
//! |---|---|
//! | `{"customer": "Ali", "city": "Lyon", "segment": "retail"}` | `Ali`'s row is now this one |
//! | `{"customer": "Ali", "op": "delete"}` | `Ali`'s row is removed |
//! | a tombstone (null body) with key `Ali` (or `{"customer":"Ali"}`) | `Ali`'s row is removed |
//! | `{"city": "Lyon"}` (no key), `{"customer": "Ali", "n": "x"}` with `n bigint` | a dead letter, naming the table |
//!
//! A table is a dataflow on every worker ([`crate::dataflow::table`]): the rows, arranged by
//! key, spread over the workers by the key's hash, read by SQL at the statement's one time
//! like every view, and readable by views. One worker (global worker 0) reads the file and the
//! topic ([`crate::run::feeds`]); the records it takes in at one logical time are folded per key (the last
//! one wins) before they enter, so that the dataflow sees one change per key and time.
//!
//! Column types are those of every relation ([`ColumnType`]): `text` (`varchar`, `char`),
//! `bigint` (`int`, `integer`, `smallint`), `numeric` (`decimal`; at most two decimals, kept
//! exact) and `timestamp` (`timestamptz`; RFC 3339 text or seconds since the epoch).

pub mod decode;
pub mod file;
pub mod nexmark;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::compute::columns::{ColumnType, Owned};

/// The largest file a table loads (read whole into memory on one worker): larger data is
/// streamed through the table's topic.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// A table's row: one value per column, in the table's column order.
pub type Row = Vec<Owned>;

/// A table as declared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDef {
    /// Unique in the pipeline's life (shared with the created views' ids).
    pub id: u64,
    /// Its name (lowercase).
    pub name: String,
    /// Its columns, in order.
    pub columns: Vec<(String, ColumnType)>,
    /// The primary key's columns, by index into `columns`.
    pub key: Vec<usize>,
    /// The file loaded as its initial collection, if any.
    pub path: Option<String>,
    /// The topic its later changes come from, if any.
    pub topic: Option<String>,
    /// Fed by the Nexmark generator in process instead (`connector = 'nexmark'`).
    #[serde(default)]
    pub generated: Option<Generated>,
    /// The statement that created it.
    pub sql: String,
}

impl TableDef {
    /// The key of `row`.
    pub fn key_of(&self, row: &[Owned]) -> Row {
        self.key.iter().map(|k| row[*k].clone()).collect()
    }

    /// The names of the key's columns.
    pub fn key_names(&self) -> Vec<&str> {
        self.key.iter().map(|k| self.columns[*k].0.as_str()).collect()
    }
}

/// One change to a table: the row of a key is now `row`, or (none) the key has no row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upsert {
    /// The primary key's values.
    pub key: Row,
    /// The whole new row, or `None` for a delete.
    pub row: Option<Row>,
}

/// What a table fed by the Nexmark generator takes ([`nexmark`]): one of its streams, of a
/// run of `events` events (the same seed, the same events).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generated {
    /// `person`, `auction` or `bid`.
    pub stream: crate::nexmark::Stream,
    /// Events of the three streams, of which this table takes its own.
    pub events: u64,
    /// The fraction of bids re-sent with a new price.
    pub corrections: f64,
    /// The fraction of bids deleted.
    pub deletes: f64,
    /// The generator's seed.
    pub seed: u64,
}

// Fractions are checked to be numbers from 0 to 1 when the table is created: never NaN.
impl Eq for Generated {}

/// The column type SQL's type name means, if a table may have it.
pub fn column_type(sql_type: &str) -> Option<ColumnType> {
    let lower = sql_type.to_lowercase();
    let base = lower.split('(').next().unwrap_or_default().trim();
    match base {
        "text" | "varchar" | "character varying" | "char" | "character" | "string" => Some(ColumnType::Text),
        "bigint" | "int" | "integer" | "smallint" | "int8" | "int4" | "int2" => Some(ColumnType::Int),
        "numeric" | "decimal" => Some(ColumnType::Money),
        "timestamp" | "timestamptz" | "timestamp with time zone" | "timestamp without time zone" => {
            Some(ColumnType::Time)
        }
        _ => None,
    }
}

/// What a table's feed has done, for `/v1/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableProgress {
    /// The table.
    pub name: String,
    /// Records taken in (file and topic).
    pub records: u64,
    /// Records refused (dead letters).
    pub refused: u64,
    /// Why its topic is not being read, while it is not: it does not exist yet, the brokers
    /// cannot be reached.
    pub waiting: Option<String>,
    /// The next offset of each partition of its topic.
    pub offsets: BTreeMap<i32, i64>,
    /// Its source has nothing more to send — a generator has sent every event (never so for a
    /// topic) — and the logical time its last change entered at: a read at that time or later
    /// sees the table whole.
    #[serde(default)]
    pub ended: Option<u64>,
}
