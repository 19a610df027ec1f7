//! Session-token verification for application servers: the published keys
//! (`GET /.well-known/jwks.json`) and RFC 7662 introspection (`POST /v1/tokens/introspect`).
//!
//! Introspection answers `active: true`, with the token's claims, only when all of these hold:
//! the token verifies (signature by a published key, algorithm allow-list, `iss`, `exp`, `nbf`;
//! see [`crate::tokens::TokenVerifier`]); its `aud` is the calling application server, by id or
//! name (a token minted for another shop is inactive, not an error); and its session is still
//! live (`trying` or `confirmed`) and was relayed to that server. Anything else is `{"active": false}` and nothing more, as RFC 7662 §2.2
//! asks. The operator key may introspect any token: it is verified for the audience it names.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, Problem};
use super::extract::ApiForm;
use super::{ApiState, Principal};
use crate::store::{SessionState, StoreError};
use crate::tokens::{TokenError, TokenIssuer, TOKEN_TYPE};

/// How long clients may cache the JWK set. A new key is published as `next` a whole rotation
/// before it signs, so a cache this old still knows it.
pub const JWKS_MAX_AGE_SECS: u32 = 300;

/// The JWK set (RFC 7517), as served.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"keys": [{"kty": "EC", "kid": "k-2026-11-26", "alg": "ES256", "use": "sig", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}))]
pub struct JwkSetDoc {
    /// The current signing key, the next one, and recently retired ones still in their grace
    /// period.
    pub keys: Vec<JwkDoc>,
}

/// One public key (RFC 7517 §4). ES256 keys are `kty: EC` with `crv: P-256`, `x`, `y`;
/// EdDSA keys are `kty: OKP` with `crv: Ed25519`, `x`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"kty": "EC", "kid": "k-2026-11-26", "alg": "ES256", "use": "sig", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}))]
pub struct JwkDoc {
    /// `EC` or `OKP`.
    pub kty: String,
    /// The key id tokens name in their header.
    pub kid: String,
    /// `ES256` or `EdDSA`.
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub key_use: String,
    /// `P-256` or `Ed25519`.
    pub crv: String,
    /// Base64url public key coordinate.
    pub x: String,
    /// Base64url public key coordinate (EC keys only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

/// An RFC 7662 introspection request (form-encoded).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"token": "eyJhbGciOiJFUzI1NiIsImtpZCI6ImstMjAyNi0xMS0yNiJ9.eyJzaWQiOiIwYjZjIn0.c2lnbmF0dXJl"}))]
pub struct IntrospectionRequest {
    /// The session token, as received in the forwarded INVITE or from the client.
    pub token: String,
    /// Ignored (there is one kind of token).
    #[serde(default)]
    pub token_type_hint: Option<String>,
}

/// An RFC 7662 introspection response. When `active` is false no other member is present.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"active": true, "iss": "https://relay.example", "sub": "alice", "aud": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a", "sid": "0b6c7b4e-1f2a-4c3d-9e8f-7a6b5c4d3e2f", "svc": "wine@portal.com", "iat": 1764625453, "nbf": 1764625453, "exp": 1764625753, "jti": "5f0e…", "token_type": "tollgate-session+jwt", "session_state": "confirmed"}))]
pub struct IntrospectionResponse {
    /// Whether the token is valid, meant for the caller, and its session still live.
    pub active: bool,
    /// The relay's public base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The authenticated user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The application server's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// The session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The service, `name@domain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svc: Option<String>,
    /// Seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// `tollgate-session+jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// The session's state now: `trying` or `confirmed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_state: Option<String>,
}

impl IntrospectionResponse {
    fn inactive() -> Json<IntrospectionResponse> {
        Json(IntrospectionResponse::default())
    }
}

fn issuer(state: &ApiState) -> Result<&TokenIssuer, ApiError> {
    state
        .inner
        .tokens
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("session tokens are not enabled on this relay".into()))
}

/// The published token keys.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    operation_id = "getJwks",
    tag = "tokens",
    summary = "The JWK set that verifies session tokens",
    description = "Current, next and recently retired public keys. Cache for up to 5 minutes. \
                   Needs no key.",
    security(()),
    responses(
        (status = 200, description = "The JWK set", body = JwkSetDoc, content_type = "application/json"),
        (status = 503, description = "Session tokens are not enabled", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn jwks(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let set = issuer(&state)?.jwks();
    Ok((
        [(
            header::CACHE_CONTROL,
            format!("public, max-age={JWKS_MAX_AGE_SECS}"),
        )],
        Json(set),
    )
        .into_response())
}

/// The `aud` a token claims, read without verifying anything (only to choose the audience to
/// verify it for, when the operator asks).
fn claimed_audience(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    match &claims["aud"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(a) => a.first()?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// Introspect a session token.
#[utoipa::path(
    post,
    path = "/tokens/introspect",
    operation_id = "introspectToken",
    tag = "tokens",
    summary = "Is this session token valid, for me, and its session still live? (RFC 7662)",
    description = "Authenticated by the application server's API key. `active` is false when \
                   the token does not verify, has expired, was minted for another application \
                   server, or its session has ended.",
    request_body(content = IntrospectionRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The verdict; claims only when active", body = IntrospectionResponse),
        (status = 400, description = "No `token` parameter", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not a form", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Session tokens are not enabled", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn introspect(
    principal: Principal,
    State(state): State<ApiState>,
    ApiForm(req): ApiForm<IntrospectionRequest>,
) -> Result<Json<IntrospectionResponse>, ApiError> {
    let issuer = issuer(&state)?;
    // An application server is named in `aud` by its id or, equally unique and immutable, its
    // name; either is accepted, nothing else.
    let audiences = match &principal {
        Principal::AppServer(own) => vec![own.id.clone(), own.name.clone()],
        Principal::Operator => match claimed_audience(&req.token) {
            Some(aud) => vec![aud],
            None => return Ok(IntrospectionResponse::inactive()),
        },
    };
    let now = state.now_ms();
    let mut verified = None;
    for audience in audiences {
        match issuer.verifier(audience).verify(&req.token, now) {
            Ok(claims) => {
                verified = Some(claims);
                break;
            }
            Err(TokenError::WrongAudience) => continue,
            Err(e) if e.is_rejection() => return Ok(IntrospectionResponse::inactive()),
            Err(e) => return Err(ApiError::Internal(format!("token verification: {e}"))),
        }
    }
    let Some(claims) = verified else {
        return Ok(IntrospectionResponse::inactive());
    };
    let session = match state.store().get_session(&claims.sid).await {
        Ok(s) => s,
        Err(StoreError::NotFound(_)) => return Ok(IntrospectionResponse::inactive()),
        Err(e) => return Err(e.into()),
    };
    let live = matches!(
        session.state,
        SessionState::Trying | SessionState::Confirmed
    );
    let theirs = match &principal {
        Principal::AppServer(own) => session.app_server == own.name,
        Principal::Operator => true,
    };
    if !live || !theirs {
        return Ok(IntrospectionResponse::inactive());
    }
    Ok(Json(IntrospectionResponse {
        active: true,
        iss: Some(claims.iss),
        sub: Some(claims.sub),
        aud: Some(claims.aud),
        sid: Some(claims.sid),
        svc: Some(claims.svc),
        iat: Some(claims.iat),
        nbf: Some(claims.nbf),
        exp: Some(claims.exp),
        jti: Some(claims.jti),
        token_type: Some(TOKEN_TYPE.to_owned()),
        session_state: Some(session.state.as_str().to_owned()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claimed_audience_is_read_from_the_payload() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"aud":"shop-id","sub":"alice"}"#);
        assert_eq!(
            claimed_audience(&format!("e30.{payload}.sig")),
            Some("shop-id".to_owned())
        );
        assert_eq!(claimed_audience("garbage"), None);
    }
}
