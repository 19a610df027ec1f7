//! The reference shop (`tollgate shop`) against a real relay, both on port 0: it answers an
//! INVITE with its landing URL, lets the caller's token in (and nothing else: no token, a
//! tampered one, an expired one, another shop's), sells from a catalogue matching the request
//! with charges that land once per Idempotency-Key, bills its tab in the 200 to BYE, is busy
//! at capacity, and frees a slot when a signed webhook says a session ended.

mod common;

use std::sync::Arc;

use common::raw::{self, RawUdp};
use common::relay::{start_forking_relay, Seed, TestRelay, OPERATOR_KEY};
use common::wait;
use reqwest::redirect::Policy;
use tollgate::clock::{Clock, ManualClock, SystemClock};
use tollgate::shop::{self, Shop, ShopConfig};
use tollgate::store::{AppServerChange, ForkMode};

/// A relay whose service1 is delivered by `count` reference shops (forked as `mode`), each
/// holding at most `capacity` sessions, all verifying tokens on `clock`.
async fn relay_with_shops(
    count: usize,
    mode: ForkMode,
    capacity: usize,
    clock: Arc<ManualClock>,
) -> (TestRelay, Vec<Shop>) {
    let relay = start_forking_relay(
        Seed {
            app_servers: vec!["sip:127.0.0.1:9".into(); count],
        },
        mode,
    )
    .await;
    let mut shops = Vec::new();
    for server in relay.store.list_app_servers().await.unwrap() {
        let key = relay.store.reissue_api_key(&server.id, None).await.unwrap();
        let shop = shop::start(
            ShopConfig {
                relay_url: format!("http://{}", relay.relay.http),
                issuer: None,
                api_key: key.expose().to_owned(),
                sip_listen: "127.0.0.1:0".parse().unwrap(),
                http_listen: "127.0.0.1:0".parse().unwrap(),
                public_url: None,
                capacity,
            },
            clock.clone(),
        )
        .await
        .expect("the shop starts");
        let change = AppServerChange {
            uri: Some(format!("sip:{}", shop.sip)),
            ..AppServerChange::default()
        };
        relay
            .store
            .update_app_server(&server.id, &change)
            .await
            .unwrap();
        shops.push(shop);
    }
    relay.relay.reload_directory().await.unwrap();
    (relay, shops)
}

fn now_clock() -> Arc<ManualClock> {
    ManualClock::new(SystemClock.now_ms())
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// The JSON body of a 2xx the client received.
fn answer_body(ok: &str) -> serde_json::Value {
    let body = ok.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {ok}"))
}

/// Posts `token` to the landing URL: the response (not followed).
async fn land(url: &str, token: &str) -> reqwest::Response {
    browser()
        .post(url)
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
}

async fn refusal(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), 403);
    let page = resp.text().await.unwrap();
    assert!(page.contains("Access refused"), "{page}");
    page
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_answers_lets_its_token_in_and_sells_with_idempotent_charges() {
    let (relay, shops) = relay_with_shops(1, ForkMode::FirstAnswer, 5, now_clock()).await;
    let client = RawUdp::bind().await;
    let invite = raw::authenticated_invite(&client, relay.udp()).await;
    let ok = raw::next_non_trying(&client).await;
    assert_eq!(raw::status(&ok), Some(200), "{ok}");
    let body = answer_body(&ok);
    assert_eq!(body["url"], shops[0].landing_url.as_str());
    client
        .send_to(raw::in_dialog(&client, "ACK", &invite, &ok, 2), relay.udp())
        .await;

    // A mid-session UPDATE is accepted (the session and its token live on).
    client
        .send_to(
            raw::in_dialog(&client, "UPDATE", &invite, &ok, 3),
            relay.udp(),
        )
        .await;
    let updated = raw::next_where(&client, |m| {
        raw::header(m, "CSeq") == Some("3 UPDATE") && raw::status(m).is_some_and(|s| s >= 200)
    })
    .await;
    assert_eq!(raw::status(&updated), Some(200), "{updated}");

    // The token opens a cookie session, with no password asked.
    let landed = land(&shops[0].landing_url, body["token"].as_str().unwrap()).await;
    assert_eq!(landed.status(), 303);
    assert_eq!(landed.headers()["location"], "/shop");
    let cookie = landed.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let base = format!("http://{}", shops[0].http);
    let page = browser()
        .get(format!("{base}/shop"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("alice"), "{page}");
    assert!(
        page.contains("Rioja") && !page.contains("Dune"),
        "the INVITE asked for wine: {page}"
    );

    // "Buy" twice with one form key (a double click), then another item.
    for (item, key) in [("rioja", "k1"), ("rioja", "k1"), ("chianti", "k2")] {
        let r = browser()
            .post(format!("{base}/shop/buy"))
            .header("Cookie", &cookie)
            .form(&[("item", item), ("key", key)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    }
    let page = browser()
        .get(format!("{base}/shop"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(page.matches("<li>Rioja").count(), 1, "{page}");
    assert_eq!(page.matches("<li>Chianti").count(), 1, "{page}");

    // One more on the tab: billed in the 200 to BYE.
    let r = browser()
        .post(format!("{base}/shop/tab"))
        .header("Cookie", &cookie)
        .form(&[("item", "cava")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);

    client
        .send_to(raw::in_dialog(&client, "BYE", &invite, &ok, 4), relay.udp())
        .await;
    let done = raw::next_where(&client, |m| raw::status(m).is_some_and(|s| s >= 200)).await;
    assert_eq!(raw::status(&done), Some(200), "{done}");

    // The relay records the BYE's charges after relaying the 200, in a task of its own that
    // tells nobody: wait until the REST API lists the third charge.
    let sid = body["session_id"].as_str().unwrap();
    let charges = wait::until("the charges in the 200 to BYE are recorded", || async {
        let list: serde_json::Value = browser()
            .get(format!(
                "http://{}/v1/sessions/{sid}/charges",
                relay.relay.http
            ))
            .bearer_auth(OPERATOR_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = list["items"].as_array().unwrap().clone();
        if items.len() >= 3 {
            Ok(items)
        } else {
            Err(list.to_string())
        }
    })
    .await;
    let mut sold: Vec<(String, String)> = charges
        .iter()
        .map(|c| {
            (
                c["description"].as_str().unwrap().to_owned(),
                c["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    sold.sort();
    assert_eq!(
        sold,
        [
            ("Cava Brut (sparkling wine)".to_owned(), "bye".to_owned()),
            (
                "Chianti Classico 2021 (red wine)".to_owned(),
                "rest".to_owned()
            ),
            (
                "Rioja Reserva 2019 (red wine)".to_owned(),
                "rest".to_owned()
            ),
        ]
    );

    // The visit is over: the cookie and the token no longer open the shop.
    let after = browser()
        .get(format!("{base}/shop"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    refusal(after).await;
    let again = land(&shops[0].landing_url, body["token"].as_str().unwrap()).await;
    assert!(refusal(again).await.contains("ended"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_shop_answers_busy_here_until_a_session_ends() {
    let (relay, shops) = relay_with_shops(1, ForkMode::FirstAnswer, 1, now_clock()).await;
    // The shop learnt its id from GET /v1/app-servers/me; the operator key has no "me".
    let me = format!("http://{}/v1/app-servers/me", relay.relay.http);
    let operator = browser()
        .get(&me)
        .bearer_auth(OPERATOR_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(operator.status(), 403);
    assert_eq!(shops[0].name, "shop1");

    let first = RawUdp::bind().await;
    raw::authenticated_invite(&first, relay.udp()).await;
    let ok = raw::next_non_trying(&first).await;
    assert_eq!(raw::status(&ok), Some(200), "{ok}");

    let second = RawUdp::bind().await;
    raw::authenticated_invite(&second, relay.udp()).await;
    let busy = raw::next_non_trying(&second).await;
    assert_eq!(raw::status(&busy), Some(486), "{busy}");

    // The relay says the first session ended without a BYE reaching the shop (a session
    // timer): a signed `session.terminated` webhook frees the slot. An unsigned one is refused.
    let sid = answer_body(&ok)["session_id"].as_str().unwrap().to_owned();
    let event = serde_json::json!({
        "id": "evt_test_1", "type": "session.terminated",
        "created_at": "2026-12-02T00:00:00.000Z", "data": {"id": sid},
    })
    .to_string();
    let hook = format!("http://{}/hooks/tollgate", shops[0].http);
    let unsigned = browser()
        .post(&hook)
        .body(event.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let now = SystemClock.now_ms();
    let secrets = relay
        .store
        .webhook_signing_secrets(&shops[0].id, now)
        .await
        .unwrap();
    let signature = tollgate::notify::signature_header(&secrets, now / 1000, event.as_bytes());
    let signed = browser()
        .post(&hook)
        .header(tollgate::notify::SIGNATURE_HEADER, signature)
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 204);
    let third = RawUdp::bind().await;
    raw::authenticated_invite(&third, relay.udp()).await;
    let answered = raw::next_non_trying(&third).await;
    assert_eq!(raw::status(&answered), Some(200), "{answered}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_landing_page_refuses_every_request_without_a_valid_token_for_this_shop() {
    let clock = now_clock();
    let (relay, shops) = relay_with_shops(2, ForkMode::AllAnswers, 5, clock.clone()).await;
    let client = RawUdp::bind().await;
    raw::authenticated_invite(&client, relay.udp()).await;
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let msg = raw::next_where(&client, |m| raw::status(m) == Some(200)).await;
        let body = answer_body(&msg);
        if !answers
            .iter()
            .any(|b: &serde_json::Value| b["url"] == body["url"])
        {
            answers.push(body);
        }
    }
    let url = |shop: &Shop| shop.landing_url.clone();
    let token_for = |shop: &Shop| {
        answers
            .iter()
            .find(|b| b["url"] == url(shop).as_str())
            .map(|b| b["token"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let (one, two) = (&shops[0], &shops[1]);

    // No token: GET, or a POST without one.
    let page = refusal(browser().get(url(one)).send().await.unwrap()).await;
    assert!(page.contains("without a session token"), "{page}");
    refusal(land(&url(one), "").await).await;
    // No cookie: the catalogue is closed.
    let shop_page = browser()
        .get(format!("http://{}/shop", one.http))
        .send()
        .await
        .unwrap();
    refusal(shop_page).await;
    // Tampered: one character of the signature changed.
    let mut tampered = token_for(one);
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert!(refusal(land(&url(one), &tampered).await)
        .await
        .contains("not genuine"));
    // Another shop's token.
    let page = refusal(land(&url(one), &token_for(two)).await).await;
    assert!(page.contains("another shop"), "{page}");
    // Expired: the shop's clock is past the token's five minutes.
    clock.advance(3_600_000);
    let page = refusal(land(&url(one), &token_for(one)).await).await;
    assert!(page.contains("expired"), "{page}");
    // The right token in time lets in.
    clock.advance(-3_600_000);
    assert_eq!(land(&url(one), &token_for(one)).await.status(), 303);
    assert_eq!(land(&url(two), &token_for(two)).await.status(), 303);
}
