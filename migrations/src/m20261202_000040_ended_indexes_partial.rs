//! The statement's and the settlement's session indexes (`user_id, ended_at` and
//! `app_server_id, ended_at`) hold ended sessions only (`WHERE ended_at IS NOT NULL`). Both
//! queries ask for a range of `ended_at`, which implies it, so they use the indexes as before;
//! a live session is no longer entered into both at its start and moved within both at its
//! end. That was four of the seventeen B-tree writes of every call on the relay's hot path.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Sessions {
    Table,
    UserId,
    AppServerId,
    EndedAt,
}

/// The two indexes, `(name, leading column)`.
const INDEXES: [(&str, Sessions); 2] = [
    ("ix_sessions_user_ended_at", Sessions::UserId),
    ("ix_sessions_app_server_id_ended_at", Sessions::AppServerId),
];

async fn recreate(manager: &SchemaManager<'_>, ended_only: bool) -> Result<(), DbErr> {
    for (name, leading) in INDEXES {
        manager
            .drop_index(Index::drop().name(name).table(Sessions::Table).to_owned())
            .await?;
        let mut index = Index::create();
        index
            .name(name)
            .table(Sessions::Table)
            .col(leading)
            .col(Sessions::EndedAt);
        if ended_only {
            index.and_where(Expr::col(Sessions::EndedAt).is_not_null());
        }
        manager.create_index(index.to_owned()).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        recreate(manager, true).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        recreate(manager, false).await
    }
}
