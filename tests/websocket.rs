//! SIP over WebSocket (RFC 7118) on a real relay: a client that speaks as a browser does
//! (`.invalid` hosts in Via and Contact, reachable only down its connection) registers,
//! calls a service with digest authentication, gets the URL and token, confirms, and the
//! shop's BYE reaches it down its WebSocket. A handshake without the `sip` subprotocol is
//! refused.

mod common;

use common::raw::{self, Peer, RawUdp, RawWs, LIMIT};
use common::relay::{sessions_after_shutdown, start_relay_with, test_config, Seed, TestRelay};
use tollgate::config::Protocol;
use tollgate::sip::digest;
use tollgate::store::SessionState;

async fn relay_with_ws(app: &RawUdp) -> TestRelay {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    config.sip.listen.push("ws:127.0.0.1:0".parse().unwrap());
    start_relay_with(
        Seed {
            app_servers: vec![format!("sip:{}", app.addr)],
        },
        config,
        dir,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_style_client_registers_calls_and_is_hung_up_on_over_websocket() {
    let app = RawUdp::bind().await;
    let relay = relay_with_ws(&app).await;
    let ws_addr = relay.addr(Protocol::Ws);
    let client = RawWs::connect(ws_addr).await;

    // REGISTER with digest authentication (401, then 200).
    let register = |cseq: u32, auth: Option<String>| {
        let mut lines = vec![
            client.via(&raw::branch()),
            "From: <sip:alice@portal.com>;tag=reg1".to_string(),
            "To: <sip:alice@portal.com>".to_string(),
            "Call-ID: reg-call".to_string(),
            format!("CSeq: {cseq} REGISTER"),
            "Contact: <sip:alice@df7jal23ls0d.invalid;transport=ws>;expires=600".to_string(),
            "Max-Forwards: 70".to_string(),
        ];
        lines.extend(auth.map(|a| format!("Authorization: {a}")));
        raw::message("REGISTER sip:portal.com SIP/2.0", &lines, "")
    };
    client.send_to(register(1, None), ws_addr).await;
    let challenge = raw::next_non_trying(&client).await;
    assert_eq!(raw::status(&challenge), Some(401), "{challenge}");
    let ch = digest::choose_challenge(raw::headers(&challenge, "WWW-Authenticate")).unwrap();
    let answer = digest::answer(
        &ch,
        "REGISTER",
        "sip:portal.com",
        "alice",
        "secret",
        1,
        "c1",
    );
    client.send_to(register(2, Some(answer)), ws_addr).await;
    let registered = raw::next_non_trying(&client).await;
    assert_eq!(raw::status(&registered), Some(200), "{registered}");

    // A call: the shop's answer comes back with the URL and token.
    let invite = raw::authenticated_invite(&client, ws_addr).await;
    let (inv, relay_addr) = app.recv_within(LIMIT).await;
    let rr = raw::headers(&inv, "Record-Route");
    assert_eq!(
        rr.len(),
        2,
        "double Record-Route between WS and UDP: {rr:?}"
    );
    assert!(rr[1].contains("transport=ws"), "{rr:?}");
    app.send_to(raw::ok_200(&inv, "shop", app.addr, "UDP"), relay_addr)
        .await;
    let ok = raw::next_non_trying(&client).await;
    assert_eq!(raw::status(&ok), Some(200), "{ok}");
    assert!(ok.contains("\"token\""), "{ok}");
    client
        .send_to(raw::in_dialog(&client, "ACK", &invite, &ok, 2), ws_addr)
        .await;
    raw::next_where(&app, |m| raw::method(m) == Some("ACK")).await;

    // The shop hangs up: the BYE can only reach the browser down its WebSocket.
    let bye = raw::message(
        "BYE sip:alice@df7jal23ls0d.invalid;transport=ws SIP/2.0",
        &[
            format!("Via: SIP/2.0/UDP {};branch={}", app.addr, raw::branch()),
            format!("Route: {}", rr[0]),
            format!("Route: {}", rr[1]),
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
        .send_to(raw::response(&got, "200 OK", "x", &[]), ws_addr)
        .await;
    let done = raw::next_where(&app, |m| raw::status(m) == Some(200)).await;
    assert_eq!(raw::header(&done, "CSeq"), Some("1 BYE"));
    let rows = sessions_after_shutdown(relay).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, SessionState::Terminated);
    assert!(rows[0].duration_ms.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_without_the_sip_subprotocol_is_refused() {
    let app = RawUdp::bind().await;
    let relay = relay_with_ws(&app).await;
    let refused = RawWs::try_connect(relay.addr(Protocol::Ws), None).await;
    assert!(refused.is_err(), "the handshake must fail without `sip`");
    let refused = RawWs::try_connect(relay.addr(Protocol::Ws), Some("chat")).await;
    assert!(refused.is_err());
    relay.relay.shutdown().await;
}
