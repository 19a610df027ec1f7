//! A response is delivered only when its top Via is ours, its branch is live, and it comes
//! from the address the request went to. Nothing dropped is ever sent anywhere.

use super::*;

#[tokio::test]
async fn a_response_from_another_address_is_dropped_and_the_real_one_delivered() {
    let mut h = Harness::new();
    h.send(Method::Invite, "z9hG4bK-l-r1-n1", 7);
    h.sent();
    let forged = h.engine.on_response(
        response(200, Method::Invite, "z9hG4bK-l-r1-n1"),
        udp("10.0.0.9:6000"),
        &local(),
    );
    assert!(matches!(forged, Delivery::Dropped(Dropped::WrongSource)));
    let tcp = Flow {
        protocol: Protocol::Tcp,
        ..udp(APP)
    };
    let wrong_transport = h.engine.on_response(
        response(200, Method::Invite, "z9hG4bK-l-r1-n1"),
        tcp,
        &local(),
    );
    assert!(matches!(
        wrong_transport,
        Delivery::Dropped(Dropped::WrongSource)
    ));
    assert!(h.sent().is_empty(), "a dropped response is never forwarded");
    match h.engine.on_response(
        response(486, Method::Invite, "z9hG4bK-l-r1-n1"),
        udp(APP),
        &local(),
    ) {
        Delivery::Final {
            owner, response, ..
        } => {
            assert_eq!(owner, 7);
            assert_eq!(u16::from(response.status_code), 486);
        }
        other => panic!("{other:?}"),
    }
    let ack = h.sent();
    assert_eq!(ack.len(), 1);
    assert!(
        ack[0].1.starts_with("ACK "),
        "a non-2xx final is ACKed hop by hop"
    );
}

#[tokio::test]
async fn another_address_of_the_same_peer_may_answer() {
    let mut h = Harness::new();
    h.engine.send(Outgoing {
        branch: "z9hG4bK-l-r2-n1".into(),
        method: Method::Invite,
        wire: Bytes::from(request(Method::Invite, "z9hG4bK-l-r2-n1").to_bytes()),
        flow: udp(APP),
        also_from: vec!["10.0.0.10:5070".parse().unwrap()],
        owner: 1,
    });
    let d = h.engine.on_response(
        response(180, Method::Invite, "z9hG4bK-l-r2-n1"),
        udp("10.0.0.10:5070"),
        &local(),
    );
    assert!(matches!(d, Delivery::Provisional { .. }), "{d:?}");
}

#[tokio::test]
async fn a_foreign_via_or_an_unknown_branch_is_dropped() {
    let mut h = Harness::new();
    h.send(Method::Invite, "z9hG4bK-l-r3-n1", 1);
    h.sent();
    let mut foreign = response(200, Method::Invite, "z9hG4bK-l-r3-n1");
    msg::pop_top_via(&mut foreign.headers);
    assert!(matches!(
        h.engine.on_response(foreign, udp(APP), &local()),
        Delivery::Dropped(Dropped::ForeignVia)
    ));
    assert!(matches!(
        h.engine.on_response(
            response(200, Method::Invite, "z9hG4bK-l-guess-n1"),
            udp(APP),
            &local()
        ),
        Delivery::Dropped(Dropped::UnknownBranch)
    ));
    assert!(
        matches!(
            h.engine.on_response(
                response(200, Method::Bye, "z9hG4bK-l-r3-n1"),
                udp(APP),
                &local()
            ),
            Delivery::Dropped(Dropped::UnknownBranch)
        ),
        "a response for another method on the branch is not ours"
    );
    assert!(h.sent().is_empty());
}
