//! The routes for watching the views move: the changefeeds (`GET /v1/subscribe`), the
//! status as a stream (`GET /v1/status/events`), the batch layer as first read
//! (`GET /v1/batch`), and the dashboard (`GET /`) with its producing form (`POST /v1/produce`).
//! The dashboard is one page embedded in the binary, `dashboard.html`, that reads only these
//! routes and `POST /v1/sql`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{status_json, views_json, Answer, Api, ApiError};
use crate::serve::bound::MinOffsets;
use crate::serve::feed::{Event, SubscribeError};

/// `GET /v1/status/events`: the status as Server-Sent Events, one a second (what the
/// dashboard shows of offsets, lag, dead letters and sinks, without polling).
pub(super) async fn status_events(State(api): State<Arc<Api>>) -> Response {
    use axum::response::sse::{Event as Sse, KeepAlive};
    let stream = futures::stream::unfold((api, true), |(api, first)| async move {
        if !first {
            tokio::time::sleep(crate::serve::feed::PROGRESS_EVERY).await;
        }
        let event = match status_json(&api).await {
            Ok(status) => Sse::default().event("status").data(status.to_string()),
            Err(ApiError(_, error)) => Sse::default().event("error").data(json!({ "error": error }).to_string()),
        };
        Some((Ok::<_, std::convert::Infallible>(event), (api, false)))
    });
    axum::response::Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// `GET /v1/progress?every_ms=N`: Server-Sent Events saying that the views moved — a
/// `progress` event (`{"time", "offsets"}`) when the input offsets the views reflect have
/// changed since the last one, at most one every `every_ms` (250 by default, 50 at least):
/// however fast messages arrive, a watcher hears of them a few times a second and reads what
/// it shows then (the dashboard reads the rows it displays, not every change). The first
/// event comes at once; a quiet pipeline sends nothing but keep-alives.
pub(super) async fn progress(
    State(api): State<Arc<Api>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event as Sse, KeepAlive};
    let every = match params.get("every_ms") {
        None => 250,
        Some(text) => match text.parse::<u64>() {
            Ok(ms) if (50..=60_000).contains(&ms) => ms,
            _ => return Err(ApiError(StatusCode::BAD_REQUEST, format!("every_ms must be 50 to 60000, not {text:?}"))),
        },
    };
    let mut ticks = tokio::time::interval(std::time::Duration::from_millis(every));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures::stream::unfold((api, ticks, None::<Value>), |(api, mut ticks, mut last)| async move {
        loop {
            ticks.tick().await;
            let Some(reading) = api.feeds.offsets().await else { continue };
            let as_of = crate::output::as_of(&reading, &api.topic);
            if last.as_ref() == Some(&as_of["offsets"]) {
                continue;
            }
            last = Some(as_of["offsets"].clone());
            let event = Sse::default().event("progress").id(reading.time.to_string()).data(as_of.to_string());
            return Some((Ok::<_, std::convert::Infallible>(event), (api, ticks, last)));
        }
    });
    Ok(axum::response::Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// `GET /v1/batch`: the batch layer — every view as first read after the start (the history,
/// or the snapshot resumed from), with the `as_of` it reflects.
pub(super) async fn batch(State(api): State<Arc<Api>>) -> Answer {
    match api.serving.first_reading() {
        Some(reading) => Ok(Json(views_json(reading, &api.topic))),
        None => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, "the history is still being loaded".into())),
    }
}

/// `GET /v1/subscribe`: a view's changefeed as Server-Sent Events (see [`crate::serve::feed`]).
pub(super) async fn subscribe(
    State(api): State<Arc<Api>>,
    Query(params): Query<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let bad = |message: String| ApiError(StatusCode::BAD_REQUEST, message);
    let view = params.get("view").ok_or_else(|| bad("view= is required: the view to follow".into()))?.clone();
    let only = params.get("key").cloned();
    let resume =
        params.get("as_of").map(String::as_str).or_else(|| headers.get("last-event-id").and_then(|v| v.to_str().ok()));
    let after = match resume {
        None => None,
        Some(text) => Some(text.trim().parse::<crate::dataflow::Time>().map_err(|_| {
            bad(format!("as_of (or Last-Event-ID) must be a logical time, a whole number; not {text:?}"))
        })?),
    };
    // Checked already, waited for already by `read_your_writes`.
    let min = params.get("min_offsets").and_then(|text| MinOffsets::parse(text, &api.topic).ok());
    let subscription = match api.feeds.subscribe(&view, after, min.as_ref()).await {
        Ok(subscription) => subscription,
        Err(SubscribeError::View(error)) if error.code() == "42P01" => {
            return Err(ApiError(StatusCode::NOT_FOUND, error.to_string()))
        }
        Err(SubscribeError::View(error)) => return Err(ApiError(super::status_of(&error), error.to_string())),
        Err(SubscribeError::Gone { earliest }) => {
            let error = format!(
                "time {} is no longer kept; resume from {earliest} or later, or subscribe anew",
                after.unwrap_or(0)
            );
            return Ok((StatusCode::GONE, Json(json!({ "error": error, "earliest": earliest }))).into_response());
        }
        Err(SubscribeError::Ahead { latest }) => {
            return Err(bad(format!("time {} is ahead of the views (at {latest})", after.unwrap_or(0))))
        }
    };
    if let (Some(key), None) = (&only, &subscription.key_column) {
        return Err(bad(format!("view {view:?} has no key to follow {key:?} by")));
    }
    let feeds = api.feeds.clone();
    let sse = move |event: &Arc<Event>| -> Bytes {
        let time = event.time();
        if only.is_none() {
            // The same frame for every subscriber of the view: made once, shared (no copy).
            feeds.rendered(event, |event| frame(event.kind(), time, &event.to_json(&view, None).to_string()))
        } else if event.concerns(only.as_deref()) {
            frame(event.kind(), time, &event.to_json(&view, only.as_deref()).to_string())
        } else {
            // A change of other keys: the subscriber's time moves on all the same.
            let progress = match &**event {
                Event::Changes { time, offsets, .. } => Event::Progress { time: *time, offsets: offsets.clone() },
                other => other.clone(),
            };
            frame(progress.kind(), time, &progress.to_json(&view, None).to_string())
        }
    };
    let stream = futures::stream::unfold(subscription, move |mut subscription| {
        let sse = sse.clone();
        async move {
            // A comment line when nothing was sent for a while, as proxies expect (the feed
            // itself sends progress every second while its view is quiet).
            let chunk = match tokio::time::timeout(KEEP_ALIVE, subscription.next()).await {
                Ok(Some(event)) => sse(&event),
                Ok(None) => return None,
                Err(_) => Bytes::from_static(b":\n\n"),
            };
            Some((Ok::<_, std::convert::Infallible>(chunk), subscription))
        }
    });
    let headers = [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")];
    Ok((headers, axum::body::Body::from_stream(stream)).into_response())
}

/// How long a changefeed stays silent before a keep-alive comment.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// An event as one Server-Sent Events frame: its kind, its time as the `id` (what a client
/// resumes from), and its JSON on one `data:` line.
///
/// ```text
/// event: changes
/// id: 1796591761153
/// data: {"changes":[{"diff":-1,"key":"Ali",...}],"offsets":{...},"time":1796591761153,"view":"customers"}
///
/// ```
fn frame(kind: &str, time: Option<crate::dataflow::Time>, json: &str) -> Bytes {
    // Compact JSON has no line break (serde_json escapes them in strings): one data line.
    debug_assert!(!json.contains('\n'));
    let mut out = String::with_capacity(json.len() + 48);
    out.push_str("event: ");
    out.push_str(kind);
    out.push('\n');
    if let Some(time) = time {
        out.push_str("id: ");
        out.push_str(&time.to_string());
        out.push('\n');
    }
    out.push_str("data: ");
    out.push_str(json);
    out.push_str("\n\n");
    Bytes::from(out)
}

/// `GET /`: the dashboard, one page embedded in the binary (see `dashboard.html`).
pub(super) async fn dashboard(State(api): State<Arc<Api>>) -> Response {
    let config = json!({ "topic": api.topic, "produce": api.produce_to.is_some(), "secret": api.asks_secret });
    let page = include_str!("dashboard.html").replace("/*CONFIG*/null", &config.to_string());
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

/// `GET /assets/{file}`: what the dashboard embeds (see `assets/README.md`): uPlot, its
/// style and its license, from the binary.
pub(super) async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "uPlot.iife.min.js" => (include_str!("assets/uPlot.iife.min.js"), "text/javascript; charset=utf-8"),
        "uPlot.min.css" => (include_str!("assets/uPlot.min.css"), "text/css; charset=utf-8"),
        "uPlot.LICENSE" => (include_str!("assets/uPlot.LICENSE"), "text/plain; charset=utf-8"),
        _ => return ApiError(StatusCode::NOT_FOUND, format!("no asset {file:?}")).into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "public, max-age=86400")], body).into_response()
}

/// `POST /v1/produce`: the body's lines (JSON events) to the topic, keyed by their `id` —
/// the dashboard's form, only with `--dashboard-produce`. Answers how many and the
/// read-your-writes bound of what was written.
pub(super) async fn produce(
    State(api): State<Arc<Api>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let Some(brokers) = api.produce_to.clone() else {
        let error = "producing from the dashboard is off; start lambda run with --dashboard-produce";
        return Err(ApiError(StatusCode::FORBIDDEN, error.into()));
    };
    if let Err(refused) = super::guard::body_type(&headers, &[super::guard::Body::JsonLines, super::guard::Body::Json])
    {
        return Ok(refused.into_response());
    }
    let body = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, "the body is not UTF-8".into()))?;
    let lines: Vec<String> = body.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    if lines.is_empty() {
        return Err(ApiError(StatusCode::BAD_REQUEST, "nothing to produce: give one JSON event per line".into()));
    }
    let topic = api.topic.clone();
    let sent = tokio::task::spawn_blocking(move || {
        crate::produce::produce(&brokers, &topic, lines.into_iter(), crate::produce::Pace::Flat, || false)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")))?;
    let bound = MinOffsets(sent.next_offsets).display(&api.topic);
    Ok(Json(json!({ "sent": sent.sent, "min_offsets": bound })).into_response())
}
