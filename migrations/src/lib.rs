//! Database schema migrations for Tollgate.
//!
//! Every migration is written with sea-query's schema builders, so the same code creates the
//! same schema on SQLite and PostgreSQL. Each one runs inside a transaction on both engines
//! (`use_transaction() == Some(true)`): a migration that fails half-way leaves nothing behind.
//!
//! Conventions: ids are TEXT UUIDs, timestamps are BIGINT milliseconds since the Unix epoch.

pub use sea_orm_migration::prelude::*;

mod m20251126_000001_initial;
mod m20261126_000002_signing_keys;
mod m20261126_000003_api_keys;
mod m20261201_000004_billing;
mod m20261201_000010_service_fork_mode;
mod m20261201_000011_session_changes;
mod m20261202_000020_nonce_keys;
mod m20261202_000030_dialogs_and_heartbeats;
mod m20261202_000040_ended_indexes_partial;

/// Runs Tollgate's migrations in order; see [`MigratorTrait::up`].
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20251126_000001_initial::Migration),
            Box::new(m20261126_000002_signing_keys::Migration),
            Box::new(m20261126_000003_api_keys::Migration),
            Box::new(m20261201_000004_billing::Migration),
            Box::new(m20261201_000010_service_fork_mode::Migration),
            Box::new(m20261201_000011_session_changes::Migration),
            Box::new(m20261202_000020_nonce_keys::Migration),
            Box::new(m20261202_000030_dialogs_and_heartbeats::Migration),
            Box::new(m20261202_000040_ended_indexes_partial::Migration),
        ]
    }
}
