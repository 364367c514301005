//! The HTTP side of [`crate::serve::access`]: what every request passes before a route sees it.
//!
//! In this order, each answered with a JSON error:
//!
//! 1. **Host** (a loopback server only): the `Host` header must name this machine's loopback
//!    (`localhost`, `127.0.0.1`, `[::1]`, any port) — else 403. A page of `evil.example` whose
//!    name was re-pointed at 127.0.0.1 (DNS rebinding) sends `Host: evil.example`.
//! 2. **Origin** (every method but `GET`/`HEAD`): an `Origin` header, when present, must be this
//!    server's own (`http://` + the `Host`), and `Sec-Fetch-Site` must not say `cross-site` or
//!    `same-site` — else 403. Browsers send both with every cross-site request.
//! 3. **Secret** (when one is set): `Authorization: Bearer <secret>` or the dashboard's session
//!    cookie — else 401. Open without it: `GET /healthz` (liveness), `GET /` (the dashboard's
//!    page, which holds no data) and `POST /v1/login` (where the dashboard trades the secret
//!    for its cookie, `HttpOnly; SameSite=Strict`).
//!
//! Bodies are checked by the routes that take one ([`body_type`]): a web page can send
//! `text/plain`, form encodings and `multipart/form-data` to any site without asking the site
//! first (a CORS "simple request"), so those are refused with 415; `application/json`,
//! `application/sql` and `application/x-ndjson` need a preflight, which this server never
//! grants.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::serve::access::Access;

/// The dashboard's session cookie.
pub const COOKIE: &str = "lambda_session";
/// How long a wrong secret waits before its answer (a brake on guessing).
const WRONG_SECRET_DELAY: Duration = Duration::from_millis(250);

/// What the guard knows of the server it guards.
pub struct Guard {
    /// The secret, if any, and the session cookie's value.
    pub access: Access,
    /// Whether the server listens on loopback only (then `Host` is checked).
    pub loopback: bool,
}

fn refuse(status: StatusCode, error: String) -> Response {
    (status, Json(json!({ "error": error }))).into_response()
}

/// The guard, as an axum middleware: see the module's documentation.
pub async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if guard.loopback && !host.is_empty() && !is_loopback_host(host) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!("Host {host:?} is not this server's name: it serves loopback only (use http://127.0.0.1 or http://localhost)"),
        );
    }
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD);
    if changes {
        if let Some(why) = foreign(headers, host) {
            return refuse(StatusCode::FORBIDDEN, why);
        }
    }
    if let Some(secret) = guard.access.secret() {
        let path = request.uri().path();
        // The page, its embedded library (public code) and the login are open; no data is.
        let open = matches!((request.method(), path), (&Method::GET, "/healthz" | "/") | (&Method::POST, "/v1/login"))
            || (request.method() == Method::GET && path.starts_with("/assets/"));
        if !open {
            let bearer = bearer(headers).is_some_and(|token| secret.matches(token.as_bytes()));
            let cookie = cookie(headers, COOKIE).is_some_and(|token| guard.access.is_session(token));
            if !(bearer || cookie) {
                let mut response = refuse(
                    StatusCode::UNAUTHORIZED,
                    "this server asks for its secret: Authorization: Bearer <secret>".into(),
                );
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, "Bearer realm=\"lambda\"".parse().expect("valid"));
                return response;
            }
        }
    }
    next.run(request).await
}

/// Why a state-changing request comes from another site, if it does.
fn foreign(headers: &HeaderMap, host: &str) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
            return Some(format!("a request from another site (Sec-Fetch-Site: {site}) may not change anything here"));
        }
    }
    let origin = headers.get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("");
    let own = ["http://", "https://"].iter().any(|scheme| {
        origin.len() == scheme.len() + host.len()
            && origin[..scheme.len()].eq_ignore_ascii_case(scheme)
            && origin[scheme.len()..].eq_ignore_ascii_case(host)
    });
    (!own || host.is_empty()).then(|| format!("a request from origin {origin:?} may not change anything here"))
}

/// Whether a `Host` header names this machine's loopback: `localhost`, or a loopback IP, with
/// any port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(ip, _)| ip),
        None => {
            host.rsplit_once(':').map_or(host, |(name, port)| if port.parse::<u16>().is_ok() { name } else { host })
        }
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The body types a route takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// `application/json`.
    Json,
    /// `application/sql`: a statement as text.
    Sql,
    /// `application/x-ndjson` (or `application/jsonl`, `application/json-seq`): JSON lines.
    JsonLines,
}

/// A body of a type the route does not take: answered 415, naming those it takes.
#[derive(Debug)]
pub struct Refused(String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, self.0)
    }
}

/// The body type of a request, among those `accepted`; refused when it is another.
pub fn body_type(headers: &HeaderMap, accepted: &[Body]) -> Result<Body, Refused> {
    let given = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = given.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let body = match essence.as_str() {
        "application/json" => Some(Body::Json),
        "application/sql" => Some(Body::Sql),
        "application/x-ndjson" | "application/jsonl" | "application/json-seq" | "application/jsonlines" => {
            Some(Body::JsonLines)
        }
        _ => None,
    };
    match body {
        Some(body) if accepted.contains(&body) => Ok(body),
        _ => {
            let names: Vec<&str> = accepted
                .iter()
                .map(|b| match b {
                    Body::Json => "application/json",
                    Body::Sql => "application/sql",
                    Body::JsonLines => "application/x-ndjson",
                })
                .collect();
            let given = if given.is_empty() { "none".to_owned() } else { format!("{given:?}") };
            Err(Refused(format!("Content-Type {given} is not taken here; send {}", names.join(" or "))))
        }
    }
}

/// `POST /v1/login` with `{"password": "..."}`: the dashboard's session cookie when it is the
/// secret (204), else 401 after a short wait.
pub async fn login(State(guard): State<Arc<Guard>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(refused) = body_type(&headers, &[Body::Json]) {
        return refused.into_response();
    }
    let given: Option<String> = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("password").and_then(|p| p.as_str()).map(String::from));
    let Some(given) = given else {
        return refuse(StatusCode::BAD_REQUEST, "send {\"password\": \"...\"}".into());
    };
    match guard.access.secret() {
        Some(secret) if secret.matches(given.as_bytes()) => {
            let cookie = format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", guard.access.session());
            (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
        }
        Some(_) => {
            tokio::time::sleep(WRONG_SECRET_DELAY).await;
            refuse(StatusCode::UNAUTHORIZED, "that is not the secret".into())
        }
        None => refuse(StatusCode::NOT_FOUND, "this server has no secret to log in with".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_the_machines_own_names() {
        for host in ["localhost", "LOCALHOST:8080", "127.0.0.1", "127.0.0.1:8080", "127.1.2.3:1", "[::1]:8080", "[::1]"]
        {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in
            ["evil.example", "evil.example:8080", "10.0.0.1:8080", "localhost.evil.example", "[::2]:80", "0.0.0.0:80"]
        {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn only_the_servers_own_origin_may_change_things() {
        assert_eq!(foreign(&headers(&[]), "127.0.0.1:8080"), None, "no Origin: not a browser's cross-site request");
        assert_eq!(foreign(&headers(&[("origin", "http://127.0.0.1:8080")]), "127.0.0.1:8080"), None);
        for origin in ["http://evil.example", "null", "http://127.0.0.1:8081", "http://127.0.0.1:8080.evil"] {
            assert!(foreign(&headers(&[("origin", origin)]), "127.0.0.1:8080").is_some(), "{origin}");
        }
        assert!(foreign(&headers(&[("sec-fetch-site", "cross-site")]), "127.0.0.1:8080").is_some());
        assert_eq!(foreign(&headers(&[("sec-fetch-site", "same-origin")]), "127.0.0.1:8080"), None);
    }

    #[test]
    fn bodies_a_page_may_send_anywhere_are_refused() {
        let sql = [Body::Sql, Body::Json];
        assert_eq!(body_type(&headers(&[("content-type", "application/sql")]), &sql).ok(), Some(Body::Sql));
        assert_eq!(
            body_type(&headers(&[("content-type", "application/json; charset=utf-8")]), &sql).ok(),
            Some(Body::Json)
        );
        for simple in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""] {
            let given = if simple.is_empty() { headers(&[]) } else { headers(&[("content-type", simple)]) };
            let refused = body_type(&given, &sql).unwrap_err().into_response();
            assert_eq!(refused.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{simple}");
        }
    }

    #[test]
    fn bearer_tokens_and_cookies_are_read_from_their_headers() {
        assert_eq!(bearer(&headers(&[("authorization", "Bearer s3cret")])), Some("s3cret"));
        assert_eq!(bearer(&headers(&[("authorization", "Basic abc")])), None);
        let cookies = headers(&[("cookie", "a=1; lambda_session=xyz"), ("cookie", "b=2")]);
        assert_eq!(cookie(&cookies, COOKIE), Some("xyz"));
        assert_eq!(cookie(&cookies, "c"), None);
    }
}
