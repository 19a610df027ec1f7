//! Session tokens end to end, the way an application server meets them: minted by the relay for
//! a real call, verified by a third party (PyJWT) knowing only the JWKS URL, introspected over
//! the REST API while the call is up and after it ended, and verified by the crate's own
//! verifier against the JWK set fetched over HTTP after a sipp call.
//!
//! PyJWT comes from the virtualenv of `scripts/install-api-test-tools.sh` (`$TOLLGATE_SDK_VENV`,
//! default `~/.cache/tollgate-sdk-venv`); sipp from Debian's `sip-tester`. Without them the
//! tests that need them fail, in CI and on a laptop alike (never a skip).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::raw::{self, Peer, RawUdp, LIMIT};
use common::relay::{free_port, start_relay, Seed, TestRelay, OPERATOR_KEY};
use common::sipp::{require_sipp, uas_uri, Sipp};
use common::tools::{missing, venv};
use common::wait;
use jsonwebtoken::jwk::JwkSet;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tollgate::clock::{Clock, SystemClock};
use tollgate::store::{SessionFilter, SessionState};
use tollgate::tokens::TokenVerifier;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TOKEN_HEADER: &str = "Tollgate-Session-Token";

fn issuer(relay: &TestRelay) -> String {
    format!("http://{}", relay.relay.http)
}

/// The id of the seeded application server `shop1`: the `aud` of its tokens.
async fn shop1_id(relay: &TestRelay) -> String {
    let shops = relay.store.list_app_servers().await.unwrap();
    shops
        .into_iter()
        .find(|s| s.name == "shop1")
        .expect("shop1 is seeded")
        .id
}

/// The virtualenv's python, which must have PyJWT with its crypto extra.
async fn pyjwt_python() -> PathBuf {
    let venv = venv();
    let python = venv.join("bin/python");
    let has_pyjwt = tokio::process::Command::new(&python)
        .args(["-c", "import jwt, cryptography"])
        .output()
        .await
        .is_ok_and(|out| out.status.success());
    if !has_pyjwt {
        missing(&format!("pyjwt[crypto] in {}", venv.display()));
    }
    python
}

/// One call, raw sockets on both sides, up to the caller holding the 200.
struct Call {
    client: RawUdp,
    app: RawUdp,
    relay_sip: SocketAddr,
    /// The 200 as the caller received it.
    ok: String,
    /// The token the application server received.
    token: String,
}

impl Call {
    /// alice calls service1; the application server answers 200 with its Contact and the
    /// Record-Route headers copied, so the relay stays on the dialog's path.
    async fn answered(relay: &TestRelay, app: RawUdp) -> Call {
        let client = RawUdp::bind().await;
        let relay_sip = relay.udp();
        raw::authenticated_invite(&client, relay_sip).await;
        let (invite, app_side) = app.recv_within(LIMIT).await;
        assert_eq!(raw::method(&invite), Some("INVITE"), "{invite}");
        let tokens = raw::headers(&invite, TOKEN_HEADER);
        assert_eq!(tokens.len(), 1, "one token on the INVITE: {invite}");
        let token = tokens[0].to_string();

        let mut extra: Vec<String> = raw::headers(&invite, "Record-Route")
            .into_iter()
            .map(|rr| format!("Record-Route: {rr}"))
            .collect();
        assert!(!extra.is_empty(), "the relay record-routes: {invite}");
        extra.push(format!("Contact: <sip:shop@{}>", app.addr));
        app.send_to(raw::response(&invite, "200 OK", "shop", &extra), app_side)
            .await;
        let ok = raw::next_non_trying(&client).await;
        assert_eq!(raw::status(&ok), Some(200), "{ok}");
        assert_eq!(
            raw::header(&ok, TOKEN_HEADER),
            Some(token.as_str()),
            "the caller gets the token the application server got: {ok}"
        );
        Call {
            client,
            app,
            relay_sip,
            ok,
            token,
        }
    }

    /// An in-dialog request from the caller, through the relay by the recorded route.
    fn in_dialog(&self, method: &str, cseq: u32) -> String {
        let route = raw::header(&self.ok, "Record-Route").expect("record-routed");
        raw::message(
            &format!("{method} sip:shop@{} SIP/2.0", self.app.addr),
            &[
                self.client.via(&raw::branch()),
                format!("Route: {route}"),
                format!("From: {}", raw::header(&self.ok, "From").unwrap()),
                format!("To: {}", raw::header(&self.ok, "To").unwrap()),
                format!("Call-ID: {}", raw::header(&self.ok, "Call-ID").unwrap()),
                format!("CSeq: {cseq} {method}"),
                "Max-Forwards: 70".into(),
            ],
            "",
        )
    }

    /// The next request reaching the application server with `method`, skipping
    /// retransmissions of earlier ones.
    async fn app_receives(&self, method: &str) -> (String, SocketAddr) {
        loop {
            let (msg, from) = self.app.recv_within(LIMIT).await;
            if raw::method(&msg) == Some(method) {
                return (msg, from);
            }
        }
    }

    /// ACKs the 200; returns once the ACK reached the application server. The relay holds the
    /// ACK until the session's confirmation is committed, so the session row says `confirmed`
    /// from then on.
    async fn confirm(&self) {
        self.client
            .send_to(self.in_dialog("ACK", 2), self.relay_sip)
            .await;
        self.app_receives("ACK").await;
    }

    /// The caller hangs up; returns the final response the caller gets for its BYE.
    async fn hang_up(&self) -> String {
        self.client
            .send_to(self.in_dialog("BYE", 3), self.relay_sip)
            .await;
        let (bye, from) = self.app_receives("BYE").await;
        self.app
            .send_to(raw::response(&bye, "200 OK", "shop", &[]), from)
            .await;
        loop {
            let msg = raw::next_non_trying(&self.client).await;
            if raw::header(&msg, "CSeq").is_some_and(|c| c.ends_with("BYE")) {
                return msg;
            }
        }
    }
}

#[tokio::test]
async fn pyjwt_verifies_a_relay_token_from_the_jwks_url() {
    let python = pyjwt_python().await;
    let app = RawUdp::bind().await;
    let relay = start_relay(Seed {
        app_servers: vec![uas_uri(app.addr.port(), false)],
    })
    .await;
    let call = Call::answered(&relay, app).await;
    let audience = shop1_id(&relay).await;
    let jwks_url = format!("{}/.well-known/jwks.json", issuer(&relay));

    // The relay runs on this test's runtime: wait for the script without blocking it.
    let ran = tokio::process::Command::new(&python)
        .arg(Path::new(ROOT).join("tests/sdk/pyjwt_check.py"))
        .args([&jwks_url, &call.token, &issuer(&relay), &audience])
        // Loopback only: never through a proxy from the environment.
        .env("NO_PROXY", "*")
        .env("no_proxy", "*")
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&ran.stdout);
    let report = format!(
        "pyjwt_check.py ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        ran.status,
        String::from_utf8_lossy(&ran.stderr)
    );
    println!("{report}");
    assert!(ran.status.success(), "{report}");
    for line in [
        "header: alg=ES256 kid=",
        "accepted: the relay's token",
        &format!("claims: sub=alice aud={audience} sid="),
        "rejected: tampered payload: InvalidSignatureError",
        "rejected: another audience: InvalidAudienceError",
        "accepted: one second before exp",
        "rejected: expired (one second after exp): ExpiredSignatureError",
        "rejected: alg none: InvalidAlgorithmError",
        "pyjwt: ok",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(line)),
            "no line starting {line:?} in {report}"
        );
    }
    assert!(!stdout.contains("WRONG"), "{report}");
}

/// `POST /v1/tokens/introspect` with `key`; asserts a 200 and returns the JSON verdict.
async fn introspect(http: &reqwest::Client, relay: &TestRelay, key: &str, token: &str) -> Value {
    let resp = http
        .post(format!("{}/v1/tokens/introspect", issuer(relay)))
        .bearer_auth(key)
        .form(&[("token", token)])
        .send()
        .await
        .expect("introspect");
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).expect("JSON")
}

/// `POST {path}` as the operator; asserts a 201 and returns the new key in `api_key`.
async fn issue_key(http: &reqwest::Client, relay: &TestRelay, path: &str, body: Value) -> String {
    let resp = http
        .post(format!("{}{path}", issuer(relay)))
        .bearer_auth(OPERATOR_KEY)
        .json(&body)
        .send()
        .await
        .expect("POST");
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["api_key"].as_str().expect("api_key").to_owned()
}

#[tokio::test]
async fn introspection_is_active_during_the_call_and_inactive_after_bye() {
    let app = RawUdp::bind().await;
    let relay = start_relay(Seed {
        app_servers: vec![uas_uri(app.addr.port(), false)],
    })
    .await;
    let http = reqwest::Client::new();
    let shop1 = shop1_id(&relay).await;
    // shop1's own key, and another shop with its key, both from the operator over the API.
    let shop1_key = issue_key(
        &http,
        &relay,
        &format!("/v1/app-servers/{shop1}/api-key"),
        json!({}),
    )
    .await;
    let other_key = issue_key(
        &http,
        &relay,
        "/v1/app-servers",
        json!({"name": "othershop", "uri": "sip:othershop.example.com:5060"}),
    )
    .await;

    let call = Call::answered(&relay, app).await;
    call.confirm().await;
    let sessions = relay
        .store
        .list_sessions(SessionFilter::default())
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let sid = sessions[0].id.clone();
    assert_eq!(sessions[0].state, SessionState::Confirmed, "{sessions:?}");

    let active = introspect(&http, &relay, &shop1_key, &call.token).await;
    assert_eq!(active["active"], true, "{active}");
    assert_eq!(active["iss"], issuer(&relay), "{active}");
    assert_eq!(active["sub"], "alice", "{active}");
    assert_eq!(active["aud"], shop1.as_str(), "{active}");
    assert_eq!(active["sid"], sid.as_str(), "{active}");
    assert_eq!(active["svc"], "service1@portal.com", "{active}");
    assert_eq!(active["session_state"], "confirmed", "{active}");
    assert_eq!(active["token_type"], "tollgate-session+jwt", "{active}");
    assert!(active["jti"].as_str().is_some_and(|j| !j.is_empty()));
    let now_s = SystemClock.now_ms() / 1000;
    let (iat, nbf, exp) = (
        active["iat"].as_i64().unwrap(),
        active["nbf"].as_i64().unwrap(),
        active["exp"].as_i64().unwrap(),
    );
    assert!(nbf <= now_s && iat <= now_s && exp > now_s, "{active}");
    assert_eq!(
        raw::header(&call.ok, "Tollgate-Session-Id"),
        Some(sid.as_str())
    );

    // Another shop holding this token learns nothing from it, not even that it exists.
    let other = introspect(&http, &relay, &other_key, &call.token).await;
    assert_eq!(other, json!({"active": false}));
    // The operator sees it as live.
    let operator = introspect(&http, &relay, OPERATOR_KEY, &call.token).await;
    assert_eq!(operator["active"], true, "{operator}");

    // The caller hangs up.
    let bye_ok = call.hang_up().await;
    assert_eq!(raw::status(&bye_ok), Some(200), "{bye_ok}");
    // The relay relays the 200 for the BYE first and records the end through its
    // group-commit writer right after: the sync point is the session row saying so (bounded).
    let ended = wait::until("the session ends", || async {
        let row = relay.store.get_session(&sid).await.unwrap();
        if row.state == SessionState::Terminated {
            Ok(row)
        } else {
            Err(format!("{row:?}"))
        }
    })
    .await;
    assert_eq!(ended.ended_by.as_deref(), Some("caller"), "{ended:?}");

    for key in [shop1_key.as_str(), other_key.as_str(), OPERATOR_KEY] {
        let after = introspect(&http, &relay, key, &call.token).await;
        assert_eq!(after, json!({"active": false}), "with {key}");
    }
    // The token itself is still within its lifetime: inactive because the session ended.
    assert!(exp > SystemClock.now_ms() / 1000);
}

/// The values of every `name:` header line in a sipp `-trace_msg` log, in order.
fn logged_headers<'a>(log: &'a str, name: &str) -> Vec<&'a str> {
    log.lines()
        .filter_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_sipp_call_token_verifies_against_jwks_over_http() {
    require_sipp();
    let limit = Duration::from_secs(60);
    let uas_port = free_port();
    let relay = start_relay(Seed {
        app_servers: vec![uas_uri(uas_port, false)],
    })
    .await;
    let uas = Sipp::uas("uas.xml", uas_port, 1, false);
    let uac = Sipp::uac("uac_auth.xml", relay.udp(), 1, 1, false, &[]);
    let uac_run = uac.finish(limit).await;
    let uas_run = uas.finish(limit).await;
    assert!(uac_run.succeeded(), "sipp client:\n{}", uac_run.output);
    assert!(uas_run.succeeded(), "sipp server:\n{}", uas_run.output);

    // The application server's INVITE carried exactly one token (a retransmitted INVITE would
    // carry the same one); the caller's 2xx carried the same.
    let mut received = logged_headers(&uas_run.messages, TOKEN_HEADER);
    received.dedup();
    assert_eq!(received.len(), 1, "{}", uas_run.messages);
    let token = received[0];
    let mut answered = logged_headers(&uac_run.messages, TOKEN_HEADER);
    answered.dedup();
    assert_eq!(answered, [token], "{}", uac_run.messages);

    // What a Rust application server does: fetch the keys over HTTP, verify.
    let resp = reqwest::get(format!("{}/.well-known/jwks.json", issuer(&relay)))
        .await
        .expect("GET jwks");
    assert_eq!(resp.status(), StatusCode::OK);
    let jwks: JwkSet = resp.json().await.expect("a JWK set");
    let shop1 = shop1_id(&relay).await;
    let verifier = TokenVerifier::new(&jwks, issuer(&relay), shop1.clone()).expect("a verifier");
    let claims = verifier
        .verify(token, SystemClock.now_ms())
        .expect("the token verifies");
    assert_eq!(claims.iss, issuer(&relay));
    assert_eq!(claims.aud, shop1);
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.svc, "service1@portal.com");
    assert!(claims.nbf <= claims.exp && claims.iat <= claims.exp);
    let sessions = relay
        .store
        .list_sessions(SessionFilter::default())
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(
        claims.sid, sessions[0].id,
        "the token names the call's session"
    );

    // The same verifier for another shop, or after the token's lifetime, refuses it.
    assert!(verifier
        .for_audience("another-shop")
        .verify(token, SystemClock.now_ms())
        .is_err());
    assert!(verifier
        .verify(token, claims.expires_at_ms() + 3_600_000)
        .is_err());
    // A payload changed under the same signature.
    let [head, payload, signature]: [&str; 3] =
        token.split('.').collect::<Vec<_>>().try_into().unwrap();
    let mut forged: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).expect("JSON claims");
    forged["sub"] = json!("mallory");
    let forged = URL_SAFE_NO_PAD.encode(forged.to_string());
    let tampered = format!("{head}.{forged}.{signature}");
    assert!(verifier.verify(&tampered, SystemClock.now_ms()).is_err());
}
