//! What a statement answers, and how each front end shows it: JSON rows with exact numbers
//! (`POST /v1/sql`, the views' routes, the changefeeds), a text table (the prompt). The
//! Postgres protocol encodes the same batches with `arrow-pg` (see `serve/pg`).
//!
//! ```text
//! columns [{"name":"customer","type":"text"},{"name":"total","type":"numeric"}]
//! rows    [["Ali", 400], ["Sara", 50.25]]          (money: exact JSON numbers, never 400.0)
//! ```

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use serde_json::Value;

use crate::reading::Reading;

/// A statement's answer.
#[derive(Clone, Debug)]
pub struct Answer {
    /// Its columns.
    pub schema: SchemaRef,
    /// Its rows.
    pub batches: Vec<RecordBatch>,
    /// The time and input positions it reflects, when it read the views.
    pub as_of: Option<Reading>,
    /// For a statement that answers no rows (`SET`, `CREATE VIEW`, `BEGIN`): its command tag.
    pub tag: Option<String>,
}

impl Answer {
    /// An answer of no rows, with a command tag.
    pub fn tag(tag: &str) -> Answer {
        Answer {
            schema: std::sync::Arc::new(datafusion::arrow::datatypes::Schema::empty()),
            batches: Vec::new(),
            as_of: None,
            tag: Some(tag.to_owned()),
        }
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// Whether it has no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each column's name and Postgres type name.
    pub fn columns(&self) -> Vec<(String, &'static str)> {
        self.schema.fields().iter().map(|f| (f.name().clone(), type_name(f.data_type()))).collect()
    }

    /// The rows, each value as JSON.
    pub fn rows(&self) -> Vec<Vec<Value>> {
        let mut rows = Vec::with_capacity(self.len());
        for batch in &self.batches {
            for row in 0..batch.num_rows() {
                rows.push(batch.columns().iter().map(|c| json(c, row)).collect());
            }
        }
        rows
    }

    /// The rows as objects, column name → value.
    pub fn objects(&self) -> Vec<serde_json::Map<String, Value>> {
        let names: Vec<String> = self.schema.fields().iter().map(|f| f.name().clone()).collect();
        self.rows().into_iter().map(|row| names.iter().cloned().zip(row).collect()).collect()
    }

    /// The rows as a text table, as the prompt shows it.
    pub fn table(&self) -> String {
        let header: Vec<&str> = self.schema.fields().iter().map(|f| f.name().as_str()).collect();
        let rows: Vec<Vec<String>> = self
            .rows()
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|v| match v {
                        Value::Null => String::new(),
                        Value::String(s) => s,
                        other => other.to_string(),
                    })
                    .collect()
            })
            .collect();
        crate::output::show_table(&header, &rows, rows.len())
    }
}

/// The Postgres name of an Arrow type, as `columns` says it.
pub fn type_name(ty: &DataType) -> &'static str {
    match ty {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text",
        DataType::Int8 | DataType::Int16 => "smallint",
        DataType::Int32 => "integer",
        DataType::Int64 | DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => "bigint",
        DataType::Float16 | DataType::Float32 => "real",
        DataType::Float64 => "double precision",
        DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) | DataType::Decimal256(..) => {
            "numeric"
        }
        DataType::Boolean => "boolean",
        DataType::Timestamp(_, Some(_)) => "timestamptz",
        DataType::Timestamp(_, None) => "timestamp",
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Interval(_) | DataType::Duration(_) => "interval",
        DataType::Null => "text",
        DataType::List(_) | DataType::LargeList(_) => "array",
        _ => "text",
    }
}

/// One value as JSON: numbers exact (a decimal is a JSON number of its digits: `400`,
/// `50.25`, never `400.0`), times as RFC 3339 text, anything else as its display.
pub fn json(column: &ArrayRef, row: usize) -> Value {
    if column.is_null(row) {
        return Value::Null;
    }
    let number = |text: String| serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
    match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().value(row).into(),
        DataType::LargeUtf8 => column.as_string::<i64>().value(row).into(),
        DataType::Utf8View => column.as_string_view().value(row).into(),
        DataType::Boolean => column.as_boolean().value(row).into(),
        DataType::Int64 => column.as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(row).into(),
        DataType::Int32 => column.as_primitive::<datafusion::arrow::datatypes::Int32Type>().value(row).into(),
        DataType::Int16 => column.as_primitive::<datafusion::arrow::datatypes::Int16Type>().value(row).into(),
        DataType::Int8 => column.as_primitive::<datafusion::arrow::datatypes::Int8Type>().value(row).into(),
        DataType::UInt64 => column.as_primitive::<datafusion::arrow::datatypes::UInt64Type>().value(row).into(),
        DataType::UInt32 => column.as_primitive::<datafusion::arrow::datatypes::UInt32Type>().value(row).into(),
        DataType::Float64 => {
            let v = column.as_primitive::<datafusion::arrow::datatypes::Float64Type>().value(row);
            serde_json::Number::from_f64(v).map_or(Value::String(v.to_string()), Value::Number)
        }
        DataType::Float32 => {
            let v = f64::from(column.as_primitive::<datafusion::arrow::datatypes::Float32Type>().value(row));
            serde_json::Number::from_f64(v).map_or(Value::String(v.to_string()), Value::Number)
        }
        DataType::Decimal128(_, scale) => {
            let v = column.as_primitive::<datafusion::arrow::datatypes::Decimal128Type>().value(row);
            number(decimal_text(v, *scale))
        }
        DataType::Timestamp(unit, _) => {
            let v = match unit {
                TimeUnit::Second => column
                    .as_primitive::<datafusion::arrow::datatypes::TimestampSecondType>()
                    .value(row)
                    .saturating_mul(1_000_000),
                TimeUnit::Millisecond => column
                    .as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>()
                    .value(row)
                    .saturating_mul(1000),
                TimeUnit::Microsecond => {
                    column.as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>().value(row)
                }
                TimeUnit::Nanosecond => {
                    column.as_primitive::<datafusion::arrow::datatypes::TimestampNanosecondType>().value(row) / 1000
                }
            };
            match chrono::DateTime::from_timestamp_micros(v) {
                Some(t) if v % 1_000_000 == 0 => t.format("%Y-%m-%dT%H:%M:%SZ").to_string().into(),
                Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string().into(),
                None => v.to_string().into(),
            }
        }
        _ => {
            let options = datafusion::arrow::util::display::FormatOptions::default();
            match datafusion::arrow::util::display::ArrayFormatter::try_new(column.as_ref(), &options) {
                Ok(formatter) => formatter.value(row).to_string().into(),
                Err(_) => Value::Null,
            }
        }
    }
}

/// A decimal's digits at `scale`, its trailing zeros after the point left out: `40000` at 2 is
/// `400`, `5025` is `50.25`.
pub fn decimal_text(value: i128, scale: i8) -> String {
    if scale <= 0 {
        return (value * 10i128.pow(scale.unsigned_abs() as u32)).to_string();
    }
    let sign = if value < 0 { "-" } else { "" };
    let magnitude = value.unsigned_abs();
    let unit = 10u128.pow(scale as u32);
    let (whole, fraction) = (magnitude / unit, magnitude % unit);
    if fraction == 0 {
        return format!("{sign}{whole}");
    }
    let digits = format!("{fraction:0width$}", width = scale as usize);
    format!("{sign}{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_exactly_and_shortest() {
        assert_eq!(decimal_text(40_000, 2), "400");
        assert_eq!(decimal_text(5_025, 2), "50.25");
        assert_eq!(decimal_text(-5_050, 2), "-50.5");
        assert_eq!(decimal_text(133_333_333, 6), "133.333333");
        assert_eq!(decimal_text(-5, 2), "-0.05");
        assert_eq!(decimal_text(7, 0), "7");
    }
}
