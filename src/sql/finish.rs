//! The reader's part of a query, done once the workers' shares are merged: the rest of the
//! aggregation, `HAVING`, `ORDER BY`, `OFFSET`/`LIMIT` and the select list.
//!
//! ```text
//! SELECT customer, sum(amount) FROM transactions GROUP BY customer ORDER BY 2 DESC LIMIT 1
//! worker 0: [Ali 150] [Sara 180]     worker 1: [Ali 250] [Mounir 350]
//! merged groups: Ali 400, Mounir 350, Sara 180 → ordered, limited: [Ali 400]
//! ```

use std::time::Duration;

use serde::Serialize;

use super::error::SqlError;
use super::plan::Select;
use super::scan;
use super::value::{Type, Value};
use crate::reading::ReadError;

/// A column of an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type", serialize_with = "type_name")]
    pub ty: Type,
}

fn type_name<S: serde::Serializer>(ty: &Type, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(ty.name())
}

/// Limits on what one query may do.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The most rows a query may return (or a worker send).
    pub max_rows: usize,
    /// How long a query may take.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_rows: 100_000, timeout: Duration::from_secs(10) }
    }
}

/// The reader's part of a query: merges the workers' rows (`parts`), then `HAVING`, `ORDER
/// BY`, `LIMIT` and the select list.
pub fn finish(
    select: &Select,
    parts: Vec<Vec<Value>>,
    limits: Limits,
) -> Result<(Vec<Column>, Vec<Vec<Value>>), SqlError> {
    {
        let scan = &select.scan;
        let stage: Vec<Vec<Value>> = if scan::whole_in_one_worker(scan.relation) {
            match &scan.group {
                Some((keys, aggs)) => scan::merge_groups(parts, keys.len(), aggs),
                None => parts,
            }
        } else {
            // The workers sent raw parts of the row: add them, then filter and group here.
            let mut steps = scan::Steps::new(scan, true, limits.max_rows);
            for row in scan::merge_overall(parts) {
                let _ = steps.take(&row);
            }
            let rows = steps.finish().map_err(SqlError::from_read)?;
            match &scan.group {
                Some((keys, aggs)) => scan::merge_groups(rows, keys.len(), aggs),
                None => rows,
            }
        };
        let mut stage: Vec<Vec<Value>> = match &select.having {
            Some(having) => stage.into_iter().filter(|row| having.accepts(row)).collect(),
            None => stage,
        };
        if !select.order.is_empty() {
            let keyed = |row: &Vec<Value>| select.order.iter().map(|(e, _)| e.eval(row)).collect::<Vec<_>>();
            let mut keyed: Vec<(Vec<Value>, Vec<Value>)> = stage.into_iter().map(|r| (keyed(&r), r)).collect();
            keyed.sort_by(|(a, _), (b, _)| {
                for ((x, y), (_, descending)) in a.iter().zip(b).zip(&select.order) {
                    let ordering = if *descending { descending_cmp(x, y) } else { x.sort_cmp(y) };
                    if ordering != std::cmp::Ordering::Equal {
                        return ordering;
                    }
                }
                std::cmp::Ordering::Equal
            });
            stage = keyed.into_iter().map(|(_, r)| r).collect();
        }
        let rows: Vec<Vec<Value>> = stage
            .into_iter()
            .skip(select.offset)
            .take(select.limit.unwrap_or(usize::MAX))
            .map(|row| select.output.iter().map(|(_, e, _)| e.eval(&row)).collect())
            .collect();
        if rows.len() > limits.max_rows {
            return Err(SqlError::from_read(ReadError::TooManyRows { limit: limits.max_rows }));
        }
        let columns = select.output.iter().map(|(n, _, t)| Column { name: n.clone(), ty: *t }).collect();
        Ok((columns, rows))
    }
}

/// `ORDER BY ... DESC`: NULLs first, as in Postgres, then larger values first.
fn descending_cmp(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a.is_null(), b.is_null()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => b.compare(a).unwrap_or(std::cmp::Ordering::Equal),
    }
}
