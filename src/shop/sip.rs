//! The shop's SIP side: a user agent server on UDP (RFC 3261 §8.2, §12, §15).
//!
//! ```text
//!   INVITE (Tollgate-Session-Token, body: what the caller asks for)
//!     token missing or not valid for this shop → 403 Forbidden
//!     `capacity` dialogs already up            → 486 Busy Here
//!     otherwise                                → 200 OK {"url": landing URL}, Contact, Record-Route
//!   ACK                                        → (nothing: the session is confirmed)
//!   re-INVITE / UPDATE in the dialog           → 200 OK (the new body is the new request)
//!   BYE in the dialog                          → 200 OK, with the visit's outstanding ("on my
//!                                                tab") charges as application/vnd.tollgate.charges+json
//!   in-dialog request for an unknown dialog    → 481
//! ```
//!
//! A retransmitted INVITE gets the same answer again (the 2xx is not retransmitted on a
//! timer until the ACK: a lost ACK is not recovered). The dialog table is bounded by
//! `capacity`; a session the relay ends without a BYE reaching the shop is forgotten when its
//! signed `session.terminated` webhook arrives (`forget_session`). Every request is read as
//! hostile: it is parsed by the relay's own parser and anything unparsable is dropped.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use rsipstack::sip::{Request, SipMessage};
use tokio::net::UdpSocket;

use super::visits::Visit;
use super::Shared;
use crate::billing::CHARGES_CONTENT_TYPE;
use crate::client::message::{header_param, header_value, header_values, random_hex};
use crate::relay::handover::TOKEN_HEADER;
use crate::sip::message as msg;

/// `User-Agent` / `Server` of the reference shop.
const SERVER: &str = concat!("tollgate-shop/", env!("CARGO_PKG_VERSION"));

/// One dialog the shop accepted.
pub(super) struct Dialog {
    session_id: String,
    to_tag: String,
    invite_cseq: u32,
    /// The bytes of the 200 to the initial INVITE, sent again for a retransmission.
    answer: Vec<u8>,
}

/// Dialogs by Call-ID and the caller's tag; at most `capacity`.
pub(super) type Dialogs = HashMap<(String, String), Dialog>;

/// Forgets the dialog of a session the relay says has ended without a BYE reaching the shop
/// (a session timer, a crashed caller): its capacity slot is free again.
pub(super) fn forget_session(shared: &Shared, session_id: &str) {
    shared
        .dialogs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|_, d| d.session_id != session_id);
}

/// Receives and answers until the socket fails (the task is aborted at shutdown).
pub(super) async fn run(sock: UdpSocket, shared: Arc<Shared>) {
    let local = sock.local_addr().expect("a bound socket has an address");
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, src) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "shop SIP socket");
                continue;
            }
        };
        let Ok(SipMessage::Request(req)) = msg::parse(&buf[..n]) else {
            continue; // responses (the shop sends no requests) and garbage
        };
        let Some(via) = header_value(&req, "Via").map(str::to_owned) else {
            continue;
        };
        if let Some(bytes) = handle(&req, local, &shared).await {
            let to = msg::response_target(&via, src);
            if let Err(e) = sock.send_to(&bytes, to).await {
                tracing::warn!(error = %e, %to, "shop SIP answer not sent");
            }
        }
    }
}

/// The answer to one request, if it gets one.
async fn handle(req: &Request, local: SocketAddr, shared: &Shared) -> Option<Vec<u8>> {
    let method = req.method.to_string();
    let call_id = header_value(req, "Call-ID")?.to_owned();
    let from_tag = header_value(req, "From").and_then(|f| header_param(f, "tag"))?;
    let to_tag = header_value(req, "To").and_then(|t| header_param(t, "tag"));
    let cseq = header_value(req, "CSeq")
        .and_then(|c| c.split_whitespace().next())
        .and_then(|n| n.parse::<u32>().ok())?;
    let key = (call_id, from_tag);
    let contact = format!("<sip:shop@{}>", msg::format_host_port(local));
    match (method.as_str(), to_tag) {
        ("ACK", _) => None,
        ("INVITE", None) => {
            let again = shared
                .dialogs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .filter(|d| d.invite_cseq == cseq)
                .map(|d| d.answer.clone());
            match again {
                Some(answer) => Some(answer),
                None => Some(new_session(req, key, cseq, &contact, shared).await),
            }
        }
        ("INVITE" | "UPDATE", Some(tag)) => {
            let session_id = shared
                .dialogs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .filter(|d| d.to_tag == tag)
                .map(|d| d.session_id.clone());
            let Some(session_id) = session_id else {
                return Some(answer(
                    req,
                    481,
                    "Call/Transaction Does Not Exist",
                    None,
                    &[],
                    None,
                ));
            };
            let asked = asked_of(req);
            if !asked.is_empty() {
                shared.visits.change_request(&session_id, asked);
            }
            let body = landing_body(shared);
            let extra = [("Contact", contact)];
            Some(answer(
                req,
                200,
                "OK",
                None,
                &extra,
                Some(("application/json", &body)),
            ))
        }
        ("BYE", Some(tag)) => {
            let mut dialogs = shared.dialogs.lock().unwrap_or_else(|p| p.into_inner());
            let d = match dialogs.remove(&key) {
                Some(d) if d.to_tag == tag => d,
                other => {
                    if let Some(d) = other {
                        dialogs.insert(key, d);
                    }
                    return Some(answer(
                        req,
                        481,
                        "Call/Transaction Does Not Exist",
                        None,
                        &[],
                        None,
                    ));
                }
            };
            let tab = shared.visits.end(&d.session_id);
            if tab.is_empty() {
                return Some(answer(req, 200, "OK", None, &[], None));
            }
            let body = serde_json::to_vec(&serde_json::json!({ "charges": tab })).ok()?;
            Some(answer(
                req,
                200,
                "OK",
                None,
                &[],
                Some((CHARGES_CONTENT_TYPE, &body)),
            ))
        }
        ("CANCEL" | "OPTIONS" | "INFO", _) => Some(answer(req, 200, "OK", None, &[], None)),
        (_, Some(_)) => Some(answer(
            req,
            481,
            "Call/Transaction Does Not Exist",
            None,
            &[],
            None,
        )),
        _ => {
            let allow = [(
                "Allow",
                "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO".to_owned(),
            )];
            Some(answer(req, 501, "Not Implemented", None, &allow, None))
        }
    }
}

/// An initial INVITE: checked, then accepted as a new dialog and visit or refused.
async fn new_session(
    req: &Request,
    key: (String, String),
    cseq: u32,
    contact: &str,
    shared: &Shared,
) -> Vec<u8> {
    let token = header_value(req, TOKEN_HEADER).unwrap_or_default();
    let claims = match shared.keys.verify(token, shared.clock.now_ms()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(error = %e, "INVITE without a valid session token refused");
            let why = [("Warning", format!("399 tollgate-shop \"{e}\""))];
            return answer(req, 403, "Forbidden", Some(&random_hex()), &why, None);
        }
    };
    let mut dialogs = shared.dialogs.lock().unwrap_or_else(|p| p.into_inner());
    if dialogs.len() >= shared.capacity {
        let retry = [("Retry-After", "30".to_owned())];
        return answer(req, 486, "Busy Here", Some(&random_hex()), &retry, None);
    }
    let to_tag = random_hex();
    shared.visits.open(Visit::new(&claims, asked_of(req)));
    let body = landing_body(shared);
    let mut extra: Vec<(&str, String)> = header_values(req, "Record-Route")
        .into_iter()
        .map(|rr| ("Record-Route", rr.to_owned()))
        .collect();
    extra.push(("Contact", contact.to_owned()));
    let bytes = answer(
        req,
        200,
        "OK",
        Some(&to_tag),
        &extra,
        Some(("application/json", &body)),
    );
    dialogs.insert(
        key,
        Dialog {
            session_id: claims.sid,
            to_tag,
            invite_cseq: cseq,
            answer: bytes.clone(),
        },
    );
    bytes
}

/// What the caller asks for: the body as text, at most 500 characters.
fn asked_of(req: &Request) -> String {
    String::from_utf8_lossy(&req.body)
        .chars()
        .filter(|c| !c.is_control() || *c == ' ')
        .take(500)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// `{"url": landing URL}`, the body of every 200 to an INVITE.
fn landing_body(shared: &Shared) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "url": shared.landing_url })).unwrap_or_default()
}

/// A response to `req` (RFC 3261 §8.2.6): Via, From, Call-ID and CSeq copied, the To with
/// `to_tag` added when it has none, then `extra` headers and the body.
fn answer(
    req: &Request,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(&str, String)],
    body: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let mut s = format!("SIP/2.0 {code} {reason}\r\n");
    for h in req.headers.iter() {
        let (name, value) = (h.name(), h.value());
        if ["Via", "From", "Call-ID", "CSeq"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            let _ = write!(s, "{name}: {value}\r\n");
        } else if name.eq_ignore_ascii_case("To") {
            match to_tag.filter(|_| header_param(value, "tag").is_none()) {
                Some(tag) => {
                    let _ = write!(s, "To: {value};tag={tag}\r\n");
                }
                None => {
                    let _ = write!(s, "To: {value}\r\n");
                }
            }
        }
    }
    for (name, value) in extra {
        let _ = write!(s, "{name}: {value}\r\n");
    }
    let _ = write!(s, "Server: {SERVER}\r\n");
    let (ct, body) = body.unwrap_or(("", &[]));
    if !body.is_empty() {
        let _ = write!(s, "Content-Type: {ct}\r\n");
    }
    let _ = write!(s, "Content-Length: {}\r\n\r\n", body.len());
    let mut bytes = s.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}
