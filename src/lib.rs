//! Tollgate: a SIP relay that lends a telecom operator's user authentication, session control
//! and billing to application servers that are not telephones.
//!
//! The modules, from the wire inwards:
//! - [`sip`]: SIP message helpers, transports (UDP, TCP) and the server-side digest check.
//!   No business rules live here.
//! - [`relay`]: the stateful proxy core: transactions (RFC 3261 §17), registrar,
//!   authentication, the service directory, dialogs and session timing.
//! - [`tokens`]: session tokens (JWT): signing keys and their rotation, minting, the JWK set,
//!   and the verifier an application server can use.
//! - [`billing`]: tariffs and time charges, item charges (exactly once), the ledger,
//!   statements per user and settlements per shop.
//! - [`notify`]: signed webhooks from an outbox, retried with backoff; their verification.
//! - [`store`]: sea-orm entities and queries, and the group-commit session writer.
//! - [`api`]: the HTTP side: REST API under `/v1` (problem+json errors, API keys, rate
//!   limits), its OpenAPI document and docs UI, the JWK set, `/healthz`, `/readyz`, `/metrics`.
//! - [`web`]: the browser client and the console (files in `web/`, compiled in).
//! - [`client`]: the `tollgate call` SIP client terminal.
//! - [`shop`]: `tollgate shop`, the reference application server integrators read.
//! - [`config`]: layered configuration (defaults → `tollgate.toml` → `TOLLGATE_*`).
//! - [`metrics`]: Prometheus counters shared by the relay core and the HTTP layer.
//! - [`node`]: the node's stable id and the digest nonce keys shared through the database.
//! - [`clock`]: the injected wall clock used for everything that is billed.
//! - [`demo`]: `tollgate demo`, a relay, two shops and their data in one process.
//! - [`app`]: builds and runs everything from a config; reports bound addresses.

pub mod api;
pub mod app;
pub mod billing;
pub mod client;
pub mod clock;
pub mod config;
pub mod demo;
pub mod metrics;
pub mod node;
pub mod notify;
pub mod relay;
pub mod shop;
pub mod sip;
pub mod store;
pub mod tokens;
pub mod web;
