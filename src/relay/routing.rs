//! Where the relay is and where a request goes next: the relay's own identity (what it writes
//! into Via and Record-Route, and how it recognises its own URIs), the branch ids it creates,
//! loop detection, and Route processing (RFC 3261 §16.4, §16.6, §16.3 step 4).
//!
//! Branches the relay creates read `z9hG4bK-<loop hash>-<random>-<node>`:
//! - the loop hash covers the fields that identify a request independently of the hop
//!   (§16.6 step 8), so a request that comes back through this node is recognised (482);
//! - 64 random bits make the branch unpredictable, so nobody can compute the branch of a
//!   request in flight and answer it in the application server's place (the transaction layer
//!   also accepts a response only from the address the branch went to);
//! - the node id at the end names the owner, so a response that reaches another node of the
//!   cluster can later be handed to the node that owns the transaction.

use crate::config::Protocol;
use crate::sip::message::{self as msg, format_host_port};
use rsipstack::sip::{Header, Host, Request, Route, Uri};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

/// The RFC 3261 magic cookie every branch starts with.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// The relay's own addresses, as written into Via and Record-Route.
#[derive(Debug, Clone)]
pub struct LocalIdentity {
    /// The host written into Via and Record-Route (an IP address or a name).
    pub host: String,
    /// The port of each transport we listen on (the first listener of each).
    pub ports: Vec<(Protocol, u16)>,
    /// Every address we are bound to or known by (to recognise our own Route entries).
    pub hosts: Vec<String>,
    /// The served domain: a URI naming it without a port names the relay too.
    pub domain: String,
    /// This node's id, written at the end of every branch it creates.
    pub node: String,
}

impl LocalIdentity {
    /// Our port for `protocol` (another transport's when we do not listen on it).
    pub fn port(&self, protocol: Protocol) -> u16 {
        self.ports
            .iter()
            .find(|(p, _)| *p == protocol)
            .or(self.ports.first())
            .map_or(5060, |(_, port)| *port)
    }

    fn is_our_port(&self, port: u16) -> bool {
        self.ports.iter().any(|(_, p)| *p == port)
    }

    /// `host:port` as written into Via and Record-Route (an IPv6 address bracketed).
    pub fn sent_by(&self, protocol: Protocol) -> String {
        let port = self.port(protocol);
        match self.host.parse::<IpAddr>() {
            Ok(ip) => format_host_port(SocketAddr::new(ip, port)),
            Err(_) => format!("{}:{port}", self.host),
        }
    }

    /// Our Via value for a request leaving over `protocol`.
    pub fn via(&self, protocol: Protocol, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {};branch={branch}",
            protocol.via_name(),
            self.sent_by(protocol)
        )
    }

    /// Our Record-Route value for requests that reach us over `protocol`.
    pub fn record_route(&self, protocol: Protocol) -> String {
        match protocol {
            Protocol::Udp => format!("<sip:{};lr>", self.sent_by(protocol)),
            _ => format!(
                "<sip:{};transport={};lr>",
                self.sent_by(protocol),
                protocol.as_str()
            ),
        }
    }

    /// The Record-Route lines for a request that came in over `inbound` and leaves over
    /// `outbound`, topmost first. When the transports differ the relay records its route
    /// twice (RFC 5658), so each side is given a URI it can reach us at: the callee the
    /// top one, the caller (which reverses the set) the bottom one.
    pub fn record_routes(&self, inbound: Protocol, outbound: Protocol) -> Vec<String> {
        if inbound == outbound {
            vec![self.record_route(inbound)]
        } else {
            vec![self.record_route(outbound), self.record_route(inbound)]
        }
    }

    /// Whether a Via sent-by is one of ours.
    pub fn is_our_sent_by(&self, sent_by: &str) -> bool {
        let (host, port) = msg::host_port(sent_by);
        self.is_our_host(host) && self.is_our_port(port.unwrap_or(5060))
    }

    fn is_our_host(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case(&self.host) || self.hosts.iter().any(|h| h == host)
    }

    /// Whether a URI names this relay: the served domain without a port, or one of our
    /// addresses with one of our ports.
    pub fn is_me(&self, uri: &Uri) -> bool {
        let host = uri.host_with_port.host.to_string();
        let port = uri.host_with_port.port.map(u16::from);
        if host.eq_ignore_ascii_case(&self.domain) && port.is_none() {
            return true;
        }
        self.is_our_host(&host) && self.is_our_port(port.unwrap_or(5060))
    }

    /// A fresh branch for a request we send (see the module docs for its parts).
    pub fn new_branch(&self, loop_hash: &str) -> String {
        format!(
            "{MAGIC_COOKIE}-{loop_hash}-{:016x}-{}",
            rand::random::<u64>(),
            self.node
        )
    }

    /// RFC 3261 §16.3 step 4: our own Via carrying the branch this request would get means
    /// the request has been here before with the same identity (a loop).
    pub fn is_loop(&self, req: &Request) -> bool {
        let mut our_branches = req.headers.iter().filter_map(|h| match h {
            Header::Via(v) => msg::via_info(v.value())
                .filter(|info| self.is_our_sent_by(info.sent_by))
                .and_then(|info| info.branch),
            _ => None,
        });
        // Most requests have never been here: no hash to compute for them.
        let Some(first) = our_branches.next() else {
            return false;
        };
        let prefix = format!("{MAGIC_COOKIE}-{}-", loop_hash(req));
        std::iter::once(first)
            .chain(our_branches)
            .any(|b| b.starts_with(&prefix))
    }

    /// RFC 3261 §16.4: if the Request-URI is one we put into a Record-Route (a strict router
    /// upstream moved it there), the real Request-URI is the last Route: put it back. Then
    /// the Route entries naming us at the top are removed (loose routing).
    pub fn preprocess_routes(&self, req: &mut Request) {
        let mut routes = route_values(req);
        let strict = req.uri.auth.is_none() && self.is_me(&req.uri) && !routes.is_empty();
        if strict {
            let last = routes.pop().expect("not empty");
            if let Ok(uri) = Uri::try_from(msg::addr_uri(&last)) {
                req.uri = uri;
            }
        }
        let ours = routes
            .iter()
            .take_while(|r| Uri::try_from(msg::addr_uri(r)).is_ok_and(|u| self.is_me(&u)))
            .count();
        if ours > 0 || strict {
            set_routes(req, &routes[ours..]);
        }
    }
}

/// Sanitises a node id for use inside a branch (an RFC 3261 `token`).
pub fn branch_safe(node: &str) -> String {
    let safe: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    if safe.is_empty() {
        "node".into()
    } else {
        safe
    }
}

/// Hash of the fields that identify a request hop-independently (RFC 3261 §16.6 step 8).
pub fn loop_hash(req: &Request) -> String {
    let mut h = DefaultHasher::new();
    req.uri.to_string().hash(&mut h);
    msg::from_tag(&req.headers).hash(&mut h);
    msg::to_tag(&req.headers).hash(&mut h);
    msg::call_id(&req.headers).hash(&mut h);
    msg::cseq(&req.headers).map(|(n, _)| n).hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The loop hash of a request the relay makes itself inside a dialog (no request to hash).
pub fn loop_hash_of(call_id: &str, cseq: u32) -> String {
    let mut h = DefaultHasher::new();
    call_id.hash(&mut h);
    cseq.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Every Route value of a request, in order (lists split).
pub fn route_values(req: &Request) -> Vec<String> {
    req.headers
        .iter()
        .filter_map(|h| match h {
            Header::Route(r) => Some(r.value()),
            _ => None,
        })
        .flat_map(msg::split_list)
        .map(str::to_string)
        .collect()
}

/// Replaces the Route headers with `routes`, where the first Route stood (else after the
/// Vias).
fn set_routes(req: &mut Request, routes: &[String]) {
    let at = req
        .headers
        .iter()
        .position(|h| matches!(h, Header::Route(_)))
        .or_else(|| {
            req.headers
                .iter()
                .position(|h| !matches!(h, Header::Via(_)))
        })
        .unwrap_or(req.headers.len());
    req.headers.retain(|h| !matches!(h, Header::Route(_)));
    let at = at.min(req.headers.len());
    for (j, r) in routes.iter().enumerate() {
        req.headers
            .0
            .insert(at + j, Header::Route(Route::new(r.as_str())));
    }
}

/// A place a message can be sent: a transport and an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Hop {
    pub protocol: Protocol,
    pub addr: SocketAddr,
}

/// The hop a URI names, when its host is an IP address (names are never resolved on the
/// message path).
pub fn uri_hop(uri: &Uri) -> Option<Hop> {
    let Host::IpAddr(ip) = uri.host_with_port.host else {
        return None;
    };
    let port = uri.host_with_port.port.map(u16::from).unwrap_or(5060);
    Some(Hop {
        protocol: crate::relay::directory::uri_protocol(uri),
        addr: SocketAddr::new(ip, port),
    })
}

/// Where a request goes next by its own headers: the first Route, else the Request-URI.
pub fn next_hop(req: &Request) -> Option<Hop> {
    match route_values(req).first() {
        Some(r) => uri_hop(&Uri::try_from(msg::addr_uri(r)).ok()?),
        None => uri_hop(&req.uri),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsipstack::sip::SipMessage;

    fn me() -> LocalIdentity {
        LocalIdentity {
            host: "10.0.0.5".into(),
            ports: vec![
                (Protocol::Udp, 5060),
                (Protocol::Tcp, 5061),
                (Protocol::Ws, 5066),
            ],
            hosts: vec!["10.0.0.5".into(), "127.0.0.1".into()],
            domain: "portal.com".into(),
            node: "n1".into(),
        }
    }

    fn request(text: &str) -> Request {
        match msg::parse(text.as_bytes()) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn bye(uri: &str, routes: &[&str]) -> Request {
        let mut t = format!(
            "BYE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n\
From: <sip:a@portal.com>;tag=f\r\nTo: <sip:s@portal.com>;tag=t\r\nCall-ID: c\r\nCSeq: 2 BYE\r\n"
        );
        for r in routes {
            t.push_str(&format!("Route: {r}\r\n"));
        }
        t.push_str("Content-Length: 0\r\n\r\n");
        request(&t)
    }

    #[test]
    fn identity_brackets_ipv6_and_recognises_itself() {
        let mut id = me();
        assert_eq!(id.sent_by(Protocol::Tcp), "10.0.0.5:5061");
        assert_eq!(
            id.record_route(Protocol::Tcp),
            "<sip:10.0.0.5:5061;transport=tcp;lr>"
        );
        assert!(id.is_our_sent_by("10.0.0.5:5060"));
        assert!(id.is_our_sent_by("127.0.0.1:5061"));
        assert!(!id.is_our_sent_by("10.0.0.5:5070"));
        assert!(!id.is_our_sent_by("10.0.0.6:5060"));
        assert_eq!(
            id.record_routes(Protocol::Ws, Protocol::Udp),
            vec![
                "<sip:10.0.0.5:5060;lr>".to_string(),
                "<sip:10.0.0.5:5066;transport=ws;lr>".to_string()
            ],
            "double Record-Route between transports, the callee's on top"
        );
        assert_eq!(id.record_routes(Protocol::Udp, Protocol::Udp).len(), 1);
        assert!(id.is_me(&Uri::try_from("sip:portal.com").unwrap()));
        assert!(!id.is_me(&Uri::try_from("sip:portal.com:5080").unwrap()));
        id.host = "2001:db8::5".into();
        id.hosts.push("2001:db8::5".into());
        assert_eq!(id.sent_by(Protocol::Udp), "[2001:db8::5]:5060");
        assert_eq!(
            id.via(Protocol::Udp, "z9hG4bK-x"),
            "SIP/2.0/UDP [2001:db8::5]:5060;branch=z9hG4bK-x"
        );
        assert!(id.is_our_sent_by("[2001:db8::5]:5060"));
    }

    #[test]
    fn branches_are_unpredictable_and_name_the_node() {
        let id = me();
        let a = id.new_branch("00ff");
        let b = id.new_branch("00ff");
        assert_ne!(a, b);
        assert!(a.starts_with("z9hG4bK-00ff-"));
        assert!(a.ends_with("-n1"));
        assert_eq!(branch_safe("node 1/a"), "node_1_a");
    }

    #[test]
    fn a_request_carrying_our_via_with_its_own_loop_hash_is_a_loop() {
        let id = me();
        let mut req = bye("sip:s@10.0.0.9", &[]);
        assert!(!id.is_loop(&req));
        let via = id.via(Protocol::Udp, &id.new_branch(&loop_hash(&req)));
        req.headers
            .0
            .insert(0, Header::Via(rsipstack::sip::Via::new(via)));
        assert!(id.is_loop(&req));
    }

    #[test]
    fn our_routes_are_popped_and_the_next_one_is_the_hop() {
        let id = me();
        let mut req = bye(
            "sip:s@10.0.0.9:5070",
            &[
                "<sip:10.0.0.5:5060;lr>",
                "<sip:10.0.0.7:5080;transport=tcp;lr>",
            ],
        );
        id.preprocess_routes(&mut req);
        assert_eq!(
            route_values(&req),
            vec!["<sip:10.0.0.7:5080;transport=tcp;lr>"]
        );
        assert_eq!(
            next_hop(&req),
            Some(Hop {
                protocol: Protocol::Tcp,
                addr: "10.0.0.7:5080".parse().unwrap()
            })
        );
        let mut direct = bye("sip:s@10.0.0.9:5070", &["<sip:10.0.0.5:5060;lr>"]);
        id.preprocess_routes(&mut direct);
        assert!(route_values(&direct).is_empty());
        assert_eq!(
            next_hop(&direct).unwrap().addr,
            "10.0.0.9:5070".parse().unwrap()
        );
    }

    #[test]
    fn a_strict_router_upstream_gets_its_request_uri_restored() {
        let id = me();
        // A strict router put our Record-Route URI into the Request-URI and the real target last.
        let mut req = bye("sip:10.0.0.5:5060;lr", &["<sip:s@10.0.0.9:5070>"]);
        id.preprocess_routes(&mut req);
        assert_eq!(req.uri.to_string(), "sip:s@10.0.0.9:5070");
        assert!(route_values(&req).is_empty());
    }

    #[test]
    fn host_names_are_not_hops() {
        assert_eq!(
            uri_hop(&Uri::try_from("sip:shop.example.com").unwrap()),
            None
        );
        assert_eq!(
            uri_hop(&Uri::try_from("sip:[2001:db8::1]:5070").unwrap())
                .unwrap()
                .addr,
            "[2001:db8::1]:5070".parse().unwrap()
        );
    }
}
