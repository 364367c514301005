//! The HTTP API: JSON answers read from the arrangements, each saying what it reflects.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/customers/{customer}` | one customer's row; 404 with a JSON error when unknown |
//! | `GET /v1/customers?limit=&after=` | a page of customers in name order, and `next` |
//! | `GET /v1/top?k=` | the `k` largest totals (`--top` by default), ties by name |
//! | `GET /v1/categories` | totals by category |
//! | `GET /v1/hourly?from=&to=` | totals by UTC hour of event time, within the bounds |
//! | `GET /v1/views?k=` | every view at one time: customers, top `k`, categories, hourly, overall, and the created views (`created`: name, definition, columns, rows) |
//! | `GET /v1/views/{name}` | one view, built-in or created: `{"view", "columns", "rows": [{column: value}], "as_of"}`; 404 when unknown |
//! | `GET /v1/views/{name}/{key}` | the row of one key of it (customer, category, hour `2025-01-01T13:00:00Z`, a created view's group key): `{"view", "row", "as_of"}`; 404 when absent |
//! | `GET /v1/subscribe?view=&key=&as_of=` | a changefeed as Server-Sent Events: `snapshot` (the rows at a time), then `changes` (`{"key", "row", "diff"}` at each later time), `progress` every second while idle, `error` when it ends; each event's `id` is its time, and `Last-Event-ID` or `as_of=` resumes after it (410 with `earliest` when no longer kept); 404 for an unknown view |
//! | `GET /v1/status` | totals, customers, dead letters by reason, records read, lag per partition, processes, each worker's process and partitions, and each Kafka sink's time, `lag_ms`, messages and last error |
//! | `GET /metrics` | Prometheus text (see [`crate::serve::metrics`]) |
//! | `POST /v1/sql` | the statement in the body → `{"columns", "rows", "as_of"}`; errors 400 `{"error", "code"}` |
//! | `GET /` | the dashboard: one page, embedded, live from `/v1/progress` and the pages it reads |
//! | `GET /assets/{file}` | what the dashboard embeds: uPlot (MIT), its style and license |
//! | `GET /v1/status/events` | the status as Server-Sent Events, one a second |
//! | `GET /v1/batch` | the batch layer: every view as first read after the start, with its `as_of` |
//! | `GET /v1/layers/{batch,speed,serving}?sort=&desc=&limit=&offset=&q=` | a page of one of the three layers of `customers`, sorted, with `rows_total`; `q` finds a customer by name (see `http/layers.rs`) |
//! | `GET /v1/progress?every_ms=` | Server-Sent Events: `progress` (`{"time", "offsets"}`) when the views moved, at most one every `every_ms` (250) |
//! | `POST /v1/produce` | the body's JSON lines to the topic, keyed by `id` (only with `--dashboard-produce`; else 403): `{"sent", "min_offsets"}` |
//! | `GET /healthz` | `{"status": "ok", "kafka": ...}`: the process answers (liveness) |
//! | `GET /readyz` | 200 once the topic is being read; 503 with the reason while Kafka cannot be reached |
//!
//! Every route takes `?min_offsets=topic/partition:offset,...` (read-your-writes, see
//! [`crate::serve::bound`]) and `timeout_ms` (default 5000): the answer reflects at least those
//! input positions, or is a 504 with the `as_of` reached.
//!
//! Every answer carries `as_of`: `{"time": T, "offsets": {"real-time-orders/0": N, ...}}`,
//! the logical time read and the next Kafka offset of each partition the answer reflects.
//! Amounts are exact JSON numbers (`400`, `50.25`). Bad parameters get a 400 and a JSON error.
//!
//! A read is answered by the workers (see [`crate::serve::serving`]); the handler awaits their replies
//! on a channel, so that the async runtime keeps serving other requests meanwhile.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::event::{format_hour, parse_hour_bound};
use crate::output::{as_of, CustomerOut, Money, SumOut};
use crate::reading::{ReadScope, Reading};
use crate::serve::bound::{self, MinOffsets, WaitError};
use crate::serve::feed::Feeds;
use crate::serve::metrics::{consumer_lag, KafkaState};
use crate::serve::serving::{ReadError, Serving};

mod guard;
mod layers;
mod watch;

/// The longest a request waits for the workers.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest page of customers.
const MAX_PAGE: usize = 10_000;

struct Api {
    serving: Serving,
    topic: String,
    sql: crate::sql::Engine,
    feeds: Feeds,
    /// Where `POST /v1/produce` sends, when the dashboard may produce.
    produce_to: Option<String>,
    /// The `top` view's size (`--top`): `GET /v1/top` without `k`.
    top: usize,
    /// Whether requests must carry the secret (the dashboard then asks for it).
    asks_secret: bool,
}

/// An error answer: a status and `{"error": "..."}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type Answer = Result<Json<Value>, ApiError>;

/// The routes, over a running pipeline's serving handle, behind the guard of `access` (see
/// `http/guard.rs`); `loopback`: the server listens on loopback only.
pub fn router(
    sql: crate::sql::Engine,
    settings: &crate::config::Settings,
    feeds: Feeds,
    access: crate::serve::access::Access,
    loopback: bool,
) -> Router {
    let asks_secret = access.secret().is_some();
    let guard = Arc::new(guard::Guard { access, loopback });
    let topic = settings.kafka.topic.clone();
    let serving = sql.serving().clone();
    let produce_to = settings.serve.dashboard_produce.then(|| settings.kafka.brokers.clone());
    let api = Arc::new(Api { serving, topic, sql, feeds, produce_to, top: settings.batch.top, asks_secret });
    Router::new()
        .route("/", get(watch::dashboard))
        .route("/assets/{file}", get(watch::asset))
        .route("/v1/produce", axum::routing::post(watch::produce))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/customers/{customer}", get(customer))
        .route("/v1/customers", get(customers))
        .route("/v1/top", get(top))
        .route("/v1/categories", get(categories))
        .route("/v1/hourly", get(hourly))
        .route("/v1/views", get(views))
        .route("/v1/views/{name}", get(view))
        .route("/v1/views/{name}/{key}", get(view_key))
        .route("/v1/subscribe", get(watch::subscribe))
        .route("/v1/status", get(status))
        .route("/v1/status/events", get(watch::status_events))
        .route("/v1/batch", get(watch::batch))
        .route("/v1/layers/{layer}", get(layers::layer))
        .route("/v1/progress", get(watch::progress))
        .route("/metrics", get(metrics))
        .route("/v1/sql", axum::routing::post(sql_statement))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&api), read_your_writes))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&api), timed))
        .route("/v1/login", axum::routing::post(guard::login).with_state(Arc::clone(&guard)))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such route; see /v1/status".into()) })
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(guard, guard::guard))
        .with_state(api)
}

/// Gives every error the JSON shape `{"error": ...}`, also those axum answers by itself
/// before a handler runs (a path that does not decode, like `/v1/customers/%FF`, a bad
/// query string), which are plain text, and those it answers with no body at all (a method
/// a route does not take).
async fn json_errors(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let reason = status.canonical_reason().unwrap_or("error");
    let text = match axum::body::to_bytes(response.into_body(), 64 << 10).await {
        Ok(bytes) if !bytes.trim_ascii().is_empty() => String::from_utf8_lossy(&bytes).into_owned(),
        _ if status == StatusCode::METHOD_NOT_ALLOWED => format!("{reason}: {path} does not take {method}"),
        _ => reason.to_owned(),
    };
    ApiError(status, text).into_response()
}

/// `?min_offsets=topic/partition:offset,...&timeout_ms=N` on any route: the answer waits
/// until the views reflect those input positions (see [`crate::serve::bound`]); 504 with the
/// `as_of` reached when they do not in time, 400 when malformed.
async fn read_your_writes(State(api): State<Arc<Api>>, request: Request, next: Next) -> Response {
    let Ok(Query(params)) = Query::<HashMap<String, String>>::try_from_uri(request.uri()) else {
        return next.run(request).await;
    };
    let bad = |message: String| ApiError(StatusCode::BAD_REQUEST, message).into_response();
    // A malformed wait is refused even without a bound to wait for: never ignored silently.
    let timeout = match params.get("timeout_ms").map(|t| bound::parse_timeout(t)) {
        None => bound::DEFAULT_TIMEOUT,
        Some(Ok(timeout)) => timeout,
        Some(Err(message)) => return bad(message),
    };
    let Some(text) = params.get("min_offsets") else { return next.run(request).await };
    let bound = match MinOffsets::parse(text, &api.topic) {
        Ok(bound) => bound,
        Err(message) => return bad(message),
    };
    match api.serving.wait_for_async(&bound, timeout).await {
        Ok(()) => next.run(request).await,
        Err(WaitError::NotReached(reading)) => {
            let error = format!(
                "the views did not reach min_offsets {} within {} ms",
                bound.display(&api.topic),
                timeout.as_millis()
            );
            (StatusCode::GATEWAY_TIMEOUT, Json(json!({ "error": error, "as_of": as_of(&reading, &api.topic) })))
                .into_response()
        }
        Err(error @ WaitError::NoSuchPartition { .. }) => bad(error.to_string()),
        Err(WaitError::Read(error)) => read_error(error).into_response(),
    }
}

/// Times every answer, by route, for `lambda_query_duration_seconds`.
async fn timed(State(api): State<Arc<Api>>, route: MatchedPath, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let response = next.run(request).await;
    api.serving.metrics().observe_query(route.as_str(), start.elapsed().as_secs_f64());
    response
}

/// Starts the API on its own small runtime, on the `serve.http` address (`off`: none); it
/// serves until the runtime is dropped. Its changefeeds are `feeds`.
pub fn start(
    settings: &crate::config::Settings,
    engine: &crate::sql::Engine,
    feeds: &Feeds,
    access: &crate::serve::access::Access,
) -> anyhow::Result<Option<tokio::runtime::Runtime>> {
    let Some((runtime, listener)) = crate::serve::listen(&settings.serve.http, "http", "HTTP")? else {
        return Ok(None);
    };
    let bound = listener.local_addr()?;
    let app = router(engine.clone(), settings, feeds.clone(), access.clone(), bound.ip().is_loopback());
    runtime.spawn(serve(listener, app));
    tracing::info!(address = %bound, "serving HTTP");
    Ok(Some(runtime))
}

/// How long a client may take to send a request's headers (and an idle connection may stay
/// open between requests): a client that sends them a byte at a time (slow-loris) holds a
/// connection this long, no longer.
const HEADERS_WITHIN: Duration = Duration::from_secs(10);

/// Serves `app` on `listener`: each connection with hyper's HTTP/1, headers read within
/// [`HEADERS_WITHIN`]; an accept that fails (out of file descriptors) backs off.
async fn serve(listener: tokio::net::TcpListener, app: Router) {
    crate::serve::accept_each(listener, "an HTTP connection", move |stream, _| {
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADERS_WITHIN)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades()
                .await;
            if let Err(error) = served {
                tracing::debug!(%error, "an HTTP connection ended with an error");
            }
        });
    })
    .await
}

async fn read(api: &Arc<Api>, scope: ReadScope) -> Result<Reading, ApiError> {
    api.serving.read_async(scope, READ_TIMEOUT).await.map_err(read_error)
}

fn read_error(error: ReadError) -> ApiError {
    let status = match error {
        ReadError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError(status, error.to_string())
}

fn number(params: &HashMap<String, String>, name: &str, default: usize, max: usize) -> Result<usize, ApiError> {
    match params.get(name) {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("{name} must be a whole number from 1 to {max}, not {text:?}"),
            )),
        },
    }
}

async fn customer(State(api): State<Arc<Api>>, Path(name): Path<String>) -> Answer {
    let reading = read(&api, ReadScope::Customer(name.clone())).await?;
    let Some((_, row)) = reading.customers.first() else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no customer {name:?}")));
    };
    let mut body = serde_json::to_value(CustomerOut::new(&name, row)).expect("a row serializes");
    body["as_of"] = as_of(&reading, &api.topic);
    Ok(Json(body))
}

async fn customers(State(api): State<Arc<Api>>, Query(params): Query<HashMap<String, String>>) -> Answer {
    let limit = number(&params, "limit", 100, MAX_PAGE)?;
    let after = params.get("after").cloned();
    let reading = read(&api, ReadScope::Customers { after, limit }).await?;
    let rows: Vec<_> = reading.customers.iter().map(|(c, r)| CustomerOut::new(c, r)).collect();
    let next = (rows.len() == limit).then(|| rows.last().map(|r| r.customer)).flatten();
    Ok(Json(json!({ "customers": rows, "next": next, "as_of": as_of(&reading, &api.topic) })))
}

async fn top(State(api): State<Arc<Api>>, Query(params): Query<HashMap<String, String>>) -> Answer {
    let k = number(&params, "k", api.top.min(MAX_PAGE), MAX_PAGE)?;
    let reading = read(&api, ReadScope::Top { k }).await?;
    Ok(Json(json!({ "top": top_json(&reading), "as_of": as_of(&reading, &api.topic) })))
}

fn top_json(reading: &Reading) -> Vec<Value> {
    let rows = reading.top.iter().enumerate();
    rows.map(|(i, (customer, total))| json!({ "rank": i + 1, "customer": customer, "total": Money(*total) })).collect()
}

fn categories_json(reading: &Reading) -> Vec<Value> {
    let rows = reading.categories.iter().map(|(c, s)| (c, SumOut::from(*s)));
    rows.map(|(c, sum)| json!({ "category": c, "total": sum.total, "count": sum.count })).collect()
}

fn hourly_json(reading: &Reading, from: Option<i64>, to: Option<i64>) -> Vec<Value> {
    let rows = reading.hourly_between(from, to);
    rows.map(|(h, s)| (h, SumOut::from(*s)))
        .map(|(h, sum)| json!({ "hour": format_hour(*h), "total": sum.total, "count": sum.count }))
        .collect()
}

fn dead_letters_json(reading: &Reading) -> serde_json::Map<String, Value> {
    reading.dead_letters.iter().map(|(r, n)| (r.to_string(), (*n).into())).collect()
}

/// Every view of `reading`, as `GET /v1/views` answers (and `lambda verify` reads back).
pub fn views_json(reading: &Reading, topic: &str) -> Value {
    let customers: Vec<_> = reading.customers.iter().map(|(c, r)| CustomerOut::new(c, r)).collect();
    let overall = SumOut::from(reading.overall);
    json!({
        "customers": customers,
        "top": top_json(reading),
        "categories": categories_json(reading),
        "hourly": hourly_json(reading, None, None),
        "overall": { "total": overall.total, "count": overall.count },
        "customer_count": reading.customer_count,
        "dead_letters": dead_letters_json(reading),
        "created": reading.created,
        "as_of": as_of(reading, topic),
    })
}

/// The largest `k` a full reading accepts: every customer is in it anyway.
const MAX_TOP_OF_VIEWS: usize = 10_000_000;

async fn views(State(api): State<Arc<Api>>, Query(params): Query<HashMap<String, String>>) -> Answer {
    let top_k = number(&params, "k", api.top, MAX_TOP_OF_VIEWS)?;
    let reading = api.sql.read_all(top_k).await.map_err(|e| ApiError(status_of(&e), e.to_string()))?;
    Ok(Json(views_json(&reading, &api.topic)))
}

async fn categories(State(api): State<Arc<Api>>) -> Answer {
    let reading = read(&api, ReadScope::Totals).await?;
    Ok(Json(json!({ "categories": categories_json(&reading), "as_of": as_of(&reading, &api.topic) })))
}

async fn hourly(State(api): State<Arc<Api>>, Query(params): Query<HashMap<String, String>>) -> Answer {
    let bound = |name: &str| -> Result<Option<i64>, ApiError> {
        params
            .get(name)
            .map(|text| {
                parse_hour_bound(text).ok_or_else(|| {
                    ApiError(
                        StatusCode::BAD_REQUEST,
                        format!("{name} must be an RFC 3339 time or 2025-01-01T13, not {text:?}"),
                    )
                })
            })
            .transpose()
    };
    let (from, to) = (bound("from")?, bound("to")?);
    let reading = read(&api, ReadScope::Totals).await?;
    Ok(Json(json!({ "hourly": hourly_json(&reading, from, to), "as_of": as_of(&reading, &api.topic) })))
}

async fn status(State(api): State<Arc<Api>>) -> Answer {
    status_json(&api).await.map(Json)
}

async fn status_json(api: &Arc<Api>) -> Result<Value, ApiError> {
    let reading = read(api, ReadScope::Totals).await?;
    let name = |p: &i32| format!("{}/{p}", api.topic);
    let skipped = reading.skipped();
    let partitions: serde_json::Map<String, Value> = consumer_lag(&reading.offsets, &reading.high_watermarks())
        .into_iter()
        .map(|(p, next, lag)| {
            let high = lag.map(|l| next + l);
            let skipped = skipped.get(&p).copied().unwrap_or(0);
            (name(&p), json!({ "next_offset": next, "high_watermark": high, "lag": lag, "skipped": skipped }))
        })
        .collect();
    let workers: Vec<Value> = reading
        .workers
        .iter()
        .map(|w| {
            let partitions: Vec<String> = w.partitions.iter().map(|(p, _)| name(p)).collect();
            json!({ "worker": w.worker, "process": w.process, "partitions": partitions })
        })
        .collect();
    let processes: std::collections::BTreeSet<usize> = reading.workers.iter().map(|w| w.process).collect();
    let (history, kafka) = reading.records_read();
    let sinks: Vec<Value> = api
        .serving
        .metrics()
        .sinks()
        .into_iter()
        .map(|((view, topic), sink)| {
            let lag_ms = reading.time.saturating_sub(sink.time);
            json!({ "view": view, "topic": topic, "time": sink.time, "lag_ms": lag_ms, "messages": sink.messages, "error": sink.error })
        })
        .collect();
    Ok(json!({
        "as_of": as_of(&reading, &api.topic),
        "transactions": reading.overall.count,
        "total": Money(reading.overall.cents),
        "customers": reading.customer_count,
        "dead_letters": dead_letters_json(&reading),
        "records_read": { "history": history, "kafka": kafka },
        "partitions": partitions,
        "kafka": kafka_json(api, &reading),
        "processes": processes.len(),
        "workers": workers,
        "sinks": sinks,
        "tables": tables_json(&reading),
    }))
}

/// Each table's feed: records taken in and refused, its topic's next offsets, why its
/// topic is not being read while it is not (`waiting`), and whether its generator has sent
/// every event (`ended`).
fn tables_json(reading: &Reading) -> Value {
    let tables: Vec<Value> = reading
        .workers
        .iter()
        .flat_map(|w| &w.tables)
        .map(|t| {
            let offsets: serde_json::Map<String, Value> =
                t.offsets.iter().map(|(p, o)| (p.to_string(), json!(o))).collect();
            json!({ "name": t.name, "records": t.records, "refused": t.refused, "offsets": offsets, "waiting": t.waiting, "ended": t.ended.is_some() })
        })
        .collect();
    Value::Array(tables)
}

/// Where reading Kafka stands: `reading`, `unreachable` (with the error; the history is
/// served meanwhile) or `starting`, and the errors the workers' readers last met.
fn kafka_json(api: &Api, reading: &Reading) -> Value {
    let errors: Vec<&str> = reading.workers.iter().filter_map(|w| w.kafka_error.as_deref()).collect();
    match api.serving.metrics().kafka_state() {
        KafkaState::Reading if errors.is_empty() => json!({ "state": "reading" }),
        KafkaState::Reading => json!({ "state": "unreachable", "error": errors[0] }),
        KafkaState::Unreachable(error) => json!({ "state": "unreachable", "error": error }),
        KafkaState::Starting => json!({ "state": "starting" }),
    }
}

/// Liveness: the process answers, and says where reading Kafka stands.
async fn healthz(State(api): State<Arc<Api>>) -> Response {
    let state = match api.serving.metrics().kafka_state() {
        KafkaState::Reading => "reading".to_owned(),
        KafkaState::Unreachable(error) => format!("unreachable: {error}"),
        KafkaState::Starting => "starting".to_owned(),
    };
    Json(json!({ "status": "ok", "kafka": state })).into_response()
}

/// Readiness: 200 once the views answer and the topic is being read; 503 (with the reason)
/// while Kafka cannot be reached, though the history views are served meanwhile.
async fn readyz(State(api): State<Arc<Api>>) -> Response {
    match read(&api, ReadScope::Totals).await {
        Err(error) => error.into_response(),
        Ok(reading) => {
            let kafka = kafka_json(&api, &reading);
            let code = if kafka["state"] == "reading" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            (
                code,
                Json(json!({ "ready": code == StatusCode::OK, "kafka": kafka, "as_of": as_of(&reading, &api.topic) })),
            )
                .into_response()
        }
    }
}

async fn view(State(api): State<Arc<Api>>, Path(name): Path<String>) -> Answer {
    let answer = view_rows(&api, &name, None).await?;
    let columns: Vec<String> = answer.columns().into_iter().map(|(n, _)| n).collect();
    let rows = answer.objects();
    Ok(Json(json!({ "view": name, "columns": columns, "rows": rows, "as_of": answer_as_of(&api, &answer) })))
}

async fn view_key(State(api): State<Arc<Api>>, Path((name, key)): Path<(String, String)>) -> Answer {
    let answer = view_rows(&api, &name, Some(&key)).await?;
    let Some(row) = answer.objects().into_iter().next() else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("view {name:?} has no row for {key:?}")));
    };
    Ok(Json(json!({ "view": name, "row": row, "as_of": answer_as_of(&api, &answer) })))
}

/// Reads a view through the SQL engine (one way to read any view): all its rows, or those of
/// one `key` (bound as a typed parameter, never pasted into the statement).
async fn view_rows(api: &Arc<Api>, name: &str, key: Option<&str>) -> Result<crate::sql::Answer, ApiError> {
    let sql_error = |error: crate::sql::SqlError| ApiError(status_of(&error), error.to_string());
    let quoted = name.replace('"', "\"\"");
    let Some(key) = key else {
        return api.sql.execute(&format!("SELECT * FROM \"{quoted}\"")).await.map_err(sql_error);
    };
    let Some((_, column)) = api.sql.view_key(name).map_err(sql_error)? else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("view {name:?} has no key to look up")));
    };
    // The key, given as text, is bound as a value of the key column's type (a time, a number).
    let column = column.replace('"', "\"\"");
    let statement = format!("SELECT * FROM \"{quoted}\" WHERE \"{column}\" = $1");
    let (types, _) = api.sql.describe(&statement).await.map_err(sql_error)?;
    let text = datafusion::common::ScalarValue::Utf8(Some(key.to_owned()));
    let value = match types.first().cloned().flatten() {
        Some(kind) => text.cast_to(&kind).map_err(|_| {
            ApiError(StatusCode::BAD_REQUEST, format!("{key:?} is not a value of {name}'s key {column} ({kind})"))
        })?,
        None => text,
    };
    let params = datafusion::common::ParamValues::List(vec![value.into()]);
    let mut session = crate::sql::session::Session::default();
    api.sql.execute_bound(&mut session, &statement, params).await.map_err(sql_error)
}

/// The HTTP status of a SQL error met reading a view.
fn status_of(error: &crate::sql::SqlError) -> StatusCode {
    match error.code() {
        "42P01" | "42704" => StatusCode::NOT_FOUND,
        "57014" => StatusCode::GATEWAY_TIMEOUT,
        // Too large an answer (`--max-rows`), a key that is not a value of the key's type:
        // the request's doing.
        code if code.starts_with("22") || code.starts_with("42") || code == "54000" => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn answer_as_of(api: &Api, answer: &crate::sql::Answer) -> Value {
    answer.as_of.as_ref().map_or(Value::Null, |reading| as_of(reading, &api.topic))
}

/// `POST /v1/sql`: one statement, as the body (`application/sql`), or `{"sql": "..."}`
/// (`application/json`).
async fn sql_statement(
    State(api): State<Arc<Api>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let statement = match guard::body_type(&headers, &[guard::Body::Sql, guard::Body::Json]) {
        Err(refused) => return refused.into_response(),
        Ok(guard::Body::Json) => {
            let value: Option<Value> = serde_json::from_slice(&body).ok();
            match value.as_ref().and_then(|v| v.get("sql").or_else(|| v.get("query"))).and_then(Value::as_str) {
                Some(statement) => statement.to_owned(),
                None => return ApiError(StatusCode::BAD_REQUEST, "send {\"sql\": \"...\"}".into()).into_response(),
            }
        }
        Ok(_) => match String::from_utf8(body.to_vec()) {
            Ok(statement) => statement,
            Err(_) => return ApiError(StatusCode::BAD_REQUEST, "the statement is not UTF-8".into()).into_response(),
        },
    };
    match api.sql.execute(&statement).await {
        Ok(answer) => {
            let columns: Vec<Value> =
                answer.columns().into_iter().map(|(name, ty)| json!({ "name": name, "type": ty })).collect();
            let mut out = json!({ "columns": columns, "rows": answer.rows() });
            if let Some(tag) = &answer.tag {
                out["tag"] = tag.clone().into();
            }
            if let Some(reading) = &answer.as_of {
                out["as_of"] = as_of(reading, &api.topic);
            }
            Json(out).into_response()
        }
        Err(error) => {
            let status = if error.code() == "57014" { StatusCode::GATEWAY_TIMEOUT } else { StatusCode::BAD_REQUEST };
            let mut body = json!({ "error": error.to_string(), "code": error.code() });
            if let Some(position) = error.position() {
                body["position"] = position.into();
            }
            (status, Json(body)).into_response()
        }
    }
}

async fn metrics(State(api): State<Arc<Api>>) -> Result<Response, ApiError> {
    let names: Vec<String> = {
        let catalog = api.sql.catalog().lock().unwrap_or_else(|p| p.into_inner());
        catalog.all().into_iter().map(|(d, _)| d.name).collect()
    };
    let mut rows = Vec::with_capacity(names.len());
    for name in names {
        // A view dropped meanwhile is simply left out.
        if let Ok(answer) = api.sql.execute(&format!("SELECT count(*) FROM \"{name}\"")).await {
            if let Some(n) = answer.rows().first().and_then(|r| r.first()).and_then(Value::as_i64) {
                rows.push((name, n));
            }
        }
    }
    api.serving.metrics().set_view_rows(&rows);
    let reading = read(&api, ReadScope::Totals).await?;
    let text = api.serving.metrics().render(&reading, &api.topic);
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response())
}
