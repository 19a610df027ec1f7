//! Building the UAC's requests and responses as text, and reading the few header fields it
//! needs out of parsed messages.
//!
//! Requests are plain formatted text (the header order a human expects to read in a trace);
//! incoming messages are parsed by `rsipstack::sip`, whose headers are kept as raw values,
//! so list splitting and parameter lookup live here.

use std::fmt::Write as _;

use rsipstack::sip::{HasHeaders, Request, Response};

use crate::sip::message::split_list;

/// `User-Agent` of `tollgate call`.
pub const USER_AGENT: &str = concat!("tollgate-call/", env!("CARGO_PKG_VERSION"));

/// Everything needed to write one request.
#[derive(Debug, Clone, Default)]
pub struct RequestSpec<'a> {
    pub method: &'a str,
    pub request_uri: &'a str,
    /// The whole `Via` value, e.g. `SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK…`.
    pub via: &'a str,
    /// `Route` values, in order, each a name-addr such as `<sip:relay;lr>`.
    pub route: &'a [String],
    pub from: &'a str,
    pub to: &'a str,
    pub call_id: &'a str,
    pub cseq: u32,
    pub contact: Option<&'a str>,
    /// Further `(name, value)` headers, e.g. `Authorization`.
    pub extra: &'a [(&'a str, String)],
    /// `(content type, body)`.
    pub body: Option<(&'a str, &'a [u8])>,
}

/// Writes a request: start line, headers, `Content-Length`, body.
pub fn build_request(spec: &RequestSpec<'_>) -> Vec<u8> {
    let mut s = String::with_capacity(512);
    let _ = write!(s, "{} {} SIP/2.0\r\n", spec.method, spec.request_uri);
    let _ = write!(s, "Via: {}\r\n", spec.via);
    s.push_str("Max-Forwards: 70\r\n");
    for r in spec.route {
        let _ = write!(s, "Route: {r}\r\n");
    }
    let _ = write!(s, "From: {}\r\n", spec.from);
    let _ = write!(s, "To: {}\r\n", spec.to);
    let _ = write!(s, "Call-ID: {}\r\n", spec.call_id);
    let _ = write!(s, "CSeq: {} {}\r\n", spec.cseq, spec.method);
    if let Some(c) = spec.contact {
        let _ = write!(s, "Contact: {c}\r\n");
    }
    for (name, value) in spec.extra {
        let _ = write!(s, "{name}: {value}\r\n");
    }
    let _ = write!(s, "User-Agent: {USER_AGENT}\r\n");
    let body: &[u8] = match spec.body {
        Some((ct, b)) => {
            let _ = write!(s, "Content-Type: {ct}\r\n");
            b
        }
        None => &[],
    };
    let _ = write!(s, "Content-Length: {}\r\n\r\n", body.len());
    let mut bytes = s.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A response to `req` (RFC 3261 §8.2.6.2): Via, From, To, Call-ID and CSeq copied; a To tag
/// added when the request had none.
pub fn build_response(
    req: &Request,
    code: u16,
    reason: &str,
    to_tag: &str,
    contact: Option<&str>,
) -> Vec<u8> {
    let mut s = format!("SIP/2.0 {code} {reason}\r\n");
    for h in req.headers().iter() {
        let name = h.name();
        let value = h.value();
        if name.eq_ignore_ascii_case("Via")
            || name.eq_ignore_ascii_case("From")
            || name.eq_ignore_ascii_case("Call-ID")
            || name.eq_ignore_ascii_case("CSeq")
        {
            let _ = write!(s, "{name}: {value}\r\n");
        } else if name.eq_ignore_ascii_case("To") {
            if header_param(value, "tag").is_some() {
                let _ = write!(s, "To: {value}\r\n");
            } else {
                let _ = write!(s, "To: {value};tag={to_tag}\r\n");
            }
        }
    }
    if let Some(c) = contact {
        let _ = write!(s, "Contact: {c}\r\n");
    }
    let _ = write!(s, "User-Agent: {USER_AGENT}\r\nContent-Length: 0\r\n\r\n");
    s.into_bytes()
}

/// A fresh RFC 3261 branch (`z9hG4bK` magic cookie and 64 random bits).
pub fn new_branch() -> String {
    format!("z9hG4bK{}", random_hex())
}

/// 64 random bits as 16 hex digits (tags, cnonces).
pub fn random_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Every value of the header `name` (canonical or compact name, case-insensitive), in order.
pub fn header_values<'m>(msg: &'m impl HasHeaders, name: &str) -> Vec<&'m str> {
    msg.headers()
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value().trim())
        .collect()
}

/// The first value of the header `name`.
pub fn header_value<'m>(msg: &'m impl HasHeaders, name: &str) -> Option<&'m str> {
    msg.headers()
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value().trim())
}

/// A header parameter (`;name=value`) of a name-addr or addr-spec header value (To, From,
/// Contact, Via). With angle brackets only the parameters after `>` count.
pub fn header_param(value: &str, name: &str) -> Option<String> {
    let params = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value.split_once(';').map_or("", |(_, p)| p),
    };
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The URI of a name-addr (`"Shop" <sip:shop@10.0.0.1>;expires=60` → `sip:shop@10.0.0.1`) or
/// addr-spec (`sip:shop@10.0.0.1;expires=60` → `sip:shop@10.0.0.1`).
pub fn uri_of(value: &str) -> &str {
    let v = value.trim();
    if let (Some(a), Some(b)) = (v.find('<'), v.rfind('>')) {
        if a < b {
            return v[a + 1..b].trim();
        }
    }
    v.split(';').next().unwrap_or("").trim()
}

/// `(number, method)` of the CSeq header.
pub fn cseq_of(msg: &impl HasHeaders) -> Option<(u32, String)> {
    let v = header_value(msg, "CSeq")?;
    let mut parts = v.split_whitespace();
    let n = parts.next()?.parse().ok()?;
    let m = parts.next()?.to_string();
    Some((n, m))
}

/// The branch of the topmost Via.
pub fn top_via_branch(msg: &impl HasHeaders) -> Option<String> {
    let via = header_value(msg, "Via")?;
    let top = split_list(via).into_iter().next()?;
    // A Via has no angle brackets: its parameters follow the first ';'.
    header_param(top, "branch")
}

/// The reason phrase as received (falls back to the standard text of the code).
pub fn reason_of(resp: &Response) -> String {
    resp.wire_reason
        .clone()
        .unwrap_or_else(|| resp.status_code.text().to_string())
}

/// `SIP/2.0 200 OK`.
pub fn status_line(resp: &Response) -> String {
    format!("SIP/2.0 {} {}", resp.status_code.code(), reason_of(resp))
}

/// Every `Record-Route` entry, in the order received.
pub fn record_route(resp: &Response) -> Vec<String> {
    header_values(resp, "Record-Route")
        .into_iter()
        .flat_map(split_list)
        .map(str::to_string)
        .collect()
}

/// Request-URI and Route headers for an in-dialog request (RFC 3261 §12.2.1.1): with a
/// loose-routing first hop (`;lr`) the Request-URI is the remote target and the route set is
/// sent as is; with a strict router the first route becomes the Request-URI and the remote
/// target goes last.
pub fn in_dialog_routing(route_set: &[String], remote_target: &str) -> (String, Vec<String>) {
    match route_set.first() {
        Some(first) if !uri_has_lr(first) => {
            let mut route: Vec<String> = route_set[1..].to_vec();
            route.push(format!("<{remote_target}>"));
            (uri_of(first).to_string(), route)
        }
        _ => (remote_target.to_string(), route_set.to_vec()),
    }
}

fn uri_has_lr(name_addr: &str) -> bool {
    uri_of(name_addr).split(';').skip(1).any(|p| {
        let k = p.split('=').next().unwrap_or("").trim();
        k.eq_ignore_ascii_case("lr")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsipstack::sip::SipMessage;

    #[test]
    fn request_layout() {
        let extra = [("Authorization", "Digest x".to_string())];
        let route = ["<sip:10.0.0.9;lr>".to_string()];
        let bytes = build_request(&RequestSpec {
            method: "INVITE",
            request_uri: "sip:service1@portal.com",
            via: "SIP/2.0/UDP 10.0.0.1:5062;rport;branch=z9hG4bKabc",
            route: &route,
            from: "<sip:alice@portal.com>;tag=1",
            to: "<sip:service1@portal.com>",
            call_id: "c1",
            cseq: 2,
            contact: Some("<sip:alice@10.0.0.1:5062>"),
            extra: &extra,
            body: Some(("application/json", br#"{"item":"wine"}"#)),
        });
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("INVITE sip:service1@portal.com SIP/2.0\r\nVia: SIP/2.0/UDP"));
        for line in [
            "Max-Forwards: 70\r\n",
            "Route: <sip:10.0.0.9;lr>\r\n",
            "CSeq: 2 INVITE\r\n",
            "Authorization: Digest x\r\n",
            "Content-Type: application/json\r\n",
            "Content-Length: 15\r\n\r\n{\"item\":\"wine\"}",
        ] {
            assert!(text.contains(line), "{line:?} in {text}");
        }
        // rsipstack parses it back.
        let SipMessage::Request(req) = SipMessage::try_from(&bytes[..]).unwrap() else {
            panic!("not a request");
        };
        assert_eq!(req.body, br#"{"item":"wine"}"#);
        assert_eq!(top_via_branch(&req).as_deref(), Some("z9hG4bKabc"));
        assert_eq!(cseq_of(&req), Some((2, "INVITE".into())));
    }

    #[test]
    fn response_copies_transaction_headers() {
        let raw = "BYE sip:alice@10.0.0.1:5062 SIP/2.0\r\n\
                   Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKr1, SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKs1\r\n\
                   Via: SIP/2.0/UDP 10.0.0.6;branch=z9hG4bKt1\r\n\
                   From: <sip:service1@portal.com>;tag=shop\r\n\
                   To: <sip:alice@portal.com>;tag=me\r\n\
                   Call-ID: c1\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n";
        let SipMessage::Request(req) = SipMessage::try_from(raw).unwrap() else {
            panic!()
        };
        let text = String::from_utf8(build_response(&req, 200, "OK", "zzz", None)).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"));
        assert!(text.contains(
            "Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKr1, SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKs1\r\nVia: SIP/2.0/UDP 10.0.0.6;branch=z9hG4bKt1\r\n"
        ));
        assert!(text.contains("To: <sip:alice@portal.com>;tag=me\r\n"));
        assert!(text.contains("CSeq: 7 BYE\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
        let SipMessage::Response(resp) = SipMessage::try_from(text.as_str()).unwrap() else {
            panic!()
        };
        assert_eq!(top_via_branch(&resp).as_deref(), Some("z9hG4bKr1"));

        let raw = raw.replace(";tag=me", "");
        let SipMessage::Request(req) = SipMessage::try_from(raw.as_str()).unwrap() else {
            panic!()
        };
        let text = String::from_utf8(build_response(
            &req,
            481,
            "Call/Transaction Does Not Exist",
            "zzz",
            None,
        ))
        .unwrap();
        assert!(text.contains("To: <sip:alice@portal.com>;tag=zzz\r\n"));
    }

    #[test]
    fn params_uris_and_lists() {
        assert_eq!(
            header_param("<sip:a@b;tag=no>;tag=yes;x", "TAG").as_deref(),
            Some("yes")
        );
        assert_eq!(header_param("sip:a@b;tag=t1", "tag").as_deref(), Some("t1"));
        assert_eq!(header_param("<sip:a@b;tag=no>", "tag"), None);
        assert_eq!(
            uri_of("\"Shop, Inc\" <sip:shop@10.0.0.1:5070;transport=tcp>;expires=60"),
            "sip:shop@10.0.0.1:5070;transport=tcp"
        );
        assert_eq!(uri_of("sip:shop@10.0.0.1;expires=60"), "sip:shop@10.0.0.1");
        assert_eq!(
            split_list("<sip:a;lr>, \"x,y\" <sip:b;lr>,<sip:c,d>"),
            vec!["<sip:a;lr>", "\"x,y\" <sip:b;lr>", "<sip:c,d>"]
        );
        assert!(new_branch().starts_with("z9hG4bK"));
        assert_ne!(new_branch(), new_branch());
    }

    #[test]
    fn route_set_is_reversed_record_route_and_strict_routing() {
        let raw = "SIP/2.0 200 OK\r\n\
                   Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n\
                   Record-Route: <sip:shop-proxy;lr>, <sip:relay2;lr>\r\n\
                   Record-Route: <sip:relay1;lr>\r\n\
                   From: <sip:a@b>;tag=1\r\nTo: <sip:s@b>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
                   Content-Length: 0\r\n\r\n";
        let SipMessage::Response(resp) = SipMessage::try_from(raw).unwrap() else {
            panic!()
        };
        let mut rs = record_route(&resp);
        assert_eq!(
            rs,
            vec!["<sip:shop-proxy;lr>", "<sip:relay2;lr>", "<sip:relay1;lr>"]
        );
        rs.reverse();
        let (ruri, route) = in_dialog_routing(&rs, "sip:shop@10.0.0.7:5070");
        assert_eq!(ruri, "sip:shop@10.0.0.7:5070");
        assert_eq!(route[0], "<sip:relay1;lr>");

        let strict = vec!["<sip:old-proxy>".to_string(), "<sip:next;lr>".to_string()];
        let (ruri, route) = in_dialog_routing(&strict, "sip:shop@10.0.0.7");
        assert_eq!(ruri, "sip:old-proxy");
        assert_eq!(route, vec!["<sip:next;lr>", "<sip:shop@10.0.0.7>"]);

        let (ruri, route) = in_dialog_routing(&[], "sip:shop@10.0.0.7");
        assert_eq!(ruri, "sip:shop@10.0.0.7");
        assert!(route.is_empty());
    }
}
