//! `session_changes`: every mid-session change (re-INVITE or UPDATE) a session went through —
//! who asked, in which order (`seq`, 1, 2, … within the session), when, for what (the body, up to 8 KiB), and the answer's status. Append-only;
//! a refused change is recorded with its refusal and leaves the session as it was.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SessionChanges {
    Table,
    Id,
    SessionId,
    Seq,
    At,
    Party,
    Method,
    ContentType,
    Body,
    Status,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SessionChanges::Table)
                    .col(text(SessionChanges::Id).primary_key())
                    .col(text(SessionChanges::SessionId))
                    .col(integer(SessionChanges::Seq))
                    .col(big_integer(SessionChanges::At))
                    .col(text(SessionChanges::Party))
                    .col(text(SessionChanges::Method))
                    .col(text_null(SessionChanges::ContentType))
                    .col(text(SessionChanges::Body))
                    .col(integer(SessionChanges::Status))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_session_changes_session")
                            .from(SessionChanges::Table, SessionChanges::SessionId)
                            .to(Sessions::Table, Sessions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_session_changes_session")
                    .table(SessionChanges::Table)
                    .col(SessionChanges::SessionId)
                    .col(SessionChanges::Seq)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SessionChanges::Table).to_owned())
            .await
    }
}
