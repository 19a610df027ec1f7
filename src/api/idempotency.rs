//! `Idempotency-Key` on every `POST` under `/v1`: a retried request gets the first response
//! again, status included, and creates nothing twice.
//!
//! The [`middleware`] runs after authentication. For a POST carrying the header it:
//! 1. checks the key (1 to 255 visible ASCII characters; else 400 naming `Idempotency-Key`);
//! 2. fingerprints the request (method, path, body) and scopes the key to the caller (the
//!    operator, or one application server: two shops never share keys);
//! 3. refuses a key whose first request is still running on this node (409);
//! 4. for charges and adjustments, hands the key to the handler ([`IdempotencyContext`]),
//!    which records it in the transaction that writes the money; for other POSTs, replays a
//!    recorded response (same fingerprint) or refuses (422, another request), else runs the
//!    handler and records a 2xx answer right after it.
//!
//! Records are kept 24 hours. Responses carrying a secret (`Cache-Control: no-store`) are
//! recorded with the secret replaced by `"<shown once>"`: the database never holds a usable
//! key. `POST /v1/tokens/introspect` is a read and is never replayed (a token's state
//! changes); its key is ignored. Decision record: `docs/decisions/0010-billing.md`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{FromRequestParts, OriginalUri, Request, State};
use axum::http::{header, request::Parts, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::{ApiState, Principal, MAX_BODY_BYTES};
use crate::store::{IdempotencyKey, Recorded, StoredResponse};

/// The request header.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// Set on a replayed response.
pub const REPLAYED_HEADER: &str = "Idempotent-Replayed";
/// Longest key.
pub const MAX_KEY_LEN: usize = 255;
/// Most keys in flight on one node; past it new keyed requests get 503.
const MAX_IN_FLIGHT: usize = 10_000;

/// The key of a request whose handler records it in its own transaction.
#[derive(Debug, Clone)]
pub struct IdempotencyContext(pub IdempotencyKey);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<IdempotencyContext>()
            .cloned()
            .ok_or_else(|| {
                ApiError::field(
                    IDEMPOTENCY_KEY,
                    "this operation moves money: send an Idempotency-Key header (e.g. a UUID) \
                     and reuse it when you retry",
                )
            })
    }
}

/// Keys whose first request is running on this node.
#[derive(Debug, Default)]
pub struct InFlight {
    keys: Mutex<HashSet<(String, String)>>,
}

/// Holds a key in flight; releases it when dropped.
pub struct InFlightGuard {
    registry: Arc<InFlight>,
    key: (String, String),
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Ok(mut keys) = self.registry.keys.lock() {
            keys.remove(&self.key);
        }
    }
}

impl InFlight {
    fn enter(self: &Arc<Self>, key: &IdempotencyKey) -> Result<InFlightGuard, ApiError> {
        let id = (key.scope.clone(), key.key.clone());
        let mut keys = self
            .keys
            .lock()
            .map_err(|_| ApiError::Internal("idempotency registry poisoned".into()))?;
        if keys.len() >= MAX_IN_FLIGHT {
            return Err(ApiError::Unavailable(
                "too many requests in flight; retry shortly".into(),
            ));
        }
        if !keys.insert(id.clone()) {
            return Err(ApiError::Conflict(format!(
                "a request with Idempotency-Key {:?} is still being processed; retry once it \
                 has been answered",
                key.key
            )));
        }
        Ok(InFlightGuard {
            registry: self.clone(),
            key: id,
        })
    }
}

/// Routes that record the key in the transaction that writes the money.
fn recorded_by_handler(path: &str) -> bool {
    path == "/v1/adjustments" || (path.starts_with("/v1/sessions/") && path.ends_with("/charges"))
}

/// The idempotency scope of a caller.
pub fn scope_of(principal: &Principal) -> String {
    match principal {
        Principal::Operator => "operator".to_owned(),
        Principal::AppServer(server) => format!("app_server:{}", server.id),
    }
}

fn check_key(value: &HeaderValue) -> Result<String, ApiError> {
    let key = value.to_str().unwrap_or_default();
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::field(
            IDEMPOTENCY_KEY,
            format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
        ));
    }
    Ok(key.to_owned())
}

/// The recorded response, as it was, marked as a replay.
pub fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    if let Some(location) = stored.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    response
}

/// The 422 for a key reused with another request.
pub fn key_reused(key: &str) -> ApiError {
    ApiError::KeyReused(format!(
        "Idempotency-Key {key:?} was already used for a different request; use a new key"
    ))
}

/// See the module documentation.
pub(super) async fn middleware(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    match run(state, req, next).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn run(state: ApiState, req: Request, next: Next) -> Result<Response, ApiError> {
    let path = req
        .extensions()
        .get::<OriginalUri>()
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned());
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(next.run(req).await);
    };
    if req.method() != Method::POST || path == "/v1/tokens/introspect" {
        return Ok(next.run(req).await);
    }
    let key = check_key(value)?;
    let Some(principal) = req.extensions().get::<Principal>().cloned() else {
        return Ok(next.run(req).await);
    };
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::PayloadTooLarge(format!(
                "the request body is larger than {MAX_BODY_BYTES} bytes"
            ))
        })?;
    let key = IdempotencyKey {
        scope: scope_of(&principal),
        fingerprint: crate::billing::fingerprint(&[b"POST", path.as_bytes(), &bytes]),
        key,
    };
    let _guard = state.inner.in_flight.enter(&key)?;
    let mut req = Request::from_parts(parts, Body::from(bytes));
    if recorded_by_handler(&path) {
        req.extensions_mut().insert(IdempotencyContext(key));
        return Ok(next.run(req).await);
    }
    let now = state.now_ms();
    match state.store().idempotency_lookup(&key, now).await? {
        Some(Recorded::Same(stored)) => return Ok(replay(stored)),
        Some(Recorded::Different) => return Err(key_reused(&key.key)),
        None => {}
    }
    let response = next.run(req).await;
    if !response.status().is_success() {
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| ApiError::Internal(format!("reading a response body: {e}")))?;
    let secret = parts
        .headers
        .get(header::CACHE_CONTROL)
        .is_some_and(|v| v.as_bytes() == b"no-store");
    let body = String::from_utf8_lossy(&bytes).into_owned();
    let stored = StoredResponse {
        status: parts.status.as_u16(),
        location: parts
            .headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: if secret { redact(&body) } else { body },
    };
    state.store().idempotency_save(&key, &stored, now).await?;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// `api_key` and `secret` members replaced by `"<shown once>"`.
fn redact(body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut map)) => {
            for name in ["api_key", "secret"] {
                if map.contains_key(name) {
                    map.insert(name.into(), "<shown once>".into());
                }
            }
            serde_json::Value::Object(map).to_string()
        }
        _ => "{}".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_secrets_redacted() {
        assert!(check_key(&HeaderValue::from_static("abc-123")).is_ok());
        assert!(check_key(&HeaderValue::from_static("has space")).is_err());
        assert!(check_key(&HeaderValue::from_str(&"x".repeat(256)).unwrap()).is_err());
        let r = redact(r#"{"id":"a","api_key":"tgk_secret"}"#);
        assert!(!r.contains("tgk_secret") && r.contains("<shown once>"));
        assert!(recorded_by_handler("/v1/sessions/abc/charges"));
        assert!(!recorded_by_handler("/v1/users"));
    }
}
