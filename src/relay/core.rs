//! The relay core: one task that owns every transaction, dialog and timer of a node.
//!
//! Messages from all transports arrive on one channel and are handled to completion, in order,
//! without locks or awaits; whatever must wait (a durable database write, the registrar's
//! queries) runs in a spawned task that reports back on the [`CoreEvent`] channel.
//!
//! A request goes through RFC 3261 §16 in this order ([`Core::on_request`],
//! [`Core::route_request`]):
//!
//! 1. §16.3 step 1 and §8.2.2: reasonable syntax ([`crate::sip::validate`]) — a request that
//!    fails is answered 400 (505 for another SIP version) with a reason phrase naming the
//!    problem, before anything else, so it is never challenged.
//! 2. §18.2.1, RFC 3581: `received`/`rport` written into the client's Via.
//! 3. The transaction layer: a retransmission is answered from the transaction, the ACK of a
//!    non-2xx is absorbed, a CANCEL is answered and cancels the pending branches.
//! 4. §16.3 steps 3–4: Max-Forwards (483), loop detection (482); OPTIONS to the relay itself
//!    is answered here.
//! 5. §16.4: Route processing (our own Route entries removed; a strict router's damage undone).
//! 6. In-dialog requests follow their dialog ([`crate::relay::dialog`]); a REGISTER to our
//!    domain goes to the registrar; an initial INVITE is authenticated, its service looked up
//!    and forwarded ([`crate::relay::proxy`], §16.5–16.6).
//!
//! Responses are matched by the transaction layer (only from the address asked, only for our
//! own branches) and handed to the proxy's response context (§16.7).

use crate::clock::{Millis, SharedClock};
use crate::metrics::Metrics;
use crate::relay::auth::{AuthOutcome, Authenticator, ChallengeKind};
use crate::relay::dialog::Dialogs;
use crate::relay::directory::DirectoryCache;
use crate::relay::proxy::ProxyContext;
use crate::relay::registrar;
use crate::relay::routing::LocalIdentity;
use crate::relay::session_life::{Draining, LifeSettings};
use crate::relay::transaction::{Delivery, Engine, Expiry, Incoming, ServerKey};
use crate::sip::message::{self as msg, MessageError};
use crate::sip::transport::{Flow, Inbound, Transports};
use crate::sip::validate::validate_request;
use crate::store::{EndReason, Resumed, SessionWriter, Store};
use crate::tokens::TokenIssuer;
use rsipstack::sip::{Header, Method, Request, Response, SipMessage};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::time::DelayQueue;

/// What the relay accepts; every in-dialog request is relayed whatever its method.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, PRACK, REFER";

/// Results of work the core handed to other tasks.
#[derive(Debug)]
pub enum CoreEvent {
    /// A response for a server transaction, computed elsewhere (the registrar).
    Reply { key: ServerKey, response: Response },
    /// The end of a session is on disk (or the store gave up): the answer to its BYE moves.
    EndStored { key: ServerKey, response: Response },
    /// The confirmation of a dialog is on disk (`stored`), or could not be stored in time.
    ConfirmedDurably { dialog: String, stored: bool },
    /// Answer a server transaction with a status the relay makes itself, once work done
    /// elsewhere decided it (charges written, say).
    Answer {
        key: ServerKey,
        status: u16,
        reason: Option<String>,
    },
}

/// Settings the core needs.
pub struct CoreSettings {
    pub node_id: String,
    pub t1: Duration,
    /// Timer C: how long an INVITE branch may go without a provisional response.
    pub timer_c: Duration,
    /// The longest the relay waits for a session event that must be durable (the
    /// confirmation before its ACK, the end before the 200 for BYE).
    pub store_timeout: Duration,
    pub challenge: ChallengeKind,
    pub local: LocalIdentity,
    pub life: LifeSettings,
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
    /// Set when the node stops taking new sessions.
    pub draining: Draining,
    /// The number of live dialogs, published for a draining node to wait on.
    pub live: watch::Sender<usize>,
}

/// What a client transaction of the core is for.
#[derive(Debug, Clone)]
pub enum Role {
    /// Branch `index` of the request received in server transaction `key`.
    Branch { key: ServerKey, index: usize },
    /// A request the relay sends on its own account. Its final answer ends the dialog
    /// `closes` names (a BYE of the relay's); otherwise it needs nothing more.
    Own { closes: Option<String> },
}

/// Timers of the proxy and dialog layers (the transaction layer has its own).
#[derive(Debug, Clone)]
pub enum CoreTimer {
    /// Timer C of an INVITE branch, armed for the `generation`-th provisional response.
    TimerC { branch: String, generation: u32 },
    /// A response context the relay made without a server transaction (a transfer) is done.
    ForgetContext { key: String },
    /// The RFC 4028 session timer of a dialog (reset by every refresh).
    SessionTimer { dialog: String },
    /// A dialog's session reaches `[sessions] max_duration_secs`.
    MaxDuration { dialog: String },
    /// Time for the node's checkpoint of its live sessions.
    Checkpoint,
}

/// The relay core. Build it with [`Core::new`] and run it with [`Core::run`].
pub struct Core {
    pub(crate) settings: CoreSettings,
    pub(crate) parts: Parts,
    pub(crate) local: LocalIdentity,
    pub(crate) engine: Engine<Role>,
    /// The response context of every proxied request, by its server transaction.
    pub(crate) contexts: HashMap<ServerKey, ProxyContext>,
    pub(crate) dialogs: Dialogs,
    pub(crate) timers: DelayQueue<CoreTimer>,
    pub(crate) events_tx: mpsc::UnboundedSender<CoreEvent>,
    events_rx: mpsc::UnboundedReceiver<CoreEvent>,
    pub(crate) draining: Draining,
    live: watch::Sender<usize>,
    /// BYE answers waiting for their session's end to be stored.
    pub(crate) ends_in_flight: usize,
}

/// [`CoreParts`] without the transports (the transaction engine owns those).
pub(crate) struct Parts {
    pub directory: Arc<DirectoryCache>,
    pub auth: Authenticator,
    pub sessions: SessionWriter,
    pub store: Store,
    pub clock: SharedClock,
    pub tokens: TokenIssuer,
    pub metrics: Metrics,
}

impl Core {
    pub fn new(settings: CoreSettings, parts: CoreParts) -> Core {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let engine = Engine::new(parts.transports, parts.metrics.clone(), settings.t1);
        Core {
            local: settings.local.clone(),
            settings,
            parts: Parts {
                directory: parts.directory,
                auth: parts.auth,
                sessions: parts.sessions,
                store: parts.store,
                clock: parts.clock,
                tokens: parts.tokens,
                metrics: parts.metrics,
            },
            engine,
            contexts: HashMap::new(),
            dialogs: Dialogs::default(),
            timers: DelayQueue::new(),
            events_tx,
            events_rx,
            draining: parts.draining,
            live: parts.live,
            ends_in_flight: 0,
        }
    }

    /// Carries on with what a previous run left (`resumed`), then handles messages, events
    /// and timers until the inbound channel closes.
    pub async fn run(mut self, resumed: Resumed, mut inbound: mpsc::Receiver<Inbound>) {
        self.resume(resumed);
        self.checkpoint();
        loop {
            let live = self.dialogs.len() + self.ends_in_flight;
            self.live
                .send_if_modified(|n| std::mem::replace(n, live) != live);
            tokio::select! {
                biased;
                Some(timer) = std::future::poll_fn(|cx| self.engine.poll_timer(cx)) => {
                    self.on_engine_timer(timer)
                }
                Some(expired) = std::future::poll_fn(|cx| self.timers.poll_expired(cx)),
                    if !self.timers.is_empty() => self.on_core_timer(expired.into_inner()),
                Some(event) = self.events_rx.recv() => self.on_event(event),
                received = inbound.recv() => match received {
                    Some(m) => self.on_inbound(m),
                    None => return,
                },
            }
        }
    }

    pub(crate) fn now(&self) -> Millis {
        self.parts.clock.now_ms()
    }

    // ---------------------------------------------------------------- inbound

    fn on_inbound(&mut self, inbound: Inbound) {
        match msg::parse(&inbound.bytes) {
            Ok(SipMessage::Request(req)) => {
                self.parts.metrics.sip_request(&req.method.to_string());
                self.on_request(req, inbound.flow)
            }
            Ok(SipMessage::Response(resp)) => self.on_response(resp, inbound.flow),
            Err(failure) => match (failure.error, failure.parsed.map(|m| *m)) {
                (MessageError::Truncated { .. }, Some(SipMessage::Request(req))) => self
                    .engine
                    .reply_stateless(&req, inbound.flow, 400, "Truncated body"),
                (e, _) => tracing::debug!(
                    source = %inbound.flow.remote, error = %e, "dropping unparseable message"
                ),
            },
        }
    }

    /// Steps 1–3 of the module docs: validation, Via stamping, the transaction layer.
    pub(crate) fn on_request(&mut self, mut req: Request, flow: Flow) {
        if msg::top_via(&req.headers).is_none() {
            return; // cannot be answered: no Via to send a response to
        }
        if let Err(rejection) = validate_request(&req) {
            return self
                .engine
                .reply_stateless(&req, flow, rejection.status, rejection.reason);
        }
        stamp_top_via(&mut req, flow);
        match self.engine.on_request(req, flow) {
            None | Some(Incoming::Absorbed) => {}
            Some(Incoming::Ack(ack)) => self.on_ack(ack),
            Some(Incoming::Cancel { invite }) => self.cancel_request(&invite),
            Some(Incoming::New(key)) => self.route_request(key, flow),
        }
    }

    /// Steps 4–6 of the module docs, for a request with a new server transaction.
    fn route_request(&mut self, key: ServerKey, flow: Flow) {
        let Some(req) = self.engine.request(&key) else {
            return;
        };
        let method = req.method;
        let to_us = self.addressed_to_us(req);
        let has_route = req.headers.iter().any(|h| matches!(h, Header::Route(_)));
        let in_dialog = msg::to_tag(&req.headers).is_some();

        if method == Method::Options && to_us && !has_route && !in_dialog {
            let allow = Header::Allow(rsipstack::sip::Allow::new(ALLOW));
            return self.engine.respond_status(&key, 200, None, vec![allow]);
        }
        // A malformed Max-Forwards was refused by validation.
        if msg::max_forwards(&req.headers) == Some(Ok(0)) {
            return self.engine.respond_status(&key, 483, None, Vec::new());
        }
        if !in_dialog && self.local.is_loop(req) {
            return self.engine.respond_status(&key, 482, None, Vec::new());
        }
        if let Some(req) = self.engine.request_mut(&key) {
            self.local.preprocess_routes(req);
        }
        if in_dialog {
            return self.forward_in_dialog(key);
        }
        match method {
            Method::Register if to_us => self.on_register(key, flow),
            Method::Invite => self.on_initial_invite(key, flow),
            Method::Bye | Method::Info | Method::Update | Method::PRack => {
                self.engine.respond_status(&key, 481, None, Vec::new())
            }
            _ => {
                let allow = Header::Allow(rsipstack::sip::Allow::new(ALLOW));
                self.engine.respond_status(&key, 405, None, vec![allow])
            }
        }
    }

    fn addressed_to_us(&self, req: &Request) -> bool {
        req.uri.auth.is_none() && self.local.is_me(&req.uri)
            || req.method == Method::Register
                && req
                    .uri
                    .host_with_port
                    .host
                    .to_string()
                    .eq_ignore_ascii_case(&self.local.domain)
    }

    // ---------------------------------------------------------------- responses

    fn on_response(&mut self, resp: Response, flow: Flow) {
        match self.engine.on_response(resp, flow, &self.local) {
            Delivery::Dropped(reason) => {
                tracing::debug!(source = %flow.remote, reason = reason.as_str(), "response dropped");
                self.parts.metrics.sip_response_dropped(reason.as_str());
            }
            Delivery::Absorbed => {}
            Delivery::Provisional {
                owner: Role::Branch { key, index },
                response,
                ..
            } => self.on_provisional(&key, index, response),
            Delivery::Final {
                branch,
                owner: Role::Branch { key, index },
                response,
                repeated,
            } => self.on_final(&key, index, &branch, response, repeated),
            Delivery::Final {
                owner: Role::Own { closes },
                response,
                ..
            } => {
                let status = u16::from(response.status_code);
                if status >= 300 {
                    tracing::info!(status, "a request of the relay's own was refused");
                }
                if let Some(dialog) = closes {
                    self.close_dialog(&dialog, EndReason::Bye, None);
                }
            }
            Delivery::Provisional {
                owner: Role::Own { .. },
                ..
            } => {}
        }
    }

    // ---------------------------------------------------------------- authentication

    /// Returns the authenticated user, or answers the request and returns `None`.
    pub(crate) fn authenticate(
        &mut self,
        key: &ServerKey,
        kind: ChallengeKind,
        flow: Flow,
    ) -> Option<String> {
        let now = self.now();
        let snapshot = self.parts.directory.snapshot();
        let req = self.engine.request(key)?;
        let source = flow.remote.ip();
        match self
            .parts
            .auth
            .check(req, kind, &snapshot, &self.local, source, now)
        {
            AuthOutcome::Authenticated(user) => Some(user),
            AuthOutcome::Challenge { stale } => {
                let headers = self.parts.auth.challenge(kind, stale, source, now);
                self.engine
                    .respond_status(key, kind.status(), None, headers);
                None
            }
            AuthOutcome::Forbidden => {
                self.parts.metrics.sip_auth_failure();
                self.engine.respond_status(key, 403, None, Vec::new());
                None
            }
            AuthOutcome::Malformed => {
                self.engine
                    .respond_status(key, 400, Some("Malformed credentials"), Vec::new());
                None
            }
            AuthOutcome::Blocked { retry_after_secs } => {
                let retry = Header::RetryAfter(rsipstack::sip::RetryAfter::new(
                    retry_after_secs.to_string(),
                ));
                self.engine
                    .respond_status(key, 503, Some("Too many failed attempts"), vec![retry]);
                None
            }
        }
    }

    // ---------------------------------------------------------------- registrar

    fn on_register(&mut self, key: ServerKey, flow: Flow) {
        let Some(user) = self.authenticate(&key, ChallengeKind::Www, flow) else {
            return;
        };
        let (Some(req), Some(txn)) = (self.engine.request(&key), self.engine.server(&key)) else {
            return;
        };
        let req = req.clone();
        let to_tag = txn.to_tag.clone();
        let store = self.parts.store.clone();
        let events = self.events_tx.clone();
        let now = self.now();
        let domain = self.local.domain.clone();
        tokio::spawn(async move {
            let response = registrar::register(&store, &req, &user, &domain, &to_tag, now).await;
            let _ = events.send(CoreEvent::Reply { key, response });
        });
    }

    // ---------------------------------------------------------------- events and timers

    fn on_event(&mut self, event: CoreEvent) {
        match event {
            CoreEvent::Reply { key, response } => self.engine.respond(&key, response),
            CoreEvent::EndStored { key, response } => {
                self.ends_in_flight = self.ends_in_flight.saturating_sub(1);
                self.answer_upstream(&key, response)
            }
            CoreEvent::ConfirmedDurably { dialog, stored } => {
                self.on_confirmed_durably(&dialog, stored)
            }
            CoreEvent::Answer {
                key,
                status,
                reason,
            } => self
                .engine
                .respond_status(&key, status, reason.as_deref(), Vec::new()),
        }
    }

    fn on_engine_timer(&mut self, timer: crate::relay::transaction::Timer) {
        match self.engine.on_timer(timer) {
            Some(Expiry::NoAnswer {
                owner,
                status,
                wire,
                ..
            }) => self.on_no_answer(owner, status, &wire),
            Some(Expiry::ServerGone(key)) => {
                self.contexts.remove(&key);
            }
            None => {}
        }
    }

    fn on_core_timer(&mut self, timer: CoreTimer) {
        match timer {
            CoreTimer::TimerC { branch, generation } => self.on_timer_c(&branch, generation),
            CoreTimer::ForgetContext { key } => {
                self.contexts.remove(&key);
            }
            CoreTimer::SessionTimer { dialog } => self.on_session_timer(&dialog),
            CoreTimer::MaxDuration { dialog } => self.on_max_duration(&dialog),
            CoreTimer::Checkpoint => self.checkpoint(),
        }
    }
}

/// Writes `received`/`rport` into the top Via (RFC 3261 §18.2.1, RFC 3581).
fn stamp_top_via(req: &mut Request, flow: Flow) {
    if let Some(Header::Via(v)) = req.headers.iter_mut().find(|h| matches!(h, Header::Via(_))) {
        let stamped = msg::stamp_via(v.value(), flow.remote);
        *v = rsipstack::sip::Via::new(stamped);
    }
}
