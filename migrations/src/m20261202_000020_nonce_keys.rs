//! `nonce_keys`: the keys behind the relay's digest nonces, shared by every node on the
//! database. A node issues nonces with the newest key already active (`active_from` ≤ now)
//! and accepts the three newest, so a rotation overlaps: a new key is written ahead of its
//! activation (every node loads it before any node issues with it) and the previous one stays
//! accepted while its nonces live. `key_hex` is 32 random bytes in hex.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum NonceKeys {
    Table,
    Id,
    KeyHex,
    CreatedAt,
    ActiveFrom,
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
                    .table(NonceKeys::Table)
                    .col(text(NonceKeys::Id).primary_key())
                    .col(text(NonceKeys::KeyHex))
                    .col(big_integer(NonceKeys::CreatedAt))
                    .col(big_integer(NonceKeys::ActiveFrom))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_nonce_keys_active_from")
                    .table(NonceKeys::Table)
                    .col(NonceKeys::ActiveFrom)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(NonceKeys::Table).to_owned())
            .await
    }
}
