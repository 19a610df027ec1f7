//! Our CANCEL (RFC 3261 §9.1): held until the branch is proceeding, then retransmitted until
//! the peer answers it; a branch that never sends its final answer is given up as 487.

use super::*;
use crate::relay::transaction::CancelState;

#[tokio::test(start_paused = true)]
async fn a_cancel_waits_for_a_provisional_then_is_resent_until_answered() {
    let mut h = Harness::new();
    h.send(Method::Invite, "z9hG4bK-l-c1-n1", 1);
    h.sent();
    h.engine.cancel("z9hG4bK-l-c1-n1");
    assert!(h.sent().is_empty(), "no CANCEL before a provisional");
    assert_eq!(
        h.engine.client("z9hG4bK-l-c1-n1").unwrap().cancel,
        CancelState::Pending
    );
    h.engine.on_response(
        response(180, Method::Invite, "z9hG4bK-l-c1-n1"),
        udp(APP),
        &local(),
    );
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].1.starts_with("CANCEL "), "{}", sent[0].1);
    assert!(sent[0].1.contains("branch=z9hG4bK-l-c1-n1"));

    // Unanswered, it is sent again at T1, 2·T1 …
    h.run_timers(T1 * 3 + Duration::from_millis(10)).await;
    let again: Vec<_> = h
        .sent()
        .into_iter()
        .filter(|(_, m)| m.starts_with("CANCEL "))
        .collect();
    assert_eq!(again.len(), 2, "resent at 0.5 s and 1.5 s");

    // … until the peer answers it.
    let d = h.engine.on_response(
        response(200, Method::Cancel, "z9hG4bK-l-c1-n1"),
        udp(APP),
        &local(),
    );
    assert!(matches!(d, Delivery::Absorbed));
    h.run_timers(Duration::from_secs(10)).await;
    assert!(h.sent().iter().all(|(_, m)| !m.starts_with("CANCEL ")));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_branch_that_never_answers_is_given_up_as_487() {
    let mut h = Harness::new();
    h.send(Method::Invite, "z9hG4bK-l-c2-n1", 5);
    h.engine.on_response(
        response(183, Method::Invite, "z9hG4bK-l-c2-n1"),
        udp(APP),
        &local(),
    );
    h.engine.cancel("z9hG4bK-l-c2-n1");
    h.engine.on_response(
        response(200, Method::Cancel, "z9hG4bK-l-c2-n1"),
        udp(APP),
        &local(),
    );
    let expired = h.run_timers(64 * T1 + Duration::from_millis(10)).await;
    match expired.as_slice() {
        [Expiry::NoAnswer { owner, status, .. }] => assert_eq!((*owner, *status), (5, 487)),
        other => panic!("{other:?}"),
    }
}
