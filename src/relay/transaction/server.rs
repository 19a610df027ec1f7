//! Server transactions: a request the relay received and what it answered.

use crate::sip::transport::Flow;
use bytes::Bytes;
use rsipstack::sip::Request;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// No final response yet.
    Proceeding,
    /// A non-2xx final was sent: waiting for the ACK (INVITE) or lingering (non-INVITE).
    Completed,
    /// The ACK for the non-2xx final arrived.
    Confirmed,
    /// A 2xx to the INVITE was sent (RFC 6026); more 2xx (forks) may follow.
    Accepted,
}

/// A request received from a client.
pub struct ServerTxn {
    pub is_invite: bool,
    /// Where the request came from; responses go back this way.
    pub flow: Flow,
    pub state: ServerState,
    /// The request, kept until a final response is sent (to build responses).
    pub request: Option<Request>,
    /// The last response sent, resent when the request is retransmitted.
    pub last_response: Option<Bytes>,
    /// The To tag of the responses the relay itself generates for this request.
    pub to_tag: String,
}
