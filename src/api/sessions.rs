//! `/v1/sessions`: relayed sessions, newest first, with filters and cursor pagination.
//!
//! The operator key sees every session. An application server's key sees only the sessions
//! relayed to that server; any other session is answered 404, the same answer as for an id
//! that does not exist (a 403 would confirm that the id is live somewhere).
//!
//! Pagination is by keyset: a page's `next_cursor` encodes the `(created_at, id)` of its last
//! session, opaque to clients (base64url of `v1:<created_at>:<id>`), and the next page is
//! everything older in that order. Pages neither skip nor repeat sessions while new ones
//! arrive. A cursor that does not decode is a 400 naming `cursor`.

use axum::extract::{Path, State};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, Problem};
use super::extract::ApiQuery;
use super::{ApiState, Principal};
use crate::store::{SessionQuery, SessionRecord, SessionState};

/// Most sessions on one page.
pub const MAX_LIMIT: u32 = 500;
/// Sessions on a page when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 50;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    /// INVITE relayed, no final answer yet.
    Trying,
    /// Answered and ACKed: the clock runs.
    Confirmed,
    /// Ended by BYE, or closed by the relay (see `end_reason`).
    Terminated,
    /// Ended by a non-2xx final response.
    Failed,
    /// Cancelled by the caller before an answer.
    Cancelled,
}

impl From<SessionState> for SessionStatus {
    fn from(s: SessionState) -> Self {
        match s {
            SessionState::Trying => SessionStatus::Trying,
            SessionState::Confirmed => SessionStatus::Confirmed,
            SessionState::Terminated => SessionStatus::Terminated,
            SessionState::Failed => SessionStatus::Failed,
            SessionState::Cancelled => SessionStatus::Cancelled,
        }
    }
}

impl From<SessionStatus> for SessionState {
    fn from(s: SessionStatus) -> Self {
        match s {
            SessionStatus::Trying => SessionState::Trying,
            SessionStatus::Confirmed => SessionState::Confirmed,
            SessionStatus::Terminated => SessionState::Terminated,
            SessionStatus::Failed => SessionState::Failed,
            SessionStatus::Cancelled => SessionState::Cancelled,
        }
    }
}

/// One relayed session. Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Session {
    pub id: String,
    /// The SIP Call-ID of the INVITE.
    pub call_id: String,
    /// The authenticated user name.
    pub caller: String,
    /// The service called, `name@domain`.
    pub service: String,
    /// The name of the application server the session was relayed to.
    pub app_server: String,
    pub state: SessionStatus,
    /// The SIP status of the INVITE's final response, once there is one.
    pub final_status: Option<u16>,
    /// When the INVITE was relayed.
    pub created_at: i64,
    /// When the answer was ACKed: the billing clock's start.
    pub confirmed_at: Option<i64>,
    /// When the session ended.
    pub ended_at: Option<i64>,
    /// Billed duration for an ended session; for a confirmed one, the time since
    /// `confirmed_at` so far; absent before confirmation.
    pub duration_ms: Option<i64>,
    /// Who ended it: `caller`, `callee` or `relay`.
    pub ended_by: Option<String>,
    /// Why: `bye`, or `relay_restart` for a session a restart closed at its last proof of life.
    pub end_reason: Option<String>,
    /// The relay node that record-routed the session.
    pub node: String,
}

impl Session {
    fn from_record(s: SessionRecord, now_ms: i64) -> Session {
        let duration_ms = match (s.state, s.duration_ms, s.confirmed_at) {
            (_, Some(d), _) => Some(d),
            (SessionState::Confirmed, None, Some(start)) => {
                Some(now_ms.saturating_sub(start).max(0))
            }
            _ => None,
        };
        Session {
            id: s.id,
            call_id: s.call_id,
            caller: s.caller,
            service: s.service,
            app_server: s.app_server,
            state: s.state.into(),
            final_status: s.final_status,
            created_at: s.created_at,
            confirmed_at: s.confirmed_at,
            ended_at: s.ended_at,
            duration_ms,
            ended_by: s.ended_by,
            end_reason: s.end_reason,
            node: s.node,
        }
    }
}

/// One page of sessions, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionPage {
    pub items: Vec<Session>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Filters and paging of `GET /v1/sessions`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListSessionsParams {
    /// Only sessions in this state.
    pub state: Option<SessionStatus>,
    /// Only sessions of this service, `name@domain`.
    pub service: Option<String>,
    /// Only sessions of this caller (user name).
    pub caller: Option<String>,
    /// Only sessions relayed to this application server (its name). An application server's
    /// key only ever sees its own.
    pub app_server: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Sessions per page, 1 to 500; 50 when absent.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// The opaque cursor after `session`.
pub fn encode_cursor(created_at: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{created_at}:{id}"))
}

/// `(created_at, id)` from a cursor made by [`encode_cursor`].
pub fn decode_cursor(cursor: &str) -> Option<(i64, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor.trim_end_matches('=')).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let rest = text.strip_prefix("v1:")?;
    let (created_at, id) = rest.split_once(':')?;
    if id.is_empty() {
        return None;
    }
    Some((created_at.parse().ok()?, id.to_owned()))
}

/// List sessions.
#[utoipa::path(
    get,
    path = "/sessions",
    operation_id = "listSessions",
    tag = "sessions",
    summary = "List sessions, newest first",
    description = "Filters combine (AND). Page with `limit` and the previous page's \
                   `next_cursor`. With an application server's key, only the sessions relayed \
                   to that server are listed.",
    params(ListSessionsParams),
    responses(
        (status = 200, description = "One page of sessions", body = SessionPage),
        (status = 400, description = "A bad parameter (`limit` out of range, unknown `state`, a `cursor` that does not decode); `errors` names it", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn list_sessions(
    principal: Principal,
    State(state): State<ApiState>,
    ApiQuery(params): ApiQuery<ListSessionsParams>,
) -> Result<Json<SessionPage>, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            format!("limit must be between 1 and {MAX_LIMIT}, not {limit}"),
        ));
    }
    let after = match params.cursor.as_deref() {
        Some(c) => Some(decode_cursor(c).ok_or_else(|| {
            ApiError::field(
                "cursor",
                "not a cursor this API issued: pass a page's next_cursor unchanged",
            )
        })?),
        None => None,
    };
    let app_server = match (&principal, params.app_server) {
        (Principal::Operator, wanted) => wanted,
        (Principal::AppServer(own), Some(wanted)) if wanted != own.name => {
            // Another server's sessions do not exist for this key.
            return Ok(Json(SessionPage {
                items: Vec::new(),
                next_cursor: None,
            }));
        }
        (Principal::AppServer(own), _) => Some(own.name.clone()),
    };
    let query = SessionQuery {
        state: params.state.map(SessionState::from),
        service: params.service,
        caller: params.caller,
        app_server,
        after,
        limit: u64::from(limit) + 1,
    };
    let mut rows = state.store().page_sessions(&query).await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|s| encode_cursor(s.created_at, &s.id))
    } else {
        None
    };
    let now = state.now_ms();
    Ok(Json(SessionPage {
        items: rows
            .into_iter()
            .map(|s| Session::from_record(s, now))
            .collect(),
        next_cursor,
    }))
}

/// One session.
#[utoipa::path(
    get,
    path = "/sessions/{id}",
    operation_id = "getSession",
    tag = "sessions",
    summary = "Get one session: state, timestamps, duration",
    description = "With an application server's key, another server's session is a 404, \
                   exactly like a session that does not exist.",
    params(("id" = String, Path, description = "The session's id")),
    responses(
        (status = 200, description = "The session", body = Session),
        (status = 404, description = "No such session visible to this key", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn get_session(
    principal: Principal,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Session>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no session {id}"));
    let session = match state.store().get_session(&id).await {
        Ok(s) => s,
        Err(crate::store::StoreError::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    if let Principal::AppServer(own) = &principal {
        if session.app_server != own.name {
            return Err(not_found());
        }
    }
    Ok(Json(Session::from_record(session, state.now_ms())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = encode_cursor(1_700_000_000_123, "3f2a-b:c");
        assert_eq!(
            decode_cursor(&c),
            Some((1_700_000_000_123, "3f2a-b:c".to_owned()))
        );
        for bad in ["", "!!!", "djE6", "eDox", "djE6YWJjOmlk", "djE6MTI6"] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }
}
