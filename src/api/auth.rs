//! Who is calling: bearer keys, the [`Principal`] they resolve to, and the middleware that
//! authenticates and rate-limits every `/v1` request.
//!
//! Every key travels as `Authorization: Bearer KEY`:
//! - the **operator key** (`[api] operator_key` / `TOLLGATE_OPERATOR_KEY`) may do everything;
//!   it is compared in constant time (SHA-256 of both sides, then `subtle`);
//! - an **application server's key** (`tgk_…`, shown once when the server was created) may
//!   read its own sessions and introspect tokens minted for it, nothing else. Another
//!   server's session is answered 404, exactly as a session that does not exist, so a key
//!   cannot even learn which session ids are live.
//!
//! The middleware, in order: resolve the key (no key or an unknown one leaves the request
//! anonymous), charge the request to a rate-limit bucket (the principal's, or the client IP's
//! when anonymous), answer 429 when that bucket is empty, answer 401 when anonymous, and hand
//! the [`Principal`] to the handler through the request's extensions. Anonymous requests are
//! limited by IP before the 401, so guessing keys costs the same budget as using one.
//!
//! Application-server keys that resolved are remembered for [`KEY_CACHE_TTL`] ([`KeyCache`]),
//! so a busy shop's requests cost no database round trip each. A change made through this
//! node's API (key reissued, server changed or deleted) empties the cache at once; one made
//! elsewhere (another node, the CLI) is seen within [`KEY_CACHE_TTL`]. A key's own expiry (the
//! grace of a replaced key) is checked on every request. Unknown keys are never remembered.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, request::Parts, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::rate_limit::Client;
use super::ApiState;
use crate::store::{AppServerRecord, API_KEY_PREFIX};

/// The authenticated caller of a `/v1` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The operator key: every operation.
    Operator,
    /// An application server's key: its own sessions, and introspection of its tokens.
    AppServer(AppServerRecord),
}

impl Principal {
    /// The application-server filter of a list this caller asks for with `wanted` (an id):
    /// the operator's as given; an application server's own id — or `None` when it asks for
    /// another server's, whose rows do not exist for it (an empty page).
    pub fn app_server_filter(&self, wanted: Option<String>) -> Option<Option<String>> {
        match (self, wanted) {
            (Principal::Operator, wanted) => Some(wanted),
            (Principal::AppServer(own), Some(wanted)) if wanted != own.id => None,
            (Principal::AppServer(own), _) => Some(Some(own.id.clone())),
        }
    }

    /// The rate-limit bucket of this principal.
    fn bucket(&self) -> String {
        match self {
            Principal::Operator => "operator".to_owned(),
            Principal::AppServer(server) => format!("app_server:{}", server.id),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthorized {
                detail: "an API key is required: send Authorization: Bearer KEY".into(),
                invalid_token: false,
            })
    }
}

/// Extracts only for the operator key; an application server's key gets 403.
#[derive(Debug, Clone, Copy)]
pub struct Operator;

impl<S: Send + Sync> FromRequestParts<S> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Principal::from_request_parts(parts, state).await? {
            Principal::Operator => Ok(Operator),
            Principal::AppServer(_) => Err(ApiError::Forbidden(
                "this operation needs the operator key; an application server's key may only \
                 read its own sessions and introspect its tokens"
                    .into(),
            )),
        }
    }
}

/// SHA-256 of a key, for constant-time comparison at a fixed length.
pub(super) fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The key of an `Authorization: Bearer KEY` header. The scheme is case-insensitive
/// (RFC 9110 §11.1); anything else is no key at all.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.trim().split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

/// Whether `key` is the operator key (compared in constant time).
pub(super) fn is_operator_key(state: &ApiState, key: &str) -> bool {
    state
        .inner
        .operator_key_digest
        .is_some_and(|d| bool::from(key_digest(key).ct_eq(&d)))
}

/// How long a resolved application-server key is believed without asking the database.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(1);
/// Most keys remembered; a full cache is emptied (only valid keys get in, so it fills only
/// with that many live shops).
const KEY_CACHE_ENTRIES: usize = 10_000;

/// Application-server keys recently resolved, by SHA-256 of the key. See the module
/// documentation for what it may miss and for how long.
#[derive(Debug, Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<[u8; 32], CachedKey>>,
}

#[derive(Debug)]
struct CachedKey {
    server: AppServerRecord,
    /// The key stops working then (a replaced key in its grace period).
    expires_at: Option<i64>,
    fetched: Instant,
}

impl KeyCache {
    /// The server of the key with digest `digest`, if remembered, fresh, and not expired at
    /// `now_ms`.
    fn get(&self, digest: &[u8; 32], now_ms: i64) -> Option<AppServerRecord> {
        let entries = self.entries.lock().ok()?;
        let hit = entries.get(digest)?;
        (hit.fetched.elapsed() < KEY_CACHE_TTL && hit.expires_at.is_none_or(|at| at > now_ms))
            .then(|| hit.server.clone())
    }

    fn put(&self, digest: [u8; 32], server: AppServerRecord, expires_at: Option<i64>) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= KEY_CACHE_ENTRIES {
                entries.clear();
            }
            entries.insert(
                digest,
                CachedKey {
                    server,
                    expires_at,
                    fetched: Instant::now(),
                },
            );
        }
    }

    /// Forgets every key: called after a change to application servers or their keys.
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }
}

/// Resolves a presented key; `Ok(None)` for an unknown one.
async fn resolve(state: &ApiState, key: &str) -> Result<Option<Principal>, ApiError> {
    if is_operator_key(state, key) {
        return Ok(Some(Principal::Operator));
    }
    if !key.starts_with(API_KEY_PREFIX) {
        return Ok(None);
    }
    let now = state.now_ms();
    let digest = key_digest(key);
    let cache = &state.inner.key_cache;
    if let Some(server) = cache.get(&digest, now) {
        return Ok(Some(Principal::AppServer(server)));
    }
    let Some((server, expires_at)) = state.inner.store.api_key_owner(key, now).await? else {
        return Ok(None);
    };
    cache.put(digest, server.clone(), expires_at);
    Ok(Some(Principal::AppServer(server)))
}

/// The `/v1` middleware: authenticate, rate-limit, then run the handler.
///
/// An anonymous source's budget is looked at before a presented key is looked up, so a
/// source that spent its budget on unknown keys costs no database query; an unknown key is
/// charged to the source, a valid one to its own principal's budget (apart from anonymous
/// sources, see [`super::rate_limit`]).
pub(super) async fn authenticate(
    State(state): State<ApiState>,
    mut req: Request,
    next: Next,
) -> Response {
    let source = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let limiter = &state.inner.limiter;
    let presented = bearer(req.headers()).map(str::to_owned);
    let principal = match &presented {
        Some(key) => {
            if !is_operator_key(&state, key) {
                if let Err(retry_after_secs) = limiter.peek_anonymous(source, state.now_ms()) {
                    return ApiError::RateLimited { retry_after_secs }.into_response();
                }
            }
            match resolve(&state, key).await {
                Ok(p) => p,
                Err(e) => return e.into_response(),
            }
        }
        None => None,
    };
    let bucket = principal.as_ref().map(Principal::bucket);
    let client = match &bucket {
        Some(name) => Client::Key(name),
        None => Client::Anonymous(source),
    };
    if let Err(retry_after_secs) = limiter.check(client, state.now_ms()) {
        return ApiError::RateLimited { retry_after_secs }.into_response();
    }
    match principal {
        Some(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        None => {
            if presented.is_some() {
                state.inner.metrics.http_auth_failure();
            }
            ApiError::Unauthorized {
                detail: if presented.is_some() {
                    "the API key is not valid".into()
                } else {
                    "an API key is required: send Authorization: Bearer KEY".into()
                },
                invalid_token: presented.is_some(),
            }
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_keys_are_read_case_insensitively() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }

    fn server(id: &str) -> AppServerRecord {
        AppServerRecord {
            id: id.into(),
            name: format!("shop-{id}"),
            uri: "sip:127.0.0.1:5090".into(),
            created_at: 0,
            commission_bps: 0,
            webhook_url: None,
        }
    }

    #[test]
    fn cached_keys_keep_their_expiry_and_are_forgotten_on_clear() {
        let cache = KeyCache::default();
        let (a, b) = (key_digest("tgk_a"), key_digest("tgk_b"));
        cache.put(a, server("1"), None);
        cache.put(b, server("2"), Some(1_000));
        assert_eq!(cache.get(&a, 5_000).map(|s| s.id), Some("1".into()));
        assert_eq!(cache.get(&b, 999).map(|s| s.id), Some("2".into()));
        assert_eq!(
            cache.get(&b, 1_000),
            None,
            "a replaced key ends at its grace"
        );
        assert_eq!(cache.get(&key_digest("tgk_c"), 0), None);
        cache.clear();
        assert_eq!(cache.get(&a, 5_000), None);
    }

    #[test]
    fn stale_entries_are_not_believed() {
        let cache = KeyCache::default();
        let a = key_digest("tgk_a");
        cache.put(a, server("1"), None);
        if let Ok(mut entries) = cache.entries.lock() {
            let entry = entries.get_mut(&a).unwrap();
            entry.fetched = Instant::now().checked_sub(KEY_CACHE_TTL).expect("uptime");
        }
        assert_eq!(cache.get(&a, 0), None);
    }
}
