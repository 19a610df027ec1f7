//! Webhooks: signed events from the outbox, delivered at least once.
//!
//! Events (`session.confirmed`, `session.terminated`, `charge.created`) are written to the
//! `webhook_events` outbox in the transaction of what they report (see
//! [`crate::store`]). The [`Dispatcher`] claims due events, POSTs each to its application
//! server's `webhook_url` with a [`signature`] header, logs every attempt, and retries
//! failures with exponential backoff and jitter until `[webhooks] max_age_secs` after the
//! event. A restart loses nothing: the outbox is the state.
//!
//! ```text
//! POST {webhook_url}
//! Content-Type: application/json
//! Tollgate-Event-Id: evt_…            (also the body's "id": de-duplicate on it)
//! Tollgate-Signature: t=1764625453,v1=5257a8…[,v1=… while a replaced secret is in grace]
//!
//! {"id":"evt_…","type":"charge.created","created_at":"2026-12-01T21:44:13.123Z","data":{…}}
//! ```
//! Receivers check the signature with [`verify`] (or the recipes in `docs/webhooks.md`).

mod dispatcher;
mod signature;

pub use dispatcher::{retry_delay_ms, Dispatcher, DispatcherSettings};
pub use signature::{sign, signature_header, verify, VerifyError, SIGNATURE_HEADER};
