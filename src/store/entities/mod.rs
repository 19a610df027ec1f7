//! sea-orm entities, one file per table. Private to [`crate::store`]: the rest of the crate
//! sees the record types in the store's public API instead.

pub mod api_keys;
pub mod app_servers;
pub mod idempotency_keys;
pub mod ledger_entries;
pub mod nonce_keys;
pub mod registrations;
pub mod service_routes;
pub mod services;
pub mod session_changes;
pub mod sessions;
pub mod signing_keys;
pub mod tariffs;
pub mod users;
pub mod webhook_deliveries;
pub mod webhook_events;
pub mod webhook_signing_keys;
