//! Transfer to a second application server (DESIGN.md flow 5, RFC 3515 REFER).
//!
//! Inside an established session the caller sends `REFER` with
//! `Refer-To: <sip:service2@portal.com>` (optionally `?body=…` with what it asks for). The
//! relay does not relay it: it is the referee.
//!
//! ```text
//!  caller            relay                                  app server of service2
//!    │ REFER ───────▶ │ digest: the session's own user only
//!    │ ◀─────── 202   │
//!    │ ◀── NOTIFY 100 │ INVITE (new session, new token) ───▶ │
//!    │ ◀── NOTIFY 18x │ ◀─────────────────────────── 18x ─── │
//!    │ ◀── NOTIFY 200 │ ◀──────────────── 200 (its URL) ──── │
//!    │   (sipfrag: status, dialog ids, URL + new token)  ACK ▶ │  clock starts
//! ```
//! The new session is the user's, timed and billed on its own; the relay is its user agent
//! (it ACKs, answers the application server's BYE, and ends it with a BYE of its own when the
//! user sends BYE for that dialog, using the identifiers the final NOTIFY carried, with
//! credentials). The first session goes on until someone ends it. A REFER naming no known
//! service ends with a NOTIFY carrying 404; one that cannot be read is answered 400.

use crate::relay::core::{Core, Role};
use crate::relay::dialog::DialogState;
use crate::relay::proxy::Purpose;
use crate::relay::transaction::ServerKey;
use crate::sip::message as msg;
use crate::store::{EndReason, Party};
use rsipstack::sip::{Header, Method, Request, SipMessage, Uri};

/// Content type of NOTIFY bodies for a REFER's implicit subscription (RFC 3515 §2.4.5).
const SIPFRAG: &str = "message/sipfrag;version=2.0";

/// What a REFER asks for: the service to call, and optionally what to ask it for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferTarget {
    pub uri: Uri,
    /// The body of the new INVITE and its content type, from the URI's `body=` and
    /// `Content-Type=` headers.
    pub body: Option<(String, String)>,
}

/// Reads a `Refer-To` value: a SIP URI, with `?body=…` URI headers percent-decoded.
pub fn parse_refer_to(value: &str) -> Option<ReferTarget> {
    let uri = msg::addr_uri(value);
    let (uri, headers) = match uri.split_once('?') {
        Some((u, h)) => (u, h),
        None => (uri, ""),
    };
    if !uri.to_ascii_lowercase().starts_with("sip:") {
        return None;
    }
    let uri = Uri::try_from(uri).ok()?;
    uri.auth.as_ref()?;
    let mut body = None;
    let mut content_type = "text/plain".to_string();
    for (name, value) in form_urlencoded::parse(headers.as_bytes()) {
        if name.eq_ignore_ascii_case("body") {
            body = Some(value.into_owned());
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = value.into_owned();
        }
    }
    Some(ReferTarget {
        uri,
        body: body.map(|b| (content_type, b)),
    })
}

impl Core {
    /// A REFER from the caller of dialog `dk`.
    pub(crate) fn on_refer(&mut self, key: ServerKey, dk: String) {
        let Some(flow) = self.engine.server(&key).map(|t| t.flow) else {
            return;
        };
        let Some(user) = self.authenticate(&key, self.settings.challenge, flow) else {
            return;
        };
        let Some(dialog) = self.dialogs.get(&dk) else {
            return self.engine.respond_status(&key, 481, None, Vec::new());
        };
        if dialog.info.user != user {
            return self.engine.respond_status(
                &key,
                403,
                Some("Only the session's own user may transfer it"),
                Vec::new(),
            );
        }
        if dialog.state != DialogState::Confirmed {
            return self.engine.respond_status(
                &key,
                491,
                Some("The session is not established yet"),
                Vec::new(),
            );
        }
        let caller_party = dialog.info.caller_party.clone();
        let refer_to = self.engine.request(&key).and_then(|r| {
            r.headers.iter().find_map(|h| match h {
                Header::ReferTo(v) => Some(v.value().to_string()),
                _ => None,
            })
        });
        let Some(target) = refer_to.as_deref().and_then(parse_refer_to) else {
            return self.engine.respond_status(
                &key,
                400,
                Some("Refer-To must name a service as a SIP URI"),
                Vec::new(),
            );
        };
        self.engine.respond_status(&key, 202, None, Vec::new());
        self.notify_transfer(&dk, &crate::relay::proxy::status_line(100), false);
        let route = match self.route_of(&target.uri) {
            Ok(route) => route,
            Err((status, _)) => {
                return self.notify_transfer(&dk, &crate::relay::proxy::status_line(status), true)
            }
        };
        // The relay is the new dialog's user agent: the application server reaches it over
        // the transport the INVITE goes out on (the first server's, when service2 forks).
        let protocol = route
            .targets
            .first()
            .map_or(crate::config::Protocol::Udp, |t| t.protocol);
        let Some(template) = self.transfer_invite(&target, &caller_party, protocol) else {
            return self.notify_transfer(&dk, &crate::relay::proxy::status_line(500), true);
        };
        let purpose = Purpose::Transfer {
            user: user.clone(),
            refer_dialog: dk.clone(),
        };
        let context = format!("transfer:{}", uuid::Uuid::new_v4().simple());
        if !self.fork(&context, purpose, route, template, user, None) {
            self.contexts.remove(&context);
            self.notify_transfer(&dk, &crate::relay::proxy::status_line(500), true);
        }
    }

    /// The INVITE the relay sends on the user's behalf: From the user (a new tag), To the
    /// service, a new Call-ID, the relay as Contact over `protocol`.
    fn transfer_invite(
        &self,
        target: &ReferTarget,
        caller_party: &str,
        protocol: crate::config::Protocol,
    ) -> Option<Request> {
        let from_uri = msg::addr_uri(caller_party);
        let tag = format!("tg{:016x}", rand::random::<u64>());
        let call_id = format!("{}@{}", uuid::Uuid::new_v4().simple(), self.local.host);
        let (content_type, body) = match &target.body {
            Some((ct, b)) => (Some(ct.as_str()), b.as_str()),
            None => (None, ""),
        };
        let mut text = format!(
            "INVITE {uri} SIP/2.0\r\nFrom: <{from_uri}>;tag={tag}\r\nTo: <{uri}>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:{contact};transport={transport}>\r\n\
             Max-Forwards: 70\r\n",
            uri = target.uri,
            contact = self.local.sent_by(protocol),
            transport = protocol.as_str(),
        );
        if let Some(ct) = content_type {
            text.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        match msg::parse(text.as_bytes()) {
            Ok(SipMessage::Request(r)) => Some(r),
            _ => None,
        }
    }

    /// Tells the caller of dialog `dk` how its transfer is going: a NOTIFY of the REFER's
    /// implicit subscription carrying `fragment` (a status line, or a whole answer).
    pub(crate) fn notify_transfer(&mut self, dk: &str, fragment: &str, terminated: bool) {
        let state = if terminated {
            "terminated;reason=noresource"
        } else {
            "active;expires=60"
        };
        let extra = vec![
            Header::Event(rsipstack::sip::Event::new("refer")),
            Header::SubscriptionState(rsipstack::sip::SubscriptionState::new(state)),
        ];
        let sent = self.send_in_dialog(
            dk,
            Party::Caller,
            Method::Notify,
            extra,
            Some((SIPFRAG, fragment.as_bytes())),
            Role::Own { closes: None },
        );
        if sent.is_none() {
            tracing::debug!(dialog = %dk, "cannot NOTIFY the transfer's progress: the caller is gone");
        }
    }

    /// A request inside a dialog the relay opened itself for a transfer. The application
    /// server's BYE ends it; the user's BYE (with credentials) makes the relay end it.
    pub(crate) fn on_relay_dialog_request(&mut self, key: ServerKey, dk: String, party: Party) {
        let Some(method) = self.engine.request(&key).map(|r| r.method) else {
            return;
        };
        match (party, method) {
            (Party::Callee, Method::Bye) => {
                if let Some(d) = self.dialogs.get_mut(&dk) {
                    d.state = DialogState::Ending(Party::Callee);
                }
                self.engine.respond_status(&key, 200, None, Vec::new());
                self.close_dialog(&dk, EndReason::Bye, None);
            }
            (Party::Callee, Method::Invite) => {
                self.engine
                    .respond_status(&key, 488, Some("The relay takes no offers"), Vec::new())
            }
            (Party::Callee, Method::Info) => {
                if let Some(session_id) = self.dialogs.get(&dk).map(|d| d.info.session_id.clone()) {
                    self.on_charges_info(key, session_id);
                }
            }
            (Party::Callee, Method::Update | Method::Options | Method::Notify) => {
                self.engine.respond_status(&key, 200, None, Vec::new())
            }
            (Party::Caller, Method::Bye) => {
                let Some(flow) = self.engine.server(&key).map(|t| t.flow) else {
                    return;
                };
                let Some(user) = self.authenticate(&key, self.settings.challenge, flow) else {
                    return;
                };
                let own = self.dialogs.get(&dk).is_some_and(|d| d.info.user == user);
                if !own {
                    return self.engine.respond_status(
                        &key,
                        403,
                        Some("Only the session's own user may end it"),
                        Vec::new(),
                    );
                }
                self.engine.respond_status(&key, 200, None, Vec::new());
                if let Some(d) = self.dialogs.get_mut(&dk) {
                    d.state = DialogState::Ending(Party::Caller);
                }
                let sent = self.send_in_dialog(
                    &dk,
                    Party::Callee,
                    Method::Bye,
                    Vec::new(),
                    None,
                    Role::Own {
                        closes: Some(dk.clone()),
                    },
                );
                if sent.is_none() {
                    self.close_dialog(&dk, EndReason::Bye, None);
                }
            }
            _ => {
                let allow = Header::Allow(rsipstack::sip::Allow::new("BYE"));
                self.engine.respond_status(&key, 405, None, vec![allow])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refer_to_names_a_service_and_may_carry_a_body() {
        let t = parse_refer_to("<sip:service2@portal.com?body=red%20wine&Content-Type=text/plain>")
            .unwrap();
        assert_eq!(t.uri.to_string(), "sip:service2@portal.com");
        assert_eq!(t.body, Some(("text/plain".into(), "red wine".into())));
        let plain = parse_refer_to("sip:beer@portal.com").unwrap();
        assert_eq!(plain.body, None);
        assert!(parse_refer_to("<https://evil.example>").is_none());
        assert!(
            parse_refer_to("<sip:portal.com>").is_none(),
            "no service named"
        );
        assert!(parse_refer_to("garbage").is_none());
    }
}
