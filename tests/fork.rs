//! Forking to several application servers (DESIGN.md flow 6, RFC 3261 §16.7), on a real relay
//! and real sockets, with the caller over UDP and over TCP: first answer wins (the others
//! CANCELled, recorded, never billed), all answers (every 2xx its own dialog and session),
//! serial (the next server when one fails), and the answer the caller gets when every branch
//! fails.

mod common;

use common::raw::{self, Client, Peer, RawUdp, LIMIT};
use common::relay::{client_for, sessions_after_shutdown, start_forking_relay_on, Seed, TestRelay};
use std::net::SocketAddr;
use tollgate::clock::{Clock, ManualClock, SystemClock};
use tollgate::config::Protocol;
use tollgate::store::{ForkMode, SessionRecord, SessionState};

async fn relay_for(apps: &[&RawUdp], mode: ForkMode) -> TestRelay {
    start_forking_relay_on(seed(apps), mode, ManualClock::new(SystemClock.now_ms())).await
}

fn seed(apps: &[&RawUdp]) -> Seed {
    Seed {
        app_servers: apps.iter().map(|a| format!("sip:{}", a.addr)).collect(),
    }
}

/// The next INVITE at `app`, with where it came from.
async fn invite_at(app: &RawUdp) -> (String, SocketAddr) {
    let (inv, from) = app.recv_within(LIMIT).await;
    assert_eq!(raw::method(&inv), Some("INVITE"), "{inv}");
    (inv, from)
}

fn by_app_server<'a>(rows: &'a [SessionRecord], name: &str) -> &'a SessionRecord {
    rows.iter()
        .find(|r| r.app_server == name)
        .unwrap_or_else(|| panic!("no session for {name}: {rows:?}"))
}

/// The final answer(s) the caller gets to its INVITE (CSeq 2).
async fn final_answer(client: &Client) -> String {
    raw::next_where(client, |m| {
        raw::status(m).is_some_and(|s| s >= 200) && raw::header(m, "CSeq") == Some("2 INVITE")
    })
    .await
}

/// The caller ACKs the 2xx `ok`, then hangs up with CSeq `bye_cseq`; `app` answers the BYE.
async fn confirm_then_hang_up(
    client: &Client,
    to: SocketAddr,
    invite: &str,
    ok: &str,
    app: &RawUdp,
    bye_cseq: u32,
) {
    client
        .send_to(raw::in_dialog(client, "ACK", invite, ok, 2), to)
        .await;
    raw::next_where(app, |m| raw::method(m) == Some("ACK")).await;
    hang_up(client, to, invite, ok, app, bye_cseq).await;
}

async fn hang_up(
    client: &Client,
    to: SocketAddr,
    invite: &str,
    ok: &str,
    app: &RawUdp,
    bye_cseq: u32,
) {
    client
        .send_to(raw::in_dialog(client, "BYE", invite, ok, bye_cseq), to)
        .await;
    let (bye, from) = loop {
        let (m, from) = app.recv_within(LIMIT).await;
        if raw::method(&m) == Some("BYE") {
            break (m, from);
        }
    };
    app.send_to(raw::response(&bye, "200 OK", "x", &[]), from)
        .await;
    let cseq = format!("{bye_cseq} BYE");
    raw::next_where(client, |m| raw::header(m, "CSeq") == Some(cseq.as_str())).await;
}

// ------------------------------------------------------------------------ first answer wins

async fn first_answer_wins(protocol: Protocol) {
    let (busy, slow, silent) = (
        RawUdp::bind().await,
        RawUdp::bind().await,
        RawUdp::bind().await,
    );
    let relay = relay_for(&[&busy, &slow, &silent], ForkMode::FirstAnswer).await;
    let (client, to) = client_for(&relay, protocol).await;
    let invite = raw::authenticated_invite(&client, to).await;
    let got = [
        invite_at(&busy).await,
        invite_at(&slow).await,
        invite_at(&silent).await,
    ];
    // Each branch carries its own token (each names its own application server).
    let tokens: Vec<_> = got
        .iter()
        .map(|(i, _)| {
            raw::header(i, "Tollgate-Session-Token")
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(tokens[0] != tokens[1] && tokens[1] != tokens[2] && tokens[0] != tokens[2]);

    busy.send_to(
        raw::response(&got[0].0, "486 Busy Here", "b", &[]),
        got[0].1,
    )
    .await;
    silent
        .send_to(raw::response(&got[2].0, "180 Ringing", "s", &[]), got[2].1)
        .await;
    slow.send_to(raw::ok_200(&got[1].0, "w", slow.addr, "UDP"), got[1].1)
        .await;

    let ok = final_answer(&client).await;
    assert_eq!(raw::status(&ok), Some(200), "{ok}");
    assert!(raw::header(&ok, "To").unwrap().contains("tag=w"));
    // The ringing branch is CANCELled; its 487 never reaches the caller.
    let cancel = raw::next_where(&silent, |m| raw::method(m) == Some("CANCEL")).await;
    silent
        .send_to(raw::response(&cancel, "200 OK", "s", &[]), got[2].1)
        .await;
    silent
        .send_to(
            raw::response(&got[2].0, "487 Request Terminated", "s", &[]),
            got[2].1,
        )
        .await;
    raw::next_where(&silent, |m| raw::method(m) == Some("ACK")).await;

    confirm_then_hang_up(&client, to, &invite, &ok, &slow, 3).await;

    let rows = sessions_after_shutdown(relay).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(by_app_server(&rows, "shop1").state, SessionState::Failed);
    let won = by_app_server(&rows, "shop2");
    assert_eq!(won.state, SessionState::Terminated);
    assert!(won.duration_ms.is_some());
    let cancelled = by_app_server(&rows, "shop3");
    assert_eq!(cancelled.state, SessionState::Cancelled, "{cancelled:?}");
    for r in rows.iter().filter(|r| r.app_server != "shop2") {
        assert_eq!(r.duration_ms, None, "never billed: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_answer_wins_and_the_others_are_cancelled_over_udp() {
    first_answer_wins(Protocol::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_answer_wins_and_the_others_are_cancelled_over_tcp() {
    first_answer_wins(Protocol::Tcp).await;
}

// ------------------------------------------------------------------------ all answers

async fn all_answers(protocol: Protocol) {
    let (shop_a, shop_b) = (RawUdp::bind().await, RawUdp::bind().await);
    let clock = ManualClock::new(SystemClock.now_ms());
    let relay = start_forking_relay_on(
        seed(&[&shop_a, &shop_b]),
        ForkMode::AllAnswers,
        clock.clone(),
    )
    .await;
    let (client, to) = client_for(&relay, protocol).await;
    let invite = raw::authenticated_invite(&client, to).await;
    let (inv_a, from_a) = invite_at(&shop_a).await;
    let (inv_b, from_b) = invite_at(&shop_b).await;
    shop_a
        .send_to(raw::ok_200(&inv_a, "a", shop_a.addr, "UDP"), from_a)
        .await;
    let ok_a = final_answer(&client).await;
    // The second bookstore answers too, and neither is CANCELled: the caller compares both.
    shop_b
        .send_to(raw::ok_200(&inv_b, "b", shop_b.addr, "UDP"), from_b)
        .await;
    let ok_b = final_answer(&client).await;
    assert!(raw::header(&ok_a, "To").unwrap().contains("tag=a"));
    assert!(raw::header(&ok_b, "To").unwrap().contains("tag=b"));
    let session = |m: &str| raw::header(m, "Tollgate-Session-Id").unwrap().to_string();
    assert_ne!(session(&ok_a), session(&ok_b), "two dialogs, two sessions");

    // The caller confirms both, leaves shop B at once and stays with shop A.
    client
        .send_to(raw::in_dialog(&client, "ACK", &invite, &ok_b, 2), to)
        .await;
    raw::next_where(&shop_b, |m| raw::method(m) == Some("ACK")).await;
    clock.advance(2_000);
    hang_up(&client, to, &invite, &ok_b, &shop_b, 3).await;
    client
        .send_to(raw::in_dialog(&client, "ACK", &invite, &ok_a, 2), to)
        .await;
    raw::next_where(&shop_a, |m| raw::method(m) == Some("ACK")).await;
    clock.advance(60_000);
    hang_up(&client, to, &invite, &ok_a, &shop_a, 4).await;

    let rows = sessions_after_shutdown(relay).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (a, b) = (by_app_server(&rows, "shop1"), by_app_server(&rows, "shop2"));
    assert_eq!(a.state, SessionState::Terminated);
    assert_eq!(b.state, SessionState::Terminated);
    assert_eq!(
        (a.duration_ms, b.duration_ms),
        (Some(60_000), Some(2_000)),
        "each billed for its own time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_answers_gives_each_200_its_own_session_over_udp() {
    all_answers(Protocol::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_answers_gives_each_200_its_own_session_over_tcp() {
    all_answers(Protocol::Tcp).await;
}

// ------------------------------------------------------------------------ serial

async fn serial_falls_over(protocol: Protocol) {
    let (first, second) = (RawUdp::bind().await, RawUdp::bind().await);
    let relay = relay_for(&[&first, &second], ForkMode::Serial).await;
    let (client, to) = client_for(&relay, protocol).await;
    let invite = raw::authenticated_invite(&client, to).await;
    let (inv1, from1) = invite_at(&first).await;
    // Only the first is asked until it fails.
    raw::barrier(&client, to).await;
    assert!(!second.has_pending(), "the second server is not asked yet");
    first
        .send_to(
            raw::response(&inv1, "503 Service Unavailable", "f", &[]),
            from1,
        )
        .await;
    let (inv2, from2) = invite_at(&second).await;
    second
        .send_to(raw::ok_200(&inv2, "s", second.addr, "UDP"), from2)
        .await;
    let ok = final_answer(&client).await;
    assert_eq!(raw::status(&ok), Some(200), "{ok}");
    confirm_then_hang_up(&client, to, &invite, &ok, &second, 3).await;

    let rows = sessions_after_shutdown(relay).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(by_app_server(&rows, "shop1").final_status, Some(503));
    assert_eq!(
        by_app_server(&rows, "shop2").state,
        SessionState::Terminated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_mode_falls_over_to_the_second_server_over_udp() {
    serial_falls_over(Protocol::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_mode_falls_over_to_the_second_server_over_tcp() {
    serial_falls_over(Protocol::Tcp).await;
}

// ------------------------------------------------------------------------ every branch fails

/// Every branch answers with one of `answers` (status line, extra headers); the caller gets
/// the status `want`.
async fn all_fail(protocol: Protocol, answers: &[(&str, Vec<String>)]) -> String {
    let apps: Vec<RawUdp> =
        futures_util::future::join_all(answers.iter().map(|_| RawUdp::bind())).await;
    let refs: Vec<&RawUdp> = apps.iter().collect();
    let relay = relay_for(&refs, ForkMode::FirstAnswer).await;
    let (client, to) = client_for(&relay, protocol).await;
    raw::authenticated_invite(&client, to).await;
    for (app, (status_line, extra)) in apps.iter().zip(answers) {
        let (inv, from) = invite_at(app).await;
        app.send_to(raw::response(&inv, status_line, "x", extra), from)
            .await;
    }
    let answer = final_answer(&client).await;
    relay.relay.shutdown().await;
    answer
}

async fn the_best_failure(protocol: Protocol) {
    let answer = all_fail(
        protocol,
        &[("486 Busy Here", vec![]), ("603 Decline", vec![])],
    )
    .await;
    assert_eq!(
        raw::status(&answer),
        Some(603),
        "6xx beats the rest: {answer}"
    );

    let answer = all_fail(
        protocol,
        &[
            ("503 Service Unavailable", vec!["Retry-After: 30".into()]),
            ("503 Service Unavailable", vec![]),
        ],
    )
    .await;
    assert_eq!(raw::status(&answer), Some(500), "503 becomes 500: {answer}");
    assert!(raw::header(&answer, "Retry-After").is_none());

    let answer = all_fail(
        protocol,
        &[
            (
                "407 Proxy Authentication Required",
                vec!["Proxy-Authenticate: Digest realm=\"a.example\", nonce=\"1\"".into()],
            ),
            ("404 Not Found", vec![]),
            (
                "401 Unauthorized",
                vec!["WWW-Authenticate: Digest realm=\"b.example\", nonce=\"2\"".into()],
            ),
        ],
    )
    .await;
    assert!(matches!(raw::status(&answer), Some(401 | 407)), "{answer}");
    assert_eq!(
        raw::headers(&answer, "Proxy-Authenticate").len()
            + raw::headers(&answer, "WWW-Authenticate").len(),
        2,
        "every challenge is handed on: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_branch_fails_the_caller_gets_the_best_answer_over_udp() {
    the_best_failure(Protocol::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_branch_fails_the_caller_gets_the_best_answer_over_tcp() {
    the_best_failure(Protocol::Tcp).await;
}
