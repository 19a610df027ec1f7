//! The pages the relay serves under `/`: the browser client (`/`) and the console
//! (`/console`), from the files in `web/`, compiled into the binary (no npm, no build step),
//! and `/web/config.json`, which tells the client where the SIP-over-WebSocket listener is
//! and which services exist. The pages talk to the relay like any other client: SIP over
//! WebSocket for calls, the REST API (with a key the person types) for the console.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::store::Store;

/// What `/web/config.json` is made from.
#[derive(Clone)]
pub struct WebSettings {
    pub store: Store,
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
