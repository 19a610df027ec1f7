//! Helpers shared by the integration tests: fresh databases, a relay on port 0, sipp.
#![allow(dead_code)]

pub mod db;
pub mod relay;
pub mod sipp;
