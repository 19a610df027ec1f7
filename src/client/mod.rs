//! `tollgate call`: the SIP client terminal, a user agent client over UDP or TCP.
//!
//! [`call`] places one call through the relay and prints what happens:
//!
//! ```text
//!   INVITE (CSeq 1) ──▶ relay            retransmitted over UDP: Timer A, T1 = 500 ms doubling
//!   ◀── 100 Trying                       (stops retransmission)
//!   ◀── 401/407 + challenges             ACK (same branch, hop by hop), then once:
//!   INVITE (CSeq 2, new branch, Authorization: SHA-256 if offered, qop=auth) ──▶
//!   ◀── 200 OK (Contact, Record-Route, body: the service URL and token)
//!   ACK (new branch, Request-URI = Contact, Route = Record-Route reversed) ──▶
//!   … hold for `hold` (a BYE from the far side ends the call early: 200 OK) …
//!   BYE (CSeq + 1, same route set) ──▶   retransmitted over UDP: Timer E, capped at T2 = 4 s
//!   ◀── 200 OK
//! ```
//!
//! Every request goes to [`CallOptions::proxy`] (the relay acts as outbound proxy; its
//! Record-Route keeps it on the path). A final response other than 2xx ends the call with
//! [`ClientError::Rejected`]. A second 2xx from a forking relay ("all answers" mode) is
//! printed, ACKed and released with a BYE. If nobody answers within three minutes of ringing
//! the INVITE is CANCELled. Timers use tokio time, so tests run them with paused time.
//!
//! Submodules: [`message`] (building and
//! reading messages), `transport` (the socket, framed by [`crate::sip::framing`]) and `uac`
//! (the state machine).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

pub mod message;
mod transport;
mod uac;

#[cfg(test)]
mod tests;

/// The transport to reach the relay with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// `UDP` / `TCP`, as written in a Via.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("udp") {
            Ok(Transport::Udp)
        } else if s.eq_ignore_ascii_case("tcp") {
            Ok(Transport::Tcp)
        } else {
            Err(format!("unknown transport `{s}` (expected udp or tcp)"))
        }
    }
}

/// What to call and how.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// The service to call, e.g. `sip:service1@portal.com`. Its host is also the domain of
    /// the caller's From URI.
    pub target: String,
    /// The relay's address; every request is sent there.
    pub proxy: SocketAddr,
    pub transport: Transport,
    pub user: String,
    pub password: String,
    /// `(content type, body)` for the INVITE; see [`content_type_for`].
    pub body: Option<(String, Vec<u8>)>,
    /// How long to keep the call up before sending BYE.
    pub hold: Duration,
    /// The local address to bind (and to advertise in Via and Contact). An unspecified address
    /// binds all interfaces and advertises the one routed towards the relay.
    pub local_ip: IpAddr,
}

/// How a successful call went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutcome {
    /// The final status of the INVITE (2xx).
    pub status: u16,
    /// The body of that 2xx (the service URL and session token), lossily decoded as UTF-8.
    pub body: String,
    /// From sending the ACK until the BYE was answered (or the far side's BYE arrived).
    pub duration: Duration,
}

/// Why a call did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The INVITE got a final non-2xx response (after answering one challenge).
    #[error("call failed: {status} {reason}")]
    Rejected { status: u16, reason: String },
    /// `target` is not a SIP URI.
    #[error("invalid target URI `{0}`")]
    BadTarget(String),
    /// No final response before Timer B / Timer F fired.
    #[error("no final response to {method} within {} s", .after.as_secs())]
    Timeout { method: String, after: Duration },
    /// The relay closed the TCP connection.
    #[error("the relay closed the connection")]
    ConnectionClosed,
    /// The relay sent bytes that cannot be framed as SIP.
    #[error(transparent)]
    Framing(#[from] crate::sip::framing::FramingError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// The Content-Type for a body file: `.json` → `application/json`, `.xml` →
/// `application/xml`, anything else `text/plain`.
pub fn content_type_for(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("json") => "application/json",
        Some("xml") => "application/xml",
        _ => "text/plain",
    }
}

/// Places one call as described in the module documentation, writing progress (status lines,
/// the answer's body, hold and hang-up) to `out`.
pub async fn call(
    opts: CallOptions,
    out: &mut (dyn std::io::Write + Send),
) -> Result<CallOutcome, ClientError> {
    uac::Uac::start(&opts, out).await?.run().await
}
