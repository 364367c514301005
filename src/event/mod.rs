//! Events: what one line of a history file or one Kafka message means, and why one is refused.
//!
//! Every input path (JSON lines, JSON arrays, CSV, Kafka) turns its raw record into [`Fields`]
//! and calls [`Fields::validate`], so that there is exactly one set of rules:
//!
//! ```
//! use atelier_lambda::event::{parse_json, Change, Reason};
//! let event = parse_json(br#"{"customer":"Ali","amount":80,"id":"t9"}"#).unwrap();
//! assert_eq!(event.id.as_deref(), Some("t9"));
//! match event.change { Change::Upsert(txn) => assert_eq!(txn.cents, 8000), Change::Delete => unreachable!() }
//!
//! let refused = parse_json(br#"{"customer":"","amount":1}"#).unwrap_err();
//! assert_eq!(refused.reason, Reason::EmptyCustomer);
//! ```
//!
//! The records that flow into the dataflow are [`Update`]s: an event placed at its
//! [`Identity`] and [`Position`] in its source.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::amount::{parse_cents, AmountError};

mod flat;
mod time;

use time::parse_ts;
pub use time::{format_hour, hour_of, parse_hour_bound};

/// The longest customer name accepted, in bytes.
pub const MAX_CUSTOMER_BYTES: usize = 256;

/// One live transaction: the value a view aggregates.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Txn {
    /// Who paid (non-empty, at most [`MAX_CUSTOMER_BYTES`]). Shared, so that the copies a
    /// transaction needs on its way through the dataflow cost no allocation.
    pub customer: Arc<str>,
    /// The amount in exact cents; negative for a refund.
    pub cents: i64,
    /// The event time, as seconds since the Unix epoch, when `ts` was given.
    pub ts: Option<i64>,
    /// The category, when given.
    pub category: Option<Arc<str>>,
}

/// What an event does to its identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Insert, or replace the earlier version of the same identity.
    Upsert(Txn),
    /// Retract the transaction with this identity.
    Delete,
}

/// A validated event, before it is placed in its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The `id` field, when present.
    pub id: Option<IdText>,
    /// Upsert or delete.
    pub change: Change,
}

/// The identity of a transaction: versions with the same identity replace each other.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Identity {
    /// The event's `id`, or else its Kafka message key.
    Id(IdText),
    /// The record's place in its source (`file:line`, `topic/partition/offset`), for events
    /// with neither, so that reading the same source twice never counts a record twice.
    At(IdText),
}

/// The identity text of a Kafka message key: the key itself when it is UTF-8 text (so that a
/// message keyed `t9` and an event with `"id": "t9"` are one transaction); else `\0`, then
/// `0x` and the key's bytes in hex. Any text that starts with `\0` (a key, an `id`) gets one
/// more `\0` (see [`text_identity`]), so that a binary key and a text can never name the same
/// transaction — not even the text `0xff01` and the key bytes `ff 01`.
pub fn key_identity(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) => text_identity(text.into()).into(),
        Err(_) => format!("\0{}{}", "0x", key.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    }
}

/// The identity text of a text (an `id`, a UTF-8 key): itself, with one more `\0` in front
/// when it starts with `\0` (see [`key_identity`]).
pub fn text_identity(text: IdText) -> IdText {
    if text.starts_with('\0') {
        let mut escaped = IdText::from("\0");
        escaped.push_str(&text);
        escaped
    } else {
        text
    }
}

/// An identity's text: up to 24 bytes are kept inline, so the ten million ids of a large
/// history cost no allocation each on their way from the parser to the version table.
pub type IdText = compact_str::CompactString;

impl Identity {
    /// A borrowed view of it, for lookups that need no owned copy.
    pub fn as_ref(&self) -> IdRef<'_> {
        match self {
            Identity::Id(text) => IdRef::Id(text),
            Identity::At(text) => IdRef::At(text),
        }
    }
}

/// A borrowed [`Identity`]: what a table that keeps identities packed hands out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdRef<'a> {
    /// An `id` or message key.
    Id(&'a str),
    /// A record's place in its source.
    At(&'a str),
}

impl IdRef<'_> {
    /// Its text, whichever kind it is.
    pub fn text(&self) -> &str {
        match self {
            IdRef::Id(text) | IdRef::At(text) => text,
        }
    }

    /// An owned copy.
    pub fn to_identity(self) -> Identity {
        match self {
            IdRef::Id(text) => Identity::Id(text.into()),
            IdRef::At(text) => Identity::At(text.into()),
        }
    }
}

/// Where a record stands in the order of its source: later positions replace earlier ones
/// when they reach the dataflow at the same logical time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The source: a history file's index in the input list, or a Kafka partition.
    pub source: u32,
    /// The place in that source: a byte offset in a file, an offset in a partition.
    pub seq: u64,
}

impl Position {
    /// Kafka partitions are numbered from here, so that they never share a source with a file.
    const PARTITION_BASE: u32 = 1 << 31;

    /// A byte offset in the history file at `file_index` of the input list.
    pub fn in_file(file_index: u32, byte_offset: u64) -> Self {
        Position { source: file_index & !Self::PARTITION_BASE, seq: byte_offset }
    }

    /// An offset in a Kafka partition.
    pub fn in_partition(partition: i32, offset: i64) -> Self {
        Position { source: Self::PARTITION_BASE | (partition as u32), seq: offset.max(0) as u64 }
    }
}

/// One record entering the dataflow: the new version of `identity`, or its removal.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Update {
    /// Which transaction this version belongs to.
    pub identity: Identity,
    /// Its place in the source, which orders versions admitted at the same logical time.
    pub position: Position,
    /// The new version, or `None` for a delete.
    pub txn: Option<Txn>,
}

impl Event {
    /// Places the event in its source: its identity is its `id`, else the message `key`,
    /// else `at` (the record's place, e.g. `file:line`).
    pub fn into_update(
        self,
        key: Option<String>,
        at: impl FnOnce() -> String,
        position: Position,
    ) -> Result<Update, Rejection> {
        let identity = match (self.id, key) {
            (Some(id), _) => Identity::Id(text_identity(id)),
            (None, Some(key)) => Identity::Id(key.into()),
            (None, None) if self.change == Change::Delete => {
                return Err(Rejection::new(Reason::DeleteWithoutId, "a delete needs an id (or a message key)"))
            }
            (None, None) => Identity::At(at().into()),
        };
        let txn = match self.change {
            Change::Upsert(txn) => Some(txn),
            Change::Delete => None,
        };
        Ok(Update { identity, position, txn })
    }
}

/// Why a record was refused. The list is fixed: counts and dead letters use these names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The bytes are not UTF-8.
    InvalidUtf8,
    /// The text is not JSON.
    InvalidJson,
    /// The row is not valid CSV.
    InvalidCsv,
    /// Valid JSON, but not an object.
    NotAnObject,
    /// `customer` is absent or null.
    MissingCustomer,
    /// `customer` is an empty string.
    EmptyCustomer,
    /// `customer` is longer than [`MAX_CUSTOMER_BYTES`].
    CustomerTooLong,
    /// `customer` is not a string.
    BadCustomer,
    /// `amount` is absent or null.
    MissingAmount,
    /// `amount` is not a number.
    BadAmount,
    /// `amount` has more than two decimals.
    AmountTooPrecise,
    /// `amount` does not fit in 64-bit cents.
    AmountOverflow,
    /// `ts` is not an RFC 3339 time.
    BadTs,
    /// `op` is neither `upsert` nor `delete`.
    BadOp,
    /// `id` is neither a string nor an integer.
    BadId,
    /// `category` is not a string.
    BadCategory,
    /// A delete that names no transaction (no `id`, no message key).
    DeleteWithoutId,
    /// The record is larger than the configured limit.
    Oversized,
    /// A table's record without its primary key (or with a NULL in it).
    MissingKey,
    /// A table's record with a value that does not fit its column's type.
    BadColumn,
}

impl Reason {
    /// Every reason, in a stable order.
    pub const ALL: [Reason; 20] = [
        Reason::InvalidUtf8,
        Reason::InvalidJson,
        Reason::InvalidCsv,
        Reason::NotAnObject,
        Reason::MissingCustomer,
        Reason::EmptyCustomer,
        Reason::CustomerTooLong,
        Reason::BadCustomer,
        Reason::MissingAmount,
        Reason::BadAmount,
        Reason::AmountTooPrecise,
        Reason::AmountOverflow,
        Reason::BadTs,
        Reason::BadOp,
        Reason::BadId,
        Reason::BadCategory,
        Reason::DeleteWithoutId,
        Reason::Oversized,
        Reason::MissingKey,
        Reason::BadColumn,
    ];

    /// The reason's name in counts, dead letters and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::InvalidJson => "invalid_json",
            Reason::InvalidCsv => "invalid_csv",
            Reason::NotAnObject => "not_an_object",
            Reason::MissingCustomer => "missing_customer",
            Reason::EmptyCustomer => "empty_customer",
            Reason::CustomerTooLong => "customer_too_long",
            Reason::BadCustomer => "bad_customer",
            Reason::MissingAmount => "missing_amount",
            Reason::BadAmount => "bad_amount",
            Reason::AmountTooPrecise => "amount_too_precise",
            Reason::AmountOverflow => "amount_overflow",
            Reason::BadTs => "bad_ts",
            Reason::BadOp => "bad_op",
            Reason::BadId => "bad_id",
            Reason::BadCategory => "bad_category",
            Reason::DeleteWithoutId => "delete_without_id",
            Reason::Oversized => "oversized",
            Reason::MissingKey => "missing_key",
            Reason::BadColumn => "bad_column",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused record's reason and a human explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The fixed reason.
    pub reason: Reason,
    /// What exactly was wrong, for the dead letter and strict mode's error.
    pub detail: String,
}

impl Rejection {
    /// A rejection for `reason` with an explanation.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Rejection { reason, detail: detail.into() }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

/// One field of a raw record, before validation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Field<'a> {
    /// Absent, JSON `null`, or an empty CSV cell.
    #[default]
    Absent,
    /// A string (JSON string, or any CSV cell).
    Text(Cow<'a, str>),
    /// A JSON number literal, or a CSV cell read as one.
    Number(&'a str),
    /// Any other JSON value (boolean, object, array), as its raw text.
    Other(&'a str),
}

impl<'a> Field<'a> {
    /// Classifies a raw JSON value.
    fn from_json(raw: Option<&'a RawValue>) -> Result<Self, Rejection> {
        let Some(raw) = raw else {
            return Ok(Field::Absent);
        };
        let text = raw.get();
        Ok(match text.as_bytes().first() {
            Some(b'"') => match serde_json::from_str::<&str>(text) {
                Ok(s) => Field::Text(Cow::Borrowed(s)),
                // Escapes need an owned copy.
                Err(_) => Field::Text(Cow::Owned(
                    serde_json::from_str::<String>(text)
                        .map_err(|e| Rejection::new(Reason::InvalidJson, e.to_string()))?,
                )),
            },
            Some(b'-' | b'0'..=b'9') => Field::Number(text),
            Some(b'n') => Field::Absent,
            _ => Field::Other(text),
        })
    }

    /// Classifies a CSV cell: empty means absent.
    pub fn from_cell(cell: Option<&'a str>) -> Self {
        match cell {
            None | Some("") => Field::Absent,
            Some(text) => Field::Text(Cow::Borrowed(text)),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Field::Absent => "absent",
            Field::Text(_) => "a string",
            Field::Number(_) => "a number",
            Field::Other(_) => "not a string or number",
        }
    }
}

/// The fields of one raw record that the event format defines; others are ignored.
#[derive(Clone, Debug, Default)]
pub struct Fields<'a> {
    /// `id`
    pub id: Field<'a>,
    /// `customer`
    pub customer: Field<'a>,
    /// `amount`
    pub amount: Field<'a>,
    /// `op`
    pub op: Field<'a>,
    /// `ts`
    pub ts: Field<'a>,
    /// `category`
    pub category: Field<'a>,
}

#[derive(Deserialize)]
struct JsonFields<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    customer: Option<&'a RawValue>,
    #[serde(borrow, default)]
    amount: Option<&'a RawValue>,
    #[serde(borrow, default)]
    op: Option<&'a RawValue>,
    #[serde(borrow, default)]
    ts: Option<&'a RawValue>,
    #[serde(borrow, default)]
    category: Option<&'a RawValue>,
}

/// Parses and validates one JSON object.
pub fn parse_json(bytes: &[u8]) -> Result<Event, Rejection> {
    parse_json_with(bytes, &mut Names::default())
}

/// Parses and validates one JSON object, sharing names through `names`.
pub fn parse_json_with(bytes: &[u8], names: &mut Names) -> Result<Event, Rejection> {
    let text = std::str::from_utf8(bytes).map_err(|e| Rejection::new(Reason::InvalidUtf8, e.to_string()))?;
    Fields::from_json(text)?.validate_with(names)
}

/// Customer and category names already seen by one reader, so that a million transactions
/// of one customer share one allocation of its name instead of making a million.
#[derive(Default)]
pub struct Names {
    known: std::collections::HashSet<Arc<str>, foldhash::fast::RandomState>,
}

impl Names {
    /// Past this many names the table is emptied: it is a cache, not a registry, and a
    /// stream of ever-new names must not grow it forever.
    const LIMIT: usize = 1 << 20;

    /// The shared copy of `name`.
    pub fn share(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.known.get(name) {
            return Arc::clone(known);
        }
        if self.known.len() >= Self::LIMIT {
            self.known.clear();
        }
        let shared: Arc<str> = Arc::from(name);
        self.known.insert(Arc::clone(&shared));
        shared
    }
}

impl<'a> Fields<'a> {
    /// Reads the event fields of one JSON object.
    pub fn from_json(text: &'a str) -> Result<Self, Rejection> {
        // Most events are flat objects without escapes: read those in one pass.
        if let Some(fields) = flat::read(text) {
            return Ok(fields);
        }
        // Serde would also read a struct from a JSON array (`[id, customer, ...]`): only an
        // object is an event, and valid JSON that is not one gets its own, clearer reason.
        if text.trim_start().as_bytes().first() != Some(&b'{') {
            return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => Rejection::new(Reason::NotAnObject, "expected a JSON object"),
                Err(e) => Rejection::new(Reason::InvalidJson, e.to_string()),
            });
        }
        let raw: JsonFields<'a> =
            serde_json::from_str(text).map_err(|e| Rejection::new(Reason::InvalidJson, e.to_string()))?;
        Ok(Fields {
            id: Field::from_json(raw.id)?,
            customer: Field::from_json(raw.customer)?,
            amount: Field::from_json(raw.amount)?,
            op: Field::from_json(raw.op)?,
            ts: Field::from_json(raw.ts)?,
            category: Field::from_json(raw.category)?,
        })
    }

    /// Applies the event rules of `SPEC.md`: the one place where they live.
    pub fn validate(self) -> Result<Event, Rejection> {
        self.validate_with(&mut Names::default())
    }

    /// As [`Fields::validate`], sharing names through `names`.
    pub fn validate_with(self, names: &mut Names) -> Result<Event, Rejection> {
        let id = match self.id {
            Field::Absent => None,
            Field::Text(s) => Some(IdText::from(&*s)),
            Field::Number(n) if n.bytes().all(|b| b.is_ascii_digit() || b == b'-') => Some(IdText::from(n)),
            other => return Err(Rejection::new(Reason::BadId, format!("id is {}", other.describe()))),
        };
        let is_delete = match &self.op {
            Field::Absent => false,
            Field::Text(op) if op == "upsert" => false,
            Field::Text(op) if op == "delete" => true,
            Field::Text(op) => {
                return Err(Rejection::new(Reason::BadOp, format!("op must be \"upsert\" or \"delete\", not {op:?}")))
            }
            other => return Err(Rejection::new(Reason::BadOp, format!("op is {}", other.describe()))),
        };
        if is_delete {
            // A delete needs nothing but its identity, which the source checks.
            return Ok(Event { id, change: Change::Delete });
        }
        let customer = match self.customer {
            Field::Absent => return Err(Rejection::new(Reason::MissingCustomer, "customer is missing or null")),
            Field::Text(c) if c.is_empty() => return Err(Rejection::new(Reason::EmptyCustomer, "customer is empty")),
            Field::Text(c) if c.len() > MAX_CUSTOMER_BYTES => {
                return Err(Rejection::new(
                    Reason::CustomerTooLong,
                    format!("customer is {} bytes, at most {MAX_CUSTOMER_BYTES}", c.len()),
                ))
            }
            Field::Text(c) => names.share(&c),
            other => return Err(Rejection::new(Reason::BadCustomer, format!("customer is {}", other.describe()))),
        };
        let cents = match self.amount {
            Field::Absent => return Err(Rejection::new(Reason::MissingAmount, "amount is missing or null")),
            // CSV amount cells arrive as `Number` (see `from_csv`); JSON strings are refused.
            Field::Number(n) => parse_amount(n)?,
            other => {
                return Err(Rejection::new(
                    Reason::BadAmount,
                    format!("amount is {}, not a JSON number", other.describe()),
                ))
            }
        };
        let ts = match self.ts {
            Field::Absent => None,
            Field::Text(ts) => Some(parse_ts(&ts)?),
            other => return Err(Rejection::new(Reason::BadTs, format!("ts is {}", other.describe()))),
        };
        let category = match self.category {
            Field::Absent => None,
            Field::Text(c) => Some(names.share(&c)),
            other => return Err(Rejection::new(Reason::BadCategory, format!("category is {}", other.describe()))),
        };
        Ok(Event { id, change: Change::Upsert(Txn { customer, cents, ts, category }) })
    }

    /// Reads the event fields of one CSV row, given the header's column indices.
    pub fn from_csv(row: &'a csv::StringRecord, columns: &CsvColumns) -> Self {
        let cell = |i: Option<usize>| Field::from_cell(i.and_then(|i| row.get(i)));
        let amount = match columns.amount.and_then(|i| row.get(i)) {
            None | Some("") => Field::Absent,
            Some(text) => Field::Number(text),
        };
        Fields {
            id: cell(columns.id),
            customer: cell(columns.customer),
            amount,
            op: cell(columns.op),
            ts: cell(columns.ts),
            category: cell(columns.category),
        }
    }
}

/// Where each event column stands in a CSV header.
#[derive(Clone, Debug, Default)]
pub struct CsvColumns {
    id: Option<usize>,
    customer: Option<usize>,
    amount: Option<usize>,
    op: Option<usize>,
    ts: Option<usize>,
    category: Option<usize>,
}

impl CsvColumns {
    /// Finds the event columns by name; other columns are ignored.
    pub fn from_header(header: &csv::StringRecord) -> Self {
        let find = |name: &str| header.iter().position(|h| h.trim() == name);
        CsvColumns {
            id: find("id"),
            customer: find("customer"),
            amount: find("amount"),
            op: find("op"),
            ts: find("ts"),
            category: find("category"),
        }
    }
}

fn parse_amount(text: &str) -> Result<i64, Rejection> {
    parse_cents(text).map_err(|e| {
        let reason = match e {
            AmountError::NotANumber => Reason::BadAmount,
            AmountError::TooPrecise => Reason::AmountTooPrecise,
            AmountError::Overflow => Reason::AmountOverflow,
        };
        Rejection::new(reason, format!("{e}: {text}"))
    })
}
