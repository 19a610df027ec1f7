//! Proxying (RFC 3261 §16.5–§16.7): forwarding an initial INVITE to the application servers
//! of its service, one branch and one session each, and turning their answers into the one
//! answer the caller gets.
//!
//! - Each branch carries a session token minted for its application server and opens a
//!   session row (`trying`).
//! - Provisional responses (101–199) are relayed and restart the branch's Timer C (§16.7
//!   step 2); one with a To tag opens an early dialog.
//! - Every 2xx is relayed at once, with the token and URL handed over (decision 0004), and
//!   opens its dialog; a retransmitted 2xx is handed over the same way. The other branches
//!   are CANCELled.
//! - Non-2xx finals are kept; when every branch has one (or a 6xx arrives), the best is
//!   relayed (§16.7 step 6).
//! - A 2xx that arrives after the relay gave up on its branch (Timer B/C, CANCEL) is still
//!   relayed while the caller can take it; once the caller has its final answer, the relay
//!   ACKs that 2xx and ends it with a BYE toward the application server itself.

use crate::relay::core::{Core, CoreTimer, Role};
use crate::relay::dialog::{callee_hop, downstream_routes, DialogOrigin, DialogState};
use crate::relay::directory::Target;
use crate::relay::handover::{self, BranchToken};
use crate::relay::routing;
use crate::relay::transaction::{CancelState, Outgoing, ServerKey, ServerState};
use crate::sip::builders::{self, DialogRequest};
use crate::sip::message as msg;
use crate::sip::transport::Flow;
use crate::store::{ForkMode, SessionEvent};
use bytes::Bytes;
use rsipstack::sip::{Header, Method, Request, Response, Uri};
use std::collections::VecDeque;

/// What a proxied request is for.
#[derive(Debug, Clone)]
pub enum Purpose {
    /// An initial INVITE for a service: each branch is a session.
    NewSession {
        caller_flow: Flow,
        caller_contact: Option<Uri>,
    },
    /// A request inside a dialog (its key).
    InDialog { dialog: String },
}

/// The session a branch of an initial INVITE carries.
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

/// What it takes to start more branches of an initial INVITE (all of them at once, or the
/// next one when serial forking moves on).
pub struct ForwardPlan {
    /// The request as forwarded, without our Via, Record-Route and token.
    pub template: Request,
    pub caller: String,
    /// `name@domain`, lowercase.
    pub service: String,
    pub call_id: String,
    pub loop_hash: String,
    /// Where the INVITE came from.
    pub inbound: Flow,
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
    /// A final answer (or a 2xx) has been relayed upstream.
    pub answered: bool,
    /// The client CANCELled the request.
    pub cancelled: bool,
}

impl ProxyContext {
    pub fn in_dialog(dialog: String, branch: String) -> ProxyContext {
        ProxyContext {
            purpose: Purpose::InDialog { dialog },
            mode: ForkMode::FirstAnswer,
            plan: None,
            branches: vec![BranchInfo::new(branch, None)],
            best: None,
            challenges: Vec::new(),
            answered: false,
            cancelled: false,
        }
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
        let Some(caller) = self.authenticate(&key, self.settings.challenge, flow) else {
            return;
        };
        let snapshot = self.parts.directory.snapshot();
        let Some(req) = self.engine.request(&key) else {
            return;
        };
        let service_name = req
            .uri
            .auth
            .as_ref()
            .map(|a| a.user.clone())
            .unwrap_or_default();
        let domain = req.uri.host_with_port.host.to_string();
        let route = match snapshot.service(&service_name, &domain) {
            Some(r) if !r.targets.is_empty() => r.clone(),
            Some(_) => {
                return self.engine.respond_status(
                    &key,
                    503,
                    Some("No application server reachable"),
                    Vec::new(),
                )
            }
            None => return self.engine.respond_status(&key, 404, None, Vec::new()),
        };
        let mut template = req.clone();
        prepare_forward(&mut template);
        template
            .headers
            .retain(|h| !matches!(h, Header::ProxyAuthorization(_) | Header::Authorization(_)));
        let caller_contact = req.headers.iter().find_map(|h| match h {
            Header::Contact(c) => Uri::try_from(msg::addr_uri(c.value())).ok(),
            _ => None,
        });
        let plan = ForwardPlan {
            loop_hash: routing::loop_hash(req),
            call_id: msg::call_id(&req.headers).unwrap_or_default().to_string(),
            template,
            caller,
            service: format!("{service_name}@{domain}").to_ascii_lowercase(),
            inbound: flow,
            remaining: route.targets.into(),
        };
        let serial = route.fork_mode == ForkMode::Serial;
        self.contexts.insert(
            key.clone(),
            ProxyContext {
                purpose: Purpose::NewSession {
                    caller_flow: flow,
                    caller_contact,
                },
                mode: route.fork_mode,
                plan: Some(plan),
                branches: Vec::new(),
                best: None,
                challenges: Vec::new(),
                answered: false,
                cancelled: false,
            },
        );
        let mut started = false;
        while self.start_next_branch(&key) {
            started = true;
            if serial {
                break;
            }
        }
        if !serial {
            // Every branch is out; nothing more to start from the plan.
            if let Some(ctx) = self.contexts.get_mut(&key) {
                ctx.plan = None;
            }
        }
        if !started {
            self.engine
                .respond_status(&key, 500, Some("Cannot issue a session token"), Vec::new());
        }
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
        let session_id = uuid::Uuid::new_v4().to_string();
        let token =
            match self
                .parts
                .tokens
                .mint(&plan.caller, &target.id, &session_id, &plan.service, now)
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
            caller: plan.caller.clone(),
            service: plan.service.clone(),
            app_server: target.name.clone(),
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
        inbound: Flow,
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
        let mut routes_written = false;
        for h in forwarded.headers.iter() {
            if !routes_written && !matches!(h, Header::Via(_)) {
                for rr in self.local.record_routes(inbound.protocol, target.protocol) {
                    let _ = write!(head, "Record-Route: {rr}\r\n");
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
        let to_tag = self.tag_for(&key);
        if let Some(resp) = builders::synthetic_response(&wire, 408, &to_tag) {
            self.branch_failed(&key, index, resp);
        }
    }

    fn tag_for(&self, key: &str) -> String {
        self.engine
            .server(key)
            .map(|t| t.to_tag.clone())
            .unwrap_or_default()
    }

    /// The transaction layer gave up on a branch: act as if it answered `status`.
    pub(crate) fn on_no_answer(&mut self, role: Role, status: u16, wire: &[u8]) {
        let Role::Branch { key, index } = role else {
            return;
        };
        let to_tag = self.tag_for(&key);
        if let Some(resp) = builders::synthetic_response(wire, status, &to_tag) {
            self.branch_failed(&key, index, resp);
        }
    }

    // ---------------------------------------------------------------- §16.7

    /// A provisional response (101–199) on a branch.
    pub(crate) fn on_provisional(&mut self, key: &str, index: usize, mut resp: Response) {
        let local = self.local.clone();
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
        if let (
            Purpose::NewSession {
                caller_flow,
                caller_contact,
            },
            Some(s),
        ) = (purpose, session)
        {
            if msg::to_tag(&resp.headers).is_some() {
                let origin = DialogOrigin {
                    session_id: s.session_id,
                    callee_flow: s.flow,
                    caller_flow,
                    caller_contact,
                };
                if let Some(dk) = self.dialogs.open(&resp, origin, DialogState::Early, &local) {
                    if let Some(b) = self.context_branch(key, index) {
                        if !b.early_dialogs.contains(&dk) {
                            b.early_dialogs.push(dk);
                        }
                    }
                }
            }
        }
        self.arm_timer_c(&branch, generation);
        if !answered {
            self.engine.respond(key, resp);
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

    /// A 2xx on a branch: relayed while the caller can take it (§16.7 step 5: every 2xx is
    /// forwarded), else accepted and ended by the relay.
    fn on_success(
        &mut self,
        key: &str,
        index: usize,
        branch: &str,
        mut resp: Response,
        repeated: bool,
    ) {
        let caller_can_take = self
            .engine
            .server(key)
            .is_some_and(|t| matches!(t.state, ServerState::Proceeding | ServerState::Accepted));
        let Some(ctx) = self.contexts.get_mut(key).filter(|_| caller_can_take) else {
            if !repeated {
                self.end_unwanted_answer(branch, &resp);
            }
            return;
        };
        let purpose = ctx.purpose.clone();
        let Some(b) = ctx.branches.get_mut(index) else {
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
        if let Some(s) = &session {
            handover::hand_over(&mut resp, &s.token, &s.session_id);
        }
        if !repeated {
            match (&purpose, session) {
                (
                    Purpose::NewSession {
                        caller_flow,
                        caller_contact,
                    },
                    Some(s),
                ) => {
                    if gave_up {
                        tracing::info!(session = %s.session_id, "relaying a 2xx that came after the branch was given up");
                    }
                    let origin = DialogOrigin {
                        session_id: s.session_id,
                        callee_flow: s.flow,
                        caller_flow: *caller_flow,
                        caller_contact: caller_contact.clone(),
                    };
                    let local = self.local.clone();
                    self.dialogs
                        .open(&resp, origin, DialogState::Answered, &local);
                    for branch in others {
                        self.engine.cancel(&branch);
                    }
                }
                (Purpose::InDialog { dialog }, _)
                    if msg::cseq(&resp.headers)
                        .is_some_and(|(_, m)| m.eq_ignore_ascii_case("BYE")) =>
                {
                    self.close_dialog(dialog);
                }
                _ => {}
            }
        }
        self.engine.respond(key, resp);
    }

    /// A 2xx the caller can no longer take (it already has its final answer): the relay
    /// ACKs it and ends the dialog with a BYE toward the application server.
    fn end_unwanted_answer(&mut self, branch: &str, resp: &Response) {
        let Some(txn) = self.engine.client(branch).filter(|t| t.is_invite()) else {
            return;
        };
        let flow = txn.flow;
        let Ok(rsipstack::sip::SipMessage::Request(invite)) = msg::parse(&txn.wire) else {
            return;
        };
        let (Some(call_id), Some(from), Some(to), Some((cseq, _))) = (
            msg::call_id(&invite.headers),
            msg::from_value(&invite.headers),
            msg::to_value(&resp.headers),
            msg::cseq(&invite.headers),
        ) else {
            return;
        };
        let local = self.local.clone();
        let dest = callee_hop(resp, &local)
            .map(|hop| Flow {
                protocol: hop.protocol,
                remote: hop.addr,
                local: flow.local,
            })
            .unwrap_or(flow);
        let target = resp
            .headers
            .iter()
            .find_map(|h| match h {
                Header::Contact(c) => Uri::try_from(msg::addr_uri(c.value())).ok(),
                _ => None,
            })
            .unwrap_or_else(|| invite.uri.clone());
        let routes = downstream_routes(resp, &local);
        let hash = routing::loop_hash(&invite);
        let ack_via = local.via(dest.protocol, &local.new_branch(&hash));
        let ack = DialogRequest {
            method: Method::Ack,
            target: &target,
            via: &ack_via,
            from,
            to,
            call_id,
            cseq,
            routes: &routes,
            extra: Vec::new(),
        };
        self.engine.send_stateless(dest, ack.to_bytes());
        let bye_branch = local.new_branch(&hash);
        let bye_via = local.via(dest.protocol, &bye_branch);
        let bye = DialogRequest {
            method: Method::Bye,
            via: &bye_via,
            cseq: cseq + 1,
            extra: vec![Header::Other(
                "Reason".into(),
                "SIP;cause=487;text=\"the caller already has its answer\"".into(),
            )],
            ..ack
        };
        tracing::info!(%call_id, "ending a 2xx that came after the caller was answered");
        self.engine.send(Outgoing {
            branch: bye_branch,
            method: Method::Bye,
            wire: bye.to_bytes(),
            flow: dest,
            also_from: Vec::new(),
            owner: Role::Own,
        });
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
                self.dialogs.remove(&dk);
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
        let challenges = std::mem::take(&mut ctx.challenges);
        let best = best_response(ctx.best.take().expect("set above"), challenges);
        let pending: Vec<String> = ctx
            .branches
            .iter()
            .filter(|b| b.final_status.is_none())
            .map(|b| b.branch.clone())
            .collect();
        let best_status = u16::from(best.status_code.clone());
        self.engine.respond(key, best);
        for branch in pending {
            self.engine.cancel(&branch);
        }
        if let Purpose::InDialog { dialog } = purpose {
            if self.dialog_is_ending(&dialog) || best_status == 481 || best_status == 408 {
                self.close_dialog(&dialog);
            }
        }
    }
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
}
