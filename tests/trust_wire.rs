//! The relay trusts only what it asked for (issue "trust the wire", sections 1 and 3), on a
//! real relay and real sockets, UDP and TCP:
//!
//! - an answer forged from another address for a live branch is dropped and the caller gets
//!   the real one; a response whose top Via is not ours is dropped and reflected nowhere;
//! - a retransmitted 2xx carries the same hand-over (URL and token) as the first;
//! - a 2xx that comes after the relay gave up on its branch is relayed while the caller can
//!   take it, else ACKed and ended with a BYE by the relay;
//! - `received`/`rport` reach the application server in the client's Via;
//! - a TCP client gets its responses and the application server's BYE down its own
//!   connection, and a CRLF ping gets a pong;
//! - requests in an early dialog (PRACK, UPDATE) pass;
//! - a captured `Proxy-Authorization` buys nothing: replayed (same `nc`), from another
//!   address, or computed for another service's URI, it gets a fresh challenge and nothing
//!   reaches the app server; a nonce issued before a restart still works after it;
//! - a bad-password flood from one address does not stop the same user calling from
//!   another, and a flood of spoofed or foreign nonces does not throttle the victim.

mod common;

use common::raw::{self, Client, Peer, RawTcp, RawUdp, LIMIT};
use common::relay::{
    client_for, client_from, sessions_after_shutdown, start_relay, start_relay_with, test_config,
    Seed, TestRelay,
};
use std::net::SocketAddr;
use std::sync::Arc;
use tollgate::app;
use tollgate::clock::SystemClock;
use tollgate::config::Protocol;
use tollgate::store::SessionState;

fn uas_uri(app: &impl Peer) -> String {
    match app.transport() {
        "TCP" => format!("sip:{};transport=tcp", app.local()),
        _ => format!("sip:{}", app.local()),
    }
}

/// A relay whose services are delivered by a raw UDP application server, and that server.
async fn relay_with_raw_app() -> (TestRelay, RawUdp) {
    let app = RawUdp::bind().await;
    let relay = start_relay(Seed {
        app_servers: vec![uas_uri(&app)],
    })
    .await;
    (relay, app)
}

fn dropped(relay: &TestRelay, reason: &str) -> u64 {
    let text = relay.relay.metrics.render();
    let prefix = format!("tollgate_sip_responses_dropped_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{text}"))
}

// ------------------------------------------------------------------------ forged answers

async fn forged_200_is_dropped_and_the_real_answer_reaches_the_caller(app: impl Peer) {
    let relay = start_relay(Seed {
        app_servers: vec![uas_uri(&app)],
    })
    .await;
    let client = RawUdp::bind().await;
    raw::authenticated_invite(&client, relay.udp()).await;
    let (inv, _) = app.recv_within(LIMIT).await;
    assert_eq!(raw::method(&inv), Some("INVITE"), "{inv}");

    // The client's Via as the app server sees it carries where the request really came from.
    let client_via = raw::headers(&inv, "Via")[1];
    assert!(
        client_via.contains(&format!("rport={}", client.addr.port()))
            && client_via.contains("received=127.0.0.1"),
        "{client_via}"
    );

    // Someone else answers 200 for the live branch, over the app server's transport.
    let forged = raw::ok_200(&inv, "forged", client.addr, app.transport());
    if app.transport() == "TCP" {
        let forger = RawTcp::connect(relay.tcp()).await;
        forger.send_to(&forged, relay.tcp()).await;
        raw::barrier(&forger, relay.tcp()).await;
    } else {
        let forger = RawUdp::bind().await;
        forger.send_to(&forged, relay.udp()).await;
        raw::barrier(&forger, relay.udp()).await;
    }
    assert_eq!(dropped(&relay, "wrong_source"), 1);

    // The real answer is the one the caller gets.
    let busy = raw::response(&inv, "486 Busy Here", "real", &[]);
    app.send_to(&busy, relay.udp()).await;
    let answer = raw::next_non_trying(&client).await;
    assert_eq!(raw::status(&answer), Some(486), "{answer}");
    assert!(answer.contains("tag=real"), "{answer}");
    let rows = sessions_after_shutdown(relay).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, SessionState::Failed);
    assert_eq!(rows[0].final_status, Some(486));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_forged_from_another_address_is_dropped_over_udp() {
    forged_200_is_dropped_and_the_real_answer_reaches_the_caller(RawUdp::bind().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_forged_from_another_connection_is_dropped_over_tcp() {
    forged_200_is_dropped_and_the_real_answer_reaches_the_caller(RawTcp::listen().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_whose_top_via_is_not_ours_is_reflected_nowhere() {
    let (relay, app) = relay_with_raw_app().await;
    let victim = RawUdp::bind().await;
    let forger = RawUdp::bind().await;
    let stray = raw::message(
        "SIP/2.0 200 OK",
        &[
            format!("Via: SIP/2.0/UDP {};branch={}", victim.addr, raw::branch()),
            format!("Via: SIP/2.0/UDP {};branch={}", victim.addr, raw::branch()),
            "From: <sip:a@portal.com>;tag=x".into(),
            "To: <sip:b@portal.com>;tag=y".into(),
            format!("Call-ID: {}", raw::token()),
            "CSeq: 1 INVITE".into(),
        ],
        "",
    );
    forger.send_to(&stray, relay.udp()).await;
    // A response naming the relay's own address but a branch it never made.
    let guessed = stray.replacen(
        &format!("Via: SIP/2.0/UDP {}", victim.addr),
        &format!("Via: SIP/2.0/UDP {}", relay.udp()),
        1,
    );
    forger.send_to(&guessed, relay.udp()).await;
    raw::barrier(&forger, relay.udp()).await;
    assert!(
        !victim.has_pending(),
        "nothing reached the address the Via named"
    );
    assert!(!app.has_pending(), "nothing reached the app server either");
    assert_eq!(dropped(&relay, "foreign_via"), 1);
    assert_eq!(dropped(&relay, "unknown_branch"), 1);
    relay.relay.shutdown().await;
}

// ------------------------------------------------------------------------ the 2xx hand-over

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retransmitted_200_carries_the_url_and_token_like_the_first() {
    let (relay, app) = relay_with_raw_app().await;
    let client = RawUdp::bind().await;
    raw::authenticated_invite(&client, relay.udp()).await;
    let (inv, relay_addr) = app.recv_within(LIMIT).await;
    let ok = raw::ok_200(&inv, "shop", app.addr, "UDP");
    app.send_to(&ok, relay_addr).await;
    let first = raw::next_non_trying(&client).await;
    app.send_to(&ok, relay_addr).await;
    let again = raw::next_non_trying(&client).await;
    for answer in [&first, &again] {
        assert_eq!(raw::status(answer), Some(200), "{answer}");
        let body: serde_json::Value =
            serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["url"], "https://shop.example/wine");
        assert!(
            body["token"].as_str().is_some_and(|t| t.len() > 100),
            "{body}"
        );
        assert!(raw::header(answer, "Tollgate-Session-Token").is_some());
    }
    assert_eq!(
        raw::header(&first, "Tollgate-Session-Token"),
        raw::header(&again, "Tollgate-Session-Token")
    );
    relay.relay.shutdown().await;
}

// ------------------------------------------------------------------------ late answers

#[tokio::test]
async fn a_2xx_after_timer_c_still_reaches_the_caller_and_becomes_a_session() {
    let (relay, app) = relay_with_raw_app().await;
    tokio::time::pause();
    let client = RawUdp::bind().await;
    let invite = raw::authenticated_invite(&client, relay.udp()).await;
    let (inv, relay_addr) = app.recv_within(LIMIT).await;
    app.send_to(raw::response(&inv, "180 Ringing", "shop", &[]), relay_addr)
        .await;
    // Timer C: the relay CANCELs the branch and answers the caller 408.
    let cancel = raw::next_where(&app, |m| raw::method(m) == Some("CANCEL")).await;
    app.send_to(raw::response(&cancel, "200 OK", "shop", &[]), relay_addr)
        .await;
    let answer = raw::next_where(&client, |m| raw::status(m).is_some_and(|s| s >= 200)).await;
    assert_eq!(raw::status(&answer), Some(408), "{answer}");

    // The shop answers 200 anyway: every 2xx is forwarded (RFC 3261 §16.7 step 10), so the
    // caller gets it, with its URL and token, and the call is a session like any other.
    tokio::time::resume();
    app.send_to(raw::ok_200(&inv, "shop", app.addr, "UDP"), relay_addr)
        .await;
    let ok = raw::next_where(&client, |m| raw::status(m) == Some(200)).await;
    assert!(raw::header(&ok, "Tollgate-Session-Token").is_some(), "{ok}");
    client
        .send_to(raw::in_dialog(&client, "ACK", &invite, &ok, 2), relay.udp())
        .await;
    let ack = raw::next_where(&app, |m| raw::method(m) == Some("ACK")).await;
    assert!(
        ack.starts_with(&format!("ACK sip:shop@{}", app.addr)),
        "{ack}"
    );
    client
        .send_to(raw::in_dialog(&client, "BYE", &invite, &ok, 3), relay.udp())
        .await;
    let bye = raw::next_where(&app, |m| raw::method(m) == Some("BYE")).await;
    app.send_to(raw::response(&bye, "200 OK", "shop", &[]), relay_addr)
        .await;
    let ended = raw::next_where(&client, |m| raw::header(m, "CSeq") == Some("3 BYE")).await;
    assert_eq!(raw::status(&ended), Some(200), "{ended}");
    let rows = sessions_after_shutdown(relay).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, SessionState::Terminated, "{:?}", rows[0]);
    assert!(rows[0].confirmed_at.is_some(), "{:?}", rows[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_racing_the_callers_cancel_is_relayed_and_becomes_a_session() {
    let (relay, app) = relay_with_raw_app().await;
    let client = RawUdp::bind().await;
    let invite = raw::authenticated_invite(&client, relay.udp()).await;
    let (inv, relay_addr) = app.recv_within(LIMIT).await;
    app.send_to(raw::response(&inv, "180 Ringing", "shop", &[]), relay_addr)
        .await;
    let ringing = raw::next_non_trying(&client).await;
    assert_eq!(raw::status(&ringing), Some(180));

    // The caller CANCELs; the shop's 200 crosses the relay's CANCEL.
    let cancel = raw::message(
        "CANCEL sip:service1@portal.com SIP/2.0",
        &[
            format!("Via: {}", raw::header(&invite, "Via").unwrap()),
            format!("From: {}", raw::header(&invite, "From").unwrap()),
            "To: <sip:service1@portal.com>".into(),
            format!("Call-ID: {}", raw::header(&invite, "Call-ID").unwrap()),
            "CSeq: 2 CANCEL".into(),
            "Max-Forwards: 70".into(),
        ],
        "",
    );
    client.send_to(&cancel, relay.udp()).await;
    let relayed_cancel = raw::next_where(&app, |m| raw::method(m) == Some("CANCEL")).await;
    app.send_to(raw::ok_200(&inv, "shop", app.addr, "UDP"), relay_addr)
        .await;
    app.send_to(
        raw::response(
            &relayed_cancel,
            "481 Call/Transaction Does Not Exist",
            "shop",
            &[],
        ),
        relay_addr,
    )
    .await;

    // Every 2xx is forwarded (RFC 3261 §16.7): the caller gets it, ACKs it and hangs up.
    let ok = raw::next_where(&client, |m| {
        raw::status(m) == Some(200) && raw::header(m, "CSeq") == Some("2 INVITE")
    })
    .await;
    client
        .send_to(raw::in_dialog(&client, "ACK", &invite, &ok, 2), relay.udp())
        .await;
    let ack = raw::next_where(&app, |m| raw::method(m) == Some("ACK")).await;
    assert!(raw::header(&ack, "To").unwrap().contains("tag=shop"));
    client
        .send_to(raw::in_dialog(&client, "BYE", &invite, &ok, 3), relay.udp())
        .await;
    let bye = raw::next_where(&app, |m| raw::method(m) == Some("BYE")).await;
    app.send_to(raw::response(&bye, "200 OK", "shop", &[]), relay_addr)
        .await;
    let done = raw::next_where(&client, |m| raw::header(m, "CSeq") == Some("3 BYE")).await;
    assert_eq!(raw::status(&done), Some(200));
    let rows = sessions_after_shutdown(relay).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, SessionState::Terminated, "{:?}", rows[0]);
}

// ------------------------------------------------------------------------ TCP clients

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_client_gets_answers_and_the_shops_bye_down_its_own_connection() {
    let (relay, app) = relay_with_raw_app().await;
    let client = RawTcp::connect(relay.tcp()).await;
    // An RFC 5626 keep-alive ping is answered with a pong.
    client.send_raw(b"\r\n\r\n").await;
    assert_eq!(client.recv_raw(2).await, b"\r\n");

    let invite = raw::authenticated_invite(&client, relay.tcp()).await;
    let (inv, relay_addr) = app.recv_within(LIMIT).await;
    app.send_to(raw::ok_200(&inv, "shop", app.addr, "UDP"), relay_addr)
        .await;
    let ok = raw::next_non_trying(&client).await;
    assert_eq!(raw::status(&ok), Some(200), "{ok}");
    client
        .send_to(raw::in_dialog(&client, "ACK", &invite, &ok, 2), relay.tcp())
        .await;
    raw::next_where(&app, |m| raw::method(m) == Some("ACK")).await;

    // The shop hangs up. The client's Contact names its connection's port, where nothing
    // listens: the BYE can only reach it down the connection it opened.
    let bye = raw::message(
        &format!("BYE sip:alice@{};transport=tcp SIP/2.0", client.local()),
        &[
            format!("Via: SIP/2.0/UDP {};branch={}", app.addr, raw::branch()),
            format!("Route: {}", raw::header(&inv, "Record-Route").unwrap()),
            format!("From: {};tag=shop", raw::header(&inv, "To").unwrap()),
            format!("To: {}", raw::header(&inv, "From").unwrap()),
            format!("Call-ID: {}", raw::header(&inv, "Call-ID").unwrap()),
            "CSeq: 1 BYE".into(),
            "Max-Forwards: 70".into(),
        ],
        "",
    );
    app.send_to(&bye, relay_addr).await;
    let got = raw::next_where(&client, |m| raw::method(m) == Some("BYE")).await;
    client
        .send_to(raw::response(&got, "200 OK", "x", &[]), relay.tcp())
        .await;
    let ok = raw::next_where(&app, |m| raw::status(m) == Some(200)).await;
    assert_eq!(raw::header(&ok, "CSeq"), Some("1 BYE"));
    let rows = sessions_after_shutdown(relay).await;
    assert_eq!(rows[0].state, SessionState::Terminated);
}

// ------------------------------------------------------------------------ early dialogs

async fn prack_and_update_pass_in_the_early_dialog(app: impl Peer) {
    let relay = start_relay(Seed {
        app_servers: vec![uas_uri(&app)],
    })
    .await;
    let client = RawUdp::bind().await;
    let invite = raw::authenticated_invite(&client, relay.udp()).await;
    let (inv, relay_addr) = app.recv_within(LIMIT).await;
    let mut progress_headers: Vec<String> = raw::headers(&inv, "Record-Route")
        .into_iter()
        .map(|r| format!("Record-Route: {r}"))
        .collect();
    progress_headers.extend([
        format!(
            "Contact: <sip:shop@{};transport={}>",
            app.local(),
            app.transport().to_ascii_lowercase()
        ),
        "Require: 100rel".into(),
        "RSeq: 1".into(),
    ]);
    app.send_to(
        raw::response(&inv, "183 Session Progress", "shop", &progress_headers),
        relay_addr,
    )
    .await;
    let progress = raw::next_non_trying(&client).await;
    assert_eq!(raw::status(&progress), Some(183), "{progress}");

    for (method, cseq) in [("PRACK", 3), ("UPDATE", 4)] {
        client
            .send_to(
                raw::in_dialog(&client, method, &invite, &progress, cseq),
                relay.udp(),
            )
            .await;
        let got = raw::next_where(&app, |m| raw::method(m) == Some(method)).await;
        app.send_to(raw::response(&got, "200 OK", "shop", &[]), relay_addr)
            .await;
        let answer = raw::next_where(&client, |m| {
            raw::header(m, "CSeq") == Some(format!("{cseq} {method}").as_str())
        })
        .await;
        assert_eq!(raw::status(&answer), Some(200), "{method}: {answer}");
    }
    relay.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prack_and_an_early_update_pass_over_udp() {
    prack_and_update_pass_in_the_early_dialog(RawUdp::bind().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prack_and_an_early_update_pass_over_tcp() {
    prack_and_update_pass_in_the_early_dialog(RawTcp::listen().await).await;
}

// ------------------------------------------------------------------------ credentials

const ELSEWHERE: [u8; 4] = [127, 0, 0, 2];

/// alice, from her own address, is challenged and calls through with her password.
async fn alice_calls_through(relay: &TestRelay, protocol: Protocol, app: &RawUdp) {
    let (client, to) = client_for(relay, protocol).await;
    let challenge = raw::challenge(&client, to).await;
    let authorization = raw::credentials(&challenge, raw::SERVICE1, "secret", 1);
    genuine_call(&client, to, app, &authorization).await;
}

/// A call with good credentials reaches the app server, which turns it down (486).
async fn genuine_call(client: &Client, to: SocketAddr, app: &RawUdp, authorization: &str) {
    let req = raw::invite(
        client,
        &raw::branch(),
        &raw::token(),
        &raw::token(),
        2,
        &[format!("Proxy-Authorization: {authorization}")],
    );
    client.send_to(&req, to).await;
    let (inv, relay_addr) = app.recv_within(LIMIT).await;
    assert_eq!(raw::method(&inv), Some("INVITE"), "{inv}");
    app.send_to(
        raw::response(&inv, "486 Busy Here", "shop", &[]),
        relay_addr,
    )
    .await;
    let answer = raw::next_non_trying(client).await;
    assert_eq!(raw::status(&answer), Some(486), "{answer}");
    client.send_to(raw::ack_for(&req, &answer), to).await;
    // The app server's ACK from the relay.
    let ack = app.recv_within(LIMIT).await.0;
    assert_eq!(raw::method(&ack), Some("ACK"), "{ack}");
}

/// A fresh challenge: a 407 with a nonce other than `old`'s.
fn assert_fresh_challenge(answer: &str, old: &str) {
    assert_eq!(raw::status(answer), Some(407), "{answer}");
    assert_ne!(
        raw::header(answer, "Proxy-Authenticate"),
        raw::header(old, "Proxy-Authenticate"),
        "a new nonce"
    );
}

async fn captured_credentials_buy_nothing(protocol: Protocol) {
    let (relay, app) = relay_with_raw_app().await;
    let (client, to) = client_for(&relay, protocol).await;
    let challenge = raw::challenge(&client, to).await;
    let captured = raw::credentials(&challenge, raw::SERVICE1, "secret", 1);
    genuine_call(&client, to, &app, &captured).await;

    // The same credentials again, from the same client: the nonce count is used up.
    let replayed = raw::invite_with_credentials(&client, to, &captured).await;
    assert_fresh_challenge(&replayed, &challenge);

    // From another address, with a count never used: the nonce is not theirs.
    let (thief, thief_to) = client_from(&relay, protocol, ELSEWHERE.into()).await;
    let stolen = captured.replace("nc=00000001", "nc=00000002");
    let answer = raw::invite_with_credentials(&thief, thief_to, &stolen).await;
    assert_fresh_challenge(&answer, &challenge);

    // Credentials computed for another service's URI.
    let challenge = raw::challenge(&client, to).await;
    let other = raw::credentials(&challenge, "sip:service2@portal.com", "secret", 1);
    let answer = raw::invite_with_credentials(&client, to, &other).await;
    assert_fresh_challenge(&answer, &challenge);

    raw::barrier(&client, to).await;
    raw::barrier(&thief, thief_to).await;
    assert!(
        !app.has_pending(),
        "nothing but the genuine call reached the app server"
    );
    relay.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_credentials_buy_nothing_over_udp() {
    captured_credentials_buy_nothing(Protocol::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_credentials_buy_nothing_over_tcp() {
    captured_credentials_buy_nothing(Protocol::Tcp).await;
}

async fn a_password_flood_does_not_stop_the_user_elsewhere(protocol: Protocol) {
    let (relay, app) = relay_with_raw_app().await;
    // Wrong passwords for alice from one address until it is blocked.
    let (attacker, to) = client_from(&relay, protocol, ELSEWHERE.into()).await;
    let mut blocked = false;
    for _ in 0..30 {
        let first = raw::invite(
            &attacker,
            &raw::branch(),
            &raw::token(),
            &raw::token(),
            1,
            &[],
        );
        attacker.send_to(&first, to).await;
        let answer = raw::next_non_trying(&attacker).await;
        attacker.send_to(raw::ack_for(&first, &answer), to).await;
        if raw::status(&answer) == Some(503) {
            blocked = true;
            break;
        }
        let wrong = raw::credentials(&answer, raw::SERVICE1, "guess", 1);
        let refused = raw::invite_with_credentials(&attacker, to, &wrong).await;
        assert!(
            matches!(raw::status(&refused), Some(403 | 503)),
            "{refused}"
        );
    }
    assert!(blocked, "the flooding address is blocked");

    // alice herself, from her own address, is not slowed.
    alice_calls_through(&relay, protocol, &app).await;
    relay.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_flood_does_not_stop_the_user_elsewhere_over_udp() {
    a_password_flood_does_not_stop_the_user_elsewhere(Protocol::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_flood_does_not_stop_the_user_elsewhere_over_tcp() {
    a_password_flood_does_not_stop_the_user_elsewhere(Protocol::Tcp).await;
}

async fn a_spoofed_nonce_flood_does_not_throttle_the_victim(protocol: Protocol) {
    let (relay, app) = relay_with_raw_app().await;
    // Nonces the relay really issued, but to another address.
    let (elsewhere, elsewhere_to) = client_from(&relay, protocol, ELSEWHERE.into()).await;
    let foreign = raw::challenge(&elsewhere, elsewhere_to).await;
    // Wrong credentials sent "from" the victim's address (a forger would spoof it): made-up
    // nonces and the foreign one. Each is only challenged again, never counted.
    let (forger, to) = client_for(&relay, protocol).await;
    let made_up = foreign.replacen("nonce=\"", "nonce=\"x", 1);
    for round in 0..30 {
        let source = if round % 2 == 0 { &foreign } else { &made_up };
        let wrong = raw::credentials(source, raw::SERVICE1, "guess", 1);
        let answer = raw::invite_with_credentials(&forger, to, &wrong).await;
        assert_eq!(raw::status(&answer), Some(407), "round {round}: {answer}");
    }
    // The victim calls from that address.
    alice_calls_through(&relay, protocol, &app).await;
    relay.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_nonce_flood_does_not_throttle_the_victim_over_udp() {
    a_spoofed_nonce_flood_does_not_throttle_the_victim(Protocol::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_nonce_flood_does_not_throttle_the_victim_over_tcp() {
    a_spoofed_nonce_flood_does_not_throttle_the_victim(Protocol::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_issued_before_a_restart_is_accepted_after_it() {
    let app = RawUdp::bind().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(&dir);
    let relay = start_relay_with(
        Seed {
            app_servers: vec![uas_uri(&app)],
        },
        config.clone(),
        dir,
    )
    .await;
    let client = RawUdp::bind().await;
    let challenge = raw::challenge(&client, relay.udp()).await;
    let TestRelay { relay, store, dir } = relay;
    relay.shutdown().await;

    // The same node, on the same database, starts again.
    let relay = TestRelay {
        relay: app::start(&config, Arc::new(SystemClock))
            .await
            .expect("restarts"),
        store,
        dir,
    };
    let to = relay.udp();
    let client = Client::Udp(client);
    genuine_call(
        &client,
        to,
        &app,
        &raw::credentials(&challenge, raw::SERVICE1, "secret", 1),
    )
    .await;
    relay.relay.shutdown().await;
}

// ------------------------------------------------------------------------ validation first

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_gets_400_naming_the_problem_never_a_challenge() {
    let (relay, app) = relay_with_raw_app().await;
    let client = RawUdp::bind().await;
    let good = raw::invite(&client, &raw::branch(), &raw::token(), "v1", 1, &[]);
    for (broken, expected) in [
        (
            good.replace("Call-ID: v1\r\n", ""),
            "SIP/2.0 400 Missing Call-ID\r\n",
        ),
        (
            good.replace("CSeq: 1 INVITE", "CSeq: 1 BYE"),
            "SIP/2.0 400 CSeq method does not match the request\r\n",
        ),
        (
            good.replace("CSeq: 1 INVITE\r\n", ""),
            "SIP/2.0 400 Missing CSeq\r\n",
        ),
        (
            good.replacen(" SIP/2.0\r\n", " SIP/3.0\r\n", 1),
            "SIP/2.0 505 Version Not Supported\r\n",
        ),
    ] {
        client.send_to(&broken, relay.udp()).await;
        let answer = raw::next_non_trying(&client).await;
        assert!(
            answer.starts_with(expected),
            "{expected:?} expected, got {answer}"
        );
    }
    raw::barrier(&client, relay.udp()).await;
    assert!(!app.has_pending());
    relay.relay.shutdown().await;
}
