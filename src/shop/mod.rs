//! `tollgate shop`: the reference application server — the example integrators read.
//!
//! A shop is two listeners and a REST client of the relay:
//!
//! - **SIP** (`sip`, UDP): answers the relay's INVITEs. A token that is missing or not
//!   for this shop → 403; `capacity` sessions up → 486 Busy Here; otherwise 200 with the
//!   landing URL. re-INVITE and UPDATE change what the visit is about; the 200 to BYE carries
//!   the charges still on the visit's tab.
//! - **HTTP** (`web`, axum): the landing URL takes the session token the browser posts,
//!   verifies it against the relay's JWK set ([`keys`]: cached, refetched on an unknown
//!   `kid`) for this shop's own id as audience, and starts a cookie session; the catalogue
//!   ([`catalogue`]) shows what matches the request; "Buy" posts a charge over REST with an
//!   `Idempotency-Key` ([`relay_api`]); webhooks are verified with the secret the shop
//!   fetched at start.
//!
//! [`visits`] holds what both sides share. At start the shop asks the relay who it is
//! (`GET /v1/app-servers/me` with its API key): the answer's `id` is the `aud` its tokens
//! must carry.

pub mod catalogue;
pub mod keys;
pub mod relay_api;
mod sip;
pub mod visits;
mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::clock::SharedClock;
use keys::KeyCache;
use relay_api::RelayApi;
use visits::Visits;
use web::EventLog;

/// Why a shop cannot start (or a relay call failed).
#[derive(Debug, thiserror::Error)]
pub enum ShopError {
    /// The relay's REST API failed or refused.
    #[error("relay: {0}")]
    Relay(String),
    #[error("cannot bind {what}: {source}")]
    Bind {
        what: &'static str,
        source: std::io::Error,
    },
}

/// How to run a shop.
#[derive(Debug, Clone)]
pub struct ShopConfig {
    /// The relay's HTTP base URL (REST API and JWK set), e.g. `http://127.0.0.1:8080`.
    pub relay_url: String,
    /// The tokens' expected `iss`: the relay's public URL; `relay_url` when `None`.
    pub issuer: Option<String>,
    /// This shop's API key (`tgk_…`).
    pub api_key: String,
    pub sip_listen: SocketAddr,
    pub http_listen: SocketAddr,
    /// The base URL browsers reach the HTTP side at; `http://` + the bound address when
    /// `None`.
    pub public_url: Option<String>,
    /// How many sessions at once; one more is answered 486 Busy Here.
    pub capacity: usize,
}

/// What the SIP and HTTP sides share.
pub(crate) struct Shared {
    name: String,
    landing_url: String,
    cookie_name: String,
    capacity: usize,
    keys: KeyCache,
    api: RelayApi,
    dialogs: std::sync::Mutex<sip::Dialogs>,
    visits: Visits,
    events: EventLog,
    webhook_secret: Option<String>,
    clock: SharedClock,
}

/// A running shop.
pub struct Shop {
    /// This shop's application-server id and name at the relay.
    pub id: String,
    pub name: String,
    pub sip: SocketAddr,
    pub http: SocketAddr,
    /// Where INVITEs are answered to send the browser (`…/visit`).
    pub landing_url: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Shop {
    /// Stops both listeners.
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts a shop: binds, asks the relay who it is, loads its keys, fetches a webhook secret
/// (a failure there is logged: the shop then answers webhooks 503 and the relay retries).
pub async fn start(config: ShopConfig, clock: SharedClock) -> Result<Shop, ShopError> {
    let udp = tokio::net::UdpSocket::bind(config.sip_listen)
        .await
        .map_err(|source| ShopError::Bind {
            what: "the SIP (UDP) listener",
            source,
        })?;
    let listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .map_err(|source| ShopError::Bind {
            what: "the HTTP listener",
            source,
        })?;
    let bind_err = |what, source| ShopError::Bind { what, source };
    let sip = udp.local_addr().map_err(|e| bind_err("SIP", e))?;
    let http = listener.local_addr().map_err(|e| bind_err("HTTP", e))?;

    let api = RelayApi::new(&config.relay_url, &config.api_key)?;
    let me = api.me().await?;
    let issuer = config
        .issuer
        .clone()
        .unwrap_or_else(|| api.base().to_owned());
    let keys = KeyCache::load(api.clone(), &issuer, &me.id).await?;
    let webhook_secret = match api.webhook_secret(&me.id).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no webhook secret: webhooks will be answered 503");
            None
        }
    };
    let base = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{http}"));
    let landing_url = format!("{}/visit", base.trim_end_matches('/'));
    let shared = Arc::new(Shared {
        name: me.name.clone(),
        landing_url: landing_url.clone(),
        // Cookies are per host, not per port: two shops on one host need two names.
        cookie_name: format!(
            "tollgate_shop_{}",
            me.id
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(12)
                .collect::<String>()
        ),
        capacity: config.capacity,
        keys,
        api,
        dialogs: Default::default(),
        visits: Visits::default(),
        events: EventLog::default(),
        webhook_secret,
        clock,
    });
    let sip_task = tokio::spawn(sip::run(udp, shared.clone()));
    let app = web::router(shared);
    let http_task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "shop HTTP server stopped");
        }
    });
    tracing::info!(name = %me.name, %sip, %http, "shop ready");
    Ok(Shop {
        id: me.id,
        name: me.name,
        sip,
        http,
        landing_url,
        tasks: vec![sip_task, http_task],
    })
}
