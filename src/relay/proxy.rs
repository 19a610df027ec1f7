//! The relay core: one task that owns every transaction, dialog and timer.
//!
//! Messages from all transports arrive on one channel and are handled to completion, in order,
//! without locks or awaits; whatever must wait (a durable database write, the registrar's
//! queries) runs in a spawned task that reports back on the [`CoreEvent`] channel. The flow of
//! an initial INVITE (RFC 3261 §16):
//!
//! 1. 100 Trying; retransmissions are absorbed by the server transaction.
//! 2. Max-Forwards (483), loop detection (482), our own Route popped (loose routing).
//! 3. Digest authentication (407 or 401 challenge; 403 for wrong credentials).
//! 4. The Request-URI names the service; unknown → 404.
//! 5. One branch per application server, in parallel: our Via pushed, Record-Route added,
//!    a session row written (state `trying`).
//! 6. Responses: 1xx relayed; the first 2xx relayed at once and the other branches CANCELled;
//!    non-2xx ACKed hop by hop and the best one relayed when every branch has answered.
//! 7. The ACK for the 2xx confirms the session: it is relayed only after the confirmation is
//!    on disk. BYE from either side is relayed; relaying its final response ends the session.

use crate::clock::{Millis, SharedClock};
use crate::config::Protocol;
use crate::metrics::Metrics;
use crate::relay::auth::{AuthOutcome, Authenticator, ChallengeKind};
use crate::relay::directory::{uri_protocol, DirectoryCache, Target};
use crate::relay::handover::{self, BranchToken};
use crate::relay::registrar;
use crate::relay::transaction::{
    response_rank, Branch, BranchState, ProxyContext, Purpose, ServerKey, ServerState, ServerTxn,
    Timer,
};
use crate::sip::message::{self as msg, MessageError};
use crate::sip::transport::{Inbound, Transports};
use crate::store::{Party, SessionEvent, SessionWriter, Store};
use crate::tokens::TokenIssuer;
use bytes::Bytes;
use rsipstack::sip::{Header, Host, Method, Request, Response, SipMessage, Uri};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::time::DelayQueue;

/// RFC 3261 T2: the cap of non-INVITE and response retransmission intervals.
const T2: Duration = Duration::from_secs(4);
/// RFC 3261 T4: how long a message may linger in the network.
const T4: Duration = Duration::from_secs(5);
/// Timer C: how long an INVITE branch may ring.
const TIMER_C: Duration = Duration::from_secs(180);
/// How long a completed transaction absorbs retransmissions before it is forgotten.
const LINGER: Duration = Duration::from_secs(5);
/// Allowed methods, for OPTIONS and 405 answers.
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, REFER, PRACK";

/// Results of work the core handed to other tasks.
#[derive(Debug)]
pub enum CoreEvent {
    /// A response for a server transaction, computed elsewhere (the registrar).
    Reply { key: ServerKey, response: Response },
    /// The confirmation of a dialog is on disk; its ACK may be relayed.
    ConfirmedDurably { dialog: String },
}

/// The relay's own addresses, as written into Via and Record-Route.
#[derive(Debug, Clone)]
pub struct LocalIdentity {
    pub host: String,
    pub udp_port: Option<u16>,
    pub tcp_port: Option<u16>,
    /// Every address we are bound to (to recognise our own Route entries).
    pub hosts: Vec<String>,
}

impl LocalIdentity {
    fn port(&self, protocol: Protocol) -> u16 {
        match protocol {
            Protocol::Udp => self.udp_port.or(self.tcp_port),
            Protocol::Tcp => self.tcp_port.or(self.udp_port),
        }
        .unwrap_or(5060)
    }

    fn sent_by(&self, protocol: Protocol) -> String {
        format!("{}:{}", self.host, self.port(protocol))
    }

    fn is_me(&self, uri: &Uri, domain: &str) -> bool {
        let host = uri.host_with_port.host.to_string();
        let port = uri.host_with_port.port.map(u16::from);
        if host.eq_ignore_ascii_case(domain) && port.is_none() {
            return true;
        }
        let port = port.unwrap_or(5060);
        (host == self.host || self.hosts.contains(&host))
            && (Some(port) == self.udp_port || Some(port) == self.tcp_port)
    }
}

/// Settings the core needs.
pub struct CoreSettings {
    pub domain: String,
    pub node_id: String,
    pub t1: Duration,
    pub challenge: ChallengeKind,
    pub local: LocalIdentity,
}

/// Everything the core talks to.
pub struct CoreParts {
    pub transports: Transports,
    pub directory: Arc<DirectoryCache>,
    pub auth: Authenticator,
    pub sessions: SessionWriter,
    pub store: Store,
    pub clock: SharedClock,
    pub tokens: TokenIssuer,
    pub metrics: Metrics,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DialogState {
    /// 2xx relayed, ACK not yet seen.
    Early,
    /// ACK seen; its confirmation is being written.
    Confirming,
    Confirmed,
    /// BYE relayed by this party; waiting for its final response.
    Ending(Party),
}

/// An established (or 2xx-answered) INVITE dialog, which is one session.
struct Dialog {
    session_id: String,
    /// The 2xx status that created the dialog.
    status: u16,
    caller_tag: String,
    state: DialogState,
    confirmed_at: Option<Millis>,
    /// Requests that arrived while the ACK waited for the disk, relayed after it in order.
    held: Vec<(Request, SocketAddr, Protocol)>,
    /// The ACK waiting for the disk: wire bytes and next hop.
    held_ack: Option<(Bytes, SocketAddr, Protocol)>,
}

/// The relay core. Build it with [`Core::new`] and run it with [`Core::run`].
pub struct Core {
    settings: CoreSettings,
    parts: CoreParts,
    server_txns: HashMap<ServerKey, ServerTxn>,
    /// Our Via branch → the server transaction and branch index it belongs to.
    branches: HashMap<String, (ServerKey, usize)>,
    dialogs: HashMap<String, Dialog>,
    timers: DelayQueue<Timer>,
    events_tx: mpsc::UnboundedSender<CoreEvent>,
    events_rx: mpsc::UnboundedReceiver<CoreEvent>,
    next_tag: u64,
}

impl Core {
    pub fn new(settings: CoreSettings, parts: CoreParts) -> Core {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        Core {
            settings,
            parts,
            server_txns: HashMap::new(),
            branches: HashMap::new(),
            dialogs: HashMap::new(),
            timers: DelayQueue::new(),
            events_tx,
            events_rx,
            next_tag: rand::random::<u32>() as u64,
        }
    }

    /// Handles messages, events and timers until the inbound channel closes.
    pub async fn run(mut self, mut inbound: mpsc::Receiver<Inbound>) {
        loop {
            tokio::select! {
                biased;
                Some(expired) = std::future::poll_fn(|cx| self.timers.poll_expired(cx)),
                    if !self.timers.is_empty() => self.on_timer(expired.into_inner()),
                Some(event) = self.events_rx.recv() => self.on_event(event),
                received = inbound.recv() => match received {
                    Some(m) => self.on_inbound(m),
                    None => return,
                },
            }
        }
    }

    fn now(&self) -> Millis {
        self.parts.clock.now_ms()
    }

    fn fresh_tag(&mut self) -> String {
        self.next_tag = self.next_tag.wrapping_add(1);
        format!("tg{:x}", self.next_tag)
    }

    fn send(&self, protocol: Protocol, dest: SocketAddr, bytes: Bytes) {
        self.parts.transports.send(protocol, dest, bytes);
    }

    // ---------------------------------------------------------------- inbound

    fn on_inbound(&mut self, inbound: Inbound) {
        match msg::parse(&inbound.bytes) {
            Ok(SipMessage::Request(req)) => {
                self.parts.metrics.sip_request(&req.method.to_string());
                self.on_request(req, inbound.source, inbound.protocol)
            }
            Ok(SipMessage::Response(resp)) => self.on_response(resp),
            Err(failure) => match (failure.error, failure.parsed.map(|m| *m)) {
                (MessageError::Truncated { .. }, Some(SipMessage::Request(req))) => self
                    .reply_stateless(
                        &req,
                        inbound.source,
                        inbound.protocol,
                        400,
                        "Truncated body",
                    ),
                (e, _) => tracing::debug!(
                    source = %inbound.source, error = %e, "dropping unparseable message"
                ),
            },
        }
    }

    fn on_request(&mut self, req: Request, source: SocketAddr, protocol: Protocol) {
        let Some(via) = msg::top_via(&req.headers).and_then(msg::via_info) else {
            return; // cannot be answered: no Via to send a response to
        };
        let key = match server_key(&req, via.branch, via.sent_by) {
            Some(k) => k,
            None => {
                return self.reply_stateless(
                    &req,
                    source,
                    protocol,
                    400,
                    "Missing Call-ID, From or CSeq",
                )
            }
        };
        if req.method == Method::Ack {
            return self.on_ack(req, key);
        }
        if let Some(txn) = self.server_txns.get(&key) {
            // A retransmission: answer with the last response, create nothing.
            if let Some(last) = &txn.last_response {
                self.send(txn.protocol, txn.reply_to, last.clone());
            }
            return;
        }
        if req.method == Method::Cancel {
            return self.on_cancel(req, key, source, protocol);
        }
        let reply_to = match protocol {
            Protocol::Udp => msg::response_target(msg::top_via(&req.headers).unwrap_or(""), source),
            Protocol::Tcp => source,
        };
        let is_invite = req.method == Method::Invite;
        let to_tag = self.fresh_tag();
        self.parts.metrics.transaction_started();
        self.server_txns.insert(
            key.clone(),
            ServerTxn {
                is_invite,
                protocol,
                reply_to,
                state: ServerState::Proceeding,
                request: Some(req),
                last_response: None,
                to_tag,
                proxy: None,
                resend_interval: self.settings.t1,
            },
        );
        if is_invite {
            self.respond(&key, 100, None, Vec::new());
        }
        self.route_request(key, source);
    }

    /// Decides what to do with a new request whose server transaction exists.
    fn route_request(&mut self, key: ServerKey, source: SocketAddr) {
        let Some(req) = self.server_txns.get(&key).and_then(|t| t.request.as_ref()) else {
            return;
        };
        let method = req.method;
        let to_us = self.addressed_to_us(req);
        let has_route = req.headers.iter().any(|h| matches!(h, Header::Route(_)));
        let in_dialog = msg::to_tag(&req.headers).is_some();

        if method == Method::Options && to_us && !has_route && !in_dialog {
            let allow = Header::Allow(rsipstack::sip::Allow::new(ALLOW));
            return self.respond(&key, 200, None, vec![allow]);
        }
        match msg::max_forwards(&req.headers) {
            Some(Ok(0)) => return self.respond(&key, 483, None, Vec::new()),
            Some(Err(())) => return self.respond(&key, 400, Some("Bad Max-Forwards"), Vec::new()),
            _ => {}
        }
        if !in_dialog && self.is_loop(req) {
            return self.respond(&key, 482, None, Vec::new());
        }
        if in_dialog {
            return self.forward_in_dialog(key, source);
        }
        match method {
            Method::Register if to_us => self.on_register(key, source),
            Method::Invite => self.on_initial_invite(key, source),
            Method::Bye | Method::Info | Method::Update | Method::PRack => {
                self.respond(&key, 481, None, Vec::new())
            }
            _ => {
                let allow = Header::Allow(rsipstack::sip::Allow::new(ALLOW));
                self.respond(&key, 405, None, vec![allow])
            }
        }
    }

    fn addressed_to_us(&self, req: &Request) -> bool {
        req.uri.auth.is_none() && self.settings.local.is_me(&req.uri, &self.settings.domain)
            || req.method == Method::Register
                && req
                    .uri
                    .host_with_port
                    .host
                    .to_string()
                    .eq_ignore_ascii_case(&self.settings.domain)
    }

    /// RFC 3261 §16.3 step 4: our own Via with the branch this request would get means a loop.
    fn is_loop(&self, req: &Request) -> bool {
        let mine = [
            self.settings.local.sent_by(Protocol::Udp),
            self.settings.local.sent_by(Protocol::Tcp),
        ];
        let prefix = format!("z9hG4bK{}", loop_hash(req));
        req.headers.iter().any(|h| match h {
            Header::Via(v) => msg::via_info(v.value()).is_some_and(|info| {
                mine.iter().any(|m| m == info.sent_by)
                    && info.branch.is_some_and(|b| b.starts_with(&prefix))
            }),
            _ => false,
        })
    }

    // ---------------------------------------------------------------- authentication

    /// Returns the authenticated user, or answers the request and returns `None`.
    fn authenticate(
        &mut self,
        key: &ServerKey,
        kind: ChallengeKind,
        source: SocketAddr,
    ) -> Option<String> {
        let now = self.now();
        let snapshot = self.parts.directory.snapshot();
        let req = self.server_txns.get(key)?.request.as_ref()?;
        match self
            .parts
            .auth
            .check(req, kind, &snapshot, source.ip(), now)
        {
            AuthOutcome::Authenticated(user) => Some(user),
            AuthOutcome::Challenge { stale } => {
                let headers = self.parts.auth.challenge(kind, stale, now);
                self.respond(key, kind.status(), None, headers);
                None
            }
            AuthOutcome::Forbidden => {
                self.parts.metrics.sip_auth_failure();
                self.respond(key, 403, None, Vec::new());
                None
            }
            AuthOutcome::Malformed => {
                self.respond(key, 400, Some("Malformed credentials"), Vec::new());
                None
            }
            AuthOutcome::Blocked { retry_after_secs } => {
                let retry = Header::RetryAfter(rsipstack::sip::RetryAfter::new(
                    retry_after_secs.to_string(),
                ));
                self.respond(key, 503, Some("Too many failed attempts"), vec![retry]);
                None
            }
        }
    }

    // ---------------------------------------------------------------- registrar

    fn on_register(&mut self, key: ServerKey, source: SocketAddr) {
        let Some(user) = self.authenticate(&key, ChallengeKind::Www, source) else {
            return;
        };
        let Some(req) = self.server_txns.get(&key).and_then(|t| t.request.clone()) else {
            return;
        };
        let store = self.parts.store.clone();
        let events = self.events_tx.clone();
        let now = self.now();
        let domain = self.settings.domain.clone();
        let to_tag = self.server_txns[&key].to_tag.clone();
        tokio::spawn(async move {
            let response = registrar::register(&store, &req, &user, &domain, &to_tag, now).await;
            let _ = events.send(CoreEvent::Reply { key, response });
        });
    }

    // ---------------------------------------------------------------- initial INVITE

    fn on_initial_invite(&mut self, key: ServerKey, source: SocketAddr) {
        let Some(caller) = self.authenticate(&key, self.settings.challenge, source) else {
            return;
        };
        let snapshot = self.parts.directory.snapshot();
        let Some(req) = self.server_txns.get(&key).and_then(|t| t.request.as_ref()) else {
            return;
        };
        let service_name = req
            .uri
            .auth
            .as_ref()
            .map(|a| a.user.clone())
            .unwrap_or_default();
        let domain = req.uri.host_with_port.host.to_string();
        let targets = match snapshot.service(&service_name, &domain) {
            Some(t) if !t.is_empty() => t.to_vec(),
            Some(_) => {
                return self.respond(
                    &key,
                    503,
                    Some("No application server reachable"),
                    Vec::new(),
                )
            }
            None => return self.respond(&key, 404, None, Vec::new()),
        };
        let service = format!("{service_name}@{domain}").to_ascii_lowercase();
        let mut forwarded = req.clone();
        prepare_forward(&mut forwarded);
        forwarded
            .headers
            .retain(|h| !matches!(h, Header::ProxyAuthorization(_) | Header::Authorization(_)));
        let inbound_protocol = self.server_txns[&key].protocol;
        let rr = self.record_route(inbound_protocol);
        let after_vias = forwarded
            .headers
            .iter()
            .position(|h| !matches!(h, Header::Via(_)))
            .unwrap_or(forwarded.headers.len());
        forwarded.headers.0.insert(
            after_vias,
            Header::RecordRoute(rsipstack::sip::RecordRoute::new(rr)),
        );
        let hash = loop_hash(req);
        let call_id = msg::call_id(&req.headers).unwrap_or_default().to_string();
        let now = self.now();

        let mut branches = Vec::with_capacity(targets.len());
        for (i, target) in targets.iter().enumerate() {
            let branch_id = format!("z9hG4bK{hash}.{i}");
            let session_id = uuid::Uuid::new_v4().to_string();
            let token =
                match self
                    .parts
                    .tokens
                    .mint(&caller, &target.id, &session_id, &service, now)
                {
                    Ok((jwt, claims)) => BranchToken {
                        jwt,
                        expires_at_ms: claims.expires_at_ms(),
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "cannot mint a session token");
                        return self.respond(
                            &key,
                            500,
                            Some("Cannot issue a session token"),
                            Vec::new(),
                        );
                    }
                };
            let wire = self.branch_request(&forwarded, target, &branch_id, Some(&token.jwt));
            self.parts.sessions.record(SessionEvent::Created {
                id: session_id.clone(),
                call_id: call_id.clone(),
                caller: caller.clone(),
                user_id: snapshot
                    .users
                    .get(&caller)
                    .map(|u| u.id.clone())
                    .unwrap_or_default(),
                service: service.clone(),
                service_id: target.service_id.clone(),
                app_server: target.name.clone(),
                app_server_id: target.id.clone(),
                node: self.settings.node_id.clone(),
                at: now,
            });
            branches.push(Branch {
                id: branch_id,
                addr: target.addr,
                protocol: target.protocol,
                wire,
                state: BranchState::Calling,
                final_status: None,
                session_id: Some(session_id),
                token: Some(token),
                app_server: target.name.clone(),
                cancel_pending: false,
                cancel_sent: false,
            });
        }
        self.start_branches(key, Purpose::NewSession, branches);
    }

    /// Serialises the forwarded request for one target: Request-URI and our Via.
    /// Serialises the forwarded request for one target: its Request-URI, our Via on top and
    /// the branch's session token, written straight to bytes (no copy of the parsed request).
    fn branch_request(
        &self,
        forwarded: &Request,
        target: &Target,
        branch_id: &str,
        token: Option<&str>,
    ) -> Bytes {
        use std::fmt::Write as _;
        let uri = if target.uri.auth.is_some() {
            &target.uri
        } else {
            &forwarded.uri
        };
        let mut head = String::with_capacity(1024);
        let _ = write!(
            head,
            "{} {} SIP/2.0\r\nVia: {}\r\n",
            forwarded.method,
            uri,
            self.our_via(target.protocol, branch_id)
        );
        for h in forwarded.headers.iter() {
            let _ = write!(head, "{h}\r\n");
        }
        if let Some(jwt) = token {
            let _ = write!(head, "{}: {jwt}\r\n", handover::TOKEN_HEADER);
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&forwarded.body);
        Bytes::from(bytes)
    }

    /// Our Via header value for a request leaving over `protocol`.
    fn our_via(&self, protocol: Protocol, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {};branch={branch}",
            protocol.as_str().to_ascii_uppercase(),
            self.settings.local.sent_by(protocol)
        )
    }

    fn record_route(&self, protocol: Protocol) -> String {
        let local = &self.settings.local;
        match protocol {
            Protocol::Udp => format!("<sip:{}:{};lr>", local.host, local.port(protocol)),
            Protocol::Tcp => {
                format!(
                    "<sip:{}:{};transport=tcp;lr>",
                    local.host,
                    local.port(protocol)
                )
            }
        }
    }

    /// Sends every branch and arms its timers.
    fn start_branches(&mut self, key: ServerKey, purpose: Purpose, branches: Vec<Branch>) {
        let is_invite = self.server_txns.get(&key).is_some_and(|t| t.is_invite);
        let t1 = self.settings.t1;
        for (i, b) in branches.iter().enumerate() {
            self.branches.insert(b.id.clone(), (key.clone(), i));
            self.send(b.protocol, b.addr, b.wire.clone());
            if b.protocol == Protocol::Udp {
                self.timers.insert(
                    Timer::Retransmit {
                        branch: b.id.clone(),
                        interval: t1,
                    },
                    t1,
                );
            }
            self.timers.insert(
                Timer::BranchTimeout {
                    branch: b.id.clone(),
                },
                64 * t1,
            );
            if is_invite {
                self.timers.insert(
                    Timer::InviteTimeout {
                        branch: b.id.clone(),
                    },
                    TIMER_C,
                );
            }
        }
        if let Some(txn) = self.server_txns.get_mut(&key) {
            txn.proxy = Some(ProxyContext {
                purpose,
                branches,
                best: None,
                answered: false,
                cancelled: false,
            });
        }
    }

    // ---------------------------------------------------------------- in-dialog requests

    fn forward_in_dialog(&mut self, key: ServerKey, source: SocketAddr) {
        let Some(txn) = self.server_txns.get(&key) else {
            return;
        };
        let protocol = txn.protocol;
        let Some(req) = txn.request.as_ref() else {
            return;
        };
        let Some(dialog_key) = self.find_dialog(req) else {
            return self.respond(&key, 481, None, Vec::new());
        };
        let dialog = self.dialogs.get_mut(&dialog_key).expect("found above");
        if dialog.state == DialogState::Confirming {
            // Keep order behind the ACK that waits for the disk.
            let req = self.server_txns.remove(&key).and_then(|t| t.request);
            self.parts.metrics.transaction_ended();
            if let Some(req) = req {
                dialog.held.push((req, source, protocol));
            }
            return;
        }
        let req = self.server_txns[&key]
            .request
            .as_ref()
            .expect("checked")
            .clone();
        let from_caller = msg::from_tag(&req.headers) == Some(dialog.caller_tag.as_str());
        if req.method == Method::Bye {
            dialog.state = DialogState::Ending(if from_caller {
                Party::Caller
            } else {
                Party::Callee
            });
        }
        let session_id = dialog.session_id.clone();
        self.parts.sessions.record(SessionEvent::Activity {
            id: session_id,
            at: self.now(),
        });
        let mut forwarded = req.clone();
        self.pop_own_routes(&mut forwarded);
        let (addr, out_protocol) = match next_hop(&forwarded) {
            Some(hop) => hop,
            None => {
                return self.respond(&key, 503, Some("Next hop is not an IP address"), Vec::new())
            }
        };
        prepare_forward(&mut forwarded);
        let branch_id = format!("z9hG4bK{}.0", loop_hash(&req));
        let via = self.our_via(out_protocol, &branch_id);
        forwarded
            .headers
            .0
            .insert(0, Header::Via(rsipstack::sip::Via::new(via)));
        let branch = Branch {
            id: branch_id,
            addr,
            protocol: out_protocol,
            wire: Bytes::from(forwarded.to_bytes()),
            state: BranchState::Calling,
            final_status: None,
            session_id: None,
            token: None,
            app_server: String::new(),
            cancel_pending: false,
            cancel_sent: false,
        };
        self.start_branches(key, Purpose::InDialog { dialog: dialog_key }, vec![branch]);
    }

    /// Removes the Route entries that name this relay (RFC 3261 §16.4).
    fn pop_own_routes(&self, req: &mut Request) {
        let local = &self.settings.local;
        let domain = &self.settings.domain;
        let mut routes: Vec<String> = Vec::new();
        let mut first_route_at = None;
        let mut i = 0;
        req.headers.retain(|h| {
            let keep = match h {
                Header::Route(r) => {
                    first_route_at.get_or_insert(i);
                    routes.extend(msg_split_list(r.value()).into_iter().map(str::to_string));
                    false
                }
                _ => true,
            };
            i += 1;
            keep
        });
        let remaining: Vec<String> = routes
            .into_iter()
            .skip_while(|r| Uri::try_from(msg::addr_uri(r)).is_ok_and(|u| local.is_me(&u, domain)))
            .collect();
        if let Some(at) = first_route_at {
            let at = at.min(req.headers.len());
            for (j, r) in remaining.into_iter().enumerate() {
                req.headers
                    .0
                    .insert(at + j, Header::Route(rsipstack::sip::Route::new(r)));
            }
        }
    }

    fn find_dialog(&self, req: &Request) -> Option<String> {
        let call_id = msg::call_id(&req.headers)?;
        let from = msg::from_tag(&req.headers)?;
        let to = msg::to_tag(&req.headers)?;
        [dialog_key(call_id, from, to), dialog_key(call_id, to, from)]
            .into_iter()
            .find(|k| self.dialogs.contains_key(k))
    }

    // ---------------------------------------------------------------- ACK

    fn on_ack(&mut self, req: Request, key: ServerKey) {
        // ACK for a non-2xx final response: hop by hop, absorbed by the INVITE transaction.
        let invite_key = invite_key_of(&key);
        if let Some(txn) = self.server_txns.get_mut(&invite_key) {
            if matches!(txn.state, ServerState::Completed | ServerState::Confirmed) {
                if txn.state == ServerState::Completed {
                    txn.state = ServerState::Confirmed;
                    let linger = if txn.protocol == Protocol::Udp {
                        T4
                    } else {
                        Duration::ZERO
                    };
                    self.timers
                        .insert(Timer::Remove { key: invite_key }, linger);
                }
                return;
            }
        }
        // ACK for a 2xx: end to end, through the dialog.
        let Some(dialog_key) = self.find_dialog(&req) else {
            return; // an ACK is never answered; an unknown one is dropped
        };
        let branch = format!("z9hG4bK{}.a", loop_hash(&req));
        let mut forwarded = req;
        self.pop_own_routes(&mut forwarded);
        let Some((addr, out_protocol)) = next_hop(&forwarded) else {
            return;
        };
        prepare_forward(&mut forwarded);
        let via = self.our_via(out_protocol, &branch);
        forwarded
            .headers
            .0
            .insert(0, Header::Via(rsipstack::sip::Via::new(via)));
        let wire = Bytes::from(forwarded.to_bytes());
        let now = self.now();
        let dialog = self.dialogs.get_mut(&dialog_key).expect("found above");
        match dialog.state {
            DialogState::Early => {
                self.parts.metrics.session_started();
                dialog.state = DialogState::Confirming;
                dialog.confirmed_at = Some(now);
                dialog.held_ack = Some((wire, addr, out_protocol));
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
                    let _ = events.send(CoreEvent::ConfirmedDurably { dialog: dialog_key });
                });
            }
            DialogState::Confirming => {
                // A retransmitted ACK while the first one waits: it will be relayed once.
            }
            _ => self.send(out_protocol, addr, wire),
        }
    }

    // ---------------------------------------------------------------- CANCEL

    fn on_cancel(&mut self, req: Request, key: ServerKey, source: SocketAddr, protocol: Protocol) {
        let invite_key = invite_key_of(&key);
        let reply_to = match protocol {
            Protocol::Udp => msg::response_target(msg::top_via(&req.headers).unwrap_or(""), source),
            Protocol::Tcp => source,
        };
        let found = self.server_txns.contains_key(&invite_key);
        let status = if found { 200 } else { 481 };
        let to_tag = self.fresh_tag();
        self.parts.metrics.sip_response(status);
        let response = Bytes::from(msg::response_to(&req, status, Some(&to_tag)).to_bytes());
        self.send(protocol, reply_to, response.clone());
        self.parts.metrics.transaction_started();
        self.server_txns.insert(
            key.clone(),
            ServerTxn {
                is_invite: false,
                protocol,
                reply_to,
                state: ServerState::Completed,
                request: None,
                last_response: Some(response),
                to_tag,
                proxy: None,
                resend_interval: self.settings.t1,
            },
        );
        self.timers.insert(Timer::Remove { key }, LINGER);
        if !found {
            return;
        }
        let pending: Vec<usize> = match self
            .server_txns
            .get_mut(&invite_key)
            .and_then(|t| t.proxy.as_mut())
        {
            Some(ctx) if !ctx.answered => {
                ctx.cancelled = true;
                (0..ctx.branches.len()).collect()
            }
            _ => Vec::new(),
        };
        for i in pending {
            self.cancel_branch(&invite_key, i);
        }
    }

    /// Sends CANCEL to a pending branch (or remembers to, once it has sent a provisional).
    fn cancel_branch(&mut self, key: &ServerKey, index: usize) {
        let t1 = self.settings.t1;
        let Some(b) = self
            .server_txns
            .get_mut(key)
            .and_then(|t| t.proxy.as_mut())
            .and_then(|c| c.branches.get_mut(index))
        else {
            return;
        };
        match b.state {
            BranchState::Calling => b.cancel_pending = true,
            BranchState::Proceeding if !b.cancel_sent => {
                b.cancel_sent = true;
                if let Some(cancel) = build_cancel(&b.wire) {
                    let (protocol, addr, id) = (b.protocol, b.addr, b.id.clone());
                    self.send(protocol, addr, cancel);
                    self.timers
                        .insert(Timer::CancelTimeout { branch: id }, 64 * t1);
                }
            }
            _ => {}
        }
    }

    // ---------------------------------------------------------------- responses

    fn on_response(&mut self, mut resp: Response) {
        let Some(via) = msg::top_via(&resp.headers).and_then(msg::via_info) else {
            return;
        };
        let Some(branch_id) = via.branch.map(str::to_string) else {
            return;
        };
        let Some(method) = msg::cseq(&resp.headers).map(|(_, m)| m.to_string()) else {
            return;
        };
        if method.eq_ignore_ascii_case("CANCEL") {
            return; // the 200 for our CANCEL ends there
        }
        let status = u16::from(resp.status_code.clone());
        pop_top_via(&mut resp);
        let Some((key, index)) = self.branches.get(&branch_id).cloned() else {
            // A 2xx retransmission after the transaction is gone travels statelessly upstream.
            if (200..300).contains(&status) && method.eq_ignore_ascii_case("INVITE") {
                self.forward_stateless_response(resp);
            }
            return;
        };
        let Some(txn) = self.server_txns.get_mut(&key) else {
            return;
        };
        let is_invite = txn.is_invite;
        let Some(ctx) = txn.proxy.as_mut() else {
            return;
        };
        let Some(branch) = ctx.branches.get_mut(index) else {
            return;
        };

        if branch.is_final() {
            // A retransmitted final response: re-ACK a non-2xx, relay a 2xx again.
            if is_invite && status >= 300 {
                if let Some(ack) = build_ack(&branch.wire, &resp) {
                    let (p, a) = (branch.protocol, branch.addr);
                    self.send(p, a, ack);
                }
            } else if is_invite && status >= 200 {
                let (p, to) = (txn.protocol, txn.reply_to);
                self.send(p, to, Bytes::from(resp.to_bytes()));
            }
            return;
        }
        match status {
            100..=199 => {
                if branch.state == BranchState::Calling {
                    branch.state = BranchState::Proceeding;
                }
                let cancel_now = branch.cancel_pending;
                if status > 100 && !ctx.answered {
                    self.parts.metrics.sip_response(status);
                    let bytes = Bytes::from(resp.to_bytes());
                    txn.last_response = Some(bytes.clone());
                    let (p, to) = (txn.protocol, txn.reply_to);
                    self.send(p, to, bytes);
                }
                if cancel_now {
                    self.cancel_branch(&key, index);
                }
            }
            200..=299 => {
                branch.state = BranchState::Terminated;
                branch.final_status = Some(status);
                let session_id = branch.session_id.clone();
                if let (Some(token), Some(sid)) = (&branch.token, &session_id) {
                    handover::hand_over(&mut resp, token, sid);
                }
                let first_answer = !ctx.answered;
                ctx.answered = true;
                let purpose = ctx.purpose.clone();
                let others: Vec<usize> = (0..ctx.branches.len()).filter(|i| *i != index).collect();
                self.parts.metrics.sip_response(status);
                let bytes = Bytes::from(resp.to_bytes());
                let (p, to) = (txn.protocol, txn.reply_to);
                if first_answer {
                    txn.state = ServerState::Accepted;
                    txn.request = None;
                    txn.last_response = if is_invite { None } else { Some(bytes.clone()) };
                }
                self.send(p, to, bytes);
                match purpose {
                    Purpose::NewSession => {
                        if let Some(session_id) = session_id {
                            self.open_dialog(&resp, session_id);
                        }
                        for i in others {
                            self.cancel_branch(&key, i);
                        }
                    }
                    Purpose::InDialog { dialog } => {
                        if method.eq_ignore_ascii_case("BYE") {
                            self.close_dialog(&dialog);
                        }
                    }
                }
                if first_answer {
                    let linger = if is_invite {
                        64 * self.settings.t1
                    } else {
                        LINGER
                    };
                    self.timers.insert(Timer::Remove { key }, linger);
                }
            }
            _ => {
                branch.state = BranchState::Completed;
                branch.final_status = Some(status);
                if is_invite {
                    if let Some(ack) = build_ack(&branch.wire, &resp) {
                        let (p, a) = (branch.protocol, branch.addr);
                        self.send(p, a, ack);
                    }
                }
                self.branch_failed(&key, index, resp);
            }
        }
    }

    /// Records a non-2xx final (real or synthetic) on a branch and answers the client when
    /// every branch has one.
    fn branch_failed(&mut self, key: &ServerKey, index: usize, resp: Response) {
        let now = self.now();
        let Some(txn) = self.server_txns.get_mut(key) else {
            return;
        };
        let Some(ctx) = txn.proxy.as_mut() else {
            return;
        };
        let status = u16::from(resp.status_code.clone());
        let branch = &mut ctx.branches[index];
        branch.state = BranchState::Completed;
        branch.final_status = Some(status);
        if let Some(id) = branch.session_id.take() {
            let event = if ctx.cancelled || branch.cancel_sent {
                SessionEvent::Cancelled {
                    id,
                    at: now,
                    status,
                }
            } else {
                SessionEvent::Failed {
                    id,
                    at: now,
                    status,
                }
            };
            self.parts.sessions.record(event);
        }
        let better = ctx.best.as_ref().is_none_or(|b| {
            response_rank(status) < response_rank(u16::from(b.status_code.clone()))
        });
        if better {
            ctx.best = Some(resp);
        }
        let six_hundred = (600..700).contains(&status);
        let all_final = ctx.branches.iter().all(Branch::is_final);
        if ctx.answered || !(all_final || six_hundred) {
            return;
        }
        ctx.answered = true;
        let purpose = ctx.purpose.clone();
        let best = ctx.best.take().expect("set above");
        let others: Vec<usize> = (0..ctx.branches.len()).filter(|i| *i != index).collect();
        let best_status = u16::from(best.status_code.clone());
        self.relay_final(key, best);
        if six_hundred {
            for i in others {
                self.cancel_branch(key, i);
            }
        }
        if let Purpose::InDialog { dialog } = purpose {
            let is_bye = self.dialog_is_ending(&dialog);
            if is_bye || best_status == 481 || best_status == 408 {
                self.close_dialog(&dialog);
            }
        }
    }

    fn dialog_is_ending(&self, dialog: &str) -> bool {
        self.dialogs
            .get(dialog)
            .is_some_and(|d| matches!(d.state, DialogState::Ending(_)))
    }

    /// Relays a final non-2xx response upstream and moves the server transaction on.
    fn relay_final(&mut self, key: &ServerKey, resp: Response) {
        let t1 = self.settings.t1;
        let Some(txn) = self.server_txns.get_mut(key) else {
            return;
        };
        self.parts
            .metrics
            .sip_response(u16::from(resp.status_code.clone()));
        let bytes = Bytes::from(resp.to_bytes());
        self.parts
            .transports
            .send(txn.protocol, txn.reply_to, bytes.clone());
        txn.last_response = Some(bytes);
        txn.request = None;
        txn.state = ServerState::Completed;
        if txn.is_invite {
            if txn.protocol == Protocol::Udp {
                self.timers.insert(
                    Timer::ResendFinal {
                        key: key.clone(),
                        interval: t1,
                    },
                    t1,
                );
            }
            self.timers
                .insert(Timer::Remove { key: key.clone() }, 64 * t1);
        } else {
            self.timers
                .insert(Timer::Remove { key: key.clone() }, LINGER);
        }
    }

    fn forward_stateless_response(&self, resp: Response) {
        let Some(via) = msg::top_via(&resp.headers) else {
            return;
        };
        let Some(info) = msg::via_info(via) else {
            return;
        };
        let protocol = if info.transport.eq_ignore_ascii_case("tcp") {
            Protocol::Tcp
        } else {
            Protocol::Udp
        };
        let (host, port) = msg::host_port(info.sent_by);
        let ip = msg::param_value(via, "received")
            .and_then(|r| r.parse::<IpAddr>().ok())
            .or_else(|| host.parse().ok());
        let port = msg::param_value(via, "rport")
            .and_then(|p| p.parse().ok())
            .or(port)
            .unwrap_or(5060);
        if let Some(ip) = ip {
            self.send(
                protocol,
                SocketAddr::new(ip, port),
                Bytes::from(resp.to_bytes()),
            );
        }
    }

    // ---------------------------------------------------------------- dialogs and sessions

    fn open_dialog(&mut self, resp: &Response, session_id: String) {
        let status = u16::from(resp.status_code.clone());
        let (Some(call_id), Some(from), Some(to)) = (
            msg::call_id(&resp.headers),
            msg::from_tag(&resp.headers),
            msg::to_tag(&resp.headers),
        ) else {
            tracing::warn!("2xx without tags; cannot track its dialog");
            return;
        };
        self.dialogs
            .entry(dialog_key(call_id, from, to))
            .or_insert(Dialog {
                session_id,
                status,
                caller_tag: from.to_string(),
                state: DialogState::Early,
                confirmed_at: None,
                held: Vec::new(),
                held_ack: None,
            });
    }

    /// The final response to a BYE was relayed: the session ends now.
    fn close_dialog(&mut self, dialog_key: &str) {
        let Some(dialog) = self.dialogs.remove(dialog_key) else {
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

    fn on_event(&mut self, event: CoreEvent) {
        match event {
            CoreEvent::Reply { key, response } => {
                let status = u16::from(response.status_code.clone());
                if status >= 300 {
                    self.relay_final(&key, response);
                } else if let Some(txn) = self.server_txns.get_mut(&key) {
                    self.parts.metrics.sip_response(status);
                    let bytes = Bytes::from(response.to_bytes());
                    self.parts
                        .transports
                        .send(txn.protocol, txn.reply_to, bytes.clone());
                    txn.last_response = Some(bytes);
                    txn.request = None;
                    txn.state = ServerState::Completed;
                    self.timers.insert(Timer::Remove { key }, LINGER);
                }
            }
            CoreEvent::ConfirmedDurably { dialog } => {
                let Some(d) = self.dialogs.get_mut(&dialog) else {
                    return;
                };
                if d.state == DialogState::Confirming {
                    d.state = DialogState::Confirmed;
                }
                let ack = d.held_ack.take();
                let held = std::mem::take(&mut d.held);
                if let Some((wire, addr, protocol)) = ack {
                    self.send(protocol, addr, wire);
                }
                for (req, source, protocol) in held {
                    self.on_request(req, source, protocol);
                }
            }
        }
    }

    // ---------------------------------------------------------------- responding

    /// Sends a response for a server transaction (and keeps it for retransmissions).
    fn respond(&mut self, key: &ServerKey, status: u16, reason: Option<&str>, extra: Vec<Header>) {
        let Some(txn) = self.server_txns.get(key) else {
            return;
        };
        let Some(req) = txn.request.as_ref() else {
            return;
        };
        let mut resp = msg::response_to(req, status, Some(&txn.to_tag));
        for h in extra {
            msg::push_header(&mut resp.headers, h);
        }
        if let Some(reason) = reason {
            msg::push_header(&mut resp.headers, warning(reason));
        }
        if status < 200 {
            let txn = self.server_txns.get_mut(key).expect("checked");
            self.parts.metrics.sip_response(status);
            let bytes = Bytes::from(resp.to_bytes());
            self.parts
                .transports
                .send(txn.protocol, txn.reply_to, bytes.clone());
            txn.last_response = Some(bytes);
        } else {
            self.relay_final(key, resp);
        }
    }

    /// Answers a request that has no usable transaction key.
    fn reply_stateless(
        &self,
        req: &Request,
        source: SocketAddr,
        protocol: Protocol,
        status: u16,
        why: &str,
    ) {
        if req.method == Method::Ack {
            return;
        }
        let mut resp = msg::response_to(req, status, None);
        msg::push_header(&mut resp.headers, warning(why));
        let to = match protocol {
            Protocol::Udp => msg::response_target(msg::top_via(&req.headers).unwrap_or(""), source),
            Protocol::Tcp => source,
        };
        self.send(protocol, to, Bytes::from(resp.to_bytes()));
    }

    // ---------------------------------------------------------------- timers

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Retransmit { branch, interval } => {
                let Some(b) = self.branch(&branch) else {
                    return;
                };
                let is_invite = self
                    .branches
                    .get(&branch)
                    .and_then(|(k, _)| self.server_txns.get(k))
                    .is_some_and(|t| t.is_invite);
                let active = match b.state {
                    BranchState::Calling => true,
                    BranchState::Proceeding => !is_invite,
                    _ => false,
                };
                if !active {
                    return;
                }
                let (p, a, wire) = (b.protocol, b.addr, b.wire.clone());
                self.send(p, a, wire);
                let next = if is_invite {
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
            Timer::BranchTimeout { branch } => {
                let Some(b) = self.branch(&branch) else {
                    return;
                };
                let is_invite = self
                    .branches
                    .get(&branch)
                    .and_then(|(k, _)| self.server_txns.get(k))
                    .is_some_and(|t| t.is_invite);
                let expired = b.state == BranchState::Calling
                    || (!is_invite && b.state == BranchState::Proceeding);
                if expired {
                    self.synthesize_final(&branch, 408);
                }
            }
            Timer::InviteTimeout { branch } => {
                let Some(b) = self.branch(&branch) else {
                    return;
                };
                if b.state == BranchState::Proceeding {
                    if let Some((key, index)) = self.branches.get(&branch).cloned() {
                        self.cancel_branch(&key, index);
                    }
                    self.synthesize_final(&branch, 408);
                }
            }
            Timer::CancelTimeout { branch } => {
                if self.branch(&branch).is_some_and(|b| !b.is_final()) {
                    self.synthesize_final(&branch, 487);
                }
            }
            Timer::ResendFinal { key, interval } => {
                let Some(txn) = self.server_txns.get(&key) else {
                    return;
                };
                if txn.state != ServerState::Completed {
                    return;
                }
                if let Some(last) = &txn.last_response {
                    self.send(txn.protocol, txn.reply_to, last.clone());
                }
                let next = (interval * 2).min(T2);
                self.timers.insert(
                    Timer::ResendFinal {
                        key,
                        interval: next,
                    },
                    next,
                );
            }
            Timer::Remove { key } => {
                if let Some(txn) = self.server_txns.get(&key) {
                    if txn.state == ServerState::Proceeding {
                        return;
                    }
                }
                if let Some(txn) = self.server_txns.remove(&key) {
                    self.parts.metrics.transaction_ended();
                    if let Some(ctx) = txn.proxy {
                        for b in ctx.branches {
                            self.branches.remove(&b.id);
                        }
                    }
                }
            }
        }
    }

    fn branch(&self, id: &str) -> Option<&Branch> {
        let (key, index) = self.branches.get(id)?;
        self.server_txns
            .get(key)?
            .proxy
            .as_ref()?
            .branches
            .get(*index)
    }

    /// A branch gave no (final) answer in time: act as if it answered `status`.
    fn synthesize_final(&mut self, branch: &str, status: u16) {
        let Some((key, index)) = self.branches.get(branch).cloned() else {
            return;
        };
        let Some(txn) = self.server_txns.get(&key) else {
            return;
        };
        let Some(b) = self.branch(branch) else { return };
        let Ok(SipMessage::Request(forwarded)) = msg::parse(&b.wire) else {
            return;
        };
        let mut resp = msg::response_to(&forwarded, status, Some(&txn.to_tag));
        pop_top_via(&mut resp);
        self.branch_failed(&key, index, resp);
    }
}

// -------------------------------------------------------------------- free helpers

/// A `Warning: 399` header (RFC 3261 §20.43) explaining a response the relay generated.
fn warning(text: &str) -> Header {
    Header::Warning(rsipstack::sip::Warning::new(format!(
        "399 tollgate \"{text}\""
    )))
}

/// `branch|sent-by|METHOD` with ACK and CANCEL kept apart from INVITE (they look it up).
fn server_key(req: &Request, branch: Option<&str>, sent_by: &str) -> Option<ServerKey> {
    let method = req.method.to_string();
    match branch {
        Some(b) if b.starts_with("z9hG4bK") => Some(format!("{b}|{sent_by}|{method}")),
        _ => {
            // RFC 2543 peers: fall back on the dialog identifiers.
            let call_id = msg::call_id(&req.headers)?;
            let from = msg::from_tag(&req.headers).unwrap_or("");
            let (seq, _) = msg::cseq(&req.headers)?;
            Some(format!("{call_id}|{from}|{seq}|{method}"))
        }
    }
}

/// The key of the INVITE transaction an ACK or CANCEL refers to.
fn invite_key_of(key: &str) -> ServerKey {
    match key.rsplit_once('|') {
        Some((prefix, _)) => format!("{prefix}|INVITE"),
        None => key.to_string(),
    }
}

fn dialog_key(call_id: &str, caller_tag: &str, callee_tag: &str) -> String {
    format!("{call_id}\n{caller_tag}\n{callee_tag}")
}

/// Hash of the fields that identify a request hop-independently (RFC 3261 §16.6 step 8), so a
/// request that comes back through us is recognised as a loop.
fn loop_hash(req: &Request) -> String {
    let mut h = DefaultHasher::new();
    req.uri.to_string().hash(&mut h);
    msg::from_tag(&req.headers).hash(&mut h);
    msg::to_tag(&req.headers).hash(&mut h);
    msg::call_id(&req.headers).hash(&mut h);
    msg::cseq(&req.headers).map(|(n, _)| n).hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Decrements Max-Forwards (adding 70 when absent) and drops any session-token header a
/// client sent: only the relay puts one there.
fn prepare_forward(req: &mut Request) {
    req.headers.retain(
        |h| !matches!(h, Header::Other(name, _) if name.eq_ignore_ascii_case(handover::TOKEN_HEADER)),
    );
    let mut seen = false;
    for h in req.headers.iter_mut() {
        if let Header::MaxForwards(v) = h {
            let n: u32 = v.value().trim().parse().unwrap_or(70);
            *v = rsipstack::sip::MaxForwards::new(n.saturating_sub(1).to_string());
            seen = true;
        }
    }
    if !seen {
        msg::push_header(
            &mut req.headers,
            Header::MaxForwards(rsipstack::sip::MaxForwards::new("70")),
        );
    }
}

/// Where an in-dialog request goes next: the first Route, else the Request-URI.
fn next_hop(req: &Request) -> Option<(SocketAddr, Protocol)> {
    let route = req.headers.iter().find_map(|h| match h {
        Header::Route(r) => msg_split_list(r.value()).first().map(|s| s.to_string()),
        _ => None,
    });
    let uri = match route {
        Some(r) => Uri::try_from(msg::addr_uri(&r)).ok()?,
        None => req.uri.clone(),
    };
    let Host::IpAddr(ip) = uri.host_with_port.host else {
        return None;
    };
    let port = uri.host_with_port.port.map(u16::from).unwrap_or(5060);
    Some((SocketAddr::new(ip, port), uri_protocol(&uri)))
}

fn msg_split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut depth) = (0, 0);
    for (i, c) in value.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            ',' if depth == 0 => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

fn pop_top_via(resp: &mut Response) {
    let top = resp
        .headers
        .iter()
        .position(|h| matches!(h, Header::Via(_)));
    if let Some(i) = top {
        resp.headers.0.remove(i);
    }
}

/// The hop-by-hop ACK for a non-2xx final response to the INVITE we sent as `wire`
/// (RFC 3261 §17.1.1.3): same Request-URI, Via (ours), From, Call-ID, CSeq number and Route;
/// the To of the response.
fn build_ack(wire: &[u8], resp: &Response) -> Option<Bytes> {
    let to = msg::to_value(&resp.headers)?;
    request_for_invite(wire, Method::Ack, Some(to))
}

/// A CANCEL for the INVITE we sent as `wire` (RFC 3261 §9.1): same Request-URI, top Via,
/// From, To, Call-ID, CSeq number and Route.
fn build_cancel(wire: &[u8]) -> Option<Bytes> {
    request_for_invite(wire, Method::Cancel, None)
}

/// A request that belongs to the INVITE transaction we sent as `wire`: its Request-URI, top
/// Via, From, Call-ID, Route, Max-Forwards and CSeq number, with `method`; the To is the
/// INVITE's unless `to` replaces it.
fn request_for_invite(wire: &[u8], method: Method, to: Option<&str>) -> Option<Bytes> {
    let Ok(SipMessage::Request(invite)) = msg::parse(wire) else {
        return None;
    };
    let (seq, _) = msg::cseq(&invite.headers)?;
    let mut headers = rsipstack::sip::Headers::default();
    if let Some(v) = invite.headers.iter().find(|h| matches!(h, Header::Via(_))) {
        headers.push(v.clone());
    }
    for h in invite.headers.iter() {
        match h {
            Header::From(_) | Header::CallId(_) | Header::Route(_) | Header::MaxForwards(_) => {
                headers.push(h.clone())
            }
            Header::To(_) if to.is_none() => headers.push(h.clone()),
            _ => {}
        }
    }
    if let Some(to) = to {
        headers.push(Header::To(rsipstack::sip::To::new(to)));
    }
    headers.push(Header::CSeq(rsipstack::sip::CSeq::new(format!(
        "{seq} {method}"
    ))));
    headers.push(Header::ContentLength(rsipstack::sip::ContentLength::new(
        "0",
    )));
    let request = Request {
        method,
        uri: invite.uri,
        version: rsipstack::sip::Version::V2,
        headers,
        body: Vec::new(),
    };
    Some(Bytes::from(request.to_bytes()))
}
