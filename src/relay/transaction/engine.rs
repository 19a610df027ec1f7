//! The transaction engine: owns every server and client transaction and their timers, sends
//! and retransmits, and tells the proxy core what arrived ([`Incoming`], [`Delivery`]) and
//! what expired ([`Expiry`]). It never awaits; the core polls its timers.
//!
//! Client transactions carry an owner `O` chosen by the core (which proxied request a branch
//! belongs to, or which of its own requests it is); the engine hands it back untouched.

use super::client::{CancelState, ClientState, ClientTxn, Outgoing};
use super::key::{invite_key_of, server_key, ServerKey};
use super::server::{ServerState, ServerTxn};
use super::timer::{Timer, LINGER, T2, T4};
use crate::config::Protocol;
use crate::metrics::Metrics;
use crate::relay::routing::LocalIdentity;
use crate::sip::builders;
use crate::sip::message::{self as msg, ToWire};
use crate::sip::transport::{Flow, Transports};
use bytes::Bytes;
use rsipstack::sip::{Header, Method, Request, Response};
use std::collections::HashMap;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio_util::time::DelayQueue;

/// What a received request is, as far as transactions go.
#[derive(Debug)]
pub enum Incoming {
    /// A new server transaction under this key (an INVITE has been answered 100 Trying).
    New(ServerKey),
    /// A retransmission (answered with the last response, if any) or the ACK of a non-2xx
    /// final: nothing more to do.
    Absorbed,
    /// An ACK that belongs to no INVITE transaction here: the end-to-end ACK of a 2xx.
    Ack(Request),
    /// A CANCEL, answered 200; the INVITE it cancels is still waiting for its final answer.
    Cancel { invite: ServerKey },
}

/// Why a response was dropped without being delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Its top Via is not ours: we never sent the request it answers.
    ForeignVia,
    /// Its branch is not one of our live client transactions (or does not match its method).
    UnknownBranch,
    /// It came from an address (or transport) the request was not sent to.
    WrongSource,
}

impl Dropped {
    /// The `/metrics` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::ForeignVia => "foreign_via",
            Dropped::UnknownBranch => "unknown_branch",
            Dropped::WrongSource => "wrong_source",
        }
    }
}

/// What became of a received response.
#[derive(Debug)]
pub enum Delivery<O> {
    Dropped(Dropped),
    /// Handled here (100 Trying, a retransmitted non-2xx final, the answer to our CANCEL).
    Absorbed,
    /// A provisional response (101–199) for the owner.
    Provisional {
        branch: String,
        owner: O,
        response: Response,
    },
    /// A final response for the owner; `repeated` for a retransmitted 2xx.
    Final {
        branch: String,
        owner: O,
        response: Response,
        repeated: bool,
    },
}

/// What an expired timer means for the owner.
#[derive(Debug)]
pub enum Expiry<O> {
    /// A client transaction got no final answer in time (Timer B/F: 408; a CANCELled INVITE
    /// that never answered: 487). `wire` is the request as sent, to build a response from.
    NoAnswer {
        branch: String,
        owner: O,
        status: u16,
        wire: Bytes,
    },
    /// A server transaction has been forgotten.
    ServerGone(ServerKey),
}

/// Every transaction of one relay core.
pub struct Engine<O> {
    transports: Transports,
    metrics: Metrics,
    t1: Duration,
    server: HashMap<ServerKey, ServerTxn>,
    client: HashMap<String, ClientTxn<O>>,
    timers: DelayQueue<Timer>,
    next_tag: u64,
}

impl<O: Clone> Engine<O> {
    pub fn new(transports: Transports, metrics: Metrics, t1: Duration) -> Engine<O> {
        Engine {
            transports,
            metrics,
            t1,
            server: HashMap::new(),
            client: HashMap::new(),
            timers: DelayQueue::new(),
            next_tag: rand::random::<u32>() as u64,
        }
    }

    pub fn transports(&self) -> &Transports {
        &self.transports
    }

    pub fn t1(&self) -> Duration {
        self.t1
    }

    /// Live server and client transactions.
    pub fn len(&self) -> (usize, usize) {
        (self.server.len(), self.client.len())
    }

    /// Polls the next expired timer (for the core's `select!`).
    pub fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Option<Timer>> {
        if self.timers.is_empty() {
            return Poll::Pending;
        }
        self.timers
            .poll_expired(cx)
            .map(|e| e.map(|e| e.into_inner()))
    }

    /// Sends bytes outside any transaction (the end-to-end ACK of a 2xx).
    pub fn send_stateless(&self, flow: Flow, bytes: Bytes) {
        self.transports.send(flow, bytes);
    }

    fn fresh_tag(&mut self) -> String {
        self.next_tag = self.next_tag.wrapping_add(1);
        format!("tg{:x}", self.next_tag)
    }

    // ------------------------------------------------------------------ server side

    /// Matches a request against the server transactions. `None` when the request has no
    /// usable top Via (it cannot be answered at all).
    pub fn on_request(&mut self, req: Request, flow: Flow) -> Option<Incoming> {
        let top = msg::top_via(&req.headers)?;
        let via = msg::via_info(top)?;
        let key = server_key(&req, &via)?;
        let reply = reply_flow(top, flow);
        if req.method == Method::Ack {
            let invite = invite_key_of(&key);
            if let Some(txn) = self.server.get_mut(&invite) {
                if txn.state == ServerState::Completed {
                    txn.state = ServerState::Confirmed;
                    let linger = if txn.flow.protocol.is_reliable() {
                        Duration::ZERO
                    } else {
                        T4
                    };
                    self.timers
                        .insert(Timer::ForgetServer { key: invite }, linger);
                    return Some(Incoming::Absorbed);
                }
                if txn.state == ServerState::Confirmed {
                    return Some(Incoming::Absorbed);
                }
            }
            return Some(Incoming::Ack(req));
        }
        if let Some(txn) = self.server.get(&key) {
            if let Some(last) = &txn.last_response {
                self.transports.send(txn.flow, last.clone());
            }
            return Some(Incoming::Absorbed);
        }
        if req.method == Method::Cancel {
            let invite = invite_key_of(&key);
            let pending = self
                .server
                .get(&invite)
                .map(|t| t.state == ServerState::Proceeding);
            let status = if pending.is_some() { 200 } else { 481 };
            self.new_server(key.clone(), req, reply, false);
            self.respond_status(&key, status, None, Vec::new());
            return Some(match pending {
                Some(true) => Incoming::Cancel { invite },
                _ => Incoming::Absorbed,
            });
        }
        let is_invite = req.method == Method::Invite;
        self.new_server(key.clone(), req, reply, is_invite);
        if is_invite {
            self.respond_status(&key, 100, None, Vec::new());
        }
        Some(Incoming::New(key))
    }

    fn new_server(&mut self, key: ServerKey, req: Request, flow: Flow, is_invite: bool) {
        let to_tag = self.fresh_tag();
        self.metrics.transaction_started();
        self.server.insert(
            key,
            ServerTxn {
                is_invite,
                flow,
                state: ServerState::Proceeding,
                request: Some(req),
                last_response: None,
                to_tag,
            },
        );
    }

    pub fn server(&self, key: &str) -> Option<&ServerTxn> {
        self.server.get(key)
    }

    /// The request of a server transaction that has not been answered finally yet.
    pub fn request(&self, key: &str) -> Option<&Request> {
        self.server.get(key)?.request.as_ref()
    }

    pub fn request_mut(&mut self, key: &str) -> Option<&mut Request> {
        self.server.get_mut(key)?.request.as_mut()
    }

    /// Takes a server transaction's request out and forgets the transaction (a request the
    /// core holds back to handle later as if it had just arrived).
    pub fn take(&mut self, key: &str) -> Option<(Request, Flow)> {
        let txn = self.server.remove(key)?;
        self.metrics.transaction_ended();
        Some((txn.request?, txn.flow))
    }

    /// Sends a response for a server transaction; a final one moves it on (and answers its
    /// retransmissions from then on). Further 2xx to an Accepted INVITE are sent as they come.
    pub fn respond(&mut self, key: &str, resp: Response) {
        let t1 = self.t1;
        let Some(txn) = self.server.get_mut(key) else {
            return;
        };
        let status = u16::from(resp.status_code.clone());
        // After a final answer only a 2xx to an INVITE may follow (every 2xx is forwarded,
        // RFC 3261 §16.7 step 10, RFC 6026): the transaction then waits in Accepted.
        let late_2xx = txn.is_invite
            && (200..300).contains(&status)
            && matches!(
                txn.state,
                ServerState::Accepted | ServerState::Completed | ServerState::Confirmed
            );
        if txn.state != ServerState::Proceeding && !late_2xx {
            return; // a final answer has been given already
        }
        self.metrics.sip_response(status);
        let bytes = Bytes::from(resp.to_wire());
        self.transports.send(txn.flow, bytes.clone());
        if status < 200 {
            txn.last_response = Some(bytes);
            return;
        }
        match txn.state {
            ServerState::Accepted => return,
            ServerState::Completed | ServerState::Confirmed => {
                txn.state = ServerState::Accepted;
                txn.last_response = None;
                return;
            }
            _ => {}
        }
        txn.request = None;
        let key = key.to_string();
        if txn.is_invite && status < 300 {
            // RFC 6026: the UAS retransmits its 2xx itself; retransmitted INVITEs are absorbed.
            txn.state = ServerState::Accepted;
            txn.last_response = None;
            self.timers.insert(Timer::ForgetServer { key }, 64 * t1);
        } else if txn.is_invite {
            txn.state = ServerState::Completed;
            txn.last_response = Some(bytes);
            if txn.flow.protocol == Protocol::Udp {
                self.timers.insert(
                    Timer::ResendFinal {
                        key: key.clone(),
                        interval: t1,
                    },
                    t1,
                );
            }
            self.timers.insert(Timer::ForgetServer { key }, 64 * t1);
        } else {
            txn.state = ServerState::Completed;
            txn.last_response = Some(bytes);
            self.timers.insert(Timer::ForgetServer { key }, LINGER);
        }
    }

    /// Answers a server transaction with a response the relay makes itself (a `Warning`
    /// header carries `reason` when given).
    pub fn respond_status(
        &mut self,
        key: &str,
        status: u16,
        reason: Option<&str>,
        extra: Vec<Header>,
    ) {
        let Some(txn) = self.server.get(key) else {
            return;
        };
        let Some(req) = txn.request.as_ref() else {
            return;
        };
        let mut resp = builders::response_to(req, status, Some(&txn.to_tag));
        for h in extra {
            msg::push_header(&mut resp.headers, h);
        }
        if let Some(reason) = reason {
            msg::push_header(&mut resp.headers, builders::warning(reason));
        }
        self.respond(key, resp);
    }

    /// Answers a request that cannot have a transaction (no usable key, or it failed
    /// validation); `why` is both the reason phrase and a Warning.
    pub fn reply_stateless(&self, req: &Request, flow: Flow, status: u16, why: &str) {
        if req.method == Method::Ack {
            return;
        }
        let mut resp = builders::response_to(req, status, None);
        msg::push_header(&mut resp.headers, builders::warning(why));
        let to = reply_flow(msg::top_via(&req.headers).unwrap_or(""), flow);
        self.metrics.sip_response(status);
        self.transports
            .send(to, builders::with_reason_phrase(&resp.to_wire(), why));
    }

    // ------------------------------------------------------------------ client side

    /// Sends a request as a new client transaction and arms its timers.
    pub fn send(&mut self, out: Outgoing<O>) {
        let t1 = self.t1;
        self.transports.send(out.flow, out.wire.clone());
        if out.flow.protocol == Protocol::Udp {
            self.timers.insert(
                Timer::Retransmit {
                    branch: out.branch.clone(),
                    interval: t1,
                },
                t1,
            );
        }
        self.timers.insert(
            Timer::Timeout {
                branch: out.branch.clone(),
            },
            64 * t1,
        );
        self.client.insert(
            out.branch,
            ClientTxn {
                method: out.method,
                wire: out.wire,
                flow: out.flow,
                also_from: out.also_from,
                state: ClientState::Calling,
                cancel: CancelState::NotRequested,
                owner: out.owner,
            },
        );
    }

    pub fn client(&self, branch: &str) -> Option<&ClientTxn<O>> {
        self.client.get(branch)
    }

    /// CANCELs a client INVITE that has no final answer: at once when it has sent a
    /// provisional response, else as soon as it does (RFC 3261 §9.1).
    pub fn cancel(&mut self, branch: &str) {
        let Some(txn) = self.client.get_mut(branch) else {
            return;
        };
        if !txn.is_invite() || txn.cancel != CancelState::NotRequested {
            return;
        }
        match txn.state {
            ClientState::Calling => txn.cancel = CancelState::Pending,
            ClientState::Proceeding => self.send_cancel(branch),
            _ => {}
        }
    }

    fn send_cancel(&mut self, branch: &str) {
        let t1 = self.t1;
        let Some(txn) = self.client.get_mut(branch) else {
            return;
        };
        let Some(wire) = builders::cancel_for(&txn.wire) else {
            return;
        };
        self.transports.send(txn.flow, wire.clone());
        txn.cancel = CancelState::Sent { wire };
        if txn.flow.protocol == Protocol::Udp {
            self.timers.insert(
                Timer::RetransmitCancel {
                    branch: branch.to_string(),
                    interval: t1,
                },
                t1,
            );
        }
        self.timers.insert(
            Timer::CancelTimeout {
                branch: branch.to_string(),
            },
            64 * t1,
        );
    }

    /// Matches a response against the client transactions.
    pub fn on_response(
        &mut self,
        response: Response,
        flow: Flow,
        local: &LocalIdentity,
    ) -> Delivery<O> {
        let Some(via) = msg::top_via(&response.headers).and_then(msg::via_info) else {
            return Delivery::Dropped(Dropped::ForeignVia);
        };
        if !local.is_our_sent_by(via.sent_by) {
            return Delivery::Dropped(Dropped::ForeignVia);
        }
        let Some(branch) = via.branch.map(str::to_string) else {
            return Delivery::Dropped(Dropped::UnknownBranch);
        };
        let Some(txn) = self.client.get_mut(&branch) else {
            return Delivery::Dropped(Dropped::UnknownBranch);
        };
        if !txn.accepts_from(&flow) {
            return Delivery::Dropped(Dropped::WrongSource);
        }
        let method = msg::cseq(&response.headers).map(|(_, m)| m);
        if method.is_some_and(|m| m.eq_ignore_ascii_case("CANCEL")) {
            if matches!(txn.cancel, CancelState::Sent { .. }) {
                txn.cancel = CancelState::Answered;
            }
            return Delivery::Absorbed;
        }
        if method.and_then(|m| m.parse::<Method>().ok()) != Some(txn.method) {
            return Delivery::Dropped(Dropped::UnknownBranch);
        }
        let status = u16::from(response.status_code.clone());
        let t1 = self.t1;
        let is_invite = txn.is_invite();
        match status {
            100..=199 => {
                if txn.state != ClientState::Calling && txn.state != ClientState::Proceeding {
                    return Delivery::Absorbed;
                }
                txn.state = ClientState::Proceeding;
                if txn.cancel == CancelState::Pending {
                    self.send_cancel(&branch);
                }
                if status == 100 {
                    return Delivery::Absorbed;
                }
                let owner = self.client[&branch].owner.clone();
                Delivery::Provisional {
                    branch,
                    owner,
                    response,
                }
            }
            200..=299 if is_invite => {
                // A 2xx after a non-2xx final is new too (a forking proxy downstream may send
                // one late, RFC 3261 §16.7 step 10): it goes up like the first 2xx would.
                let repeated = txn.state == ClientState::Accepted;
                if !repeated {
                    txn.state = ClientState::Accepted;
                    self.timers.insert(
                        Timer::ForgetClient {
                            branch: branch.clone(),
                        },
                        64 * t1,
                    );
                }
                Delivery::Final {
                    branch,
                    owner: txn.owner.clone(),
                    response,
                    repeated,
                }
            }
            _ if is_invite => match txn.state {
                ClientState::Completed => {
                    // A retransmitted final: ACK it again.
                    if let Some(ack) = builders::ack_for_failure(&txn.wire, &response) {
                        self.transports.send(txn.flow, ack);
                    }
                    Delivery::Absorbed
                }
                ClientState::Accepted => Delivery::Absorbed,
                _ => {
                    txn.state = ClientState::Completed;
                    if let Some(ack) = builders::ack_for_failure(&txn.wire, &response) {
                        self.transports.send(txn.flow, ack);
                    }
                    let linger = if txn.flow.protocol.is_reliable() {
                        Duration::ZERO
                    } else {
                        64 * t1
                    };
                    self.timers.insert(
                        Timer::ForgetClient {
                            branch: branch.clone(),
                        },
                        linger,
                    );
                    Delivery::Final {
                        branch,
                        owner: txn.owner.clone(),
                        response,
                        repeated: false,
                    }
                }
            },
            _ => match txn.state {
                ClientState::Calling | ClientState::Proceeding => {
                    txn.state = ClientState::Completed;
                    self.timers.insert(
                        Timer::ForgetClient {
                            branch: branch.clone(),
                        },
                        LINGER,
                    );
                    Delivery::Final {
                        branch,
                        owner: txn.owner.clone(),
                        response,
                        repeated: false,
                    }
                }
                _ => Delivery::Absorbed,
            },
        }
    }

    // ------------------------------------------------------------------ timers

    /// Handles an expired timer; tells the core when that matters to it.
    pub fn on_timer(&mut self, timer: Timer) -> Option<Expiry<O>> {
        match timer {
            Timer::Retransmit { branch, interval } => {
                let txn = self.client.get(&branch)?;
                let active = match txn.state {
                    ClientState::Calling => true,
                    ClientState::Proceeding => !txn.is_invite(),
                    _ => false,
                };
                if active {
                    self.transports.send(txn.flow, txn.wire.clone());
                    let next = if txn.is_invite() {
                        interval * 2
                    } else {
                        (interval * 2).min(T2)
                    };
                    self.timers.insert(
                        Timer::Retransmit {
                            branch,
                            interval: next,
                        },
                        next,
                    );
                }
                None
            }
            Timer::Timeout { branch } => {
                let txn = self.client.get(&branch)?;
                let expired = txn.state == ClientState::Calling
                    || (!txn.is_invite() && txn.state == ClientState::Proceeding);
                if !expired {
                    return None;
                }
                self.abandon(branch, 408)
            }
            Timer::RetransmitCancel { branch, interval } => {
                let txn = self.client.get(&branch)?;
                if let CancelState::Sent { wire } = &txn.cancel {
                    if txn.state == ClientState::Proceeding {
                        self.transports.send(txn.flow, wire.clone());
                        let next = (interval * 2).min(T2);
                        self.timers.insert(
                            Timer::RetransmitCancel {
                                branch,
                                interval: next,
                            },
                            next,
                        );
                    }
                }
                None
            }
            Timer::CancelTimeout { branch } => {
                let txn = self.client.get(&branch)?;
                if !matches!(txn.state, ClientState::Calling | ClientState::Proceeding) {
                    return None;
                }
                self.abandon(branch, 487)
            }
            Timer::ForgetClient { branch } => {
                self.client.remove(&branch);
                None
            }
            Timer::ResendFinal { key, interval } => {
                let txn = self.server.get(&key)?;
                if txn.state != ServerState::Completed {
                    return None;
                }
                if let Some(last) = &txn.last_response {
                    self.transports.send(txn.flow, last.clone());
                }
                let next = (interval * 2).min(T2);
                self.timers.insert(
                    Timer::ResendFinal {
                        key,
                        interval: next,
                    },
                    next,
                );
                None
            }
            Timer::ForgetServer { key } => {
                let txn = self.server.get(&key)?;
                if txn.state == ServerState::Proceeding {
                    return None;
                }
                self.server.remove(&key);
                self.metrics.transaction_ended();
                Some(Expiry::ServerGone(key))
            }
        }
    }

    /// Gives up on a client transaction: the owner is told to act as if `status` came; a
    /// 2xx that still arrives within 64·T1 is delivered.
    fn abandon(&mut self, branch: String, status: u16) -> Option<Expiry<O>> {
        let txn = self.client.get_mut(&branch)?;
        txn.state = ClientState::Abandoned;
        let (owner, wire) = (txn.owner.clone(), txn.wire.clone());
        self.timers.insert(
            Timer::ForgetClient {
                branch: branch.clone(),
            },
            64 * self.t1,
        );
        Some(Expiry::NoAnswer {
            branch,
            owner,
            status,
            wire,
        })
    }
}

/// Where responses to a request that arrived on `flow` with top Via `via` go: over UDP the
/// Via's sent-by, received and rport (RFC 3261 §18.2.2, RFC 3581); over a stream, back down
/// the connection.
fn reply_flow(via: &str, flow: Flow) -> Flow {
    if flow.protocol.is_reliable() {
        flow
    } else {
        Flow {
            remote: msg::response_target(via, flow.remote),
            ..flow
        }
    }
}
