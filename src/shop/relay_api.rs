//! The shop's side of the relay's REST API: who am I (`GET /v1/app-servers/me`), the published
//! keys (`GET /.well-known/jwks.json`), a webhook secret, and item charges
//! (`POST /v1/sessions/{id}/charges` with an `Idempotency-Key`). Every call carries the shop's
//! own API key; nothing here needs the operator key.

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use reqwest::{Client, Method, StatusCode};
use serde::de::DeserializeOwned;

use super::ShopError;
use crate::api::app_servers::AppServer;
use crate::billing::NewCharge;

/// The relay answers bigger bodies to none of these calls.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// A client of the relay's REST API, authenticated as one application server.
#[derive(Clone)]
pub struct RelayApi {
    http: Client,
    base: String,
    api_key: String,
}

/// How a charge post went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// 201 (or a replay of it): the charge is on the user's bill.
    Recorded,
    /// The relay refused it (status and its problem `detail`).
    Refused { status: u16, detail: String },
}

impl RelayApi {
    /// A client of the relay at `base` (e.g. `http://127.0.0.1:8080`) using `api_key`.
    pub fn new(base: &str, api_key: &str) -> Result<RelayApi, ShopError> {
        let http = Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ShopError::Relay(format!("HTTP client: {e}")))?;
        Ok(RelayApi {
            http,
            base: base.trim_end_matches('/').to_owned(),
            api_key: api_key.to_owned(),
        })
    }

    /// The relay's base URL, as given.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// This shop's own record: its `id` is the audience of the tokens minted for it.
    pub async fn me(&self) -> Result<AppServer, ShopError> {
        self.json(Method::GET, "/v1/app-servers/me").await
    }

    /// The relay's JWK set.
    pub async fn jwks(&self) -> Result<JwkSet, ShopError> {
        self.json(Method::GET, "/.well-known/jwks.json").await
    }

    /// A new webhook signing secret for this shop (the previous one stays valid for the
    /// relay's grace period, so restarting a shop loses no delivery).
    pub async fn webhook_secret(&self, app_server_id: &str) -> Result<String, ShopError> {
        #[derive(serde::Deserialize)]
        struct Secret {
            secret: String,
        }
        let path = format!("/v1/app-servers/{app_server_id}/webhook-secret");
        let s: Secret = self.json(Method::POST, &path).await?;
        Ok(s.secret)
    }

    /// Posts one item charge to session `session_id`. `idempotency_key` makes a retry (a
    /// double click, a timeout) land once.
    pub async fn post_charge(
        &self,
        session_id: &str,
        charge: &NewCharge,
        idempotency_key: &str,
    ) -> Result<ChargeOutcome, ShopError> {
        let url = format!("{}/v1/sessions/{session_id}/charges", self.base);
        let body = serde_json::to_vec(charge).map_err(|e| ShopError::Relay(e.to_string()))?;
        let resp = self
            .http
            .post(url)
            .bearer_auth(&self.api_key)
            .header("Idempotency-Key", idempotency_key)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| ShopError::Relay(format!("POST charge: {e}")))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(ChargeOutcome::Recorded);
        }
        let bytes = resp.bytes().await.unwrap_or_default();
        let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
            .unwrap_or_else(|| status.to_string());
        Ok(ChargeOutcome::Refused {
            status: status.as_u16(),
            detail,
        })
    }

    async fn json<T: DeserializeOwned>(&self, method: Method, path: &str) -> Result<T, ShopError> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.api_key)
            .send()
            .await
            .map_err(|e| ShopError::Relay(format!("{method} {path}: {e}")))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ShopError::Relay(format!("{method} {path}: {e}")))?;
        if status == StatusCode::UNAUTHORIZED {
            return Err(ShopError::Relay(format!(
                "{method} {path}: the relay does not know this API key"
            )));
        }
        if !status.is_success() || bytes.len() > MAX_ANSWER_BYTES {
            return Err(ShopError::Relay(format!(
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            )));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ShopError::Relay(format!("{method} {path}: unreadable answer: {e}")))
    }
}
