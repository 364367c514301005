//! The column types of the relations, and the Arrow arrays a worker builds a slice of rows
//! into: every relation's schema is made of these four types, so that one builder serves all.
//!
//! | type | Arrow | Postgres | example |
//! |---|---|---|---|
//! | [`ColumnType::Text`] | `Utf8` | `text` | `Ali` |
//! | [`ColumnType::Money`] | `Decimal128(38, 2)` (the cents themselves) | `numeric` | `400.00` |
//! | [`ColumnType::Int`] | `Int64` | `int8` | `3` |
//! | [`ColumnType::Time`] | `Timestamp(µs, "+00:00")` | `timestamptz` | `2025-01-01 13:00:00+00` |
//!
//! Money stays exact from the event to the client: cents in, the same `i128` in the decimal
//! array, Postgres `numeric` out — never a float.
//!
//! ```
//! use atelier_lambda::compute::columns::{Cell, ColumnType, Columns};
//! let mut columns = Columns::new(&[ColumnType::Text, ColumnType::Money]);
//! columns.push(&[Cell::Text("Ali"), Cell::Cents(40_000)]);
//! let batch = columns.finish(atelier_lambda::compute::columns::schema(&[("customer", ColumnType::Text), ("total", ColumnType::Money)]));
//! assert_eq!(batch.num_rows(), 1);
//! ```

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, Decimal128Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use serde::{Deserialize, Serialize};

/// The precision of money: Postgres' and Arrow's widest decimal.
pub const MONEY_PRECISION: u8 = 38;
/// Two decimals: cents.
pub const MONEY_SCALE: i8 = 2;
/// The time zone of every timestamp: UTC, as Postgres' `timestamptz` shows it.
pub const TIME_ZONE: &str = "+00:00";

/// A column's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ColumnType {
    /// Text.
    Text,
    /// An exact amount in cents.
    Money,
    /// A 64-bit integer.
    Int,
    /// An instant, in seconds since the epoch (shown in UTC).
    Time,
}

impl ColumnType {
    /// Its Arrow type.
    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::Text => DataType::Utf8,
            ColumnType::Money => DataType::Decimal128(MONEY_PRECISION, MONEY_SCALE),
            ColumnType::Int => DataType::Int64,
            ColumnType::Time => DataType::Timestamp(TimeUnit::Microsecond, Some(TIME_ZONE.into())),
        }
    }
}

/// The Arrow schema of named columns (every column may be NULL).
pub fn schema(columns: &[(&str, ColumnType)]) -> SchemaRef {
    Arc::new(Schema::new(columns.iter().map(|(n, t)| Field::new(*n, t.arrow(), true)).collect::<Vec<_>>()))
}

/// One value of a row, borrowed from where the worker holds it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cell<'a> {
    /// NULL.
    Null,
    /// Text.
    Text(&'a str),
    /// Cents.
    Cents(i128),
    /// An integer.
    Int(i64),
    /// Seconds since the epoch.
    Seconds(i64),
}

/// A value of a row, owned (for the few rows of the small relations, read whole at once).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Owned {
    /// NULL.
    Null,
    /// Text.
    Text(String),
    /// Cents.
    Cents(i128),
    /// An integer.
    Int(i64),
    /// Seconds since the epoch.
    Seconds(i64),
}

/// As an SQL literal: `NULL`, `'Ali'`, `12.50`, `7`, `TIMESTAMP '2025-01-01 09:00:00+00'`.
impl std::fmt::Display for Owned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owned::Null => write!(f, "NULL"),
            Owned::Text(t) => write!(f, "'{}'", t.replace('\'', "''")),
            Owned::Cents(c) => write!(f, "{}", crate::amount::format_cents(*c)),
            Owned::Int(n) => write!(f, "{n}"),
            Owned::Seconds(s) => match chrono::DateTime::from_timestamp(*s, 0) {
                Some(t) => write!(f, "TIMESTAMP '{}'", t.format("%Y-%m-%d %H:%M:%S+00")),
                None => write!(f, "TO_TIMESTAMP({s})"),
            },
        }
    }
}

impl Owned {
    /// Borrowed as a cell.
    pub fn cell(&self) -> Cell<'_> {
        match self {
            Owned::Null => Cell::Null,
            Owned::Text(t) => Cell::Text(t),
            Owned::Cents(c) => Cell::Cents(*c),
            Owned::Int(n) => Cell::Int(*n),
            Owned::Seconds(s) => Cell::Seconds(*s),
        }
    }
}

/// Builders of one column each, appended a row at a time.
pub struct Columns {
    builders: Vec<Builder>,
    rows: usize,
}

enum Builder {
    Text(StringBuilder),
    Money(Decimal128Builder),
    Int(Int64Builder),
    Time(TimestampMicrosecondBuilder),
}

impl Columns {
    /// Empty builders for columns of these types.
    pub fn new(types: &[ColumnType]) -> Columns {
        let builders = types
            .iter()
            .map(|t| match t {
                ColumnType::Text => Builder::Text(StringBuilder::new()),
                ColumnType::Money => Builder::Money(Decimal128Builder::new().with_data_type(ColumnType::Money.arrow())),
                ColumnType::Int => Builder::Int(Int64Builder::new()),
                ColumnType::Time => Builder::Time(TimestampMicrosecondBuilder::new().with_timezone(TIME_ZONE)),
            })
            .collect();
        Columns { builders, rows: 0 }
    }

    /// Appends one row: one cell per column, in order. A cell of another type than its
    /// column's is a bug of the relation's definition, and is written NULL.
    pub fn push(&mut self, cells: &[Cell<'_>]) {
        self.push_some(cells, 0..cells.len());
    }

    /// Appends the row made of the cells of `row` at `indices`, in their order.
    pub fn push_some(&mut self, row: &[Cell<'_>], indices: impl IntoIterator<Item = usize>) {
        for (builder, index) in self.builders.iter_mut().zip(indices) {
            match (builder, row[index]) {
                (Builder::Text(b), Cell::Text(t)) => b.append_value(t),
                (Builder::Money(b), Cell::Cents(c)) => b.append_value(c),
                (Builder::Int(b), Cell::Int(n)) => b.append_value(n),
                (Builder::Time(b), Cell::Seconds(s)) => b.append_value(s.saturating_mul(1_000_000)),
                (Builder::Text(b), _) => b.append_null(),
                (Builder::Money(b), _) => b.append_null(),
                (Builder::Int(b), _) => b.append_null(),
                (Builder::Time(b), _) => b.append_null(),
            }
        }
        self.rows += 1;
    }

    /// Rows appended since the last [`Columns::finish`].
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The bytes the arrays take so far (about).
    pub fn bytes(&self) -> usize {
        self.builders
            .iter()
            .map(|b| match b {
                Builder::Text(b) => b.values_slice().len() + b.len() * 4,
                Builder::Money(b) => b.len() * 16,
                Builder::Int(b) => b.len() * 8,
                Builder::Time(b) => b.len() * 8,
            })
            .sum()
    }

    /// The rows as a batch of `schema` (whose fields are these columns), and empty builders
    /// for the next.
    pub fn finish(&mut self, schema: SchemaRef) -> RecordBatch {
        let arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|b| match b {
                Builder::Text(b) => Arc::new(b.finish()) as ArrayRef,
                Builder::Money(b) => Arc::new(b.finish()) as ArrayRef,
                Builder::Int(b) => Arc::new(b.finish()) as ArrayRef,
                Builder::Time(b) => Arc::new(b.finish()) as ArrayRef,
            })
            .collect();
        let rows = std::mem::take(&mut self.rows);
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(schema, arrays, &options).expect("the builders follow the schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, Decimal128Array, StringArray, TimestampMicrosecondArray};

    #[test]
    fn cells_land_in_arrays_of_their_types_and_money_stays_cents() {
        let types = [ColumnType::Text, ColumnType::Money, ColumnType::Int, ColumnType::Time];
        let schema = schema(&[("t", types[0]), ("m", types[1]), ("i", types[2]), ("s", types[3])]);
        let mut columns = Columns::new(&types);
        columns.push(&[Cell::Text("Zoé"), Cell::Cents(-5_025), Cell::Int(3), Cell::Seconds(3_600)]);
        columns.push(&[Cell::Null, Cell::Null, Cell::Null, Cell::Null]);
        let batch = columns.finish(schema);
        assert_eq!(batch.num_rows(), 2);
        let money = batch.column(1).as_any().downcast_ref::<Decimal128Array>().unwrap();
        assert_eq!(money.value(0), -5_025);
        assert_eq!(money.value_as_string(0), "-50.25");
        assert!(money.is_null(1));
        assert_eq!(batch.column(0).as_any().downcast_ref::<StringArray>().unwrap().value(0), "Zoé");
        let time = batch.column(3).as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
        assert_eq!(time.value(0), 3_600_000_000);
        assert_eq!(columns.rows(), 0, "finish starts the next batch");
    }

    #[test]
    fn a_batch_of_no_column_still_counts_its_rows() {
        let mut columns = Columns::new(&[]);
        columns.push(&[]);
        columns.push(&[]);
        let batch = columns.finish(Arc::new(Schema::empty()));
        assert_eq!(batch.num_rows(), 2, "count(*) reads no column");
    }
}
