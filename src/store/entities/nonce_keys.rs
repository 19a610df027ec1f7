//! The `nonce_keys` table: the keys behind digest nonces, shared by every relay node.

use std::fmt;

use sea_orm::entity::prelude::*;

#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "nonce_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// 32 random bytes in hex. Never logged: the `Debug` impl below leaves it out.
    pub key_hex: String,
    pub created_at: i64,
    pub active_from: i64,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("id", &self.id)
            .field("key_hex", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("active_from", &self.active_from)
            .finish()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
