//! Billing: tariffs, the append-only ledger, idempotency records, the webhook outbox and its
//! delivery log, webhook signing secrets; and the columns billing needs on existing tables.
//!
//! - `sessions` gains the ids beside the names (`user_id`, `service_id`, `app_server_id`) and
//!   the `tariff_id` that applied when it was confirmed.
//! - `app_servers` gains `commission_bps`, `webhook_url` and `deleted_at` (deleted servers stay
//!   for history); `services` gains `deleted_at`; `api_keys` gains `expires_at` (a reissued
//!   key's predecessor keeps working until then).
//! - `tariffs`: versions per service; the version in force at a time is the newest whose
//!   `effective_from` is not after it.
//! - `ledger_entries`: time charges, item charges and adjustments. Never updated or deleted.
//! - `idempotency_keys`: one row per `(scope, key)`, written in the transaction of what it made.
//! - `webhook_events` (the outbox) and `webhook_deliveries` (every attempt and its answer).
//! - `webhook_signing_keys`: HMAC keys (webhook secrets) per application server; a replaced one keeps signing until
//!   its `expires_at`.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Sessions {
    Table,
    UserId,
    ServiceId,
    AppServerId,
    TariffId,
    EndedAt,
}

#[derive(DeriveIden)]
enum AppServers {
    Table,
    CommissionBps,
    WebhookUrl,
    DeletedAt,
}

#[derive(DeriveIden)]
enum Services {
    Table,
    DeletedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum Tariffs {
    Table,
    Id,
    ServiceId,
    Currency,
    SetupAmount,
    PerMinuteAmount,
    IncrementSecs,
    FreeSecs,
    EffectiveFrom,
    CreatedAt,
}

#[derive(DeriveIden)]
enum LedgerEntries {
    Table,
    Id,
    Kind,
    Source,
    UserId,
    AppServerId,
    SessionId,
    ServiceId,
    TariffId,
    Description,
    UnitAmount,
    Quantity,
    Amount,
    Currency,
    Metadata,
    CreatedAt,
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Scope,
    Key,
    Fingerprint,
    Status,
    Location,
    Body,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum WebhookEvents {
    Table,
    Id,
    AppServerId,
    EventType,
    Payload,
    CreatedAt,
    State,
    Attempts,
    NextAttemptAt,
    LeaseUntil,
    DeliveredAt,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    EventId,
    AppServerId,
    EventType,
    Attempt,
    Url,
    AttemptedAt,
    StatusCode,
    Error,
    ResponseBody,
    DurationMs,
}

#[derive(DeriveIden)]
enum WebhookSigningKeys {
    Table,
    Id,
    AppServerId,
    SigningKey,
    CreatedAt,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// SQLite does not wrap migrations in a transaction by default; this one must be atomic.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        for column in [
            text_null(Sessions::UserId),
            text_null(Sessions::ServiceId),
            text_null(Sessions::AppServerId),
            text_null(Sessions::TariffId),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Sessions::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        for column in [
            integer(AppServers::CommissionBps).default(0).to_owned(),
            text_null(AppServers::WebhookUrl),
            big_integer_null(AppServers::DeletedAt),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(AppServers::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Services::Table)
                    .add_column(big_integer_null(Services::DeletedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .add_column(big_integer_null(ApiKeys::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_sessions_user_ended_at")
                    .table(Sessions::Table)
                    .col(Sessions::UserId)
                    .col(Sessions::EndedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_sessions_app_server_id_ended_at")
                    .table(Sessions::Table)
                    .col(Sessions::AppServerId)
                    .col(Sessions::EndedAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Tariffs::Table)
                    .col(text(Tariffs::Id).primary_key())
                    .col(text(Tariffs::ServiceId))
                    .col(text(Tariffs::Currency))
                    .col(big_integer(Tariffs::SetupAmount))
                    .col(big_integer(Tariffs::PerMinuteAmount))
                    .col(integer(Tariffs::IncrementSecs))
                    .col(integer(Tariffs::FreeSecs))
                    .col(big_integer(Tariffs::EffectiveFrom))
                    .col(big_integer(Tariffs::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_tariffs_service_effective_from")
                    .table(Tariffs::Table)
                    .col(Tariffs::ServiceId)
                    .col(Tariffs::EffectiveFrom)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(LedgerEntries::Table)
                    .col(text(LedgerEntries::Id).primary_key())
                    .col(text(LedgerEntries::Kind))
                    .col(text(LedgerEntries::Source))
                    .col(text(LedgerEntries::UserId))
                    .col(text_null(LedgerEntries::AppServerId))
                    .col(text_null(LedgerEntries::SessionId))
                    .col(text_null(LedgerEntries::ServiceId))
                    .col(text_null(LedgerEntries::TariffId))
                    .col(text(LedgerEntries::Description))
                    .col(big_integer_null(LedgerEntries::UnitAmount))
                    .col(integer_null(LedgerEntries::Quantity))
                    .col(big_integer(LedgerEntries::Amount))
                    .col(text(LedgerEntries::Currency))
                    .col(text_null(LedgerEntries::Metadata))
                    .col(big_integer(LedgerEntries::CreatedAt))
                    .to_owned(),
            )
            .await?;
        for (name, first) in [
            ("ix_ledger_user_created_at", LedgerEntries::UserId),
            (
                "ix_ledger_app_server_created_at",
                LedgerEntries::AppServerId,
            ),
            ("ix_ledger_session_created_at", LedgerEntries::SessionId),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(LedgerEntries::Table)
                        .col(first)
                        .col(LedgerEntries::CreatedAt)
                        .col(LedgerEntries::Id)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("ix_ledger_created_at")
                    .table(LedgerEntries::Table)
                    .col(LedgerEntries::CreatedAt)
                    .col(LedgerEntries::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .col(text(IdempotencyKeys::Scope))
                    .col(text(IdempotencyKeys::Key))
                    .col(text(IdempotencyKeys::Fingerprint))
                    .col(integer(IdempotencyKeys::Status))
                    .col(text_null(IdempotencyKeys::Location))
                    .col(text(IdempotencyKeys::Body))
                    .col(big_integer(IdempotencyKeys::CreatedAt))
                    .col(big_integer(IdempotencyKeys::ExpiresAt))
                    .primary_key(
                        Index::create()
                            .col(IdempotencyKeys::Scope)
                            .col(IdempotencyKeys::Key),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_idempotency_keys_expires_at")
                    .table(IdempotencyKeys::Table)
                    .col(IdempotencyKeys::ExpiresAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(WebhookEvents::Table)
                    .col(text(WebhookEvents::Id).primary_key())
                    .col(text(WebhookEvents::AppServerId))
                    .col(text(WebhookEvents::EventType))
                    .col(text(WebhookEvents::Payload))
                    .col(big_integer(WebhookEvents::CreatedAt))
                    .col(text(WebhookEvents::State))
                    .col(integer(WebhookEvents::Attempts))
                    .col(big_integer(WebhookEvents::NextAttemptAt))
                    .col(big_integer_null(WebhookEvents::LeaseUntil))
                    .col(big_integer_null(WebhookEvents::DeliveredAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_webhook_events_state_next")
                    .table(WebhookEvents::Table)
                    .col(WebhookEvents::State)
                    .col(WebhookEvents::NextAttemptAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .col(text(WebhookDeliveries::Id).primary_key())
                    .col(text(WebhookDeliveries::EventId))
                    .col(text(WebhookDeliveries::AppServerId))
                    .col(text(WebhookDeliveries::EventType))
                    .col(integer(WebhookDeliveries::Attempt))
                    .col(text(WebhookDeliveries::Url))
                    .col(big_integer(WebhookDeliveries::AttemptedAt))
                    .col(integer_null(WebhookDeliveries::StatusCode))
                    .col(text_null(WebhookDeliveries::Error))
                    .col(text_null(WebhookDeliveries::ResponseBody))
                    .col(big_integer(WebhookDeliveries::DurationMs))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_webhook_deliveries_attempted_at")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::AttemptedAt)
                    .col(WebhookDeliveries::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_webhook_deliveries_event")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::EventId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(WebhookSigningKeys::Table)
                    .col(text(WebhookSigningKeys::Id).primary_key())
                    .col(text(WebhookSigningKeys::AppServerId))
                    .col(text(WebhookSigningKeys::SigningKey))
                    .col(big_integer(WebhookSigningKeys::CreatedAt))
                    .col(big_integer_null(WebhookSigningKeys::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_webhook_signing_keys_app_server")
                    .table(WebhookSigningKeys::Table)
                    .col(WebhookSigningKeys::AppServerId)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            WebhookSigningKeys::Table.into_iden(),
            WebhookDeliveries::Table.into_iden(),
            WebhookEvents::Table.into_iden(),
            IdempotencyKeys::Table.into_iden(),
            LedgerEntries::Table.into_iden(),
            Tariffs::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
