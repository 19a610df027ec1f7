//! Server transactions: a retransmitted request gets the last response again, an INVITE gets
//! 100 Trying at once, a non-2xx final is resent at Timer G until its ACK, which is absorbed;
//! a CANCEL finds its INVITE.

use super::*;

/// A request as received from the client: its own Via only, with `branch`.
fn client_request(method: Method, branch: &str) -> Request {
    let text = String::from_utf8(request(method, "x").to_bytes())
        .unwrap()
        .replace("Via: SIP/2.0/UDP 10.0.0.5:5060;branch=x\r\n", "")
        .replace("z9hG4bKclient", branch);
    match msg::parse(text.as_bytes()) {
        Ok(SipMessage::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn an_invite_gets_100_its_retransmission_the_last_answer_and_the_final_timer_g() {
    let mut h = Harness::new();
    let invite = client_request(Method::Invite, "z9hG4bKclient");
    let key = match h.engine.on_request(invite.clone(), udp(CLIENT)) {
        Some(Incoming::New(key)) => key,
        other => panic!("{other:?}"),
    };
    let sent = h.sent();
    assert!(sent[0].1.starts_with("SIP/2.0 100 "), "{}", sent[0].1);
    assert!(matches!(
        h.engine.on_request(invite.clone(), udp(CLIENT)),
        Some(Incoming::Absorbed)
    ));
    assert!(h.sent()[0].1.starts_with("SIP/2.0 100 "));

    h.engine.respond_status(&key, 486, None, Vec::new());
    assert!(h.sent()[0].1.starts_with("SIP/2.0 486 "));
    h.run_timers(T1 * 3 + Duration::from_millis(10)).await;
    assert_eq!(h.sent().len(), 2, "Timer G: resent at 0.5 s and 1.5 s");

    let ack = client_request(Method::Ack, "z9hG4bKclient");
    assert!(matches!(
        h.engine.on_request(ack, udp(CLIENT)),
        Some(Incoming::Absorbed)
    ));
    h.run_timers(Duration::from_secs(10)).await;
    assert!(h.sent().is_empty(), "no resend after the ACK");
}

#[tokio::test]
async fn a_cancel_is_answered_and_names_its_pending_invite() {
    let mut h = Harness::new();
    let invite = client_request(Method::Invite, "z9hG4bKclient");
    let Some(Incoming::New(key)) = h.engine.on_request(invite, udp(CLIENT)) else {
        panic!()
    };
    h.sent();
    let cancel = client_request(Method::Cancel, "z9hG4bKclient");
    match h.engine.on_request(cancel, udp(CLIENT)) {
        Some(Incoming::Cancel { invite }) => assert_eq!(invite, key),
        other => panic!("{other:?}"),
    }
    assert!(h.sent()[0].1.starts_with("SIP/2.0 200 "));
    let stray = client_request(Method::Cancel, "z9hG4bKnothing");
    assert!(matches!(
        h.engine.on_request(stray, udp(CLIENT)),
        Some(Incoming::Absorbed)
    ));
    assert!(h.sent()[0].1.starts_with("SIP/2.0 481 "));
}
