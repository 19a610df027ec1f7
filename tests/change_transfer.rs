//! Changing a session mid-way and transferring to a second service (DESIGN.md flows 4 and 5),
//! on a real relay and real sockets, the caller over UDP and over TCP:
//!
//! - re-INVITE from the caller and from the application server, UPDATE, a refused
//!   re-INVITE (488), and glare (491): the session, its clock and its token carry on, and
//!   every change is recorded with its answer;
//! - REFER to service2: 202, NOTIFYs 100 and 200 (with the second shop's URL and a new
//!   token), a second session timed and billed on its own, the first going on; REFER to an
//!   unknown service ends with a NOTIFY carrying 404; a new INVITE for service2 is simply a
//!   second session.

mod common;

use common::calls::{call, final_for, from_caller, from_shop, Call};
use common::raw::{self, Client, Peer, RawUdp, LIMIT};
use common::relay::{client_for, sessions_after_shutdown, start_relay, Seed, TestRelay, DOMAIN};
use std::net::SocketAddr;
use tollgate::config::Protocol;
use tollgate::sip::digest;
use tollgate::store::{ForkMode, Party, SessionState};

// ------------------------------------------------------------------------ change

async fn changes(protocol: Protocol) {
    let shop = RawUdp::bind().await;
    let relay = start_relay(Seed {
        app_servers: vec![format!("sip:{}", shop.addr)],
    })
    .await;
    let (client, to) = client_for(&relay, protocol).await;
    let call = call(&client, to, &shop).await;
    let session = raw::header(&call.ok, "Tollgate-Session-Id")
        .unwrap()
        .to_string();

    // 1. The caller asks for beer instead of wine: re-INVITE, 200, ACK.
    client
        .send_to(from_caller(&client, &call, "INVITE", 3, "beer"), to)
        .await;
    let reinvite = raw::next_where(&shop, |m| raw::method(m) == Some("INVITE")).await;
    assert!(reinvite.ends_with("beer"), "{reinvite}");
    shop.send_to(
        raw::response(&reinvite, "200 OK", "shop", &[]),
        call.relay_at_shop,
    )
    .await;
    let ok = final_for(&client, "3 INVITE").await;
    assert_eq!(raw::status(&ok), Some(200), "{ok}");
    client
        .send_to(
            raw::in_dialog(&client, "ACK", &call.invite, &call.ok, 3),
            to,
        )
        .await;
    let ack = raw::next_where(&shop, |m| raw::method(m) == Some("ACK")).await;
    assert_eq!(raw::header(&ack, "CSeq"), Some("3 ACK"));

    // 2. The shop changes the offer itself: its re-INVITE reaches the caller.
    shop.send_to(
        from_shop(&shop, &call, "INVITE", 1, "beer, 0.5 l"),
        call.relay_at_shop,
    )
    .await;
    let from_shop_invite = raw::next_where(&client, |m| raw::method(m) == Some("INVITE")).await;
    client
        .send_to(raw::response(&from_shop_invite, "200 OK", "x", &[]), to)
        .await;
    let ok = raw::next_where(&shop, |m| {
        raw::status(m) == Some(200) && raw::header(m, "CSeq") == Some("1 INVITE")
    })
    .await;
    assert_eq!(raw::status(&ok), Some(200));

    // 3. An UPDATE from the caller: no ACK needed.
    client
        .send_to(from_caller(&client, &call, "UPDATE", 4, "dark beer"), to)
        .await;
    let update = raw::next_where(&shop, |m| raw::method(m) == Some("UPDATE")).await;
    shop.send_to(
        raw::response(&update, "200 OK", "shop", &[]),
        call.relay_at_shop,
    )
    .await;
    final_for(&client, "4 UPDATE").await;

    // 4. A refused change leaves the session as it was.
    client
        .send_to(from_caller(&client, &call, "INVITE", 5, "champagne"), to)
        .await;
    let refused = raw::next_where(&shop, |m| raw::method(m) == Some("INVITE")).await;
    shop.send_to(
        raw::response(&refused, "488 Not Acceptable Here", "shop", &[]),
        call.relay_at_shop,
    )
    .await;
    let answer = final_for(&client, "5 INVITE").await;
    assert_eq!(raw::status(&answer), Some(488));

    // 5. Glare: the caller's re-INVITE is out, the shop's crosses it: 491 for the shop's.
    client
        .send_to(from_caller(&client, &call, "INVITE", 6, "white wine"), to)
        .await;
    let pending = raw::next_where(&shop, |m| raw::method(m) == Some("INVITE")).await;
    shop.send_to(
        from_shop(&shop, &call, "INVITE", 2, "red wine"),
        call.relay_at_shop,
    )
    .await;
    let glare = final_for(&shop, "2 INVITE").await;
    assert_eq!(raw::status(&glare), Some(491), "{glare}");
    shop.send_to(
        raw::response(&pending, "200 OK", "shop", &[]),
        call.relay_at_shop,
    )
    .await;
    final_for(&client, "6 INVITE").await;
    client
        .send_to(
            raw::in_dialog(&client, "ACK", &call.invite, &call.ok, 6),
            to,
        )
        .await;

    // The session lives on, one session, and every change is on it with its answer.
    client
        .send_to(
            raw::in_dialog(&client, "BYE", &call.invite, &call.ok, 7),
            to,
        )
        .await;
    let bye = raw::next_where(&shop, |m| raw::method(m) == Some("BYE")).await;
    shop.send_to(
        raw::response(&bye, "200 OK", "shop", &[]),
        call.relay_at_shop,
    )
    .await;
    final_for(&client, "7 BYE").await;
    let store = relay.store.clone();
    let rows = sessions_after_shutdown(relay).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, SessionState::Terminated);
    let changes = store.session_changes(&session).await.unwrap();
    let seen: Vec<_> = changes
        .iter()
        .map(|c| (c.party, c.method.as_str(), c.body.as_str(), c.status))
        .collect();
    assert_eq!(
        seen,
        vec![
            (Party::Caller, "INVITE", "beer", 200),
            (Party::Callee, "INVITE", "beer, 0.5 l", 200),
            (Party::Caller, "UPDATE", "dark beer", 200),
            (Party::Caller, "INVITE", "champagne", 488),
            (Party::Caller, "INVITE", "white wine", 200),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_from_either_side_refusals_and_glare_over_udp() {
    changes(Protocol::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_from_either_side_refusals_and_glare_over_tcp() {
    changes(Protocol::Tcp).await;
}

// ------------------------------------------------------------------------ transfer

/// A relay with service1 at `shop1` and service2 at `shop2`.
async fn two_services(shop1: &RawUdp, shop2: &RawUdp) -> TestRelay {
    let relay = start_relay(Seed {
        app_servers: vec![format!("sip:{}", shop1.addr)],
    })
    .await;
    relay
        .store
        .add_app_server("beershop", &format!("sip:{}", shop2.addr))
        .await
        .unwrap();
    relay
        .store
        .add_service(
            &format!("service2@{DOMAIN}"),
            &["beershop".to_string()],
            ForkMode::FirstAnswer,
        )
        .await
        .unwrap();
    relay.relay.reload_directory().await.unwrap();
    relay
}

/// Sends REFER (answering the relay's challenge) and returns the 202.
async fn refer(client: &Client, to: SocketAddr, call: &Call, refer_to: &str, cseq: u32) -> String {
    let with = |cseq: u32, auth: Option<String>| {
        let text = raw::in_dialog(client, "REFER", &call.invite, &call.ok, cseq);
        let mut extra = format!("Refer-To: {refer_to}\r\n");
        if let Some(a) = auth {
            extra.push_str(&format!("Proxy-Authorization: {a}\r\n"));
        }
        text.replacen(
            "Content-Length: 0\r\n",
            &format!("{extra}Content-Length: 0\r\n"),
            1,
        )
    };
    client.send_to(with(cseq, None), to).await;
    let challenge = final_for(client, &format!("{cseq} REFER")).await;
    assert_eq!(raw::status(&challenge), Some(407), "{challenge}");
    let ch = digest::choose_challenge(raw::headers(&challenge, "Proxy-Authenticate")).unwrap();
    let target = raw::header(&call.ok, "Contact")
        .map(|c| {
            c.trim_start_matches('<')
                .split('>')
                .next()
                .unwrap()
                .to_string()
        })
        .unwrap();
    let credentials = digest::answer(&ch, "REFER", &target, "alice", "secret", 1, "cn1");
    client.send_to(with(cseq + 1, Some(credentials)), to).await;
    final_for(client, &format!("{} REFER", cseq + 1)).await
}

/// The next NOTIFY at the caller, answered 200.
async fn next_notify(client: &Client, to: SocketAddr) -> String {
    let notify = raw::next_where(client, |m| raw::method(m) == Some("NOTIFY")).await;
    client
        .send_to(raw::response(&notify, "200 OK", "x", &[]), to)
        .await;
    notify
}

async fn transfer(protocol: Protocol) {
    let (shop1, shop2) = (RawUdp::bind().await, RawUdp::bind().await);
    let relay = two_services(&shop1, &shop2).await;
    let (client, to) = client_for(&relay, protocol).await;
    let call = call(&client, to, &shop1).await;

    let accepted = refer(&client, to, &call, "<sip:service2@portal.com?body=beer>", 3).await;
    assert_eq!(raw::status(&accepted), Some(202), "{accepted}");
    let trying = next_notify(&client, to).await;
    assert_eq!(raw::header(&trying, "Event"), Some("refer"));
    assert!(trying.contains("SIP/2.0 100 Trying"), "{trying}");

    // The relay calls service2 for the user, with a token of its own.
    let (inv2, from2) = shop2.recv_within(LIMIT).await;
    assert_eq!(raw::method(&inv2), Some("INVITE"), "{inv2}");
    assert!(inv2.ends_with("beer"), "{inv2}");
    assert!(raw::header(&inv2, "From")
        .unwrap()
        .contains("alice@portal.com"));
    let token1 = raw::header(&call.at_shop, "Tollgate-Session-Token").unwrap();
    let token2 = raw::header(&inv2, "Tollgate-Session-Token").unwrap();
    assert_ne!(token1, token2);
    shop2
        .send_to(raw::ok_200(&inv2, "beer", shop2.addr, "UDP"), from2)
        .await;
    let ack = raw::next_where(&shop2, |m| raw::method(m) == Some("ACK")).await;
    assert!(raw::header(&ack, "To").unwrap().contains("tag=beer"));

    let done = next_notify(&client, to).await;
    assert!(done.contains("SIP/2.0 200 OK"), "{done}");
    assert!(
        raw::header(&done, "Subscription-State")
            .unwrap()
            .starts_with("terminated"),
        "{done}"
    );
    let sipfrag = done.split_once("\r\n\r\n").unwrap().1;
    let handed_over: serde_json::Value =
        serde_json::from_str(sipfrag.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(handed_over["url"], "https://shop.example/wine");
    assert!(handed_over["token"].as_str().is_some_and(|t| !t.is_empty()));

    // The first session goes on: the caller ends it later; the second shop ends its own.
    client
        .send_to(
            raw::in_dialog(&client, "BYE", &call.invite, &call.ok, 5),
            to,
        )
        .await;
    let bye = raw::next_where(&shop1, |m| raw::method(m) == Some("BYE")).await;
    shop1
        .send_to(
            raw::response(&bye, "200 OK", "shop", &[]),
            call.relay_at_shop,
        )
        .await;
    final_for(&client, "5 BYE").await;
    let contact = raw::header(&ack, "Contact").map(str::to_string);
    let _ = contact;
    let bye2 = raw::message(
        &format!("BYE sip:{} SIP/2.0", relay.udp()),
        &[
            format!("Via: SIP/2.0/UDP {};branch={}", shop2.addr, raw::branch()),
            format!("From: {}", raw::header(&ack, "To").unwrap()),
            format!("To: {}", raw::header(&ack, "From").unwrap()),
            format!("Call-ID: {}", raw::header(&ack, "Call-ID").unwrap()),
            "CSeq: 1 BYE".into(),
            "Max-Forwards: 70".into(),
        ],
        "",
    );
    shop2.send_to(&bye2, relay.udp()).await;
    let ok = raw::next_where(&shop2, |m| raw::status(m).is_some()).await;
    assert_eq!(raw::status(&ok), Some(200), "{ok}");

    let rows = sessions_after_shutdown(relay).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter().all(|r| r.state == SessionState::Terminated),
        "{rows:?}"
    );
    assert!(rows
        .iter()
        .any(|r| r.service == "service2@portal.com" && r.caller == "alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refer_opens_a_second_session_with_notifies_over_udp() {
    transfer(Protocol::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refer_opens_a_second_session_with_notifies_over_tcp() {
    transfer(Protocol::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refer_to_an_unknown_service_ends_with_a_notify_carrying_404() {
    let (shop1, shop2) = (RawUdp::bind().await, RawUdp::bind().await);
    let relay = two_services(&shop1, &shop2).await;
    let (client, to) = client_for(&relay, Protocol::Udp).await;
    let call = call(&client, to, &shop1).await;
    let accepted = refer(&client, to, &call, "<sip:nosuch@portal.com>", 3).await;
    assert_eq!(raw::status(&accepted), Some(202));
    next_notify(&client, to).await;
    let done = next_notify(&client, to).await;
    assert!(done.contains("SIP/2.0 404 Not Found"), "{done}");
    relay.relay.shutdown().await;
}
