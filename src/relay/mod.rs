//! The relay: a transaction-stateful SIP proxy with a registrar, digest authentication, a
//! cached service directory and session timing. Read it from the wire inwards:
//!
//! - [`transaction`]: server and client transactions, retransmissions and their timers
//!   (RFC 3261 §17); which responses are accepted, from whom.
//! - [`routing`]: the relay's own identity (Via, Record-Route), branch ids, loop detection,
//!   Route processing and next hops (§16.4, §16.6).
//! - [`core`]: the task that owns it all and dispatches each message through §16's steps.
//! - [`proxy`]: forwarding an initial INVITE to a service's application servers and choosing
//!   the answer the caller gets (§16.5–§16.7).
//! - [`dialog`]: established dialogs, mid-session changes, the ACK that confirms a session,
//!   the BYE that ends it.
//! - [`session_life`]: admission (503 while draining or when the store cannot keep up),
//!   RFC 4028 session timers, the maximum duration, checkpoints, resuming after a restart.
//! - [`transfer`]: REFER to a second service; the sessions the relay opens on a user's behalf.
//! - [`auth`]: digest authentication with stateless nonces and failure throttling
//!   ([`throttle`]).
//! - [`charges`]: item charges an application server reports by INFO or in its 200 to BYE.
//! - [`directory`]: the per-node cache of users and services.
//! - [`handover`]: the session token and service URL in the answer the caller gets.
//! - [`registrar`]: REGISTER bindings (§10.3).

pub mod auth;
pub mod charges;
pub mod core;
pub mod dialog;
pub mod directory;
pub mod handover;
pub mod proxy;
pub mod registrar;
pub mod routing;
pub mod session_life;
pub mod throttle;
pub mod transaction;
pub mod transfer;
