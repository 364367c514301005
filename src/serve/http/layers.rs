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
//! layer has, so that the page can say how many it hides. `q` finds customers by name instead:
//! the one named `q` (a seek in the worker that holds it) or, if none is, those whose names
//! start with `q` (a range read in name order from `q`).
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
            _ => Ordering::Equal,
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
    // The batch layer never moves: only its offsets are read again, for the answer's `as_of`.
    let now = match (layer, search) {
        (Layer::Batch, _) => batch.clone(),
        (_, None) => read(&api, ReadScope::Customers { after: None, limit: usize::MAX }).await?,
        (_, Some(q)) => {
            let exact = read(&api, ReadScope::Customer(q.to_owned())).await?;
            if exact.customers.is_empty() {
                let mut from = read(&api, ReadScope::Customers { after: Some(q.to_owned()), limit: MAX_PAGE }).await?;
                from.customers.retain(|(name, _)| name.starts_with(q));
                from
            } else {
                exact
            }
        }
    };
    let mut lines = lines(layer, batch, &now, search);
    let rows_total = lines.len();
    lines.sort_by(|a, b| {
        let by = a.compare(b, sort);
        let by = if descending { by.reverse() } else { by };
        by.then_with(|| a.customer.cmp(b.customer))
    });
    let rows: Vec<Value> = lines.iter().skip(offset).take(limit).map(Line::cells).collect();
    Ok(Json(json!({
        "layer": name,
        "columns": columns,
        "rows": rows,
        "rows_total": rows_total,
        "offset": offset,
        "as_of": as_of(&now, &api.topic),
        "batch_as_of": as_of(batch, &api.topic),
    })))
}

/// The layer's customers: `now`'s (serving), the batch's, or their differences (speed). With
/// a search, only the customers `now` holds that match it (and for speed, their batch rows).
fn lines<'a>(layer: Layer, batch: &'a Reading, now: &'a Reading, search: Option<&str>) -> Vec<Line<'a>> {
    let matches = |name: &str| search.is_none_or(|q| name == q || name.starts_with(q));
    match layer {
        Layer::Batch => batch.customers.iter().filter(|(c, _)| matches(c)).map(|(c, r)| Line::of(c, r)).collect(),
        Layer::Serving => now.customers.iter().map(|(c, r)| Line::of(c, r)).collect(),
        Layer::Speed => {
            let before: HashMap<&str, &CustomerRow> = batch.customers.iter().map(|(c, r)| (c.as_str(), r)).collect();
            let after: HashMap<&str, &CustomerRow> = now.customers.iter().map(|(c, r)| (c.as_str(), r)).collect();
            // Customers gone since the batch (every transaction deleted) are in the batch only;
            // without a search, every batch customer is a candidate.
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
