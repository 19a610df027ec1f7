//! The relay: a transaction-stateful SIP proxy with a registrar, digest authentication, a
//! cached service directory and session timing.
//!
//! - [`proxy`]: the core task (RFC 3261 §16) that owns transactions, dialogs and timers.
//! - [`transaction`]: server transactions, client branches and their timers (§17).
//! - [`auth`]: digest authentication with stateless nonces and failure throttling.
//! - [`directory`]: the per-node cache of users and services.
//! - [`handover`]: the session token and service URL in the answer the caller gets.
//! - [`registrar`]: REGISTER bindings (§10.3).
//! - [`throttle`]: counting wrong credentials per source.

pub mod auth;
pub mod directory;
pub mod handover;
pub mod proxy;
pub mod registrar;
pub mod throttle;
pub mod transaction;
