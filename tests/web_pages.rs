//! The pages the relay serves: the browser client and console from the binary (no build
//! step), `/web/config.json` naming the WebSocket listener and the services, and a user's own
//! statement behind their SIP name and password (decision 0041).

mod common;

use common::relay::{start_forking_relay_on, start_relay_with, test_config, Seed};
use tollgate::clock::{Clock, ManualClock, SystemClock};
use tollgate::config::Protocol;
use tollgate::store::ForkMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_and_their_settings_are_served_from_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    config.sip.listen.push("ws:127.0.0.1:0".parse().unwrap());
    let relay = start_relay_with(
        Seed {
            app_servers: vec!["sip:127.0.0.1:9".into()],
        },
        config,
        dir,
    )
    .await;
    let base = format!("http://{}", relay.relay.http);
    let http = reqwest::Client::new();

    for (path, needle) in [
        ("/", "sip-ua.js"),
        ("/console", "Operator key"),
        ("/web/sip-ua.js", "class SipUA"),
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.text().await.unwrap().contains(needle), "{path}");
    }
    assert_eq!(
        http.get(format!("{base}/web/nope.js"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let settings: serde_json::Value = http
        .get(format!("{base}/web/config.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ws = relay.addr(Protocol::Ws);
    assert_eq!(settings["ws_url"], format!("ws://127.0.0.1:{}", ws.port()));
    assert_eq!(settings["domain"], "portal.com");
    assert_eq!(settings["services"][0]["address"], "service1@portal.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_reads_their_own_statement_with_their_sip_password() {
    // A clock that stays in one minute: the failure budget is per minute.
    let clock = ManualClock::new(SystemClock.now_ms() / 60_000 * 60_000);
    let relay = start_forking_relay_on(
        Seed {
            app_servers: vec![],
        },
        ForkMode::FirstAnswer,
        clock,
    )
    .await;
    let base = format!("http://{}", relay.relay.http);
    let http = reqwest::Client::new();
    let statement = |user: &str, password: &str| {
        http.get(format!("{base}/web/my-statement"))
            .basic_auth(user, Some(password))
            .send()
    };
    let ok = statement("alice", "secret").await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["cache-control"], "no-store");
    let body: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(body["user"], "alice");
    assert!(body["totals"].is_array());
    // No credentials, an unknown user, a wrong password: the same 401; five a minute, then 429.
    let none = http
        .get(format!("{base}/web/my-statement"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    for (user, password) in [
        ("alice", "wrong"),
        ("mallory", "secret"),
        ("alice", ""),
        ("bob", "y"),
    ] {
        assert_eq!(statement(user, password).await.unwrap().status(), 401);
    }
    assert_eq!(statement("alice", "secret").await.unwrap().status(), 429);
}
