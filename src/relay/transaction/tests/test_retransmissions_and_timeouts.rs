//! Timer A/B for INVITE and E/F for non-INVITE over UDP (RFC 3261 §17.1.1.2, §17.1.2.2).

use super::*;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn an_unanswered_invite_is_resent_at_timer_a_and_given_up_at_timer_b() {
    let mut h = Harness::new();
    h.send(Method::Invite, "z9hG4bK-l-a-n1", 3);
    h.sent();
    let start = Instant::now();
    let mut resent_at = Vec::new();
    let mut expired = Vec::new();
    while start.elapsed() < 64 * T1 {
        let timer = std::future::poll_fn(|cx| h.engine.poll_timer(cx))
            .await
            .unwrap();
        expired.extend(h.engine.on_timer(timer));
        if !h.sent().is_empty() {
            resent_at.push(start.elapsed().as_millis());
        }
    }
    assert_eq!(resent_at, vec![500, 1500, 3500, 7500, 15500, 31500]);
    match expired.as_slice() {
        [Expiry::NoAnswer { owner, status, .. }] => {
            assert_eq!((*owner, *status), (3, 408));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_provisional_stops_invite_retransmissions() {
    let mut h = Harness::new();
    h.send(Method::Invite, "z9hG4bK-l-b-n1", 1);
    let d = h.engine.on_response(
        response(180, Method::Invite, "z9hG4bK-l-b-n1"),
        udp(APP),
        &local(),
    );
    assert!(matches!(d, Delivery::Provisional { .. }));
    h.sent();
    let expired = h.run_timers(100 * T1).await;
    assert!(h.sent().is_empty(), "no retransmission after a provisional");
    assert!(expired.is_empty(), "Timer B does not apply once proceeding");
}

#[tokio::test(start_paused = true)]
async fn non_invite_retransmissions_are_capped_at_t2() {
    let mut h = Harness::new();
    h.send(Method::Bye, "z9hG4bK-l-c-n1", 1);
    h.sent();
    let start = Instant::now();
    let mut resent_at = Vec::new();
    while start.elapsed() < Duration::from_secs(20) {
        let timer = std::future::poll_fn(|cx| h.engine.poll_timer(cx))
            .await
            .unwrap();
        h.engine.on_timer(timer);
        if !h.sent().is_empty() {
            resent_at.push(start.elapsed().as_millis());
        }
    }
    assert_eq!(
        &resent_at[..7],
        &[500, 1500, 3500, 7500, 11500, 15500, 19500]
    );
}
