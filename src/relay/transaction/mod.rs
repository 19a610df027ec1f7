//! The transaction layer of the relay (RFC 3261 §17, with RFC 6026's Accepted states): which
//! message belongs to which exchange, retransmissions, and the timers that end them. No
//! business rules: the [`Engine`] tells the proxy core what arrived and what expired; the
//! core decides what to forward.
//!
//! ```text
//!  client ──request──▶ [ServerTxn] ═══ core ═══▶ [ClientTxn] × n ──request──▶ peers
//!  client ◀─response── [ServerTxn] ◀══ core ════ [ClientTxn] × n ◀─response── peers
//! ```
//!
//! Server transaction — one per request received, keyed by the top Via's branch, sent-by
//! and method ([`key`]); an ACK or CANCEL finds its INVITE:
//! ```text
//!  Proceeding ──2xx (INVITE)──▶ Accepted ──64·T1──▶ removed (absorbs retransmitted INVITEs)
//!      │ 3xx–6xx (INVITE) ──▶ Completed ──ACK──▶ Confirmed ──T4──▶ removed
//!      │                        │ Timer G: resend the final (UDP)   Timer H: stop waiting
//!      └ final (non-INVITE) ──▶ Completed ──linger──▶ removed (answers retransmissions)
//! ```
//! Client transaction — one per request sent, keyed by our branch:
//! ```text
//!  Calling ──1xx──▶ Proceeding ──2xx──▶ Accepted ──64·T1──▶ removed (2xx retransmissions
//!     │                 │                                   delivered again)
//!     │                 └─3xx–6xx──▶ Completed (INVITE: ACKed hop by hop, re-ACKed on
//!     │                               retransmission) ──linger──▶ removed
//!     │ Timer A/E: retransmit (UDP)
//!     └ Timer B/F: no final in time ──▶ Abandoned (a late 2xx is still delivered) ──64·T1──▶ removed
//! ```
//! CANCEL of a client INVITE (RFC 3261 §9.1): held until the branch has sent a provisional
//! response, then sent and retransmitted like a non-INVITE request (Timer E, capped at T2)
//! until the peer answers it; a branch that gives no final answer within 64·T1 of the CANCEL
//! is abandoned as if it had answered 487.
//!
//! A response is accepted only when its top Via is ours, its branch is one we created and is
//! still known, and it comes from the address and transport the request went to (or another
//! address of the same peer, as the directory resolved it). Anything else is dropped and
//! counted, never forwarded: a response names its next hop in its Via, and a relay that
//! followed a stranger's Via would reflect traffic to third parties.
//!
//! The timers are the variants of [`Timer`], kept in one `DelayQueue`; each handler first
//! checks that its timer still applies (no timer is ever cancelled).

mod client;
mod engine;
mod key;
mod server;
mod timer;

#[cfg(test)]
mod tests;

pub use client::{CancelState, ClientState, ClientTxn, Outgoing};
pub use engine::{Delivery, Dropped, Engine, Expiry, Incoming};
pub use key::{invite_key_of, server_key, ServerKey};
pub use server::{ServerState, ServerTxn};
pub use timer::{Timer, LINGER, T2, T4};
