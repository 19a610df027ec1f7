//! The REST API on a real relay (port 0, fresh SQLite file), spoken to over HTTP with reqwest:
//! users, application servers and their once-shown keys, services, sessions with filters,
//! cursor pagination and per-shop scoping, problem+json on bad input, authentication, rate
//! limits, token introspection and the JWK set, probes and metrics, and the committed OpenAPI
//! document.

mod common;

use common::relay::{start_relay, start_relay_with, test_config, Seed, TestRelay, OPERATOR_KEY};
use reqwest::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use tollgate::clock::{rfc3339, Clock, SystemClock};
use tollgate::store::{EndReason, Party, SessionEvent, SessionWriter, Store};
use tollgate::tokens::{TokenConfig, TokenIssuer};

/// A relay and an HTTP client pointed at it.
struct Api {
    relay: TestRelay,
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn start() -> Api {
        Api::around(
            start_relay(Seed {
                app_servers: vec![],
            })
            .await,
        )
    }

    fn around(relay: TestRelay) -> Api {
        let base = format!("http://{}", relay.relay.http);
        Api {
            relay,
            base,
            http: reqwest::Client::new(),
        }
    }

    fn store(&self) -> &Store {
        &self.relay.store
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str, key: Option<&str>) -> Response {
        let mut req = self.http.get(self.url(path));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        req.send().await.expect("GET")
    }

    async fn post(&self, path: &str, key: Option<&str>, body: Value) -> Response {
        let mut req = self.http.post(self.url(path)).json(&body);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        req.send().await.expect("POST")
    }

    async fn patch(&self, path: &str, key: Option<&str>, body: Value) -> Response {
        let mut req = self.http.patch(self.url(path)).json(&body);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        req.send().await.expect("PATCH")
    }

    async fn post_raw(&self, path: &str, content_type: &str, body: &'static str) -> Response {
        self.http
            .post(self.url(path))
            .bearer_auth(OPERATOR_KEY)
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .expect("POST")
    }

    /// `POST /v1/app-servers` as the operator: `(id, api_key)`.
    async fn create_app_server(&self, name: &str) -> (String, String) {
        let resp = self
            .post(
                "/v1/app-servers",
                Some(OPERATOR_KEY),
                json!({"name": name, "uri": format!("sip:{name}.example.com:5060")}),
            )
            .await;
        let body = ok(resp, StatusCode::CREATED).await;
        (
            body["id"].as_str().unwrap().to_owned(),
            body["api_key"].as_str().unwrap().to_owned(),
        )
    }
}

/// Asserts the status and returns the JSON body.
async fn ok(resp: Response, status: StatusCode) -> Value {
    let got = resp.status();
    let text = resp.text().await.expect("body");
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Asserts an RFC 9457 problem document with `status` and returns it.
async fn problem(resp: Response, status: StatusCode) -> Value {
    let got = resp.status();
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().await.expect("body");
    assert_eq!(got, status, "{text}");
    assert_eq!(
        content_type.as_deref(),
        Some("application/problem+json"),
        "{text}"
    );
    let body: Value = serde_json::from_str(&text).expect("a JSON problem document");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:tollgate:problem:"),
        "{body}"
    );
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    body
}

/// The `field`s of a problem's `errors`.
fn fields(problem: &Value) -> Vec<&str> {
    problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {problem}"))
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn users_are_created_listed_read_and_deleted() {
    let api = Api::start().await;
    let key = Some(OPERATOR_KEY);

    let resp = api
        .post("/v1/users", key, json!({"name": "bob", "password": "pw"}))
        .await;
    let location = resp.headers()[LOCATION].to_str().unwrap().to_owned();
    let bob = ok(resp, StatusCode::CREATED).await;
    let id = bob["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/users/{id}"));
    assert_eq!(bob["name"], "bob");
    assert_eq!(bob["realm"], "portal.com");
    assert!(bob.get("password").is_none() && !bob.to_string().contains("pw\""));

    let list = ok(api.get("/v1/users", key).await, StatusCode::OK).await;
    let names: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    assert!(!list.to_string().contains("ha1"), "{list}");

    let got = ok(api.get(&location, key).await, StatusCode::OK).await;
    assert_eq!(got, bob);

    let dup = api
        .post("/v1/users", key, json!({"name": "bob", "password": "x"}))
        .await;
    let p = problem(dup, StatusCode::CONFLICT).await;
    assert_eq!(p["type"], "urn:tollgate:problem:conflict");

    let bad_name = api
        .post("/v1/users", key, json!({"name": "b:ob", "password": "x"}))
        .await;
    assert_eq!(
        fields(&problem(bad_name, StatusCode::BAD_REQUEST).await),
        ["name"]
    );

    let resp = api
        .http
        .delete(api.url(&location))
        .bearer_auth(OPERATOR_KEY)
        .send()
        .await;
    assert_eq!(resp.unwrap().status(), StatusCode::NO_CONTENT);
    problem(api.get(&location, key).await, StatusCode::NOT_FOUND).await;
    let again = api
        .http
        .delete(api.url(&location))
        .bearer_auth(OPERATOR_KEY)
        .send()
        .await;
    problem(again.unwrap(), StatusCode::NOT_FOUND).await;
    // The relay's own view agrees.
    assert_eq!(api.store().list_users().await.unwrap().len(), 1);
}

#[tokio::test]
async fn bad_input_gets_a_problem_naming_the_field() {
    let api = Api::start().await;
    let key = Some(OPERATOR_KEY);

    let missing = api.post("/v1/users", key, json!({"name": "bob"})).await;
    let p = problem(missing, StatusCode::BAD_REQUEST).await;
    assert_eq!(p["type"], "urn:tollgate:problem:invalid-request");
    assert_eq!(fields(&p), ["password"]);
    assert!(p["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("missing field"));

    let wrong_type = api
        .post("/v1/users", key, json!({"name": 5, "password": "x"}))
        .await;
    assert_eq!(
        fields(&problem(wrong_type, StatusCode::BAD_REQUEST).await),
        ["name"]
    );

    let unknown = api
        .post("/v1/users", key, json!({"name": "b", "pasword": "x"}))
        .await;
    assert_eq!(
        fields(&problem(unknown, StatusCode::BAD_REQUEST).await),
        ["pasword"]
    );

    let nested = api
        .post(
            "/v1/services",
            key,
            json!({"name": "s", "app_servers": ["a", 7]}),
        )
        .await;
    assert_eq!(
        fields(&problem(nested, StatusCode::BAD_REQUEST).await),
        ["app_servers[1]"]
    );

    let malformed = api
        .post_raw("/v1/users", "application/json", "{\"name\": \"bob\",")
        .await;
    assert_eq!(
        fields(&problem(malformed, StatusCode::BAD_REQUEST).await),
        ["body"]
    );

    let not_json = api.post_raw("/v1/users", "text/plain", "name=bob").await;
    problem(not_json, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    let unknown_id = api.get("/v1/users/no-such-id", key).await;
    let p = problem(unknown_id, StatusCode::NOT_FOUND).await;
    assert_eq!(p["type"], "urn:tollgate:problem:not-found");

    problem(
        api.get("/v1/nothing-here", key).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let wrong_method = api
        .http
        .put(api.url("/v1/users"))
        .bearer_auth(OPERATOR_KEY)
        .send()
        .await;
    problem(wrong_method.unwrap(), StatusCode::METHOD_NOT_ALLOWED).await;

    for (query, field) in [
        ("cursor=not-a-cursor", "cursor"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("state=sleeping", "state"),
        ("colour=red", "colour"),
    ] {
        let resp = api.get(&format!("/v1/sessions?{query}"), key).await;
        let p = problem(resp, StatusCode::BAD_REQUEST).await;
        assert_eq!(fields(&p), [field], "{query}: {p}");
    }
}

#[tokio::test]
async fn app_servers_get_a_key_shown_once_and_services_route_to_them() {
    let api = Api::start().await;
    let key = Some(OPERATOR_KEY);

    let resp = api
        .post(
            "/v1/app-servers",
            key,
            json!({"name": "shop1", "uri": "sip:127.0.0.1:5090"}),
        )
        .await;
    assert!(resp.headers().contains_key(LOCATION));
    let shop1 = ok(resp, StatusCode::CREATED).await;
    let api_key = shop1["api_key"].as_str().unwrap().to_owned();
    assert!(
        api_key.starts_with("tgk_") && api_key.len() >= 40,
        "{api_key}"
    );
    assert_eq!(shop1["uri"], "sip:127.0.0.1:5090");
    let (shop2_id, _) = api.create_app_server("shop2").await;

    // Listing and reading never show a key again.
    let list = ok(api.get("/v1/app-servers", key).await, StatusCode::OK).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains("api_key"), "{list}");
    assert!(!list.to_string().contains(&api_key[4..]), "{list}");
    let one = ok(
        api.get(&format!("/v1/app-servers/{shop2_id}"), key).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(one["name"], "shop2");
    assert!(one.get("api_key").is_none());

    let bad_uri = api
        .post(
            "/v1/app-servers",
            key,
            json!({"name": "x", "uri": "http://x"}),
        )
        .await;
    assert_eq!(
        fields(&problem(bad_uri, StatusCode::BAD_REQUEST).await),
        ["uri"]
    );
    let dup = api
        .post(
            "/v1/app-servers",
            key,
            json!({"name": "shop1", "uri": "sip:a"}),
        )
        .await;
    problem(dup, StatusCode::CONFLICT).await;

    // A service routed to both, in order.
    let resp = api
        .post(
            "/v1/services",
            key,
            json!({"name": "books", "app_servers": ["shop2", "shop1"]}),
        )
        .await;
    let service = ok(resp, StatusCode::CREATED).await;
    assert_eq!(service["address"], "books@portal.com");
    let order: Vec<_> = service["app_servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["shop2", "shop1"]);
    let got = ok(
        api.get(
            &format!("/v1/services/{}", service["id"].as_str().unwrap()),
            key,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(got, service);
    let list = ok(api.get("/v1/services", key).await, StatusCode::OK).await;
    assert_eq!(list["items"][0]["address"], "books@portal.com");
    // The relay's directory sees it.
    let services = api.store().list_services().await.unwrap();
    assert_eq!(services[0].app_servers[0].name, "shop2");

    let unknown_server = api
        .post(
            "/v1/services",
            key,
            json!({"name": "wine", "domain": "portal.com", "app_servers": ["shop1", "nosuch"]}),
        )
        .await;
    let p = problem(unknown_server, StatusCode::BAD_REQUEST).await;
    assert_eq!(fields(&p), ["app_servers[1]"]);
    assert!(p["detail"].as_str().unwrap().contains("nosuch"));
    let twice = api
        .post(
            "/v1/services",
            key,
            json!({"name": "wine", "app_servers": ["shop1", "shop1"]}),
        )
        .await;
    assert_eq!(
        fields(&problem(twice, StatusCode::BAD_REQUEST).await),
        ["app_servers[1]"]
    );
    let none = api
        .post(
            "/v1/services",
            key,
            json!({"name": "wine", "app_servers": []}),
        )
        .await;
    assert_eq!(
        fields(&problem(none, StatusCode::BAD_REQUEST).await),
        ["app_servers"]
    );
    let dup = api
        .post(
            "/v1/services",
            key,
            json!({"name": "books@portal.com", "app_servers": ["shop1"]}),
        )
        .await;
    problem(dup, StatusCode::CONFLICT).await;
    problem(
        api.get("/v1/services/no-such-id", key).await,
        StatusCode::NOT_FOUND,
    )
    .await;

    // An application server's key is not an operator key.
    let forbidden = api
        .post(
            "/v1/users",
            Some(&api_key),
            json!({"name": "eve", "password": "x"}),
        )
        .await;
    let p = problem(forbidden, StatusCode::FORBIDDEN).await;
    assert_eq!(p["type"], "urn:tollgate:problem:forbidden");
    problem(
        api.get("/v1/app-servers", Some(&api_key)).await,
        StatusCode::FORBIDDEN,
    )
    .await;
}

/// `PATCH /v1/services/{id}` changes the routing, the fork mode, or both; what is absent stays.
#[tokio::test]
async fn a_service_changes_its_fork_mode_and_routing_with_patch() {
    let api = Api::start().await;
    let key = Some(OPERATOR_KEY);
    let (shop1, _) = api.create_app_server("shop1").await;
    let (shop2, _) = api.create_app_server("shop2").await;
    let created = ok(
        api.post(
            "/v1/services",
            key,
            json!({"name": "books", "app_servers": ["shop1", "shop2"]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["fork_mode"], "first_answer", "the default");
    let path = format!("/v1/services/{}", created["id"].as_str().unwrap());
    let names = |service: &Value| -> Vec<String> {
        service["app_servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect()
    };

    let serial = ok(
        api.patch(&path, key, json!({"fork_mode": "serial"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(serial["fork_mode"], "serial");
    assert_eq!(names(&serial), ["shop1", "shop2"], "routing untouched");

    let rerouted = ok(
        api.patch(&path, key, json!({"app_servers": [shop2, shop1]}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(rerouted["fork_mode"], "serial", "mode untouched");
    assert_eq!(names(&rerouted), ["shop2", "shop1"]);

    let both = ok(
        api.patch(
            &path,
            key,
            json!({"app_servers": [shop1], "fork_mode": "all_answers"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(both["fork_mode"], "all_answers");
    assert_eq!(names(&both), ["shop1"]);
    assert_eq!(
        ok(api.get(&path, key).await, StatusCode::OK).await,
        both,
        "what GET reads back"
    );
    // What the relay's directory loads.
    let services = api.store().list_services().await.unwrap();
    assert_eq!(services[0].fork_mode, tollgate::store::ForkMode::AllAnswers);

    // Nothing to change, an unknown mode, an unknown server: 400 naming the field, no change.
    let nothing = problem(
        api.patch(&path, key, json!({})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(fields(&nothing), ["app_servers"]);
    let sideways = problem(
        api.patch(&path, key, json!({"fork_mode": "sideways"}))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(fields(&sideways), ["fork_mode"], "{sideways}");
    let unknown = problem(
        api.patch(
            &path,
            key,
            json!({"app_servers": ["no-such-server"], "fork_mode": "serial"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(fields(&unknown), ["app_servers[0]"]);
    assert_eq!(
        ok(api.get(&path, key).await, StatusCode::OK).await,
        both,
        "a refused PATCH changes nothing"
    );
    problem(
        api.patch(
            "/v1/services/no-such-id",
            key,
            json!({"fork_mode": "serial"}),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let (_, shop_key) = api.create_app_server("shop3").await;
    problem(
        api.patch(&path, Some(&shop_key), json!({"fork_mode": "serial"}))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
}

#[tokio::test]
async fn keys_are_required_and_can_be_replaced() {
    let api = Api::start().await;

    let resp = api.get("/v1/users", None).await;
    let challenge = resp.headers()[WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let p = problem(resp, StatusCode::UNAUTHORIZED).await;
    assert_eq!(p["type"], "urn:tollgate:problem:unauthorized");

    for bad in [
        "wrong-key",
        "tgk_notakeyatall",
        OPERATOR_KEY.trim_end_matches('9'),
    ] {
        let resp = api.get("/v1/sessions", Some(bad)).await;
        let challenge = resp.headers()[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(challenge.contains("invalid_token"), "{challenge}");
        problem(resp, StatusCode::UNAUTHORIZED).await;
    }
    let basic = api
        .http
        .get(api.url("/v1/users"))
        .basic_auth("operator", Some(OPERATOR_KEY))
        .send()
        .await
        .unwrap();
    problem(basic, StatusCode::UNAUTHORIZED).await;

    let (id, old_key) = api.create_app_server("shop1").await;
    ok(
        api.get("/v1/sessions", Some(&old_key)).await,
        StatusCode::OK,
    )
    .await;
    let resp = api
        .post(
            &format!("/v1/app-servers/{id}/api-key"),
            Some(OPERATOR_KEY),
            json!({}),
        )
        .await;
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let issued = ok(resp, StatusCode::CREATED).await;
    let new_key = issued["api_key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, old_key);
    assert!(issued["previous_valid_until"].is_string(), "{issued}");
    // The previous key works through its grace period, beside the new one.
    ok(
        api.get("/v1/sessions", Some(&old_key)).await,
        StatusCode::OK,
    )
    .await;
    ok(
        api.get("/v1/sessions", Some(&new_key)).await,
        StatusCode::OK,
    )
    .await;
    // A leaked key is revoked at once.
    let resp = api
        .post(
            &format!("/v1/app-servers/{id}/api-key?revoke_previous=true"),
            Some(OPERATOR_KEY),
            json!({}),
        )
        .await;
    let issued = ok(resp, StatusCode::CREATED).await;
    assert!(issued["previous_valid_until"].is_null(), "{issued}");
    let newest = issued["api_key"].as_str().unwrap();
    for revoked in [&old_key, &new_key] {
        problem(
            api.get("/v1/sessions", Some(revoked)).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    ok(api.get("/v1/sessions", Some(newest)).await, StatusCode::OK).await;
    let resp = api
        .post(
            "/v1/app-servers/nosuch/api-key",
            Some(OPERATOR_KEY),
            json!({}),
        )
        .await;
    problem(resp, StatusCode::NOT_FOUND).await;

    // Probes, metrics, the document and the key set need no key.
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/.well-known/jwks.json",
    ] {
        assert_eq!(api.get(path, None).await.status(), StatusCode::OK, "{path}");
    }
}

/// Writes a finished or live session directly, as the relay core would.
struct Seeder {
    writer: SessionWriter,
}

impl Seeder {
    fn new(store: &Store) -> Seeder {
        Seeder {
            writer: SessionWriter::spawn(store.clone()).0,
        }
    }

    async fn write(&self, ev: SessionEvent) {
        self.writer
            .record_durably(ev)
            .await
            .expect("writer alive")
            .expect("written");
    }

    /// A session created at `at`; `state` is trying, confirmed (at `at + 1000`) or
    /// terminated (confirmed at `at + 1000`, ended at `at + 61_000`).
    async fn session(&self, id: &str, at: i64, caller: &str, server: &str, state: &str) {
        self.write(SessionEvent::Created {
            id: id.into(),
            call_id: format!("call-{id}"),
            caller: caller.into(),
            user_id: format!("user-{caller}"),
            service: "service1@portal.com".into(),
            service_id: "service-1".into(),
            app_server: server.into(),
            app_server_id: format!("id-{server}"),
            node: "node-1".into(),
            at,
        })
        .await;
        if state == "trying" {
            return;
        }
        self.write(SessionEvent::Confirmed {
            id: id.into(),
            at: at + 1000,
            status: 200,
            dialog: None,
        })
        .await;
        if state == "confirmed" {
            return;
        }
        self.write(SessionEvent::Terminated {
            id: id.into(),
            at: at + 61_000,
            duration_ms: 60_000,
            ended_by: Party::Caller,
            reason: EndReason::Bye,
        })
        .await;
    }
}

/// Pages through `/v1/sessions?{query}` with `limit`, returning every id in order and the
/// number of pages.
async fn all_pages(api: &Api, key: &str, query: &str, limit: u32) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/sessions?limit={limit}");
        if !query.is_empty() {
            path.push('&');
            path.push_str(query);
        }
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = ok(api.get(&path, Some(key)).await, StatusCode::OK).await;
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= limit as usize);
        ids.extend(items.iter().map(|s| s["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 100, "pagination does not end");
    }
    (ids, pages)
}

#[tokio::test]
async fn sessions_page_filter_and_stay_within_their_shop() {
    let api = Api::start().await;
    let (_, key_a) = api.create_app_server("shopA").await;
    let (_, key_b) = api.create_app_server("shopB").await;

    let seed = Seeder::new(api.store());
    let t0 = 1_795_651_200_000;
    // Newest first by created_at, then id: s7, s6b, s6a, s5, s4, s3, s2, s1.
    seed.session("s1", t0, "alice", "shopA", "terminated").await;
    seed.session("s2", t0 + 10, "bob", "shopA", "terminated")
        .await;
    seed.session("s3", t0 + 20, "alice", "shopB", "terminated")
        .await;
    seed.session("s4", t0 + 30, "alice", "shopA", "confirmed")
        .await;
    seed.session("s5", t0 + 40, "bob", "shopB", "trying").await;
    seed.session("s6a", t0 + 50, "alice", "shopA", "trying")
        .await;
    seed.session("s6b", t0 + 50, "alice", "shopA", "terminated")
        .await;
    seed.session("s7", t0 + 60, "bob", "shopA", "confirmed")
        .await;
    let newest_first = ["s7", "s6b", "s6a", "s5", "s4", "s3", "s2", "s1"];

    // The operator sees everything; every page size walks the same order, once each.
    for limit in [1, 2, 3, 8, 500] {
        let (ids, pages) = all_pages(&api, OPERATOR_KEY, "", limit).await;
        assert_eq!(ids, newest_first, "limit {limit}");
        assert_eq!(
            pages,
            8_usize.div_ceil(limit as usize).max(1),
            "limit {limit}"
        );
    }
    let first = ok(
        api.get("/v1/sessions", Some(OPERATOR_KEY)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(first["items"].as_array().unwrap().len(), 8);
    assert!(first["next_cursor"].is_null());

    // Filters combine.
    let (ids, _) = all_pages(&api, OPERATOR_KEY, "state=terminated", 2).await;
    assert_eq!(ids, ["s6b", "s3", "s2", "s1"]);
    let (ids, _) = all_pages(&api, OPERATOR_KEY, "caller=bob&state=confirmed", 2).await;
    assert_eq!(ids, ["s7"]);
    let (ids, _) = all_pages(&api, OPERATOR_KEY, "app_server=shopB", 1).await;
    assert_eq!(ids, ["s5", "s3"]);
    let (ids, _) = all_pages(
        &api,
        OPERATOR_KEY,
        "service=Service1%40Portal.com&caller=alice",
        10,
    )
    .await;
    assert_eq!(ids, ["s6b", "s6a", "s4", "s3", "s1"]);
    let (ids, _) = all_pages(&api, OPERATOR_KEY, "service=other%40portal.com", 10).await;
    assert!(ids.is_empty());

    // A shop sees its own sessions only, and another shop's session does not exist for it.
    let (ids, _) = all_pages(&api, &key_a, "", 2).await;
    assert_eq!(ids, ["s7", "s6b", "s6a", "s4", "s2", "s1"]);
    let (ids, _) = all_pages(&api, &key_b, "", 2).await;
    assert_eq!(ids, ["s5", "s3"]);
    let (ids, _) = all_pages(&api, &key_b, "app_server=shopA", 2).await;
    assert!(ids.is_empty(), "{ids:?}");

    let theirs = problem(
        api.get("/v1/sessions/s3", Some(&key_a)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let nowhere = problem(
        api.get("/v1/sessions/no-such-session", Some(&key_a)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(theirs["title"], nowhere["title"]);
    assert_eq!(theirs["type"], nowhere["type"]);

    // One session: state, timestamps, duration.
    let s1 = ok(
        api.get("/v1/sessions/s1", Some(&key_a)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(s1["state"], "terminated");
    assert_eq!(s1["created_at"], rfc3339::format(t0));
    assert_eq!(s1["confirmed_at"], rfc3339::format(t0 + 1000));
    assert_eq!(s1["ended_at"], rfc3339::format(t0 + 61_000));
    assert_eq!(s1["created_at"], "2026-11-26T00:00:00.000Z");
    assert_eq!(s1["duration_ms"], 60_000);
    assert_eq!(s1["ended_by"], "caller");
    assert_eq!(s1["end_reason"], "bye");
    assert_eq!(s1["final_status"], 200);
    assert_eq!(s1["app_server"], "shopA");
    let s6a = ok(
        api.get("/v1/sessions/s6a", Some(OPERATOR_KEY)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(s6a["state"], "trying");
    assert!(s6a["duration_ms"].is_null() && s6a["confirmed_at"].is_null());
    // A confirmed session reports the time so far.
    let s4 = ok(
        api.get("/v1/sessions/s4", Some(OPERATOR_KEY)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(s4["state"], "confirmed");
    assert!(s4["duration_ms"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    config.api.rate_limit_per_second = 0.01;
    config.api.rate_limit_burst = 3;
    let api = Api::around(
        start_relay_with(
            Seed {
                app_servers: vec![],
            },
            config,
            dir,
        )
        .await,
    );

    for _ in 0..3 {
        ok(
            api.get("/v1/users", Some(OPERATOR_KEY)).await,
            StatusCode::OK,
        )
        .await;
    }
    let resp = api.get("/v1/users", Some(OPERATOR_KEY)).await;
    let retry_after: u64 = resp.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=100).contains(&retry_after), "{retry_after}");
    let p = problem(resp, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(p["type"], "urn:tollgate:problem:rate-limited");

    // Anonymous callers are limited by address, before they learn whether a key is valid.
    for _ in 0..3 {
        problem(
            api.get("/v1/users", Some("guess")).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    problem(
        api.get("/v1/users", Some("guess")).await,
        StatusCode::TOO_MANY_REQUESTS,
    )
    .await;
    // Probes are never limited.
    for _ in 0..5 {
        assert_eq!(api.get("/healthz", None).await.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn introspection_is_active_only_for_the_right_shop_and_a_live_session() {
    let api = Api::start().await;
    let (id_a, key_a) = api.create_app_server("shopA").await;
    let (_, key_b) = api.create_app_server("shopB").await;

    let jwks = ok(
        api.get("/.well-known/jwks.json", None).await,
        StatusCode::OK,
    )
    .await;
    let keys = jwks["keys"].as_array().unwrap();
    assert!(keys.len() >= 2, "{jwks}");
    for key in keys {
        assert!(key["kid"].is_string() && key["alg"].is_string(), "{key}");
        assert!(
            key.get("d").is_none(),
            "a private member is published: {key}"
        );
    }

    // The relay's own issuer, over the same database (same keys, same issuer URL).
    let issuer = TokenIssuer::load(
        api.store(),
        TokenConfig::new(format!("http://{}", api.relay.relay.http)),
        SystemClock.now_ms(),
    )
    .await
    .unwrap();
    let now = SystemClock.now_ms();
    let seed = Seeder::new(api.store());
    seed.session("live", now, "alice", "shopA", "confirmed")
        .await;
    let (token, _) = issuer
        .mint("alice", &id_a, "live", "service1@portal.com", now)
        .unwrap();

    let introspect = |key: String, token: String| {
        let api = &api;
        async move {
            api.http
                .post(api.url("/v1/tokens/introspect"))
                .bearer_auth(key)
                .form(&[("token", token)])
                .send()
                .await
                .unwrap()
        }
    };
    let active = ok(
        introspect(key_a.clone(), token.clone()).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(active["active"], true, "{active}");
    assert_eq!(active["sub"], "alice");
    assert_eq!(active["aud"], id_a.as_str());
    assert_eq!(active["sid"], "live");
    assert_eq!(active["session_state"], "confirmed");
    let by_operator = ok(
        introspect(OPERATOR_KEY.into(), token.clone()).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(by_operator["active"], true);

    // The audience may name the application server by name, too.
    let (by_name, _) = issuer
        .mint("alice", "shopA", "live", "service1@portal.com", now)
        .unwrap();
    let active = ok(introspect(key_a.clone(), by_name).await, StatusCode::OK).await;
    assert_eq!(active["active"], true, "{active}");

    // Another shop's token is inactive, not an error, and says nothing more.
    let other = ok(
        introspect(key_b.clone(), token.clone()).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(other, json!({"active": false}));
    let tampered = format!("{}x", &token[..token.len() - 1]);
    let bad = ok(introspect(key_a.clone(), tampered).await, StatusCode::OK).await;
    assert_eq!(bad, json!({"active": false}));
    let garbage = ok(
        introspect(key_a.clone(), "not.a.token".into()).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(garbage, json!({"active": false}));

    // Once the session ends the token is inactive.
    seed.write(SessionEvent::Terminated {
        id: "live".into(),
        at: now + 5000,
        duration_ms: 4000,
        ended_by: Party::Callee,
        reason: EndReason::Bye,
    })
    .await;
    let ended = ok(
        introspect(key_a.clone(), token.clone()).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ended, json!({"active": false}));

    // Bad requests.
    let no_token = api
        .http
        .post(api.url("/v1/tokens/introspect"))
        .bearer_auth(&key_a)
        .form(&[("token_type_hint", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        fields(&problem(no_token, StatusCode::BAD_REQUEST).await),
        ["token"]
    );
    let as_json = api
        .post(
            "/v1/tokens/introspect",
            Some(&key_a),
            json!({"token": token}),
        )
        .await;
    problem(as_json, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let anonymous = api
        .http
        .post(api.url("/v1/tokens/introspect"))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn probes_metrics_and_docs_are_served() {
    let api = Api::start().await;

    let health = ok(api.get("/healthz", None).await, StatusCode::OK).await;
    assert_eq!(health["status"], "ok");
    let brief = ok(api.get("/readyz", None).await, StatusCode::OK).await;
    assert_eq!(
        brief,
        serde_json::json!({"status": "ready"}),
        "anonymous: no details"
    );
    let ready = ok(api.get("/readyz", Some(OPERATOR_KEY)).await, StatusCode::OK).await;
    assert_eq!(ready["status"], "ready");
    let checks: Vec<_> = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["ok"].as_bool().unwrap()))
        .collect();
    assert_eq!(checks, [("database", true), ("sip", true), ("calls", true)]);

    // Some traffic to count.
    ok(
        api.get("/v1/users", Some(OPERATOR_KEY)).await,
        StatusCode::OK,
    )
    .await;
    problem(api.get("/v1/users", None).await, StatusCode::UNAUTHORIZED).await;
    problem(
        api.get("/v1/users", Some("bad")).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    problem(
        api.get("/v1/sessions/nope", Some(OPERATOR_KEY)).await,
        StatusCode::NOT_FOUND,
    )
    .await;

    // Made-up HTTP methods mint no label values: /metrics keeps its size (in series; the
    // counts and latency sums in it change their digits).
    let series = || async {
        let text = api.get("/metrics", None).await.text().await.unwrap();
        text.lines().filter(|l| !l.starts_with('#')).count()
    };
    let custom = |name: String| {
        let method = reqwest::Method::from_bytes(name.as_bytes()).unwrap();
        api.http.request(method, api.url("/healthz")).send()
    };
    custom("WARMUP".into()).await.unwrap();
    series().await;
    let before = series().await;
    for i in 0..50 {
        custom(format!("RANDOM{i}X{}", i * 7919)).await.unwrap();
    }
    assert_eq!(
        series().await,
        before,
        "50 random HTTP methods added series to /metrics"
    );

    let resp = api.get("/metrics", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    for name in [
        "tollgate_sip_requests_total",
        "tollgate_sip_responses_total",
        "tollgate_sessions_active",
        "tollgate_transactions_in_flight",
        "tollgate_auth_failures_total",
        "tollgate_http_requests_total{method=\"GET\",route=\"/v1/users\",status=\"200\"} 1",
        "tollgate_http_requests_total{method=\"GET\",route=\"/v1/users\",status=\"401\"} 2",
        "tollgate_http_requests_total{method=\"GET\",route=\"/v1/sessions/{id}\",status=\"404\"} 1",
        "tollgate_http_request_duration_seconds_bucket{",
        "tollgate_auth_failures_total{protocol=\"http\"} 1",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }

    // The docs UI is served from the binary: the page and its assets, no network needed.
    let page = api.get("/docs/", None).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    for asset in [
        "/docs/swagger-ui.css",
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-initializer.js",
    ] {
        let resp = api.get(asset, None).await;
        assert_eq!(resp.status(), StatusCode::OK, "{asset}");
        let body = resp.text().await.unwrap();
        assert!(body.len() > 100, "{asset}");
        if asset.ends_with("initializer.js") {
            assert!(body.contains("/openapi.json"), "{body}");
        }
    }
    assert_eq!(
        api.get("/docs", None).await.status(),
        StatusCode::OK,
        "/docs redirects to /docs/"
    );

    // The document served is the one the code generates.
    let served: Value = ok(api.get("/openapi.json", None).await, StatusCode::OK).await;
    let generated: Value = serde_json::from_str(&tollgate::api::openapi_json()).unwrap();
    assert_eq!(served, generated);
}

/// The committed document is what the code generates.
#[test]
fn openapi_json_is_committed_and_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = tollgate::api::openapi_json();
    if committed != generated {
        let first_difference = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map(|i| i + 1)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()) + 1);
        panic!(
            "openapi/openapi.json differs from the document the code generates (first at line \
             {first_difference}). Regenerate it with:\n\n    cargo run -- openapi > openapi/openapi.json\n"
        );
    }
}

/// Every operation is documented the way SDK generators need.
#[test]
fn every_operation_is_fully_documented() {
    let doc: Value = serde_json::from_str(&tollgate::api::openapi_json()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let mut operation_ids = std::collections::HashSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let name = format!("{method} {path}");
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: operationId"));
            assert!(
                operation_ids.insert(id.to_owned()),
                "{name}: duplicate {id}"
            );
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: summary"
            );
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{name}: no success"
            );
            for (status, resp) in responses {
                let described = resp["description"].as_str().is_some_and(|d| !d.is_empty())
                    || resp["$ref"].is_string();
                assert!(described, "{name} {status}: no description");
                // Error responses are problem documents; /readyz's 503 is its own report.
                if (status.starts_with('4') || status.starts_with('5')) && path != "/readyz" {
                    let problem = &resp["content"]["application/problem+json"];
                    assert!(
                        resp["$ref"].is_string() || problem.is_object(),
                        "{name} {status}: not problem+json"
                    );
                }
            }
            if path.starts_with("/v1/") {
                assert!(responses.contains_key("401"), "{name}: 401");
                assert!(responses.contains_key("429"), "{name}: 429");
                assert!(
                    op.get("security").is_none(),
                    "{name}: must use the bearer default"
                );
            } else {
                assert_eq!(op["security"], json!([{}]), "{name}: public");
            }
        }
    }
    assert!(operation_ids.len() >= 34, "{operation_ids:?}");
    // Every schema carries an example, and every /v1 operation documents its 500.
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        assert!(
            schema.get("example").is_some(),
            "schema {name} has no example"
        );
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if path.starts_with("/v1/") {
                assert!(op["responses"].get("500").is_some(), "{method} {path}: 500");
            }
        }
    }
    // No oneOf/anyOf without a discriminator anywhere.
    fn walk(v: &Value, at: &str) {
        match v {
            Value::Object(map) => {
                for key in ["oneOf", "anyOf"] {
                    if map.contains_key(key) {
                        assert!(
                            map.contains_key("discriminator"),
                            "{key} without discriminator at {at}"
                        );
                    }
                }
                for (k, child) in map {
                    walk(child, &format!("{at}/{k}"));
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, &format!("{at}/{i}"));
                }
            }
            _ => {}
        }
    }
    walk(&doc, "#");
}

/// The store functions behind the API, on SQLite and (when configured) PostgreSQL: API keys
/// and keyset pagination with ties on `created_at`.
async fn store_queries(store: Store) {
    store.ping().await.unwrap();

    let (shop, key) = store
        .add_app_server_with_key("shopA", "sip:127.0.0.1:5090")
        .await
        .unwrap();
    assert_eq!(
        store.app_server_for_api_key(key.expose(), 0).await.unwrap(),
        Some(shop.clone())
    );
    assert_eq!(
        store.app_server_for_api_key("tgk_nope", 0).await.unwrap(),
        None
    );
    let dup = store.add_app_server_with_key("shopA", "sip:x").await;
    assert!(matches!(dup, Err(tollgate::store::StoreError::Conflict(_))));
    let new_key = store.reissue_api_key(&shop.id, None).await.unwrap();
    assert_eq!(
        store.app_server_for_api_key(key.expose(), 0).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .app_server_for_api_key(new_key.expose(), 0)
            .await
            .unwrap(),
        Some(shop.clone())
    );
    assert_eq!(store.get_app_server(&shop.id).await.unwrap(), shop);

    let user = store.add_user("bob", "portal.com", "pw").await.unwrap();
    assert_eq!(store.get_user(&user.id).await.unwrap().name, "bob");
    store.delete_user(&user.id).await.unwrap();
    assert!(store.get_user(&user.id).await.is_err());
    let service = store
        .add_service(
            "s1@portal.com",
            &["shopA".to_string()],
            tollgate::store::ForkMode::FirstAnswer,
        )
        .await
        .unwrap();
    let got = store.get_service(&service.id).await.unwrap();
    assert_eq!(got.app_servers, vec![shop.clone()]);

    let seed = Seeder::new(&store);
    for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        // b and c share a timestamp: the id breaks the tie.
        let at = 1_000 + [0, 10, 10, 20, 30][i];
        seed.session(id, at, "alice", "shopA", "terminated").await;
    }
    let mut query = tollgate::store::SessionQuery {
        limit: 2,
        app_server: Some("shopA".into()),
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = store.page_sessions(&query).await.unwrap();
        let Some(last) = page.last() else { break };
        query.after = Some((last.created_at, last.id.clone()));
        seen.extend(page.into_iter().map(|s| s.id));
    }
    assert_eq!(seen, ["e", "d", "c", "b", "a"]);
    query.after = None;
    query.service = Some("S1@PORTAL.COM".into());
    assert!(store.page_sessions(&query).await.unwrap().is_empty());
    query.service = Some("SERVICE1@portal.com".into());
    assert_eq!(store.page_sessions(&query).await.unwrap().len(), 2);
}

#[tokio::test]
async fn store_queries_on_sqlite() {
    let (store, _dir) = common::db::fresh_sqlite().await;
    store_queries(store).await;
}

#[tokio::test]
async fn store_queries_on_postgres() {
    let Some((store, url)) = common::db::fresh_postgres().await else {
        return;
    };
    store_queries(store).await;
    common::db::drop_postgres(&url).await;
}
