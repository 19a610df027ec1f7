//! Proxying (RFC 3261 §16.5–§16.7): forwarding an INVITE for a service to its application
//! servers, one branch and one session each, and turning their answers into the one answer
//! the caller gets.
//!
//! - Each branch carries a session token minted for its application server and opens a
//!   session row (`trying`). The service's fork mode says whether the branches go out all at
//!   once (first answer wins, or all answers) or one at a time (serial); serial branches get
//!   their token and session only when they are tried.
//! - Provisional responses (101–199) are relayed and restart the branch's Timer C (§16.7
//!   step 2); one with a To tag opens an early dialog.
//! - Every 2xx is relayed at once, with the token and URL handed over (decision 0004), and
//!   opens its dialog; a retransmitted 2xx is handed over the same way. In first-answer mode
//!   the other branches are CANCELled.
//! - Non-2xx finals are kept; when every branch has one (or a 6xx arrives), the best is
//!   relayed ([`best_response`]).
//! - A 2xx that arrives after the relay gave up on its branch (Timer B/C, CANCEL) is still
//!   relayed while the caller can take it; once the caller has its final answer, the relay
//!   ACKs that 2xx and ends it with a BYE toward the application server itself.
//!
//! The same machinery serves the sessions the relay opens itself for a transfer
//! ([`Purpose::Transfer`], see [`crate::relay::transfer`]): there the answers go into
//! NOTIFYs instead of responses, and the relay ACKs the 2xx it gets.

use crate::relay::core::{Core, CoreTimer, Role};
use crate::relay::dialog::{
    callee_hop, contact_uri, downstream_routes, set_cseq, CallerSide, DialogOrigin, DialogState,
    PendingChange,
};
use crate::relay::directory::{Route, Target};
use crate::relay::handover::{self, BranchToken};
use crate::relay::routing;
use crate::relay::transaction::{CancelState, Outgoing, ServerKey};
use crate::sip::builders::{self, DialogRequest};
use crate::sip::message::{self as msg, ToWire};
use crate::sip::transport::Flow;
use crate::store::{EndReason, ForkMode, SessionEvent};
use bytes::Bytes;
use rsipstack::sip::{Header, Method, Request, Response, Uri};
use std::collections::VecDeque;

/// What a proxied request is for.
#[derive(Debug, Clone)]
pub enum Purpose {
    /// A client's INVITE for a service: each branch is a session of `user`.
    NewSession {
        user: String,
        caller: CallerSide,
        /// The INVITE's Contact URI.
        caller_target: Option<String>,
        invite_cseq: u32,
    },
    /// An INVITE the relay sends on `user`'s behalf, who asked for it with a REFER inside
    /// `refer_dialog`: the answers become NOTIFYs there.
    Transfer { user: String, refer_dialog: String },
    /// A request inside a dialog (its key).
    InDialog { dialog: String },
}

/// The session a branch of an INVITE for a service carries.
#[derive(Debug, Clone)]
pub struct BranchSession {
    pub session_id: String,
    pub token: BranchToken,
    /// Where the INVITE went.
    pub flow: Flow,
}

/// One forwarded copy of a request, as far as the proxy is concerned.
#[derive(Debug, Clone)]
pub struct BranchInfo {
    pub branch: String,
    /// The final answer this branch gave, or the one the relay gave in its place (408 at
    /// Timer C, 487 after a CANCEL nobody answered).
    pub final_status: Option<u16>,
    pub session: Option<BranchSession>,
    /// Bumped by every provisional response; a Timer C armed for an older value is stale.
    pub timer_c: u32,
    /// Early dialogs this branch opened.
    pub early_dialogs: Vec<String>,
}

impl BranchInfo {
    fn new(branch: String, session: Option<BranchSession>) -> BranchInfo {
        BranchInfo {
            branch,
            final_status: None,
            session,
            timer_c: 0,
            early_dialogs: Vec::new(),
        }
    }
}

/// What it takes to start more branches of an INVITE for a service (all of them at once, or
/// the next one when serial forking moves on).
pub struct ForwardPlan {
    /// The request as forwarded, without our Via, Record-Route and token.
    pub template: Request,
    pub user: String,
    /// The user's id (empty if the directory no longer has them).
    pub user_id: String,
    /// `name@domain`, lowercase.
    pub service: String,
    pub call_id: String,
    pub loop_hash: String,
    /// Where the INVITE came from; `None` for one the relay sends itself (no Record-Route).
    pub inbound: Option<Flow>,
    /// Application servers not tried yet, in order.
    pub remaining: VecDeque<Target>,
}

/// The response context of one proxied request (RFC 3261 §16.7).
pub struct ProxyContext {
    pub purpose: Purpose,
    pub mode: ForkMode,
    /// Kept while branches may still be started (serial forking).
    pub plan: Option<ForwardPlan>,
    pub branches: Vec<BranchInfo>,
    /// The best non-2xx final response so far.
    pub best: Option<Response>,
    /// Every challenge of every 401/407 received, to hand on together (§16.7 step 7).
    pub challenges: Vec<Header>,
    /// A final answer (or a 2xx) has been given upstream.
    pub answered: bool,
    /// The client CANCELled the request.
    pub cancelled: bool,
    /// In-dialog: how far the relay shifted the request's CSeq (undone on the responses).
    pub cseq_shift: u32,
    /// In-dialog: the change (re-INVITE, UPDATE) this request asks for.
    pub change: Option<PendingChange>,
}

impl ProxyContext {
    fn new(purpose: Purpose, mode: ForkMode, plan: Option<ForwardPlan>) -> ProxyContext {
        ProxyContext {
            purpose,
            mode,
            plan,
            branches: Vec::new(),
            best: None,
            challenges: Vec::new(),
            answered: false,
            cancelled: false,
            cseq_shift: 0,
            change: None,
        }
    }

    pub fn in_dialog(dialog: String, branch: String) -> ProxyContext {
        let mut ctx = ProxyContext::new(Purpose::InDialog { dialog }, ForkMode::FirstAnswer, None);
        ctx.branches.push(BranchInfo::new(branch, None));
        ctx
    }
}

/// Orders final responses as RFC 3261 §16.7 step 6 asks: any 6xx, else the lowest class,
/// preferring 401/407 within 4xx (so challenges reach the client) and 503 last within 5xx.
/// The lowest rank wins.
pub fn response_rank(status: u16) -> (u8, u16) {
    match status {
        600..=699 => (0, status),
        300..=399 => (1, status),
        401 | 407 => (2, status),
        400..=499 => (3, status),
        503 => (5, status),
        500..=599 => (4, status),
        _ => (6, status),
    }
}

/// The response the caller gets when every branch failed (RFC 3261 §16.7 steps 6–7): every
/// challenge received goes with a 401/407, so the caller can answer them all; a 503 from an
/// application server becomes 500, because the relay itself is not unavailable and a 503
/// would make the caller's next hop treat it so.
fn best_response(mut best: Response, challenges: Vec<Header>) -> Response {
    match u16::from(best.status_code.clone()) {
        401 | 407 => {
            best.headers.retain(|h| {
                !matches!(h, Header::WwwAuthenticate(_) | Header::ProxyAuthenticate(_))
            });
            for challenge in challenges {
                msg::push_header(&mut best.headers, challenge);
            }
        }
        503 => {
            best.status_code = rsipstack::sip::StatusCode::from(500);
            best.wire_reason = None;
            best.headers.retain(|h| !matches!(h, Header::RetryAfter(_)));
        }
        _ => {}
    }
    best
}

/// Decrements Max-Forwards (adding 70 when absent) and drops any session-token header a
/// client sent: only the relay puts one there.
pub fn prepare_forward(req: &mut Request) {
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

impl Core {
    // ---------------------------------------------------------------- §16.5, §16.6

    /// An authenticated caller's INVITE for a service: branches to its application servers
    /// as the service's fork mode says (all at once, or one at a time).
    pub(crate) fn on_initial_invite(&mut self, key: ServerKey, flow: Flow) {
        if !self.admit_invite(&key) {
            return;
        }
        let Some(user) = self.authenticate(&key, self.settings.challenge, flow) else {
            return;
        };
        let Some(req) = self.engine.request(&key) else {
            return;
        };
        let service = req.uri.clone();
        let route = match self.route_of(&service) {
            Ok(route) => route,
            Err((status, why)) => return self.engine.respond_status(&key, status, why, Vec::new()),
        };
        let mut template = req.clone();
        prepare_forward(&mut template);
        template
            .headers
            .retain(|h| !matches!(h, Header::ProxyAuthorization(_) | Header::Authorization(_)));
        let purpose = Purpose::NewSession {
            user: user.clone(),
            caller: CallerSide::Client {
                flow,
                contact: contact_uri(&req.headers)
                    .and_then(|c| Uri::try_from(c.as_str()).ok())
                    .as_ref()
                    .and_then(routing::uri_hop)
                    .map(|h| Flow {
                        protocol: h.protocol,
                        remote: h.addr,
                        local: flow.local,
                    }),
            },
            caller_target: contact_uri(&req.headers),
            invite_cseq: msg::cseq(&req.headers).map_or(1, |(n, _)| n),
        };
        if !self.fork(&key, purpose, route, template, user, Some(flow)) {
            self.engine
                .respond_status(&key, 500, Some("Cannot issue a session token"), Vec::new());
        }
    }

    /// The application servers of the service a Request-URI names, or the status (and
    /// reason) to refuse it with: 404 for no such service, 503 when none can be reached.
    pub(crate) fn route_of(&self, uri: &Uri) -> Result<Route, (u16, Option<&'static str>)> {
        let name = uri
            .auth
            .as_ref()
            .map(|a| a.user.clone())
            .unwrap_or_default();
        let domain = uri.host_with_port.host.to_string();
        match self.parts.directory.snapshot().service(&name, &domain) {
            Some(r) if !r.targets.is_empty() => Ok(r.clone()),
            Some(_) => Err((503, Some("No application server reachable"))),
            None => Err((404, None)),
        }
    }

    /// Opens the response context `key` for `purpose` and starts its branches (all, or the
    /// first for serial forking). False when none could be started.
    pub(crate) fn fork(
        &mut self,
        key: &str,
        purpose: Purpose,
        route: Route,
        template: Request,
        user: String,
        inbound: Option<Flow>,
    ) -> bool {
        let uri = &template.uri;
        let service = format!(
            "{}@{}",
            uri.auth
                .as_ref()
                .map(|a| a.user.as_str())
                .unwrap_or_default(),
            uri.host_with_port.host
        )
        .to_ascii_lowercase();
        let user_id = self
            .parts
            .directory
            .snapshot()
            .users
            .get(&user)
            .map(|u| u.id.clone())
            .unwrap_or_default();
        let plan = ForwardPlan {
            user_id,
            loop_hash: routing::loop_hash(&template),
            call_id: msg::call_id(&template.headers)
                .unwrap_or_default()
                .to_string(),
            template,
            user,
            service,
            inbound,
            remaining: route.targets.into(),
        };
        let serial = route.fork_mode == ForkMode::Serial;
        self.contexts.insert(
            key.to_string(),
            ProxyContext::new(purpose, route.fork_mode, Some(plan)),
        );
        let mut started = false;
        while self.start_next_branch(key) {
            started = true;
            if serial {
                break;
            }
        }
        if !serial {
            // Every branch is out; nothing more to start from the plan.
            if let Some(ctx) = self.contexts.get_mut(key) {
                ctx.plan = None;
            }
        }
        started
    }

    /// Starts a branch to the next application server of the plan: a session row, a token
    /// for that server, the request, its timers. False when there is none left (or no token
    /// could be minted).
    fn start_next_branch(&mut self, key: &str) -> bool {
        let now = self.now();
        let Some(target) = self
            .contexts
            .get_mut(key)
            .and_then(|c| c.plan.as_mut())
            .and_then(|p| p.remaining.pop_front())
        else {
            return false;
        };
        let ctx = &self.contexts[key];
        let plan = ctx.plan.as_ref().expect("popped from it above");
        let index = ctx.branches.len();
        let branch = self.local.new_branch(&plan.loop_hash);
        let session_id = crate::store::time_ordered_uuid(now).to_string();
        let token =
            match self
                .parts
                .tokens
                .mint(&plan.user, &target.id, &session_id, &plan.service, now)
            {
                Ok((jwt, claims)) => BranchToken {
                    jwt,
                    expires_at_ms: claims.expires_at_ms(),
                },
                Err(e) => {
                    tracing::error!(error = %e, "cannot mint a session token");
                    return false;
                }
            };
        let out_flow = self
            .engine
            .transports()
            .flow_to(target.protocol, target.addr);
        let wire = self.branch_request(&plan.template, plan.inbound, &target, &branch, &token.jwt);
        let created = SessionEvent::Created {
            id: session_id.clone(),
            call_id: plan.call_id.clone(),
            caller: plan.user.clone(),
            user_id: plan.user_id.clone(),
            service: plan.service.clone(),
            service_id: target.service_id.clone(),
            app_server: target.name.clone(),
            app_server_id: target.id.clone(),
            node: self.settings.node_id.clone(),
            at: now,
        };
        self.parts.sessions.record(created);
        if let Some(ctx) = self.contexts.get_mut(key) {
            ctx.branches.push(BranchInfo::new(
                branch.clone(),
                Some(BranchSession {
                    session_id,
                    token,
                    flow: out_flow,
                }),
            ));
        }
        self.engine.send(Outgoing {
            branch: branch.clone(),
            method: Method::Invite,
            wire,
            flow: out_flow,
            also_from: target
                .sources
                .iter()
                .copied()
                .filter(|a| *a != target.addr)
                .collect(),
            owner: Role::Branch {
                key: key.to_string(),
                index,
            },
        });
        self.arm_timer_c(&branch, 0);
        true
    }

    /// Serialises the forwarded request for one target: its Request-URI, our Via and
    /// Record-Route on top and the branch's session token, written straight to bytes (no copy
    /// of the parsed request).
    fn branch_request(
        &self,
        forwarded: &Request,
        inbound: Option<Flow>,
        target: &Target,
        branch: &str,
        jwt: &str,
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
            self.local.via(target.protocol, branch)
        );
        // Our Record-Route goes on top of any other, after the Vias (some user agents
        // expect a message's Via lines to stand together).
        let mut routes_written = inbound.is_none();
        for h in forwarded.headers.iter() {
            if !routes_written && !matches!(h, Header::Via(_)) {
                if let Some(inbound) = inbound {
                    for rr in self.local.record_routes(inbound.protocol, target.protocol) {
                        let _ = write!(head, "Record-Route: {rr}\r\n");
                    }
                }
                routes_written = true;
            }
            let _ = write!(head, "{h}\r\n");
        }
        let _ = write!(head, "{}: {jwt}\r\n\r\n", handover::TOKEN_HEADER);
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&forwarded.body);
        Bytes::from(bytes)
    }

    pub(crate) fn arm_timer_c(&mut self, branch: &str, generation: u32) {
        self.timers.insert(
            CoreTimer::TimerC {
                branch: branch.to_string(),
                generation,
            },
            self.settings.timer_c,
        );
    }

    fn context_branch(&mut self, key: &str, index: usize) -> Option<&mut BranchInfo> {
        self.contexts.get_mut(key)?.branches.get_mut(index)
    }

    // ---------------------------------------------------------------- CANCEL, Timer C

    /// The caller CANCELled its INVITE: every branch without a final answer is CANCELled.
    pub(crate) fn cancel_request(&mut self, invite: &str) {
        let Some(ctx) = self.contexts.get_mut(invite) else {
            return;
        };
        if ctx.answered {
            return;
        }
        ctx.cancelled = true;
        let pending: Vec<String> = ctx
            .branches
            .iter()
            .filter(|b| b.final_status.is_none())
            .map(|b| b.branch.clone())
            .collect();
        for branch in pending {
            self.engine.cancel(&branch);
        }
    }

    /// Timer C fired: a branch rang too long without news. CANCEL it and answer in its place.
    pub(crate) fn on_timer_c(&mut self, branch: &str, generation: u32) {
        let Some(txn) = self.engine.client(branch) else {
            return;
        };
        let Role::Branch { key, index } = txn.owner.clone() else {
            return;
        };
        let wire = txn.wire.clone();
        let current = self
            .context_branch(&key, index)
            .is_some_and(|b| b.final_status.is_none() && b.timer_c == generation);
        if !current {
            return;
        }
        self.engine.cancel(branch);
        self.answer_in_place(&key, index, &wire, 408);
    }

    /// The transaction layer gave up on a branch: act as if it answered `status`.
    pub(crate) fn on_no_answer(&mut self, role: Role, status: u16, wire: &[u8]) {
        if let Role::Branch { key, index } = role {
            self.answer_in_place(&key, index, wire, status);
        }
    }

    /// Fails branch `index` with a `status` the relay makes up in its place.
    fn answer_in_place(&mut self, key: &str, index: usize, wire: &[u8], status: u16) {
        let to_tag = self
            .engine
            .server(key)
            .map(|t| t.to_tag.clone())
            .unwrap_or_else(|| "tollgate".into());
        if let Some(resp) = builders::synthetic_response(wire, status, &to_tag) {
            self.branch_failed(key, index, resp);
        }
    }

    // ---------------------------------------------------------------- §16.7

    /// Gives a response to the client of request `key`, in-dialog CSeq shift undone.
    pub(crate) fn answer_upstream(&mut self, key: &str, mut resp: Response) {
        let shift = self.contexts.get(key).map_or(0, |c| c.cseq_shift);
        if shift > 0 {
            let n = msg::cseq(&resp.headers).map_or(0, |(n, _)| n);
            set_cseq(&mut resp.headers, n.saturating_sub(shift));
        }
        self.engine.respond(key, resp);
    }

    /// The dialog an answer to a branch of `purpose` opens, or moves on.
    fn open_dialog(
        &mut self,
        purpose: &Purpose,
        session: BranchSession,
        resp: &Response,
        state: DialogState,
    ) -> Option<String> {
        let origin = match purpose {
            Purpose::NewSession {
                user,
                caller,
                caller_target,
                invite_cseq,
            } => DialogOrigin {
                session_id: session.session_id,
                user: user.clone(),
                callee_flow: session.flow,
                caller: caller.clone(),
                caller_target: caller_target.clone(),
                invite_cseq: *invite_cseq,
            },
            Purpose::Transfer { user, .. } => DialogOrigin {
                session_id: session.session_id,
                user: user.clone(),
                callee_flow: session.flow,
                caller: CallerSide::Relay,
                caller_target: None,
                invite_cseq: msg::cseq(&resp.headers).map_or(1, |(n, _)| n),
            },
            Purpose::InDialog { .. } => return None,
        };
        let local = self.local.clone();
        self.dialogs.open(resp, origin, state, &local)
    }

    /// A provisional response (101–199) on a branch.
    pub(crate) fn on_provisional(&mut self, key: &str, index: usize, mut resp: Response) {
        let Some(ctx) = self.contexts.get_mut(key) else {
            return;
        };
        let answered = ctx.answered;
        let purpose = ctx.purpose.clone();
        let Some(b) = ctx.branches.get_mut(index) else {
            return;
        };
        if b.final_status.is_some() {
            return;
        }
        b.timer_c += 1;
        let (branch, generation) = (b.branch.clone(), b.timer_c);
        let session = b.session.clone();
        msg::pop_top_via(&mut resp.headers);
        self.arm_timer_c(&branch, generation);
        match (&purpose, session) {
            (Purpose::NewSession { .. }, Some(s)) if msg::to_tag(&resp.headers).is_some() => {
                if let Some(dk) = self.open_dialog(&purpose, s, &resp, DialogState::Early) {
                    if let Some(b) = self.context_branch(key, index) {
                        if !b.early_dialogs.contains(&dk) {
                            b.early_dialogs.push(dk);
                        }
                    }
                }
            }
            (Purpose::Transfer { refer_dialog, .. }, _) => {
                if !answered {
                    let status = u16::from(resp.status_code.clone());
                    self.notify_transfer(refer_dialog, &status_line(status), false);
                }
                return;
            }
            _ => {}
        }
        if !answered {
            self.answer_upstream(key, resp);
        }
    }

    /// A final response on `branch` of the request `key` (`repeated` for a retransmitted
    /// 2xx).
    pub(crate) fn on_final(
        &mut self,
        key: &str,
        index: usize,
        branch: &str,
        mut resp: Response,
        repeated: bool,
    ) {
        let status = u16::from(resp.status_code.clone());
        msg::pop_top_via(&mut resp.headers);
        if (200..300).contains(&status) {
            self.on_success(key, index, branch, resp, repeated);
        } else if !repeated {
            self.branch_failed(key, index, resp);
        }
    }

    /// A 2xx on a branch: relayed while the caller can take it — also after the caller got a
    /// failure (§16.7 step 10: every 2xx is forwarded) — else (the caller's transaction is
    /// gone) accepted and ended by the relay.
    fn on_success(
        &mut self,
        key: &str,
        index: usize,
        branch: &str,
        mut resp: Response,
        repeated: bool,
    ) {
        // Whatever the caller was told, while its transaction is known a 2xx still reaches it.
        let server_can_take = self.engine.server(key).is_some();
        let Some(ctx) = self.contexts.get_mut(key) else {
            if !repeated {
                self.end_unwanted_answer(branch, &resp);
            }
            return;
        };
        let purpose = ctx.purpose.clone();
        // A transfer's first 2xx is the session; the relay, as its user agent, takes one.
        let can_take = match purpose {
            Purpose::Transfer { .. } => !ctx.answered || repeated,
            _ => server_can_take,
        };
        let Some(b) = ctx.branches.get_mut(index).filter(|_| can_take) else {
            if !repeated {
                self.end_unwanted_answer(branch, &resp);
            }
            return;
        };
        let gave_up = b.final_status.is_some_and(|s| s >= 300);
        b.final_status = Some(u16::from(resp.status_code.clone()));
        let session = b.session.clone();
        ctx.answered = true;
        // First answer wins: the others are CANCELled. All answers: they go on. Serial: no
        // further server is tried.
        ctx.plan = None;
        let others: Vec<String> = match ctx.mode {
            ForkMode::AllAnswers => Vec::new(),
            _ => ctx
                .branches
                .iter()
                .filter(|o| o.final_status.is_none())
                .map(|o| o.branch.clone())
                .collect(),
        };
        let change = ctx.change.take();
        if let Some(s) = &session {
            handover::hand_over(&mut resp, &s.token, &s.session_id);
        }
        if gave_up {
            tracing::info!(%branch, "a 2xx came after its branch was given up");
        }
        match (&purpose, session) {
            (Purpose::NewSession { .. }, Some(s)) => {
                if !repeated {
                    self.open_dialog(&purpose, s, &resp, DialogState::Answered);
                    for branch in others {
                        self.engine.cancel(&branch);
                    }
                }
                self.answer_upstream(key, resp);
            }
            (Purpose::Transfer { refer_dialog, .. }, Some(s)) => {
                let refer_dialog = refer_dialog.clone();
                if repeated {
                    // Our ACK was lost: the application server asks again.
                    if let Some((ack, dest)) = self.own_ack(branch, &resp) {
                        self.engine.send_stateless(dest, ack);
                    }
                    return;
                }
                let Some(dk) = self.open_dialog(&purpose, s, &resp, DialogState::Answered) else {
                    return;
                };
                if let Some((ack, dest)) = self.own_ack(branch, &resp) {
                    self.confirm_or_send_ack(&dk, ack, dest);
                }
                for branch in others {
                    self.engine.cancel(&branch);
                }
                self.arm_forget_context(key);
                let status = u16::from(resp.status_code.clone());
                self.notify_transfer(&refer_dialog, &answer_fragment(status, &resp), true);
            }
            (Purpose::InDialog { dialog }, _) => {
                let dialog = dialog.clone();
                if !repeated {
                    if let Some(change) = change {
                        let status = u16::from(resp.status_code.clone());
                        self.change_answered(&dialog, change, status);
                        self.session_refreshed(&dialog, &resp);
                    }
                    if msg::cseq(&resp.headers).is_some_and(|(_, m)| m.eq_ignore_ascii_case("BYE"))
                    {
                        let caller_ended = self.dialogs.get(&dialog).filter(|d| {
                            d.state == DialogState::Ending(crate::store::Party::Caller)
                        });
                        if let Some(session_id) = caller_ended.map(|d| d.info.session_id.clone()) {
                            self.charges_in_bye_answer(&session_id, &resp.headers, &resp.body);
                        }
                        return self.close_dialog(
                            &dialog,
                            EndReason::Bye,
                            Some((key.to_string(), resp)),
                        );
                    }
                }
                self.answer_upstream(key, resp);
            }
            _ => self.answer_upstream(key, resp),
        }
    }

    /// The ACK the relay itself sends for the 2xx `resp` to the INVITE of `branch`
    /// (RFC 3261 §13.2.2.4), and where it goes.
    fn own_ack(&self, branch: &str, resp: &Response) -> Option<(Bytes, Flow)> {
        let txn = self.engine.client(branch).filter(|t| t.is_invite())?;
        let Ok(rsipstack::sip::SipMessage::Request(invite)) = msg::parse(&txn.wire) else {
            return None;
        };
        let local = self.local.clone();
        let dest = callee_hop(resp, &local)
            .map(|hop| Flow {
                protocol: hop.protocol,
                remote: hop.addr,
                local: txn.flow.local,
            })
            .unwrap_or(txn.flow);
        let target = contact_uri(&resp.headers)
            .and_then(|c| Uri::try_from(c.as_str()).ok())
            .unwrap_or_else(|| invite.uri.clone());
        let routes = downstream_routes(resp, &local);
        let (cseq, _) = msg::cseq(&invite.headers)?;
        let via = local.via(
            dest.protocol,
            &local.new_branch(&routing::loop_hash(&invite)),
        );
        let ack = DialogRequest {
            method: Method::Ack,
            target: &target,
            via: &via,
            from: msg::from_value(&invite.headers)?,
            to: msg::to_value(&resp.headers)?,
            call_id: msg::call_id(&invite.headers)?,
            cseq,
            routes: &routes,
            extra: Vec::new(),
            body: None,
        };
        Some((ack.to_bytes(), dest))
    }

    /// A 2xx nobody can take (the caller already has its final answer): the relay ACKs it
    /// and ends the dialog with a BYE toward the application server.
    fn end_unwanted_answer(&mut self, branch: &str, resp: &Response) {
        let Some((ack, dest)) = self.own_ack(branch, resp) else {
            return;
        };
        self.engine.send_stateless(dest, ack.clone());
        let Ok(rsipstack::sip::SipMessage::Request(mut bye)) = msg::parse(&ack) else {
            return;
        };
        bye.method = Method::Bye;
        let cseq = msg::cseq(&bye.headers).map_or(1, |(n, _)| n + 1);
        for h in bye.headers.iter_mut() {
            if let Header::CSeq(v) = h {
                *v = rsipstack::sip::CSeq::new(format!("{cseq} BYE"));
            }
        }
        let bye_branch = self.local.new_branch(&routing::loop_hash(&bye));
        msg::pop_top_via(&mut bye.headers);
        bye.headers.0.insert(
            0,
            Header::Via(rsipstack::sip::Via::new(
                self.local.via(dest.protocol, &bye_branch),
            )),
        );
        msg::push_header(
            &mut bye.headers,
            Header::Other(
                "Reason".into(),
                "SIP;cause=487;text=\"the caller already has its answer\"".into(),
            ),
        );
        tracing::info!(%branch, "ending a 2xx that came after the caller was answered");
        self.engine.send(Outgoing {
            branch: bye_branch,
            method: Method::Bye,
            wire: Bytes::from(bye.to_wire()),
            flow: dest,
            also_from: Vec::new(),
            owner: Role::Own { closes: None },
        });
    }

    /// A relay-made response context (a transfer) has no server transaction to time it
    /// out: it is forgotten a while after its answer, once 2xx retransmissions have stopped.
    fn arm_forget_context(&mut self, key: &str) {
        if self.engine.server(key).is_none() {
            self.timers.insert(
                CoreTimer::ForgetContext {
                    key: key.to_string(),
                },
                64 * self.settings.t1,
            );
        }
    }

    /// Records a non-2xx final (real or made up) on a branch and answers the client when every
    /// branch has one.
    pub(crate) fn branch_failed(&mut self, key: &str, index: usize, resp: Response) {
        let now = self.now();
        let Some(ctx) = self.contexts.get_mut(key) else {
            return;
        };
        let status = u16::from(resp.status_code.clone());
        let cancelled = ctx.cancelled;
        let Some(branch) = ctx.branches.get_mut(index) else {
            return;
        };
        if branch.final_status.is_some() {
            return;
        }
        branch.final_status = Some(status);
        let early = std::mem::take(&mut branch.early_dialogs);
        let cancel_sent = self
            .engine
            .client(&branch.branch)
            .is_some_and(|t| t.cancel != CancelState::NotRequested);
        if let Some(s) = &branch.session {
            let id = s.session_id.clone();
            let event = if cancelled || cancel_sent && status == 487 {
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
        if status == 401 || status == 407 {
            ctx.challenges.extend(
                resp.headers
                    .iter()
                    .filter(|h| {
                        matches!(h, Header::WwwAuthenticate(_) | Header::ProxyAuthenticate(_))
                    })
                    .cloned(),
            );
        }
        let better = ctx.best.as_ref().is_none_or(|b| {
            response_rank(status) < response_rank(u16::from(b.status_code.clone()))
        });
        if better {
            ctx.best = Some(resp);
        }
        let six_hundred = (600..700).contains(&status);
        let all_final = ctx.branches.iter().all(|b| b.final_status.is_some());
        let try_next = ctx.mode == ForkMode::Serial && !cancelled && !ctx.answered && !six_hundred;
        for dk in early {
            if self
                .dialogs
                .get(&dk)
                .is_some_and(|d| d.state == DialogState::Early)
            {
                self.forget_dialog(&dk);
            }
        }
        // Serial forking: the next application server, while there is one.
        if try_next && self.start_next_branch(key) {
            return;
        }
        let ctx = self.contexts.get_mut(key).expect("checked above");
        if ctx.answered || !(all_final || six_hundred) {
            return;
        }
        ctx.answered = true;
        ctx.plan = None;
        let purpose = ctx.purpose.clone();
        let change = ctx.change.take();
        let challenges = std::mem::take(&mut ctx.challenges);
        let best = best_response(ctx.best.take().expect("set above"), challenges);
        let pending: Vec<String> = ctx
            .branches
            .iter()
            .filter(|b| b.final_status.is_none())
            .map(|b| b.branch.clone())
            .collect();
        let best_status = u16::from(best.status_code.clone());
        for branch in pending {
            self.engine.cancel(&branch);
        }
        match purpose {
            Purpose::Transfer { refer_dialog, .. } => {
                self.arm_forget_context(key);
                self.notify_transfer(&refer_dialog, &status_line(best_status), true);
            }
            Purpose::InDialog { dialog } => {
                if let Some(change) = change {
                    self.change_answered(&dialog, change, best_status);
                }
                if self.dialog_is_ending(&dialog) {
                    self.close_dialog(&dialog, EndReason::Bye, Some((key.to_string(), best)));
                } else if best_status == 481 || best_status == 408 {
                    self.answer_upstream(key, best);
                    self.close_dialog(&dialog, EndReason::DialogLost, None);
                } else {
                    self.answer_upstream(key, best);
                }
            }
            Purpose::NewSession { .. } => self.answer_upstream(key, best),
        }
    }
}

/// `SIP/2.0 <status> <reason>`: a response's status line, for a `message/sipfrag` body.
pub fn status_line(status: u16) -> String {
    let code = rsipstack::sip::StatusCode::from(status);
    format!("SIP/2.0 {status} {}\r\n", code.text())
}

/// The `message/sipfrag` of a 2xx a transfer got: its status line, its dialog's identifiers
/// (so the user can end that session with a BYE), and the body handed over to the user (the
/// URL and the new token).
fn answer_fragment(status: u16, resp: &Response) -> String {
    let mut fragment = status_line(status);
    for h in resp.headers.iter() {
        if matches!(
            h,
            Header::From(_) | Header::To(_) | Header::CallId(_) | Header::CSeq(_)
        ) || matches!(h, Header::Other(name, _) if name.eq_ignore_ascii_case(handover::SESSION_HEADER))
        {
            fragment.push_str(&format!("{h}\r\n"));
        }
    }
    if !resp.body.is_empty() {
        if let Some(ct) = resp.headers.iter().find_map(|h| match h {
            Header::ContentType(c) => Some(c.value().to_string()),
            _ => None,
        }) {
            fragment.push_str(&format!("Content-Type: {ct}\r\n"));
        }
    }
    fragment.push_str(&format!("Content-Length: {}\r\n\r\n", resp.body.len()));
    fragment.push_str(&String::from_utf8_lossy(&resp.body));
    fragment
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_hundreds_beat_everything_and_503_loses_to_other_5xx() {
        let mut v = vec![503, 486, 603, 500];
        v.sort_by_key(|s| response_rank(*s));
        assert_eq!(v, vec![603, 486, 500, 503]);
        let mut w = vec![404, 407, 302];
        w.sort_by_key(|s| response_rank(*s));
        assert_eq!(w, vec![302, 407, 404], "a challenge beats other 4xx");
    }

    #[test]
    fn status_lines_for_sipfrag() {
        assert_eq!(status_line(100), "SIP/2.0 100 Trying\r\n");
        assert_eq!(status_line(404), "SIP/2.0 404 Not Found\r\n");
    }
}
