//! Transaction state for a stateful proxy (RFC 3261 §17, with RFC 6026's Accepted state).
//!
//! ```text
//!  client ──request──▶ [ServerTxn] ──proxy context──▶ [Branch] × n ──request──▶ app servers
//!  client ◀─response── [ServerTxn] ◀──best/2xx─────── [Branch] × n ◀─response── app servers
//! ```
//!
//! Server transaction (one per request received, keyed by the top Via branch, sent-by and
//! method; an ACK or CANCEL finds its INVITE):
//! ```text
//!  Proceeding ──2xx──▶ Accepted (absorbs retransmitted INVITEs; removed after 64·T1)
//!      │ 3xx–6xx (INVITE) ──▶ Completed ──ACK──▶ Confirmed ──T4──▶ removed
//!      │                        │ Timer G: resend final (UDP)   Timer H: give up waiting for ACK
//!      └ final (non-INVITE) ──▶ Completed ──linger──▶ removed (absorbs retransmissions)
//! ```
//! Client branch (one per forwarded request):
//! ```text
//!  Calling ──1xx──▶ Proceeding ──final──▶ Completed (non-2xx: ACKed hop by hop) / Terminated (2xx)
//!     │ Timer A/E: retransmit (UDP)   Timer B/F: no answer → synthetic 408
//!     └ Timer C (INVITE, Proceeding too long) → CANCEL and synthetic 408
//! ```
//! The timers are the variants of [`Timer`]; the relay core keeps them in one `DelayQueue`
//! and checks, when one fires, whether it still applies (no timer is ever cancelled).

use crate::config::Protocol;
use crate::relay::handover::BranchToken;
use bytes::Bytes;
use rsipstack::sip::{Request, Response};
use std::net::SocketAddr;
use std::time::Duration;

/// Identifies a server transaction: `branch|sent-by|method` (ACK maps to INVITE).
pub type ServerKey = String;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Proceeding,
    /// Non-2xx final sent; waiting for the ACK (INVITE) or lingering (non-INVITE).
    Completed,
    /// ACK for the non-2xx final received.
    Confirmed,
    /// 2xx relayed (RFC 6026).
    Accepted,
}

/// A request received from a client, and what the relay did with it.
pub struct ServerTxn {
    pub is_invite: bool,
    pub protocol: Protocol,
    /// Where responses go (Via with received/rport, or the TCP connection's peer).
    pub reply_to: SocketAddr,
    pub state: ServerState,
    /// The request, kept until a final response is sent (to build responses and CANCELs).
    pub request: Option<Request>,
    /// The last response sent, resent when the request is retransmitted.
    pub last_response: Option<Bytes>,
    pub to_tag: String,
    pub proxy: Option<ProxyContext>,
    pub resend_interval: Duration,
}

/// What a proxied request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// An initial INVITE for a service: each branch is a session.
    NewSession,
    /// A request inside an established dialog.
    InDialog { dialog: String },
}

/// The response context of one proxied request (RFC 3261 §16.7).
pub struct ProxyContext {
    pub purpose: Purpose,
    pub branches: Vec<Branch>,
    /// The best non-2xx final response so far.
    pub best: Option<Response>,
    /// A final response has been relayed upstream.
    pub answered: bool,
    /// The client CANCELled the request.
    pub cancelled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchState {
    Calling,
    Proceeding,
    Completed,
    Terminated,
}

/// One forwarded copy of a request.
pub struct Branch {
    /// Our Via branch parameter.
    pub id: String,
    pub addr: SocketAddr,
    pub protocol: Protocol,
    /// The forwarded request on the wire, for retransmission and for building CANCEL/ACK.
    pub wire: Bytes,
    pub state: BranchState,
    pub final_status: Option<u16>,
    pub session_id: Option<String>,
    /// The session token minted for this branch (initial INVITEs only).
    pub token: Option<BranchToken>,
    pub app_server: String,
    pub cancel_pending: bool,
    pub cancel_sent: bool,
}

impl Branch {
    pub fn is_final(&self) -> bool {
        matches!(self.state, BranchState::Completed | BranchState::Terminated)
    }
}

/// Work scheduled for later. Each handler first checks that the timer still applies.
#[derive(Debug, Clone)]
pub enum Timer {
    /// Timer A (INVITE) or E (non-INVITE): retransmit the branch's request over UDP.
    Retransmit { branch: String, interval: Duration },
    /// Timer B or F: the branch got no final response in time.
    BranchTimeout { branch: String },
    /// Timer C: an INVITE branch rang too long.
    InviteTimeout { branch: String },
    /// A CANCELled branch never answered.
    CancelTimeout { branch: String },
    /// Timer G: resend the final non-2xx response until the ACK comes.
    ResendFinal { key: ServerKey, interval: Duration },
    /// Timer H, I, J, L, and D/K for the branches: forget the transaction.
    Remove { key: ServerKey },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_hundreds_beat_everything_and_503_loses_to_other_5xx() {
        let mut v = vec![503, 486, 603, 500];
        v.sort_by_key(|s| response_rank(*s));
        assert_eq!(v, vec![603, 486, 500, 503]);
        let mut w = [503, 500];
        w.sort_by_key(|s| response_rank(*s));
        assert_eq!(w[0], 500);
    }
}
