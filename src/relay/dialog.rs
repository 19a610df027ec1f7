//! Dialogs and the sessions they carry: requests inside an established (or early) dialog,
//! the end-to-end ACK that confirms a session, and the BYE that ends it.
//!
//! ```text
//!  1xx with To tag ──▶ Early ──2xx relayed──▶ Answered ──ACK──▶ Confirming ──on disk──▶ Confirmed
//!   (PRACK, UPDATE pass)                      (2xx without 1xx)   (ACK held, later          │ BYE relayed
//!                                                                  requests queued)         ▼
//!                                                               closed ◀──final to BYE── Ending
//! ```
//! A dialog knows where each side is reached, fixed when it is created: toward the
//! application server the next hop its 2xx names (a downstream Record-Route, else its
//! Contact, else the address the INVITE went to); toward the caller the flow its INVITE came
//! from (over TCP its own connection while that lives, else its Contact). In-dialog requests
//! go there and nowhere else, whatever their Request-URI or Route say, so a party to a call
//! cannot use the relay to send requests to third parties.
//!
//! Timing (decision 0002): the billing clock starts when the ACK is relayed, which happens
//! only after the confirmation is on disk; it stops when the final response to a BYE is
//! relayed.

use crate::clock::Millis;
use crate::relay::core::{Core, CoreEvent, Role};
use crate::relay::proxy::{prepare_forward, ProxyContext};
use crate::relay::routing::{self, uri_hop};
use crate::relay::transaction::{Outgoing, ServerKey};
use crate::sip::message as msg;
use crate::sip::transport::Flow;
use crate::store::{Party, SessionEvent};
use bytes::Bytes;
use rsipstack::sip::{Header, Method, Request, Response, Uri};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// A provisional response with a To tag was relayed; PRACK and UPDATE may pass.
    Early,
    /// A 2xx was relayed; its ACK has not been seen.
    Answered,
    /// The ACK arrived; the confirmation is being written and the ACK waits for it.
    Confirming,
    Confirmed,
    /// This party sent a BYE that was relayed; waiting for its final response.
    Ending(Party),
}

/// One dialog between a caller and an application server; one session.
pub struct Dialog {
    pub session_id: String,
    pub caller_tag: String,
    pub state: DialogState,
    /// The 2xx status that answered the INVITE.
    pub status: u16,
    pub confirmed_at: Option<Millis>,
    pub toward_callee: Flow,
    /// The flow the caller's INVITE came from.
    pub caller_flow: Flow,
    /// The caller's Contact, for when its TCP connection has gone.
    pub caller_contact: Option<Flow>,
    /// Requests that arrived while the ACK waited for the disk, relayed after it in order.
    pub held: Vec<(Request, Flow)>,
    /// The ACK waiting for the disk, and where it goes.
    pub held_ack: Option<(Bytes, Flow)>,
}

/// Everything a dialog is made from when the INVITE's answer arrives.
pub struct DialogOrigin {
    pub session_id: String,
    /// Where the INVITE went.
    pub callee_flow: Flow,
    pub caller_flow: Flow,
    pub caller_contact: Option<Uri>,
}

/// The dialogs of one core, by `call-id, caller tag, callee tag`.
#[derive(Default)]
pub struct Dialogs {
    map: HashMap<String, Dialog>,
}

impl Dialogs {
    pub fn get(&self, key: &str) -> Option<&Dialog> {
        self.map.get(key)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Dialog> {
        self.map.get_mut(key)
    }

    pub fn remove(&mut self, key: &str) -> Option<Dialog> {
        self.map.remove(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The dialog a request or response belongs to, in either direction.
    pub fn find(&self, headers: &rsipstack::sip::Headers) -> Option<String> {
        let call_id = msg::call_id(headers)?;
        let from = msg::from_tag(headers)?;
        let to = msg::to_tag(headers)?;
        [key(call_id, from, to), key(call_id, to, from)]
            .into_iter()
            .find(|k| self.map.contains_key(k))
    }

    /// Records the dialog an answer (1xx with a To tag, or 2xx) to a forwarded INVITE
    /// creates, or moves an early one on to `state`. Returns its key.
    pub fn open(
        &mut self,
        resp: &Response,
        origin: DialogOrigin,
        state: DialogState,
        local: &routing::LocalIdentity,
    ) -> Option<String> {
        let call_id = msg::call_id(&resp.headers)?;
        let caller_tag = msg::from_tag(&resp.headers)?;
        let callee_tag = msg::to_tag(&resp.headers)?;
        let k = key(call_id, caller_tag, callee_tag);
        let status = u16::from(resp.status_code.clone());
        if let Some(d) = self.map.get_mut(&k) {
            if d.state == DialogState::Early && state != DialogState::Early {
                d.state = state;
                d.status = status;
            }
            return Some(k);
        }
        let toward_callee = callee_hop(resp, local)
            .map(|hop| Flow {
                protocol: hop.protocol,
                remote: hop.addr,
                local: origin.callee_flow.local,
            })
            .unwrap_or(origin.callee_flow);
        let caller_contact = origin
            .caller_contact
            .as_ref()
            .and_then(uri_hop)
            .map(|h| Flow {
                protocol: h.protocol,
                remote: h.addr,
                local: origin.caller_flow.local,
            });
        self.map.insert(
            k.clone(),
            Dialog {
                session_id: origin.session_id,
                caller_tag: caller_tag.to_string(),
                state,
                status,
                confirmed_at: None,
                toward_callee,
                caller_flow: origin.caller_flow,
                caller_contact,
                held: Vec::new(),
                held_ack: None,
            },
        );
        Some(k)
    }
}

fn key(call_id: &str, caller_tag: &str, callee_tag: &str) -> String {
    format!("{call_id}\n{caller_tag}\n{callee_tag}")
}

/// The Record-Route entries of an answer that lie downstream of ours (toward the
/// application server), nearest first: the route set for requests the relay sends that way.
pub fn downstream_routes(resp: &Response, local: &routing::LocalIdentity) -> Vec<String> {
    let rr: Vec<&str> = resp
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::RecordRoute(r) => Some(r.value()),
            _ => None,
        })
        .flat_map(msg::split_list)
        .collect();
    let ours = rr
        .iter()
        .position(|r| Uri::try_from(msg::addr_uri(r)).is_ok_and(|u| local.is_me(&u)))
        .unwrap_or(rr.len());
    rr[..ours].iter().rev().map(|r| r.to_string()).collect()
}

/// Toward the application server that answered: the nearest downstream Record-Route, else
/// its Contact, when that names an IP address.
pub fn callee_hop(resp: &Response, local: &routing::LocalIdentity) -> Option<routing::Hop> {
    let next = match downstream_routes(resp, local).into_iter().next() {
        Some(route) => route,
        None => resp.headers.iter().find_map(|h| match h {
            Header::Contact(c) => Some(c.value().to_string()),
            _ => None,
        })?,
    };
    uri_hop(&Uri::try_from(msg::addr_uri(&next)).ok()?)
}

impl Core {
    /// Where a request inside dialog `d` goes: to the other side of whoever sent it.
    fn destination(&self, d: &Dialog, from_caller: bool) -> Flow {
        if from_caller {
            return d.toward_callee;
        }
        if self.engine.transports().is_open(d.caller_flow) {
            d.caller_flow
        } else {
            d.caller_contact.unwrap_or(d.caller_flow)
        }
    }

    /// A request with a To tag: relayed to the other side of its dialog.
    pub(crate) fn forward_in_dialog(&mut self, key: ServerKey) {
        let Some(req) = self.engine.request(&key) else {
            return;
        };
        let Some(dk) = self.dialogs.find(&req.headers) else {
            return self.engine.respond_status(&key, 481, None, Vec::new());
        };
        let dialog = self.dialogs.get_mut(&dk).expect("found above");
        if dialog.state == DialogState::Confirming {
            // Keep order behind the ACK that waits for the disk.
            if let Some(held) = self.engine.take(&key) {
                dialog.held.push(held);
            }
            return;
        }
        let from_caller = msg::from_tag(&req.headers) == Some(dialog.caller_tag.as_str());
        if req.method == Method::Bye {
            dialog.state = DialogState::Ending(if from_caller {
                Party::Caller
            } else {
                Party::Callee
            });
        }
        let session_id = dialog.session_id.clone();
        let dest = self.destination(self.dialogs.get(&dk).expect("found"), from_caller);
        self.parts.sessions.record(SessionEvent::Activity {
            id: session_id,
            at: self.now(),
        });
        let mut forwarded = req.clone();
        let method = forwarded.method;
        prepare_forward(&mut forwarded);
        let branch = self.local.new_branch(&routing::loop_hash(req));
        forwarded.headers.0.insert(
            0,
            Header::Via(rsipstack::sip::Via::new(
                self.local.via(dest.protocol, &branch),
            )),
        );
        self.contexts
            .insert(key.clone(), ProxyContext::in_dialog(dk, branch.clone()));
        self.engine.send(Outgoing {
            branch: branch.clone(),
            method,
            wire: Bytes::from(forwarded.to_bytes()),
            flow: dest,
            also_from: Vec::new(),
            owner: Role::Branch { key, index: 0 },
        });
        if method == Method::Invite {
            self.arm_timer_c(&branch, 0);
        }
    }

    /// The end-to-end ACK of a 2xx: relayed along the dialog. The first one confirms the
    /// session and waits for the disk before it moves.
    pub(crate) fn on_ack(&mut self, mut ack: Request) {
        let Some(dk) = self.dialogs.find(&ack.headers) else {
            return; // an ACK is never answered; an unknown one is dropped
        };
        let d = self.dialogs.get(&dk).expect("found above");
        let from_caller = msg::from_tag(&ack.headers) == Some(d.caller_tag.as_str());
        let dest = self.destination(d, from_caller);
        self.local.preprocess_routes(&mut ack);
        let branch = self.local.new_branch(&routing::loop_hash(&ack));
        prepare_forward(&mut ack);
        ack.headers.0.insert(
            0,
            Header::Via(rsipstack::sip::Via::new(
                self.local.via(dest.protocol, &branch),
            )),
        );
        let wire = Bytes::from(ack.to_bytes());
        let now = self.now();
        let dialog = self.dialogs.get_mut(&dk).expect("found above");
        match dialog.state {
            DialogState::Answered => {
                self.parts.metrics.session_started();
                dialog.state = DialogState::Confirming;
                dialog.confirmed_at = Some(now);
                dialog.held_ack = Some((wire, dest));
                let done = self.parts.sessions.record_durably(SessionEvent::Confirmed {
                    id: dialog.session_id.clone(),
                    at: now,
                    status: dialog.status,
                });
                let events = self.events_tx.clone();
                tokio::spawn(async move {
                    match done.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "session confirmation not stored")
                        }
                        Err(_) => tracing::error!("session writer stopped"),
                    }
                    let _ = events.send(CoreEvent::ConfirmedDurably { dialog: dk });
                });
            }
            // A retransmitted ACK while the first one waits: it will be relayed once.
            DialogState::Confirming => {}
            _ => self.engine.send_stateless(dest, wire),
        }
    }

    /// The confirmation is on disk: the ACK moves, then whatever queued behind it.
    pub(crate) fn on_confirmed_durably(&mut self, dk: &str) {
        let Some(d) = self.dialogs.get_mut(dk) else {
            return;
        };
        if d.state == DialogState::Confirming {
            d.state = DialogState::Confirmed;
        }
        let ack = d.held_ack.take();
        let held = std::mem::take(&mut d.held);
        if let Some((wire, dest)) = ack {
            self.engine.send_stateless(dest, wire);
        }
        for (req, flow) in held {
            self.on_request(req, flow);
        }
    }

    /// The final response to a BYE was relayed (or the dialog died otherwise): the session
    /// ends now.
    pub(crate) fn close_dialog(&mut self, dk: &str) {
        let Some(dialog) = self.dialogs.remove(dk) else {
            return;
        };
        let now = self.now();
        let ended_by = match dialog.state {
            DialogState::Ending(party) => party,
            _ => Party::Relay,
        };
        if dialog.confirmed_at.is_some() {
            self.parts.metrics.session_ended();
        }
        let duration_ms = dialog.confirmed_at.map(|c| (now - c).max(0)).unwrap_or(0);
        self.parts.sessions.record(SessionEvent::Terminated {
            id: dialog.session_id,
            at: now,
            duration_ms,
            ended_by,
        });
    }

    pub(crate) fn dialog_is_ending(&self, dk: &str) -> bool {
        self.dialogs
            .get(dk)
            .is_some_and(|d| matches!(d.state, DialogState::Ending(_)))
    }
}
