//! RFC 3261 §16.7: a 2xx is always forwarded. After the engine gave up on a branch (Timer B, a
//! CANCEL nobody answered), a 2xx that still arrives is delivered so the core can relay it
//! or end it; its retransmissions are marked as such.

use super::*;

#[tokio::test(start_paused = true)]
async fn a_2xx_after_timer_b_is_still_delivered_and_its_retransmission_marked() {
    let mut h = Harness::new();
    h.send(Method::Invite, "z9hG4bK-l-late-n1", 9);
    let expired = h.run_timers(64 * T1 + Duration::from_millis(10)).await;
    assert!(matches!(
        expired.as_slice(),
        [Expiry::NoAnswer { status: 408, .. }]
    ));
    match h.engine.on_response(
        response(200, Method::Invite, "z9hG4bK-l-late-n1"),
        udp(APP),
        &local(),
    ) {
        Delivery::Final {
            owner, repeated, ..
        } => assert_eq!((owner, repeated), (9, false)),
        other => panic!("{other:?}"),
    }
    match h.engine.on_response(
        response(200, Method::Invite, "z9hG4bK-l-late-n1"),
        udp(APP),
        &local(),
    ) {
        Delivery::Final { repeated, .. } => assert!(repeated),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_retransmitted_failure_is_acked_again_and_absorbed() {
    let mut h = Harness::new();
    h.send(Method::Invite, "z9hG4bK-l-f-n1", 1);
    h.engine.on_response(
        response(486, Method::Invite, "z9hG4bK-l-f-n1"),
        udp(APP),
        &local(),
    );
    h.sent();
    let d = h.engine.on_response(
        response(486, Method::Invite, "z9hG4bK-l-f-n1"),
        udp(APP),
        &local(),
    );
    assert!(matches!(d, Delivery::Absorbed));
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].1.starts_with("ACK "));
}
