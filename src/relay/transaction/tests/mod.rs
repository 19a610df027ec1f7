//! The transaction engine driven through the in-memory transport, one file per rule. Timers
//! run on tokio's paused clock: nothing sleeps for real.

mod test_cancel_until_answered;
mod test_late_2xx_after_giving_up;
mod test_only_the_asked_may_answer;
mod test_retransmissions_and_timeouts;
mod test_server_answers_retransmissions;

use super::*;
use crate::config::{Listen, Protocol};
use crate::metrics::Metrics;
use crate::relay::routing::LocalIdentity;
use crate::sip::message as msg;
use crate::sip::transport::{Flow, Transports};
use bytes::Bytes;
use rsipstack::sip::{Method, Request, Response, SipMessage};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;

pub const T1: Duration = Duration::from_millis(500);
pub const APP: &str = "10.0.0.9:5070";
pub const CLIENT: &str = "10.0.0.1:5062";

pub fn local() -> LocalIdentity {
    LocalIdentity {
        host: "10.0.0.5".into(),
        ports: vec![(Protocol::Udp, 5060), (Protocol::Tcp, 5060)],
        hosts: vec!["10.0.0.5".into()],
        domain: "portal.com".into(),
        node: "n1".into(),
    }
}

pub fn udp(addr: &str) -> Flow {
    Flow {
        protocol: Protocol::Udp,
        remote: addr.parse().unwrap(),
        local: 0,
    }
}

pub struct Harness {
    pub engine: Engine<u32>,
    pub wire: mpsc::UnboundedReceiver<(Flow, Bytes)>,
}

impl Harness {
    pub fn new() -> Harness {
        let listen: Listen = "udp:10.0.0.5:5060".parse().unwrap();
        let (transports, wire) = Transports::memory(vec![listen]);
        Harness {
            engine: Engine::new(transports, Metrics::new(), T1),
            wire,
        }
    }

    /// What the engine sent since the last call.
    pub fn sent(&mut self) -> Vec<(SocketAddr, String)> {
        let mut out = Vec::new();
        while let Ok((flow, bytes)) = self.wire.try_recv() {
            out.push((flow.remote, String::from_utf8_lossy(&bytes).into_owned()));
        }
        out
    }

    /// Runs the engine's timers until `until` of paused time has passed, collecting expiries.
    pub async fn run_timers(&mut self, until: Duration) -> Vec<Expiry<u32>> {
        let deadline = tokio::time::Instant::now() + until;
        let mut expired = Vec::new();
        loop {
            let next = std::future::poll_fn(|cx| self.engine.poll_timer(cx));
            match tokio::time::timeout_at(deadline, next).await {
                Ok(Some(timer)) => expired.extend(self.engine.on_timer(timer)),
                Ok(None) | Err(_) => return expired,
            }
        }
    }

    /// Sends an INVITE (or `method`) to the app server as branch `branch` with owner `owner`.
    pub fn send(&mut self, method: Method, branch: &str, owner: u32) -> Bytes {
        let wire = Bytes::from(request(method, branch).to_bytes());
        self.engine.send(Outgoing {
            branch: branch.into(),
            method,
            wire: wire.clone(),
            flow: udp(APP),
            also_from: Vec::new(),
            owner,
        });
        wire
    }
}

pub fn request(method: Method, branch: &str) -> Request {
    let text = format!(
        "{method} sip:shop@{APP} SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.5:5060;branch={branch}\r\n\
Via: SIP/2.0/UDP {CLIENT};branch=z9hG4bKclient\r\n\
From: <sip:alice@portal.com>;tag=a1\r\nTo: <sip:service1@portal.com>\r\n\
Call-ID: call-1\r\nCSeq: 1 {method}\r\nMax-Forwards: 69\r\nContent-Length: 0\r\n\r\n"
    );
    match msg::parse(text.as_bytes()) {
        Ok(SipMessage::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

/// A response to the request we sent on `branch`.
pub fn response(status: u16, method: Method, branch: &str) -> Response {
    let text = format!(
        "SIP/2.0 {status} Whatever\r\n\
Via: SIP/2.0/UDP 10.0.0.5:5060;branch={branch}\r\n\
Via: SIP/2.0/UDP {CLIENT};branch=z9hG4bKclient\r\n\
From: <sip:alice@portal.com>;tag=a1\r\nTo: <sip:service1@portal.com>;tag=s1\r\n\
Call-ID: call-1\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    );
    match msg::parse(text.as_bytes()) {
        Ok(SipMessage::Response(r)) => r,
        other => panic!("{other:?}"),
    }
}
