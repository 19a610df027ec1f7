//! Dialogs and the sessions they carry: requests inside an established (or early) dialog,
//! mid-session changes, the end-to-end ACK that confirms a session, and the BYE that ends it.
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
//! from (over a connection its own connection while that lives, else its Contact). In-dialog
//! requests go there and nowhere else, whatever their Request-URI or Route say, so a party to
//! a call cannot use the relay to send requests to third parties.
//!
//! Changes (DESIGN.md flow 4): a re-INVITE or UPDATE from either side is relayed like any
//! in-dialog request and recorded on the session with its answer once that is relayed. While
//! one side's change is open, a change from the other side is answered 491 (RFC 3261 §14.2,
//! RFC 3311 §5.2 glare), and the session, its clock and its token carry on whatever the
//! answer.
//!
//! The relay may speak in a dialog itself (a NOTIFY for a transfer, a BYE it ends a session
//! with): it then uses the next CSeq of the side it speaks for, and shifts that side's later
//! CSeqs by the requests it inserted, so the peer always sees them increase (responses get
//! their original CSeq back). In a dialog the relay opened itself for a transfer
//! ([`CallerSide::Relay`]) it is the caller's user agent.
//!
//! Timing (decision 0002): the billing clock starts when the ACK is relayed, which happens
//! only after the confirmation is on disk; it stops when the final response to a BYE is
//! relayed.

use crate::clock::Millis;
use crate::relay::core::{Core, CoreEvent, Role};
use crate::relay::proxy::{prepare_forward, ProxyContext};
use crate::relay::routing::{self, uri_hop};
use crate::relay::session_life::session_expires;
use crate::relay::transaction::{Outgoing, ServerKey};
use crate::sip::builders::DialogRequest;
use crate::sip::message::{self as msg, ToWire};
use crate::sip::transport::Flow;
use crate::store::{EndReason, Party, SessionEvent};
use bytes::Bytes;
use rsipstack::sip::{Header, Method, Request, Response, Uri};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tokio_util::time::delay_queue;

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

/// Who plays the caller's side of a dialog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallerSide {
    /// A SIP client, reached down the flow its INVITE came on, else at its Contact.
    Client { flow: Flow, contact: Option<Flow> },
    /// The relay itself: a session it opened on a user's behalf (a transfer).
    Relay,
}

/// What a dialog needs to route requests and to speak in it; fixed when it is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialogInfo {
    pub session_id: String,
    /// The authenticated user the session belongs to.
    pub user: String,
    pub call_id: String,
    pub caller_tag: String,
    pub callee_tag: String,
    /// The caller's From and the callee's To as written, tags included.
    pub caller_party: String,
    pub callee_party: String,
    /// The caller's and the callee's Contact URIs.
    pub caller_target: Option<String>,
    pub callee_target: Option<String>,
    /// Route set toward the callee (Record-Route entries downstream of ours).
    pub callee_routes: Vec<String>,
    pub toward_callee: Flow,
    pub caller: CallerSide,
    /// The highest CSeq each side has used itself.
    pub caller_cseq: u32,
    pub callee_cseq: u32,
    /// Requests the relay inserted toward each side, which shift the other side's CSeqs.
    pub to_caller_shift: u32,
    pub to_callee_shift: u32,
    /// The RFC 4028 session interval the application server's 2xx named, in seconds: the
    /// session ends unless a re-INVITE or UPDATE refreshes it within that time.
    #[serde(default)]
    pub session_interval_secs: Option<u32>,
}

/// One dialog between a caller and an application server; one session.
pub struct Dialog {
    pub info: DialogInfo,
    pub state: DialogState,
    /// The 2xx status that answered the INVITE.
    pub status: u16,
    pub confirmed_at: Option<Millis>,
    /// The side whose re-INVITE or UPDATE is waiting for its answer.
    pub pending_offer: Option<Party>,
    /// How many changes were asked for so far: numbers them in the order they came.
    pub changes_asked: u32,
    /// Requests that arrived while the ACK waited for the disk, relayed after it in order.
    pub held: Vec<(Request, Flow)>,
    /// The ACK waiting for the disk, and where it goes.
    pub held_ack: Option<(Bytes, Flow)>,
    /// The last proof of life: its confirmation, or its latest in-dialog request.
    pub last_seen: Millis,
    /// When the session timer last started over (confirmation or refresh).
    pub refreshed_at: Millis,
    /// The dialog's pending session timer and maximum-duration timer, removed from the
    /// core's timer queue with the dialog (a long session limit must not keep a queue entry
    /// for every call long gone).
    pub clocks: SessionClocks,
}

/// The keys of a dialog's entries in the core's timer queue; `None` once fired or not armed.
#[derive(Debug, Default)]
pub struct SessionClocks {
    pub session_timer: Option<delay_queue::Key>,
    pub max_duration: Option<delay_queue::Key>,
}

impl Dialog {
    /// A confirmed dialog carried on from a previous run of the relay.
    pub fn resumed(info: DialogInfo, confirmed_at: Millis, last_proof_at: Millis) -> Dialog {
        Dialog {
            info,
            state: DialogState::Confirmed,
            status: 200,
            confirmed_at: Some(confirmed_at),
            pending_offer: None,
            changes_asked: 0,
            held: Vec::new(),
            held_ack: None,
            last_seen: last_proof_at,
            refreshed_at: last_proof_at,
            clocks: SessionClocks::default(),
        }
    }

    /// Whether a SIP client plays the caller's side (not the relay itself).
    pub fn caller_is_client(&self) -> bool {
        matches!(self.info.caller, CallerSide::Client { .. })
    }

    /// Which side sent a request with this From tag.
    pub fn party_of(&self, from_tag: Option<&str>) -> Party {
        if from_tag == Some(self.info.caller_tag.as_str()) {
            Party::Caller
        } else {
            Party::Callee
        }
    }
}

/// Everything a dialog is made from when the INVITE's answer arrives.
pub struct DialogOrigin {
    pub session_id: String,
    pub user: String,
    /// Where the INVITE went.
    pub callee_flow: Flow,
    pub caller: CallerSide,
    /// The INVITE's Contact URI.
    pub caller_target: Option<String>,
    pub invite_cseq: u32,
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

    /// Puts back a dialog from a previous run; returns its key.
    pub fn restore(&mut self, dialog: Dialog) -> String {
        let k = key(
            &dialog.info.call_id,
            &dialog.info.caller_tag,
            &dialog.info.callee_tag,
        );
        self.map.insert(k.clone(), dialog);
        k
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

    /// Records the dialog an answer (1xx with a To tag, or 2xx) to an INVITE creates, or
    /// moves an early one on to `state`. Returns its key.
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
                d.info.session_interval_secs = session_expires(&resp.headers);
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
        let info = DialogInfo {
            session_id: origin.session_id,
            user: origin.user,
            call_id: call_id.to_string(),
            caller_tag: caller_tag.to_string(),
            callee_tag: callee_tag.to_string(),
            caller_party: msg::from_value(&resp.headers)?.to_string(),
            callee_party: msg::to_value(&resp.headers)?.to_string(),
            caller_target: origin.caller_target,
            callee_target: contact_uri(&resp.headers),
            callee_routes: downstream_routes(resp, local),
            toward_callee,
            caller: origin.caller,
            caller_cseq: origin.invite_cseq,
            callee_cseq: 0,
            to_caller_shift: 0,
            to_callee_shift: 0,
            session_interval_secs: (state != DialogState::Early)
                .then(|| session_expires(&resp.headers))
                .flatten(),
        };
        self.map.insert(
            k.clone(),
            Dialog {
                info,
                state,
                status,
                confirmed_at: None,
                pending_offer: None,
                changes_asked: 0,
                held: Vec::new(),
                held_ack: None,
                last_seen: 0,
                refreshed_at: 0,
                clocks: SessionClocks::default(),
            },
        );
        Some(k)
    }
}

/// Waits for a durable write for at most `bound`: `true` once it is committed.
async fn stored_within(
    done: tokio::sync::oneshot::Receiver<Result<(), String>>,
    bound: std::time::Duration,
) -> bool {
    match tokio::time::timeout(bound, done).await {
        Ok(Ok(Ok(()))) => true,
        Ok(Ok(Err(e))) => {
            tracing::error!(error = %e, "session event not stored");
            false
        }
        Ok(Err(_)) => {
            tracing::error!("session writer stopped");
            false
        }
        Err(_) => {
            tracing::error!(?bound, "session event not stored in time");
            false
        }
    }
}

fn key(call_id: &str, caller_tag: &str, callee_tag: &str) -> String {
    format!("{call_id}\n{caller_tag}\n{callee_tag}")
}

/// The URI of a message's Contact header (parameters of the URI kept, those of the header
/// dropped).
pub fn contact_uri(headers: &rsipstack::sip::Headers) -> Option<String> {
    headers.iter().find_map(|h| match h {
        Header::Contact(c) => Some(msg::addr_uri(c.value()).to_string()),
        _ => None,
    })
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
        Some(route) => msg::addr_uri(&route).to_string(),
        None => contact_uri(&resp.headers)?,
    };
    uri_hop(&Uri::try_from(next.as_str()).ok()?)
}

/// Sets a request's CSeq number to `number`, keeping its method.
pub fn set_cseq(headers: &mut rsipstack::sip::Headers, number: u32) {
    for h in headers.iter_mut() {
        if let Header::CSeq(v) = h {
            let method = v
                .value()
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            *v = rsipstack::sip::CSeq::new(format!("{number} {method}"));
        }
    }
}

/// A mid-session change waiting for its answer.
#[derive(Debug, Clone)]
pub struct PendingChange {
    /// Its place among the session's changes (1, 2, …).
    pub seq: u32,
    pub party: Party,
    pub method: String,
    pub content_type: Option<String>,
    pub body: String,
    pub at: Millis,
}

impl Core {
    /// Where a request toward `party` of dialog `d` goes.
    pub(crate) fn toward(&self, d: &DialogInfo, party: Party) -> Option<Flow> {
        match (party, &d.caller) {
            (Party::Caller, CallerSide::Client { flow, contact }) => {
                if self.engine.transports().is_open(*flow) {
                    Some(*flow)
                } else {
                    Some(contact.unwrap_or(*flow))
                }
            }
            (Party::Caller, CallerSide::Relay) | (Party::Relay, _) => None,
            (Party::Callee, _) => Some(d.toward_callee),
        }
    }

    /// A request with a To tag: relayed to the other side of its dialog.
    pub(crate) fn forward_in_dialog(&mut self, key: ServerKey) {
        let Some(req) = self.engine.request(&key).cloned() else {
            return;
        };
        let Some(dk) = self.dialogs.find(&req.headers) else {
            return self.engine.respond_status(&key, 481, None, Vec::new());
        };
        let now = self.now();
        let dialog = self.dialogs.get_mut(&dk).expect("found above");
        let party = dialog.party_of(msg::from_tag(&req.headers));
        if dialog.info.caller == CallerSide::Relay {
            return self.on_relay_dialog_request(key, dk, party);
        }
        if dialog.state == DialogState::Confirming {
            // Keep order behind the ACK that waits for the disk.
            if let Some(held) = self.engine.take(&key) {
                dialog.held.push(held);
            }
            return;
        }
        if req.method == Method::Info && party == Party::Callee {
            let session_id = dialog.info.session_id.clone();
            return self.on_charges_info(key, session_id);
        }
        if req.method == Method::Refer && party == Party::Caller {
            return self.on_refer(key, dk);
        }
        let offer = matches!(req.method, Method::Invite | Method::Update);
        let other = match party {
            Party::Caller => Party::Callee,
            _ => Party::Caller,
        };
        if offer && dialog.pending_offer == Some(other) {
            // Glare: both sides change the session at once (RFC 3261 §14.2).
            return self.engine.respond_status(
                &key,
                491,
                Some("The other side is changing the session"),
                Vec::new(),
            );
        }
        let mut change_seq = 0;
        if offer {
            dialog.pending_offer = Some(party);
            dialog.changes_asked += 1;
            change_seq = dialog.changes_asked;
        }
        if req.method == Method::Bye {
            dialog.state = DialogState::Ending(party);
        }
        let cseq = msg::cseq(&req.headers).map_or(0, |(n, _)| n);
        let shift = match party {
            Party::Caller => {
                dialog.info.caller_cseq = dialog.info.caller_cseq.max(cseq);
                dialog.info.to_callee_shift
            }
            _ => {
                dialog.info.callee_cseq = dialog.info.callee_cseq.max(cseq);
                dialog.info.to_caller_shift
            }
        };
        dialog.last_seen = dialog.last_seen.max(now);
        // A proof of life on disk, except for a BYE: its session's end is written next.
        let activity = (req.method != Method::Bye).then(|| SessionEvent::Activity {
            id: dialog.info.session_id.clone(),
            at: now,
        });
        let dialog = self.dialogs.get(&dk).expect("found above");
        let Some(dest) = self.toward(&dialog.info, other) else {
            return self.engine.respond_status(&key, 481, None, Vec::new());
        };
        if let Some(activity) = activity {
            self.parts.sessions.record(activity);
        }
        let branch = self.local.new_branch(&routing::loop_hash(&req));
        let method = req.method;
        let change = offer.then(|| PendingChange {
            seq: change_seq,
            party,
            method: method.to_string(),
            content_type: req.headers.iter().find_map(|h| match h {
                Header::ContentType(c) => Some(c.value().to_string()),
                _ => None,
            }),
            body: String::from_utf8_lossy(&req.body).into_owned(),
            at: now,
        });
        let mut forwarded = req;
        prepare_forward(&mut forwarded);
        if shift > 0 {
            set_cseq(&mut forwarded.headers, cseq + shift);
        }
        forwarded.headers.0.insert(
            0,
            Header::Via(rsipstack::sip::Via::new(
                self.local.via(dest.protocol, &branch),
            )),
        );
        let mut ctx = ProxyContext::in_dialog(dk, branch.clone());
        ctx.cseq_shift = shift;
        ctx.change = change;
        self.contexts.insert(key.clone(), ctx);
        self.engine.send(Outgoing {
            branch: branch.clone(),
            method,
            wire: Bytes::from(forwarded.to_wire()),
            flow: dest,
            also_from: Vec::new(),
            owner: Role::Branch { key, index: 0 },
        });
        if method == Method::Invite {
            self.arm_timer_c(&branch, 0);
        }
    }

    /// The final answer to a change was relayed: the change is recorded with it, and the
    /// other side may change the session again.
    pub(crate) fn change_answered(&mut self, dk: &str, change: PendingChange, status: u16) {
        let Some(d) = self.dialogs.get_mut(dk) else {
            return;
        };
        if d.pending_offer == Some(change.party) {
            d.pending_offer = None;
        }
        let record = crate::store::SessionChange {
            session_id: d.info.session_id.clone(),
            seq: change.seq,
            at: change.at,
            party: change.party,
            method: change.method,
            content_type: change.content_type,
            body: change.body,
            status,
        };
        self.parts.sessions.record(SessionEvent::Changed(record));
    }

    /// The end-to-end ACK of a 2xx: relayed along the dialog. The first one confirms the
    /// session and waits for the disk before it moves.
    pub(crate) fn on_ack(&mut self, mut ack: Request) {
        let Some(dk) = self.dialogs.find(&ack.headers) else {
            return; // an ACK is never answered; an unknown one is dropped
        };
        let d = self.dialogs.get(&dk).expect("found above");
        let party = d.party_of(msg::from_tag(&ack.headers));
        let other = match party {
            Party::Caller => Party::Callee,
            _ => Party::Caller,
        };
        let shift = match party {
            Party::Caller => d.info.to_callee_shift,
            _ => d.info.to_caller_shift,
        };
        let Some(dest) = self.toward(&d.info, other) else {
            return;
        };
        self.local.preprocess_routes(&mut ack);
        let branch = self.local.new_branch(&routing::loop_hash(&ack));
        prepare_forward(&mut ack);
        if shift > 0 {
            let cseq = msg::cseq(&ack.headers).map_or(0, |(n, _)| n);
            set_cseq(&mut ack.headers, cseq + shift);
        }
        ack.headers.0.insert(
            0,
            Header::Via(rsipstack::sip::Via::new(
                self.local.via(dest.protocol, &branch),
            )),
        );
        let wire = Bytes::from(ack.to_wire());
        self.confirm_or_send_ack(&dk, wire, dest);
    }

    /// Relays (or, in a dialog the relay opened, sends) the ACK of a 2xx. The first one
    /// confirms the session: it is written durably and the ACK waits for the disk.
    pub(crate) fn confirm_or_send_ack(&mut self, dk: &str, wire: Bytes, dest: Flow) {
        let now = self.now();
        let Some(dialog) = self.dialogs.get_mut(dk) else {
            return;
        };
        match dialog.state {
            DialogState::Answered => {
                self.parts.metrics.session_started();
                dialog.state = DialogState::Confirming;
                dialog.confirmed_at = Some(now);
                dialog.last_seen = now;
                dialog.refreshed_at = now;
                dialog.held_ack = Some((wire, dest));
                let done = self.parts.sessions.record_durably(SessionEvent::Confirmed {
                    id: dialog.info.session_id.clone(),
                    at: now,
                    status: dialog.status,
                    dialog: serde_json::to_string(&dialog.info).ok(),
                });
                let events = self.events_tx.clone();
                let dk = dk.to_string();
                let bound = self.settings.store_timeout;
                tokio::spawn(async move {
                    let stored = stored_within(done, bound).await;
                    let _ = events.send(CoreEvent::ConfirmedDurably { dialog: dk, stored });
                });
            }
            // A retransmitted ACK while the first one waits: it will be relayed once.
            DialogState::Confirming => {}
            _ => self.engine.send_stateless(dest, wire),
        }
    }

    /// The confirmation is on disk: the ACK moves, then whatever queued behind it. When it
    /// could not be stored (in time), the ACK is not relayed: nothing reaches the parties as a
    /// confirmed session that the database does not hold, so the call is ended on both sides.
    pub(crate) fn on_confirmed_durably(&mut self, dk: &str, stored: bool) {
        let Some(d) = self.dialogs.get_mut(dk) else {
            return;
        };
        let ack = d.held_ack.take();
        let held = std::mem::take(&mut d.held);
        if !stored {
            tracing::error!(dialog = %dk, "session confirmation not stored: ending the call on both sides");
            d.state = DialogState::Confirmed;
            let now = self.now();
            self.end_by_relay(dk, EndReason::StoreUnavailable, now);
            // What queued behind the ACK finds no dialog now: a BYE is answered 481.
            for (req, flow) in held {
                self.on_request(req, flow);
            }
            return;
        }
        if d.state == DialogState::Confirming {
            d.state = DialogState::Confirmed;
        }
        if let Some((wire, dest)) = ack {
            self.engine.send_stateless(dest, wire);
        }
        self.start_session_clocks(dk);
        for (req, flow) in held {
            self.on_request(req, flow);
        }
    }

    /// Sends a request of the relay's own inside dialog `dk` toward `to` (speaking for the
    /// other side), with the next CSeq of the side it speaks for. `None` when that side
    /// cannot be reached.
    pub(crate) fn send_in_dialog(
        &mut self,
        dk: &str,
        to: Party,
        method: Method,
        extra: Vec<Header>,
        body: Option<(&str, &[u8])>,
        role: Role,
    ) -> Option<()> {
        let d = self.dialogs.get_mut(dk)?;
        let info = &mut d.info;
        let (from, to_value, target, routes, cseq) = match to {
            Party::Caller => {
                info.to_caller_shift += 1;
                let cseq = info.callee_cseq + info.to_caller_shift;
                let target = info.caller_target.clone()?;
                (
                    info.callee_party.clone(),
                    info.caller_party.clone(),
                    target,
                    Vec::new(),
                    cseq,
                )
            }
            _ => {
                info.to_callee_shift += 1;
                let cseq = info.caller_cseq + info.to_callee_shift;
                let target = info.callee_target.clone()?;
                (
                    info.caller_party.clone(),
                    info.callee_party.clone(),
                    target,
                    info.callee_routes.clone(),
                    cseq,
                )
            }
        };
        let info = info.clone();
        let dest = self.toward(&info, to)?;
        let target = Uri::try_from(target.as_str()).ok()?;
        let branch = self
            .local
            .new_branch(&routing::loop_hash_of(&info.call_id, cseq));
        let via = self.local.via(dest.protocol, &branch);
        let mut extra = extra;
        extra.push(Header::Contact(rsipstack::sip::Contact::new(format!(
            "<sip:{};transport={}>",
            self.local.sent_by(dest.protocol),
            dest.protocol.as_str()
        ))));
        let request = DialogRequest {
            method,
            target: &target,
            via: &via,
            from: &from,
            to: &to_value,
            call_id: &info.call_id,
            cseq,
            routes: &routes,
            extra,
            body,
        };
        self.engine.send(Outgoing {
            branch,
            method,
            wire: request.to_bytes(),
            flow: dest,
            also_from: Vec::new(),
            owner: role,
        });
        Some(())
    }

    /// The dialog is over (its BYE was answered, or it died otherwise): the session ends now,
    /// and is billed to now. `answer` is the final response to the BYE that ended it: it is
    /// relayed only once the end is on disk (or the store gave up), so a caller that got its
    /// 200 for BYE is never billed for more than it saw.
    pub(crate) fn close_dialog(
        &mut self,
        dk: &str,
        reason: EndReason,
        answer: Option<(ServerKey, Response)>,
    ) {
        let Some(dialog) = self.forget_dialog(dk) else {
            if let Some((key, response)) = answer {
                self.answer_upstream(&key, response);
            }
            return;
        };
        let ended_by = match dialog.state {
            DialogState::Ending(party) => party,
            _ => Party::Relay,
        };
        let event = self.ended(&dialog, ended_by, reason, self.now());
        let Some((key, response)) = answer else {
            return self.parts.sessions.record(event);
        };
        let done = self.parts.sessions.record_durably(event);
        let events = self.events_tx.clone();
        let bound = self.settings.store_timeout;
        self.ends_in_flight += 1;
        tokio::spawn(async move {
            if !stored_within(done, bound).await {
                tracing::error!(
                    "the end of a session was not stored in time; relaying its BYE's answer"
                );
            }
            let _ = events.send(CoreEvent::EndStored { key, response });
        });
    }

    /// Ends the session of dialog `dk` on the relay's own account: BYE to both sides (with a
    /// `Reason` saying why) and the session billed up to `billed_until`.
    pub(crate) fn end_by_relay(&mut self, dk: &str, reason: EndReason, billed_until: Millis) {
        self.say_bye_to_both(dk, reason);
        let Some(dialog) = self.forget_dialog(dk) else {
            return;
        };
        let event = if reason == EndReason::StoreUnavailable {
            // Never confirmed on disk, never billed: the attempt is recorded as failed.
            if dialog.confirmed_at.is_some() {
                self.parts.metrics.session_ended();
            }
            SessionEvent::Failed {
                id: dialog.info.session_id.clone(),
                at: billed_until,
                status: 500,
            }
        } else {
            self.ended(&dialog, Party::Relay, reason, billed_until)
        };
        self.parts.sessions.record(event);
    }

    /// The `Terminated` event of `dialog`, billed up to `until` (never before it started).
    fn ended(
        &self,
        dialog: &Dialog,
        ended_by: Party,
        reason: EndReason,
        until: Millis,
    ) -> SessionEvent {
        if dialog.confirmed_at.is_some() {
            self.parts.metrics.session_ended();
        }
        let until = dialog.confirmed_at.map_or(until, |c| until.max(c));
        SessionEvent::Terminated {
            id: dialog.info.session_id.clone(),
            at: until,
            duration_ms: dialog.confirmed_at.map_or(0, |c| until - c),
            ended_by,
            reason,
        }
    }

    pub(crate) fn dialog_is_ending(&self, dk: &str) -> bool {
        self.dialogs
            .get(dk)
            .is_some_and(|d| matches!(d.state, DialogState::Ending(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;

    fn local() -> routing::LocalIdentity {
        routing::LocalIdentity {
            host: "10.0.0.5".into(),
            ports: vec![(Protocol::Udp, 5060), (Protocol::Tcp, 5060)],
            hosts: vec!["10.0.0.5".into()],
            domain: "portal.com".into(),
            node: "n1".into(),
        }
    }

    fn answer(record_routes: &str, contact: &str) -> Response {
        let text = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n{record_routes}\
From: <sip:a@portal.com>;tag=1\r\nTo: <sip:s@portal.com>;tag=2\r\nCall-ID: c\r\n\
CSeq: 2 INVITE\r\nContact: {contact}\r\nContent-Length: 0\r\n\r\n"
        );
        match msg::parse(text.as_bytes()) {
            Ok(rsipstack::sip::SipMessage::Response(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_callee_is_reached_at_its_contact_with_its_transport() {
        let r = answer(
            "Record-Route: <sip:10.0.0.5:5060;transport=tcp;lr>\r\n",
            "<sip:10.0.0.9:5070;transport=TCP>;expires=60",
        );
        assert!(downstream_routes(&r, &local()).is_empty());
        assert_eq!(
            callee_hop(&r, &local()),
            Some(routing::Hop {
                protocol: Protocol::Tcp,
                addr: "10.0.0.9:5070".parse().unwrap()
            })
        );
    }

    #[test]
    fn a_proxy_downstream_of_us_is_the_next_hop() {
        let r = answer(
            "Record-Route: <sip:10.0.0.7:5080;lr>, <sip:10.0.0.5:5060;lr>\r\n",
            "<sip:10.0.0.9:5070>",
        );
        assert_eq!(
            downstream_routes(&r, &local()),
            vec!["<sip:10.0.0.7:5080;lr>"]
        );
        assert_eq!(
            callee_hop(&r, &local()).unwrap().addr,
            "10.0.0.7:5080".parse().unwrap()
        );
    }
}
