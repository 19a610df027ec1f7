//! The transaction timers (RFC 3261 §17, Table 4) and the constants they are built from.

use super::key::ServerKey;
use std::time::Duration;

/// RFC 3261 T2: the cap of non-INVITE and response retransmission intervals.
pub const T2: Duration = Duration::from_secs(4);
/// RFC 3261 T4: how long a message may linger in the network.
pub const T4: Duration = Duration::from_secs(5);
/// How long a completed non-INVITE transaction answers retransmissions before it is
/// forgotten. Shorter than Timer J's 64·T1, like Kamailio's `wait_timer`, to bound memory at
/// thousands of calls per second; long enough for every retransmission a UAC sends after its
/// final response could be in flight.
pub const LINGER: Duration = Duration::from_secs(5);

/// Work scheduled for later. Each handler first checks that the timer still applies.
#[derive(Debug, Clone)]
pub enum Timer {
    /// Timer A (INVITE) or E (non-INVITE): retransmit a client request over UDP.
    Retransmit { branch: String, interval: Duration },
    /// Timer B or F: the client transaction got no final response in time.
    Timeout { branch: String },
    /// Retransmit our CANCEL over UDP until it is answered.
    RetransmitCancel { branch: String, interval: Duration },
    /// A CANCELled branch never sent its final response.
    CancelTimeout { branch: String },
    /// Forget a client transaction (Timer D/K, or the end of the Accepted/Abandoned linger).
    ForgetClient { branch: String },
    /// Timer G: resend the final non-2xx response until the ACK comes.
    ResendFinal { key: ServerKey, interval: Duration },
    /// Timer H, I, J, L: forget a server transaction.
    ForgetServer { key: ServerKey },
}
