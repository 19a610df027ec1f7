//! The `api_keys` table: application servers' REST API keys, stored as SHA-256 digests.
//!
//! A key is 256 random bits shown once, when it is made; only its digest is kept, so a copy of
//! the database cannot be replayed against the API. The `prefix` (the key's first characters)
//! lets an operator tell keys apart in logs without holding them. Deleting an application
//! server deletes its keys.
//!
//! Also adds the index the REST API's scoped session listing walks: sessions of one
//! application server, newest first (`app_server, created_at, id`).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    AppServerId,
    Prefix,
    KeyHash,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AppServers {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    AppServer,
    CreatedAt,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// SQLite does not wrap migrations in a transaction by default; this one must be atomic.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(text(ApiKeys::Id).primary_key())
                    .col(text(ApiKeys::AppServerId))
                    .col(text(ApiKeys::Prefix))
                    .col(text_uniq(ApiKeys::KeyHash))
                    .col(big_integer(ApiKeys::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_api_keys_app_server")
                            .from(ApiKeys::Table, ApiKeys::AppServerId)
                            .to(AppServers::Table, AppServers::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // PostgreSQL does not index the referencing side of a foreign key by itself.
        manager
            .create_index(
                Index::create()
                    .name("ix_api_keys_app_server_id")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::AppServerId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_sessions_app_server_created_at")
                    .table(Sessions::Table)
                    .col(Sessions::AppServer)
                    .col(Sessions::CreatedAt)
                    .col(Sessions::Id)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("ix_sessions_app_server_created_at")
                    .table(Sessions::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(ApiKeys::Table).to_owned())
            .await
    }
}
