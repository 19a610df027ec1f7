//! The `services` table: `name@domain` pairs a client can INVITE.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "services")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub domain: String,
    pub created_at: i64,
    /// `first_answer`, `all_answers` or `serial` (see [`crate::store::ForkMode`]).
    pub fork_mode: String,
    /// Set when deleted; the row stays for history.
    pub deleted_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
