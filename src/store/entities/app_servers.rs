//! The `app_servers` table: named application servers, the SIP URI they answer on, their
//! commission and webhook URL.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "app_servers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    #[sea_orm(unique)]
    pub name: String,
    pub uri: String,
    pub created_at: i64,
    /// The operator's commission on this server's settlement, in basis points.
    pub commission_bps: i32,
    pub webhook_url: Option<String>,
    /// Set when deleted; the row stays for the sessions and ledger entries naming it.
    pub deleted_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
