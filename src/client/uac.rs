//! The user agent client behind [`super::call`]: client transactions (RFC 3261 §17.1) with
//! their retransmission timers, digest answers, and the dialog the call creates.
//!
//! One task drives everything: [`Uac::recv_until`] waits for the next message or timer,
//! meanwhile servicing "background" transactions (a CANCEL, the BYE that releases an extra
//! forked dialog). Messages that do not belong to the transaction being waited for go to
//! [`Uac::handle_other`]: retransmitted final responses are ACKed again, requests from the
//! far side are answered.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use rsipstack::sip::{Method, Request, Response, SipMessage};
use tokio::time::{sleep_until, Instant};

use super::message::{
    build_request, build_response, cseq_of, header_param, header_value, header_values,
    in_dialog_routing, new_branch, random_hex, record_route, status_line, top_via_branch, uri_of,
    RequestSpec,
};
use super::transport::{Conn, Incoming};
use super::{CallOptions, CallOutcome, ClientError, Transport};
use crate::sip::digest::{self, Challenge};

/// RFC 3261 T1: round-trip time estimate.
pub(crate) const T1: Duration = Duration::from_millis(500);
/// RFC 3261 T2: the longest retransmission interval of a non-INVITE request.
pub(crate) const T2: Duration = Duration::from_secs(4);
/// Timers B and F: 64 × T1.
pub(crate) const TRANSACTION_TIMEOUT: Duration = Duration::from_millis(64 * 500);
/// How long the call may ring (after a provisional response) before it is CANCELled.
pub(crate) const RING_TIMEOUT: Duration = Duration::from_secs(180);

type Extra = Vec<(&'static str, String)>;

/// One client transaction.
struct ClientTx {
    method: &'static str,
    branch: String,
    via: String,
    request_uri: String,
    route: Vec<String>,
    cseq: u32,
    bytes: Vec<u8>,
    reliable: bool,
    interval: Duration,
    next_retx: Option<Instant>,
    deadline: Instant,
    proceeding: bool,
    cancelled: bool,
}

impl ClientTx {
    /// A transaction for `spec`, its timers starting now.
    fn new(spec: &RequestSpec<'_>, method: &'static str, branch: String, reliable: bool) -> Self {
        let now = Instant::now();
        ClientTx {
            method,
            via: spec.via.to_string(),
            request_uri: spec.request_uri.to_string(),
            route: spec.route.to_vec(),
            cseq: spec.cseq,
            branch,
            bytes: build_request(spec),
            reliable,
            interval: T1,
            next_retx: (!reliable).then(|| now + T1),
            deadline: now + TRANSACTION_TIMEOUT,
            proceeding: false,
            cancelled: false,
        }
    }

    fn is_invite(&self) -> bool {
        self.method == "INVITE"
    }

    fn matches(&self, resp: &Response) -> bool {
        top_via_branch(resp).as_deref() == Some(self.branch.as_str())
            && cseq_of(resp).is_some_and(|(_, m)| m.eq_ignore_ascii_case(self.method))
    }

    fn next_wake(&self) -> Instant {
        self.next_retx
            .map_or(self.deadline, |t| t.min(self.deadline))
    }

    /// The bytes to send again if Timer A/E is due.
    fn retransmit_due(&mut self, now: Instant) -> Option<&[u8]> {
        let due = self.next_retx.is_some_and(|t| t <= now);
        if !due {
            return None;
        }
        self.interval = if self.is_invite() {
            self.interval * 2
        } else {
            (self.interval * 2).min(T2)
        };
        self.next_retx = Some(now + self.interval);
        Some(&self.bytes)
    }

    fn on_provisional(&mut self, now: Instant) {
        if self.is_invite() {
            // Proceeding: no more retransmissions; Timer B no longer applies.
            self.next_retx = None;
            if !self.proceeding && !self.cancelled {
                self.deadline = now + RING_TIMEOUT;
            }
        } else if !self.reliable {
            self.interval = T2;
            self.next_retx = Some(now + T2);
        }
        self.proceeding = true;
    }
}

struct Dialog {
    remote_tag: String,
    /// The To value of the 2xx, with the remote tag.
    to: String,
    remote_target: String,
    route_set: Vec<String>,
    /// The ACK sent for the 2xx, sent again when the 2xx is retransmitted.
    ack: Vec<u8>,
}

struct AuthState {
    header: &'static str,
    challenge: Challenge,
    nc: u32,
}

pub(crate) struct Uac<'o, 'w> {
    opts: &'o CallOptions,
    out: &'w mut (dyn Write + Send),
    conn: Conn,
    target: String,
    via_base: String,
    call_id: String,
    local_tag: String,
    from: String,
    to: String,
    contact: String,
    cseq: u32,
    auth: Option<AuthState>,
    /// Credentials the (last) INVITE carried; the ACK for its 2xx carries them too.
    invite_extra: Extra,
    /// ACKs for non-2xx finals, by branch, sent again if the final is retransmitted.
    acks: HashMap<String, Vec<u8>>,
    /// `[0]` is the call; further entries are extra dialogs from a forking relay.
    dialogs: Vec<Dialog>,
    background: Vec<ClientTx>,
    remote_bye: bool,
}

impl<'o, 'w> Uac<'o, 'w> {
    pub(crate) async fn start(
        opts: &'o CallOptions,
        out: &'w mut (dyn Write + Send),
    ) -> Result<Uac<'o, 'w>, ClientError> {
        let target = uri_of(&opts.target).to_string();
        let domain = target_domain(&target)?;
        let conn = Conn::open(opts.transport, opts.local_ip, opts.proxy).await?;
        let local = conn.advertised_addr().await?;
        Ok(Self::with_conn(opts, out, conn, local, target, domain))
    }

    fn with_conn(
        opts: &'o CallOptions,
        out: &'w mut (dyn Write + Send),
        conn: Conn,
        local: SocketAddr,
        target: String,
        domain: String,
    ) -> Self {
        let local_tag = random_hex();
        let hp = crate::sip::message::format_host_port(local);
        let transport_param = match opts.transport {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
        };
        Uac {
            opts,
            out,
            conn,
            via_base: format!("SIP/2.0/{} {hp};rport;branch=", opts.transport),
            call_id: format!("{}@tollgate-call", uuid::Uuid::new_v4().simple()),
            from: format!("<sip:{}@{domain}>;tag={local_tag}", opts.user),
            to: format!("<{target}>"),
            contact: format!("<sip:{}@{hp}{transport_param}>", opts.user),
            local_tag,
            target,
            cseq: 0,
            auth: None,
            invite_extra: Vec::new(),
            acks: HashMap::new(),
            dialogs: Vec::new(),
            background: Vec::new(),
            remote_bye: false,
        }
    }

    fn say(&mut self, line: impl std::fmt::Display) -> Result<(), ClientError> {
        writeln!(self.out, "{line}")?;
        Ok(())
    }

    fn say_body(&mut self, body: &[u8]) -> Result<(), ClientError> {
        if !body.is_empty() {
            self.out.write_all(body)?;
            if !body.ends_with(b"\n") {
                self.out.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    pub(crate) async fn run(mut self) -> Result<CallOutcome, ClientError> {
        let opts = self.opts;
        let banner = format!(
            "calling {} via {} ({})",
            self.target, opts.proxy, opts.transport
        );
        self.say(banner)?;
        let resp = self.invite().await?;
        let status = resp.status_code.code();
        self.say(status_line(&resp))?;
        self.say_body(&resp.body)?;
        if !(200..300).contains(&status) {
            self.drain().await;
            return Err(ClientError::Rejected {
                status,
                reason: super::message::reason_of(&resp),
            });
        }
        let dialog = self.establish(&resp).await?;
        self.dialogs.push(dialog);
        let started = Instant::now();
        if !opts.hold.is_zero() {
            self.say(format_args!("holding the call for {:?}", opts.hold))?;
        }
        self.hold(opts.hold).await?;
        if self.remote_bye {
            self.say("the far side hung up")?;
        } else {
            let bye = self.bye().await?;
            self.say(format_args!("BYE: {}", status_line(&bye)))?;
        }
        let duration = started.elapsed();
        self.say(format_args!("call lasted {:.3} s", duration.as_secs_f64()))?;
        self.drain().await;
        Ok(CallOutcome {
            status,
            body: String::from_utf8_lossy(&resp.body).into_owned(),
            duration,
        })
    }

    fn via(&self, branch: &str) -> String {
        format!("{}{branch}", self.via_base)
    }

    /// Credentials for the next request, if a challenge has been received.
    fn authorization(&mut self, method: &str, uri: &str) -> Extra {
        let opts = self.opts;
        match &mut self.auth {
            Some(a) => {
                a.nc += 1;
                let value = digest::answer(
                    &a.challenge,
                    method,
                    uri,
                    &opts.user,
                    &opts.password,
                    a.nc,
                    &random_hex(),
                );
                vec![(a.header, value)]
            }
            None => Vec::new(),
        }
    }

    /// The challenge to answer in a 401/407, preferring SHA-256.
    fn take_challenge(resp: &Response) -> Option<AuthState> {
        let (challenge_header, header) = match resp.status_code.code() {
            401 => ("WWW-Authenticate", "Authorization"),
            407 => ("Proxy-Authenticate", "Proxy-Authorization"),
            _ => return None,
        };
        let challenge = digest::choose_challenge(header_values(resp, challenge_header))?;
        Some(AuthState {
            header,
            challenge,
            nc: 0,
        })
    }

    /// Sends a new client transaction's request for the first time.
    async fn send_tx(&mut self, tx: &ClientTx) -> Result<(), ClientError> {
        self.conn.send(&tx.bytes).await?;
        Ok(())
    }

    /// INVITE until a final response, answering one challenge (and a second one only if the
    /// first answer was refused as stale).
    async fn invite(&mut self) -> Result<Response, ClientError> {
        let mut challenges = 0;
        loop {
            self.cseq += 1;
            let branch = new_branch();
            let via = self.via(&branch);
            let target = self.target.clone();
            let extra = self.authorization("INVITE", &target);
            let opts = self.opts;
            let body = opts
                .body
                .as_ref()
                .map(|(ct, b)| (ct.as_str(), b.as_slice()));
            let spec = RequestSpec {
                method: "INVITE",
                request_uri: &target,
                via: &via,
                route: &[],
                from: &self.from,
                to: &self.to,
                call_id: &self.call_id,
                cseq: self.cseq,
                contact: Some(&self.contact),
                extra: &extra,
                body,
            };
            let mut tx = ClientTx::new(&spec, "INVITE", branch, self.conn.reliable());
            self.send_tx(&tx).await?;
            self.invite_extra = extra;
            let resp = self.run_tx(&mut tx).await?;
            let code = resp.status_code.code();
            if code >= 300 {
                self.ack_non2xx(&tx, &resp).await?;
            }
            if matches!(code, 401 | 407) && challenges < 2 {
                if let Some(next) = Self::take_challenge(&resp) {
                    if challenges == 0 || next.challenge.stale {
                        self.say(status_line(&resp))?;
                        self.auth = Some(next);
                        challenges += 1;
                        continue;
                    }
                }
            }
            return Ok(resp);
        }
    }

    /// The hop-by-hop ACK for a non-2xx final response (RFC 3261 §17.1.1.3): same branch,
    /// Request-URI and route as the INVITE, the To of the response.
    async fn ack_non2xx(&mut self, tx: &ClientTx, resp: &Response) -> Result<(), ClientError> {
        let to = header_value(resp, "To").unwrap_or(&self.to).to_string();
        let ack = build_request(&RequestSpec {
            method: "ACK",
            request_uri: &tx.request_uri,
            via: &tx.via,
            route: &tx.route,
            from: &self.from,
            to: &to,
            call_id: &self.call_id,
            cseq: tx.cseq,
            ..Default::default()
        });
        self.conn.send(&ack).await?;
        self.acks.insert(tx.branch.clone(), ack);
        Ok(())
    }

    /// Builds the dialog a 2xx creates and sends its ACK.
    async fn establish(&mut self, resp: &Response) -> Result<Dialog, ClientError> {
        let to = header_value(resp, "To").unwrap_or(&self.to).to_string();
        let remote_tag = header_param(&to, "tag").unwrap_or_default();
        let remote_target = match header_value(resp, "Contact") {
            Some(c) if !uri_of(c).is_empty() => uri_of(c).to_string(),
            _ => {
                self.say("warning: the 2xx has no Contact; using the target URI")?;
                self.target.clone()
            }
        };
        let mut route_set = record_route(resp);
        route_set.reverse();
        let cseq = cseq_of(resp).map_or(self.cseq, |(n, _)| n);
        let (request_uri, route) = in_dialog_routing(&route_set, &remote_target);
        let via = self.via(&new_branch());
        let ack = build_request(&RequestSpec {
            method: "ACK",
            request_uri: &request_uri,
            via: &via,
            route: &route,
            from: &self.from,
            to: &to,
            call_id: &self.call_id,
            cseq,
            extra: &self.invite_extra,
            ..Default::default()
        });
        self.conn.send(&ack).await?;
        Ok(Dialog {
            remote_tag,
            to,
            remote_target,
            route_set,
            ack,
        })
    }

    /// Waits for the final response of `tx`, retransmitting it and handling everything else.
    async fn run_tx(&mut self, tx: &mut ClientTx) -> Result<Response, ClientError> {
        loop {
            match self.recv_until(tx.next_wake()).await? {
                None => {
                    let now = Instant::now();
                    if now >= tx.deadline {
                        if tx.is_invite() && tx.proceeding && !tx.cancelled {
                            self.cancel(tx).await?;
                            continue;
                        }
                        return Err(ClientError::Timeout {
                            method: tx.method.to_string(),
                            after: TRANSACTION_TIMEOUT,
                        });
                    }
                    if let Some(bytes) = tx.retransmit_due(now) {
                        let bytes = bytes.to_vec();
                        self.conn.send(&bytes).await?;
                    }
                }
                Some(Incoming {
                    msg: SipMessage::Response(resp),
                    ..
                }) if tx.matches(&resp) => {
                    if resp.status_code.code() >= 200 {
                        return Ok(resp);
                    }
                    self.say(status_line(&resp))?;
                    tx.on_provisional(Instant::now());
                }
                Some(other) => self.handle_other(other).await?,
            }
        }
    }

    /// Nobody answered while ringing: CANCEL (RFC 3261 §9.1) and wait for the 487.
    async fn cancel(&mut self, tx: &mut ClientTx) -> Result<(), ClientError> {
        self.say(format_args!(
            "no answer after {} s, cancelling",
            RING_TIMEOUT.as_secs()
        ))?;
        let cancel = RequestSpec {
            method: "CANCEL",
            request_uri: &tx.request_uri,
            via: &tx.via,
            route: &tx.route,
            from: &self.from,
            to: &self.to,
            call_id: &self.call_id,
            cseq: tx.cseq,
            ..Default::default()
        };
        let ctx = ClientTx::new(&cancel, "CANCEL", tx.branch.clone(), self.conn.reliable());
        self.send_tx(&ctx).await?;
        self.background.push(ctx);
        tx.cancelled = true;
        tx.deadline = Instant::now() + TRANSACTION_TIMEOUT;
        Ok(())
    }

    /// Keeps the call up for `hold`, answering whatever arrives; a BYE ends it early.
    async fn hold(&mut self, hold: Duration) -> Result<(), ClientError> {
        let until = Instant::now() + hold;
        while !self.remote_bye {
            match self.recv_until(until).await? {
                None => break,
                Some(inc) => self.handle_other(inc).await?,
            }
        }
        Ok(())
    }

    /// BYE on the call's dialog; answers one challenge to it.
    async fn bye(&mut self) -> Result<Response, ClientError> {
        // The INVITE's credentials are not reused: only a challenge to the BYE gets an answer.
        self.auth = None;
        let mut challenged = false;
        loop {
            self.cseq += 1;
            let (request_uri, route) = {
                let d = &self.dialogs[0];
                in_dialog_routing(&d.route_set, &d.remote_target)
            };
            let to = self.dialogs[0].to.clone();
            let extra = self.authorization("BYE", &request_uri);
            let branch = new_branch();
            let via = self.via(&branch);
            let spec = RequestSpec {
                method: "BYE",
                request_uri: &request_uri,
                via: &via,
                route: &route,
                from: &self.from,
                to: &to,
                call_id: &self.call_id,
                cseq: self.cseq,
                extra: &extra,
                ..Default::default()
            };
            let mut tx = ClientTx::new(&spec, "BYE", branch, self.conn.reliable());
            self.send_tx(&tx).await?;
            let resp = self.run_tx(&mut tx).await?;
            if matches!(resp.status_code.code(), 401 | 407) && !challenged {
                if let Some(next) = Self::take_challenge(&resp) {
                    self.say(format_args!("BYE: {}", status_line(&resp)))?;
                    self.auth = Some(next);
                    challenged = true;
                    continue;
                }
            }
            return Ok(resp);
        }
    }

    /// Lets background transactions (a CANCEL, BYEs of extra dialogs) finish.
    async fn drain(&mut self) {
        while let Some(until) = self.background.iter().map(|t| t.deadline).max() {
            match self.recv_until(until).await {
                Ok(Some(inc)) => {
                    if self.handle_other(inc).await.is_err() {
                        break;
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// The next message, or `None` once `wake` has passed. Background transactions are
    /// retransmitted and expired meanwhile.
    async fn recv_until(&mut self, wake: Instant) -> Result<Option<Incoming>, ClientError> {
        loop {
            let t = self
                .background
                .iter()
                .map(ClientTx::next_wake)
                .fold(wake, Instant::min);
            let received = tokio::select! {
                r = self.conn.recv() => Some(r),
                _ = sleep_until(t) => None,
            };
            match received {
                Some(r) => return r.map(Some),
                None => {
                    self.service_background().await?;
                    if Instant::now() >= wake {
                        return Ok(None);
                    }
                }
            }
        }
    }

    async fn service_background(&mut self) -> Result<(), ClientError> {
        let now = Instant::now();
        self.background.retain(|t| now < t.deadline);
        let mut resend = Vec::new();
        for t in &mut self.background {
            if let Some(b) = t.retransmit_due(now) {
                resend.push(b.to_vec());
            }
        }
        for b in resend {
            self.conn.send(&b).await?;
        }
        Ok(())
    }

    async fn handle_other(&mut self, inc: Incoming) -> Result<(), ClientError> {
        match inc.msg {
            SipMessage::Request(req) => self.on_request(req, inc.src).await,
            SipMessage::Response(resp) => self.on_response(resp).await,
        }
    }

    async fn respond(
        &mut self,
        req: &Request,
        src: SocketAddr,
        code: u16,
        reason: &str,
        with_contact: bool,
    ) -> Result<(), ClientError> {
        let contact = with_contact.then_some(self.contact.as_str());
        let bytes = build_response(req, code, reason, &self.local_tag, contact);
        self.conn.send_to(&bytes, src).await?;
        Ok(())
    }

    /// A request from the far side (through the relay).
    async fn on_request(&mut self, req: Request, src: SocketAddr) -> Result<(), ClientError> {
        if req.method == Method::Ack {
            return Ok(());
        }
        let in_our_call = header_value(&req, "Call-ID") == Some(self.call_id.as_str())
            && header_value(&req, "To").and_then(|t| header_param(t, "tag"))
                == Some(self.local_tag.clone());
        let from_tag = header_value(&req, "From").and_then(|f| header_param(f, "tag"));
        let idx = if in_our_call {
            self.dialogs
                .iter()
                .position(|d| Some(&d.remote_tag) == from_tag.as_ref())
        } else {
            None
        };
        let Some(idx) = idx else {
            return self
                .respond(&req, src, 481, "Call/Transaction Does Not Exist", false)
                .await;
        };
        match req.method {
            Method::Bye => {
                self.respond(&req, src, 200, "OK", false).await?;
                if idx == 0 {
                    self.remote_bye = true;
                } else {
                    self.say("a forked dialog was closed by the far side")?;
                }
            }
            Method::Invite | Method::Update => {
                if let Some(c) = header_value(&req, "Contact") {
                    let uri = uri_of(c);
                    if !uri.is_empty() {
                        self.dialogs[idx].remote_target = uri.to_string();
                    }
                }
                self.say(format_args!("{} from the far side", req.method))?;
                self.say_body(&req.body)?;
                self.respond(&req, src, 200, "OK", true).await?;
            }
            Method::Info | Method::Options | Method::Notify | Method::Message => {
                self.say(format_args!("{} from the far side", req.method))?;
                self.say_body(&req.body)?;
                self.respond(&req, src, 200, "OK", false).await?;
            }
            Method::Cancel => self.respond(&req, src, 200, "OK", false).await?,
            _ => {
                self.respond(&req, src, 501, "Not Implemented", false)
                    .await?
            }
        }
        Ok(())
    }

    /// A response outside the transaction being waited for.
    async fn on_response(&mut self, resp: Response) -> Result<(), ClientError> {
        let code = resp.status_code.code();
        let now = Instant::now();
        if let Some(i) = self.background.iter().position(|t| t.matches(&resp)) {
            if code >= 200 {
                self.background.remove(i);
            } else {
                self.background[i].on_provisional(now);
            }
            return Ok(());
        }
        if code >= 300 {
            if let Some(ack) = top_via_branch(&resp).and_then(|b| self.acks.get(&b)) {
                let ack = ack.clone();
                self.conn.send(&ack).await?;
            }
            return Ok(());
        }
        let is_invite_2xx = (200..300).contains(&code)
            && cseq_of(&resp).is_some_and(|(_, m)| m == "INVITE")
            && header_value(&resp, "Call-ID") == Some(self.call_id.as_str());
        if !is_invite_2xx || self.dialogs.is_empty() {
            return Ok(());
        }
        let tag = header_value(&resp, "To")
            .and_then(|t| header_param(t, "tag"))
            .unwrap_or_default();
        if let Some(d) = self.dialogs.iter().find(|d| d.remote_tag == tag) {
            // The 2xx was retransmitted: our ACK was lost.
            let ack = d.ack.clone();
            self.conn.send(&ack).await?;
            return Ok(());
        }
        // Another branch of a forking relay answered too: ACK it, then release it.
        self.say(format_args!(
            "another answer (forked): {}",
            status_line(&resp)
        ))?;
        self.say_body(&resp.body)?;
        let dialog = self.establish(&resp).await?;
        let invite_cseq = cseq_of(&resp).map_or(self.cseq, |(n, _)| n);
        let (request_uri, route) = in_dialog_routing(&dialog.route_set, &dialog.remote_target);
        let branch = new_branch();
        let via = self.via(&branch);
        let spec = RequestSpec {
            method: "BYE",
            request_uri: &request_uri,
            via: &via,
            route: &route,
            from: &self.from,
            to: &dialog.to,
            call_id: &self.call_id,
            cseq: invite_cseq + 1,
            ..Default::default()
        };
        let tx = ClientTx::new(&spec, "BYE", branch, self.conn.reliable());
        self.send_tx(&tx).await?;
        self.background.push(tx);
        self.dialogs.push(dialog);
        Ok(())
    }
}

/// The host of a SIP URI (the caller's From domain).
fn target_domain(target: &str) -> Result<String, ClientError> {
    let bad = || ClientError::BadTarget(target.to_string());
    let lower = target.to_ascii_lowercase();
    if !(lower.starts_with("sip:") || lower.starts_with("sips:")) {
        return Err(bad());
    }
    let uri = rsipstack::sip::parse_uri(target).map_err(|_| bad())?;
    let host = uri.host_with_port.host.to_string();
    if host.is_empty() {
        return Err(bad());
    }
    Ok(host)
}

#[cfg(test)]
pub(crate) fn target_domain_for_test(target: &str) -> Result<String, ClientError> {
    target_domain(target)
}
