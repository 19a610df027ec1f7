//! Request validation before anything else looks at a request (RFC 3261 §16.3 step 1 and
//! §8.2.2): a request that fails is answered with a [`Rejection`] — 400 with a reason phrase
//! naming the problem, 505 for another SIP version, 416 for a URI scheme we do not serve —
//! and never reaches authentication, so it is never challenged.
//!
//! A missing Via is not checked here: such a request cannot be answered at all and is dropped
//! by the caller.

use crate::sip::message as msg;
use rsipstack::sip::{Header, Method, Request, Scheme, Version};

/// The answer to a request that failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    /// The reason phrase, naming the problem.
    pub reason: &'static str,
}

const fn bad(reason: &'static str) -> Rejection {
    Rejection {
        status: 400,
        reason,
    }
}

/// The largest CSeq number (RFC 3261 §8.1.1.5: less than 2³¹).
const MAX_CSEQ: u32 = (1 << 31) - 1;

/// Checks what a proxy must be able to rely on in a request.
pub fn validate_request(req: &Request) -> Result<(), Rejection> {
    match req.version {
        Version::V2 | Version::V(2, 0) => {}
        Version::V(..) => {
            return Err(Rejection {
                status: 505,
                reason: "Version Not Supported",
            })
        }
    }
    match &req.uri.scheme {
        None | Some(Scheme::Sip) | Some(Scheme::Sips) => {}
        Some(Scheme::Other(_)) => {
            return Err(Rejection {
                status: 416,
                reason: "Unsupported URI Scheme",
            })
        }
    }
    let mut counts = Counts::default();
    for h in req.headers.iter() {
        match h {
            Header::CallId(_) => counts.call_id += 1,
            Header::From(_) => counts.from += 1,
            Header::To(_) => counts.to += 1,
            Header::CSeq(_) => counts.cseq += 1,
            Header::MaxForwards(_) => counts.max_forwards += 1,
            Header::ContentLength(_) => counts.content_length += 1,
            Header::Via(v) if msg::via_info(v.value()).is_none() => {
                return Err(bad("Malformed Via"))
            }
            _ => {}
        }
    }
    once(counts.call_id, "Missing Call-ID", "Duplicate Call-ID")?;
    once(counts.from, "Missing From", "Duplicate From")?;
    once(counts.to, "Missing To", "Duplicate To")?;
    once(counts.cseq, "Missing CSeq", "Duplicate CSeq")?;
    if counts.max_forwards > 1 {
        return Err(bad("Duplicate Max-Forwards"));
    }
    if msg::call_id(&req.headers).is_some_and(str::is_empty) {
        return Err(bad("Empty Call-ID"));
    }
    for (value, what) in [
        (msg::from_value(&req.headers), "Malformed From"),
        (msg::to_value(&req.headers), "Malformed To"),
    ] {
        if value.is_none_or(|v| !msg::addr_uri(v).contains(':')) {
            return Err(bad(what));
        }
    }
    let Some((number, method)) = msg::cseq(&req.headers) else {
        return Err(bad("Malformed CSeq"));
    };
    if number > MAX_CSEQ {
        return Err(bad("CSeq number out of range"));
    }
    if method.parse::<Method>().ok() != Some(req.method) {
        return Err(bad("CSeq method does not match the request"));
    }
    if let Some(Err(())) = msg::max_forwards(&req.headers) {
        return Err(bad("Bad Max-Forwards"));
    }
    if msg::max_forwards(&req.headers).is_some_and(|m| m.is_ok_and(|n| n > 255)) {
        return Err(bad("Bad Max-Forwards"));
    }
    content_length(req)
}

#[derive(Default)]
struct Counts {
    call_id: usize,
    from: usize,
    to: usize,
    cseq: usize,
    max_forwards: usize,
    content_length: usize,
}

fn once(n: usize, missing: &'static str, duplicate: &'static str) -> Result<(), Rejection> {
    match n {
        0 => Err(bad(missing)),
        1 => Ok(()),
        _ => Err(bad(duplicate)),
    }
}

/// Every Content-Length must be a number, all the same, and no larger than the body (a
/// shorter body is caught by the parser as truncated; a longer one on a datagram is cut).
fn content_length(req: &Request) -> Result<(), Rejection> {
    let mut declared = None;
    for h in req.headers.iter() {
        if let Header::ContentLength(v) = h {
            let text = v.value().trim();
            if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("Bad Content-Length"));
            }
            let n: usize = text.parse().map_err(|_| bad("Bad Content-Length"))?;
            match declared {
                Some(d) if d != n => return Err(bad("Conflicting Content-Length")),
                _ => declared = Some(n),
            }
        }
    }
    match declared {
        Some(n) if n > req.body.len() => Err(bad("Body shorter than Content-Length")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsipstack::sip::SipMessage;

    const GOOD: &str = "INVITE sip:service1@portal.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:alice@portal.com>;tag=1\r\n\
        To: <sip:service1@portal.com>\r\n\
        Call-ID: abc\r\n\
        CSeq: 1 INVITE\r\n\
        Content-Length: 2\r\n\r\n{}";

    fn request(text: &str) -> Request {
        match msg::parse(text.as_bytes()) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    fn verdict(text: &str) -> Result<(), Rejection> {
        validate_request(&request(text))
    }

    fn without(line: &str) -> String {
        GOOD.replace(&format!("{line}\r\n"), "")
    }

    #[test]
    fn a_good_request_passes() {
        assert_eq!(verdict(GOOD), Ok(()));
        assert_eq!(verdict(&without("Max-Forwards: 70")), Ok(()));
        assert_eq!(
            verdict(&without("Content-Length: 2").replace("{}", "")),
            Ok(())
        );
    }

    #[test]
    fn missing_headers_are_named() {
        for (line, reason) in [
            ("Call-ID: abc", "Missing Call-ID"),
            ("From: <sip:alice@portal.com>;tag=1", "Missing From"),
            ("To: <sip:service1@portal.com>", "Missing To"),
            ("CSeq: 1 INVITE", "Missing CSeq"),
        ] {
            assert_eq!(verdict(&without(line)), Err(bad(reason)), "{line}");
        }
    }

    #[test]
    fn duplicates_and_malformed_values_are_named() {
        let dup = |line: &str| GOOD.replace(line, &format!("{line}\r\n{line}"));
        assert_eq!(verdict(&dup("Call-ID: abc")), Err(bad("Duplicate Call-ID")));
        assert_eq!(verdict(&dup("CSeq: 1 INVITE")), Err(bad("Duplicate CSeq")));
        assert_eq!(
            verdict(&dup("Max-Forwards: 70")),
            Err(bad("Duplicate Max-Forwards"))
        );
        assert_eq!(
            verdict(&GOOD.replace("CSeq: 1 INVITE", "CSeq: 1 BYE")),
            Err(bad("CSeq method does not match the request"))
        );
        assert_eq!(
            verdict(&GOOD.replace("CSeq: 1 INVITE", "CSeq: INVITE")),
            Err(bad("Malformed CSeq"))
        );
        assert_eq!(
            verdict(&GOOD.replace("CSeq: 1 INVITE", "CSeq: 4294967295 INVITE")),
            Err(bad("CSeq number out of range"))
        );
        assert_eq!(
            verdict(&GOOD.replace("Max-Forwards: 70", "Max-Forwards: seventy")),
            Err(bad("Bad Max-Forwards"))
        );
        assert_eq!(
            verdict(&GOOD.replace("Max-Forwards: 70", "Max-Forwards: 256")),
            Err(bad("Bad Max-Forwards"))
        );
        assert_eq!(
            verdict(&GOOD.replace(
                "Content-Length: 2",
                "Content-Length: 1\r\nContent-Length: 2"
            )),
            Err(bad("Conflicting Content-Length"))
        );
        assert_eq!(
            verdict(&GOOD.replace("Content-Length: 2", "Content-Length: -2")),
            Err(bad("Bad Content-Length"))
        );
        assert_eq!(
            verdict(&GOOD.replace("From: <sip:alice@portal.com>;tag=1", "From: nobody")),
            Err(bad("Malformed From"))
        );
        assert_eq!(
            verdict(&GOOD.replace(
                "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1",
                "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\nVia: garbage"
            )),
            Err(bad("Malformed Via"))
        );
    }

    #[test]
    fn another_version_or_scheme() {
        assert_eq!(
            verdict(&GOOD.replacen("SIP/2.0\r\n", "SIP/7.0\r\n", 1)),
            Err(Rejection {
                status: 505,
                reason: "Version Not Supported"
            })
        );
    }
}
