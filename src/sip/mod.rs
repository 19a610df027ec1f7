//! SIP building blocks with no business rules: message helpers, transports and the
//! server-side digest check.

pub mod digest;
pub mod message;
pub mod transport;
