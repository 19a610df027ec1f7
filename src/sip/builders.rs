//! Messages the relay writes itself: responses to requests it received, the ACK and CANCEL
//! that belong to an INVITE it forwarded (RFC 3261 §9.1, §17.1.1.3), and requests it sends
//! inside a dialog on its own account (an ACK and BYE for an answer nobody wants any more, a
//! BYE that ends a session). No business rules: callers decide when to send what.

use crate::sip::message::{self as msg, ToWire};
use bytes::Bytes;
use rsipstack::sip::{
    CSeq, CallId, ContentLength, ContentType, From, Header, Headers, MaxForwards, Method, Request,
    Response, Route, SipMessage, StatusCode, To, Uri, Version, Via,
};

/// Builds a response to `req` carrying its Via, From, To (with `to_tag` added when the To has
/// none and the status is above 100), Call-ID and CSeq.
pub fn response_to(req: &Request, status: u16, to_tag: Option<&str>) -> Response {
    let mut headers = Headers::default();
    for h in req.headers.iter() {
        match h {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(h.clone())
            }
            Header::To(v) => {
                let mut value = v.value().to_string();
                if let Some(tag) = to_tag.filter(|_| status > 100 && msg::tag_of(&value).is_none())
                {
                    value.push_str(";tag=");
                    value.push_str(tag);
                }
                headers.push(Header::To(To::new(value)));
            }
            _ => {}
        }
    }
    headers.push(Header::ContentLength(ContentLength::new("0")));
    Response {
        status_code: StatusCode::from(status),
        version: Version::V2,
        headers,
        body: Vec::new(),
        wire_reason: None,
    }
}

/// `wire` (a serialized response) with its reason phrase replaced by `reason`, which names
/// the problem (rsipstack always writes the standard phrase). Control characters in `reason`
/// are dropped so it cannot break the start line.
pub fn with_reason_phrase(wire: &[u8], reason: &str) -> Bytes {
    let Some(eol) = wire.windows(2).position(|w| w == b"\r\n") else {
        return Bytes::copy_from_slice(wire);
    };
    let start = &wire[..eol];
    // `SIP/2.0 400 Bad Request`: keep the version and the code.
    let mut parts = start.splitn(3, |b| *b == b' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Bytes::copy_from_slice(wire);
    };
    let mut out = Vec::with_capacity(wire.len() + reason.len());
    out.extend_from_slice(version);
    out.push(b' ');
    out.extend_from_slice(code);
    out.push(b' ');
    out.extend(reason.bytes().filter(|b| !b.is_ascii_control()));
    out.extend_from_slice(&wire[eol..]);
    Bytes::from(out)
}

/// A `Warning: 399` header (RFC 3261 §20.43) explaining a response the relay generated.
pub fn warning(text: &str) -> Header {
    Header::Warning(rsipstack::sip::Warning::new(format!(
        "399 tollgate \"{text}\""
    )))
}

/// The hop-by-hop ACK for a non-2xx final response to the INVITE we sent as `invite`
/// (RFC 3261 §17.1.1.3): same Request-URI, Via (ours), From, Call-ID, CSeq number and Route;
/// the To of the response.
pub fn ack_for_failure(invite: &[u8], resp: &Response) -> Option<Bytes> {
    let to = msg::to_value(&resp.headers)?;
    request_for_invite(invite, Method::Ack, Some(to))
}

/// A CANCEL for the INVITE we sent as `invite` (RFC 3261 §9.1): same Request-URI, top Via,
/// From, To, Call-ID, CSeq number and Route.
pub fn cancel_for(invite: &[u8]) -> Option<Bytes> {
    request_for_invite(invite, Method::Cancel, None)
}

/// A response we make up for an INVITE we forwarded as `invite` that got no answer in time
/// (408) or was cancelled (487): its Via is the one upstream of ours.
pub fn synthetic_response(invite: &[u8], status: u16, to_tag: &str) -> Option<Response> {
    let Ok(SipMessage::Request(forwarded)) = msg::parse(invite) else {
        return None;
    };
    let mut resp = response_to(&forwarded, status, Some(to_tag));
    msg::pop_top_via(&mut resp.headers);
    Some(resp)
}

fn request_for_invite(wire: &[u8], method: Method, to: Option<&str>) -> Option<Bytes> {
    let Ok(SipMessage::Request(invite)) = msg::parse(wire) else {
        return None;
    };
    let (seq, _) = msg::cseq(&invite.headers)?;
    let mut headers = Headers::default();
    if let Some(v) = invite.headers.iter().find(|h| matches!(h, Header::Via(_))) {
        headers.push(v.clone());
    }
    for h in invite.headers.iter() {
        match h {
            Header::From(_) | Header::CallId(_) | Header::Route(_) | Header::MaxForwards(_) => {
                headers.push(h.clone())
            }
            Header::To(_) if to.is_none() => headers.push(h.clone()),
            _ => {}
        }
    }
    if let Some(to) = to {
        headers.push(Header::To(To::new(to)));
    }
    headers.push(Header::CSeq(CSeq::new(format!("{seq} {method}"))));
    headers.push(Header::ContentLength(ContentLength::new("0")));
    let request = Request {
        method,
        uri: invite.uri,
        version: Version::V2,
        headers,
        body: Vec::new(),
    };
    Some(Bytes::from(request.to_wire()))
}

/// A request the relay sends inside a dialog on its own account.
#[derive(Debug, Clone)]
pub struct DialogRequest<'a> {
    pub method: Method,
    /// The remote target (the peer's Contact).
    pub target: &'a Uri,
    /// Our Via value (with a fresh branch).
    pub via: &'a str,
    /// The From value: the side the relay speaks for, with its tag.
    pub from: &'a str,
    /// The To value: the peer, with its tag.
    pub to: &'a str,
    pub call_id: &'a str,
    pub cseq: u32,
    /// Route values toward the peer, in order.
    pub routes: &'a [String],
    /// Extra headers (e.g. `Reason`, `Event`).
    pub extra: Vec<Header>,
    /// A body and its content type.
    pub body: Option<(&'a str, &'a [u8])>,
}

impl DialogRequest<'_> {
    pub fn to_bytes(&self) -> Bytes {
        let mut headers = Headers::default();
        headers.push(Header::Via(Via::new(self.via)));
        for r in self.routes {
            headers.push(Header::Route(Route::new(r.as_str())));
        }
        headers.push(Header::MaxForwards(MaxForwards::new("70")));
        headers.push(Header::From(From::new(self.from)));
        headers.push(Header::To(To::new(self.to)));
        headers.push(Header::CallId(CallId::new(self.call_id)));
        headers.push(Header::CSeq(CSeq::new(format!(
            "{} {}",
            self.cseq, self.method
        ))));
        for h in &self.extra {
            headers.push(h.clone());
        }
        let body = match self.body {
            Some((content_type, body)) => {
                headers.push(Header::ContentType(ContentType::new(content_type)));
                body.to_vec()
            }
            None => Vec::new(),
        };
        headers.push(Header::ContentLength(ContentLength::new(
            body.len().to_string(),
        )));
        let request = Request {
            method: self.method,
            uri: self.target.clone(),
            version: Version::V2,
            headers,
            body,
        };
        Bytes::from(request.to_wire())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:shop@10.0.0.9:5070 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-ours\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;received=10.0.0.1\r\n\
Record-Route: <sip:10.0.0.5:5060;lr>\r\n\
Route: <sip:10.0.0.7;lr>\r\n\
From: \"Alice\" <sip:alice@portal.com>;tag=abc\r\n\
To: <sip:service1@portal.com>\r\n\
Call-ID: c1@h\r\n\
CSeq: 7 INVITE\r\n\
Max-Forwards: 69\r\n\
Content-Length: 4\r\n\r\nwine";

    fn text(b: &[u8]) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn reason_phrase_is_replaced_and_sanitised() {
        let wire = b"SIP/2.0 400 Bad Request\r\nCSeq: 1 INVITE\r\n\r\n";
        assert_eq!(
            text(&with_reason_phrase(wire, "Missing Call-ID")),
            "SIP/2.0 400 Missing Call-ID\r\nCSeq: 1 INVITE\r\n\r\n"
        );
        assert_eq!(
            text(&with_reason_phrase(wire, "a\r\nX: y")),
            "SIP/2.0 400 aX: y\r\nCSeq: 1 INVITE\r\n\r\n"
        );
        assert_eq!(&with_reason_phrase(b"junk", "x")[..], b"junk");
    }

    fn request(text: &str) -> Request {
        match msg::parse(text.as_bytes()) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn response_copies_dialog_headers_and_adds_to_tag() {
        let r = request(INVITE);
        let resp = response_to(&r, 404, Some("t1"));
        let text = String::from_utf8(resp.to_bytes()).unwrap();
        assert!(text.starts_with("SIP/2.0 404 Not Found\r\n"), "{text}");
        assert!(
            text.contains("To: <sip:service1@portal.com>;tag=t1"),
            "{text}"
        );
        assert!(text.contains("CSeq: 7 INVITE"));
        assert!(text.contains("Content-Length: 0"));
        let trying = String::from_utf8(response_to(&r, 100, Some("t1")).to_bytes()).unwrap();
        assert!(!trying.contains("tag=t1"));
    }

    #[test]
    fn cancel_keeps_the_invites_branch_route_and_cseq_number() {
        let cancel = text(&cancel_for(INVITE.as_bytes()).unwrap());
        assert!(cancel.starts_with("CANCEL sip:shop@10.0.0.9:5070 SIP/2.0\r\n"));
        assert!(cancel.contains("branch=z9hG4bK-ours"));
        assert!(!cancel.contains("z9hG4bK1"), "only our Via: {cancel}");
        assert!(cancel.contains("Route: <sip:10.0.0.7;lr>"));
        assert!(cancel.contains("CSeq: 7 CANCEL"));
        assert!(cancel.contains("To: <sip:service1@portal.com>\r\n"));
        assert!(!cancel.contains("wine"));
    }

    #[test]
    fn ack_for_a_failure_takes_the_responses_to_tag() {
        let resp = synthetic_response(INVITE.as_bytes(), 486, "x9").unwrap();
        let ack = text(&ack_for_failure(INVITE.as_bytes(), &resp).unwrap());
        assert!(ack.starts_with("ACK sip:shop@10.0.0.9:5070 SIP/2.0\r\n"));
        assert!(ack.contains("To: <sip:service1@portal.com>;tag=x9"));
        assert!(ack.contains("CSeq: 7 ACK"));
    }

    #[test]
    fn synthetic_responses_go_upstream_of_our_via() {
        let resp = synthetic_response(INVITE.as_bytes(), 408, "t").unwrap();
        let vias: Vec<_> = resp
            .headers
            .iter()
            .filter(|h| matches!(h, Header::Via(_)))
            .collect();
        assert_eq!(vias.len(), 1);
        assert!(vias[0].to_string().contains("z9hG4bK1"));
    }

    #[test]
    fn dialog_request_has_route_set_and_cseq() {
        let target = Uri::try_from("sip:shop@10.0.0.9:5070").unwrap();
        let routes = vec!["<sip:10.0.0.7;lr>".to_string()];
        let bye = DialogRequest {
            method: Method::Bye,
            target: &target,
            via: "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-x",
            from: "<sip:alice@portal.com>;tag=abc",
            to: "<sip:service1@portal.com>;tag=x9",
            call_id: "c1@h",
            cseq: 8,
            routes: &routes,
            extra: Vec::new(),
            body: Some(("text/plain", b"bye")),
        };
        let t = text(&bye.to_bytes());
        assert!(
            t.starts_with("BYE sip:shop@10.0.0.9:5070 SIP/2.0\r\n"),
            "{t}"
        );
        assert!(t.contains("Route: <sip:10.0.0.7;lr>\r\n"));
        assert!(t.contains("CSeq: 8 BYE\r\n"));
        assert!(t.contains("To: <sip:service1@portal.com>;tag=x9\r\n"));
        assert!(
            t.ends_with("Content-Type: text/plain\r\nContent-Length: 3\r\n\r\nbye"),
            "{t}"
        );
        assert!(matches!(
            msg::parse(t.as_bytes()),
            Ok(SipMessage::Request(_))
        ));
    }
}
