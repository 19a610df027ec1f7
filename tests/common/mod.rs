//! Helpers shared by the integration tests: fresh databases, a relay on port 0, sipp, and a
//! raw SIP peer on a UDP socket.
#![allow(dead_code)]

pub mod calls;
pub mod db;
pub mod demo;
pub mod process;
pub mod raw;
pub mod relay;
pub mod sipp;
pub mod tools;
