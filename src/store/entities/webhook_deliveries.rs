//! The `webhook_deliveries` table: every delivery attempt and what the receiver answered.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub event_id: String,
    pub app_server_id: String,
    pub event_type: String,
    /// 1 for the first attempt.
    pub attempt: i32,
    pub url: String,
    pub attempted_at: i64,
    /// The receiver's HTTP status; `None` when no answer came.
    pub status_code: Option<i32>,
    pub error: Option<String>,
    /// The start of the receiver's answer (at most 1 KiB).
    pub response_body: Option<String>,
    pub duration_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
