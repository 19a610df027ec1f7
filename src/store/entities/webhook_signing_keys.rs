//! The `webhook_signing_keys` table: the HMAC keys (webhook secrets) that sign an
//! application server's webhooks.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_signing_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub app_server_id: String,
    /// `whsec_…`; kept in the clear because signing needs it.
    pub signing_key: String,
    pub created_at: i64,
    /// A replaced secret still signs until then; `None` while current.
    pub expires_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
