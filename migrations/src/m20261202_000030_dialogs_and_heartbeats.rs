//! Restarts that drop no call: `sessions.dialog` keeps, with the confirmation, what a relay
//! needs to route a session's in-dialog requests (JSON: Call-ID, tags, route set, both sides'
//! contact and transport, CSeqs); `nodes` keeps each relay node's heartbeat, written with the
//! checkpoint of its live sessions.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Dialog,
}

#[derive(DeriveIden)]
enum Nodes {
    Table,
    Id,
    HeartbeatAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Sessions::Table)
                    .add_column(text_null(Sessions::Dialog))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Nodes::Table)
                    .col(text(Nodes::Id).primary_key())
                    .col(big_integer(Nodes::HeartbeatAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Nodes::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Sessions::Table)
                    .drop_column(Sessions::Dialog)
                    .to_owned(),
            )
            .await
    }
}
