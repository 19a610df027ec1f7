//! The `signing_keys` table: the relay's session-token signing keys and their rotation state.
//!
//! A key is `next` (published, not yet signing), `current` (signing) or `retired` (published
//! for a grace period so tokens it signed still verify). Two partial unique indexes keep at most
//! one `current` and at most one `next` key, whatever the number of relay nodes rotating.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SigningKeys {
    Table,
    Kid,
    Algorithm,
    PrivatePem,
    PublicJwk,
    Status,
    CreatedAt,
    ActivatedAt,
    RetiredAt,
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
                    .table(SigningKeys::Table)
                    .col(text(SigningKeys::Kid).primary_key())
                    .col(text(SigningKeys::Algorithm))
                    .col(text(SigningKeys::PrivatePem))
                    .col(text(SigningKeys::PublicJwk))
                    .col(text(SigningKeys::Status))
                    .col(big_integer(SigningKeys::CreatedAt))
                    .col(big_integer_null(SigningKeys::ActivatedAt))
                    .col(big_integer_null(SigningKeys::RetiredAt))
                    .to_owned(),
            )
            .await?;
        for status in ["current", "next"] {
            manager
                .create_index(
                    Index::create()
                        .name(format!("ux_signing_keys_one_{status}"))
                        .table(SigningKeys::Table)
                        .col(SigningKeys::Status)
                        .unique()
                        .and_where(Expr::col(SigningKeys::Status).eq(status))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SigningKeys::Table).to_owned())
            .await
    }
}
