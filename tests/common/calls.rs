//! A confirmed call between a raw client and a raw application server, and requests inside
//! it from either side.

use super::raw::{self, Client, Peer, RawUdp, LIMIT};
use std::net::SocketAddr;

/// A confirmed call from `client` to `shop` (service1): the INVITE the client sent, the 200
/// it got, and the INVITE the shop got (with the address it came from).
pub struct Call {
    pub invite: String,
    pub ok: String,
    pub at_shop: String,
    pub relay_at_shop: SocketAddr,
}

pub async fn call(client: &Client, to: SocketAddr, shop: &RawUdp) -> Call {
    let invite = raw::authenticated_invite(client, to).await;
    let (at_shop, relay_at_shop) = shop.recv_within(LIMIT).await;
    shop.send_to(
        raw::ok_200(&at_shop, "shop", shop.addr, "UDP"),
        relay_at_shop,
    )
    .await;
    let ok = raw::next_where(client, |m| raw::status(m) == Some(200)).await;
    client
        .send_to(raw::in_dialog(client, "ACK", &invite, &ok, 2), to)
        .await;
    raw::next_where(shop, |m| raw::method(m) == Some("ACK")).await;
    Call {
        invite,
        ok,
        at_shop,
        relay_at_shop,
    }
}

/// The final response (not a 100 Trying) whose CSeq is `cseq`.
pub async fn final_for(peer: &impl Peer, cseq: &str) -> String {
    raw::next_where(peer, |m| {
        raw::status(m).is_some_and(|s| s >= 200) && raw::header(m, "CSeq") == Some(cseq)
    })
    .await
}

/// A request from the shop inside the call's dialog, toward the caller.
pub fn from_shop(shop: &RawUdp, call: &Call, method: &str, cseq: u32, body: &str) -> String {
    let caller = raw::header(&call.at_shop, "Contact")
        .map(|c| {
            c.trim_start_matches('<')
                .split('>')
                .next()
                .unwrap()
                .to_string()
        })
        .unwrap();
    raw::message(
        &format!("{method} {caller} SIP/2.0"),
        &[
            format!("Via: SIP/2.0/UDP {};branch={}", shop.addr, raw::branch()),
            format!(
                "Route: {}",
                raw::header(&call.at_shop, "Record-Route").unwrap()
            ),
            format!(
                "From: {};tag=shop",
                raw::header(&call.at_shop, "To").unwrap()
            ),
            format!("To: {}", raw::header(&call.at_shop, "From").unwrap()),
            format!(
                "Call-ID: {}",
                raw::header(&call.at_shop, "Call-ID").unwrap()
            ),
            format!("CSeq: {cseq} {method}"),
            "Max-Forwards: 70".into(),
            "Content-Type: text/plain".into(),
        ],
        body,
    )
}

/// A request from the caller inside the call's dialog, with a body.
pub fn from_caller(client: &Client, call: &Call, method: &str, cseq: u32, body: &str) -> String {
    let text = raw::in_dialog(client, method, &call.invite, &call.ok, cseq);
    let head = text.trim_end_matches("Content-Length: 0\r\n\r\n");
    format!(
        "{head}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}
