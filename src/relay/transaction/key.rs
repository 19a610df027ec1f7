//! Transaction keys (RFC 3261 §17.2.3): which server transaction a request belongs to.

use crate::sip::message as msg;
use rsipstack::sip::Request;

/// Identifies a server transaction: `branch|sent-by|METHOD`, or for RFC 2543 peers without
/// a magic-cookie branch `call-id|from-tag|cseq|METHOD`.
pub type ServerKey = String;

/// The key of a request whose top Via is `via`; `None` when it lacks what a key needs.
pub fn server_key(req: &Request, via: &msg::ViaInfo<'_>) -> Option<ServerKey> {
    let method = req.method;
    match via.branch {
        Some(b) if b.starts_with("z9hG4bK") => Some(format!("{b}|{}|{method}", via.sent_by)),
        _ => {
            let call_id = msg::call_id(&req.headers)?;
            let from = msg::from_tag(&req.headers).unwrap_or("");
            let (seq, _) = msg::cseq(&req.headers)?;
            Some(format!("{call_id}|{from}|{seq}|{method}"))
        }
    }
}

/// The key of the INVITE transaction an ACK or CANCEL with key `key` refers to.
pub fn invite_key_of(key: &str) -> ServerKey {
    match key.rsplit_once('|') {
        Some((prefix, _)) => format!("{prefix}|INVITE"),
        None => key.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsipstack::sip::SipMessage;

    fn req(text: &str) -> Request {
        match msg::parse(text.as_bytes()) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cancel_and_ack_find_their_invite() {
        let r = req(
            "CANCEL sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h:1;branch=z9hG4bKx\r\n\
From: <sip:u@b>;tag=1\r\nCall-ID: c\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
        );
        let via = msg::via_info(msg::top_via(&r.headers).unwrap()).unwrap();
        let key = server_key(&r, &via).unwrap();
        assert_eq!(key, "z9hG4bKx|h:1|CANCEL");
        assert_eq!(invite_key_of(&key), "z9hG4bKx|h:1|INVITE");
    }

    #[test]
    fn rfc2543_peers_are_keyed_by_dialog_fields() {
        let r = req("BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h:1;branch=old\r\n\
From: <sip:u@b>;tag=1\r\nCall-ID: c\r\nCSeq: 4 BYE\r\nContent-Length: 0\r\n\r\n");
        let via = msg::via_info(msg::top_via(&r.headers).unwrap()).unwrap();
        assert_eq!(server_key(&r, &via).unwrap(), "c|1|4|BYE");
    }
}
