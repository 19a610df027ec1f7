//! The session token: minted per forwarded INVITE, verified by the application server with the
//! published keys, and handed to the caller with the service URL in the answer.

mod common;

use common::raw::{self, RawUdp, LIMIT};
use common::relay::{start_relay, Seed};
use common::sipp::uas_uri;
use tollgate::clock::{Clock, SystemClock};
use tollgate::store::SessionFilter;
use tollgate::tokens::{TokenConfig, TokenIssuer, TokenVerifier};

#[tokio::test]
async fn the_app_server_gets_a_verifiable_token_and_the_caller_gets_url_and_token() {
    let app = RawUdp::bind().await;
    let relay = start_relay(Seed {
        app_servers: vec![uas_uri(app.addr.port(), false)],
    })
    .await;
    let issuer = format!("http://{}", relay.relay.http);
    let client = RawUdp::bind().await;

    // A forged token header from the caller never reaches the shop.
    let (call_id, from_tag) = (raw::token(), raw::token());
    let _ = raw::authenticated_invite_with(
        &client,
        relay.udp(),
        &call_id,
        &from_tag,
        &["Tollgate-Session-Token: forged.by.caller".to_string()],
    )
    .await;
    let (invite, relay_addr) = app.recv_within(LIMIT).await;
    let tokens = raw::headers(&invite, "Tollgate-Session-Token");
    assert_eq!(tokens.len(), 1, "exactly the relay's token: {invite}");
    let jwt = tokens[0].to_string();
    assert_ne!(jwt, "forged.by.caller");

    // The shop verifies it with the published keys.
    let keys = TokenIssuer::load(
        &relay.store,
        TokenConfig::new(issuer.clone()),
        SystemClock.now_ms(),
    )
    .await
    .unwrap()
    .jwks();
    let shop1 = relay.store.list_app_servers().await.unwrap().remove(0).id;
    let verifier = TokenVerifier::new(&keys, issuer.clone(), shop1).unwrap();
    let claims = verifier
        .verify(&jwt, SystemClock.now_ms())
        .expect("valid token");
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.svc, "service1@portal.com");
    assert_eq!(claims.iss, issuer);
    let other_shop = TokenVerifier::new(&keys, issuer.clone(), "another-shop").unwrap();
    assert!(
        other_shop.verify(&jwt, SystemClock.now_ms()).is_err(),
        "audience is checked"
    );

    // The shop answers with its URL in plain text; the caller gets the documented JSON.
    let extra = vec![
        format!("Contact: <sip:shop@{}>", app.addr),
        "Content-Type: text/plain".to_string(),
    ];
    let mut ok = raw::response(&invite, "200 OK", "shop", &extra);
    ok = ok.replace("Content-Length: 0\r\n\r\n", "");
    let body = "https://shop.example/wine\r\n";
    let ok = format!("{ok}Content-Length: {}\r\n\r\n{body}", body.len());
    app.send_to(ok, relay_addr).await;
    let answer = raw::next_non_trying(&client).await;
    assert_eq!(raw::status(&answer), Some(200), "{answer}");
    assert_eq!(
        raw::header(&answer, "Content-Type"),
        Some("application/json")
    );
    let (_, json) = answer.split_once("\r\n\r\n").unwrap();
    assert_eq!(
        raw::header(&answer, "Content-Length")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        json.len()
    );
    let json: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(json["url"], "https://shop.example/wine");
    assert_eq!(json["token"], jwt.as_str());
    assert_eq!(json["session_id"], claims.sid.as_str());
    assert!(json["expires_at"].as_str().unwrap().ends_with('Z'));

    let store = relay.store.clone();
    relay.relay.shutdown().await;
    let sessions = store.list_sessions(SessionFilter::default()).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].id, claims.sid, "the token names the session");
}
