//! DESIGN.md flows 3–6 played by sipp, the third-party SIP agent, through a real relay, over
//! UDP and over TCP (client and application servers on the same transport):
//!
//! - change: re-INVITE from the caller and from the application server, UPDATE, a refused
//!   re-INVITE (488) and glare (the application server's re-INVITE crossing the caller's gets
//!   491) in one session (`uac_changes.xml` against `uas_changes.xml`);
//! - transfer: REFER to service2 with its NOTIFYs (100, then the second shop's 200 with URL and
//!   token), two sessions each billed; REFER to an unknown service (NOTIFY 404); a plain new
//!   INVITE for service2 while in service1;
//! - fork: first answer wins with three application servers (486; 200 after 200 ms; ringing
//!   for ever), all answers with two 200s, every branch failing, serial falling over;
//! - item billing: an INFO with one charge (and its retransmission), two more charges in the
//!   200 to BYE, the statement and the settlement.
//!
//! Every test checks both sipp runs (each scenario fails on anything unexpected) and then what
//! a user or operator would see: the session rows, the recorded changes, and the statement and
//! settlement over REST. Nothing sleeps: the tests wait for sipp to exit, and poll the store
//! for the session writer's rows (an observable event).

mod common;

use common::relay::{
    free_port, sessions_after_shutdown, start_forking_relay, Seed, TestRelay, DOMAIN, OPERATOR_KEY,
};
use common::sipp::{require_sipp, scenario, uas_uri, wait_for_tcp, Sipp, SippRun};
use common::wait;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tollgate::store::{ForkMode, Party, SessionFilter, SessionRecord, SessionState};

/// The longest a sipp run may take before it is killed and the test fails.
const LIMIT: Duration = Duration::from_secs(60);

/// The tariff of every service here: 0.50 to start, 1.20 a minute, by the second.
const SETUP: i64 = 50;
const PER_MINUTE: i64 = 120;

// -------------------------------------------------------------------- harness

/// An application server played by sipp: its scenario and extra sipp arguments.
struct Shop<'a> {
    scenario: &'a str,
    args: &'a [&'a str],
}

const fn shop<'a>(scenario: &'a str, args: &'a [&'a str]) -> Shop<'a> {
    Shop { scenario, args }
}

/// A relay whose `service1@portal.com` forks (`mode`) to one sipp application server per
/// `shops` entry (named shop1, shop2, … in that order), each handling one call.
async fn relay_with_shops(mode: ForkMode, tcp: bool, shops: &[Shop<'_>]) -> (World, Vec<Sipp>) {
    let ports: Vec<u16> = shops.iter().map(|_| free_port()).collect();
    let relay = start_forking_relay(
        Seed {
            app_servers: ports.iter().map(|p| uas_uri(*p, tcp)).collect(),
        },
        mode,
    )
    .await;
    let world = World::new(relay, tcp).await;
    let mut sipps = Vec::new();
    for (s, port) in shops.iter().zip(&ports) {
        sipps.push(start_shop(s, *port, tcp).await);
    }
    (world, sipps)
}

async fn start_shop(shop: &Shop<'_>, port: u16, tcp: bool) -> Sipp {
    let sipp = Sipp::uas_with(shop.scenario, port, 1, tcp, shop.args);
    if tcp {
        wait_for_tcp(port).await;
    }
    sipp
}

/// Waits for the client and every application server; all of them must pass. On failure every
/// log is shown (the cause is often on the other side).
async fn all_pass(client: Sipp, shops: Vec<Sipp>) -> (SippRun, Vec<SippRun>) {
    let client = client.finish(LIMIT).await;
    let mut runs = Vec::new();
    for s in shops {
        runs.push(s.finish(LIMIT).await);
    }
    let ok = client.succeeded() && runs.iter().all(SippRun::succeeded);
    if !ok {
        let mut report = format!("=== client ({:?}) ===\n{}", client.exit_code, client.output);
        for (i, r) in runs.iter().enumerate() {
            report.push_str(&format!(
                "\n\n=== application server {} ({:?}) ===\n{}",
                i + 1,
                r.exit_code,
                r.output
            ));
        }
        panic!("a sipp scenario failed:\n{report}");
    }
    (client, runs)
}

/// The relay under test, the REST client pointed at it, and the user the calls are made as.
struct World {
    relay: TestRelay,
    tcp: bool,
    http: reqwest::Client,
    base: String,
    user_id: String,
}

impl World {
    async fn new(relay: TestRelay, tcp: bool) -> World {
        let base = format!("http://{}", relay.relay.http);
        let user_id = relay
            .store
            .list_users()
            .await
            .expect("users")
            .into_iter()
            .find(|u| u.name == "alice")
            .expect("alice")
            .id;
        let world = World {
            relay,
            tcp,
            http: reqwest::Client::new(),
            base,
            user_id,
        };
        world.tariff("service1").await;
        world
    }

    fn sip(&self) -> SocketAddr {
        if self.tcp {
            self.relay.tcp()
        } else {
            self.relay.udp()
        }
    }

    /// sipp as alice, calling `service1` once with `scenario`.
    fn client(&self, scenario: &str, extra: &[&str]) -> Sipp {
        Sipp::uac(scenario, self.sip(), 1, 1, self.tcp, extra)
    }

    async fn rest(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(OPERATOR_KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("REST request");
        let status = resp.status();
        let text = resp.text().await.expect("REST body");
        assert!(status.is_success(), "{method} {path}: {status}\n{text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// The id of a service by its user part.
    async fn service_id(&self, name: &str) -> String {
        let list = self
            .rest(reqwest::Method::GET, "/v1/services?limit=100", None)
            .await;
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no service {name}: {list}"))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Puts the test tariff on `service` (REST, as the operator would).
    async fn tariff(&self, service: &str) {
        let id = self.service_id(service).await;
        self.rest(
            reqwest::Method::PUT,
            &format!("/v1/services/{id}/tariff"),
            Some(json!({"currency": "EUR", "setup_amount": SETUP,
                        "per_minute_amount": PER_MINUTE, "increment_secs": 1})),
        )
        .await;
    }

    /// Adds `service2@portal.com`, delivered by a sipp application server named `beershop`.
    async fn add_service2(&self, shop: &Shop<'_>) -> Sipp {
        let port = free_port();
        let store = &self.relay.store;
        store
            .add_app_server("beershop", &uas_uri(port, self.tcp))
            .await
            .unwrap();
        store
            .add_service(
                &format!("service2@{DOMAIN}"),
                &["beershop".to_owned()],
                ForkMode::FirstAnswer,
            )
            .await
            .unwrap();
        self.relay.relay.reload_directory().await.unwrap();
        self.tariff("service2").await;
        start_shop(shop, port, self.tcp).await
    }

    /// Waits until the relay has recorded `n` sessions and every one has ended.
    async fn ended_sessions(&self, n: usize) -> Vec<SessionRecord> {
        wait::until(&format!("{n} ended sessions"), || async {
            let rows = self
                .relay
                .store
                .list_sessions(SessionFilter {
                    state: None,
                    limit: 100,
                })
                .await
                .expect("sessions");
            if rows.len() == n && rows.iter().all(|r| r.ended_at.is_some()) {
                Ok(rows)
            } else {
                Err(format!("{rows:#?}"))
            }
        })
        .await
    }

    async fn statement(&self) -> Value {
        self.rest(
            reqwest::Method::GET,
            &format!("/v1/users/{}/statement", self.user_id),
            None,
        )
        .await
    }
}

fn by_app_server<'a>(rows: &'a [SessionRecord], name: &str) -> &'a SessionRecord {
    rows.iter()
        .find(|r| r.app_server == name)
        .unwrap_or_else(|| panic!("no session at {name}: {rows:#?}"))
}

/// The time charge of a session that lasted `duration_ms` under the test tariff.
fn time_charge(duration_ms: i64) -> i64 {
    let billable_secs = (duration_ms + 999) / 1000;
    SETUP + (PER_MINUTE * billable_secs + 59) / 60
}

/// The statement's entry for session `id`.
fn statement_session<'a>(statement: &'a Value, id: &str) -> &'a Value {
    statement["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("session {id} is not on the statement: {statement:#}"))
}

/// Asserts a terminated session is on the statement with the time charge of its duration,
/// and returns that charge.
fn billed_for_its_time(statement: &Value, session: &SessionRecord) -> i64 {
    assert_eq!(session.state, SessionState::Terminated, "{session:?}");
    let duration = session.duration_ms.expect("a duration");
    let entry = statement_session(statement, &session.id);
    assert_eq!(entry["duration_ms"], duration, "{entry}");
    assert_eq!(
        entry["time_charge"],
        json!({"currency": "EUR", "amount": time_charge(duration)}),
        "{entry}"
    );
    time_charge(duration)
}

/// Asserts every one of `sessions` is on the statement with the time charge of its duration,
/// and that the statement's total is their sum (nothing else was billed).
fn totals_are_the_time_charges(statement: &Value, sessions: &[&SessionRecord]) {
    let total: i64 = sessions
        .iter()
        .map(|s| billed_for_its_time(statement, s))
        .sum();
    assert_eq!(
        statement["totals"],
        json!([{"currency": "EUR", "amount": total}])
    );
}

/// The `message/sipfrag` bodies of the NOTIFYs in a sipp message log, in order, each once
/// (a NOTIFY retransmitted over UDP on a busy machine is the same fragment again).
fn notify_fragments(log: &str) -> Vec<String> {
    let mut fragments: Vec<String> = log
        .split("NOTIFY sip:")
        .skip(1)
        .map(|m| {
            let body = m.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            // The log goes on after the message; a fragment ends at sipp's next separator.
            body.split("\n----").next().unwrap_or_default().to_owned()
        })
        .collect();
    fragments.dedup();
    fragments
}

/// sipp arguments for a client that lets a late retransmission pass (a 202 repeated because
/// the relay was slower than T1 on a busy machine would otherwise abort the call); what it
/// must receive it still must receive.
const TOLERANT: [&str; 2] = ["-default_behaviors", "all,-abortunexp"];

// -------------------------------------------------------------------- change

/// One session, changed five times from both sides; one change refused, one glare.
async fn changes_from_both_sides(tcp: bool) {
    require_sipp();
    let (world, shops) =
        relay_with_shops(ForkMode::FirstAnswer, tcp, &[shop("uas_changes.xml", &[])]).await;
    let client = world.client("uac_changes.xml", &[]);
    let (_, shop_runs) = all_pass(client, shops).await;
    assert!(
        shop_runs[0].messages.contains("SIP/2.0 491 "),
        "the crossing re-INVITE got 491:\n{}",
        shop_runs[0].messages
    );

    let rows = world.ended_sessions(1).await;
    let s = &rows[0];
    assert_eq!(s.state, SessionState::Terminated, "the session carried on");
    assert_eq!(s.ended_by.as_deref(), Some("caller"));
    let changes = world.relay.store.session_changes(&s.id).await.unwrap();
    let seen: Vec<_> = changes
        .iter()
        .map(|c| (c.party, c.method.as_str(), c.body.trim(), c.status))
        .collect();
    assert_eq!(
        seen,
        vec![
            (Party::Caller, "INVITE", "beer", 200),
            (Party::Callee, "INVITE", "beer, 0.5 l", 200),
            (Party::Caller, "UPDATE", "dark beer", 200),
            (Party::Caller, "INVITE", "champagne", 488),
            (Party::Caller, "INVITE", "white wine", 200),
        ],
        "every change with its answer; the refused glare re-INVITE changed nothing"
    );
    let confirmed = s.confirmed_at.unwrap();
    assert!(changes
        .iter()
        .all(|c| (confirmed..=s.ended_at.unwrap()).contains(&c.at)));
    // One clock from the first ACK to the BYE, billed once.
    let statement = world.statement().await;
    assert_eq!(statement["sessions"].as_array().unwrap().len(), 1);
    billed_for_its_time(&statement, s);
    world.relay.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinvite_update_refusal_and_glare_from_both_sides_over_udp() {
    changes_from_both_sides(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinvite_update_refusal_and_glare_from_both_sides_over_tcp() {
    changes_from_both_sides(true).await;
}

// -------------------------------------------------------------------- transfer

async fn refer_to_service2(tcp: bool) {
    require_sipp();
    let (world, mut shops) = relay_with_shops(
        ForkMode::FirstAnswer,
        tcp,
        &[shop("uas_answer.xml", &["-set", "answer_after", "0"])],
    )
    .await;
    shops.push(world.add_service2(&shop("uas_answer_bye.xml", &[])).await);
    let client = world.client(
        "uac_refer.xml",
        &[
            "-key",
            "refer_to",
            "<sip:service2@portal.com?body=beer>",
            TOLERANT[0],
            TOLERANT[1],
        ],
    );
    let (client_run, shop_runs) = all_pass(client, shops).await;

    // What the user saw: 100 Trying, then the second shop's answer with its URL and a token.
    let fragments = notify_fragments(&client_run.messages);
    assert_eq!(fragments.len(), 2, "{}", client_run.messages);
    assert!(
        fragments[0].starts_with("SIP/2.0 100 Trying"),
        "{}",
        fragments[0]
    );
    assert!(
        fragments[1].starts_with("SIP/2.0 200 OK"),
        "{}",
        fragments[1]
    );
    let handed_over: Value = fragments[1]
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body.trim()).ok())
        .unwrap_or_else(|| panic!("no JSON handover in {}", fragments[1]));
    assert_eq!(handed_over["url"], "https://shop.example/beer");
    let token2 = handed_over["token"].as_str().expect("a token").to_owned();
    // The second shop was called for the user, with what the user asked for.
    let at_shop2 = &shop_runs[1].messages;
    assert!(
        at_shop2.contains("From: <sip:alice@portal.com>"),
        "{at_shop2}"
    );
    assert!(at_shop2.contains(&format!("Tollgate-Session-Token: {token2}")));
    assert!(at_shop2.contains("\r\n\r\nbeer"), "{at_shop2}");
    // The relay is that dialog's other end, reachable over the shop's own transport.
    let (relay_sip, transport) = (world.sip(), if tcp { "tcp" } else { "udp" });
    assert!(
        at_shop2.contains(&format!("Contact: <sip:{relay_sip};transport={transport}>")),
        "{at_shop2}"
    );
    let token1 = shop_runs[0]
        .messages
        .lines()
        .find_map(|l| l.strip_prefix("Tollgate-Session-Token: "))
        .expect("the first shop got a token");
    assert_ne!(token1.trim(), token2, "a new token for the new session");

    // Two sessions, each timed and billed on its own.
    let rows = world.ended_sessions(2).await;
    let first = by_app_server(&rows, "shop1");
    let second = by_app_server(&rows, "beershop");
    assert_eq!(first.service, "service1@portal.com");
    assert_eq!(second.service, "service2@portal.com");
    assert_eq!(second.caller, "alice");
    assert_eq!(handed_over["session_id"], second.id.as_str());
    assert_eq!(second.ended_by.as_deref(), Some("callee"));
    assert_eq!(first.ended_by.as_deref(), Some("caller"));
    assert!(
        first.ended_at.unwrap() >= second.confirmed_at.unwrap(),
        "the first session went on during the second: {rows:#?}"
    );
    let statement = world.statement().await;
    totals_are_the_time_charges(&statement, &[first, second]);
    world.relay.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refer_to_service2_notifies_and_bills_two_sessions_over_udp() {
    refer_to_service2(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refer_to_service2_notifies_and_bills_two_sessions_over_tcp() {
    refer_to_service2(true).await;
}

async fn refer_to_unknown_service(tcp: bool) {
    require_sipp();
    let (world, shops) = relay_with_shops(
        ForkMode::FirstAnswer,
        tcp,
        &[shop("uas_answer.xml", &["-set", "answer_after", "0"])],
    )
    .await;
    let client = world.client(
        "uac_refer.xml",
        &[
            "-key",
            "refer_to",
            "<sip:nosuch@portal.com>",
            TOLERANT[0],
            TOLERANT[1],
        ],
    );
    let (client_run, _) = all_pass(client, shops).await;
    let fragments = notify_fragments(&client_run.messages);
    assert_eq!(fragments.len(), 2, "{}", client_run.messages);
    assert!(fragments[0].starts_with("SIP/2.0 100 Trying"));
    assert!(
        fragments[1].starts_with("SIP/2.0 404 Not Found"),
        "{}",
        fragments[1]
    );
    let rows = world.ended_sessions(1).await;
    assert_eq!(rows[0].state, SessionState::Terminated, "the first goes on");
    world.relay.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refer_to_an_unknown_service_ends_with_notify_404_over_udp() {
    refer_to_unknown_service(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refer_to_an_unknown_service_ends_with_notify_404_over_tcp() {
    refer_to_unknown_service(true).await;
}

/// Issue 10 item 3: a new INVITE for service2 while the user is in service1.
async fn new_invite_for_service2(tcp: bool) {
    require_sipp();
    let answer = shop("uas_answer.xml", &["-set", "answer_after", "0"]);
    let (world, mut shops) =
        relay_with_shops(ForkMode::FirstAnswer, tcp, std::slice::from_ref(&answer)).await;
    shops.push(world.add_service2(&answer).await);
    let csv = scenario("two_services.csv");
    let client = Sipp::uac(
        "uac_two_services.xml",
        world.sip(),
        2,
        10,
        tcp,
        &["-inf", &csv],
    );
    all_pass(client, shops).await;

    let rows = world.ended_sessions(2).await;
    let first = by_app_server(&rows, "shop1");
    let second = by_app_server(&rows, "beershop");
    assert_eq!(second.service, "service2@portal.com");
    assert!(
        first.confirmed_at.unwrap() <= second.created_at
            && second.ended_at.unwrap() <= first.ended_at.unwrap(),
        "service2 was called while in service1: {rows:#?}"
    );
    let statement = world.statement().await;
    assert_eq!(statement["sessions"].as_array().unwrap().len(), 2);
    totals_are_the_time_charges(&statement, &[first, second]);
    world.relay.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_invite_for_service2_while_in_service1_puts_both_on_the_statement_over_udp() {
    new_invite_for_service2(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_invite_for_service2_while_in_service1_puts_both_on_the_statement_over_tcp() {
    new_invite_for_service2(true).await;
}

// -------------------------------------------------------------------- fork

/// One call by alice (sipp `client`) to service1 forked as `mode` to `shops`: every sipp run
/// must pass. Returns the world, the client's run, and the session rows, one per shop, ended.
async fn fork_call(
    mode: ForkMode,
    tcp: bool,
    shops: &[Shop<'_>],
    client: &str,
) -> (World, SippRun, Vec<SessionRecord>) {
    require_sipp();
    let (world, sipps) = relay_with_shops(mode, tcp, shops).await;
    let client = world.client(client, &[]);
    let (client_run, _) = all_pass(client, sipps).await;
    let rows = world.ended_sessions(shops.len()).await;
    (world, client_run, rows)
}

/// Three bookstores: one busy (486), one answering after 200 ms, one ringing for ever.
async fn first_answer_wins(tcp: bool) {
    let (world, client_run, rows) = fork_call(
        ForkMode::FirstAnswer,
        tcp,
        &[
            shop("uas_486.xml", &[]),
            shop("uas_answer.xml", &["-set", "answer_after", "200"]),
            shop("uas_ring_cancel.xml", &[]),
        ],
        "uac_auth.xml",
    )
    .await;
    assert!(
        !client_run.messages.contains("486 Busy"),
        "{}",
        client_run.messages
    );

    let busy = by_app_server(&rows, "shop1");
    let won = by_app_server(&rows, "shop2");
    let ringing = by_app_server(&rows, "shop3");
    assert_eq!(
        (busy.state, busy.final_status),
        (SessionState::Failed, Some(486))
    );
    assert_eq!(
        (ringing.state, ringing.final_status),
        (SessionState::Cancelled, Some(487))
    );
    for r in [busy, ringing] {
        assert_eq!((r.confirmed_at, r.duration_ms), (None, None), "{r:?}");
    }
    let statement = world.statement().await;
    let billed: Vec<_> = statement["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s.get("time_charge").is_some())
        .collect();
    assert_eq!(billed.len(), 1, "only the answer is billed: {statement:#}");
    totals_are_the_time_charges(&statement, &[won]);
    world.relay.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_answer_wins_over_a_486_and_a_ringing_branch_over_udp() {
    first_answer_wins(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_answer_wins_over_a_486_and_a_ringing_branch_over_tcp() {
    first_answer_wins(true).await;
}

/// Two bookstores both answer at once, neither is cancelled; the user keeps one for a second
/// and leaves the other at once.
async fn all_answers(tcp: bool) {
    let (world, _, rows) = fork_call(
        ForkMode::AllAnswers,
        tcp,
        &[
            shop("uas_answer.xml", &["-set", "answer_after", "0"]),
            shop("uas_answer.xml", &["-set", "answer_after", "0"]),
        ],
        "uac_two_answers.xml",
    )
    .await;
    let (a, b) = (by_app_server(&rows, "shop1"), by_app_server(&rows, "shop2"));
    let (kept, left) = if a.duration_ms > b.duration_ms {
        (a, b)
    } else {
        (b, a)
    };
    assert!(
        kept.duration_ms.unwrap() >= 1000 && kept.ended_at > left.ended_at,
        "the user stayed a second longer with one: {rows:#?}"
    );
    let statement = world.statement().await;
    totals_are_the_time_charges(&statement, &[kept, left]);
    world.relay.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_answers_gives_two_sessions_each_billed_for_its_time_over_udp() {
    all_answers(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_answers_gives_two_sessions_each_billed_for_its_time_over_tcp() {
    all_answers(true).await;
}

/// 503 and 486: the caller gets 486 (RFC 3261 §16.7), nobody is billed.
async fn every_branch_fails(tcp: bool) {
    let (world, _, rows) = fork_call(
        ForkMode::FirstAnswer,
        tcp,
        &[shop("uas_503.xml", &[]), shop("uas_486.xml", &[])],
        "uac_auth_486.xml",
    )
    .await;
    assert_eq!(by_app_server(&rows, "shop1").final_status, Some(503));
    assert_eq!(by_app_server(&rows, "shop2").final_status, Some(486));
    assert!(rows.iter().all(|r| r.state == SessionState::Failed));
    let statement = world.statement().await;
    assert_eq!(statement["totals"], json!([]), "{statement:#}");
    world.relay.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_branch_fails_the_caller_gets_the_best_answer_over_udp() {
    every_branch_fails(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_branch_fails_the_caller_gets_the_best_answer_over_tcp() {
    every_branch_fails(true).await;
}

/// Serial: the second application server is asked only once the first has failed.
async fn serial_falls_over(tcp: bool) {
    let (world, _, rows) = fork_call(
        ForkMode::Serial,
        tcp,
        &[
            shop("uas_503.xml", &[]),
            shop("uas_answer.xml", &["-set", "answer_after", "0"]),
        ],
        "uac_auth.xml",
    )
    .await;
    let (first, second) = (by_app_server(&rows, "shop1"), by_app_server(&rows, "shop2"));
    assert_eq!(
        (first.state, first.final_status),
        (SessionState::Failed, Some(503))
    );
    assert_eq!(second.state, SessionState::Terminated);
    assert!(
        second.created_at >= first.ended_at.unwrap(),
        "shop2 was asked only after shop1 failed: {rows:#?}"
    );
    world.relay.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_mode_falls_over_to_the_second_server_over_udp() {
    serial_falls_over(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_mode_falls_over_to_the_second_server_over_tcp() {
    serial_falls_over(true).await;
}

// -------------------------------------------------------------------- item billing

const INFO_CHARGES: &str =
    r#"{"charges":[{"description":"Barolo","unit_amount":1200,"quantity":1,"currency":"EUR"}]}"#;
const BYE_CHARGES: &str = r#"{"charges":[{"description":"cheese","unit_amount":450,"quantity":2,"currency":"EUR"},{"description":"bread","unit_amount":300,"quantity":1,"currency":"EUR"}]}"#;

async fn charges_over_sip(tcp: bool) {
    require_sipp();
    let (world, shops) = relay_with_shops(
        ForkMode::FirstAnswer,
        tcp,
        &[shop(
            "uas_charges.xml",
            &[
                "-set",
                "info_charges",
                INFO_CHARGES,
                "-set",
                "bye_charges",
                BYE_CHARGES,
            ],
        )],
    )
    .await;
    let shop1 = world
        .relay
        .store
        .list_app_servers()
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.name == "shop1")
        .unwrap()
        .id;
    world
        .rest(
            reqwest::Method::PATCH,
            &format!("/v1/app-servers/{shop1}"),
            Some(json!({"commission_bps": 1500})),
        )
        .await;
    let client = world.client("uac_wait_message.xml", &[]);
    let (client_run, _) = all_pass(client, shops).await;
    assert!(
        !client_run.messages.contains("INFO sip:"),
        "an INFO is never relayed:\n{}",
        client_run.messages
    );
    // Both INFOs got their 200 (the scenario waits for each), the second from the same
    // transaction or from the charge's idempotency key: billed once, as the statement shows.
    let rows = world.ended_sessions(1).await;
    let session = &rows[0];
    // The 200 to BYE is written after the session ends: wait for its charges too.
    let statement = wait::until("all three charges on the statement", || async {
        let statement = world.statement().await;
        if statement["charges"].as_array().map_or(0, Vec::len) >= 3 {
            Ok(statement)
        } else {
            Err(format!("{statement:#}"))
        }
    })
    .await;
    let mut items: Vec<_> = statement["charges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["source"].as_str().unwrap().to_owned(),
                c["description"].as_str().unwrap().to_owned(),
                c["amount"].as_i64().unwrap(),
            )
        })
        .collect();
    items.sort();
    assert_eq!(
        items,
        vec![
            ("bye".into(), "bread".into(), 300),
            ("bye".into(), "cheese".into(), 900),
            ("sip_info".into(), "Barolo".into(), 1200),
        ],
        "three items, the retransmitted INFO billed once: {statement:#}"
    );
    let time = billed_for_its_time(&statement, session);
    let total = time + 1200 + 900 + 300;
    assert_eq!(
        statement["totals"],
        json!([{"currency": "EUR", "amount": total}])
    );

    let settlement = world
        .rest(
            reqwest::Method::GET,
            &format!("/v1/app-servers/{shop1}/settlement"),
            None,
        )
        .await;
    let commission = (total * 1500 + 5000) / 10_000; // half away from zero, amounts ≥ 0
    assert_eq!(
        (
            &settlement["gross"],
            &settlement["commission"],
            &settlement["net"]
        ),
        (
            &json!([{"currency": "EUR", "amount": total}]),
            &json!([{"currency": "EUR", "amount": commission}]),
            &json!([{"currency": "EUR", "amount": total - commission}]),
        ),
        "{settlement:#}"
    );
    assert_eq!(settlement["sessions"][0]["time_amount"], time);
    assert_eq!(settlement["sessions"][0]["items_amount"], 2400);
    let rows = sessions_after_shutdown(world.relay).await;
    assert_eq!(rows.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_charges_once_and_charges_in_the_200_to_bye_reach_statement_and_settlement_over_udp() {
    charges_over_sip(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_charges_once_and_charges_in_the_200_to_bye_reach_statement_and_settlement_over_tcp() {
    charges_over_sip(true).await;
}
