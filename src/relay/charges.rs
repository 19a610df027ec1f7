//! Item charges an application server reports over SIP (DESIGN.md flow 3): an INFO inside
//! the session's dialog, or the body of its 200 to the caller's BYE, both with
//! `Content-Type: application/vnd.tollgate.charges+json`.
//!
//! An INFO from the application server is the relay's: it is never relayed to the caller.
//! Its charges are checked ([`crate::billing::parse_charges_body`]) and written in one
//! transaction with a key made of the dialog and the CSeq, so a retransmitted INFO (absorbed
//! by its transaction anyway) bills nothing twice; then the INFO is answered — 200 once the
//! charges are on disk, 400 naming the bad field, 415 for another content type (with an
//! `Accept` header naming the one), and nothing is written in either case. The charges in a
//! 200 to BYE are written the same way (source `bye`); that 200 is relayed as it is.

use crate::billing::{self, BillingError, ChargeBodyError, ChargeSource, CHARGES_CONTENT_TYPE};
use crate::relay::core::{Core, CoreEvent};
use crate::relay::transaction::ServerKey;
use crate::sip::message as msg;
use rsipstack::sip::{Header, Headers};

/// The content type of a message, if it has one.
fn content_type(headers: &Headers) -> Option<&str> {
    headers.iter().find_map(|h| match h {
        Header::ContentType(c) => Some(c.value()),
        _ => None,
    })
}

/// The key that makes a SIP charge report land once: its dialog and CSeq.
fn dedupe_key(kind: &str, headers: &Headers) -> String {
    format!(
        "{kind}:{}:{}:{}",
        msg::call_id(headers).unwrap_or_default(),
        msg::from_tag(headers).unwrap_or_default(),
        msg::cseq(headers).map_or(0, |(n, _)| n)
    )
}

impl Core {
    /// An INFO from the application server of session `session_id`: its charges are
    /// written, then it is answered.
    pub(crate) fn on_charges_info(&mut self, key: ServerKey, session_id: String) {
        let Some(req) = self.engine.request(&key) else {
            return;
        };
        let charges = match billing::parse_charges_body(content_type(&req.headers), &req.body) {
            Ok(charges) => charges,
            Err(ChargeBodyError::UnsupportedMediaType(why)) => {
                let accept = Header::Accept(rsipstack::sip::Accept::new(CHARGES_CONTENT_TYPE));
                tracing::info!(%session_id, %why, "INFO refused");
                return self.engine.respond_status(
                    &key,
                    415,
                    Some("The relay takes only charges in an INFO"),
                    vec![accept],
                );
            }
            Err(ChargeBodyError::Invalid { field, message }) => {
                let why = format!("{field}: {message}");
                return self
                    .engine
                    .respond_status(&key, 400, Some(&why), Vec::new());
            }
        };
        let dedupe = dedupe_key("info", &req.headers);
        let (store, events, now) = (self.parts.store.clone(), self.events_tx.clone(), self.now());
        tokio::spawn(async move {
            let result = billing::record_charges(
                &store,
                now,
                &session_id,
                ChargeSource::SipInfo,
                charges,
                &dedupe,
            )
            .await;
            let (status, reason) = match result {
                Ok(_) => (200, None),
                Err(BillingError::Invalid { field, message }) => {
                    (400, Some(format!("{field}: {message}")))
                }
                Err(BillingError::NotBillable(why)) => (403, Some(why)),
                Err(BillingError::NotFound(why)) => (481, Some(why)),
                Err(BillingError::KeyReused(why)) => (400, Some(why)),
                Err(BillingError::Busy(_)) => (503, Some("Billing is busy".into())),
                Err(BillingError::Store(e)) => {
                    tracing::error!(error = %e, %session_id, "INFO charges not stored");
                    (500, Some("Charges could not be stored".into()))
                }
            };
            let _ = events.send(CoreEvent::Answer {
                key,
                status,
                reason,
            });
        });
    }

    /// The application server's 200 to the caller's BYE may carry the session's last charges.
    pub(crate) fn charges_in_bye_answer(
        &mut self,
        session_id: &str,
        headers: &Headers,
        body: &[u8],
    ) {
        if body.is_empty() {
            return;
        }
        let charges = match billing::parse_charges_body(content_type(headers), body) {
            Ok(charges) => charges,
            Err(ChargeBodyError::UnsupportedMediaType(_)) => return,
            Err(e) => {
                return tracing::warn!(%session_id, error = %e, "charges in the 200 to BYE refused")
            }
        };
        let dedupe = dedupe_key("bye", headers);
        let (store, now, session_id) =
            (self.parts.store.clone(), self.now(), session_id.to_string());
        tokio::spawn(async move {
            let result = billing::record_charges(
                &store,
                now,
                &session_id,
                ChargeSource::Bye,
                charges,
                &dedupe,
            )
            .await;
            if let Err(e) = result {
                tracing::error!(%session_id, error = %e, "charges in the 200 to BYE not recorded");
            }
        });
    }
}
