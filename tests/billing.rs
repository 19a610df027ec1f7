//! Billing on a real relay (port 0), on SQLite and PostgreSQL, with the relay's clock in the
//! test's hand (no sleeps): tariff arithmetic through the session writer, item charges exactly
//! once over REST, statements, settlements, adjustments, and signed webhooks retried across a
//! restart.

mod common;

use std::sync::Arc;

use common::db::on_both_engines;
use common::relay::{test_config, OPERATOR_KEY};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tollgate::app::{self, Relay};
use tollgate::billing::{record_charges, ChargeSource, NewCharge, Tariff};
use tollgate::clock::{rfc3339, ManualClock};
use tollgate::notify::{retry_delay_ms, verify, Dispatcher, DispatcherSettings};
use tollgate::store::{
    AppServerChange, ChargeOutcome, ChargeRequest, EndReason, IdempotencyKey, LedgerQuery, Party,
    SessionEvent, SessionWriter, Store, IDEMPOTENCY_TTL_MS,
};

/// 2026-11-26T00:00:00Z.
const T0: i64 = 1_795_651_200_000;

/// A relay whose clock the test moves, with user alice, shops `shop1` and `shop2` (keys
/// known) and the service wine@portal.com delivered by shop1.
struct World {
    relay: Relay,
    store: Store,
    clock: Arc<ManualClock>,
    writer: SessionWriter,
    http: reqwest::Client,
    base: String,
    user_id: String,
    service_id: String,
    shop1: (String, String),
    shop2: (String, String),
    _dir: tempfile::TempDir,
}

impl World {
    async fn start(store: Store, url: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&dir);
        config.database.url = url.to_owned();
        config.api.rate_limit_per_second = 0.0;
        let user = store
            .add_user("alice", "portal.com", "secret")
            .await
            .unwrap();
        let (s1, k1) = store
            .add_app_server_with_key("shop1", "sip:127.0.0.1:5090")
            .await
            .unwrap();
        let (s2, k2) = store
            .add_app_server_with_key("shop2", "sip:127.0.0.1:5091")
            .await
            .unwrap();
        let service = store
            .add_service(
                "wine@portal.com",
                &["shop1".to_owned()],
                tollgate::store::ForkMode::FirstAnswer,
            )
            .await
            .unwrap();
        let clock = ManualClock::new(T0);
        let relay = app::start(&config, clock.clone())
            .await
            .expect("relay starts");
        World {
            base: format!("http://{}", relay.http),
            store: relay.store.clone(),
            writer: SessionWriter::spawn(relay.store.clone()).0,
            relay,
            clock,
            http: reqwest::Client::new(),
            user_id: user.id,
            service_id: service.id,
            shop1: (s1.id, k1.expose().to_owned()),
            shop2: (s2.id, k2.expose().to_owned()),
            _dir: dir,
        }
    }

    async fn write(&self, ev: SessionEvent) {
        self.writer
            .record_durably(ev)
            .await
            .expect("writer alive")
            .expect("written");
    }

    /// A session of alice on wine@portal.com relayed to shop1: created at `at`, confirmed
    /// 100 ms later, and ended `duration_ms` after that when given.
    async fn session(&self, id: &str, at: i64, duration_ms: Option<i64>) {
        self.write(SessionEvent::Created {
            id: id.into(),
            call_id: format!("call-{id}"),
            caller: "alice".into(),
            user_id: self.user_id.clone(),
            service: "wine@portal.com".into(),
            service_id: self.service_id.clone(),
            app_server: "shop1".into(),
            app_server_id: self.shop1.0.clone(),
            node: "node-1".into(),
            at,
        })
        .await;
        self.write(SessionEvent::Confirmed {
            id: id.into(),
            at: at + 100,
            status: 200,
            dialog: None,
        })
        .await;
        if let Some(d) = duration_ms {
            self.end(id, at + 100 + d, d).await;
        }
    }

    async fn end(&self, id: &str, at: i64, duration_ms: i64) {
        self.write(SessionEvent::Terminated {
            id: id.into(),
            at,
            duration_ms,
            ended_by: Party::Caller,
            reason: EndReason::Bye,
        })
        .await;
    }

    async fn tariff(&self, per_minute: i64, increment: i32, setup: i64, free: i32, at: i64) {
        let tariff = Tariff {
            currency: "EUR".into(),
            setup_amount: setup,
            per_minute_amount: per_minute,
            increment_secs: increment,
            free_secs: free,
        };
        self.store
            .set_tariff(&self.service_id, &tariff, at)
            .await
            .unwrap();
    }

    async fn time_charge(&self, id: &str) -> Option<i64> {
        self.store
            .time_charges(&[id.to_owned()])
            .await
            .unwrap()
            .remove(id)
            .map(|m| m.amount)
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        idempotency: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(k) = idempotency {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn charge(
        &self,
        session: &str,
        key: &str,
        idem: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let (status, _, body) = self
            .request(
                reqwest::Method::POST,
                &format!("/v1/sessions/{session}/charges"),
                key,
                idem,
                Some(body),
            )
            .await;
        (status, body)
    }

    async fn items_of(&self, session: &str) -> usize {
        self.store
            .page_ledger(&LedgerQuery {
                kind: Some("item"),
                session_id: Some(session.to_owned()),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    }

    async fn stop(self) {
        drop(self.writer);
        self.relay.shutdown().await;
    }
}

fn wine(quantity: i64) -> Value {
    json!({"description": "Barolo", "unit_amount": 1200, "quantity": quantity, "currency": "EUR"})
}

fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {problem}"))
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

on_both_engines!(
    time_charges_follow_the_tariff_in_force_at_confirmation,
    item_charges_land_exactly_once,
    one_batch_keeps_keys_of_several_scopes_apart,
    a_long_ledger_reads_back_whole_and_in_order,
    statements_and_settlements_add_up,
    webhooks_are_signed_retried_and_survive_a_restart,
);

/// The tariff arithmetic through the session writer: the edges of 60 s and 6 s increments,
/// a setup fee, free seconds, a tariff change between two calls, and what is never billed.
async fn time_charges_follow_the_tariff_in_force_at_confirmation(store: Store, url: String) {
    let w = World::start(store, &url).await;
    w.session("before-any-tariff", T0, Some(30_000)).await;
    assert_eq!(
        w.time_charge("before-any-tariff").await,
        None,
        "no tariff, no time charge"
    );

    w.tariff(120, 60, 0, 0, T0 + 1_000).await;
    for (id, duration, want) in [
        ("m0", 0, 0),
        ("m1", 1, 120),
        ("m59", 59_000, 120),
        ("m60", 60_000, 120),
        ("m61", 61_000, 240),
    ] {
        w.session(id, T0 + 2_000, Some(duration)).await;
        assert_eq!(
            w.time_charge(id).await,
            Some(want),
            "60 s increments, {duration} ms"
        );
    }
    // A call confirmed under the 60 s tariff ends after a change: it keeps its version.
    w.session("spans-change", T0 + 3_000, None).await;

    w.tariff(120, 6, 0, 0, T0 + 10_000).await;
    for (id, duration, want) in [
        ("s0", 0, 0),
        ("s1", 1, 12),
        ("s59", 59_000, 120),
        ("s60", 60_000, 120),
        ("s61", 61_000, 132),
    ] {
        w.session(id, T0 + 11_000, Some(duration)).await;
        assert_eq!(
            w.time_charge(id).await,
            Some(want),
            "6 s increments, {duration} ms"
        );
    }
    w.end("spans-change", T0 + 64_100, 61_000).await;
    assert_eq!(
        w.time_charge("spans-change").await,
        Some(240),
        "its own version"
    );

    w.tariff(120, 60, 50, 30, T0 + 20_000).await;
    for (id, duration, want) in [
        ("f0", 0, 50),
        ("f30", 30_000, 50),
        ("f31", 30_001, 170),
        ("f91", 90_001, 290),
    ] {
        w.session(id, T0 + 21_000, Some(duration)).await;
        assert_eq!(
            w.time_charge(id).await,
            Some(want),
            "setup + free, {duration} ms"
        );
    }

    // Failed and cancelled sessions are never billed; a second Terminated bills nothing more.
    for (id, ev) in [
        (
            "failed",
            SessionEvent::Failed {
                id: "failed".into(),
                at: T0 + 22_000,
                status: 486,
            },
        ),
        (
            "cancelled",
            SessionEvent::Cancelled {
                id: "cancelled".into(),
                at: T0 + 22_000,
                status: 487,
            },
        ),
    ] {
        w.write(SessionEvent::Created {
            id: id.into(),
            call_id: id.into(),
            caller: "alice".into(),
            user_id: w.user_id.clone(),
            service: "wine@portal.com".into(),
            service_id: w.service_id.clone(),
            app_server: "shop1".into(),
            app_server_id: w.shop1.0.clone(),
            node: "node-1".into(),
            at: T0 + 21_500,
        })
        .await;
        w.write(ev).await;
        assert_eq!(w.time_charge(id).await, None, "{id}");
    }
    w.end("f0", T0 + 30_000, 5_000_000).await;
    assert_eq!(
        w.time_charge("f0").await,
        Some(50),
        "billed once, at its first end"
    );

    // The session resource shows it.
    let (status, _, s) = w
        .request(
            reqwest::Method::GET,
            "/v1/sessions/m61",
            OPERATOR_KEY,
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s["time_charge"], json!({"currency": "EUR", "amount": 240}));
    assert_eq!(s["user_id"], w.user_id);
    assert_eq!(s["service_id"], w.service_id);
    assert_eq!(s["app_server_id"], w.shop1.0);

    // A relay restart closes a confirmed session at its last proof of life and bills it.
    w.session("interrupted", T0 + 40_000, None).await;
    w.write(SessionEvent::Activity {
        id: "interrupted".into(),
        at: T0 + 40_100 + 61_000,
    })
    .await;
    let closed = w
        .store
        .resume_sessions("node-1", T0 + 500_000, 0)
        .await
        .unwrap()
        .closed_count();
    assert!(closed >= 1);
    assert_eq!(
        w.time_charge("interrupted").await,
        Some(170),
        "61 s under setup 50, 30 s free"
    );
    w.stop().await;
}

/// `POST /v1/sessions/{id}/charges`: validation, scoping, the grace window, and exactly once
/// with an Idempotency-Key, also under 20 concurrent duplicates.
async fn item_charges_land_exactly_once(store: Store, url: String) {
    let w = World::start(store, &url).await;
    w.tariff(120, 60, 0, 0, T0).await;
    w.session("live", T0 + 1_000, None).await;
    let shop1 = w.shop1.1.clone();

    let (status, first) = w.charge("live", &shop1, Some("k-1"), wine(2)).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["amount"], 2400);
    assert_eq!(first["source"], "rest");
    assert_eq!(first["user_id"], w.user_id);
    assert_eq!(first["app_server_id"], w.shop1.0);
    assert_eq!(first["created_at"], rfc3339::format(T0));
    let (status, headers, again) = w
        .request(
            reqwest::Method::POST,
            "/v1/sessions/live/charges",
            &shop1,
            Some("k-1"),
            Some(wine(2)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "the replay keeps the status");
    assert_eq!(again, first, "the same response");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(w.items_of("live").await, 1, "one ledger entry");

    let (status, p) = w.charge("live", &shop1, Some("k-1"), wine(3)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(p["type"], "urn:tollgate:problem:idempotency-key-reused");
    let (status, p) = w.charge("live", &shop1, None, wine(1)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(fields(&p), ["Idempotency-Key"]);
    assert_eq!(w.items_of("live").await, 1, "refusals write nothing");

    // 20 concurrent duplicates: one entry; every answer is that charge or "still running".
    let answers = futures_all(
        (0..20)
            .map(|_| Box::pin(w.charge("live", &shop1, Some("k-burst"), wine(1))))
            .collect(),
    )
    .await;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .map(|(_, b)| b["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert!(answers
        .iter()
        .all(|(s, _)| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT));
    assert_eq!(w.items_of("live").await, 2);
    let (status, retried) = w.charge("live", &shop1, Some("k-burst"), wine(1)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(ids.contains(retried["id"].as_str().unwrap()));

    // Validation names the field and writes nothing.
    for (body, field) in [
        (
            json!({"description": "", "unit_amount": 1, "quantity": 1, "currency": "EUR"}),
            "description",
        ),
        (
            json!({"description": "x", "unit_amount": -1, "quantity": 1, "currency": "EUR"}),
            "unit_amount",
        ),
        (
            json!({"description": "x", "unit_amount": 1, "quantity": 10_001, "currency": "EUR"}),
            "quantity",
        ),
        (
            json!({"description": "x", "unit_amount": 1, "quantity": 1, "currency": "USD"}),
            "currency",
        ),
        (
            json!({"description": "x", "unit_amount": 1, "quantity": 1, "currency": "EUX"}),
            "currency",
        ),
        (
            json!({"description": "x", "unit_amount": 1.5, "quantity": 1, "currency": "EUR"}),
            "unit_amount",
        ),
        (
            json!({"description": "x", "unit_amount": 1, "quantity": 1, "currency": "EUR", "colour": 1}),
            "colour",
        ),
    ] {
        let (status, p) = w
            .charge(
                "live",
                &shop1,
                Some(&format!("bad-{field}-{body}")),
                body.clone(),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {p}");
        assert_eq!(fields(&p), [field], "{body}");
    }
    assert_eq!(w.items_of("live").await, 2);

    // Another shop's session does not exist for it; the operator may charge.
    let (status, _) = w.charge("live", &w.shop2.1, Some("k-2"), wine(1)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = w.charge("nope", &shop1, Some("k-3"), wine(1)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = w.charge("live", OPERATOR_KEY, Some("k-4"), wine(1)).await;
    assert_eq!(status, StatusCode::CREATED);

    // After the end: accepted for charge_grace_secs (600), then 409.
    w.end("live", T0 + 100_000, 98_900).await;
    w.clock.set(T0 + 100_000 + 600_000);
    let (status, _) = w.charge("live", &shop1, Some("k-5"), wine(1)).await;
    assert_eq!(status, StatusCode::CREATED, "inside the grace window");
    w.clock.advance(1);
    let (status, p) = w.charge("live", &shop1, Some("k-6"), wine(1)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{p}");
    assert_eq!(w.items_of("live").await, 4);

    // Reads: the session's charges, the filtered list, one charge; each scoped to its shop.
    let (status, _, page) = w
        .request(
            reqwest::Method::GET,
            "/v1/sessions/live/charges?limit=3",
            &shop1,
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, _, rest) = w
        .request(
            reqwest::Method::GET,
            &format!("/v1/sessions/live/charges?limit=3&cursor={cursor}"),
            &shop1,
            None,
            None,
        )
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null());
    let (status, _, _) = w
        .request(
            reqwest::Method::GET,
            "/v1/sessions/live/charges",
            &w.shop2.1,
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, _, theirs) = w
        .request(reqwest::Method::GET, "/v1/charges", &w.shop2.1, None, None)
        .await;
    assert!(theirs["items"].as_array().unwrap().is_empty());
    let (_, _, mine) = w
        .request(
            reqwest::Method::GET,
            &format!(
                "/v1/charges?user_id={}&from={}",
                w.user_id,
                rfc3339::format(T0)
            ),
            OPERATOR_KEY,
            None,
            None,
        )
        .await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 4);
    let id = first["id"].as_str().unwrap();
    let (status, _, one) = w
        .request(
            reqwest::Method::GET,
            &format!("/v1/charges/{id}"),
            &shop1,
            None,
            None,
        )
        .await;
    assert_eq!((status, &one), (StatusCode::OK, &first));
    w.stop().await;
}

/// A batch of the charge writer holding the same key name under two scopes (two shops, or a
/// shop and the operator) treats them as two keys; in the next batch one is replayed and the
/// other refused for its other request; once the records expire the key names are free again.
async fn one_batch_keeps_keys_of_several_scopes_apart(store: Store, url: String) {
    let w = World::start(store, &url).await;
    w.session("a", T0, None).await;
    let request = |scope: &str, key: &str, fingerprint: &str, description: &str| ChargeRequest {
        session_id: "a".into(),
        source: ChargeSource::Rest,
        charges: vec![NewCharge {
            description: description.into(),
            unit_amount: 100,
            quantity: 1,
            currency: "EUR".into(),
            metadata: None,
        }],
        idempotency: IdempotencyKey {
            scope: scope.into(),
            key: key.into(),
            fingerprint: fingerprint.into(),
        },
        app_server_id: None,
        single: true,
    };
    let created = |o: &Result<ChargeOutcome, tollgate::billing::BillingError>| {
        matches!(o, Ok(ChargeOutcome::Created(_)))
    };
    let first = w
        .store
        .apply_charges(
            T0 + 1_000,
            &[
                request("operator", "k1", "f-op", "one"),
                request("app_server:x", "k1", "f-x", "two"),
                request("app_server:x", "k2", "f-x2", "three"),
            ],
        )
        .await
        .unwrap();
    assert!(first.iter().all(created), "{first:?}");
    assert_eq!(w.items_of("a").await, 3);

    let second = w
        .store
        .apply_charges(
            T0 + 2_000,
            &[
                request("operator", "k1", "f-op", "one"),
                request("app_server:x", "k1", "f-other", "two, changed"),
                request("app_server:y", "k1", "f-y", "four"),
            ],
        )
        .await
        .unwrap();
    assert!(
        matches!(&second[0], Ok(ChargeOutcome::Replayed(r)) if r.status == 201),
        "{second:?}"
    );
    assert!(
        matches!(
            &second[1],
            Err(tollgate::billing::BillingError::KeyReused(_))
        ),
        "{second:?}"
    );
    assert!(created(&second[2]), "{second:?}");
    assert_eq!(
        w.items_of("a").await,
        4,
        "a replay or a refusal writes nothing"
    );

    let later = T0 + 2_000 + IDEMPOTENCY_TTL_MS;
    let third = w
        .store
        .apply_charges(later, &[request("app_server:x", "k1", "f-other", "five")])
        .await
        .unwrap();
    assert!(
        created(&third[0]),
        "an expired record frees its key: {third:?}"
    );
    assert_eq!(w.items_of("a").await, 5);
    w.stop().await;
}

/// A period of the ledger longer than one chunk of the bulk read (1000 rows) comes back with
/// every entry once, in booking order, each field as written (metadata included).
async fn a_long_ledger_reads_back_whole_and_in_order(store: Store, url: String) {
    let w = World::start(store, &url).await;
    w.session("a", T0, None).await;
    const ENTRIES: usize = 2_345;
    let requests: Vec<ChargeRequest> = (0..ENTRIES)
        .map(|i| ChargeRequest {
            session_id: "a".into(),
            source: ChargeSource::Rest,
            charges: vec![NewCharge {
                description: format!("item {i}"),
                unit_amount: i as i64,
                quantity: 1 + (i % 3) as i64,
                currency: "EUR".into(),
                metadata: i
                    .is_multiple_of(2)
                    .then(|| json!({"n": i.to_string(), "note": "quote \" and, comma"}))
                    .and_then(|v| v.as_object().cloned()),
            }],
            idempotency: IdempotencyKey {
                scope: "operator".into(),
                key: format!("k{i}"),
                fingerprint: format!("f{i}"),
            },
            app_server_id: None,
            single: true,
        })
        .collect();
    // Two bookings a second apart, so the order is by time and, within a time, by id.
    let (early, late) = requests.split_at(ENTRIES / 2);
    for (at, batch) in [(T0 + 1_000, late), (T0 + 2_000, early)] {
        let outcomes = w.store.apply_charges(at, batch).await.unwrap();
        let refused: Vec<_> = outcomes.iter().filter(|o| o.is_err()).take(3).collect();
        assert!(refused.is_empty(), "{refused:?}");
    }

    let read = w
        .store
        .ledger_of_app_server(&w.shop1.0, T0, T0 + 3_600_000)
        .await
        .unwrap();
    assert_eq!(read.len(), ENTRIES);
    let order: Vec<(i64, &str)> = read.iter().map(|e| (e.created_at, e.id.as_str())).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "oldest first, ties by id");
    assert_eq!(read[0].created_at, T0 + 1_000);
    for entry in &read {
        let i: usize = entry.description["item ".len()..].parse().unwrap();
        assert_eq!(entry.amount, i as i64 * (1 + (i % 3) as i64));
        assert_eq!(entry.unit_amount, Some(i as i64));
        assert_eq!(entry.session_id.as_deref(), Some("a"));
        assert_eq!(
            entry.metadata.as_ref().map(|m| m["note"].clone()),
            i.is_multiple_of(2).then(|| json!("quote \" and, comma")),
        );
    }
    let distinct: std::collections::HashSet<&str> = read.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(distinct.len(), ENTRIES, "every entry once");

    // The statement is streamed as it is read: whole, in order, each charge as the ledger
    // holds it, in JSON and in CSV.
    let url = format!(
        "{}/v1/users/{}/statement?from={}&to={}",
        w.base,
        w.user_id,
        rfc3339::format(T0),
        rfc3339::format(T0 + 3_600_000)
    );
    let statement = |accept: &'static str| {
        w.http
            .get(&url)
            .bearer_auth(OPERATOR_KEY)
            .header("Accept", accept)
            .send()
    };
    let st: Value = statement("application/json")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let charges = st["charges"].as_array().unwrap();
    let expected: Vec<Value> = read
        .iter()
        .map(|e| serde_json::to_value(e.clone().into_charge().unwrap()).unwrap())
        .collect();
    assert_eq!(charges.len(), ENTRIES);
    assert!(
        charges == &expected,
        "every charge as the ledger holds it, in order"
    );
    let total: i64 = read.iter().map(|e| e.amount).sum();
    assert_eq!(st["totals"], json!([{"currency": "EUR", "amount": total}]));
    let csv = statement("text/csv").await.unwrap().text().await.unwrap();
    assert_eq!(csv.lines().count(), 1 + ENTRIES + 1);
    assert!(
        csv.ends_with(&format!("total,,,,,,,{total},EUR\n")),
        "{csv}"
    );

    // Clients that take the first chunk and go away leave no connection held: more of them
    // than the pool has connections, then a whole statement still comes back.
    for _ in 0..12 {
        let mut cut = statement("application/json").await.unwrap();
        assert!(!cut.chunk().await.unwrap().unwrap().is_empty());
    }
    let again: Value = statement("application/json")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["charges"].as_array().unwrap().len(), ENTRIES);
    w.stop().await;
}

/// Polls the futures together (on this task) and collects their outputs in order.
async fn futures_all<F: std::future::Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
    let mut done: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futures.iter_mut().enumerate() {
            if done[i].is_none() {
                match std::pin::Pin::new(f).poll(cx) {
                    std::task::Poll::Ready(v) => done[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    done.into_iter().map(|d| d.expect("finished")).collect()
}

/// The statement sums time charges, items and adjustments per currency (JSON and CSV); the
/// settlement takes the commission from the shop's gross.
async fn statements_and_settlements_add_up(store: Store, url: String) {
    let w = World::start(store, &url).await;
    w.tariff(120, 1, 50, 0, T0).await;
    w.session("a", T0 + 1_000, None).await;
    let shop1 = w.shop1.1.clone();
    let (status, wine_charge) = w.charge("a", &shop1, Some("a1"), wine(1)).await;
    assert_eq!(status, StatusCode::CREATED);
    let sip = NewCharge {
        description: "cheese, \"aged\"".into(),
        unit_amount: 450,
        quantity: 1,
        currency: "EUR".into(),
        metadata: json!({"order": "A-1042", "note": "ünïcode"})
            .as_object()
            .cloned(),
    };
    let landed = record_charges(
        &w.store,
        T0 + 2_000,
        "a",
        ChargeSource::SipInfo,
        vec![sip.clone()],
        "info-1",
    )
    .await
    .unwrap();
    let replayed = record_charges(
        &w.store,
        T0 + 3_000,
        "a",
        ChargeSource::SipInfo,
        vec![sip.clone()],
        "info-1",
    )
    .await
    .unwrap();
    assert_eq!(landed, replayed, "a retransmitted INFO bills nothing twice");
    w.end("a", T0 + 1_100 + 90_500, 90_500).await; // 91 s → 50 + 182
    assert_eq!(w.time_charge("a").await, Some(232));

    let (status, _, adj) = w
        .request(
            reqwest::Method::POST,
            "/v1/adjustments",
            OPERATOR_KEY,
            Some("adj-1"),
            Some(
                json!({"user_id": w.user_id, "app_server_id": w.shop1.0, "amount": -100,
                        "currency": "EUR", "reason": "goodwill"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{adj}");
    let (status, _, again) = w
        .request(
            reqwest::Method::POST,
            "/v1/adjustments",
            OPERATOR_KEY,
            Some("adj-1"),
            Some(
                json!({"user_id": w.user_id, "app_server_id": w.shop1.0, "amount": -100,
                        "currency": "EUR", "reason": "goodwill"}),
            ),
        )
        .await;
    assert_eq!((status, &again), (StatusCode::CREATED, &adj));
    let (status, _, _) = w
        .request(
            reqwest::Method::POST,
            "/v1/adjustments",
            &shop1,
            Some("adj-2"),
            Some(json!({"user_id": w.user_id, "amount": 1, "currency": "EUR", "reason": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let period = format!(
        "from={}&to={}",
        rfc3339::format(T0),
        rfc3339::format(T0 + 3_600_000)
    );
    let (status, _, st) = w
        .request(
            reqwest::Method::GET,
            &format!("/v1/users/{}/statement?{period}", w.user_id),
            OPERATOR_KEY,
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{st}");
    let total = 232 + 1200 + 450 - 100;
    assert_eq!(st["totals"], json!([{"currency": "EUR", "amount": total}]));
    assert_eq!(st["sessions"][0]["time_charge"]["amount"], 232);
    assert_eq!(
        st["charges"],
        json!([wine_charge, landed[0]]),
        "the statement shows each charge as it was answered when created, every field"
    );
    assert_eq!(st["adjustments"][0]["amount"], -100);
    let csv = w
        .http
        .get(format!(
            "{}/v1/users/{}/statement?{period}",
            w.base, w.user_id
        ))
        .bearer_auth(OPERATOR_KEY)
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = csv.text().await.unwrap();
    assert_eq!(csv.lines().count(), 1 + 4 + 1, "{csv}");
    assert!(
        csv.ends_with(&format!("total,,,,,,,{total},EUR\n")),
        "{csv}"
    );
    let (status, _, bad) = w
        .request(
            reqwest::Method::GET,
            &format!("/v1/users/{}/statement?from=yesterday", w.user_id),
            OPERATOR_KEY,
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(fields(&bad), ["from"]);

    let (status, _, _) = w
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/app-servers/{}", w.shop1.0),
            OPERATOR_KEY,
            None,
            Some(json!({"commission_bps": 1500})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, setl) = w
        .request(
            reqwest::Method::GET,
            &format!("/v1/app-servers/{}/settlement?{period}", w.shop1.0),
            &shop1,
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{setl}");
    let commission = (total * 15 + 50) / 100; // 1782 × 0.15 = 267.3 → 267
    assert_eq!(setl["gross"], json!([{"currency": "EUR", "amount": total}]));
    assert_eq!(
        setl["commission"],
        json!([{"currency": "EUR", "amount": commission}])
    );
    assert_eq!(
        setl["net"],
        json!([{"currency": "EUR", "amount": total - commission}])
    );
    assert_eq!(setl["sessions"][0]["time_amount"], 232);
    assert_eq!(setl["sessions"][0]["items_amount"], 1650);
    let (status, _, _) = w
        .request(
            reqwest::Method::GET,
            &format!("/v1/app-servers/{}/settlement", w.shop1.0),
            &w.shop2.1,
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another shop's settlement");
    w.stop().await;
}

/// A receiver that verifies signatures and fails the first two deliveries gets the event on
/// the third; the dispatcher is replaced (a restart) between attempts and nothing is lost.
async fn webhooks_are_signed_retried_and_survive_a_restart(store: Store, url: String) {
    use axum::http::HeaderMap;
    use std::sync::Mutex;

    /// Bodies received, whether each signature verified; the first two deliveries of each
    /// event are answered 500.
    #[derive(Default)]
    struct Received {
        bodies: Vec<String>,
        verified: Vec<bool>,
    }
    let received = Arc::new(Mutex::new(Received::default()));
    let secret = Arc::new(Mutex::new(String::new()));
    let (r, s) = (received.clone(), secret.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (r, s) = (r.clone(), s.clone());
            async move {
                let header = headers["tollgate-signature"].to_str().unwrap().to_owned();
                let t: i64 = header[2..header.find(',').unwrap()].parse().unwrap();
                let ok = verify(&header, &body, &s.lock().unwrap(), t, 300).is_ok();
                let text = String::from_utf8_lossy(&body).into_owned();
                let mut r = r.lock().unwrap();
                let seen = r.bodies.iter().filter(|b| **b == text).count();
                r.bodies.push(text);
                r.verified.push(ok);
                if seen < 2 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let w = World::start(store, &url).await;
    // A live session, confirmed before the webhook URL was set: no event for that.
    w.session("hooked", T0, None).await;
    w.store
        .update_app_server(
            &w.shop1.0,
            &AppServerChange {
                webhook_url: Some(Some(hook)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (status, headers, issued) = w
        .request(
            reqwest::Method::POST,
            &format!("/v1/app-servers/{}/webhook-secret", w.shop1.0),
            &w.shop1.1,
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    assert_eq!(headers["cache-control"], "no-store");
    *secret.lock().unwrap() = issued["secret"].as_str().unwrap().to_owned();

    w.clock.set(T0 + 10_000);
    let charge = record_charges(
        &w.store,
        T0 + 10_000,
        "hooked",
        ChargeSource::Bye,
        vec![NewCharge {
            description: "beer".into(),
            unit_amount: 300,
            quantity: 2,
            currency: "EUR".into(),
            metadata: None,
        }],
        "bye-1",
    )
    .await
    .unwrap();
    let mut total = 0;
    for round in 0..3 {
        let dispatcher = if round == 1 {
            // A restart: a new store connection and dispatcher; the outbox is the state.
            let again = Store::connect(&url).await.unwrap();
            Dispatcher::new(again, w.clock.clone(), DispatcherSettings::default())
        } else {
            Dispatcher::new(
                w.store.clone(),
                w.clock.clone(),
                DispatcherSettings::default(),
            )
        };
        assert_eq!(dispatcher.deliver_due().await.unwrap(), 1, "round {round}");
        total += 1;
        w.clock.advance(retry_delay_ms(round + 1));
    }
    let (bodies, verified) = {
        let r = received.lock().unwrap();
        (r.bodies.clone(), r.verified.clone())
    };
    assert_eq!(bodies.len(), total);
    assert!(verified.iter().all(|v| *v), "every signature verifies");
    let distinct: std::collections::HashSet<&String> = bodies.iter().collect();
    assert_eq!(distinct.len(), 1, "every attempt sends the same bytes");
    let event: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(event["type"], "charge.created");
    assert!(event["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(event["data"]["id"], charge[0].id);
    // The session's end is an event too, written with the termination.
    w.end("hooked", T0 + 20_000, 19_900).await;
    let events = w.store.webhook_events_of(&w.shop1.0).await.unwrap();
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.1.as_str(), e.2.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("charge.created", "delivered"),
            ("session.terminated", "pending")
        ]
    );

    let (_, _, log) = w
        .request(
            reqwest::Method::GET,
            "/v1/webhook-deliveries?event_type=charge.created",
            &w.shop1.1,
            None,
            None,
        )
        .await;
    let attempts: Vec<i64> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, [200, 500, 500], "newest first");
    let (_, _, none) = w
        .request(
            reqwest::Method::GET,
            "/v1/webhook-deliveries",
            &w.shop2.1,
            None,
            None,
        )
        .await;
    assert!(none["items"].as_array().unwrap().is_empty());
    w.stop().await;
}
