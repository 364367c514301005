//! SQL values and types: exact decimals for amounts (never floats), text, bigint,
//! timestamps, booleans and NULL — what every front end (the prompt, HTTP, psql) shows.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A column's type, as Postgres names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Type {
    /// `text`
    Text,
    /// `bigint`
    BigInt,
    /// `numeric`: exact, two decimal places (amounts are cents).
    Numeric,
    /// `timestamptz`, to the second.
    Timestamp,
    /// `boolean`
    Bool,
}

impl Type {
    /// The type's name in SQL.
    pub fn name(self) -> &'static str {
        match self {
            Type::Text => "text",
            Type::BigInt => "bigint",
            Type::Numeric => "numeric",
            Type::Timestamp => "timestamptz",
            Type::Bool => "boolean",
        }
    }

    /// Whether values of the two types compare and add.
    pub fn is_number(self) -> bool {
        matches!(self, Type::BigInt | Type::Numeric)
    }
}

/// One value of a row. (Its derived order — by variant, then value — keys arrangements;
/// SQL's comparisons are [`Value::compare`].)
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// `boolean`
    Bool(bool),
    /// `bigint`
    Int(i64),
    /// `numeric` in hundredths: `Numeric(12345)` is 123.45.
    Numeric(i128),
    /// `text`
    Text(std::sync::Arc<str>),
    /// `timestamptz`, seconds since the Unix epoch.
    Timestamp(i64),
}

impl Value {
    /// The value as hundredths, if it is a number.
    pub fn hundredths(&self) -> Option<i128> {
        match self {
            Value::Int(n) => Some(i128::from(*n) * 100),
            Value::Numeric(n) => Some(*n),
            _ => None,
        }
    }

    /// Whether this is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// SQL's comparison: `None` when either side is NULL or the types do not compare.
    pub fn compare(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Null, _) | (_, Value::Null) => None,
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Text(a), Value::Text(b)) => Some(a.cmp(b)),
            (Value::Timestamp(a), Value::Timestamp(b)) => Some(a.cmp(b)),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (a, b) => Some(a.hundredths()?.cmp(&b.hundredths()?)),
        }
    }

    /// The order of `ORDER BY`: NULLs last when ascending, as in Postgres.
    pub fn sort_cmp(&self, other: &Value) -> Ordering {
        match (self.is_null(), other.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            _ => self.compare(other).unwrap_or(Ordering::Equal),
        }
    }

    /// The value as JSON: numbers exact (`400`, `50.25`), timestamps in RFC 3339.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(n) => (*n).into(),
            Value::Numeric(n) => {
                let text = crate::amount::format_cents(*n);
                serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
            }
            Value::Text(t) => serde_json::Value::String(t.to_string()),
            Value::Timestamp(_) => self.to_string().into(),
        }
    }

    /// The value as Postgres' text format writes it (`None` for NULL).
    pub fn to_pg_text(&self) -> Option<String> {
        match self {
            Value::Null => None,
            Value::Bool(b) => Some(if *b { "t" } else { "f" }.to_owned()),
            Value::Numeric(n) => Some(numeric_text(*n)),
            Value::Timestamp(t) => Some(timestamp_text(*t, " ", "+00")),
            other => Some(other.to_string()),
        }
    }
}

/// A numeric in hundredths with both decimals, as Postgres shows `numeric(_, 2)`.
pub fn numeric_text(hundredths: i128) -> String {
    let sign = if hundredths < 0 { "-" } else { "" };
    let abs = hundredths.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

fn timestamp_text(seconds: i64, between: &str, zone: &str) -> String {
    match chrono::DateTime::from_timestamp(seconds, 0) {
        Some(t) => format!("{}{between}{}{zone}", t.format("%Y-%m-%d"), t.format("%H:%M:%S")),
        None => seconds.to_string(),
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Numeric(n) => f.write_str(&crate::amount::format_cents(*n)),
            Value::Text(t) => f.write_str(t),
            Value::Timestamp(t) => f.write_str(&timestamp_text(*t, "T", "Z")),
        }
    }
}

/// Parses a timestamp literal: RFC 3339, or `2025-01-01 13:00:00`, `2025-01-01T13`,
/// `2025-01-01` (UTC).
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp());
    }
    let t = text.replace(' ', "T");
    for (suffix, format) in [("", "%Y-%m-%dT%H:%M:%S"), (":00", "%Y-%m-%dT%H:%M:%S"), (":00:00", "%Y-%m-%dT%H:%M:%S")] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(&format!("{t}{suffix}"), format) {
            return Some(t.and_utc().timestamp());
        }
    }
    for zone in ["+00", "+00:00", "Z"] {
        if let Some(bare) = t.strip_suffix(zone) {
            return parse_timestamp(bare);
        }
    }
    chrono::NaiveDate::parse_from_str(&t, "%Y-%m-%d")
        .ok()
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_across_types_and_print_exactly() {
        assert_eq!(Value::Int(3).compare(&Value::Numeric(300)), Some(Ordering::Equal));
        assert_eq!(Value::Numeric(-5).to_pg_text().unwrap(), "-0.05");
        assert_eq!(Value::Numeric(40000).to_json(), serde_json::json!(400));
        assert_eq!(Value::Numeric(5025).to_json().to_string(), "50.25");
        assert_eq!(Value::Null.compare(&Value::Int(1)), None);
    }

    #[test]
    fn timestamps_parse_in_the_usual_forms() {
        let t = parse_timestamp("2025-01-01T13:00:00Z").unwrap();
        for text in ["2025-01-01 13:00:00", "2025-01-01T13", "2025-01-01 13:00:00+00", "2025-01-01T14:00:00+01:00"] {
            assert_eq!(parse_timestamp(text), Some(t), "{text}");
        }
        assert_eq!(parse_timestamp("2025-01-01"), Some(t - 13 * 3600));
        assert_eq!(Value::Timestamp(t).to_pg_text().unwrap(), "2025-01-01 13:00:00+00");
        assert_eq!(parse_timestamp("soon"), None);
    }
}
