//! Billing: what sessions and items cost, and what users and shops read from the ledger.
//!
//! - [`tariff`]: versioned time tariffs per service and the time-charge arithmetic. The time
//!   charge itself is written by the session writer ([`crate::store::SessionWriter`]) in the
//!   transaction that terminates the session.
//! - [`charges`]: item charges reported by application servers (REST, SIP INFO, the 200 to
//!   BYE): the body parser for the SIP side ([`parse_charges_body`]) and the checks.
//! - [`record_charges`]: writes one session's charges exactly once (the SIP path);
//!   [`ChargeWriter`]: the same through a group-commit queue (the REST path).
//! - [`statement`]: one user's statement across every shop; [`settlement`]: one shop's gross,
//!   commission and net. Both also as CSV.
//! - [`money`]: integer minor units with an ISO 4217 code, sums that cannot overflow.
//!
//! The SQL lives in [`crate::store`] (ledger, tariffs, idempotency records, outbox); the rules
//! live here. Decisions: `docs/decisions/0010-billing.md`.

pub mod charges;
pub mod money;
pub mod settlement;
pub mod statement;
pub mod tariff;
mod writer;

use sha2::{Digest, Sha256};

use crate::store::{ChargeOutcome, ChargeRequest, IdempotencyKey, Store, StoreError};

pub use charges::{
    parse_charges_body, Charge, ChargeBodyError, ChargeSource, NewCharge, CHARGES_CONTENT_TYPE,
};
pub use money::Money;
pub use tariff::Tariff;
pub use writer::ChargeWriter;

/// Why charges (or another ledger write) were refused. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    /// Bad input in `field` (`unit_amount`, `charges[1].currency`, …). REST 400, SIP 400.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// No such session, or not one this application server may charge. REST 404.
    #[error("{0}")]
    NotFound(String),
    /// The session takes no charges now: not confirmed yet, never established, or ended
    /// longer ago than the grace window. REST 409.
    #[error("{0}")]
    NotBillable(String),
    /// The idempotency key (or SIP dedupe key) was used for another request. REST 422.
    #[error("{0}")]
    KeyReused(String),
    /// The charge queue is full. REST 503.
    #[error("{0}")]
    Busy(String),
    /// The database failed. REST 500, SIP 500.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

impl From<charges::InvalidField> for BillingError {
    fn from(e: charges::InvalidField) -> Self {
        BillingError::Invalid {
            field: e.field,
            message: e.message,
        }
    }
}

/// The idempotency scope of charges the relay reports from SIP.
pub const SIP_SCOPE: &str = "sip";

/// Lowercase hex SHA-256 of `parts`, separated so that no two lists collide.
pub fn fingerprint(parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hex::encode(hash.finalize())
}

/// Writes the charges of one session in ONE transaction with an idempotency record under
/// `dedupe_key` (a replay with the same key and charges returns the first result and writes
/// nothing; the same key with other charges is [`BillingError::KeyReused`]). Validates the
/// currency against the tariff recorded on the session (any ISO 4217 code when none), the
/// session's state and grace window (`[billing] charge_grace_secs`, see
/// [`Store::with_charge_grace_ms`]), and that no sum overflows. Emits `charge.created` outbox
/// rows in the same transaction.
pub async fn record_charges(
    store: &Store,
    now_ms: i64,
    session_id: &str,
    source: ChargeSource,
    charges: Vec<NewCharge>,
    dedupe_key: &str,
) -> Result<Vec<Charge>, BillingError> {
    if charges.is_empty() {
        return Err(BillingError::Invalid {
            field: "charges".into(),
            message: "no charges to record".into(),
        });
    }
    let body = serde_json::to_vec(&charges).unwrap_or_default();
    let request = ChargeRequest {
        session_id: session_id.to_owned(),
        source,
        idempotency: IdempotencyKey {
            scope: SIP_SCOPE.to_owned(),
            key: dedupe_key.to_owned(),
            fingerprint: fingerprint(&[session_id.as_bytes(), source.as_str().as_bytes(), &body]),
        },
        charges,
        app_server_id: None,
        single: false,
    };
    match store.apply_charges(now_ms, &[request]).await?.pop() {
        Some(Ok(ChargeOutcome::Created(charges))) => Ok(charges),
        Some(Ok(ChargeOutcome::Replayed(response))) => serde_json::from_str(&response.body)
            .map_err(|e| {
                BillingError::Store(StoreError::internal(format!(
                    "the recorded charges of key {dedupe_key} do not read back: {e}"
                )))
            }),
        Some(Err(e)) => Err(e),
        None => Err(BillingError::Store(StoreError::internal(
            "the ledger answered nothing",
        ))),
    }
}
