//! The pages the relay serves under `/`: the browser client (`/`) and the console
//! (`/console`), from the files in `web/`, compiled into the binary (no npm, no build step),
//! and `/web/config.json`, which tells the client where the SIP-over-WebSocket listener is
//! and which services exist. The pages talk to the relay like any other client: SIP over
//! WebSocket for calls, the REST API (with a key the person types) for the console.
//!
//! `GET /web/my-statement` is a signed-in user's own statement: HTTP Basic with the user's
//! SIP name and password, checked against the digest HA1 the relay keeps (constant time; an
//! unknown user and a wrong password get the same 401), five failures a minute per client
//! address at most (then 429). Decision record 0041.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use subtle::ConstantTimeEq;

use crate::billing::statement::Statement;
use crate::clock::SharedClock;
use crate::relay::directory::DirectoryCache;
use crate::sip::digest::{self, Algorithm};
use crate::store::Store;

/// Failed sign-ins per client address and minute before `/web/my-statement` answers 429.
pub const MAX_FAILURES_PER_MINUTE: u32 = 5;
/// Client addresses the failure counter remembers (it is cleared when full).
const MAX_TRACKED: usize = 10_000;

/// What the pages' routes need.
#[derive(Clone)]
pub struct WebSettings {
    pub store: Store,
    pub directory: Arc<DirectoryCache>,
    pub clock: SharedClock,
    /// Failed sign-ins: address → (minute, count).
    pub failures: Arc<Mutex<HashMap<IpAddr, (i64, u32)>>>,
    pub domain: String,
    /// `ws` or `wss`, and the port of the first WebSocket listener; `None` without one.
    pub websocket: Option<(&'static str, u16)>,
}

/// The routes of the pages (no fallback: merged into the API router, which has one).
pub fn router<S>(settings: WebSettings) -> Router<S> {
    Router::new()
        .route("/", get(|| file("index.html")))
        .route("/console", get(|| file("console.html")))
        .route(
            "/web/{name}",
            get(|axum::extract::Path(name): axum::extract::Path<String>| file_owned(name)),
        )
        .route("/web/config.json", get(config))
        .route("/web/my-statement", get(my_statement))
        .with_state(settings)
}

/// The embedded files: name, content type, bytes.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../web/index.html"),
    ),
    (
        "console.html",
        "text/html; charset=utf-8",
        include_str!("../web/console.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../web/style.css"),
    ),
    (
        "md5.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/md5.js"),
    ),
    (
        "sip-ua.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/sip-ua.js"),
    ),
    (
        "client.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/client.js"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/console.js"),
    ),
];

async fn file_owned(name: String) -> Response {
    file(&name).await
}

async fn file(name: &str) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            *body,
        )
            .into_response(),
        None => crate::api::ApiError::NotFound(format!("no page {name}")).into_response(),
    }
}

async fn config(State(settings): State<WebSettings>, headers: HeaderMap) -> Response {
    // The page reaches the WebSocket at the host it reached this page at.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| match h.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            _ => h,
        })
        .unwrap_or("127.0.0.1")
        .to_owned();
    let ws_url = settings
        .websocket
        .map(|(scheme, port)| format!("{scheme}://{host}:{port}"));
    let services: Vec<serde_json::Value> = match settings.store.list_services().await {
        Ok(list) => list
            .iter()
            .map(|s| serde_json::json!({ "address": s.address(), "fork_mode": s.fork_mode.as_str() }))
            .collect(),
        Err(e) => return crate::api::ApiError::from(e).into_response(),
    };
    Json(serde_json::json!({
        "domain": settings.domain,
        "ws_url": ws_url,
        "services": services,
    }))
    .into_response()
}

/// `user:password` of an `Authorization: Basic` header.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || b64.len() > 1024 {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(b64.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

async fn my_statement(
    State(settings): State<WebSettings>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let minute = settings.clock.now_ms() / 60_000;
    let ip = peer.ip();
    let blocked = {
        let failures = settings.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures
            .get(&ip)
            .is_some_and(|(m, n)| *m == minute && *n >= MAX_FAILURES_PER_MINUTE)
    };
    if blocked {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "60")],
            "Too many failed sign-ins: wait a minute.",
        )
            .into_response();
    }
    let snapshot = settings.directory.snapshot();
    let verified = basic(&headers).and_then(|(user, password)| {
        let found = snapshot.users.get(&user);
        // An unknown user costs the same hash as a known one.
        let realm = found.map_or("-", |c| c.realm.as_str());
        let ha1 = digest::ha1(Algorithm::Md5, &user, realm, &password);
        let expected = found.map_or("", |c| c.ha1_md5.as_str());
        let same = bool::from(ha1.as_bytes().ct_eq(expected.as_bytes()));
        found.filter(|_| same).map(|c| (c.id.clone(), user.clone()))
    });
    let Some((id, name)) = verified else {
        let mut failures = settings.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED {
            failures.clear();
        }
        let entry = failures.entry(ip).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 += 1;
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"tollgate\"")],
            "Wrong user name or password.",
        )
            .into_response();
    };
    let now = settings.clock.now_ms();
    match Statement::build(&settings.store, &id, &name, 0, now + 1).await {
        Ok(statement) => ([(header::CACHE_CONTROL, "no-store")], Json(statement)).into_response(),
        Err(e) => crate::api::ApiError::from(e).into_response(),
    }
}
