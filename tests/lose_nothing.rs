//! Lose nothing: a relay that bills never relays a call it cannot bill, never bills a call it
//! did not carry, and loses no billed second to a crash, a restart or a slow database.
//!
//! - kill -9 in a confirmed call, restart: the caller's (or the shop's) BYE is relayed and
//!   the session ends with its full duration;
//! - kill -9 and a restart after longer than the session interval: the session is closed at
//!   its last checkpoint and both sides get a BYE;
//! - the store unavailable: the ACK is not relayed, both sides get BYE, new INVITEs get 503
//!   with Retry-After and `/readyz` says not ready; the store back: calls go through again;
//! - SIGTERM: new calls refused, live calls finish, exit 0, nothing lost;
//! - RFC 4028 session timers and the maximum duration under paused time; 422 for a too-small
//!   `Session-Expires`.
//!
//! The process-level tests run on SQLite and on PostgreSQL.

mod common;

use common::calls::{call, final_for, from_shop, Call};
use common::db::{drop_postgres, fresh_postgres};
use common::process::Node;
use common::raw::{self, Client, Peer, RawUdp, LIMIT};
use common::relay::{free_port, start_relay_on, start_relay_with, test_config, Seed};
use sea_orm::ConnectionTrait;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tollgate::clock::{Clock, ManualClock};
use tollgate::store::SessionState;

/// Runs a process-level test on SQLite, and on PostgreSQL when it is configured.
macro_rules! on_both_engines {
    ($($body:ident),* $(,)?) => {$(
        mod $body {
            #[tokio::test]
            async fn sqlite() {
                super::$body(None).await;
            }

            #[tokio::test]
            async fn postgres() {
                let Some((store, url)) = crate::fresh_postgres().await else {
                    return;
                };
                store.connection().clone().close().await.ok();
                super::$body(Some(url.clone())).await;
                crate::drop_postgres(&url).await;
            }
        }
    )*};
}

on_both_engines!(
    a_call_survives_kill_9_and_the_caller_ends_it,
    a_call_survives_kill_9_and_the_shop_ends_it,
    a_call_silent_past_its_interval_is_closed_at_its_checkpoint,
    sigterm_refuses_new_calls_and_lets_live_ones_finish,
);

fn session_of(call: &Call) -> String {
    raw::header(&call.ok, "Tollgate-Session-Id")
        .expect("the 200 names the session")
        .to_string()
}

/// A node on a fixed UDP port (a restart must come back where the parties know it), seeded
/// with a shop, and a confirmed call through it.
async fn node_with_a_call(db: Option<String>, extra: &str) -> (Node, RawUdp, Client, Call) {
    let shop = RawUdp::bind().await;
    let node = Node::new(db, Some(free_port()), extra);
    node.seed(shop.addr.port()).await;
    let relay = node.serve().await;
    let client = Client::Udp(RawUdp::bind().await);
    let call = call(&client, relay.udp, &shop).await;
    // The ACK reached the shop, so the confirmation is on disk: pull the plug now.
    relay.kill_9().await;
    (node, shop, client, call)
}

fn relay_addr(call: &Call) -> SocketAddr {
    call.relay_at_shop
}

async fn a_call_survives_kill_9_and_the_caller_ends_it(db: Option<String>) {
    let (node, shop, client, call) = node_with_a_call(db, "").await;
    let store = node.store().await;
    let session = session_of(&call);
    let before_restart = now_ms();
    let mut relay = node.serve().await;

    client
        .send_to(
            raw::in_dialog(&client, "BYE", &call.invite, &call.ok, 3),
            relay.udp,
        )
        .await;
    let bye = raw::next_where(&shop, |m| raw::method(m) == Some("BYE")).await;
    shop.send_to(
        raw::response(&bye, "200 OK", "shop", &[]),
        relay_addr(&call),
    )
    .await;
    let answer = final_for(&client, "3 BYE").await;
    assert_eq!(raw::status(&answer), Some(200), "{answer}");

    // The end was stored before the 200 was relayed.
    let row = store.get_session(&session).await.unwrap();
    assert_eq!(row.state, SessionState::Terminated, "{row:?}");
    assert_eq!(row.end_reason.as_deref(), Some("bye"));
    assert_eq!(row.ended_by.as_deref(), Some("caller"));
    let (confirmed, ended) = (row.confirmed_at.unwrap(), row.ended_at.unwrap());
    assert!(ended >= before_restart, "billed past the restart: {row:?}");
    assert_eq!(
        row.duration_ms,
        Some(ended - confirmed),
        "the full duration"
    );
    relay.child.kill().await.unwrap();
}

async fn a_call_survives_kill_9_and_the_shop_ends_it(db: Option<String>) {
    let (node, shop, client, call) = node_with_a_call(db, "").await;
    let store = node.store().await;
    let session = session_of(&call);
    let before_restart = now_ms();
    let mut relay = node.serve().await;

    shop.send_to(from_shop(&shop, &call, "BYE", 1, ""), relay_addr(&call))
        .await;
    let bye = raw::next_where(&client, |m| raw::method(m) == Some("BYE")).await;
    client
        .send_to(raw::response(&bye, "200 OK", "x", &[]), relay.udp)
        .await;
    let answer = final_for(&shop, "1 BYE").await;
    assert_eq!(raw::status(&answer), Some(200), "{answer}");

    let row = store.get_session(&session).await.unwrap();
    assert_eq!(row.state, SessionState::Terminated, "{row:?}");
    assert_eq!(row.ended_by.as_deref(), Some("callee"));
    let (confirmed, ended) = (row.confirmed_at.unwrap(), row.ended_at.unwrap());
    assert!(ended >= before_restart, "billed past the restart: {row:?}");
    assert_eq!(row.duration_ms, Some(ended - confirmed));
    relay.child.kill().await.unwrap();
}

async fn a_call_silent_past_its_interval_is_closed_at_its_checkpoint(db: Option<String>) {
    let (node, shop, client, call) =
        node_with_a_call(db, "session_expires = 90\nmin_se = 90").await;
    let store = node.store().await;
    let session = session_of(&call);
    // As if the relay had stayed down for two minutes: the call's last proof of life (its
    // last checkpoint) is 120 s old, 30 s after it was confirmed.
    let now = now_ms();
    store
        .connection()
        .execute_unprepared(&format!(
            "UPDATE sessions SET confirmed_at = {}, last_activity_at = {} WHERE id = '{session}'",
            now - 150_000,
            now - 120_000
        ))
        .await
        .unwrap();
    let mut relay = node.serve().await;

    let to_client = next_request(&client, "BYE", relay.udp).await;
    let to_shop = next_request(&shop, "BYE", call.relay_at_shop).await;
    for bye in [to_client, to_shop] {
        assert!(
            raw::header(&bye, "Reason").is_some_and(|r| r.contains("relay_restart")),
            "{bye}"
        );
    }
    let row = store.get_session(&session).await.unwrap();
    assert_eq!(row.state, SessionState::Terminated, "{row:?}");
    assert_eq!(row.end_reason.as_deref(), Some("relay_restart"));
    assert_eq!(
        row.ended_at,
        Some(now - 120_000),
        "closed at its last checkpoint"
    );
    assert_eq!(row.duration_ms, Some(30_000));
    relay.child.kill().await.unwrap();
}

async fn sigterm_refuses_new_calls_and_lets_live_ones_finish(db: Option<String>) {
    let shop = RawUdp::bind().await;
    let node = Node::new(db, None, "drain_secs = 600");
    node.seed(shop.addr.port()).await;
    let relay = node.serve().await;
    let to = relay.udp;
    let mut live = Vec::new();
    for _ in 0..3 {
        let client = Client::Udp(RawUdp::bind().await);
        let call = call(&client, to, &shop).await;
        live.push((client, call));
    }
    let pid = relay.child.id().expect("running");
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());

    // A new call is refused with a time to come back (once the signal has been taken).
    let newcomer = RawUdp::bind().await;
    let refusal = loop {
        let call_id = raw::token();
        let invite = raw::invite(&newcomer, &raw::branch(), "late", &call_id, 1, &[]);
        newcomer.send_to(&invite, to).await;
        let answer = raw::next_where(&newcomer, |m| {
            raw::status(m).is_some_and(|s| s >= 200)
                && raw::header(m, "Call-ID") == Some(call_id.as_str())
        })
        .await;
        if raw::status(&answer) == Some(503) {
            break answer;
        }
        newcomer.send_to(raw::ack_for(&invite, &answer), to).await;
    };
    assert!(raw::header(&refusal, "Retry-After").is_some(), "{refusal}");

    // The live calls go on to their end.
    for (i, (client, call)) in live.iter().enumerate() {
        let cseq = 3;
        client
            .send_to(
                raw::in_dialog(client, "BYE", &call.invite, &call.ok, cseq),
                to,
            )
            .await;
        let bye = raw::next_where(&shop, |m| {
            raw::method(m) == Some("BYE")
                && raw::header(m, "Call-ID") == raw::header(&call.invite, "Call-ID")
        })
        .await;
        shop.send_to(
            raw::response(&bye, "200 OK", "shop", &[]),
            call.relay_at_shop,
        )
        .await;
        let answer = final_for(client, "3 BYE").await;
        assert_eq!(raw::status(&answer), Some(200), "call {i}: {answer}");
    }
    // With nothing left live, the relay stops by itself, cleanly.
    let mut child = relay.child;
    let status = tokio::time::timeout(LIMIT, child.wait())
        .await
        .expect("the relay stops once its calls are over")
        .unwrap();
    assert!(status.success(), "exit 0: {status:?}");

    let store = node.store().await;
    for (_, call) in &live {
        let row = store.get_session(&session_of(call)).await.unwrap();
        assert_eq!(row.state, SessionState::Terminated, "{row:?}");
        assert_eq!(row.end_reason.as_deref(), Some("bye"));
    }
}

// ------------------------------------------------------------------ the store under the relay

/// Holds SQLite's write lock so that the relay's writes fail (after its busy timeout), as a
/// database that stopped answering would; dropping the guard gives the database back.
struct Outage {
    conn: sea_orm::DatabaseConnection,
}

impl Outage {
    async fn begin(url: &str) -> Outage {
        let conn = sea_orm::Database::connect(url).await.unwrap();
        conn.execute_unprepared("BEGIN EXCLUSIVE").await.unwrap();
        Outage { conn }
    }

    async fn end(self) {
        self.conn.execute_unprepared("ROLLBACK").await.unwrap();
        self.conn.close().await.unwrap();
    }
}

#[tokio::test]
async fn an_unavailable_store_ends_calls_refuses_new_ones_and_recovers_by_itself() {
    let shop = RawUdp::bind().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    // The outage is SQLite's write lock, held by the test; the URL names its mode.
    config.database.url = format!("{}?mode=rwc", common::db::sqlite_url(dir.path()));
    config.database.acquire_timeout_secs = 1;
    config.sessions.store_timeout_ms = 1000;
    config.sip.listen = vec!["udp:127.0.0.1:0".parse().unwrap()];
    let url = config.database.url.clone();
    let relay = start_relay_with(
        Seed {
            app_servers: vec![format!("sip:{}", shop.addr)],
        },
        config,
        dir,
    )
    .await;
    let to = relay.udp();
    let http = reqwest::Client::new();
    let readyz = format!("http://{}/readyz", relay.relay.http);
    let client = Client::Udp(RawUdp::bind().await);

    // A call is answered; then the database stops answering before its ACK.
    let invite = raw::authenticated_invite(&client, to).await;
    let (at_shop, relay_at_shop) = shop.recv_within(LIMIT).await;
    shop.send_to(
        raw::ok_200(&at_shop, "shop", shop.addr, "UDP"),
        relay_at_shop,
    )
    .await;
    let ok = raw::next_where(&client, |m| raw::status(m) == Some(200)).await;
    let outage = Outage::begin(&url).await;
    client
        .send_to(raw::in_dialog(&client, "ACK", &invite, &ok, 2), to)
        .await;

    // The ACK is not relayed: both sides get a BYE instead.
    let at_shop_next = raw::next_where(&shop, |m| raw::method(m).is_some()).await;
    assert_eq!(
        raw::method(&at_shop_next),
        Some("BYE"),
        "no ACK first: {at_shop_next}"
    );
    shop.send_to(
        raw::response(&at_shop_next, "200 OK", "shop", &[]),
        relay_at_shop,
    )
    .await;
    let bye = next_request(&client, "BYE", to).await;
    assert!(
        raw::header(&bye, "Reason").is_some_and(|r| r.contains("store_unavailable")),
        "{bye}"
    );

    // New calls are refused with a time to come back, and the node says it is not ready.
    wait_for_readyz(&http, &readyz, false).await;
    let newcomer = RawUdp::bind().await;
    let late = raw::invite(&newcomer, &raw::branch(), "late", &raw::token(), 1, &[]);
    newcomer.send_to(&late, to).await;
    let refusal = raw::next_non_trying(&newcomer).await;
    assert_eq!(raw::status(&refusal), Some(503), "{refusal}");
    assert!(raw::header(&refusal, "Retry-After").is_some(), "{refusal}");

    // The database comes back: the relay notices by itself and calls go through again.
    outage.end().await;
    wait_for_readyz(&http, &readyz, true).await;
    let again = Client::Udp(RawUdp::bind().await);
    let call = call(&again, to, &shop).await;
    assert!(raw::status(&call.ok) == Some(200));

    let session = session_of(&Call {
        invite,
        ok,
        at_shop,
        relay_at_shop,
    });
    let rows = common::relay::sessions_after_shutdown(relay).await;
    let first = rows.iter().find(|r| r.id == session).expect("recorded");
    assert_eq!(first.state, SessionState::Failed, "never billed: {first:?}");
    assert!(first.confirmed_at.is_none(), "{first:?}");
}

async fn wait_for_readyz(http: &reqwest::Client, url: &str, ready: bool) {
    let want = if ready { 200 } else { 503 };
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut every = tokio::time::interval(Duration::from_millis(50));
    loop {
        every.tick().await;
        let status = http.get(url).send().await.unwrap().status().as_u16();
        if status == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never became {want}"
        );
    }
}

// ------------------------------------------------------------------ session timers

const T0: i64 = 1_800_000_000_000;

/// A relay on a manual clock with a confirmed call whose shop asked for a session interval
/// (or none); tokio's time is paused once the call is confirmed.
async fn timed_call(max_duration_secs: u64, interval: Option<u32>) -> TimedCall {
    let shop = RawUdp::bind().await;
    let clock = ManualClock::new(T0);
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    config.sessions.max_duration_secs = max_duration_secs;
    let relay = start_relay_on(
        Seed {
            app_servers: vec![format!("sip:{}", shop.addr)],
        },
        clock.clone(),
        config,
        dir,
    )
    .await;
    let to = relay.udp();
    let client = Client::Udp(RawUdp::bind().await);
    let invite = raw::authenticated_invite(&client, to).await;
    let (at_shop, relay_at_shop) = shop.recv_within(LIMIT).await;
    assert_eq!(
        raw::header(&at_shop, "Session-Expires"),
        Some("1800"),
        "the relay asks for a session interval when the caller did not"
    );
    let mut ok = raw::ok_200(&at_shop, "shop", shop.addr, "UDP");
    if let Some(secs) = interval {
        ok = ok.replacen(
            "Content-Type:",
            &format!("Session-Expires: {secs};refresher=uac\r\nContent-Type:"),
            1,
        );
    }
    shop.send_to(ok, relay_at_shop).await;
    let ok = raw::next_where(&client, |m| raw::status(m) == Some(200)).await;
    client
        .send_to(raw::in_dialog(&client, "ACK", &invite, &ok, 2), to)
        .await;
    raw::next_where(&shop, |m| raw::method(m) == Some("ACK")).await;
    // The confirmation is on disk (the ACK moved only then): from here on tokio's time moves
    // only when the test moves it.
    tokio::time::pause();
    TimedCall {
        relay,
        clock,
        shop,
        client,
        call: Call {
            invite,
            ok,
            at_shop,
            relay_at_shop,
        },
    }
}

struct TimedCall {
    relay: common::relay::TestRelay,
    clock: Arc<ManualClock>,
    shop: RawUdp,
    client: Client,
    call: Call,
}

impl TimedCall {
    /// Moves the relay's clock and tokio's together.
    async fn advance(&self, secs: u64) {
        self.clock.advance(secs as i64 * 1000);
        tokio::time::advance(Duration::from_secs(secs)).await;
    }

    /// The BYEs the relay sent the caller and the shop, answered.
    async fn byes(&self) -> [String; 2] {
        let to = self.relay.udp();
        [
            next_request(&self.client, "BYE", to).await,
            next_request(&self.shop, "BYE", self.call.relay_at_shop).await,
        ]
    }

    async fn row(self) -> tollgate::store::SessionRecord {
        // Real time again for the store: under paused time a slow disk lets tokio jump to the
        // next timer (the pool's acquire timeout) and fail the last writes.
        tokio::time::resume();
        let session = session_of(&self.call);
        let rows = common::relay::sessions_after_shutdown(self.relay).await;
        rows.into_iter().find(|r| r.id == session).unwrap()
    }
}

#[tokio::test]
async fn an_unrefreshed_session_ends_at_its_timer_billed_to_its_last_proof_of_life() {
    let t = timed_call(0, Some(90)).await;
    t.advance(89).await;
    assert!(!t.shop.has_pending(), "nothing before the interval is over");
    t.advance(2).await;
    for bye in t.byes().await {
        assert!(
            raw::header(&bye, "Reason").is_some_and(|r| r.contains("session_timer")),
            "{bye}"
        );
    }
    let row = t.row().await;
    assert_eq!(row.end_reason.as_deref(), Some("session_timer"));
    assert_eq!(row.ended_by.as_deref(), Some("relay"));
    assert_eq!(
        row.duration_ms,
        Some(0),
        "no proof of life after the confirmation"
    );
}

#[tokio::test]
async fn a_refresh_keeps_the_session_going() {
    let t = timed_call(0, Some(90)).await;
    t.advance(60).await;
    // The caller refreshes with an UPDATE; the shop agrees.
    let to = t.relay.udp();
    t.client
        .send_to(
            raw::in_dialog(&t.client, "UPDATE", &t.call.invite, &t.call.ok, 3),
            to,
        )
        .await;
    let update = next_request(&t.shop, "UPDATE", to).await;
    let mut ok = raw::response(&update, "200 OK", "shop", &[]);
    ok = ok.replacen(
        "Content-Length:",
        "Session-Expires: 90;refresher=uac\r\nContent-Length:",
        1,
    );
    t.shop.send_to(ok, t.call.relay_at_shop).await;
    final_for(&t.client, "3 UPDATE").await;
    t.advance(60).await;
    assert!(
        !t.shop.has_pending(),
        "refreshed at 60 s: still alive at 120 s"
    );
    t.advance(31).await;
    t.byes().await;
    let row = t.row().await;
    assert_eq!(row.end_reason.as_deref(), Some("session_timer"));
    assert_eq!(row.duration_ms, Some(60_000), "billed to the refresh");
}

#[tokio::test]
async fn a_session_ends_at_the_maximum_duration() {
    let t = timed_call(300, None).await;
    t.advance(299).await;
    assert!(!t.shop.has_pending());
    t.advance(1).await;
    t.byes().await;
    let row = t.row().await;
    assert_eq!(row.end_reason.as_deref(), Some("max_duration"));
    assert_eq!(row.duration_ms, Some(300_000));
}

#[tokio::test]
async fn a_session_interval_below_min_se_gets_422() {
    let shop = RawUdp::bind().await;
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(&dir);
    let relay = start_relay_with(
        Seed {
            app_servers: vec![format!("sip:{}", shop.addr)],
        },
        config,
        dir,
    )
    .await;
    let client = RawUdp::bind().await;
    let invite = raw::invite(
        &client,
        &raw::branch(),
        "t",
        &raw::token(),
        1,
        &["Session-Expires: 30".to_string()],
    );
    client.send_to(&invite, relay.udp()).await;
    let answer = raw::next_non_trying(&client).await;
    assert_eq!(raw::status(&answer), Some(422), "{answer}");
    assert_eq!(raw::header(&answer, "Min-SE"), Some("90"));
    assert!(!shop.has_pending(), "nothing reached the shop");
}

// ------------------------------------------------------------------ helpers

/// The next request `method` at `peer`; a BYE is answered 200 (sent to `relay`).
async fn next_request(peer: &impl Peer, method: &str, relay: SocketAddr) -> String {
    let msg = raw::next_where(peer, |m| raw::method(m) == Some(method)).await;
    if method == "BYE" {
        peer.send_to(raw::response(&msg, "200 OK", "x", &[]), relay)
            .await;
    }
    msg
}

fn now_ms() -> i64 {
    tollgate::clock::SystemClock.now_ms()
}
