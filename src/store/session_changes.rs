//! Mid-session changes (DESIGN.md flow 4): what a party asked for with a re-INVITE or UPDATE,
//! when, and how it was answered. Written by the session writer
//! ([`super::SessionEvent::Changed`]) once the answer is relayed, in order with the session's
//! other events; read with the session.

use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::Serialize;

use super::entities::session_changes;
use super::{new_id, Party, Store, StoreError};

/// The most of a change's body that is kept; the rest is cut (at a character boundary).
pub const MAX_CHANGE_BODY: usize = 8 * 1024;

/// One change of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionChange {
    pub session_id: String,
    /// The order it was asked in within the session: 1, 2, … (two changes can share `at`).
    pub seq: u32,
    pub at: i64,
    /// Who asked.
    pub party: Party,
    /// `INVITE` (a re-INVITE) or `UPDATE`.
    pub method: String,
    pub content_type: Option<String>,
    /// What was asked for (the request's body, as text, cut at [`MAX_CHANGE_BODY`]).
    pub body: String,
    /// The final status it was answered with.
    pub status: u16,
}

/// The row a change is stored as, its body cut at [`MAX_CHANGE_BODY`].
pub(super) fn change_row(change: &SessionChange) -> session_changes::ActiveModel {
    let mut body = change.body.clone();
    if body.len() > MAX_CHANGE_BODY {
        let mut cut = MAX_CHANGE_BODY;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
    }
    session_changes::ActiveModel {
        id: Set(new_id()),
        session_id: Set(change.session_id.clone()),
        seq: Set(i32::try_from(change.seq).unwrap_or(i32::MAX)),
        at: Set(change.at),
        party: Set(change.party.as_str().to_owned()),
        method: Set(change.method.clone()),
        content_type: Set(change.content_type.clone()),
        body: Set(body),
        status: Set(i32::from(change.status)),
    }
}

impl Store {
    /// The changes of one session, oldest first.
    pub async fn session_changes(
        &self,
        session_id: &str,
    ) -> Result<Vec<SessionChange>, StoreError> {
        let rows = session_changes::Entity::find()
            .filter(session_changes::Column::SessionId.eq(session_id))
            .order_by_asc(session_changes::Column::Seq)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|m| SessionChange {
                session_id: m.session_id,
                seq: u32::try_from(m.seq).unwrap_or(0),
                at: m.at,
                party: if m.party == "callee" {
                    Party::Callee
                } else {
                    Party::Caller
                },
                method: m.method,
                content_type: m.content_type,
                body: m.body,
                status: u16::try_from(m.status).unwrap_or(0),
            })
            .collect())
    }
}
