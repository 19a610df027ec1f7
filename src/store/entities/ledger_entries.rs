//! The `ledger_entries` table: time charges, item charges and adjustments; append-only.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ledger_entries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// `time`, `item` or `adjustment`.
    pub kind: String,
    /// `session` (time), `rest`, `sip_info`, `bye` (items), `operator` (adjustments).
    pub source: String,
    pub user_id: String,
    pub app_server_id: Option<String>,
    pub session_id: Option<String>,
    pub service_id: Option<String>,
    pub tariff_id: Option<String>,
    pub description: String,
    pub unit_amount: Option<i64>,
    pub quantity: Option<i32>,
    /// Signed minor units.
    pub amount: i64,
    pub currency: String,
    /// JSON object text, for item charges that carry one.
    pub metadata: Option<String>,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
