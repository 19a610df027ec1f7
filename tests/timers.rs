//! SIP timers (RFC 3261 §17) on a real relay and real sockets, under tokio's paused time:
//! the clock jumps to the next timer whenever every task waits, so a 32-second timeout takes
//! milliseconds and nothing sleeps for real. The tests run on tokio's current-thread runtime,
//! which is what `tokio::time::pause` needs.

mod common;

use common::raw::{self, RawUdp, LIMIT};
use common::relay::{start_relay, Seed, TestRelay};
use common::sipp::uas_uri;
use std::time::Duration;
use tokio::time::Instant;
use tollgate::store::{SessionFilter, SessionState};

/// The timer wheel has millisecond resolution and each step may round up by a millisecond or
/// two; a schedule off by more than 20 ms is wrong.
fn assert_schedule(actual: &[u128], expected: &[u128]) {
    let close = actual.len() == expected.len()
        && actual
            .iter()
            .zip(expected)
            .all(|(a, e)| *a >= *e && *a <= *e + 20);
    assert!(close, "timer schedule {actual:?}, expected {expected:?}");
}

async fn relay_to(app: &RawUdp) -> TestRelay {
    let relay = start_relay(Seed {
        app_servers: vec![uas_uri(app.addr.port(), false)],
    })
    .await;
    tokio::time::pause();
    relay
}

#[tokio::test]
async fn silent_app_server_gets_timer_a_retransmissions_and_the_client_408_at_timer_b() {
    let app = RawUdp::bind().await;
    let relay = relay_to(&app).await;
    let client = RawUdp::bind().await;
    raw::authenticated_invite(&client, relay.udp()).await;

    // Timer A: the INVITE is sent at 0 and again after 0.5, 1, 2, 4, 8 and 16 s.
    let (first, _) = app.recv_within(LIMIT).await;
    let start = Instant::now();
    let mut offsets = Vec::new();
    for _ in 0..6 {
        let (again, _) = app.recv_within(LIMIT).await;
        assert_eq!(
            raw::top_branch(&again),
            raw::top_branch(&first),
            "same branch"
        );
        offsets.push(start.elapsed().as_millis());
    }
    assert_schedule(&offsets, &[500, 1500, 3500, 7500, 15500, 31500]);

    // Timer B (64·T1 = 32 s): the client gets 408.
    let answer = raw::next_non_trying(&client).await;
    assert_eq!(raw::status(&answer), Some(408), "{answer}");
    assert_schedule(&[start.elapsed().as_millis()], &[32_000]);
    assert!(raw::header(&answer, "To").is_some_and(|t| t.contains("tag=")));

    let store = relay.store.clone();
    relay.relay.shutdown().await;
    let rows = store.list_sessions(SessionFilter::default()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, SessionState::Failed);
    assert_eq!(rows[0].final_status, Some(408));
}

#[tokio::test]
async fn a_provisional_stops_retransmissions_and_timer_c_restarted_by_each_one_cancels_after_181_s()
{
    let app = RawUdp::bind().await;
    let relay = relay_to(&app).await;
    let client = RawUdp::bind().await;
    raw::authenticated_invite(&client, relay.udp()).await;

    let (invite, relay_addr) = app.recv_within(LIMIT).await;
    let start = Instant::now();
    app.send_to(
        raw::response(&invite, "180 Ringing", "shop", &[]),
        relay_addr,
    )
    .await;
    let ringing = raw::next_non_trying(&client).await;
    assert_eq!(raw::status(&ringing), Some(180), "{ringing}");

    // Every provisional restarts Timer C (RFC 3261 §16.7 step 2): a 183 after 100 s moves the
    // deadline to 281 s.
    tokio::time::sleep(Duration::from_secs(100)).await;
    app.send_to(
        raw::response(&invite, "183 Session Progress", "shop", &[]),
        relay_addr,
    )
    .await;
    let progress = raw::next_non_trying(&client).await;
    assert_eq!(raw::status(&progress), Some(183), "{progress}");

    // No retransmission after the 180; the next thing the app server sees is the CANCEL
    // Timer C sends 181 s (more than three minutes) after the last provisional.
    let (cancel, _) = app.recv_within(LIMIT).await;
    assert_eq!(raw::method(&cancel), Some("CANCEL"), "{cancel}");
    assert_eq!(raw::top_branch(&cancel), raw::top_branch(&invite));
    assert_eq!(start.elapsed().as_secs(), 281);
    let answer = raw::next_non_trying(&client).await;
    assert_eq!(raw::status(&answer), Some(408), "{answer}");
    relay.relay.shutdown().await;
}

#[tokio::test]
async fn a_final_refusal_is_resent_by_timer_g_until_the_client_acks() {
    let app = RawUdp::bind().await;
    let relay = relay_to(&app).await;
    let client = RawUdp::bind().await;
    let invite_sent = raw::authenticated_invite(&client, relay.udp()).await;

    let (invite, relay_addr) = app.recv_within(LIMIT).await;
    app.send_to(
        raw::response(&invite, "486 Busy Here", "shop", &[]),
        relay_addr,
    )
    .await;
    // The relay ACKs the 486 hop by hop.
    let (ack, _) = app.recv_within(LIMIT).await;
    assert_eq!(raw::method(&ack), Some("ACK"), "{ack}");
    assert_eq!(raw::top_branch(&ack), raw::top_branch(&invite));

    // The client does not ACK: the 486 comes again after 0.5, 1 and 2 s (Timer G).
    let busy = raw::next_non_trying(&client).await;
    assert_eq!(raw::status(&busy), Some(486), "{busy}");
    let start = Instant::now();
    let mut offsets = Vec::new();
    for _ in 0..3 {
        let again = client.recv_within(LIMIT).await.0;
        assert_eq!(again, busy, "the same response is resent");
        offsets.push(start.elapsed().as_millis());
    }
    assert_schedule(&offsets, &[500, 1500, 3500]);

    // After the ACK, nothing more. The core handles datagrams in order, so once the answer to
    // an OPTIONS sent behind the ACK is back, the ACK has been processed; from then on, ten
    // seconds of timers bring no 486.
    client
        .send_to(raw::ack_for(&invite_sent, &busy), relay.udp())
        .await;
    let first_marker = raw::options_marker(&client, relay.udp()).await;
    loop {
        let msg = client.recv_within(LIMIT).await.0;
        if raw::header(&msg, "Call-ID") == Some(first_marker.as_str()) {
            break;
        }
        assert_eq!(msg, busy, "only a resend already under way may come before");
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    let second_marker = raw::options_marker(&client, relay.udp()).await;
    let next = client.recv_within(LIMIT).await.0;
    assert_eq!(
        raw::header(&next, "Call-ID"),
        Some(second_marker.as_str()),
        "{next}"
    );
    relay.relay.shutdown().await;
}
