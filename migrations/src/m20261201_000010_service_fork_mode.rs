//! `services.fork_mode`: how a service with several application servers forks an INVITE —
//! `first_answer` (parallel, the first 2xx wins and the rest are CANCELled), `all_answers`
//! (parallel, every 2xx reaches the caller as its own dialog) or `serial` (one at a time, in
//! order, the next when one fails or times out). Existing services keep today's behaviour,
//! `first_answer`.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Services {
    Table,
    ForkMode,
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
                    .table(Services::Table)
                    .add_column(
                        ColumnDef::new(Services::ForkMode)
                            .text()
                            .not_null()
                            .default("first_answer"),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Services::Table)
                    .drop_column(Services::ForkMode)
                    .to_owned(),
            )
            .await
    }
}
