//! The webhook outbox, its delivery log and the signing secrets.
//!
//! Events are written as rows of `webhook_events` in the transaction of what they report
//! (a session's confirmation or end in the session writer, a charge in the ledger batch), so an
//! event exists exactly when its cause committed. The payload is rendered then, once: every
//! attempt sends the same bytes. Event ids are derived from what they report
//! ([`event_id`]), so writing the same event twice is a no-op.
//!
//! Delivery ([`crate::notify`]) claims due events with a lease (`lease_until`), so several
//! relay nodes can share the outbox: a node that dies mid-delivery lets the lease run out and
//! another retries. Each attempt is logged in `webhook_deliveries`.

use sea_orm::sea_query::{Condition, Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use sha2::{Digest, Sha256};

use super::entities::{app_servers, webhook_deliveries, webhook_events, webhook_signing_keys};
use super::{new_id, Store, StoreError};

/// Event states.
pub const EVENT_PENDING: &str = "pending";
pub const EVENT_DELIVERED: &str = "delivered";
pub const EVENT_FAILED: &str = "failed";

/// `evt_` and 32 hex digits derived from the event type and what it is about.
pub fn event_id(event_type: &str, subject_id: &str) -> String {
    let digest = Sha256::digest(format!("{event_type}:{subject_id}").as_bytes());
    format!("evt_{}", &hex::encode(digest)[..32])
}

/// One event to put in the outbox.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub app_server_id: String,
    pub event_type: &'static str,
    /// What the event is about (a session or charge id); with the type it makes the event id.
    pub subject_id: String,
    pub created_at: i64,
    /// The event's `data` object.
    pub data: serde_json::Value,
}

impl OutboxEvent {
    fn into_row(self) -> webhook_events::ActiveModel {
        let id = event_id(self.event_type, &self.subject_id);
        let payload = serde_json::json!({
            "id": id,
            "type": self.event_type,
            "created_at": crate::clock::rfc3339::format(self.created_at),
            "data": self.data,
        });
        webhook_events::ActiveModel {
            id: Set(id),
            app_server_id: Set(self.app_server_id),
            event_type: Set(self.event_type.to_owned()),
            payload: Set(payload.to_string()),
            created_at: Set(self.created_at),
            state: Set(EVENT_PENDING.to_owned()),
            attempts: Set(0),
            next_attempt_at: Set(self.created_at),
            lease_until: Set(None),
            delivered_at: Set(None),
        }
    }
}

/// Writes `events` inside `db` (the caller's transaction); an event already there is kept.
pub(super) async fn insert_outbox<C: ConnectionTrait>(
    db: &C,
    events: Vec<OutboxEvent>,
) -> Result<(), StoreError> {
    let rows: Vec<_> = events.into_iter().map(OutboxEvent::into_row).collect();
    for chunk in rows.chunks(128) {
        webhook_events::Entity::insert_many(chunk.iter().cloned())
            .on_conflict(
                OnConflict::column(webhook_events::Column::Id)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// An event due for delivery, with where and how to send it.
#[derive(Debug, Clone)]
pub struct DueEvent {
    pub id: String,
    pub app_server_id: String,
    pub event_type: String,
    pub payload: String,
    pub created_at: i64,
    /// Attempts made before this one.
    pub attempts: u32,
    /// `None` when the server has no webhook URL any more (or was deleted).
    pub url: Option<String>,
    /// The secrets that sign it: the current one first, then replaced ones still in grace.
    pub secrets: Vec<String>,
}

/// One delivery attempt, as `GET /v1/webhook-deliveries` shows it.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub id: String,
    pub event_id: String,
    pub app_server_id: String,
    pub event_type: String,
    pub attempt: u32,
    pub url: String,
    pub attempted_at: i64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub response_body: Option<String>,
    pub duration_ms: i64,
    /// The event's state now: `pending`, `delivered` or `failed`.
    pub event_state: String,
}

/// Filters and page of [`Store::list_webhook_deliveries`], newest first.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    pub app_server_id: Option<String>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    /// Only attempts that got a 2xx (`true`) or did not (`false`).
    pub succeeded: Option<bool>,
    pub after: Option<(i64, String)>,
    pub limit: u64,
}

/// What came of one attempt.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub url: String,
    pub attempted_at: i64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub response_body: Option<String>,
    pub duration_ms: i64,
    /// Delivered (a 2xx).
    pub delivered: bool,
    /// When to try again; `None` gives up (the event is `failed`).
    pub retry_at: Option<i64>,
}

/// No dispatcher holds the event at `now_ms`.
fn lease_free(now_ms: i64) -> Condition {
    use webhook_events::Column as C;
    Condition::any()
        .add(C::LeaseUntil.is_null())
        .add(C::LeaseUntil.lt(now_ms))
}

impl Store {
    /// Claims up to `limit` events due at `now_ms` for `lease_ms`, oldest first.
    pub async fn claim_due_events(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u64,
    ) -> Result<Vec<DueEvent>, StoreError> {
        use webhook_events::Column as C;
        let candidates = webhook_events::Entity::find()
            .filter(C::State.eq(EVENT_PENDING))
            .filter(C::NextAttemptAt.lte(now_ms))
            .filter(lease_free(now_ms))
            .order_by_asc(C::NextAttemptAt)
            .limit(limit)
            .all(&self.db)
            .await?;
        let mut claimed = Vec::new();
        for event in candidates {
            // Conditional on the lease still being free: two nodes never take the same event.
            let won = webhook_events::Entity::update_many()
                .col_expr(C::LeaseUntil, Expr::value(now_ms + lease_ms))
                .filter(C::Id.eq(event.id.as_str()))
                .filter(C::State.eq(EVENT_PENDING))
                .filter(lease_free(now_ms))
                .exec(&self.db)
                .await?
                .rows_affected
                == 1;
            if won {
                claimed.push(event);
            }
        }
        let mut due = Vec::with_capacity(claimed.len());
        for event in claimed {
            let server = app_servers::Entity::find_by_id(event.app_server_id.clone())
                .one(&self.db)
                .await?;
            let url = server
                .filter(|s| s.deleted_at.is_none())
                .and_then(|s| s.webhook_url);
            due.push(DueEvent {
                secrets: self
                    .webhook_signing_secrets(&event.app_server_id, now_ms)
                    .await?,
                id: event.id,
                app_server_id: event.app_server_id,
                event_type: event.event_type,
                payload: event.payload,
                created_at: event.created_at,
                attempts: u32::try_from(event.attempts).unwrap_or(0),
                url,
            });
        }
        Ok(due)
    }

    /// Logs one attempt at `event` and moves it on: delivered, retried later, or given up.
    pub async fn record_attempt(
        &self,
        event: &DueEvent,
        outcome: &AttemptOutcome,
    ) -> Result<(), StoreError> {
        use webhook_events::Column as C;
        let txn = self.begin_write().await?;
        let attempt = event.attempts + 1;
        webhook_deliveries::ActiveModel {
            id: Set(format!("whd_{}", uuid::Uuid::new_v4().simple())),
            event_id: Set(event.id.clone()),
            app_server_id: Set(event.app_server_id.clone()),
            event_type: Set(event.event_type.clone()),
            attempt: Set(i32::try_from(attempt).unwrap_or(i32::MAX)),
            url: Set(outcome.url.clone()),
            attempted_at: Set(outcome.attempted_at),
            status_code: Set(outcome.status_code.map(i32::from)),
            error: Set(outcome.error.clone()),
            response_body: Set(outcome.response_body.clone()),
            duration_ms: Set(outcome.duration_ms),
        }
        .insert(&txn)
        .await?;
        let (state, next) = match (outcome.delivered, outcome.retry_at) {
            (true, _) => (EVENT_DELIVERED, outcome.attempted_at),
            (false, Some(at)) => (EVENT_PENDING, at),
            (false, None) => (EVENT_FAILED, outcome.attempted_at),
        };
        let mut update = webhook_events::Entity::update_many()
            .col_expr(C::State, Expr::value(state))
            .col_expr(
                C::Attempts,
                Expr::value(i32::try_from(attempt).unwrap_or(i32::MAX)),
            )
            .col_expr(C::NextAttemptAt, Expr::value(next))
            .col_expr(C::LeaseUntil, Expr::value(Option::<i64>::None));
        if outcome.delivered {
            update = update.col_expr(C::DeliveredAt, Expr::value(outcome.attempted_at));
        }
        update
            .filter(C::Id.eq(event.id.as_str()))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Events of an application server, oldest first (for tests and the operator's eyes).
    pub async fn webhook_events_of(
        &self,
        app_server_id: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        use webhook_events::Column as C;
        Ok(webhook_events::Entity::find()
            .filter(C::AppServerId.eq(app_server_id))
            .order_by_asc(C::CreatedAt)
            .order_by_asc(C::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|e| (e.id, e.event_type, e.state))
            .collect())
    }

    /// Delivery attempts matching `query`, newest first.
    pub async fn list_webhook_deliveries(
        &self,
        query: &DeliveryQuery,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        use webhook_deliveries::Column as C;
        let mut select = webhook_deliveries::Entity::find();
        if let Some(id) = &query.app_server_id {
            select = select.filter(C::AppServerId.eq(id.as_str()));
        }
        if let Some(id) = &query.event_id {
            select = select.filter(C::EventId.eq(id.as_str()));
        }
        if let Some(t) = &query.event_type {
            select = select.filter(C::EventType.eq(t.as_str()));
        }
        match query.succeeded {
            Some(true) => {
                select = select
                    .filter(C::StatusCode.gte(200))
                    .filter(C::StatusCode.lt(300))
            }
            Some(false) => {
                select = select.filter(
                    Condition::any()
                        .add(C::StatusCode.is_null())
                        .add(C::StatusCode.lt(200))
                        .add(C::StatusCode.gte(300)),
                )
            }
            None => {}
        }
        if let Some((at, id)) = &query.after {
            select = select.filter(
                Condition::any().add(C::AttemptedAt.lt(*at)).add(
                    Condition::all()
                        .add(C::AttemptedAt.eq(*at))
                        .add(C::Id.lt(id.as_str())),
                ),
            );
        }
        let rows = select
            .order_by_desc(C::AttemptedAt)
            .order_by_desc(C::Id)
            .limit(query.limit)
            .all(&self.db)
            .await?;
        let states: std::collections::HashMap<String, String> = webhook_events::Entity::find()
            .filter(webhook_events::Column::Id.is_in(rows.iter().map(|r| r.event_id.clone())))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|e| (e.id, e.state))
            .collect();
        Ok(rows
            .into_iter()
            .map(|r| DeliveryRecord {
                event_state: states.get(&r.event_id).cloned().unwrap_or_default(),
                id: r.id,
                event_id: r.event_id,
                app_server_id: r.app_server_id,
                event_type: r.event_type,
                attempt: u32::try_from(r.attempt).unwrap_or(0),
                url: r.url,
                attempted_at: r.attempted_at,
                status_code: r.status_code.and_then(|c| u16::try_from(c).ok()),
                error: r.error,
                response_body: r.response_body,
                duration_ms: r.duration_ms,
            })
            .collect())
    }

    /// Issues a new signing secret for an application server and returns it (the only time
    /// it is shown). The previous secrets keep signing until `now_ms + grace_ms`.
    pub async fn issue_webhook_secret(
        &self,
        app_server_id: &str,
        now_ms: i64,
        grace_ms: i64,
    ) -> Result<crate::config::Secret, StoreError> {
        use webhook_signing_keys::Column as C;
        let txn = self.begin_write().await?;
        super::api_queries::live_app_server(&txn, app_server_id).await?;
        webhook_signing_keys::Entity::update_many()
            .col_expr(C::ExpiresAt, Expr::value(now_ms + grace_ms))
            .filter(C::AppServerId.eq(app_server_id))
            .filter(C::ExpiresAt.is_null())
            .exec(&txn)
            .await?;
        let secret = super::api_keys::random_token("whsec_");
        webhook_signing_keys::ActiveModel {
            id: Set(new_id()),
            app_server_id: Set(app_server_id.to_owned()),
            signing_key: Set(secret.expose().to_owned()),
            created_at: Set(now_ms),
            expires_at: Set(None),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        Ok(secret)
    }

    /// The secrets that sign an application server's webhooks at `now_ms`: current first.
    pub async fn webhook_signing_secrets(
        &self,
        app_server_id: &str,
        now_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        use webhook_signing_keys::Column as C;
        let rows = webhook_signing_keys::Entity::find()
            .filter(C::AppServerId.eq(app_server_id))
            .filter(
                Condition::any()
                    .add(C::ExpiresAt.is_null())
                    .add(C::ExpiresAt.gt(now_ms)),
            )
            .order_by_desc(C::CreatedAt)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(|r| r.signing_key).collect())
    }
}
