//! The shop's HTTP side (axum):
//!
//! | route | what it does |
//! | --- | --- |
//! | `POST /visit` | the landing URL: a form field `token` (decision 0004: the browser posts it, never in a URL). Verified against the relay's JWK set for this shop's audience; then a cookie session and 303 → `/shop` |
//! | `GET /visit` | no token: the refusal page (403) |
//! | `GET /shop` | the catalogue matching what the caller asked for; needs the cookie |
//! | `POST /shop/buy` | posts a charge to the relay now, with an `Idempotency-Key` from the form (a double click lands once) |
//! | `POST /shop/tab` | puts an item on the tab: billed in the shop's 200 to BYE |
//! | `POST /hooks/tollgate` | the relay's signed webhooks: verified, de-duplicated on `id` |
//! | `GET /hooks` | the last webhook events received (JSON), for people and tests |
//!
//! Every refusal is a page saying why in plain words, with status 403; there is no way into
//! `/shop` but a valid token.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;

use super::catalogue::{self, CURRENCY};
use super::relay_api::ChargeOutcome;
use super::visits::Visit;
use super::Shared;
use crate::billing::NewCharge;
use crate::notify::SIGNATURE_HEADER;
use crate::tokens::{TokenError, MAX_TOKEN_LEN};

/// Webhook events remembered (for de-duplication and `GET /hooks`).
pub const MAX_EVENTS: usize = 256;

/// The webhook events received, newest last.
#[derive(Default)]
pub struct EventLog {
    events: Mutex<VecDeque<serde_json::Value>>,
}

impl EventLog {
    /// Adds an event unless one with its `id` is already there; `false` for a duplicate.
    fn add(&self, event: serde_json::Value) -> bool {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.iter().any(|e| e.get("id") == event.get("id")) {
            return false;
        }
        if events.len() >= MAX_EVENTS {
            events.pop_front();
        }
        events.push_back(event);
        true
    }

    fn all(&self) -> Vec<serde_json::Value> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.iter().cloned().collect()
    }
}

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/visit", get(no_token).post(landing))
        .route("/shop", get(catalogue_page))
        .route("/shop/buy", post(buy))
        .route("/shop/tab", post(tab))
        .route("/hooks/tollgate", post(webhook))
        .route("/hooks", get(hooks))
        .with_state(shared)
}

async fn home(State(shared): State<Arc<Shared>>) -> Html<String> {
    page(
        &shared.name,
        "<p>This shop is reached through Tollgate: call one of its services from the Tollgate \
         client, and you arrive here already signed in.</p>",
    )
}

async fn no_token(State(shared): State<Arc<Shared>>) -> Response {
    refuse(&shared, "You came here without a session token.")
}

#[derive(Deserialize)]
struct Landing {
    #[serde(default)]
    token: String,
}

async fn landing(State(shared): State<Arc<Shared>>, Form(form): Form<Landing>) -> Response {
    let token = form.token.trim();
    if token.is_empty() {
        return refuse(&shared, "You came here without a session token.");
    }
    if token.len() > MAX_TOKEN_LEN {
        return refuse(&shared, "That is not a session token.");
    }
    let claims = match shared.keys.verify(token, shared.clock.now_ms()).await {
        Ok(c) => c,
        Err(e) => return refuse(&shared, token_refusal(&e)),
    };
    let Some(cookie) = shared.visits.start_cookie(&claims.sid) else {
        let why = if shared.visits.has_ended(&claims.sid) {
            "This visit has ended. Call the service again to come back."
        } else {
            "This shop has no visit for that session."
        };
        return refuse(&shared, why);
    };
    let set = format!(
        "{}={cookie}; Path=/; HttpOnly; SameSite=Lax",
        shared.cookie_name
    );
    ([(header::SET_COOKIE, set)], Redirect::to("/shop")).into_response()
}

/// Why a token is refused, in words a person understands.
fn token_refusal(e: &TokenError) -> &'static str {
    match e {
        TokenError::Expired => "Your session token has expired. Call the service again.",
        TokenError::NotYetValid => "Your session token is not valid yet. Check your clock.",
        TokenError::WrongAudience => "This session token was issued for another shop.",
        TokenError::WrongIssuer => "This session token was not issued by our relay.",
        _ => "This session token is not genuine.",
    }
}

/// The visit of the request's cookie.
fn visit_of(shared: &Shared, headers: &HeaderMap) -> Option<Visit> {
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == shared.cookie_name)
        .map(|(_, v)| v.to_owned())?;
    shared.visits.by_cookie(&cookie)
}

/// The refusal for a request without a live visit's cookie.
fn not_signed_in(shared: &Shared) -> Response {
    refuse(
        shared,
        "You are not signed in here, or your visit has ended. Come in through Tollgate.",
    )
}

async fn catalogue_page(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let Some(visit) = visit_of(&shared, &headers) else {
        return not_signed_in(&shared);
    };
    let mut body = format!(
        "<p class=\"who\">Welcome, <b id=\"user\">{}</b> — signed in by Tollgate \
         (service {}, session <code>{}</code>).</p>",
        esc(&visit.user),
        esc(&visit.service),
        esc(&visit.session_id)
    );
    let asked = if visit.asked.is_empty() {
        "anything".to_owned()
    } else {
        visit.asked.clone()
    };
    body.push_str(&format!(
        "<p>You asked for: <b id=\"asked\">{}</b></p><table id=\"catalogue\">",
        esc(&asked)
    ));
    for (n, item) in catalogue::matching(&visit.asked).into_iter().enumerate() {
        let key = format!(
            "{}-{}-{n}-{}",
            visit.session_id,
            item.id,
            visit.bought.len()
        );
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>\
             <form method=\"post\" action=\"/shop/buy\"><input type=\"hidden\" name=\"item\" value=\"{}\">\
             <input type=\"hidden\" name=\"key\" value=\"{}\"><button data-item=\"{}\">Buy</button></form>\
             <form method=\"post\" action=\"/shop/tab\"><input type=\"hidden\" name=\"item\" value=\"{}\">\
             <button class=\"tab\">On my tab</button></form></td></tr>",
            esc(item.name),
            catalogue::price(item.unit_amount),
            item.id,
            esc(&key),
            item.id,
            item.id
        ));
    }
    body.push_str("</table><h2>Bought</h2><ul id=\"bought\">");
    for (_, line) in &visit.bought {
        body.push_str(&format!("<li>{}</li>", esc(line)));
    }
    body.push_str("</ul><h2>On your tab (billed when you leave)</h2><ul id=\"tab\">");
    for c in &visit.tab {
        body.push_str(&format!(
            "<li>{} × {}</li>",
            c.quantity,
            esc(&c.description)
        ));
    }
    body.push_str("</ul>");
    page(&shared.name, &body).into_response()
}

#[derive(Deserialize)]
struct Purchase {
    item: String,
    #[serde(default)]
    key: String,
}

fn charge_for(item: &catalogue::Item) -> NewCharge {
    NewCharge {
        description: item.name.to_owned(),
        unit_amount: item.unit_amount,
        quantity: 1,
        currency: CURRENCY.to_owned(),
        metadata: None,
    }
}

async fn buy(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<Purchase>,
) -> Response {
    let Some(visit) = visit_of(&shared, &headers) else {
        return not_signed_in(&shared);
    };
    let Some(item) = catalogue::item(&form.item) else {
        return (
            StatusCode::BAD_REQUEST,
            page(&shared.name, "<p>No such item.</p>"),
        )
            .into_response();
    };
    if form.key.is_empty() || form.key.len() > 200 {
        return (
            StatusCode::BAD_REQUEST,
            page(&shared.name, "<p>Reload the page and try again.</p>"),
        )
            .into_response();
    }
    let key = format!("shop-{}", form.key);
    match shared
        .api
        .post_charge(&visit.session_id, &charge_for(item), &key)
        .await
    {
        Ok(ChargeOutcome::Recorded) => {
            let line = format!("{} — {}", item.name, catalogue::price(item.unit_amount));
            shared.visits.bought(&visit.session_id, &key, line);
            Redirect::to("/shop").into_response()
        }
        Ok(ChargeOutcome::Refused { status, detail }) => (
            StatusCode::BAD_GATEWAY,
            page(
                &shared.name,
                &format!("<p class=\"error\">The relay refused the charge ({status}): {}</p>", esc(&detail)),
            ),
        )
            .into_response(),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            page(
                &shared.name,
                &format!("<p class=\"error\">The relay could not be reached: {}. Try again: you will not be charged twice.</p>", esc(&e.to_string())),
            ),
        )
            .into_response(),
    }
}

async fn tab(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<Purchase>,
) -> Response {
    let Some(visit) = visit_of(&shared, &headers) else {
        return not_signed_in(&shared);
    };
    let Some(item) = catalogue::item(&form.item) else {
        return (
            StatusCode::BAD_REQUEST,
            page(&shared.name, "<p>No such item.</p>"),
        )
            .into_response();
    };
    if !shared
        .visits
        .put_on_tab(&visit.session_id, charge_for(item))
    {
        return (
            StatusCode::CONFLICT,
            page(&shared.name, "<p>Your tab is full.</p>"),
        )
            .into_response();
    }
    Redirect::to("/shop").into_response()
}

async fn webhook(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let Some(secret) = shared.webhook_secret.as_deref() else {
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let now_secs = shared.clock.now_ms() / 1000;
    if crate::notify::verify(signature, &body, secret, now_secs, 300).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let ended = (event.get("type").and_then(|t| t.as_str()) == Some("session.terminated"))
        .then(|| {
            event
                .pointer("/data/id")
                .and_then(|i| i.as_str())
                .map(str::to_owned)
        })
        .flatten();
    if !shared.events.add(event) {
        return StatusCode::NO_CONTENT; // a redelivery
    }
    if let Some(session_id) = ended {
        session_ended(&shared, &session_id).await;
    }
    StatusCode::NO_CONTENT
}

/// The relay ended a session. Usually the BYE got here first and this changes nothing; when
/// no BYE came (a session timer closed it), the dialog's slot is freed and the tab is posted
/// over REST, within the relay's charge grace period, each line once by its key.
async fn session_ended(shared: &Shared, session_id: &str) {
    super::sip::forget_session(shared, session_id);
    let tab = shared.visits.end(session_id);
    for (i, charge) in tab.iter().enumerate() {
        let key = format!("tab-{session_id}-{i}");
        match shared.api.post_charge(session_id, charge, &key).await {
            Ok(ChargeOutcome::Recorded) => {}
            other => tracing::warn!(%session_id, ?other, "a tab charge was not recorded"),
        }
    }
}

async fn hooks(State(shared): State<Arc<Shared>>) -> Json<Vec<serde_json::Value>> {
    Json(shared.events.all())
}

/// The refusal page: 403 and the reason.
fn refuse(shared: &Shared, why: &str) -> Response {
    let body = format!(
        "<h2 id=\"refused\">Access refused</h2><p>{}</p><p>This shop lets people in only with a \
         valid Tollgate session token. Open it from the Tollgate client.</p>",
        esc(why)
    );
    (StatusCode::FORBIDDEN, page(&shared.name, &body)).into_response()
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <style>body{{font:15px system-ui,sans-serif;margin:1.5em;color:#222}}h1{{color:#7a1f3d}}\
         td{{padding:.3em .8em;border-bottom:1px solid #eee}}form{{display:inline}}\
         button{{margin-left:.3em}}.error{{color:#b00}}</style></head>\
         <body><h1 id=\"shop\">{t}</h1>{body}</body></html>",
        t = esc(title)
    ))
}

/// HTML-escapes text.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
