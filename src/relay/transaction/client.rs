//! Client transactions: a request the relay sent, and the answers it may accept.

use crate::sip::transport::Flow;
use bytes::Bytes;
use rsipstack::sip::Method;
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Sent; nothing heard yet.
    Calling,
    /// A provisional response arrived.
    Proceeding,
    /// A 2xx to an INVITE arrived; its retransmissions are still delivered.
    Accepted,
    /// A non-2xx final (or any final to a non-INVITE) arrived.
    Completed,
    /// No final came in time; the owner was told. A late 2xx is still delivered.
    Abandoned,
}

/// Our CANCEL of a client INVITE (RFC 3261 §9.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelState {
    NotRequested,
    /// Requested before any provisional response: sent when one arrives.
    Pending,
    /// Sent; retransmitted until the peer answers it.
    Sent {
        wire: Bytes,
    },
    Answered,
}

/// What to send: the request on the wire (our Via on top, carrying `branch`), where, and
/// who may answer.
pub struct Outgoing<O> {
    pub branch: String,
    pub method: Method,
    pub wire: Bytes,
    pub flow: Flow,
    /// Addresses whose responses are accepted besides `flow.remote` (another address of the
    /// same peer).
    pub also_from: Vec<SocketAddr>,
    /// What the request is for; handed back with every response and expiry.
    pub owner: O,
}

/// A request the relay sent.
pub struct ClientTxn<O> {
    pub method: Method,
    pub wire: Bytes,
    pub flow: Flow,
    pub also_from: Vec<SocketAddr>,
    pub state: ClientState,
    pub cancel: CancelState,
    pub owner: O,
}

impl<O> ClientTxn<O> {
    pub fn is_invite(&self) -> bool {
        self.method == Method::Invite
    }

    /// Whether a response from `from` over this transport may answer this request.
    pub fn accepts_from(&self, flow: &Flow) -> bool {
        flow.protocol == self.flow.protocol
            && (flow.remote == self.flow.remote || self.also_from.contains(&flow.remote))
    }
}
