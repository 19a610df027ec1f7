//! `/v1/sessions`: relayed sessions, newest first, with filters and cursor pagination.
//!
//! The operator key sees every session. An application server's key sees only the sessions
//! relayed to that server; any other session is answered 404, the same answer as for an id
//! that does not exist (a 403 would confirm that the id is live somewhere).
//!
//! Pagination is by keyset ([`super::pagination`]): a page's `next_cursor` holds the
//! `(created_at, id)` of its last session, and the next page is everything older in that
//! order. Pages neither skip nor repeat sessions while new ones arrive. A cursor that does not
//! decode is a 400 naming `cursor`.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, Problem};
use super::extract::ApiQuery;
use super::pagination;
use super::{ApiState, Principal};
use crate::billing::Money;
use crate::clock::rfc3339;
use crate::store::{SessionQuery, SessionRecord, SessionState};

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!("confirmed"))]
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

/// One relayed session.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "0b6c7b4e-1f2a-4c3d-9e8f-7a6b5c4d3e2f", "call_id": "1-2345@192.0.2.7",
    "caller": "alice", "user_id": "4e3d2c1b-0a9f-4e8d-7c6b-5a4f3e2d1c0b",
    "service": "wine@portal.com", "service_id": "5d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6",
    "app_server": "shop1", "app_server_id": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
    "state": "terminated", "final_status": 200, "created_at": "2026-12-01T20:00:00.000Z",
    "confirmed_at": "2026-12-01T20:00:00.250Z", "ended_at": "2026-12-01T20:01:30.250Z",
    "duration_ms": 90000, "ended_by": "caller", "end_reason": "bye", "node": "node-1",
    "time_charge": {"currency": "EUR", "amount": 230}
}))]
pub struct Session {
    pub id: String,
    /// The SIP Call-ID of the INVITE.
    pub call_id: String,
    /// The authenticated user name.
    pub caller: String,
    /// The user's id (absent on sessions recorded before billing).
    pub user_id: Option<String>,
    /// The service called, `name@domain`.
    pub service: String,
    pub service_id: Option<String>,
    /// The name of the application server the session was relayed to.
    pub app_server: String,
    pub app_server_id: Option<String>,
    pub state: SessionStatus,
    /// The SIP status of the INVITE's final response, once there is one.
    pub final_status: Option<u16>,
    /// When the INVITE was relayed.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// When the answer was ACKed: the billing clock's start.
    #[serde(with = "rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub confirmed_at: Option<i64>,
    /// When the session ended.
    #[serde(with = "rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
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
    /// What the session cost by its duration, once it ended under a tariff; absent before,
    /// and for services without a tariff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Money, required = false)]
    pub time_charge: Option<Money>,
}

impl Session {
    fn from_record(s: SessionRecord, now_ms: i64, time_charge: Option<Money>) -> Session {
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
            user_id: s.user_id,
            service: s.service,
            service_id: s.service_id,
            app_server: s.app_server,
            app_server_id: s.app_server_id,
            state: s.state.into(),
            final_status: s.final_status,
            created_at: s.created_at,
            confirmed_at: s.confirmed_at,
            ended_at: s.ended_at,
            duration_ms,
            ended_by: s.ended_by,
            end_reason: s.end_reason,
            node: s.node,
            time_charge,
        }
    }
}

/// One page of sessions, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"items": [], "next_cursor": "WyJ2MSIsInNlc3Npb25zIiwiMTc5NTY1MTIwMDAwMCIsInMxIl0"}))]
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
    let limit = pagination::limit(params.limit)?;
    let after = pagination::decode_time_id(params.cursor.as_deref(), "sessions")?;
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
    let rows = state.store().page_sessions(&query).await?;
    let (rows, next_cursor) = pagination::page(rows, limit, |s| {
        pagination::encode("sessions", &[&s.created_at.to_string(), &s.id])
    });
    let now = state.now_ms();
    let ids: Vec<String> = rows.iter().map(|s| s.id.clone()).collect();
    let mut charges = state.store().time_charges(&ids).await?;
    Ok(Json(SessionPage {
        items: rows
            .into_iter()
            .map(|s| {
                let charge = charges.remove(&s.id);
                Session::from_record(s, now, charge)
            })
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
    let charge = state
        .store()
        .time_charges(std::slice::from_ref(&session.id))
        .await?
        .remove(&session.id);
    Ok(Json(Session::from_record(session, state.now_ms(), charge)))
}
