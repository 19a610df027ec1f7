//! The `tariffs` table: versions of a service's time tariff.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tariffs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub service_id: String,
    pub currency: String,
    pub setup_amount: i64,
    pub per_minute_amount: i64,
    pub increment_secs: i32,
    pub free_secs: i32,
    /// Sessions confirmed at or after this instant use this version (until a newer one).
    pub effective_from: i64,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
