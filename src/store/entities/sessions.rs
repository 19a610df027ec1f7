//! The `sessions` table: one row per relayed INVITE, from `trying` to its end.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub call_id: String,
    pub caller: String,
    pub service: String,
    pub app_server: String,
    pub state: String,
    pub final_status: Option<i32>,
    pub created_at: i64,
    pub confirmed_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub ended_by: Option<String>,
    pub end_reason: Option<String>,
    pub last_activity_at: Option<i64>,
    pub node: String,
    pub user_id: Option<String>,
    pub service_id: Option<String>,
    pub app_server_id: Option<String>,
    /// The tariff version in force when the session was confirmed.
    pub tariff_id: Option<String>,
    /// What routes the session's in-dialog requests (JSON), kept while it is confirmed so a
    /// restarted relay can carry on with it.
    pub dialog: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
