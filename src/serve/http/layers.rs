//! `GET /v1/layers/{layer}`: the workshop's three layers of the `customers` view, one page at
//! a time — what the dashboard's three tables show, however many customers there are.
//!
//! - `batch`: the view as first read after the start (the history, or the snapshot resumed
//!   from): it never moves;
//! - `serving`: the view now;
//! - `speed`: what the stream changed since — serving minus batch, per customer, only the
//!   customers whose total or count moved.
//!
//! Columns: `customer`, `total`, `count`, `avg` (the speed layer: `customer`, `total`,
//! `count`, as differences). `min` and `max` are in `GET /v1/customers` and SQL.
//!
//! A page is `limit` rows (default 20) from `offset`, sorted by `sort` (a column; `total` by
//! default) descending unless `desc=false`, ties by name; `rows_total` says how many rows the
//! layer has, so that the page can say how many it hides. `q` keeps the customers whose names
//! start with `q` (the one named `q` among them): one range read in name order from `q`, at
//! most 10,000 names (`searched_through` then says the last name the rows cover).
//!
//! ```text
//! GET /v1/layers/speed?limit=2
//! {"layer":"speed","columns":["customer","total","count"],
//!  "rows":[["Mounir",200,1],["Ali",80,1]],"rows_total":3,"offset":0,"as_of":{...}}
//! ```

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::{number, read, Answer, Api, ApiError, MAX_PAGE};
use crate::amount::average_cents;
use crate::dataflow::rows::CustomerRow;
use crate::output::{as_of, Money};
use crate::reading::{ReadScope, Reading};

/// The three layers.
#[derive(Clone, Copy, PartialEq)]
enum Layer {
    Batch,
    Speed,
    Serving,
}

/// One customer of a layer: its name and the numbers shown (for `speed`, differences).
struct Line<'a> {
    customer: &'a str,
    total: i128,
    count: i64,
    /// The average (in cents): not in the speed layer.
    avg: Option<i128>,
}

impl<'a> Line<'a> {
    fn of(customer: &'a str, row: &CustomerRow) -> Self {
        Line { customer, total: row.total, count: row.count, avg: Some(average_cents(row.total, row.count)) }
    }

    fn cells(&self) -> Value {
        match self.avg {
            Some(avg) => json!([self.customer, Money(self.total), self.count, Money(avg)]),
            None => json!([self.customer, Money(self.total), self.count]),
        }
    }

    /// Compares by `column` (a name in the layer's columns).
    fn compare(&self, other: &Self, column: &str) -> Ordering {
        match column {
            "total" => self.total.cmp(&other.total),
            "count" => self.count.cmp(&other.count),
            "avg" => self.avg.cmp(&other.avg),
            _ => self.customer.cmp(other.customer),
        }
    }
}

/// `GET /v1/layers/{layer}?sort=&desc=&limit=&offset=&q=` (see the module's docs).
pub(super) async fn layer(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Answer {
    let bad = |message: String| ApiError(StatusCode::BAD_REQUEST, message);
    let layer = match name.as_str() {
        "batch" => Layer::Batch,
        "speed" => Layer::Speed,
        "serving" => Layer::Serving,
        other => return Err(ApiError(StatusCode::NOT_FOUND, format!("no layer {other:?}: batch, speed or serving"))),
    };
    let columns: &[&str] = match layer {
        Layer::Speed => &["customer", "total", "count"],
        _ => &["customer", "total", "count", "avg"],
    };
    let sort = params.get("sort").map_or("total", String::as_str);
    if !columns.contains(&sort) {
        return Err(bad(format!("sort must be one of {}, not {sort:?}", columns.join(", "))));
    }
    let descending = match params.get("desc").map(String::as_str) {
        None | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(other) => return Err(bad(format!("desc must be true or false, not {other:?}"))),
    };
    let limit = number(&params, "limit", 20, MAX_PAGE)?;
    let offset = match params.get("offset") {
        None => 0,
        Some(text) => text.parse::<usize>().map_err(|_| bad(format!("offset must be a whole number, not {text:?}")))?,
    };
    let search = params.get("q").map(|q| q.trim()).filter(|q| !q.is_empty());

    let Some(batch) = api.serving.first_reading() else {
        return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, "the history is still being loaded".into()));
    };
    // The batch layer never moves: it is the reading kept at the start.
    let (now, searched) = match (layer, search) {
        (Layer::Batch, _) => (batch.clone(), search.map(|q| Searched { prefix: q, through: None })),
        (_, None) => (read(&api, ReadScope::Customers { after: None, limit: usize::MAX }).await?, None),
        (_, Some(q)) => {
            // One range read in name order, from just before `q`: the names that start with
            // it are together there, at one time.
            let mut from = read(&api, ReadScope::Customers { after: Some(just_before(q)), limit: MAX_PAGE }).await?;
            let full = from.customers.len() == MAX_PAGE && from.customers.last().is_some_and(|(n, _)| n.starts_with(q));
            from.customers.retain(|(name, _)| name.starts_with(q));
            let through = full.then(|| from.customers.last().map(|(n, _)| n.clone())).flatten();
            (from, Some(Searched { prefix: q, through }))
        }
    };
    let mut lines = lines(layer, batch, &now, searched.as_ref());
    let rows_total = lines.len();
    lines.sort_by(|a, b| {
        let by = a.compare(b, sort);
        let by = if descending { by.reverse() } else { by };
        by.then_with(|| a.customer.cmp(b.customer))
    });
    let rows: Vec<Value> = lines.iter().skip(offset).take(limit).map(Line::cells).collect();
    let mut answer = json!({
        "layer": name,
        "columns": columns,
        "rows": rows,
        "rows_total": rows_total,
        "offset": offset,
        "as_of": as_of(&now, &api.topic),
        "batch_as_of": as_of(batch, &api.topic),
    });
    if let Some(through) = searched.and_then(|s| s.through) {
        // More names start with `q` than one read takes: the rows are of those up to here.
        answer["searched_through"] = through.into();
    }
    Ok(Json(answer))
}

/// A search by name: the customers whose names start with `prefix` — those up to `through`
/// when more of them exist than one read takes.
struct Searched<'q> {
    prefix: &'q str,
    through: Option<String>,
}

impl Searched<'_> {
    fn matches(&self, name: &str) -> bool {
        name.starts_with(self.prefix) && self.through.as_deref().is_none_or(|last| name <= last)
    }
}

/// A string below `q` with no realistic name between them (`"Alh\u{10FFFF}"` for `"Ali"`): a
/// range read after it starts at `q`. (A name in between would be read and left out by the
/// prefix test: the answer stays right.)
fn just_before(q: &str) -> String {
    let mut chars: Vec<char> = q.chars().collect();
    let Some(last) = chars.pop() else { return String::new() };
    let mut before: String = chars.into_iter().collect();
    let lower = (0..last as u32).rev().find_map(char::from_u32);
    if let Some(lower) = lower {
        before.push(lower);
        before.push(char::MAX);
    }
    before
}

/// The layer's customers: `now`'s (serving), the batch's, or their differences (speed). With
/// a search, `now` holds only the customers that match it; the batch's are tested here.
fn lines<'a>(layer: Layer, batch: &'a Reading, now: &'a Reading, search: Option<&Searched>) -> Vec<Line<'a>> {
    let matches = |name: &str| search.is_none_or(|s| s.matches(name));
    match layer {
        Layer::Batch => batch.customers.iter().filter(|(c, _)| matches(c)).map(|(c, r)| Line::of(c, r)).collect(),
        Layer::Serving => now.customers.iter().map(|(c, r)| Line::of(c, r)).collect(),
        Layer::Speed => {
            let before: HashMap<&str, &CustomerRow> = batch.customers.iter().map(|(c, r)| (c.as_str(), r)).collect();
            let after: HashMap<&str, &CustomerRow> = now.customers.iter().map(|(c, r)| (c.as_str(), r)).collect();
            // Customers gone since the batch (every transaction deleted) are in the batch only.
            let gone = batch.customers.iter().map(|(c, _)| c.as_str()).filter(|c| matches(c) && !after.contains_key(c));
            let names = now.customers.iter().map(|(c, _)| c.as_str()).chain(gone);
            names
                .filter_map(|customer| {
                    let (b, n) = (before.get(customer), after.get(customer));
                    let total = n.map_or(0, |r| r.total) - b.map_or(0, |r| r.total);
                    let count = n.map_or(0, |r| r.count) - b.map_or(0, |r| r.count);
                    (total != 0 || count != 0).then_some(Line { customer, total, count, avg: None })
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_read_after_just_before_q_starts_at_q() {
        for q in ["Ali", "a", "customer-0042", "é", "x\u{e000}", "x\0"] {
            let before = just_before(q);
            assert!(before.as_str() < q, "{before:?} < {q:?}");
            // Names that start with q, or come before it, are not skipped or let in wrongly.
            assert!(!q.starts_with(before.as_str()) || before.len() < q.len() || before.is_empty());
        }
        assert_eq!(just_before("Ali"), "Alh\u{10FFFF}");
        assert_eq!(just_before("a"), "`\u{10FFFF}");
        assert_eq!(just_before("x\u{e000}"), "x\u{d7ff}\u{10FFFF}");
    }

    #[test]
    fn the_speed_layer_is_serving_minus_batch_and_a_search_keeps_to_its_names() {
        let row = |total: i128, count: i64| CustomerRow { total, count, min: 0, max: 0 };
        let batch = Reading {
            customers: vec![("Ali".into(), row(320, 2)), ("Alice".into(), row(50, 1)), ("Sara".into(), row(10, 1))],
            ..Reading::default()
        };
        // Alice's only transaction deleted; Ali corrected; Sara unchanged; Zoe new.
        let now = Reading {
            customers: vec![("Ali".into(), row(400, 3)), ("Sara".into(), row(10, 1)), ("Zoe".into(), row(7, 1))],
            ..Reading::default()
        };
        let speed = |search: Option<&Searched>, now: &Reading| -> Vec<(String, i128, i64)> {
            let mut lines: Vec<_> = lines(Layer::Speed, &batch, now, search)
                .iter()
                .map(|l| (l.customer.to_owned(), l.total, l.count))
                .collect();
            lines.sort();
            lines
        };
        assert_eq!(speed(None, &now), vec![("Ali".into(), 80, 1), ("Alice".into(), -50, -1), ("Zoe".into(), 7, 1)]);
        // "Ali" finds Ali and Alice (gone), from a read of the names that start with it.
        let found = Reading { customers: vec![("Ali".into(), row(400, 3))], ..Reading::default() };
        let search = Searched { prefix: "Ali", through: None };
        assert_eq!(speed(Some(&search), &found), vec![("Ali".into(), 80, 1), ("Alice".into(), -50, -1)]);
        // A read cut at "Ali": Alice is beyond it, not reported as gone.
        let search = Searched { prefix: "Ali", through: Some("Ali".into()) };
        assert_eq!(speed(Some(&search), &found), vec![("Ali".into(), 80, 1)]);
    }
}
