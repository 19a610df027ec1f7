//! SIP building blocks with no business rules: parsing and reading messages ([`message`]),
//! building the ones the relay writes itself ([`builders`]), stream framing ([`framing`]),
//! transports ([`transport`]), request validation ([`validate`]) and the server-side digest
//! check ([`digest`]).

pub mod builders;
pub mod digest;
pub mod framing;
pub mod message;
pub mod transport;
pub mod validate;
