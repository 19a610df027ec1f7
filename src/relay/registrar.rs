//! The registrar (RFC 3261 §10.3): bindings of an address-of-record to contact addresses,
//! with expiry, refresh, removal (`Expires: 0`) and removal of all (`Contact: *`).
//!
//! The relay core authenticates the REGISTER (401 challenge) and hands it here, off the
//! message path, because bindings live in the database.

use crate::sip::message as msg;
use crate::store::{Binding, Store};
use rsipstack::sip::{Header, Request, Response};

/// Shortest registration accepted (seconds); shorter ones get 423 Interval Too Brief.
pub const MIN_EXPIRES: u32 = 60;
/// Longest registration granted (seconds); longer requests are shortened.
pub const MAX_EXPIRES: u32 = 7200;
const DEFAULT_EXPIRES: u32 = 3600;

/// Applies a REGISTER from the authenticated `user` and builds its response.
pub async fn register(
    store: &Store,
    req: &Request,
    user: &str,
    domain: &str,
    to_tag: &str,
    now_ms: i64,
) -> Response {
    match apply(store, req, user, domain, now_ms).await {
        Ok(bindings) => {
            let mut resp = crate::sip::builders::response_to(req, 200, Some(to_tag));
            for b in bindings {
                let left = ((b.expires_at - now_ms) / 1000).max(0);
                let value = format!("<{}>;expires={}", b.contact, left);
                msg::push_header(
                    &mut resp.headers,
                    Header::Contact(rsipstack::sip::Contact::new(value)),
                );
            }
            resp
        }
        Err(Refusal { status, extra }) => {
            let mut resp = crate::sip::builders::response_to(req, status, Some(to_tag));
            for h in extra {
                msg::push_header(&mut resp.headers, h);
            }
            resp
        }
    }
}

struct Refusal {
    status: u16,
    extra: Vec<Header>,
}

impl Refusal {
    fn status(status: u16) -> Self {
        Refusal {
            status,
            extra: Vec::new(),
        }
    }
}

async fn apply(
    store: &Store,
    req: &Request,
    user: &str,
    domain: &str,
    now_ms: i64,
) -> Result<Vec<Binding>, Refusal> {
    let to = msg::to_value(&req.headers).ok_or(Refusal::status(400))?;
    let aor = normalize_aor(msg::addr_uri(to)).ok_or(Refusal::status(400))?;
    if aor != format!("sip:{}@{}", user, domain).to_ascii_lowercase() {
        // Only the owner may change the bindings of an address-of-record.
        return Err(Refusal::status(403));
    }
    let call_id = msg::call_id(&req.headers).unwrap_or_default().to_string();
    let (cseq, _) = msg::cseq(&req.headers).ok_or(Refusal::status(400))?;
    let header_expires: Option<u32> = req.headers.iter().find_map(|h| match h {
        Header::Expires(v) => v.value().trim().parse().ok(),
        _ => None,
    });
    let contacts: Vec<String> = req
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::Contact(c) => Some(c.value()),
            _ => None,
        })
        .flat_map(msg::split_list)
        .map(str::to_string)
        .collect();
    let db_error = |e| {
        tracing::error!(error = %e, "registrar storage failed");
        Refusal::status(500)
    };

    if contacts.iter().any(|c| c.trim() == "*") {
        if contacts.len() != 1 || header_expires != Some(0) {
            return Err(Refusal::status(400));
        }
        store.remove_all_bindings(&aor).await.map_err(db_error)?;
        return Ok(Vec::new());
    }
    for contact in &contacts {
        let uri = msg::addr_uri(contact).to_string();
        let expires = contact_expires(contact)
            .or(header_expires)
            .unwrap_or(DEFAULT_EXPIRES);
        if expires == 0 {
            store.remove_binding(&aor, &uri).await.map_err(db_error)?;
            continue;
        }
        if expires < MIN_EXPIRES {
            let min = Header::MinExpires(rsipstack::sip::MinExpires::new(MIN_EXPIRES.to_string()));
            return Err(Refusal {
                status: 423,
                extra: vec![min],
            });
        }
        let binding = Binding {
            aor: aor.clone(),
            contact: uri,
            expires_at: now_ms + i64::from(expires.min(MAX_EXPIRES)) * 1000,
            call_id: call_id.clone(),
            cseq,
        };
        store.save_binding(&binding).await.map_err(db_error)?;
    }
    store.bindings(&aor, now_ms).await.map_err(db_error)
}

/// `sip:Alice@Portal.com;transport=udp` → `sip:alice@portal.com`.
fn normalize_aor(uri: &str) -> Option<String> {
    let uri = uri.split(';').next()?.trim();
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    Some(format!("sip:{}", rest.to_ascii_lowercase()))
}

fn contact_expires(contact: &str) -> Option<u32> {
    let params = match contact.rfind('>') {
        Some(i) => &contact[i + 1..],
        None => contact,
    };
    msg::param_value(params, "expires").and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_lists_and_expires() {
        let v = msg::split_list("<sip:a@1.2.3.4;x=1>;expires=60, \"B, b\" <sip:b@5.6.7.8>");
        assert_eq!(v.len(), 2);
        assert_eq!(contact_expires(v[0]), Some(60));
        assert_eq!(contact_expires(v[1]), None);
        assert_eq!(
            normalize_aor("sip:Alice@Portal.com;transport=udp").as_deref(),
            Some("sip:alice@portal.com")
        );
    }
}
