//! The `webhook_events` table: the outbox, one row per event per application server.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_events")]
pub struct Model {
    /// `evt_…`, what receivers de-duplicate on.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub app_server_id: String,
    pub event_type: String,
    /// The exact bytes POSTed, every attempt.
    pub payload: String,
    pub created_at: i64,
    /// `pending`, `delivered` or `failed` (gave up after `[webhooks] max_age_secs`).
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: i64,
    /// A dispatcher holds the event until then while it delivers.
    pub lease_until: Option<i64>,
    pub delivered_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
