//! `tollgate demo`: a relay on an embedded SQLite database in a data directory, two reference
//! shops in the same process, and the data to try them:
//!
//! - the user `alice` / `secret` (the demo user);
//! - `wine-shop` and `book-shop`, each a [`crate::shop`] with its API key and webhook URL;
//! - `wine@DOMAIN` → wine-shop; `books@DOMAIN` → both shops in *all answers* mode, so the
//!   browser client shows two shops side by side;
//! - a tariff on both services (EUR, 1.20 per minute, billed per second);
//! - the operator key [`DEMO_OPERATOR_KEY`] for the console.
//!
//! Seeding is idempotent: a second run on the same directory reuses the rows, gives the shops
//! new API keys (keys are shown once, so the old ones are not known) and points the
//! application servers at the shops' new addresses.

use std::net::SocketAddr;
use std::path::Path;

use crate::app::{self, AppError, Relay};
use crate::billing::Tariff;
use crate::clock::SharedClock;
use crate::config::{Config, Listen, Protocol, Secret};
use crate::shop::{self, Shop, ShopConfig, ShopError};
use crate::store::{AppServerChange, ForkMode, Store, StoreError};

/// The demo user.
pub const DEMO_USER: (&str, &str) = ("alice", "secret");
/// The operator key the demo seeds (the console's sign-in).
pub const DEMO_OPERATOR_KEY: &str = "demo-operator-key-0000";
/// The demo shops and the services they deliver.
pub const SHOPS: [&str; 2] = ["wine-shop", "book-shop"];

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Relay(#[from] AppError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("shop: {0}")]
    Shop(#[from] ShopError),
    #[error("data directory: {0}")]
    Dir(std::io::Error),
}

/// Where the demo listens (every address may have port 0).
#[derive(Debug, Clone)]
pub struct DemoSettings {
    pub http: SocketAddr,
    pub sip_udp: SocketAddr,
    pub sip_ws: SocketAddr,
    /// The shops' SIP and HTTP addresses.
    pub shops: [(SocketAddr, SocketAddr); 2],
}

impl Default for DemoSettings {
    fn default() -> Self {
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        DemoSettings {
            http: at(8080),
            sip_udp: at(5060),
            sip_ws: at(5066),
            shops: [(at(5091), at(8091)), (at(5092), at(8092))],
        }
    }
}

/// A running demo.
pub struct Demo {
    pub relay: Relay,
    pub shops: Vec<Shop>,
    pub domain: String,
}

impl Demo {
    /// The browser client's URL.
    pub fn client_url(&self) -> String {
        format!("http://{}/", self.relay.http)
    }

    /// The console's URL.
    pub fn console_url(&self) -> String {
        format!("http://{}/console", self.relay.http)
    }

    /// Stops the shops, then the relay (which flushes its sessions).
    pub async fn shutdown(self) {
        for s in self.shops {
            s.shutdown().await;
        }
        self.relay.shutdown().await;
    }
}

/// The relay configuration of a demo in `dir`, starting from `base` (a `tollgate.toml`, or
/// the defaults).
pub fn config(mut base: Config, dir: &Path, settings: &DemoSettings) -> Config {
    base.database.url = format!("sqlite://{}", dir.join("tollgate.db").display());
    base.sip.listen = vec![
        Listen {
            protocol: Protocol::Udp,
            addr: settings.sip_udp,
        },
        Listen {
            protocol: Protocol::Ws,
            addr: settings.sip_ws,
        },
    ];
    base.http.listen = settings.http;
    if base.api.operator_key.is_none() {
        base.api.operator_key = Some(Secret::new(DEMO_OPERATOR_KEY));
    }
    base
}

/// Starts everything and seeds the data (see the module documentation).
pub async fn start(
    config: &Config,
    settings: &DemoSettings,
    clock: SharedClock,
) -> Result<Demo, DemoError> {
    let store = Store::connect(&config.database.url).await?;
    let domain = config.sip.domain.clone();
    let (user, password) = DEMO_USER;
    if !store.list_users().await?.iter().any(|u| u.name == user) {
        store.add_user(user, &domain, password).await?;
    }
    let mut ids = Vec::new();
    for (name, (sip, _)) in SHOPS.iter().zip(&settings.shops) {
        let existing = store
            .list_app_servers()
            .await?
            .into_iter()
            .find(|a| a.name == *name);
        let id = match existing {
            Some(a) => a.id,
            None => store.add_app_server(name, &format!("sip:{sip}")).await?.id,
        };
        ids.push(id);
    }
    let services = [
        (
            format!("wine@{domain}"),
            vec![SHOPS[0].to_owned()],
            ForkMode::FirstAnswer,
        ),
        (
            format!("books@{domain}"),
            SHOPS.iter().map(|s| s.to_string()).collect(),
            ForkMode::AllAnswers,
        ),
    ];
    let existing: Vec<String> = store
        .list_services()
        .await?
        .iter()
        .map(|s| s.address())
        .collect();
    for (address, servers, mode) in &services {
        if existing.contains(address) {
            continue;
        }
        let service = store.add_service(address, servers, *mode).await?;
        let tariff = Tariff {
            currency: "EUR".into(),
            setup_amount: 0,
            per_minute_amount: 120,
            increment_secs: 1,
            free_secs: 0,
        };
        store
            .set_tariff(&service.id, &tariff, clock.now_ms())
            .await?;
    }

    let relay = app::start(config, clock.clone()).await?;
    let relay_url = format!("http://{}", relay.http);
    let mut shops = Vec::new();
    for (id, (sip, http)) in ids.iter().zip(&settings.shops) {
        let key = store.reissue_api_key(id, None).await?;
        let shop = shop::start(
            ShopConfig {
                relay_url: relay_url.clone(),
                issuer: config.http.public_url.clone(),
                api_key: key.expose().to_owned(),
                sip_listen: *sip,
                http_listen: *http,
                public_url: None,
                capacity: 5,
            },
            clock.clone(),
        )
        .await?;
        store
            .update_app_server(
                id,
                &AppServerChange {
                    uri: Some(format!("sip:{}", shop.sip)),
                    webhook_url: Some(Some(format!("http://{}/hooks/tollgate", shop.http))),
                    commission_bps: Some(1500),
                },
            )
            .await?;
        shops.push(shop);
    }
    relay.reload_directory().await?;
    Ok(Demo {
        relay,
        shops,
        domain,
    })
}

/// Creates the data directory.
pub fn prepare_dir(dir: &Path) -> Result<(), DemoError> {
    std::fs::create_dir_all(dir).map_err(DemoError::Dir)
}
