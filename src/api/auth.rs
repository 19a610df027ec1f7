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

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

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

/// Resolves a presented key; `Ok(None)` for an unknown one.
async fn resolve(state: &ApiState, key: &str) -> Result<Option<Principal>, ApiError> {
    if is_operator_key(state, key) {
        return Ok(Some(Principal::Operator));
    }
    if key.starts_with(API_KEY_PREFIX) {
        return Ok(state
            .inner
            .store
            .app_server_for_api_key(key, state.now_ms())
            .await?
            .map(Principal::AppServer));
    }
    Ok(None)
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
}
