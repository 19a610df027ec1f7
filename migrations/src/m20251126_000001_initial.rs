//! The initial schema: users, application servers, services and their routes, sessions and
//! registrar bindings.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Name,
    Realm,
    Ha1Md5,
    Ha1Sha256,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AppServers {
    Table,
    Id,
    Name,
    Uri,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Services {
    Table,
    Id,
    Name,
    Domain,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ServiceRoutes {
    Table,
    ServiceId,
    AppServerId,
    Position,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    CallId,
    Caller,
    Service,
    AppServer,
    State,
    FinalStatus,
    CreatedAt,
    ConfirmedAt,
    EndedAt,
    DurationMs,
    EndedBy,
    EndReason,
    LastActivityAt,
    Node,
}

#[derive(DeriveIden)]
enum Registrations {
    Table,
    Aor,
    Contact,
    ExpiresAt,
    CallId,
    Cseq,
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
                    .table(Users::Table)
                    .col(text(Users::Id).primary_key())
                    .col(text_uniq(Users::Name))
                    .col(text(Users::Realm))
                    .col(text(Users::Ha1Md5))
                    .col(text(Users::Ha1Sha256))
                    .col(big_integer(Users::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AppServers::Table)
                    .col(text(AppServers::Id).primary_key())
                    .col(text_uniq(AppServers::Name))
                    .col(text(AppServers::Uri))
                    .col(big_integer(AppServers::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Services::Table)
                    .col(text(Services::Id).primary_key())
                    .col(text(Services::Name))
                    .col(text(Services::Domain))
                    .col(big_integer(Services::CreatedAt))
                    .index(
                        Index::create()
                            .name("ux_services_name_domain")
                            .col(Services::Name)
                            .col(Services::Domain)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ServiceRoutes::Table)
                    .col(text(ServiceRoutes::ServiceId))
                    .col(text(ServiceRoutes::AppServerId))
                    .col(integer(ServiceRoutes::Position))
                    .primary_key(
                        Index::create()
                            .col(ServiceRoutes::ServiceId)
                            .col(ServiceRoutes::Position),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_service_routes_service")
                            .from(ServiceRoutes::Table, ServiceRoutes::ServiceId)
                            .to(Services::Table, Services::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_service_routes_app_server")
                            .from(ServiceRoutes::Table, ServiceRoutes::AppServerId)
                            .to(AppServers::Table, AppServers::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // PostgreSQL does not index the referencing side of a foreign key by itself.
        manager
            .create_index(
                Index::create()
                    .name("ix_service_routes_app_server_id")
                    .table(ServiceRoutes::Table)
                    .col(ServiceRoutes::AppServerId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Sessions::Table)
                    .col(text(Sessions::Id).primary_key())
                    .col(text(Sessions::CallId))
                    .col(text(Sessions::Caller))
                    .col(text(Sessions::Service))
                    .col(text(Sessions::AppServer))
                    .col(text(Sessions::State))
                    .col(integer_null(Sessions::FinalStatus))
                    .col(big_integer(Sessions::CreatedAt))
                    .col(big_integer_null(Sessions::ConfirmedAt))
                    .col(big_integer_null(Sessions::EndedAt))
                    .col(big_integer_null(Sessions::DurationMs))
                    .col(text_null(Sessions::EndedBy))
                    .col(text_null(Sessions::EndReason))
                    .col(big_integer_null(Sessions::LastActivityAt))
                    .col(text(Sessions::Node))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_sessions_state")
                    .table(Sessions::Table)
                    .col(Sessions::State)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_sessions_created_at")
                    .table(Sessions::Table)
                    .col(Sessions::CreatedAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Registrations::Table)
                    .col(text(Registrations::Aor))
                    .col(text(Registrations::Contact))
                    .col(big_integer(Registrations::ExpiresAt))
                    .col(text(Registrations::CallId))
                    .col(big_integer(Registrations::Cseq))
                    .primary_key(
                        Index::create()
                            .col(Registrations::Aor)
                            .col(Registrations::Contact),
                    )
                    .to_owned(),
            )
            .await?;

        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Registrations::Table.into_iden(),
            Sessions::Table.into_iden(),
            ServiceRoutes::Table.into_iden(),
            Services::Table.into_iden(),
            AppServers::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
