//! Sessions as stored: their states, how they are read, and how a restart closes the ones a
//! previous run left open.
//!
//! ```text
//!  Created ──► trying ──Confirmed──► confirmed ──Terminated──► terminated
//!                │                       │
//!                ├──Failed────► failed   └──(relay restart)──► terminated, ended_by relay
//!                ├──Cancelled─► cancelled
//!                └──(relay restart)──► failed, end_reason relay_restart
//! ```
//! Writes go through the [`SessionWriter`](super::SessionWriter).

use std::fmt;
use std::str::FromStr;

use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};

use super::entities::sessions;
use super::{Store, StoreError};

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// INVITE relayed, no final answer yet.
    Trying,
    /// 2xx relayed and ACKed: the clock runs.
    Confirmed,
    /// Ended by BYE (or closed after a relay restart).
    Terminated,
    /// Ended by a non-2xx final response (or a relay restart before one).
    Failed,
    /// Ended by the caller's CANCEL.
    Cancelled,
}

impl SessionState {
    /// The lowercase name stored in the database and shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Trying => "trying",
            SessionState::Confirmed => "confirmed",
            SessionState::Terminated => "terminated",
            SessionState::Failed => "failed",
            SessionState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SessionState {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "trying" => Ok(SessionState::Trying),
            "confirmed" => Ok(SessionState::Confirmed),
            "terminated" => Ok(SessionState::Terminated),
            "failed" => Ok(SessionState::Failed),
            "cancelled" => Ok(SessionState::Cancelled),
            other => Err(StoreError::Invalid(format!(
                "unknown session state {other:?}: expected trying, confirmed, terminated, failed or cancelled"
            ))),
        }
    }
}

/// Who ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Party {
    Caller,
    Callee,
    /// The relay itself: session timer, maximum duration, or a restart.
    Relay,
}

impl Party {
    /// The lowercase name stored in `sessions.ended_by`.
    pub fn as_str(self) -> &'static str {
        match self {
            Party::Caller => "caller",
            Party::Callee => "callee",
            Party::Relay => "relay",
        }
    }
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a session ended (`sessions.end_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// A BYE from either side, answered.
    Bye,
    /// Its relay restarted and the parties stayed silent past the session-timer interval.
    RelayRestart,
    /// The session timer (RFC 4028) expired without a refresh.
    SessionTimer,
    /// `[sessions] max_duration_secs` reached.
    MaxDuration,
    /// The confirmation could not be stored: the call was ended before it started.
    StoreUnavailable,
    /// The dialog died: its in-dialog request timed out or was answered 481.
    DialogLost,
}

impl EndReason {
    /// The name stored in `sessions.end_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Bye => "bye",
            EndReason::RelayRestart => "relay_restart",
            EndReason::SessionTimer => "session_timer",
            EndReason::MaxDuration => "max_duration",
            EndReason::StoreUnavailable => "store_unavailable",
            EndReason::DialogLost => "dialog_lost",
        }
    }
}

/// One session row.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRecord {
    pub id: String,
    pub call_id: String,
    /// The authenticated user name.
    pub caller: String,
    /// `name@domain`.
    pub service: String,
    /// The application server's name.
    pub app_server: String,
    pub state: SessionState,
    /// SIP status of the INVITE's final response, once known.
    pub final_status: Option<u16>,
    pub created_at: i64,
    pub confirmed_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub duration_ms: Option<i64>,
    /// `caller`, `callee` or `relay`.
    pub ended_by: Option<String>,
    /// `bye`, `relay_restart`, `session_timer`, `max_duration`, `store_unavailable` or
    /// `dialog_lost` ([`EndReason`]).
    pub end_reason: Option<String>,
    /// The relay node that record-routed the session.
    pub node: String,
    /// Ids beside the names (absent on sessions recorded before billing existed).
    pub user_id: Option<String>,
    pub service_id: Option<String>,
    pub app_server_id: Option<String>,
    /// The tariff version in force at confirmation, if the service had one.
    pub tariff_id: Option<String>,
}

impl TryFrom<sessions::Model> for SessionRecord {
    type Error = StoreError;

    fn try_from(m: sessions::Model) -> Result<Self, StoreError> {
        let state = m.state.parse()?;
        let final_status = m
            .final_status
            .map(|s| {
                u16::try_from(s).map_err(|_| {
                    StoreError::Invalid(format!("session {} has final status {s}", m.id))
                })
            })
            .transpose()?;
        Ok(SessionRecord {
            id: m.id,
            call_id: m.call_id,
            caller: m.caller,
            service: m.service,
            app_server: m.app_server,
            state,
            final_status,
            created_at: m.created_at,
            confirmed_at: m.confirmed_at,
            ended_at: m.ended_at,
            duration_ms: m.duration_ms,
            ended_by: m.ended_by,
            end_reason: m.end_reason,
            node: m.node,
            user_id: m.user_id,
            service_id: m.service_id,
            app_server_id: m.app_server_id,
            tariff_id: m.tariff_id,
        })
    }
}

/// Which sessions [`Store::list_sessions`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionFilter {
    /// Only sessions in this state; all states when `None`.
    pub state: Option<SessionState>,
    /// At most this many rows (the newest).
    pub limit: u64,
}

impl Default for SessionFilter {
    /// Every state, the newest 100.
    fn default() -> Self {
        SessionFilter {
            state: None,
            limit: 100,
        }
    }
}

impl Store {
    /// Sessions matching `filter`, newest first.
    pub async fn list_sessions(
        &self,
        filter: SessionFilter,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let mut query = sessions::Entity::find();
        if let Some(state) = filter.state {
            query = query.filter(sessions::Column::State.eq(state.as_str()));
        }
        query
            .order_by_desc(sessions::Column::CreatedAt)
            .order_by_desc(sessions::Column::Id)
            .limit(filter.limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(SessionRecord::try_from)
            .collect()
    }

    /// One session by id.
    pub async fn get_session(&self, id: &str) -> Result<SessionRecord, StoreError> {
        sessions::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no session {id}")))?
            .try_into()
    }

    /// Names of every application server and service that ever existed, by id (history
    /// keeps deleted ones): `(app servers, services as name@domain)`.
    pub async fn names_by_id(
        &self,
    ) -> Result<
        (
            std::collections::HashMap<String, String>,
            std::collections::HashMap<String, String>,
        ),
        StoreError,
    > {
        use super::entities::{app_servers, services};
        let servers = app_servers::Entity::find()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| (m.id, m.name))
            .collect();
        let services = services::Entity::find()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| (m.id, format!("{}@{}", m.name, m.domain)))
            .collect();
        Ok((servers, services))
    }

    /// What a restarted node finds of the sessions it left: `trying` ones are closed as
    /// `failed`; a `confirmed` one whose dialog was stored and whose last proof of life is at
    /// most `silent_limit_ms` old is handed back to be carried on ([`Resumed::live`]); the
    /// other confirmed ones are `terminated` at their last proof of life and billed to it, in
    /// the same transaction ([`Resumed::closed`], whose parties the relay then sends BYE).
    /// `ended_by = relay`, `end_reason = relay_restart` on everything it closes.
    pub async fn resume_sessions(
        &self,
        node: &str,
        now_ms: i64,
        silent_limit_ms: i64,
    ) -> Result<Resumed, StoreError> {
        use sessions::Column as C;

        let txn = self.begin_write().await?;
        let failed = sessions::Entity::update_many()
            .col_expr(C::State, Expr::value(SessionState::Failed.as_str()))
            .col_expr(C::EndedAt, Expr::value(now_ms))
            .col_expr(C::EndedBy, Expr::value(Party::Relay.as_str()))
            .col_expr(C::EndReason, Expr::value(EndReason::RelayRestart.as_str()))
            .filter(C::Node.eq(node))
            .filter(C::State.eq(SessionState::Trying.as_str()))
            .exec(&txn)
            .await?
            .rows_affected;

        let (live, closed): (Vec<ResumedSession>, Vec<ResumedSession>) = sessions::Entity::find()
            .filter(C::Node.eq(node))
            .filter(C::State.eq(SessionState::Confirmed.as_str()))
            .all(&txn)
            .await?
            .into_iter()
            .map(|s| {
                let confirmed_at = s.confirmed_at.unwrap_or(s.created_at);
                ResumedSession {
                    last_proof_at: Ord::max(
                        s.last_activity_at.unwrap_or(confirmed_at),
                        confirmed_at,
                    ),
                    confirmed_at,
                    id: s.id,
                    dialog: s.dialog,
                }
            })
            .partition(|s| s.dialog.is_some() && s.last_proof_at >= now_ms - silent_limit_ms);

        let start = || Func::coalesce([Expr::col(C::ConfirmedAt), Expr::col(C::CreatedAt)]);
        let last_proof_of_life = || {
            Func::coalesce([
                Expr::col(C::LastActivityAt),
                Expr::col(C::ConfirmedAt),
                Expr::col(C::CreatedAt),
            ])
        };
        let ids: Vec<&str> = closed.iter().map(|s| s.id.as_str()).collect();
        for chunk in ids.chunks(500) {
            sessions::Entity::update_many()
                .col_expr(C::State, Expr::value(SessionState::Terminated.as_str()))
                .col_expr(C::EndedAt, last_proof_of_life().into())
                .col_expr(
                    C::DurationMs,
                    Expr::expr(last_proof_of_life()).sub(Expr::expr(start())),
                )
                .col_expr(C::EndedBy, Expr::value(Party::Relay.as_str()))
                .col_expr(C::EndReason, Expr::value(EndReason::RelayRestart.as_str()))
                .col_expr(C::Dialog, Expr::value(Option::<String>::None))
                .filter(C::Id.is_in(chunk.iter().copied()))
                .exec(&txn)
                .await?;
            super::ledger::bill_sessions(&txn, chunk).await?;
        }
        txn.commit().await?;

        Ok(Resumed {
            live,
            closed,
            failed,
        })
    }
}

/// A confirmed session a restarted node found in its store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumedSession {
    pub id: String,
    /// The dialog state stored with its confirmation (JSON), if any.
    pub dialog: Option<String>,
    pub confirmed_at: i64,
    /// Its last proof of life: the last in-dialog request or checkpoint.
    pub last_proof_at: i64,
}

/// What [`Store::resume_sessions`] found.
#[derive(Debug, Default)]
pub struct Resumed {
    /// Sessions to carry on.
    pub live: Vec<ResumedSession>,
    /// Sessions closed at their last proof of life, whose parties should hear a BYE.
    pub closed: Vec<ResumedSession>,
    /// `trying` sessions closed as failed.
    pub failed: u64,
}

impl Resumed {
    /// How many sessions were closed.
    pub fn closed_count(&self) -> u64 {
        self.failed + self.closed.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for state in [
            SessionState::Trying,
            SessionState::Confirmed,
            SessionState::Terminated,
            SessionState::Failed,
            SessionState::Cancelled,
        ] {
            assert_eq!(state.as_str().parse::<SessionState>().ok(), Some(state));
            assert_eq!(
                serde_json::to_string(&state).ok(),
                Some(format!("\"{}\"", state.as_str()))
            );
        }
        assert!("Trying".parse::<SessionState>().is_err());
    }
}
