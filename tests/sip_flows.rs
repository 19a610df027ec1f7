//! SIP flows through a real relay beyond the plain call (DESIGN.md flows 1 and 2): refusals
//! (503 from the application server, unknown service, wrong password, Max-Forwards), CANCEL,
//! bad input, the registrar, the application server hanging up, requests for unknown dialogs
//! and retransmitted INVITEs.
//!
//! sipp plays the client and the application server; a plain UDP socket sends what sipp cannot
//! (garbage, truncated and byte-identical messages) or plays an application server that records
//! exactly what reaches it. Every test checks what the caller sees and what the store recorded
//! (session rows are read after `shutdown`, once the group-commit writer has flushed).

mod common;

use common::raw::{self, Peer, RawUdp};
use common::relay::{free_port, sessions_after_shutdown, start_relay, Seed, TestRelay};
use common::sipp::{require_sipp, uas_uri, wait_for_tcp, Sipp, SippRun};
use rand::Rng;
use std::net::SocketAddr;
use std::time::Duration;
use tollgate::clock::{Clock, SystemClock};
use tollgate::sip::digest;
use tollgate::store::{SessionRecord, SessionState};

/// The longest a single sipp run may take before it is killed and the test fails.
const LIMIT: Duration = Duration::from_secs(60);

// -------------------------------------------------------------------- helpers

fn assert_passed(run: &SippRun, who: &str) {
    assert!(run.succeeded(), "sipp {who} failed:\n{}", run.output);
}

/// Both ends of a call passed; on failure both logs are shown (the cause is often on the
/// other side).
fn assert_both_passed(uac: &SippRun, uac_role: &str, uas: &SippRun, uas_role: &str) {
    assert!(
        uac.succeeded() && uas.succeeded(),
        "sipp {uac_role}: {:?}, sipp {uas_role}: {:?}\n\n=== client ===\n{}\n\n=== application server ===\n{}",
        uac.exit_code,
        uas.exit_code,
        uac.output,
        uas.output
    );
}

/// A relay whose `service1@portal.com` is delivered by a sipp application server running
/// `scenario` for `calls` calls.
async fn relay_with_uas(scenario: &str, calls: u32, tcp: bool) -> (TestRelay, Sipp) {
    let uas_port = free_port();
    let relay = start_relay(Seed {
        app_servers: vec![uas_uri(uas_port, tcp)],
    })
    .await;
    let uas = Sipp::uas(scenario, uas_port, calls, tcp);
    if tcp {
        wait_for_tcp(uas_port).await;
    }
    (relay, uas)
}

/// A relay whose application server is an address nobody answers on (for flows that must
/// never reach it).
async fn relay_without_uas() -> TestRelay {
    start_relay(Seed {
        app_servers: vec![uas_uri(free_port(), false)],
    })
    .await
}

fn relay_addr(relay: &TestRelay, tcp: bool) -> SocketAddr {
    if tcp {
        relay.tcp()
    } else {
        relay.udp()
    }
}

/// The one session a test expects, with the fields every session of alice's calls shares.
fn only_session(rows: &[SessionRecord]) -> &SessionRecord {
    assert_eq!(rows.len(), 1, "exactly one session expected: {rows:#?}");
    let s = &rows[0];
    assert_eq!(s.caller, "alice", "{s:?}");
    assert_eq!(s.service, "service1@portal.com", "{s:?}");
    assert_eq!(s.app_server, "shop1", "{s:?}");
    s
}

// -------------------------------------------------------------------- 1. 503 from the app server

/// One sipp call that must end unanswered: both sipp scenarios pass, and the relay records one
/// session in `state` with `status`, ended and never billed.
async fn unanswered_call_is_recorded(
    tcp: bool,
    (uac_scenario, uac_role): (&str, &str),
    (uas_scenario, uas_role): (&str, &str),
    state: SessionState,
    status: u16,
) {
    require_sipp();
    let (relay, uas) = relay_with_uas(uas_scenario, 1, tcp).await;
    let uac = Sipp::uac(uac_scenario, relay_addr(&relay, tcp), 1, 1, tcp, &[]);
    let uac_run = uac.finish(LIMIT).await;
    let uas_run = uas.finish(LIMIT).await;
    assert_both_passed(&uac_run, uac_role, &uas_run, uas_role);

    let rows = sessions_after_shutdown(relay).await;
    let s = only_session(&rows);
    assert_eq!(s.state, state, "{s:?}");
    assert_eq!(s.final_status, Some(status), "{s:?}");
    assert!(s.ended_at.is_some(), "{s:?}");
    assert_eq!(
        (s.confirmed_at, s.duration_ms),
        (None, None),
        "never billed: {s:?}"
    );
}

async fn app_server_refusal_is_relayed_and_recorded_failed(tcp: bool) {
    unanswered_call_is_recorded(
        tcp,
        ("uac_auth_500.xml", "client expecting 500"),
        (
            "uas_503.xml",
            "application server answering 503 (and getting the ACK)",
        ),
        SessionState::Failed,
        503,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_server_503_reaches_the_client_as_500_and_fails_the_session_over_udp() {
    app_server_refusal_is_relayed_and_recorded_failed(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_server_503_reaches_the_client_as_500_and_fails_the_session_over_tcp() {
    app_server_refusal_is_relayed_and_recorded_failed(true).await;
}

// -------------------------------------------------------------------- 2. unknown service

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_gets_404_and_records_no_session() {
    require_sipp();
    let relay = relay_without_uas().await;
    let uac = Sipp::uac_for(
        "nosuchservice",
        "uac_auth_404.xml",
        relay.udp(),
        1,
        1,
        false,
        &[],
    );
    let run = uac.finish(LIMIT).await;
    assert_passed(
        &run,
        "client expecting 404 for sip:nosuchservice@portal.com",
    );
    assert!(
        run.messages.contains("INVITE sip:nosuchservice@portal.com"),
        "the client asked for the unknown service:\n{}",
        run.messages
    );

    let rows = sessions_after_shutdown(relay).await;
    assert!(
        rows.is_empty(),
        "no session for an unknown service: {rows:#?}"
    );
}

// -------------------------------------------------------------------- 3. wrong password

/// A wrong password gets 403 after the challenge and nothing is forwarded. Proof: the
/// application server then serves a correct call; everything it ever received is in its
/// message log, and the wrong-password call's Call-ID is not there (the relay sends to it in
/// order, so a forwarded INVITE would have arrived before the correct call's).
async fn wrong_password_is_refused_and_never_forwarded(tcp: bool) {
    require_sipp();
    let (relay, uas) = relay_with_uas("uas.xml", 1, tcp).await;
    let target = relay_addr(&relay, tcp);
    let wrong = Sipp::uac(
        "uac_auth_403.xml",
        target,
        1,
        1,
        tcp,
        &["-cid_str", "wrongpw-%u-%p@%s"],
    )
    .finish(LIMIT)
    .await;
    assert_passed(
        &wrong,
        "client with a wrong password expecting 407 then 403",
    );

    let right = Sipp::uac(
        "uac_auth.xml",
        target,
        1,
        1,
        tcp,
        &["-cid_str", "rightpw-%u-%p@%s"],
    )
    .finish(LIMIT)
    .await;
    assert_passed(&right, "client with the right password");
    let uas_run = uas.finish(LIMIT).await;
    assert_passed(&uas_run, "application server");
    assert!(
        uas_run.messages.contains("Call-ID: rightpw-"),
        "the correct call reached the application server:\n{}",
        uas_run.messages
    );
    assert!(
        !uas_run.messages.contains("wrongpw-"),
        "the wrong-password call reached the application server:\n{}",
        uas_run.messages
    );

    let rows = sessions_after_shutdown(relay).await;
    let s = only_session(&rows);
    assert!(
        s.call_id.starts_with("rightpw-"),
        "only the correct call has a session: {s:?}"
    );
    assert_eq!(s.state, SessionState::Terminated, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_gets_403_and_nothing_reaches_the_app_server_over_udp() {
    wrong_password_is_refused_and_never_forwarded(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_gets_403_and_nothing_reaches_the_app_server_over_tcp() {
    wrong_password_is_refused_and_never_forwarded(true).await;
}

// -------------------------------------------------------------------- 4. CANCEL while ringing

async fn cancel_while_ringing_is_relayed_and_recorded_cancelled(tcp: bool) {
    unanswered_call_is_recorded(
        tcp,
        (
            "uac_cancel.xml",
            "client cancelling (expects 200 for CANCEL, then 487)",
        ),
        (
            "uas_ring_cancel.xml",
            "application server ringing until CANCEL",
        ),
        SessionState::Cancelled,
        487,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_ringing_gets_487_and_a_cancelled_session_over_udp() {
    cancel_while_ringing_is_relayed_and_recorded_cancelled(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_ringing_gets_487_and_a_cancelled_session_over_tcp() {
    cancel_while_ringing_is_relayed_and_recorded_cancelled(true).await;
}

// -------------------------------------------------------------------- 5. Max-Forwards

/// Max-Forwards: 0 is answered 483 straight away: the scenario fails on anything else (a 407
/// challenge included), so the hop check comes before authentication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_forwards_zero_gets_483_before_authentication() {
    require_sipp();
    let relay = relay_without_uas().await;
    let run = Sipp::uac("uac_maxfwd0.xml", relay.udp(), 1, 1, false, &[])
        .finish(LIMIT)
        .await;
    assert_passed(&run, "client expecting 483");
    assert!(
        !run.messages.contains("Proxy-Authenticate:"),
        "{}",
        run.messages
    );

    let rows = sessions_after_shutdown(relay).await;
    assert!(
        rows.is_empty(),
        "no session for a request out of hops: {rows:#?}"
    );
}

// ---------------------------------------------------------------- 6 + 9. bad datagrams, OPTIONS

fn options_to_relay(peer: &RawUdp, relay: SocketAddr, call_id: &str) -> String {
    raw::message(
        &format!("OPTIONS sip:{relay} SIP/2.0"),
        &[
            peer.via(&raw::branch()),
            format!("From: <sip:probe@{}>;tag={}", peer.addr, raw::token()),
            format!("To: <sip:{relay}>"),
            format!("Call-ID: {call_id}"),
            "CSeq: 1 OPTIONS".into(),
            "Max-Forwards: 70".into(),
        ],
        "",
    )
}

/// A datagram of random bytes gets no answer (the next datagram back is the 200 for an
/// OPTIONS sent after it), an INVITE whose body is shorter than its Content-Length gets 400,
/// the relay answers OPTIONS addressed to itself with 200, and a full call still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_truncated_datagrams_change_nothing_and_the_next_call_succeeds() {
    require_sipp();
    let (relay, uas) = relay_with_uas("uas.xml", 1, false).await;
    let relay_udp = relay.udp();
    let peer = RawUdp::bind().await;

    let mut garbage = vec![0u8; 700];
    rand::thread_rng().fill(&mut garbage[..]);
    garbage[0] = 0xff; // never a SIP start line
    peer.send_to(&garbage, relay_udp).await;

    let options_call = raw::token();
    peer.send_to(options_to_relay(&peer, relay_udp, &options_call), relay_udp)
        .await;
    let reply = peer.recv_text().await;
    assert_eq!(
        raw::status(&reply),
        Some(200),
        "OPTIONS to the relay:\n{reply}"
    );
    assert_eq!(
        raw::header(&reply, "Call-ID"),
        Some(options_call.as_str()),
        "{reply}"
    );
    assert_eq!(raw::header(&reply, "CSeq"), Some("1 OPTIONS"), "{reply}");
    assert!(
        raw::header(&reply, "Allow").is_some_and(|a| a.contains("INVITE")),
        "{reply}"
    );

    let truncated_call = raw::token();
    let truncated = format!(
        "INVITE sip:service1@portal.com SIP/2.0\r\n\
         {}\r\n\
         From: alice <{}>;tag={}\r\n\
         To: <sip:service1@portal.com>\r\n\
         Call-ID: {truncated_call}\r\n\
         CSeq: 1 INVITE\r\n\
         Max-Forwards: 70\r\n\
         Content-Type: application/json\r\n\
         Content-Length: 200\r\n\
         \r\n\
         {{\"item\":\"wi",
        peer.via(&raw::branch()),
        raw::ALICE,
        raw::token()
    );
    peer.send_to(&truncated, relay_udp).await;
    let reply = peer.recv_text().await;
    assert!(
        reply.starts_with("SIP/2.0 400 "),
        "truncated INVITE:\n{reply}"
    );
    assert_eq!(
        raw::header(&reply, "Call-ID"),
        Some(truncated_call.as_str()),
        "{reply}"
    );

    let uac_run = Sipp::uac("uac_auth.xml", relay_udp, 1, 1, false, &[])
        .finish(LIMIT)
        .await;
    let uas_run = uas.finish(LIMIT).await;
    assert_both_passed(
        &uac_run,
        "client after the bad datagrams",
        &uas_run,
        "application server",
    );
    assert!(
        !uas_run.messages.contains(&truncated_call),
        "the truncated INVITE was forwarded:\n{}",
        uas_run.messages
    );

    let rows = sessions_after_shutdown(relay).await;
    let s = only_session(&rows);
    assert_ne!(s.call_id, truncated_call);
    assert_eq!(s.state, SessionState::Terminated, "{s:?}");
    assert_eq!(s.final_status, Some(200), "{s:?}");
}

// -------------------------------------------------------------------- 7. registrar

/// REGISTER → 401 → REGISTER with credentials → 200 with the Contact and its expiry; a
/// refresh; `Expires: 0` removes the Contact; two Contacts; `Contact: *` removes them all.
/// The scenario checks every 200's Contact list; the store ends with no binding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_refresh_and_unregister_leave_no_binding() {
    require_sipp();
    let relay = start_relay(Seed {
        app_servers: Vec::new(),
    })
    .await;
    let run = Sipp::uac("uac_register.xml", relay.udp(), 1, 1, false, &[])
        .finish(LIMIT)
        .await;
    assert_passed(&run, "registering client");
    // The checked 200s, as received: 2 listing one Contact, 1 listing two, 2 listing none.
    assert_eq!(
        run.messages.matches("SIP/2.0 200 OK").count(),
        5,
        "{}",
        run.messages
    );

    let bindings = relay
        .store
        .bindings(raw::ALICE, SystemClock.now_ms())
        .await
        .expect("bindings");
    assert!(bindings.is_empty(), "{bindings:#?}");
    relay.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_registration_leaves_one_binding_for_an_hour() {
    require_sipp();
    let relay = start_relay(Seed {
        app_servers: Vec::new(),
    })
    .await;
    let before = SystemClock.now_ms();
    let uac = Sipp::uac("uac_register_once.xml", relay.udp(), 1, 1, false, &[]);
    let client_port = uac.port;
    let run = uac.finish(LIMIT).await;
    let after = SystemClock.now_ms();
    assert_passed(&run, "registering client");

    let bindings = relay
        .store
        .bindings(raw::ALICE, after)
        .await
        .expect("bindings");
    assert_eq!(bindings.len(), 1, "{bindings:#?}");
    let b = &bindings[0];
    assert_eq!(b.aor, raw::ALICE);
    assert_eq!(b.contact, format!("sip:alice@127.0.0.1:{client_port}"));
    assert_eq!(b.cseq, 2, "the authenticated REGISTER made the binding");
    let hour = 3_600_000;
    assert!(
        (before + hour..=after + hour).contains(&b.expires_at),
        "expires at {} (registered between {before} and {after})",
        b.expires_at
    );
    relay.relay.shutdown().await;
}

// -------------------------------------------------------------------- 8. the app server hangs up

async fn app_server_bye_ends_the_session(tcp: bool) {
    require_sipp();
    let (relay, uas) = relay_with_uas("uas_bye.xml", 1, tcp).await;
    let uac = Sipp::uac(
        "uac_auth_wait_bye.xml",
        relay_addr(&relay, tcp),
        1,
        1,
        tcp,
        &[],
    );
    let uac_run = uac.finish(LIMIT).await;
    let uas_run = uas.finish(LIMIT).await;
    assert_both_passed(
        &uac_run,
        "client answering the callee's BYE with 200",
        &uas_run,
        "application server sending BYE and getting 200",
    );

    let rows = sessions_after_shutdown(relay).await;
    let s = only_session(&rows);
    assert_eq!(s.state, SessionState::Terminated, "{s:?}");
    assert_eq!(s.final_status, Some(200), "{s:?}");
    assert_eq!(s.ended_by.as_deref(), Some("callee"), "{s:?}");
    assert_eq!(s.end_reason.as_deref(), Some("bye"), "{s:?}");
    let (confirmed, ended) = (
        s.confirmed_at.expect("confirmed"),
        s.ended_at.expect("ended"),
    );
    assert_eq!(s.duration_ms, Some(ended - confirmed), "{s:?}");
    assert!(s.duration_ms.unwrap() >= 0, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_server_bye_gets_200_and_ends_the_session_by_callee_over_udp() {
    app_server_bye_ends_the_session(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_server_bye_gets_200_and_ends_the_session_by_callee_over_tcp() {
    app_server_bye_ends_the_session(true).await;
}

// -------------------------------------------------------------------- 10. unknown dialog

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bye_for_an_unknown_dialog_gets_481() {
    let relay = relay_without_uas().await;
    let relay_udp = relay.udp();
    let peer = RawUdp::bind().await;
    let call_id = raw::token();
    let bye = raw::message(
        "BYE sip:shop@127.0.0.1:9 SIP/2.0",
        &[
            peer.via(&raw::branch()),
            format!("Route: <sip:{relay_udp};lr>"),
            format!("From: alice <{}>;tag={}", raw::ALICE, raw::token()),
            format!("To: <sip:service1@portal.com>;tag={}", raw::token()),
            format!("Call-ID: {call_id}"),
            "CSeq: 3 BYE".into(),
            "Max-Forwards: 70".into(),
        ],
        "",
    );
    peer.send_to(&bye, relay_udp).await;
    let reply = peer.recv_text().await;
    assert_eq!(raw::status(&reply), Some(481), "{reply}");
    assert_eq!(
        raw::header(&reply, "Call-ID"),
        Some(call_id.as_str()),
        "{reply}"
    );
    assert_eq!(raw::header(&reply, "CSeq"), Some("3 BYE"), "{reply}");

    let rows = sessions_after_shutdown(relay).await;
    assert!(rows.is_empty(), "{rows:#?}");
}

// -------------------------------------------------------------------- 11. retransmitted INVITE

/// The next datagram that is not `stale` (a 407 the relay may still be retransmitting when
/// its ACK arrives late on a loaded machine: Timer G).
async fn next_except(peer: &RawUdp, stale: &str) -> String {
    loop {
        let msg = peer.recv_text().await;
        if msg != stale {
            return msg;
        }
    }
}

/// Receives until the 200 for the OPTIONS with `call_id`, returning what came before it.
async fn until_options_answer(peer: &RawUdp, call_id: &str) -> Vec<String> {
    let mut before = Vec::new();
    loop {
        let msg = peer.recv_text().await;
        if raw::header(&msg, "Call-ID") == Some(call_id) && raw::status(&msg) == Some(200) {
            return before;
        }
        before.push(msg);
    }
}

/// A retransmitted INVITE is answered from its transaction and creates nothing new: the same
/// bytes get the byte-identical 407 (a second processing would carry a new To-tag and nonce);
/// with valid credentials the application server sees one branch only, however often the
/// client retransmits, and the retransmissions get the latest provisional response again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retransmitted_invite_gets_the_same_answer_and_creates_no_second_branch() {
    let app = RawUdp::bind().await;
    let relay = start_relay(Seed {
        app_servers: vec![uas_uri(app.addr.port(), false)],
    })
    .await;
    let relay_udp = relay.udp();
    let client = RawUdp::bind().await;
    let (call_id, from_tag) = (raw::token(), raw::token());

    // Without credentials: 100, 407; the same bytes again get only that 407 again.
    let first = raw::invite(&client, &raw::branch(), &from_tag, &call_id, 1, &[]);
    client.send_to(&first, relay_udp).await;
    let trying = client.recv_text().await;
    assert_eq!(raw::status(&trying), Some(100), "{trying}");
    let challenge = client.recv_text().await;
    assert_eq!(raw::status(&challenge), Some(407), "{challenge}");
    client.send_to(&first, relay_udp).await;
    let marker = raw::token();
    client
        .send_to(options_to_relay(&client, relay_udp, &marker), relay_udp)
        .await;
    let answers = until_options_answer(&client, &marker).await;
    assert!(
        !answers.is_empty(),
        "the retransmitted INVITE got no answer"
    );
    for a in &answers {
        assert_eq!(
            a, &challenge,
            "a retransmission gets the same 407, nothing else"
        );
    }
    client
        .send_to(raw::ack_for(&first, &challenge), relay_udp)
        .await;

    // With credentials: forwarded once; retransmissions get the last provisional response.
    let values = raw::headers(&challenge, "Proxy-Authenticate");
    let ch = digest::choose_challenge(values).expect("a digest challenge");
    let credentials = digest::answer(
        &ch,
        "INVITE",
        "sip:service1@portal.com",
        "alice",
        "secret",
        1,
        &raw::token(),
    );
    let second = raw::invite(
        &client,
        &raw::branch(),
        &from_tag,
        &call_id,
        2,
        &[format!("Proxy-Authorization: {credentials}")],
    );
    client.send_to(&second, relay_udp).await;
    let trying = next_except(&client, &challenge).await;
    assert_eq!(raw::status(&trying), Some(100), "{trying}");
    let (forwarded, relay_from) = app.recv().await;
    assert_eq!(raw::method(&forwarded), Some("INVITE"), "{forwarded}");
    assert_eq!(raw::header(&forwarded, "Call-ID"), Some(call_id.as_str()));
    let branch = raw::top_branch(&forwarded)
        .expect("relay branch")
        .to_string();

    client.send_to(&second, relay_udp).await;
    assert_eq!(
        client.recv_text().await,
        trying,
        "retransmission answered with the 100"
    );

    let app_tag = raw::token();
    let ringing = raw::response(&forwarded, "180 Ringing", &app_tag, &[]);
    app.send_to(&ringing, relay_from).await;
    let relayed_ringing = client.recv_text().await;
    assert_eq!(
        raw::status(&relayed_ringing),
        Some(180),
        "{relayed_ringing}"
    );
    client.send_to(&second, relay_udp).await;
    assert_eq!(
        client.recv_text().await,
        relayed_ringing,
        "retransmission answered with the 180"
    );

    // CANCEL: the next thing the application server gets after the INVITE (and any
    // retransmission of that same branch) is the CANCEL for it, not a second branch.
    let cancel = raw::message(
        "CANCEL sip:service1@portal.com SIP/2.0",
        &[
            format!("Via: {}", raw::header(&second, "Via").unwrap()),
            format!("From: {}", raw::header(&second, "From").unwrap()),
            "To: <sip:service1@portal.com>".into(),
            format!("Call-ID: {call_id}"),
            "CSeq: 2 CANCEL".into(),
            "Max-Forwards: 70".into(),
        ],
        "",
    );
    client.send_to(&cancel, relay_udp).await;
    let cancel_ok = client.recv_text().await;
    assert_eq!(raw::status(&cancel_ok), Some(200), "{cancel_ok}");
    assert_eq!(
        raw::header(&cancel_ok, "CSeq"),
        Some("2 CANCEL"),
        "{cancel_ok}"
    );
    let relayed_cancel = loop {
        let (msg, _) = app.recv().await;
        if msg != forwarded {
            break msg;
        }
    };
    assert_eq!(
        raw::method(&relayed_cancel),
        Some("CANCEL"),
        "{relayed_cancel}"
    );
    assert_eq!(raw::top_branch(&relayed_cancel), Some(branch.as_str()));

    app.send_to(
        raw::response(&relayed_cancel, "200 OK", &app_tag, &[]),
        relay_from,
    )
    .await;
    app.send_to(
        raw::response(&forwarded, "487 Request Terminated", &app_tag, &[]),
        relay_from,
    )
    .await;
    let terminated = client.recv_text().await;
    assert_eq!(raw::status(&terminated), Some(487), "{terminated}");
    client
        .send_to(raw::ack_for(&second, &terminated), relay_udp)
        .await;
    let (hop_ack, _) = app.recv().await;
    assert_eq!(
        raw::method(&hop_ack),
        Some("ACK"),
        "the relay ACKs the 487: {hop_ack}"
    );
    assert_eq!(raw::top_branch(&hop_ack), Some(branch.as_str()));

    let rows = sessions_after_shutdown(relay).await;
    let s = only_session(&rows);
    assert_eq!(s.call_id, call_id);
    assert_eq!(s.state, SessionState::Cancelled, "{s:?}");
    assert_eq!(s.final_status, Some(487), "{s:?}");
}

/// Sends an INVITE with credentials for `password`, answering a fresh challenge first;
/// returns the final response to the credentialed INVITE.
async fn attempt(client: &RawUdp, relay: SocketAddr, password: &str) -> String {
    let (call_id, from_tag) = (raw::token(), raw::token());
    let first = raw::invite(client, &raw::branch(), &from_tag, &call_id, 1, &[]);
    client.send_to(&first, relay).await;
    let challenge = raw::next_non_trying(client).await;
    client
        .send_to(raw::ack_for(&first, &challenge), relay)
        .await;
    let Some(ch) = digest::choose_challenge(raw::headers(&challenge, "Proxy-Authenticate")) else {
        return challenge; // no challenge: already refused
    };
    let credentials = digest::answer(
        &ch,
        "INVITE",
        "sip:service1@portal.com",
        "alice",
        password,
        1,
        &raw::token(),
    );
    let second = raw::invite(
        client,
        &raw::branch(),
        &from_tag,
        &call_id,
        2,
        &[format!("Proxy-Authorization: {credentials}")],
    );
    client.send_to(&second, relay).await;
    let answer = raw::next_non_trying(client).await;
    client.send_to(raw::ack_for(&second, &answer), relay).await;
    answer
}

#[tokio::test]
async fn repeated_wrong_passwords_from_one_source_are_blocked_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::relay::test_config(&dir);
    config.sip.auth_failure_limit = 3;
    let relay = common::relay::start_relay_with(
        Seed {
            app_servers: vec![uas_uri(free_port(), false)],
        },
        config,
        dir,
    )
    .await;
    let client = RawUdp::bind().await;
    for _ in 0..3 {
        let answer = attempt(&client, relay.udp(), "wrong").await;
        assert_eq!(raw::status(&answer), Some(403), "{answer}");
    }
    // Blocked now, even with the right password: 503 with Retry-After, and no challenge.
    let answer = attempt(&client, relay.udp(), "secret").await;
    assert_eq!(raw::status(&answer), Some(503), "{answer}");
    let retry: u64 = raw::header(&answer, "Retry-After")
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{answer}");
    let rows = sessions_after_shutdown(relay).await;
    assert!(rows.is_empty(), "nothing was forwarded: {rows:?}");
}

#[tokio::test]
async fn a_request_that_comes_back_to_the_relay_gets_482_loop_detected() {
    // The service's application server is the relay itself: the forwarded INVITE arrives
    // again with the relay's own Via and branch, and is refused before authentication.
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::relay::test_config(&dir);
    config.sip.listen = vec![format!("udp:127.0.0.1:{port}").parse().unwrap()];
    let relay = common::relay::start_relay_with(
        Seed {
            app_servers: vec![format!("sip:127.0.0.1:{port}")],
        },
        config,
        dir,
    )
    .await;
    let client = RawUdp::bind().await;
    raw::authenticated_invite(&client, relay.udp()).await;
    let answer = raw::next_non_trying(&client).await;
    assert_eq!(raw::status(&answer), Some(482), "{answer}");
    let rows = sessions_after_shutdown(relay).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, SessionState::Failed);
    assert_eq!(rows[0].final_status, Some(482));
}
