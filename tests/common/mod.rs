//! Helpers shared by the integration tests: fresh databases, a relay on port 0, sipp, a raw
//! SIP peer on a UDP socket, and waiting for background writes.
#![allow(dead_code)]

pub mod calls;
pub mod db;
pub mod demo;
pub mod process;
pub mod raw;
pub mod relay;
pub mod sipp;
pub mod tools;
pub mod wait;
