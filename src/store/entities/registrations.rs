//! The `registrations` table: registrar bindings from an address of record to a contact.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "registrations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub aor: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub contact: String,
    pub expires_at: i64,
    pub call_id: String,
    pub cseq: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
