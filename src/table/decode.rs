//! A table's records as changes: a JSON object (a Kafka message or a line of a file), a CSV
//! record, or a tombstone — each read by the table's columns, or refused with the reason a
//! dead letter gives.
//!
//! For `customer_info (customer text, city text, since timestamp, PRIMARY KEY (customer))`:
//!
//! ```
//! use atelier_lambda::compute::columns::{ColumnType, Owned};
//! use atelier_lambda::table::{decode, TableDef};
//! let def = TableDef {
//!     id: 1,
//!     name: "customer_info".into(),
//!     columns: vec![("customer".into(), ColumnType::Text), ("city".into(), ColumnType::Text)],
//!     key: vec![0],
//!     path: None,
//!     topic: None,
//!     generated: None,
//!     sql: String::new(),
//! };
//! let moved = decode::json(&def, Some(br#"{"customer":"Ali","city":"Lyon"}"#), None).unwrap();
//! assert_eq!(moved.row, Some(vec![Owned::Text("Ali".into()), Owned::Text("Lyon".into())]));
//! let gone = decode::json(&def, None, Some(b"Ali")).unwrap();
//! assert_eq!((gone.key, gone.row), (vec![Owned::Text("Ali".into())], None));
//! assert!(decode::json(&def, Some(br#"{"city":"Lyon"}"#), None).is_err(), "no key");
//! ```
//!
//! A field the table has no column for is ignored; a column the record does not give is NULL
//! (a key column may not be). Names match case-insensitively.

use crate::compute::columns::{ColumnType, Owned};
use crate::event::{Reason, Rejection};

use super::{Row, TableDef, Upsert};

/// A JSON record (`body`), or a tombstone (no body) whose Kafka `key` names the row to delete
/// — the key column's value as text, or a JSON object of the key's columns.
pub fn json(def: &TableDef, body: Option<&[u8]>, key: Option<&[u8]>) -> Result<Upsert, Rejection> {
    let Some(body) = body else {
        return tombstone(def, key);
    };
    let text = std::str::from_utf8(body).map_err(|e| Rejection::new(Reason::InvalidUtf8, e.to_string()))?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Rejection::new(Reason::InvalidJson, e.to_string()))?;
    object(def, &value)
}

/// A JSON value that should be an object of the table's columns (and `op`).
pub fn object(def: &TableDef, value: &serde_json::Value) -> Result<Upsert, Rejection> {
    let serde_json::Value::Object(fields) = value else {
        return Err(Rejection::new(Reason::NotAnObject, format!("table {}: a record is a JSON object", def.name)));
    };
    let field = |name: &str| fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v);
    // `op` is the change's kind unless the table has a column of that name.
    let has_op = def.columns.iter().any(|(n, _)| n.eq_ignore_ascii_case("op"));
    let delete = match field("op").filter(|_| !has_op) {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::String(op)) if op.eq_ignore_ascii_case("upsert") => false,
        Some(serde_json::Value::String(op)) if op.eq_ignore_ascii_case("delete") => true,
        Some(other) => {
            return Err(Rejection::new(Reason::BadOp, format!("op is {other}: \"upsert\" or \"delete\"")));
        }
    };
    let mut row = Vec::with_capacity(def.columns.len());
    for (name, ty) in &def.columns {
        row.push(json_value(def, name, *ty, field(name))?);
    }
    finish(def, row, delete)
}

/// A CSV record whose columns are named by `headers`.
pub fn csv(def: &TableDef, headers: &[String], record: &csv::StringRecord) -> Result<Upsert, Rejection> {
    let cell =
        |name: &str| headers.iter().position(|h| h.trim().eq_ignore_ascii_case(name)).and_then(|i| record.get(i));
    let has_op = def.columns.iter().any(|(n, _)| n.eq_ignore_ascii_case("op"));
    let delete = match cell("op").filter(|_| !has_op).map(str::trim) {
        None | Some("") => false,
        Some(op) if op.eq_ignore_ascii_case("upsert") => false,
        Some(op) if op.eq_ignore_ascii_case("delete") => true,
        Some(op) => return Err(Rejection::new(Reason::BadOp, format!("op is {op:?}: \"upsert\" or \"delete\""))),
    };
    let mut row = Vec::with_capacity(def.columns.len());
    for (name, ty) in &def.columns {
        let value = match cell(name) {
            None | Some("") => Owned::Null,
            Some(text) => text_value(def, name, *ty, text)?,
        };
        row.push(value);
    }
    finish(def, row, delete)
}

/// A tombstone: the row its Kafka key names is deleted.
fn tombstone(def: &TableDef, key: Option<&[u8]>) -> Result<Upsert, Rejection> {
    let Some(key) = key else {
        return Err(Rejection::new(
            Reason::DeleteWithoutId,
            format!("table {}: a tombstone without a key names no row", def.name),
        ));
    };
    let text = std::str::from_utf8(key).map_err(|e| Rejection::new(Reason::InvalidUtf8, e.to_string()))?;
    // A key written as JSON (`{"customer":"Ali"}`) names each key column; otherwise the key is
    // the one key column's value.
    if let Ok(value @ serde_json::Value::Object(_)) = serde_json::from_str::<serde_json::Value>(text) {
        let mut upsert = object(def, &value_with_op(value, "delete"))?;
        upsert.row = None;
        return Ok(upsert);
    }
    match def.key.as_slice() {
        [only] => {
            let (name, ty) = &def.columns[*only];
            let value = text_value(def, name, *ty, text)?;
            Ok(Upsert { key: vec![value], row: None })
        }
        _ => Err(Rejection::new(
            Reason::MissingKey,
            format!("table {}: a tombstone's key must be a JSON object of {}", def.name, def.key_names().join(", ")),
        )),
    }
}

fn value_with_op(mut value: serde_json::Value, op: &str) -> serde_json::Value {
    if let serde_json::Value::Object(fields) = &mut value {
        fields.insert("op".into(), serde_json::Value::String(op.into()));
    }
    value
}

/// The change a decoded row makes: its key must have every column.
fn finish(def: &TableDef, row: Row, delete: bool) -> Result<Upsert, Rejection> {
    let key = def.key_of(&row);
    if let Some(missing) = def.key.iter().find(|k| row[**k] == Owned::Null) {
        return Err(Rejection::new(
            Reason::MissingKey,
            format!("table {}: key column {} is missing or null", def.name, def.columns[*missing].0),
        ));
    }
    Ok(Upsert { key, row: (!delete).then_some(row) })
}

fn bad(def: &TableDef, column: &str, ty: ColumnType, got: impl std::fmt::Display) -> Rejection {
    let ty = match ty {
        ColumnType::Text => "text",
        ColumnType::Int => "bigint",
        ColumnType::Money => "numeric (at most two decimals)",
        ColumnType::Time => "timestamp (RFC 3339 or seconds since the epoch)",
    };
    Rejection::new(Reason::BadColumn, format!("table {}: column {column} is {ty}, not {got}", def.name))
}

/// A JSON field as the column's value.
fn json_value(
    def: &TableDef,
    name: &str,
    ty: ColumnType,
    value: Option<&serde_json::Value>,
) -> Result<Owned, Rejection> {
    use serde_json::Value;
    match value {
        None | Some(Value::Null) => Ok(Owned::Null),
        Some(Value::String(text)) => text_value(def, name, ty, text),
        Some(Value::Number(number)) => match ty {
            ColumnType::Text => Ok(Owned::Text(number.to_string())),
            _ => text_value(def, name, ty, &number.to_string()),
        },
        Some(Value::Bool(b)) if ty == ColumnType::Text => Ok(Owned::Text(b.to_string())),
        Some(other) => Err(bad(def, name, ty, other)),
    }
}

/// Text (a JSON string, a CSV cell, a Kafka key) as the column's value.
fn text_value(def: &TableDef, name: &str, ty: ColumnType, text: &str) -> Result<Owned, Rejection> {
    let quoted = || format!("{text:?}");
    match ty {
        ColumnType::Text => Ok(Owned::Text(text.to_owned())),
        ColumnType::Int => text.trim().parse::<i64>().map(Owned::Int).map_err(|_| bad(def, name, ty, quoted())),
        ColumnType::Money => crate::amount::parse_cents(text)
            .map(|c| Owned::Cents(i128::from(c)))
            .map_err(|_| bad(def, name, ty, quoted())),
        ColumnType::Time => {
            let text = text.trim();
            // Years 1 to 9999: what every client shows (and truncates) without overflow.
            let within = |seconds: i64| {
                if (-62_135_596_800..=253_402_300_799).contains(&seconds) {
                    Ok(Owned::Seconds(seconds))
                } else {
                    Err(bad(def, name, ty, quoted()))
                }
            };
            if let Ok(seconds) = text.parse::<i64>() {
                return within(seconds);
            }
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
                return within(t.timestamp());
            }
            // Postgres' own form, without a zone: UTC.
            match chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S") {
                Ok(t) => within(t.and_utc().timestamp()),
                Err(_) => Err(bad(def, name, ty, quoted())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> TableDef {
        TableDef {
            id: 1,
            name: "info".into(),
            columns: vec![
                ("customer".into(), ColumnType::Text),
                ("limit".into(), ColumnType::Money),
                ("visits".into(), ColumnType::Int),
                ("since".into(), ColumnType::Time),
            ],
            key: vec![0],
            path: None,
            topic: None,
            generated: None,
            sql: String::new(),
        }
    }

    fn text(t: &str) -> Owned {
        Owned::Text(t.into())
    }

    #[test]
    fn a_record_is_read_by_the_columns_and_extra_fields_are_ignored() {
        let body = br#"{"Customer":"Ali","limit":"12.5","visits":3,"since":"2025-01-01T00:00:00Z","x":[1]}"#;
        let upsert = json(&def(), Some(body), None).unwrap();
        assert_eq!(upsert.key, vec![text("Ali")]);
        assert_eq!(
            upsert.row,
            Some(vec![text("Ali"), Owned::Cents(1250), Owned::Int(3), Owned::Seconds(1_735_689_600)])
        );
        let sparse = json(&def(), Some(br#"{"customer":"Li"}"#), None).unwrap();
        assert_eq!(sparse.row, Some(vec![text("Li"), Owned::Null, Owned::Null, Owned::Null]));
    }

    #[test]
    fn deletes_come_as_op_or_as_tombstones() {
        let op = json(&def(), Some(br#"{"customer":"Ali","op":"delete"}"#), None).unwrap();
        assert_eq!((op.key, op.row), (vec![text("Ali")], None));
        let by_key = json(&def(), None, Some(b"Ali")).unwrap();
        assert_eq!((by_key.key, by_key.row), (vec![text("Ali")], None));
        let by_object = json(&def(), None, Some(br#"{"customer":"Ali"}"#)).unwrap();
        assert_eq!((by_object.key, by_object.row), (vec![text("Ali")], None));
        assert_eq!(json(&def(), None, None).unwrap_err().reason, Reason::DeleteWithoutId);
    }

    #[test]
    fn records_that_do_not_fit_are_refused_with_the_reason() {
        let reason = |body: &[u8]| json(&def(), Some(body), None).unwrap_err().reason;
        assert_eq!(reason(br#"{"city":"Lyon"}"#), Reason::MissingKey);
        assert_eq!(reason(br#"{"customer":null}"#), Reason::MissingKey);
        assert_eq!(reason(br#"{"customer":"Ali","visits":"many"}"#), Reason::BadColumn);
        assert_eq!(reason(br#"{"customer":"Ali","limit":1.234}"#), Reason::BadColumn);
        assert_eq!(reason(br#"{"customer":"Ali","since":"yesterday"}"#), Reason::BadColumn);
        assert_eq!(reason(br#"{"customer":"Ali","since":-9223372036854775808}"#), Reason::BadColumn);
        assert_eq!(reason(br#"{"customer":"Ali","since":"+275760-09-13T00:00:00Z"}"#), Reason::BadColumn);
        assert_eq!(reason(br#"{"customer":{"a":1}}"#), Reason::BadColumn);
        assert_eq!(reason(br#"{"customer":"Ali","op":"merge"}"#), Reason::BadOp);
        assert_eq!(reason(b"[1]"), Reason::NotAnObject);
        assert_eq!(reason(b"{"), Reason::InvalidJson);
        assert_eq!(reason(b"\xff"), Reason::InvalidUtf8);
        let message = json(&def(), Some(br#"{"customer":"Ali","visits":"many"}"#), None).unwrap_err().detail;
        assert!(message.contains("table info") && message.contains("visits"), "{message}");
    }

    #[test]
    fn a_column_named_op_is_a_column() {
        let mut def = def();
        def.columns.push(("op".into(), ColumnType::Text));
        let upsert = json(&def, Some(br#"{"customer":"Ali","op":"delete"}"#), None).unwrap();
        assert_eq!(upsert.row.map(|r| r[4].clone()), Some(text("delete")));
    }

    #[test]
    fn csv_cells_are_read_by_the_header() {
        let headers: Vec<String> = ["visits", "customer", "op"].map(String::from).to_vec();
        let record = csv::StringRecord::from(vec!["7", "Ali", ""]);
        let upsert = super::csv(&def(), &headers, &record).unwrap();
        assert_eq!(upsert.row, Some(vec![text("Ali"), Owned::Null, Owned::Int(7), Owned::Null]));
        let delete = csv::StringRecord::from(vec!["", "Ali", "delete"]);
        assert_eq!(super::csv(&def(), &headers, &delete).unwrap().row, None);
        let no_key = csv::StringRecord::from(vec!["1", "", ""]);
        assert_eq!(super::csv(&def(), &headers, &no_key).unwrap_err().reason, Reason::MissingKey);
    }
}
