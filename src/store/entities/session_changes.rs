//! The `session_changes` table: mid-session changes (re-INVITE, UPDATE) and their answers.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "session_changes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub session_id: String,
    /// The order the changes were asked in within the session: 1, 2, …
    pub seq: i32,
    pub at: i64,
    /// `caller` or `callee`: who asked for the change.
    pub party: String,
    /// `INVITE` or `UPDATE`.
    pub method: String,
    pub content_type: Option<String>,
    pub body: String,
    /// The final status the change was answered with.
    pub status: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
